"""sim_node over real FastDDS: the node in a child process, this test as the robot graph's other end.

The lock-step test drives the node exactly as arm_controller will (the scripted expert's ee_delta actions
mapped to joint targets with svrl_sim.kinematics from the *received* joint states) and checks every state
bit for bit against a local SimEnv fed the same joint-level commands.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import rclpy
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from svrl_interfaces.msg import EpisodeStatus
from svrl_interfaces.srv import ResetEpisode, StepSim
from svrl_ros import topics
from svrl_ros.conversions import (
    image_from_msg,
    joint_positions,
    nanoseconds_to_stamp,
    seconds_to_duration,
    stamp_to_nanoseconds,
)
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

# Upper bounds against hangs only (the node loads MuJoCo first); nothing asserts on speed.
START_LIMIT_S = 60.0
STATE_LIMIT_S = 20.0
IMAGE_SIZE = 64
PERIOD_NS = 100_000_000
ARM = tuple(f"joint{i}" for i in range(1, 8))
JOINTS = (*ARM, "finger_joint1", "finger_joint2")
CAMERAS = ("main", "wrist")


def _first_task() -> str:
    from svrl_sim.tasks import tasks_in_suite

    return tasks_in_suite("spatial")[0].name


def _start_task() -> str:
    """The node starts on another task than the tests reset to: its start state (which may or may not
    reach this client, depending on discovery) can then never be taken for the state after the reset."""
    from svrl_sim.tasks import tasks_in_suite

    return tasks_in_suite("spatial")[1].name


@dataclass
class State:
    joints: JointState | None = None
    status: EpisodeStatus | None = None
    images: dict[str, np.ndarray] = field(default_factory=dict)
    infos: dict[str, CameraInfo] = field(default_factory=dict)

    def complete(self, images: bool) -> bool:
        return (
            self.joints is not None
            and self.status is not None
            and (not images or (len(self.images) == len(self.infos) == len(CAMERAS)))
        )

    @property
    def positions(self) -> np.ndarray:
        return joint_positions(self.joints, JOINTS)


class SimClient:
    """The other end of the graph: an rclpy node in its own context, spun on a background thread."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("sim_node_test_client", context=self.context)
        self.states: dict[int, State] = {}
        self.clock_ns: list[int] = []
        self._changed = threading.Condition()
        n = self.node
        n.create_subscription(JointState, topics.JOINT_STATES, self._part("joints"), 10)
        n.create_subscription(EpisodeStatus, topics.SIM_STATUS, self._part("status"), 10)
        n.create_subscription(Clock, "/clock", self._on_clock, 10)
        for cam in CAMERAS:  # as policy_server subscribes: sensor-data (best effort) QoS
            n.create_subscription(
                Image, topics.CAMERA_IMAGE_TOPICS[cam], self._image(cam), qos_profile_sensor_data
            )
            n.create_subscription(
                CameraInfo, topics.CAMERA_INFO_TOPICS[cam], self._info(cam), qos_profile_sensor_data
            )
        self.trajectory_pub = n.create_publisher(JointTrajectory, topics.ARM_TRAJECTORY, 10)
        self.gripper_pub = n.create_publisher(Float64MultiArray, topics.GRIPPER_COMMANDS, 10)
        self.reset_client = n.create_client(ResetEpisode, topics.SIM_RESET)
        self.step_client = n.create_client(StepSim, topics.SIM_STEP)
        # made before spinning starts: an entity added to a spinning node can miss the executor's wait set
        self.parameter_client = n.create_client(SetParameters, "/sim_node/set_parameters")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    # -- receiving -------------------------------------------------------------------------------
    def _store(self, stamp, update) -> None:
        with self._changed:
            update(self.states.setdefault(stamp_to_nanoseconds(stamp), State()))
            self._changed.notify_all()

    def _part(self, name: str):
        return lambda msg: self._store(msg.header.stamp, lambda s: setattr(s, name, msg))

    def _image(self, cam: str):
        return lambda msg: self._store(
            msg.header.stamp, lambda s: s.images.__setitem__(cam, image_from_msg(msg))
        )

    def _info(self, cam: str):
        return lambda msg: self._store(msg.header.stamp, lambda s: s.infos.__setitem__(cam, msg))

    def _on_clock(self, msg: Clock) -> None:
        with self._changed:
            self.clock_ns.append(stamp_to_nanoseconds(msg.clock))
            self._changed.notify_all()

    def wait_for(self, predicate, what: str, limit_s: float = STATE_LIMIT_S):
        deadline = time.monotonic() + limit_s
        with self._changed:
            while not (result := predicate()):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out waiting for {what}"
                self._changed.wait(left)
        return result

    def wait_state(self, stamp_ns: int, images: bool = True) -> State:
        def ready():
            state = self.states.get(stamp_ns)
            return state if state is not None and state.complete(images) else None

        return self.wait_for(ready, f"the state at {stamp_ns} ns")

    def newest_stamp(self) -> int:
        with self._changed:
            return max(self.states, default=-1)

    # -- sending ---------------------------------------------------------------------------------
    def send(
        self, finger: float | list[float], arm: np.ndarray | list[float], stamp_ns: int, names=ARM
    ) -> None:
        """gripper first, then the trajectory: arm_controller's order."""
        self.send_gripper(finger)
        self.send_trajectory(arm, stamp_ns, names)

    def send_gripper(self, finger: float | list[float]) -> None:
        values = finger if isinstance(finger, list) else [finger]
        self.gripper_pub.publish(Float64MultiArray(data=[float(v) for v in values]))

    def send_trajectory(self, arm, stamp_ns: int, names=ARM, points: int = 1) -> None:
        msg = JointTrajectory(joint_names=list(names))
        msg.header.stamp = nanoseconds_to_stamp(stamp_ns)
        msg.points = [
            JointTrajectoryPoint(positions=[float(v) for v in arm], time_from_start=seconds_to_duration(0.1))
            for _ in range(points)
        ]
        self.trajectory_pub.publish(msg)

    def call(self, client, request, limit_s: float = STATE_LIMIT_S):
        assert client.wait_for_service(timeout_sec=limit_s), f"{client.srv_name} is not served"
        future = client.call_async(request)
        deadline = time.monotonic() + limit_s
        while not future.done():
            assert time.monotonic() < deadline, f"no answer from {client.srv_name}"
            time.sleep(0.005)
        return future.result()

    def reset(self, task: str, split: str = "eval", index: int = 0) -> tuple[ResetEpisode.Response, State]:
        """Reset and return the new episode's first state. Retried while discovery may still be matching
        this client's subscriptions to the node's publishers (a reset is harmless to repeat)."""
        for _ in range(5):
            before = self.newest_stamp()
            response = self.call(
                self.reset_client, ResetEpisode.Request(task=task, split=split, init_state_index=index)
            )
            if not response.success:
                return response, None
            try:
                stamp = self.wait_for(
                    lambda before=before: next(
                        (
                            s
                            for s in sorted(self.states)
                            if s > before
                            and self.states[s].complete(True)
                            and self.states[s].status.task == task
                        ),
                        None,
                    ),
                    "the state after a reset",
                    limit_s=5.0,
                )
            except AssertionError:
                continue
            return response, self.states[stamp]
        raise AssertionError("no state ever arrived after sim/reset_episode")

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)


def _start(processes, tmp_path, *params: str):
    args = [
        "-m",
        "svrl_ros.sim_node",
        "--ros-args",
        "-p",
        f"image_size:={IMAGE_SIZE}",
        "-p",
        f"task:={_start_task()}",
    ]
    for p in params:
        args += ["-p", p]
    node = processes.start_python(*args, log=tmp_path / "sim_node.log")
    client = SimClient()
    if not client.reset_client.wait_for_service(timeout_sec=START_LIMIT_S):
        client.close()
        pytest.fail(f"sim_node never came up; exit code {node.poll()}; log:\n{node.log_path.read_text()}")
    return node, client


@pytest.fixture
def lockstep(processes, tmp_path):
    node, client = _start(processes, tmp_path, "timing:=lockstep", "use_sim_time:=true")
    try:
        yield node, client
    finally:
        client.close()


@pytest.fixture
def local_env():
    from svrl_sim.env import SimEnv

    env = SimEnv(image_size=IMAGE_SIZE, action_space="ee_delta")
    yield env
    env.close()


def _local_reset(env, task: str):
    from svrl_sim.tasks import InitState

    obs, _info = env.reset(task, InitState("eval", 0))
    return obs


def _assert_same_state(state: State, env, images: dict[str, np.ndarray] | None) -> None:
    """Bit-identical: joint positions and velocities from MjData, and both camera images."""
    model, data = env.model, env.data
    qpos = np.array([data.qpos[model.joint(j).qposadr[0]] for j in JOINTS])
    qvel = np.array([data.qvel[model.joint(j).dofadr[0]] for j in JOINTS])
    assert list(state.joints.name) == list(JOINTS)
    np.testing.assert_array_equal(state.positions, qpos)
    np.testing.assert_array_equal(np.array(state.joints.velocity), qvel)
    if images is not None:
        for cam in CAMERAS:
            np.testing.assert_array_equal(state.images[cam], images[cam], err_msg=f"{cam} image differs")


def test_lockstep_reproduces_the_local_episode_bit_for_bit(lockstep, local_env) -> None:
    from svrl_sim.kinematics import ArmKinematics, finger_position

    node, client = lockstep
    task = _first_task()
    response, state = client.reset(task)
    assert response.success, response.message
    obs = _local_reset(local_env, task)
    assert response.instruction == local_env.instruction and response.max_steps == local_env.max_steps
    _assert_same_state(state, local_env, obs["images"])
    assert state.status.step == 0 and not state.status.success and not state.status.done
    for cam in CAMERAS:
        info = state.infos[cam]
        assert info.header.frame_id == topics.CAMERA_FRAMES[cam]
        fovy = local_env.model.cam_fovy[local_env.index.camera_ids[cam]]
        assert info.k[4] == pytest.approx(0.5 * IMAGE_SIZE / math.tan(math.radians(fovy) / 2))

    kinematics = ArmKinematics()  # robot-only model from the URDF, as arm_controller has it
    stamp = stamp_to_nanoseconds(state.joints.header.stamp)
    success_step = None
    extra_after_success = 3
    for _ in range(local_env.max_steps + extra_after_success):
        measured = state.positions
        kinematics.set_joint_positions(measured[:7], measured[7:])
        if local_env.episode_running:
            action = local_env.expert_action()
            arm = kinematics.ee_delta_target(action[:3], action[3:6], local_env.control_dt)
            finger = finger_position(action[6])
        else:  # after the end the robot is still there: hold it where it is
            arm = measured[:7]
        obs, reward, _terminated, _truncated, info = local_env.step_command(arm, finger)
        client.send(finger, arm, stamp)
        stamp += PERIOD_NS
        state = client.wait_state(stamp)
        _assert_same_state(state, local_env, obs["images"])
        status = state.status
        assert status.success == info["success"]
        assert status.reward == reward
        assert status.step == local_env.step_count
        assert status.done == (not local_env.episode_running)
        if info["success"] and success_step is None:
            success_step = status.step
        if success_step is not None:
            extra_after_success -= 1
            if extra_after_success < 0:
                break
    assert success_step is not None, "the expert episode never succeeded"
    assert state.status.success and state.status.done and state.status.step == success_step  # latched
    assert client.clock_ns[-1] == stamp  # /clock went out with every state
    assert node.poll() is None


def test_lockstep_ignores_wrong_stamps_and_bad_messages(lockstep, local_env) -> None:
    node, client = lockstep
    task = _first_task()
    _response, state = client.reset(task)
    _local_reset(local_env, task)
    stamp = stamp_to_nanoseconds(state.joints.header.stamp)
    q = state.positions[:7]
    q_a, q_b, q_wrong = q + 0.02, q - 0.03, q + 0.3

    # Round A: wrong stamps and unusable trajectories before the good pair. Had any of them executed,
    # the state after `stamp` would differ from the local env's (other targets) or come one tick later.
    client.send(0.0, q_wrong, stamp + PERIOD_NS)  # a future state
    client.send(0.0, q_wrong, stamp - PERIOD_NS)  # a past one
    client.send_trajectory(q_wrong, stamp, names=(*ARM[:6], "joint9"))  # unknown joint name
    client.send_trajectory(q_wrong[:6], stamp, names=ARM[:6])  # a missing joint
    client.send_trajectory([math.nan, *q_wrong[1:]], stamp)  # NaN
    client.send_trajectory(q_wrong[:6], stamp)  # 6 positions for 7 names
    client.send_trajectory(q_wrong, stamp, points=0)  # no points
    client.send(0.02, q_a, stamp)
    obs, *_ = local_env.step_command(q_a, 0.02)
    stamp += PERIOD_NS
    _assert_same_state(client.wait_state(stamp), local_env, obs["images"])

    # Round B: bad gripper commands are ignored, so the trajectory waits for a good one.
    client.send_gripper([0.0, 0.0])
    client.send_gripper([math.inf])
    client.send_gripper([])
    client.send_trajectory(q_b, stamp)
    client.send_gripper(0.03)
    obs, *_ = local_env.step_command(q_b, 0.03)
    stamp += PERIOD_NS
    _assert_same_state(client.wait_state(stamp), local_env, obs["images"])
    assert stamp + PERIOD_NS not in client.states  # one state per accepted pair, no more

    # sim/step holds the newest targets; images with the last state only
    bad = client.call(client.step_client, StepSim.Request(num_steps=0, render=True))
    assert not bad.success and "num_steps" in bad.message
    done = client.call(client.step_client, StepSim.Request(num_steps=2, render=True))
    assert done.success, done.message
    local_env.step_command(q_b, 0.03, render=False)
    obs, *_ = local_env.step_command(q_b, 0.03)
    assert stamp_to_nanoseconds(done.sim_time) == stamp + 2 * PERIOD_NS
    assert done.episode_step == local_env.step_count == 4
    stamp += 2 * PERIOD_NS
    _assert_same_state(client.wait_state(stamp), local_env, obs["images"])
    assert not client.states[stamp - PERIOD_NS].images  # no images for the intermediate state

    # sim/reset_episode refuses bad requests and changes nothing: the next pair continues this episode
    for request, words in (
        (ResetEpisode.Request(task="spatial/no_such_task", split="eval"), "unknown task"),
        (ResetEpisode.Request(task=task, split="test"), "split"),
        (ResetEpisode.Request(task=task, split="eval", init_state_index=100_000), "out of range"),
        (ResetEpisode.Request(task="", split="eval"), "no task"),
    ):
        response = client.call(client.reset_client, request)
        assert not response.success and words in response.message, response.message
    client.send(0.01, q_a, stamp)
    obs, *_ = local_env.step_command(q_a, 0.01)
    stamp += PERIOD_NS
    _assert_same_state(client.wait_state(stamp), local_env, obs["images"])
    assert node.poll() is None
    log = node.log_path.read_text()
    for reason in (
        "stale_stamp",
        "unknown_joints",
        "missing_joints",
        "non_finite",
        "wrong_length",
        "no_points",
    ):
        assert reason in log, f"no log line for {reason}"


def _set_parameter(client: SimClient, name: str, value) -> None:
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    result = client.call(client.parameter_client, request)
    assert all(r.successful for r in result.results), result


def test_realtime_advances_on_its_own_and_holds(processes, tmp_path) -> None:
    node, client = _start(
        processes,
        tmp_path,
        "timing:=realtime",
        "use_sim_time:=true",  # as in sim profiles: the wall-clock timer must not wait for /clock
        "cmd_timeout_s:=0.0",
        "publish_images:=false",
    )
    try:
        # no commands at all: sim time still moves, one period per state
        client.wait_for(lambda: len(client.states) >= 4, "states of a free-running sim")
        first = min(client.states)
        client.wait_state(first + 3 * PERIOD_NS, images=False)
        steps = [client.states[first + i * PERIOD_NS].status.step for i in range(4)]
        assert steps == sorted(steps) and steps[-1] == steps[0] + 3

        def newest() -> State:
            return client.wait_state(client.newest_stamp(), images=False)

        q0 = newest().positions
        target = q0[:7].copy()
        target[0] += 0.5
        # cmd_timeout_s = 0: every target is already stale at the next tick, the arm holds where it is
        client.send(0.04, target, 0)
        seen = client.newest_stamp()
        client.wait_state(seen + 5 * PERIOD_NS, images=False)
        assert abs(newest().positions[0] - q0[0]) < 0.05

        # a fresh target is held until it expires: the arm gets there
        _set_parameter(client, "cmd_timeout_s", 60.0)
        client.send(0.04, target, 0)
        client.wait_for(lambda: abs(newest().positions[0] - target[0]) < 0.01, "the arm to reach its target")

        # commands stop and the target expires: the arm holds its measured position, time goes on
        def holds() -> int:
            return node.log_path.read_text().count("holding the measured position")

        holds_before = holds()
        _set_parameter(client, "cmd_timeout_s", 0.0)
        client.wait_for(lambda: holds() > holds_before, "the timeout hold")
        held = newest()
        later = client.wait_state(
            stamp_to_nanoseconds(held.joints.header.stamp) + 5 * PERIOD_NS, images=False
        )
        assert abs(later.positions[0] - target[0]) < 0.01
        assert node.poll() is None
    finally:
        client.close()
