"""The learned runner: observation assembly that matches training bit for bit, and the per-goal loop over DDS.

The DDS test plays a lock-step sim from this process: it publishes both camera images, joint states and
the episode status at one stamp, and when a chunk arrives it publishes the states that follow it, as
arm_controller + sim_node would. The policy server runs as its own process with a tiny random checkpoint.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from svrl_ros.learned_policy import (
    CheckpointNotFoundError,
    JointReading,
    LearnedPolicy,
    checkpoint_id,
    resolve_default_checkpoint,
)
from svrl_ros.observation_buffer import ObservationStore, StatusSample

from tests.policy.conftest import make_policy

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    return make_policy("debug", seed=3).save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny_policy")


def test_proprio_from_joint_positions_matches_simenv(tiny_checkpoint: Path) -> None:
    from svrl_sim.env import SimEnv
    from svrl_sim.tasks import InitState, tasks_in_suite

    env = SimEnv(image_size=64)
    env.reset(tasks_in_suite("spatial")[0], InitState("eval", 0), render=False)
    for _ in range(5):
        env.step(env.expert_action(), render=False)
    kin = env.kinematics
    joints = JointReading(env.data.qpos[kin.arm_qpos].copy(), env.data.qpos[kin.finger_qpos].copy())
    policy = LearnedPolicy(tiny_checkpoint, backend="torch")
    np.testing.assert_array_equal(policy.proprio(joints), env.proprio())


def test_same_observation_gives_the_policys_greedy_chunk(tiny_checkpoint: Path) -> None:
    from svrl_policy import Policy

    rng = np.random.default_rng(0)
    images = {c: rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for c in ("main", "wrist")}
    joints = JointReading(np.array([0.0, -0.3, 0.0, -2.5, 0.0, 2.2, 0.8]), np.array([0.03, 0.03]))
    learned = LearnedPolicy(tiny_checkpoint, backend="torch")
    obs = learned.observation(images, joints, "put the cube on the plate")
    reference = Policy.from_pretrained(tiny_checkpoint).sample(obs, temperature=0.0).actions[0]
    chunk = learned.infer(obs)
    assert chunk.shape == (learned.chunk_len, 7)
    np.testing.assert_array_equal(chunk, reference)


def test_checkpoint_id_and_default_resolution(tmp_path: Path, tiny_checkpoint: Path) -> None:
    cid = checkpoint_id(tiny_checkpoint)
    assert cid.startswith("tiny_policy@") and len(cid.split("@")[1]) == 12
    with pytest.raises(CheckpointNotFoundError, match="make demo"):
        resolve_default_checkpoint(tmp_path / "runs" / "demo", tmp_path / "models")
    for step, complete in (("step_000005", True), ("step_000010", True), ("step_000015", False)):
        policy_dir = tmp_path / "runs/demo/grpo/checkpoints" / step / "policy"
        policy_dir.mkdir(parents=True)
        (policy_dir / "manifest.json").write_text("{}")
        if complete:
            (policy_dir.parent / "COMPLETE").write_text("")
    path, origin = resolve_default_checkpoint(tmp_path / "runs" / "demo", tmp_path / "models")
    assert path.parent.name == "step_000010" and "make demo" in origin
    assert checkpoint_id(path).startswith("step_000010/policy@")


def test_observation_store_pairs_by_stamp() -> None:
    store = ObservationStore(("main", "wrist"))
    image = np.zeros((4, 4, 3), np.uint8)
    joints = JointReading(np.zeros(7), np.zeros(2))
    store.add_image("main", 100, image)
    store.add_joints(100, joints)
    assert store.observation_at(100) is None
    assert store.missing_at(100) == ["wrist image"]
    store.add_image("wrist", 100, image)
    store.add_image("main", 200, image)
    assert store.observation_at(100) is not None
    assert store.newest_observation().stamp_ns == 100
    store.add_status(StatusSample(300, 2, False, False))
    assert store.newest_state_ns() == 300
    assert store.wait_for(lambda: None, timeout_s=0.05) is None


# ------------------------------------------------------------------------------------------------ DDS
class FakeLockstepSim:
    """Publishes the state at each stamp; on a chunk, publishes one state per action (as the graph does)."""

    def __init__(self, success_at_step: int | None, period_ns: int = 100_000_000) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState
        from svrl_interfaces.msg import ActionChunk, EpisodeStatus

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("fake_sim", context=self.context)
        self.period_ns = period_ns
        self.success_at_step = success_at_step
        self.step = 0
        self.stamp_ns = 5 * period_ns
        self.chunks: list[ActionChunk] = []
        self.frozen = False
        self._lock = threading.Lock()
        self._images = {
            cam: self.node.create_publisher(Image, topic, qos_profile_sensor_data)
            for cam, topic in (
                ("main", "camera/camera/color/image_raw"),
                ("wrist", "wrist_camera/camera/color/image_raw"),
            )
        }
        self._joints = self.node.create_publisher(JointState, "joint_states", 50)
        self._status = self.node.create_publisher(EpisodeStatus, "sim/episode_status", 50)
        self.node.create_subscription(ActionChunk, "svrl/action_chunk", self._on_chunk, 50)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._rng = np.random.default_rng(0)

    def publish_state(self) -> None:
        from svrl_interfaces.msg import EpisodeStatus
        from svrl_ros.conversions import image_msg, joint_state_msg, nanoseconds_to_stamp

        stamp = nanoseconds_to_stamp(self.stamp_ns)
        for cam, pub in self._images.items():
            pub.publish(image_msg(self._rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), stamp, cam))
        names = [f"joint{i}" for i in range(1, 8)] + ["finger_joint1", "finger_joint2"]
        q = [0.0, -0.3, 0.0, -2.5, 0.0, 2.2, 0.8, 0.04, 0.04]
        self._joints.publish(joint_state_msg(names, q, [0.0] * 9, stamp))
        success = self.success_at_step is not None and self.step >= self.success_at_step
        status = EpisodeStatus(step=self.step, max_steps=200, success=success, done=success)
        status.header.stamp = stamp
        self._status.publish(status)

    def _on_chunk(self, msg) -> None:
        with self._lock:
            self.chunks.append(msg)
            if msg.chunk_length == 0 or self.frozen:
                return
            for _ in range(msg.chunk_length):
                self.step += 1
                self.stamp_ns += self.period_ns
                self.publish_state()
                if self.success_at_step is not None and self.step >= self.success_at_step:
                    return

    def keep_publishing_until(self, stop: threading.Event) -> None:
        """Before the first chunk the state is repeated (a best-effort image may be lost once)."""
        while not stop.is_set():
            with self._lock:
                if not self.chunks:
                    self.publish_state()
            time.sleep(0.1)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        import rclpy

        rclpy.try_shutdown(context=self.context)


@pytest.mark.ros
@pytest.mark.timeout(150)
def test_learned_runner_over_dds(processes, tmp_path: Path, tiny_checkpoint: Path) -> None:
    from action_msgs.msg import GoalStatus
    from rclpy.action import ActionClient
    from svrl_interfaces.action import ExecuteInstruction

    server = processes.start_python(
        "-m", "svrl_ros.policy_server", "--ros-args",
        "-p", "runner:=learned", "-p", f"checkpoint:={tiny_checkpoint}", "-p", "backend:=torch",
        "-p", "success_source:=sim", "-p", "reset_sim:=false", "-p", "observation_timeout_s:=5.0",
        log=tmp_path / "policy_server.log",
    )  # fmt: skip
    sim = FakeLockstepSim(success_at_step=12)
    stop = threading.Event()
    feeder = threading.Thread(target=sim.keep_publishing_until, args=(stop,), daemon=True)
    feeder.start()
    client = ActionClient(sim.node, ExecuteInstruction, "svrl/execute_instruction")

    def wait(future, limit_s: float = 60.0):
        deadline = time.monotonic() + limit_s
        while not future.done():
            assert time.monotonic() < deadline, (tmp_path / "policy_server.log").read_text()
            time.sleep(0.01)
        return future.result()

    try:
        assert client.wait_for_server(timeout_sec=90), (tmp_path / "policy_server.log").read_text()
        handle = wait(client.send_goal_async(ExecuteInstruction.Goal(instruction="do the thing")))
        assert handle.accepted
        response = wait(handle.get_result_async())
        log = (tmp_path / "policy_server.log").read_text()
        assert response.status == GoalStatus.STATUS_SUCCEEDED, (response.result, log)
        assert response.result.reason == "success" and response.result.steps == 12
        moving = [c for c in sim.chunks if c.chunk_length > 0]
        expected_id = checkpoint_id(tiny_checkpoint)
        assert len(moving) == 2 and all(c.checkpoint_id == expected_id for c in moving)
        # each chunk carries the stamp of the observation it was computed from: the state it starts at
        first_ns = moving[0].header.stamp.sec * 10**9 + moving[0].header.stamp.nanosec
        second_ns = moving[1].header.stamp.sec * 10**9 + moving[1].header.stamp.nanosec
        assert second_ns - first_ns == moving[0].chunk_length * sim.period_ns
        assert sim.chunks[-1].chunk_length == 0  # the stop chunk ends the goal

        # observations stop: the sim freezes, the goal aborts with a reason naming it
        with sim._lock:
            sim.success_at_step = None
            sim.step, sim.stamp_ns = 0, sim.stamp_ns + sim.period_ns
            sim.publish_state()  # a fresh episode state, then the sim stops executing chunks
            sim.frozen = True
        time.sleep(0.3)
        handle = wait(client.send_goal_async(ExecuteInstruction.Goal(instruction="do it again")))
        assert handle.accepted
        response = wait(handle.get_result_async())
        assert response.status == GoalStatus.STATUS_ABORTED
        assert response.result.reason == "error" and "stale observation" in response.result.message
    finally:
        stop.set()
        feeder.join(timeout=5)
        sim.close()
    assert server.poll() is None, "the policy server died"


def test_warm_up_leaves_a_sampling_goal_unchanged(tiny_checkpoint: Path) -> None:
    """The load-time warm-up inference is greedy: the first sampled chunk is the one a cold policy gives."""
    rng = np.random.default_rng(1)
    images = {c: rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for c in ("main", "wrist")}
    joints = JointReading(np.array([0.0, -0.3, 0.0, -2.5, 0.0, 2.2, 0.8]), np.array([0.03, 0.03]))
    cold = LearnedPolicy(tiny_checkpoint, backend="torch", temperature=1.0)
    warm = LearnedPolicy(tiny_checkpoint, backend="torch", temperature=1.0)
    assert warm.warm_up() > 0.0
    obs = cold.observation(images, joints, "put the cube on the plate")
    np.testing.assert_array_equal(warm.infer(obs), cold.infer(obs))
