"""The pieces of teleop without DDS: the marker protocol's state, the drag -> action rules, the fallback rule,
the RViz layout and the teleop profile."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("visualization_msgs")

from geometry_msgs.msg import Point, Pose
from svrl_ros.goal_fallback import STATUS_ABORTED, AbortWatch, fallback_wanted
from svrl_ros.marker_protocol import CONFLICT_S, MarkerServerState
from svrl_ros.teleop_markers import TOOL_TARGET, measured_marker, target_marker
from svrl_ros.teleop_motion import (
    WORKSPACE_MARGIN,
    TeleopLimits,
    TeleopMotion,
    gripper_from_finger_target,
    quaternion_multiply,
    rotation_vector,
)
from visualization_msgs.msg import InteractiveMarkerFeedback, InteractiveMarkerUpdate

from svrl_sim import robot
from svrl_sim.kinematics import ArmKinematics, finger_position

DOWN = np.array([0.0, 1.0, 0.0, 0.0])  # tool pointing down (w, x, y, z), as at the home pose


def _pose(x: float) -> Pose:
    return Pose(position=Point(x=x, y=0.0, z=0.2))


# ---------------------------------------------------------------------------------------------- protocol
def _server() -> MarkerServerState:
    server = MarkerServerState(server_id="/teleop_marker")
    server.insert(target_marker(_pose(0.4), "policy", False))
    server.insert(measured_marker(_pose(0.4)))
    return server


def test_every_change_is_one_update_with_the_next_number() -> None:
    server = _server()
    first = server.apply_changes()
    assert first.type == InteractiveMarkerUpdate.UPDATE and first.seq_num == 1
    assert {m.name for m in first.markers} == {TOOL_TARGET, "svrl_tool_measured"}
    assert server.apply_changes() is None  # nothing pending: no message, no number used
    assert server.set_pose(TOOL_TARGET, _pose(0.5))
    assert server.set_pose(TOOL_TARGET, _pose(0.6))  # collapses into one pose update
    second = server.apply_changes()
    assert second.seq_num == 2 and [p.name for p in second.poses] == [TOOL_TARGET] and not second.markers
    assert second.poses[0].pose.position.x == 0.6
    assert second.poses[0].header.frame_id == "base_link"  # the marker's header is kept
    assert server.erase("svrl_tool_measured")
    third = server.apply_changes()
    assert third.seq_num == 3 and third.erases == ["svrl_tool_measured"]
    assert not server.set_pose("svrl_tool_measured", _pose(0.1)) and not server.erase("nothing")


def test_snapshot_is_the_state_as_of_its_number_and_keep_alive_does_not_advance() -> None:
    server = _server()
    server.apply_changes()
    server.set_pose(TOOL_TARGET, _pose(0.7))  # pending, not applied
    number, markers = server.snapshot()
    assert number == 1 and {m.name: m.pose.position.x for m in markers}[TOOL_TARGET] == 0.4
    alive = server.keep_alive()
    assert (alive.type, alive.seq_num) == (InteractiveMarkerUpdate.KEEP_ALIVE, 1)
    assert server.apply_changes().seq_num == 2 and server.snapshot()[0] == 2


def test_feedback_moves_the_marker_and_a_second_client_waits_its_turn() -> None:
    server = _server()
    server.apply_changes()

    def fb(client: str, event: int, x: float = 0.0, name: str = TOOL_TARGET) -> InteractiveMarkerFeedback:
        return InteractiveMarkerFeedback(client_id=client, marker_name=name, event_type=event, pose=_pose(x))

    pose_update = InteractiveMarkerFeedback.POSE_UPDATE
    assert not server.accept_feedback(fb("a", pose_update, name="unknown"), 0.0)
    assert server.accept_feedback(fb("a", pose_update, 0.55), 10.0)
    assert server.get(TOOL_TARGET).pose.position.x == 0.55  # pending pose for every other client
    assert not server.accept_feedback(fb("b", pose_update, 0.1), 10.0 + CONFLICT_S / 2)
    assert server.get(TOOL_TARGET).pose.position.x == 0.55
    assert server.accept_feedback(fb("b", pose_update, 0.1), 10.0 + CONFLICT_S * 1.5)
    update = server.apply_changes()
    assert update.poses[0].pose.position.x == 0.1 and update.poses[0].header.frame_id == "base_link"


# ---------------------------------------------------------------------------------------------- motion
LIMITS = TeleopLimits(period_s=0.1, max_linear_speed=0.15, max_angular_speed=0.8, chunk_length=3)


def test_rotation_vector_is_the_ee_delta_convention() -> None:
    angle = 0.3
    about_z = np.array([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)])
    target = quaternion_multiply(about_z, DOWN)  # R(target) = Rz(0.3) R(current)
    assert np.allclose(rotation_vector(target, DOWN), [0.0, 0.0, angle])
    assert np.allclose(rotation_vector(-target, DOWN), [0.0, 0.0, angle])  # q and -q: the same turn
    assert np.allclose(rotation_vector(DOWN, DOWN), 0.0)


def test_drag_steps_are_rate_limited_along_the_direction_and_never_overshoot() -> None:
    motion = TeleopMotion(LIMITS)
    here = np.array([0.45, 0.0, 0.2])
    assert motion.chunk(here, DOWN, 0.0) is None  # nothing dragged: nothing to send
    motion.start_drag(0.0)
    motion.drag_to(here + np.array([0.3, 0.4, 0.0]), DOWN, 0.0)  # 0.5 m away
    actions = motion.chunk(here, DOWN, 0.05)
    assert actions.shape == (3, 7) and actions.dtype == np.float32
    steps = np.linalg.norm(actions[:, :3], axis=1)
    assert np.allclose(steps, 0.015, atol=1e-6)
    assert np.allclose(actions[:, :3] / steps[:, None], [0.6, 0.8, 0.0], atol=1e-6)  # straight at it
    assert np.allclose(actions[:, 3:6], 0.0) and np.all(actions[:, 6] == -1.0)
    motion.drag_to(
        here + np.array([0.02, 0.0, 0.0]), DOWN, 0.1
    )  # 2 cm: one full step, a remainder, then nothing
    actions = motion.chunk(here, DOWN, 0.1)
    assert np.allclose(actions[:, 0], [0.015, 0.005, 0.0], atol=1e-6)
    # Turning: at most max_angular_speed x period per action.
    turn = quaternion_multiply(np.array([math.cos(0.5), 0.0, 0.0, math.sin(0.5)]), DOWN)  # 1 rad about z
    motion.drag_to(here, turn, 0.1)
    actions = motion.chunk(here, DOWN, 0.1)
    assert np.allclose(actions[:, 5], 0.08, atol=1e-6) and np.allclose(actions[:, :3], 0.0, atol=1e-7)


def test_target_stays_in_the_workspace_and_bad_poses_change_nothing() -> None:
    motion = TeleopMotion(LIMITS)
    motion.start_drag(0.0)
    clamped = motion.drag_to(np.array([5.0, -5.0, -1.0]), DOWN, 0.0)
    lo, hi = np.array(LIMITS.workspace_min), np.array(LIMITS.workspace_max)
    corner = np.array([hi[0] - WORKSPACE_MARGIN, lo[1] + WORKSPACE_MARGIN, lo[2] + WORKSPACE_MARGIN])
    assert np.allclose(clamped, corner)
    with pytest.raises(ValueError):
        motion.drag_to(np.array([0.4, np.nan, 0.2]), DOWN, 0.1)
    with pytest.raises(ValueError):
        motion.drag_to(np.array([0.4, 0.0, 0.2]), np.zeros(4), 0.1)
    assert np.allclose(motion.target_position, clamped)


def test_the_drag_dies_on_release_or_silence_and_the_gripper_runs_its_steps() -> None:
    limits = TeleopLimits(period_s=0.1, feedback_timeout_s=0.5, gripper_steps=2)
    motion = TeleopMotion(limits)
    here = np.array([0.45, 0.0, 0.2])
    motion.drag_to(here + np.array([0.1, 0.0, 0.0]), DOWN, 0.0)
    assert motion.active(0.4) and not motion.timed_out(0.4)
    motion.touch(0.4)  # a MOUSE_DOWN / click while dragging keeps it alive
    assert motion.active(0.8) and motion.timed_out(0.95) and not motion.active(0.95)
    assert motion.chunk(here, DOWN, 0.95) is None
    assert motion.release() and not motion.release()  # True only while a drag was alive
    motion.set_gripper(closed=True)
    first, second = motion.chunk(here, DOWN, 1.0), motion.chunk(here, DOWN, 1.1)
    assert np.all(first[:, 6] == 1.0) and np.allclose(first[:, :6], 0.0) and second is not None
    assert motion.chunk(here, DOWN, 1.2) is None  # gripper_steps periods, then quiet
    motion.reset(gripper=gripper_from_finger_target(finger_position(0.3)))
    assert math.isclose(motion.gripper, 0.3, abs_tol=1e-9)  # a mode switch keeps what the fingers were told


@pytest.mark.parametrize(
    "field,value",
    [("period_s", 0.0), ("max_linear_speed", 0.5), ("chunk_length", 0), ("feedback_timeout_s", math.nan)],
)
def test_limits_refuse_what_an_ee_delta_action_cannot_mean(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        TeleopLimits(**{"period_s": 0.1, field: value})


def test_a_drag_action_moves_the_arm_the_way_the_controller_maps_it() -> None:
    """One action from the home pose, mapped by the shared kinematics, moves the tool towards the target."""
    kin = ArmKinematics()
    kin.set_joint_positions(np.asarray(robot.HOME_Q))
    start = kin.tool_pose()
    motion = TeleopMotion(TeleopLimits(period_s=0.1))
    motion.drag_to(start.position + np.array([0.05, -0.05, 0.0]), start.quaternion, 0.0)
    action = motion.chunk(start.position, start.quaternion, 0.0)[0].astype(np.float64)
    q = kin.ee_delta_target(action[:3], action[3:6], 0.1)
    kin.set_joint_positions(q)
    moved = kin.tool_pose().position - start.position
    assert np.allclose(moved, action[:3], atol=1e-3) and moved[0] > 0 > moved[1]


# ---------------------------------------------------------------------------------------------- fallback
def test_fallback_only_for_policy_failures_while_the_policy_owns_the_arm() -> None:
    for reason in ("max_steps", "timeout", "estop", "error", None):
        assert fallback_wanted(reason, "policy")
        assert not fallback_wanted(reason, "teleop") and not fallback_wanted(reason, "hold")
    for reason in ("takeover", "preempted", "canceled"):
        assert not fallback_wanted(reason, "policy")


def test_abort_watch_reports_each_new_abort_once_and_skips_history() -> None:
    watch = AbortWatch()
    old, new, running = b"o" * 16, b"n" * 16, b"r" * 16
    assert watch.new_aborts([(old, STATUS_ABORTED), (running, 2)]) == []  # already ended before we joined
    assert watch.new_aborts([(old, STATUS_ABORTED), (running, STATUS_ABORTED)]) == [running]
    assert watch.new_aborts([(running, STATUS_ABORTED), (new, 4)]) == []  # 4 = succeeded
    assert watch.new_aborts([(new, STATUS_ABORTED)]) == [new]


# ---------------------------------------------------------------------------------------------- files
def test_rviz_layout_parses_and_shows_the_markers_cameras_and_robot() -> None:
    from svrl_ros.stack import load_profile, node_parameters

    from tests.conftest import REPO_ROOT

    layout = yaml.safe_load((REPO_ROOT / "ros2_ws/src/svrl_ros/rviz/teleop.rviz").read_text())
    manager = layout["Visualization Manager"]
    displays = {d["Class"]: d for d in manager["Displays"]}
    assert (
        displays["rviz_default_plugins/InteractiveMarkers"]["Interactive Markers Namespace"] == "/svrl/teleop"
    )
    images = [d["Topic"]["Value"] for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/Image"]
    assert sorted(images) == ["/camera/camera/color/image_raw", "/wrist_camera/camera/color/image_raw"]
    assert "rviz_default_plugins/RobotModel" in displays and "rviz_default_plugins/TF" in displays
    assert manager["Global Options"]["Fixed Frame"] == "base_link"

    profile = load_profile("teleop")
    by_key = {n.key: n for n in profile.nodes}
    assert by_key["rviz2"].full_ros_only and by_key["robot_state_publisher"].full_ros_only
    assert not by_key["teleop_marker"].full_ros_only and by_key["sim_node"].parameters["timing"] == "lockstep"
    flag, rviz_file = by_key["rviz2"].arguments  # `$(share)` resolved to the package's folder
    assert (
        flag == "-d" and Path(rviz_file).is_file() and yaml.safe_load(Path(rviz_file).read_text()) == layout
    )
    assert "<robot" in node_parameters(profile, by_key["robot_state_publisher"])["robot_description"]
