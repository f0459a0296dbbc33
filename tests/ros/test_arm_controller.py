"""arm_controller over real DDS: the node runs as a child process, this test plays the sim and the policy.

Every trajectory any test receives is checked finite and inside the URDF limits.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool, Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from svrl_interfaces.msg import ActionChunk  # noqa: E402
from svrl_interfaces.srv import SetMode  # noqa: E402
from svrl_ros import topics  # noqa: E402
from svrl_ros.conversions import (  # noqa: E402
    float32_sequence,
    joint_state_msg,
    nanoseconds_to_stamp,
    seconds_to_duration,
    stamp_to_nanoseconds,
)
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from svrl_sim import robot  # noqa: E402
from svrl_sim.kinematics import ArmKinematics, finger_position  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(90)]

PERIOD_NS = 100_000_000
HOME = np.array(robot.HOME_Q)
FINGERS = np.array([0.04, 0.04])
LOWER, UPPER, _ = robot.arm_limits()
NAMES = [*robot.ARM_JOINTS, *robot.FINGER_JOINTS]
HANG_GUARD_S = 20.0


class Harness:
    """The test's side of the graph: publishes joint states, chunks, e-stop; records the commands."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("arm_controller_test", context=self.context)
        self.lock = threading.Lock()
        self.trajectories: list[JointTrajectory] = []
        self.grippers: list[float] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.violations: list[str] = []
        n = self.node
        n.create_subscription(JointTrajectory, topics.ARM_TRAJECTORY, self._on_trajectory, 50)
        n.create_subscription(Float64MultiArray, topics.GRIPPER_COMMANDS, self._on_gripper, 50)
        n.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._record(self.diagnostics), 50)
        self.joint_pub = n.create_publisher(JointState, topics.JOINT_STATES, 10)
        self.chunk_pub = n.create_publisher(ActionChunk, topics.ACTION_CHUNK, 10)
        self.teleop_pub = n.create_publisher(ActionChunk, topics.TELEOP_CHUNK, 10)
        estop_qos = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.estop_pub = n.create_publisher(Bool, topics.ESTOP, estop_qos)
        self.plain_estop_pub = n.create_publisher(Bool, topics.ESTOP, 10)  # volatile: rclpy's default QoS
        self.set_mode_client = n.create_client(SetMode, topics.SET_MODE)
        self.reset_client = n.create_client(Trigger, topics.RESET_ESTOP)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _record(self, store: list):
        def callback(msg) -> None:
            with self.lock:
                store.append(msg)

        return callback

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        # The contract's promise, on everything the topic ever carried (checked by the fixture at the end:
        # an assert in here would only kill the executor thread).
        q = np.array([p for point in msg.points for p in point.positions])
        safe = list(msg.joint_names) == list(robot.ARM_JOINTS) and len(msg.points) == 1 and q.shape == (7,)
        safe = safe and bool(np.isfinite(q).all() and (q >= LOWER).all() and (q <= UPPER).all())
        with self.lock:
            self.trajectories.append(msg)
            if not safe:
                self.violations.append(f"trajectory {list(msg.joint_names)} {q.tolist()}")

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        values = list(msg.data)
        with self.lock:
            self.grippers.append(values[0] if values else float("nan"))
            if len(values) != 1 or not (np.isfinite(values[0]) and 0.0 <= values[0] <= robot.FINGER_OPEN):
                self.violations.append(f"gripper {values}")

    # ------------------------------------------------------------------------ helpers
    def wait_for(self, predicate, what: str, limit_s: float = HANG_GUARD_S):
        deadline = time.monotonic() + limit_s
        while True:
            with self.lock:
                value = predicate()
            if value:
                return value
            assert time.monotonic() < deadline, f"hang guard: {what}"
            time.sleep(0.01)

    def count(self) -> int:
        with self.lock:
            return len(self.trajectories)

    def wait_for_controller(self) -> None:
        assert self.set_mode_client.wait_for_service(timeout_sec=HANG_GUARD_S)
        assert self.reset_client.wait_for_service(timeout_sec=HANG_GUARD_S)
        self.wait_for(lambda: self.joint_pub.get_subscription_count() > 0, "joint_states subscriber")
        self.wait_for(lambda: self.chunk_pub.get_subscription_count() > 0, "chunk subscriber")
        self.wait_for(lambda: self.teleop_pub.get_subscription_count() > 0, "teleop subscriber")

    def call(self, client, request):
        future = client.call_async(request)
        self.wait_for(future.done, "service answer")
        return future.result()

    def set_mode(self, mode: str) -> SetMode.Response:
        return self.call(self.set_mode_client, SetMode.Request(mode=mode))

    def reset_estop(self) -> Trigger.Response:
        return self.call(self.reset_client, Trigger.Request())

    def publish_joints(self, stamp_ns: int, arm_q: np.ndarray, fingers: np.ndarray = FINGERS) -> None:
        positions = np.concatenate([arm_q, fingers])
        self.joint_pub.publish(joint_state_msg(NAMES, positions, np.zeros(9), nanoseconds_to_stamp(stamp_ns)))

    def publish_chunk(self, stamp_ns: int, actions: np.ndarray, teleop: bool = False) -> None:
        msg = ActionChunk()
        msg.header.stamp = nanoseconds_to_stamp(stamp_ns)
        msg.action_space = "ee_delta"
        msg.dim_names = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
        msg.chunk_length, msg.dims = (int(n) for n in actions.shape)
        msg.control_period = seconds_to_duration(PERIOD_NS * 1e-9)
        msg.actions = float32_sequence(actions)
        (self.teleop_pub if teleop else self.chunk_pub).publish(msg)

    def diagnostic_messages(self) -> list[str]:
        return [s.message for d in self.diagnostics for s in d.status]

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=5)


@pytest.fixture
def harness(ros_env):
    h = Harness()
    yield h
    h.close()
    assert not h.violations, h.violations


def start_controller(processes, tmp_path: Path, *params: str):
    args = ["-m", "svrl_ros.arm_controller", "--ros-args"]
    for p in params:
        args += ["-p", p]
    return processes.start_python(*args, log=tmp_path / "arm_controller.log")


def chunk(k: int, dx: float = 0.01, gripper: float = 0.5) -> np.ndarray:
    actions = np.zeros((k, 7), np.float32)
    actions[:, 0] = dx
    actions[:, 4] = -0.02
    actions[:, 6] = gripper
    return actions


def expected_target(arm_q: np.ndarray, action: np.ndarray) -> np.ndarray:
    kin = ArmKinematics()
    kin.set_joint_positions(arm_q, FINGERS)
    a = action.astype(np.float64)
    return kin.ee_delta_target(a[:3], a[3:6], PERIOD_NS * 1e-9)


def test_lockstep_chunk_nan_and_teleop(processes, harness: Harness, tmp_path: Path) -> None:
    proc = start_controller(processes, tmp_path, "trigger:=joint_states", "start_mode:=policy")
    harness.wait_for_controller()

    # A valid chunk of K = 4: exactly 4 commands, each the kinematics' target for the state it answers.
    k, stamp, arm_q = 4, 5 * PERIOD_NS, HOME.copy()
    actions = chunk(k)
    harness.publish_joints(stamp, arm_q)
    harness.publish_chunk(stamp, actions)
    for i in range(k):
        harness.wait_for(
            lambda i=i: len(harness.trajectories) > i and len(harness.grippers) > i, f"command {i}"
        )
        msg = harness.trajectories[i]
        assert stamp_to_nanoseconds(msg.header.stamp) == stamp
        assert np.array(msg.points[0].positions).tobytes() == expected_target(arm_q, actions[i]).tobytes()
        assert stamp_to_nanoseconds(msg.points[0].time_from_start) == PERIOD_NS
        assert harness.grippers[i] == finger_position(float(actions[i, 6]))
        arm_q = np.array(msg.points[0].positions)  # the "sim" reaches the target exactly
        stamp += PERIOD_NS
        harness.publish_joints(stamp, arm_q)

    # Chunk used up: the next state gets nothing. A teleop chunk in policy mode is ignored, and a NaN chunk
    # is refused whole; the diagnostics say why.
    harness.publish_chunk(stamp, chunk(3), teleop=True)
    bad = chunk(3)
    bad[2, 1] = np.nan
    harness.publish_chunk(stamp, bad)
    harness.wait_for(lambda: any("NaN" in m for m in harness.diagnostic_messages()), "NaN diagnostics")
    harness.publish_joints(stamp, arm_q)
    # A valid chunk after them runs (and proves the bad ones were processed before it, in order).
    harness.publish_chunk(stamp, chunk(1, dx=-0.01))
    harness.wait_for(lambda: len(harness.trajectories) == k + 1, "the valid chunk after the bad ones")
    assert np.array(harness.trajectories[k].points[0].positions).tobytes() == (
        expected_target(arm_q, chunk(1, dx=-0.01)[0]).tobytes()
    )
    with harness.lock:
        assert len(harness.trajectories) == k + 1 and len(harness.grippers) == k + 1
        last = harness.diagnostics[-1].status[0]
        counters = {kv.key: kv.value for kv in last.values}
    assert counters["chunks_ignored"] == "1" and counters["chunks_refused"] == "1"
    assert proc.poll() is None


def test_estop_latches_across_mode_switches(processes, harness: Harness, tmp_path: Path) -> None:
    start_controller(processes, tmp_path, "trigger:=joint_states", "start_mode:=teleop")
    harness.wait_for_controller()
    assert not harness.set_mode("dance").success

    stamp = PERIOD_NS
    harness.publish_joints(stamp, HOME)
    harness.publish_chunk(stamp, chunk(2))  # policy chunk in teleop mode: ignored
    harness.publish_chunk(stamp, chunk(2), teleop=True)
    harness.wait_for(lambda: len(harness.trajectories) == 1, "teleop command")

    harness.estop_pub.publish(Bool(data=True))
    harness.wait_for(lambda: any("e-stop" in m for m in harness.diagnostic_messages()), "e-stop diagnostics")
    response = harness.set_mode("policy")
    assert not response.success and "e-stop" in response.message
    assert harness.set_mode("hold").success
    assert not harness.set_mode("teleop").success  # still latched after a switch
    assert not harness.reset_estop().success  # the topic still says True
    stamp += PERIOD_NS
    harness.publish_joints(stamp, HOME)
    harness.publish_chunk(stamp, chunk(2), teleop=True)

    harness.estop_pub.publish(Bool(data=False))
    deadline = time.monotonic() + HANG_GUARD_S
    while not harness.reset_estop().success:  # the release travels on a topic, the reset on a service
        assert time.monotonic() < deadline, "hang guard: reset after release"
        time.sleep(0.05)
    assert harness.set_mode("teleop").success
    harness.publish_chunk(stamp, chunk(1), teleop=True)
    harness.wait_for(lambda: len(harness.trajectories) == 2, "teleop command after the reset")
    assert stamp_to_nanoseconds(harness.trajectories[1].header.stamp) == stamp  # none while latched


def test_estop_from_a_plain_volatile_publisher_latches(processes, harness: Harness, tmp_path: Path) -> None:
    """A transient-local subscription alone would match no volatile publisher and drop every press."""
    start_controller(processes, tmp_path, "trigger:=joint_states", "start_mode:=policy")
    harness.wait_for_controller()
    harness.wait_for(lambda: harness.plain_estop_pub.get_subscription_count() > 0, "e-stop subscription")
    harness.plain_estop_pub.publish(Bool(data=True))
    harness.wait_for(lambda: any("e-stop" in m for m in harness.diagnostic_messages()), "e-stop diagnostics")
    assert not harness.set_mode("policy").success


def test_timer_mode_holds_when_joint_states_stop(processes, harness: Harness, tmp_path: Path) -> None:
    start_controller(
        processes,
        tmp_path,
        "trigger:=timer",
        "start_mode:=policy",
        "joint_state_timeout_s:=0.3",
        "command_timeout_s:=0.3",
    )
    harness.wait_for_controller()
    stop = threading.Event()
    last_stamp = [0]

    def joint_source() -> None:  # a robot at 50 Hz, standing still at HOME
        stamp = 0
        while not stop.is_set():
            stamp += 20_000_000
            harness.publish_joints(stamp, HOME)
            last_stamp[0] = stamp
            time.sleep(0.02)

    source = threading.Thread(target=joint_source, daemon=True)
    source.start()
    try:
        harness.wait_for(lambda: harness.trajectories, "hold command at start")
        harness.publish_chunk(last_stamp[0], chunk(100, dx=0.01))
        moving = expected_target(HOME, chunk(1, dx=0.01)[0])
        harness.wait_for(
            lambda: any(np.array_equal(t.points[0].positions, moving) for t in harness.trajectories),
            "a commanded motion",
        )
    finally:
        stop.set()
        source.join()
    final = last_stamp[0]
    # Joint states stopped: the controller must come to hold the last measured position.
    seen = harness.count()

    def held() -> bool:
        tail = harness.trajectories[seen:]
        return any(
            stamp_to_nanoseconds(t.header.stamp) == final and np.array_equal(t.points[0].positions, HOME)
            for t in tail
        )

    harness.wait_for(held, "hold after the joint states stopped")
    with harness.lock:
        after = [t for t in harness.trajectories if stamp_to_nanoseconds(t.header.stamp) == final]
    # At most one action can answer the last state; everything after the first hold is the hold.
    moves = [i for i, t in enumerate(after) if not np.array_equal(t.points[0].positions, HOME)]
    assert len(moves) <= 1
    first_hold = next(i for i, t in enumerate(after) if np.array_equal(t.points[0].positions, HOME))
    assert all(np.array_equal(t.points[0].positions, HOME) for t in after[first_hold:])
    harness.wait_for(lambda: any("stale" in m for m in harness.diagnostic_messages()), "stale diagnostics")


def test_arm_mode_is_latched_and_follows_every_switch(processes, harness: Harness, tmp_path: Path) -> None:
    """svrl/arm_mode: a reader that joins after the start still gets the mode; each change is published once."""
    from std_msgs.msg import String

    start_controller(processes, tmp_path, "trigger:=joint_states", "start_mode:=policy")
    harness.wait_for_controller()
    modes: list[str] = []
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    harness.node.create_subscription(String, topics.ARM_MODE, lambda m: modes.append(m.data), latched)
    harness.wait_for(lambda: modes == ["policy"], "the latched start mode")
    assert harness.set_mode("teleop").success
    assert harness.set_mode("teleop").success  # a re-sync, not a change: nothing new on the topic
    assert not harness.set_mode("dance").success
    assert harness.set_mode("hold").success
    harness.wait_for(lambda: modes[-1:] == ["hold"], "the hold mode")
    assert modes == ["policy", "teleop", "hold"]
