"""Recording without DDS: frames paired by stamp, actions recovered from arm_controller's own commands,
who was in control, bad input dropped and counted, and the session that splits and writes episodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from svrl_ros.chunk_executor import ControlCore
from svrl_ros.episode_assembler import CONTROL_FEATURE, EpisodeAssembler
from svrl_ros.recording import GOAL_ABORTED, GOAL_EXECUTING, GOAL_SUCCEEDED, RecordingSession
from svrl_ros.safety_filter import SafetyFilter, SafetyLimits

from svrl_policy.dataset import LeRobotDataset
from svrl_sim import robot
from svrl_sim.kinematics import ArmKinematics

PERIOD_NS = 100_000_000
SIZE = 8


def _image(value: int, size: int = SIZE) -> np.ndarray:
    return np.full((size, size, 3), value % 256, dtype=np.uint8)


class ArmSim:
    """arm_controller's real decision (ControlCore + SafetyFilter) on a perfectly tracking arm."""

    def __init__(self, mode: str = "policy") -> None:
        self.core = ControlCore(
            SafetyFilter(SafetyLimits(period_s=0.1)), lockstep=True, command_timeout_s=0.5
        )
        self.core.set_mode(mode)
        self.q = np.asarray(robot.HOME_Q, dtype=np.float64)
        self.finger = np.full(2, robot.FINGER_OPEN)
        self.stamp = PERIOD_NS

    def step(self, asm: EpisodeAssembler, action: np.ndarray | None, source: str = "policy") -> bool:
        """Publish the state (images, joints) to the recorder, run one control cycle, execute it."""
        for cam in asm.cameras:
            asm.add_image(cam, self.stamp, _image(self.stamp // PERIOD_NS + (cam == "wrist")))
        asm.add_joint_state(self.stamp, self.q, self.finger)
        self.core.on_joint_state(self.stamp, self.q, self.finger, 0.0)
        if action is not None:
            self.core.on_chunk(source, self.stamp, action[None].astype(np.float64), "ee_delta", (), 0)
        command = self.core.cycle(0.0)
        if command is None:
            return False
        asm.add_gripper_command(command.finger)
        asm.add_arm_command(command.stamp_ns, command.arm)
        self.q, self.finger = command.arm.copy(), np.full(2, command.finger)
        self.stamp += PERIOD_NS
        return True


def _actions(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.uniform(-1, 1, size=(n, 7)) * np.array([0.01, 0.01, 0.01, 0.05, 0.05, 0.05, 1.0])
    a[:, -1] = np.where(a[:, -1] > 0, 1.0, -1.0)
    return a


def test_actions_recovered_from_arm_controller_commands_match_the_actions_sent() -> None:
    rng = np.random.default_rng(0)
    asm = EpisodeAssembler(default_mode=None)
    asm.set_mode("policy")
    arm = ArmSim()
    actions = _actions(rng, 25)
    asm.start_episode()
    for a in actions:
        assert arm.step(asm, a)
    episode = asm.finish_episode()
    assert len(episode) == 25 and not episode.dropped
    got = np.stack([f.action for f in episode.frames])
    np.testing.assert_allclose(got, actions, atol=1e-6)
    assert [f.stamp_ns for f in episode.frames] == [PERIOD_NS * (i + 1) for i in range(25)]
    # the proprio is the one policy_server builds from the same joints
    kin = ArmKinematics()
    kin.set_joint_positions(np.asarray(robot.HOME_Q), np.full(2, robot.FINGER_OPEN))
    np.testing.assert_array_equal(episode.frames[0].proprio, kin.proprio())
    assert episode.frames[3].images["main"][0, 0, 0] == 4 and episode.frames[3].images["wrist"][0, 0, 0] == 5
    assert episode.controls == ["policy"] * 25


def test_images_pair_with_the_nearest_stamp_within_half_a_period() -> None:
    """A real robot: 30 Hz cameras, 100 Hz joint states, a 10 Hz controller; nothing shares a stamp."""
    asm = EpisodeAssembler(cameras=("main",))
    asm.set_mode("teleop")
    asm.start_episode()
    q, f = np.asarray(robot.HOME_Q), np.full(2, 0.02)
    cam_stamps = [7_000_000 + i * 33_333_333 for i in range(40)]  # camera clock offset by 7 ms
    joint_stamps = [i * 10_000_000 for i in range(130)]
    command_stamps = joint_stamps[10:120:10]
    events = [(s, "cam") for s in cam_stamps] + [(s, "joint") for s in joint_stamps]
    events += [(s + 3_000_000, "cmd") for s in command_stamps]  # a command leaves 3 ms after its state
    for s, kind in sorted(events):
        if kind == "cam":
            asm.add_image("main", s, _image(s // 1_000_000))
        elif kind == "joint":
            asm.add_joint_state(s, q, f)
        else:
            asm.add_gripper_command(0.02)
            asm.add_arm_command(s - 3_000_000, q)
    episode = asm.finish_episode()
    assert [fr.stamp_ns for fr in episode.frames] == command_stamps
    for frame in episode.frames:
        nearest = min(cam_stamps, key=lambda c: abs(c - frame.stamp_ns))
        assert frame.images["main"][0, 0, 0] == (nearest // 1_000_000) % 256
    # a camera that stops: frames beyond the tolerance are dropped and counted, not paired with old images
    asm.start_episode()
    for s in (2_000_000_000, 2_100_000_000):
        asm.add_joint_state(s, q, f)
        asm.add_gripper_command(0.02)
        asm.add_arm_command(s, q)
    stopped = asm.finish_episode()
    assert len(stopped) == 0 and stopped.dropped == {"no_image": 2}
    assert EpisodeAssembler(cameras=("main",)).tolerance_ns == 50_000_000


def test_control_column_marks_takeover_and_handback_and_hold_is_not_recorded() -> None:
    rng = np.random.default_rng(1)
    asm = EpisodeAssembler()
    arm = ArmSim()
    asm.set_mode("policy")
    asm.start_episode()
    for a in _actions(rng, 3):
        arm.step(asm, a)
    asm.set_mode("teleop")
    arm.core.set_mode("teleop")
    for a in _actions(rng, 4):
        arm.step(asm, a, source="teleop")
    asm.set_mode("policy")
    arm.core.set_mode("policy")
    for a in _actions(rng, 2):
        arm.step(asm, a)
    asm.set_mode("hold")
    asm.add_gripper_command(0.01)  # a timer-mode arm_controller keeps commanding holds
    asm.add_arm_command(arm.stamp, arm.q)
    episode = asm.finish_episode()
    assert episode.controls == ["policy"] * 3 + ["teleop"] * 4 + ["policy"] * 2
    assert episode.takeovers == 1 and episode.handbacks == 1 and episode.dropped["hold"] == 1
    arrays = episode.arrays(asm.cameras)
    np.testing.assert_array_equal(arrays["extra"][CONTROL_FEATURE], [0, 0, 0, 1, 1, 1, 1, 0, 0])


def test_gripper_command_that_arrives_after_its_trajectory_still_pairs() -> None:
    asm = EpisodeAssembler(cameras=("main",))
    asm.set_mode("policy")
    asm.start_episode()
    q = np.asarray(robot.HOME_Q)
    for i, finger in enumerate((0.04, 0.0, 0.04), start=1):
        asm.add_image("main", i * PERIOD_NS, _image(i))
        asm.add_joint_state(i * PERIOD_NS, q, np.full(2, 0.04))
        asm.add_arm_command(i * PERIOD_NS, q)  # trajectory first ...
        asm.add_gripper_command(finger)  # ... its gripper command second
    episode = asm.finish_episode()
    np.testing.assert_allclose([f.action[-1] for f in episode.frames], [-1.0, 1.0, -1.0])


def test_bad_input_is_dropped_and_counted_and_recorded_frames_stay() -> None:
    rng = np.random.default_rng(2)
    asm = EpisodeAssembler()
    asm.set_mode("policy")
    arm = ArmSim()
    asm.start_episode()
    for a in _actions(rng, 4):
        arm.step(asm, a)
    # an image of the wrong size mid-episode: refused with a reason, its frame then has no image
    assert "is 16x16, the recording is 8x8" in asm.add_image("main", arm.stamp, _image(0, size=16))
    asm.add_image("wrist", arm.stamp, _image(0))
    asm.add_joint_state(arm.stamp, arm.q, arm.finger)
    asm.add_gripper_command(0.04)
    asm.add_arm_command(arm.stamp, arm.q)
    # NaN in the commands
    assert "7 finite targets" in asm.add_arm_command(arm.stamp + PERIOD_NS, np.full(7, np.nan))
    assert "not finite" in asm.add_gripper_command(float("nan"))
    # a command for a state whose joint_states message was refused (missing joints: never stored)
    asm.refuse("joint_states_bad", "joint_states lacks joints ['joint3']")
    asm.add_gripper_command(0.04)
    asm.add_arm_command(arm.stamp + 2 * PERIOD_NS, arm.q)
    asm.add_joint_state(arm.stamp + 3 * PERIOD_NS, arm.q, arm.finger)
    # a re-sent command (lost-message recovery) makes no second frame
    asm.add_gripper_command(0.04)
    asm.add_arm_command(PERIOD_NS, arm.q)
    episode = asm.finish_episode()
    assert len(episode) == 4
    assert episode.dropped == {
        "image_wrong_size": 1,
        "no_image": 1,
        "command_not_finite": 2,
        "joint_states_bad": 1,
        "no_joint_state": 1,
        "command_repeated": 1,
    }


def test_cameras_of_different_sizes_are_resized_when_asked() -> None:
    asm = EpisodeAssembler(cameras=("main", "wrist"))
    assert asm.add_image("main", 0, _image(0, size=16)) is None
    assert "need an image size to resize to" in asm.add_image("wrist", 0, _image(0, size=8))
    asm = EpisodeAssembler(cameras=("main", "wrist"), image_shape=(12, 12), resize=True)
    for cam, size in (("main", 16), ("wrist", 8)):
        assert asm.add_image(cam, 0, _image(200, size=size)) is None
    assert asm.missing_inputs() == ["joint_states", "arm mode"]
    frames = [img for cam in asm.cameras for _, img in asm._images[cam]]
    assert all(f.shape == (12, 12, 3) and (f == 200).all() for f in frames)


def test_commands_before_any_mode_is_known_are_dropped_unless_a_default_is_given() -> None:
    arm = ArmSim()
    asm = EpisodeAssembler()
    asm.start_episode()
    arm.step(asm, np.zeros(7))
    assert asm.finish_episode().dropped == {"no_mode": 1}
    asm = EpisodeAssembler(default_mode="teleop")
    asm.start_episode()
    arm.step(asm, np.zeros(7))
    assert asm.finish_episode().controls == ["teleop"]
    with pytest.raises(ValueError, match="default_mode"):
        EpisodeAssembler(default_mode="hold")


def _run_goal(
    session: RecordingSession, arm: ArmSim, rng, steps: int, goal: str, t: float, end_code: int
) -> float:
    session.on_goal_statuses([(goal, GOAL_EXECUTING)], t)
    for a in _actions(rng, steps):
        arm.step(session.assembler, a)
    session.on_goal_statuses([(goal, end_code)], t + 1.0)
    return t + 1.0


def test_goals_split_keeps_interventions_until_the_handback(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    session = RecordingSession(tmp_path / "ds", "pick the cube", split="goals", keep="interventions")
    session.assembler.set_mode("policy")
    arm = ArmSim()
    # goal 1: the policy alone, succeeds -> not an intervention, not kept
    t = _run_goal(session, arm, rng, 3, "g1", 0.0, GOAL_SUCCEEDED)
    assert session.tick(t + 1.0) and not session.episode_open
    # goal 2: the operator takes over (the goal aborts), moves, hands back
    session.on_goal_statuses([("g2", GOAL_EXECUTING)], t + 2)
    for a in _actions(rng, 2):
        arm.step(session.assembler, a)
    session.assembler.set_mode("teleop")
    arm.core.set_mode("teleop")
    session.on_goal_statuses([("g2", GOAL_ABORTED)], t + 3)
    assert session.tick(t + 10) == [] and session.episode_open  # the operator still holds the arm
    # a goal sent meanwhile (policy_server ends it at once) does not cut the intervention
    assert "ignored" in session.on_goal_statuses([("g3", GOAL_EXECUTING)], t + 10)[0]
    session.on_goal_statuses([("g3", GOAL_ABORTED)], t + 10)
    assert session.episode_open
    for a in _actions(rng, 3):
        arm.step(session.assembler, a, source="teleop")
    session.assembler.set_mode("policy")
    events = session.tick(t + 11)
    assert events and "5 frames (3 teleop, 1 takeover(s))" in events[0]
    assert LeRobotDataset(tmp_path / "ds").num_episodes == 1  # committed: on disk before the session closes
    path = session.close()
    ds = LeRobotDataset(path)
    assert ds.num_episodes == 1 and len(ds) == 5
    np.testing.assert_array_equal(ds.extra[CONTROL_FEATURE], [0, 0, 1, 1, 1])
    assert ds.episodes[0].metadata["takeovers"] == 1 and ds.episodes[0].instruction == "pick the cube"
    assert session.summary.skipped == {"no_intervention": 1}


def test_close_keeps_the_open_episode_and_an_empty_session_writes_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    session = RecordingSession(tmp_path / "ds", "wipe", split="service", default_mode="teleop")
    arm = ArmSim(mode="teleop")
    ok, message = session.start_episode()
    assert not ok and "nothing heard yet from joint_states, camera main, camera wrist" in message
    for cam in session.assembler.cameras:
        session.assembler.add_image(cam, 0, _image(0))
    session.assembler.add_joint_state(0, arm.q, arm.finger)
    assert session.start_episode()[0] and not session.start_episode()[0]
    for a in _actions(rng, 4):
        arm.step(session.assembler, a, source="teleop")
    path = session.close()  # what Ctrl-C does
    assert LeRobotDataset(path).num_episodes == 1
    assert RecordingSession(tmp_path / "empty", "wipe").close() is None
    assert not (tmp_path / "empty").exists()
    with pytest.raises(ValueError, match="already exists"):
        RecordingSession(tmp_path / "ds", "wipe")
