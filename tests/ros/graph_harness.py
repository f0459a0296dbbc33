"""The test process's side of a running robot graph (docs/robot_graph.md), for the reliability tests.

`GraphProbe` records what `arm_controller` commands (every trajectory and gripper command, with its
arrival time), the states `sim_node` publishes and the chunks on `svrl/action_chunk`; it publishes on the
graph's input topics (fuzz, e-stop), sends goals and calls the arm's services. `start_stack` runs the
profile the way an operator does (`svrl up`); `start_nodes` starts the same profile's nodes one by one
(same parameters files, same command lines as `svrl up`), so a test can kill one node on its own.

Run as `python -m tests.ros.graph_harness relay` it is a camera relay: it republishes `sim_node`'s camera
topics (remapped under RELAY_PREFIX) on the real camera topics, so killing it kills only the cameras,
like a camera driver dying on a robot.

Every time limit here is a hang guard, never a speed judgement.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RELAY_PREFIX = "sim_cameras/"  # sim_node's camera topics are remapped under this when a relay runs
FUZZ_FRAME = "fuzz"  # header.frame_id of every message the probe forges: its own recorders skip them
HANG_GUARD_S = 120.0


@dataclass(frozen=True)
class Stamped:
    """One recorded message: when it arrived (steady clock, s), its header stamp (ns), its payload."""

    arrived_s: float
    stamp_ns: int
    values: np.ndarray


def wait_future(future: Any, limit_s: float, what: str, log: Path | None = None) -> Any:
    """The future's result; fails the test (with the graph's log tail) when the hang guard runs out."""
    deadline = time.monotonic() + limit_s
    while not future.done():
        if time.monotonic() > deadline:
            raise AssertionError(f"hang guard: no {what} within {limit_s:.0f} s{log_tail(log)}")
        time.sleep(0.01)
    return future.result()


def wait_until(predicate: Callable[[], Any], limit_s: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + limit_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"hang guard: {what} did not happen within {limit_s:.0f} s{log_tail(log)}")
        time.sleep(0.02)


def log_tail(log: Path | None, chars: int = 6000) -> str:
    if log is None or not log.exists():
        return ""
    return "\n--- log tail ---\n" + log.read_text(errors="replace")[-chars:]


class GraphProbe:
    """Records the graph's outputs and drives its inputs, from its own rclpy context and thread."""

    def __init__(self, name: str = "graph_probe") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.action import ActionClient
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, Float64MultiArray
        from std_srvs.srv import Trigger
        from svrl_interfaces.action import ExecuteInstruction
        from svrl_interfaces.msg import ActionChunk
        from svrl_interfaces.srv import ResetEpisode, SetMode
        from svrl_ros import topics
        from trajectory_msgs.msg import JointTrajectory

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = node = rclpy.create_node(name, context=self.context)
        self.lock = threading.Lock()
        self.trajectories: list[Stamped] = []
        self.trajectory_names: set[tuple[str, ...]] = set()
        self.grippers: list[Stamped] = []
        self.joint_states: list[Stamped] = []
        self.chunks: list[tuple[float, Any]] = []
        self.diagnostics: list[tuple[float, dict[str, str], str]] = []

        self._trajectory_sub = node.create_subscription(
            JointTrajectory, topics.ARM_TRAJECTORY, self._on_trajectory, 200
        )
        node.create_subscription(Float64MultiArray, topics.GRIPPER_COMMANDS, self._on_gripper, 200)
        node.create_subscription(JointState, topics.JOINT_STATES, self._on_joint_states, 200)
        node.create_subscription(ActionChunk, topics.ACTION_CHUNK, self._on_chunk, 200)
        node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics, 200)
        self.last_image_s = -math.inf  # when the newest main-camera frame (not ours) arrived
        node.create_subscription(Image, topics.MAIN_CAMERA_IMAGE, self._on_image, qos_profile_sensor_data)

        self.image_pubs = {
            cam: node.create_publisher(Image, topic, 10) for cam, topic in topics.CAMERA_IMAGE_TOPICS.items()
        }
        self.joint_pub = node.create_publisher(JointState, topics.JOINT_STATES, 10)
        self.chunk_pub = node.create_publisher(ActionChunk, topics.ACTION_CHUNK, 10)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.estop_pub = node.create_publisher(Bool, topics.ESTOP, latched)
        self.action = ActionClient(node, ExecuteInstruction, topics.EXECUTE_INSTRUCTION)
        self.set_mode_client = node.create_client(SetMode, topics.SET_MODE)
        self.reset_estop_client = node.create_client(Trigger, topics.RESET_ESTOP)
        self.sim_reset_client = node.create_client(ResetEpisode, topics.SIM_RESET)
        self._goal_type = ExecuteInstruction.Goal
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ recorders
    @staticmethod
    def _stamp_ns(msg: Any) -> int:
        return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)

    def _on_trajectory(self, msg: Any) -> None:
        # Every point of every trajectory is kept, whatever its shape: the invariant is checked on all.
        now = time.monotonic()
        with self.lock:
            self.trajectory_names.add(tuple(msg.joint_names))
            for point in msg.points:
                values = np.array(point.positions, dtype=np.float64)
                self.trajectories.append(Stamped(now, self._stamp_ns(msg), values))
            if not msg.points:
                self.trajectories.append(Stamped(now, self._stamp_ns(msg), np.array([math.nan])))

    def _on_gripper(self, msg: Any) -> None:
        with self.lock:
            self.grippers.append(Stamped(time.monotonic(), -1, np.array(msg.data, dtype=np.float64)))

    def _on_joint_states(self, msg: Any) -> None:
        if msg.header.frame_id == FUZZ_FRAME or len(msg.position) < 7:
            return
        index = {n: i for i, n in enumerate(msg.name)}
        try:
            arm = np.array([msg.position[index[f"joint{i}"]] for i in range(1, 8)], dtype=np.float64)
        except (KeyError, IndexError):
            return
        with self.lock:
            self.joint_states.append(Stamped(time.monotonic(), self._stamp_ns(msg), arm))

    def _on_image(self, msg: Any) -> None:
        if msg.header.frame_id != FUZZ_FRAME:
            self.last_image_s = time.monotonic()

    def _on_chunk(self, msg: Any) -> None:
        if msg.header.frame_id != FUZZ_FRAME:
            with self.lock:
                self.chunks.append((time.monotonic(), msg))

    def _on_diagnostics(self, msg: Any) -> None:
        now = time.monotonic()
        with self.lock:
            for status in msg.status:
                if "arm_controller" in status.name:
                    values = {kv.key: kv.value for kv in status.values}
                    self.diagnostics.append((now, values, status.message))

    # ------------------------------------------------------------------------------------ views
    def trajectories_since(self, t: float) -> list[Stamped]:
        with self.lock:
            return [s for s in self.trajectories if s.arrived_s >= t]

    def states_heard(self) -> int:
        """Sim joint states received so far: zero until the probe's subscription has matched."""
        with self.lock:
            return len(self.joint_states)

    def newest_state_ns(self) -> int | None:
        with self.lock:
            return self.joint_states[-1].stamp_ns if self.joint_states else None

    def moving_chunks_since(self, t: float) -> list[Any]:
        with self.lock:
            return [m for arrived, m in self.chunks if arrived >= t and m.chunk_length > 0]

    def stop_chunks_since(self, t: float) -> list[Any]:
        with self.lock:
            return [m for arrived, m in self.chunks if arrived >= t and m.chunk_length == 0]

    def quiet_for(self, seconds: float) -> bool:
        """No sim state for `seconds`: a lock-step sim is paused (nothing left to execute)."""
        with self.lock:
            last = self.joint_states[-1].arrived_s if self.joint_states else -math.inf
        return time.monotonic() - last > seconds

    def node_names(self) -> set[str]:
        return set(self.node.get_node_names())

    # ------------------------------------------------------------------------------------ goals and services
    def wait_for_server(self, limit_s: float, log: Path | None = None) -> None:
        """The action server is up *and* the probe hears the graph: a goal sent earlier can run its course
        before the probe's subscriptions match (a full CI run saw an 80-step lock-step goal end in 1.05 s
        without a single trajectory reaching the probe, then a wait for trajectories that never came)."""
        deadline = time.monotonic() + limit_s
        if not self.action.wait_for_server(timeout_sec=limit_s):
            raise AssertionError(f"hang guard: the action server never came up{log_tail(log)}")
        left = max(1.0, deadline - time.monotonic())
        wait_until(
            lambda: self._trajectory_sub.get_publisher_count() >= 1, left, "arm_controller matched", log
        )
        # Joint states come from sim_node alone (the probe's own forging publisher is silent until a test
        # uses it); a lock-step sim re-sends its state every idle_republish_s (1 s) while nothing runs.
        left = max(1.0, deadline - time.monotonic())
        wait_until(lambda: self.states_heard() >= 1, left, "the sim's joint states at the probe", log)

    def send_goal(self, instruction: str, max_steps: int = 0, log: Path | None = None) -> Any:
        """The goal handle once the server decided (check `.accepted`)."""
        goal = self._goal_type(instruction=instruction, max_steps=max_steps)
        return wait_future(self.action.send_goal_async(goal), 60.0, "goal response", log)

    def result(self, handle: Any, limit_s: float = 90.0, log: Path | None = None) -> Any:
        """(status, result) of an accepted goal."""
        response = wait_future(handle.get_result_async(), limit_s, "goal result", log)
        return response.status, response.result

    def set_mode(self, mode: str, log: Path | None = None) -> Any:
        from svrl_interfaces.srv import SetMode

        assert self.set_mode_client.wait_for_service(timeout_sec=30), "svrl/set_mode is not served"
        return wait_future(self.set_mode_client.call_async(SetMode.Request(mode=mode)), 30, "set_mode", log)

    def reset_estop(self, log: Path | None = None) -> Any:
        from std_srvs.srv import Trigger

        assert self.reset_estop_client.wait_for_service(timeout_sec=30), "svrl/reset_estop is not served"
        return wait_future(self.reset_estop_client.call_async(Trigger.Request()), 30, "reset_estop", log)

    def reset_sim(self, task: str, log: Path | None = None) -> int:
        """Reset the sim's episode (sim/reset_episode); returns the stamp of the new episode's first state."""
        from svrl_interfaces.srv import ResetEpisode

        assert self.sim_reset_client.wait_for_service(timeout_sec=30), "sim/reset_episode is not served"
        before = self.newest_state_ns() or -1
        future = self.sim_reset_client.call_async(ResetEpisode.Request(task=task, split="eval"))
        response = wait_future(future, 30, "sim/reset_episode", log)
        assert response.success, response.message
        return wait_until(
            lambda: (s := self.newest_state_ns()) is not None and s > before and s, 30, "the reset state", log
        )

    def estop(self, pressed: bool) -> None:
        from std_msgs.msg import Bool

        self.estop_pub.publish(Bool(data=pressed))

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------- checks
def trajectory_violations(points: list[Stamped]) -> list[str]:
    """Every recorded trajectory point that is not 7 finite positions inside the URDF limits."""
    from svrl_sim import robot

    lower, upper, _ = robot.arm_limits()
    bad = []
    for p in points:
        v = p.values
        if v.shape != (7,) or not np.isfinite(v).all() or (v < lower).any() or (v > upper).any():
            bad.append(f"stamp {p.stamp_ns}: {v.tolist()}")
    return bad


def gripper_violations(commands: list[Stamped]) -> list[str]:
    from svrl_sim import robot

    return [
        str(c.values.tolist())
        for c in commands
        if c.values.shape != (1,)
        or not np.isfinite(c.values).all()
        or not 0.0 <= c.values[0] <= robot.FINGER_OPEN
    ]


# ---------------------------------------------------------------------------------------------- the graph
def sim_instruction(index: int = 0) -> str:
    """The instruction of a spatial task: policy_server then resets the sim to that task."""
    from svrl_sim.tasks import tasks_in_suite

    return tasks_in_suite("spatial")[index].instruction


def sim_task(index: int = 0) -> str:
    from svrl_sim.tasks import tasks_in_suite

    return tasks_in_suite("spatial")[index].name


def start_stack(processes: Any, log: Path, overrides: list[str]) -> Any:
    """`svrl up --profile sim --set ...` as a child process (what an operator runs)."""
    args = ["-m", "svrl.cli", "up", "--profile", "sim"]
    for override in overrides:
        args += ["--set", override]
    return processes.start_python(*args, log=log)


def start_nodes(
    processes: Any, folder: Path, overrides: list[str], remappings: dict[str, dict[str, str]] | None = None
) -> dict[str, Any]:
    """The sim profile's nodes, each its own child process started exactly as `svrl up` starts it."""
    from dataclasses import replace

    from svrl_ros.stack import load_profile, node_command, params_file_content

    profile = load_profile("sim", overrides)
    procs = {}
    for node in profile.nodes:
        extra = (remappings or {}).get(node.key)
        if extra:
            node = replace(node, remappings={**node.remappings, **extra})
        params = folder / f"{node.key}.params.yaml"
        params.write_text(params_file_content(profile, node))
        command = node_command(node, params)
        procs[node.key] = processes.start_python(*command[1:], log=folder / f"{node.key}.log")
    return procs


def camera_remappings() -> dict[str, str]:
    """sim_node's camera topics moved under RELAY_PREFIX: only the relay then feeds the real ones."""
    from svrl_ros import topics

    names = [*topics.CAMERA_IMAGE_TOPICS.values(), *topics.CAMERA_INFO_TOPICS.values()]
    return {name: RELAY_PREFIX + name for name in names}


def start_relay(processes: Any, log: Path) -> Any:
    return processes.start_python("-m", "tests.ros.graph_harness", "relay", log=log)


@contextmanager
def ros_domain() -> Iterator[dict[str, str]]:
    """`ros_env` for a module-scoped graph: its own domain id, localhost discovery, restored after."""
    import pytest

    from tests.conftest import _domain_ids

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_DOMAIN_ID", str(next(_domain_ids)))
        patch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        patch.setenv("OMP_NUM_THREADS", "1")
        yield dict(os.environ)


# ---------------------------------------------------------------------------------------------- relay
def relay_main() -> None:
    """A camera driver stand-in: republishes sim_node's camera topics (remapped) on the real ones."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image
    from svrl_ros import topics

    rclpy.init()
    node = rclpy.create_node("camera_relay")
    pairs = [(Image, t) for t in topics.CAMERA_IMAGE_TOPICS.values()]
    pairs += [(CameraInfo, t) for t in topics.CAMERA_INFO_TOPICS.values()]
    for kind, topic in pairs:
        pub = node.create_publisher(kind, topic, 10)
        node.create_subscription(kind, RELAY_PREFIX + topic, pub.publish, 10)
    node.get_logger().info(f"relaying {RELAY_PREFIX}<camera topics> -> <camera topics>")
    try:
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    if sys.argv[1:2] == ["relay"]:
        relay_main()
    else:
        raise SystemExit("usage: python -m tests.ros.graph_harness relay")
