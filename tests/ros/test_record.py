"""`svrl record` over real DDS: a lock-step sim graph driven by the policy, an operator takeover and a hand-back,
recorded into a dataset that svrl's reader loads and `svrl sft` trains a step on.

The graph is the sim profile's sim_node (lock-step) and arm_controller, started as `svrl up` starts them; the
test is the policy (chunks on svrl/action_chunk) and the operator (svrl/set_mode, chunks on
svrl/teleop/action_chunk); `svrl record` runs as a child process and is stopped with SIGINT, like Ctrl-C.
Every time limit is a hang guard, not a speed judgement.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from std_srvs.srv import Trigger  # noqa: E402
from svrl_interfaces.msg import ActionChunk  # noqa: E402
from svrl_ros import topics  # noqa: E402
from svrl_ros.conversions import (  # noqa: E402
    float32_sequence,
    image_msg,
    joint_state_msg,
    nanoseconds_to_stamp,
)
from svrl_ros.stack import load_profile, node_command, params_file_content  # noqa: E402

from svrl_policy.dataset import LeRobotDataset  # noqa: E402
from tests.ros.graph_harness import (  # noqa: E402
    FUZZ_FRAME,
    GraphProbe,
    log_tail,
    sim_task,
    wait_future,
    wait_until,
)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

HANG_GUARD_S = 60.0
SETTLE_S = 1.0  # no newer state for this long: the lock-step sim waits for a command
IMAGE_SIZE = 32
INSTRUCTION = "pick up the black bowl"


def _start_graph(processes, folder: Path) -> None:
    profile = load_profile("sim", [f"sim_node.image_size={IMAGE_SIZE}"])
    for node in profile.nodes:
        if node.key in ("sim_node", "arm_controller"):
            params = folder / f"{node.key}.params.yaml"
            params.write_text(params_file_content(profile, node))
            processes.start_python(*node_command(node, params)[1:], log=folder / f"{node.key}.log")


def _trigger(probe: GraphProbe, service: str, log: Path) -> Trigger.Response:
    client = probe.node.create_client(Trigger, service)
    assert client.wait_for_service(timeout_sec=HANG_GUARD_S), f"{service} is not served{log_tail(log)}"
    return wait_future(client.call_async(Trigger.Request()), HANG_GUARD_S, service, log)


def _chunk(actions: np.ndarray, stamp_ns: int) -> ActionChunk:
    msg = ActionChunk()
    msg.header.stamp = nanoseconds_to_stamp(stamp_ns)
    msg.action_space = "ee_delta"
    msg.chunk_length, msg.dims = actions.shape
    msg.dim_names = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
    msg.actions = float32_sequence(actions)
    return msg


def _settled_state_ns(probe: GraphProbe, log: Path) -> int:
    """The stamp of the state the lock-step sim waits in: the newest one, once no newer one came for
    SETTLE_S. Right after a takeover the state the last policy action produced may still be in flight; a
    chunk stamped with the one before it would have its first action in the past, and run one action short
    (CI, loaded)."""
    seen: list[tuple[int | None, float]] = [(probe.newest_state_ns(), time.monotonic())]

    def settled() -> int | None:
        now_ns, (last_ns, since) = probe.newest_state_ns(), seen[-1]
        if now_ns != last_ns:
            seen.append((now_ns, time.monotonic()))
            return None
        return now_ns if now_ns is not None and time.monotonic() - since >= SETTLE_S else None

    return wait_until(settled, HANG_GUARD_S, "a settled sim state", log)


def _run_chunk(probe: GraphProbe, publisher, actions: np.ndarray, log: Path) -> None:
    """Send a chunk for the state the sim waits in and wait until arm_controller has commanded all of it."""
    stamp = _settled_state_ns(probe, log)
    before = len(probe.trajectories)
    publisher.publish(_chunk(actions, stamp))
    wait_until(
        lambda: len(probe.trajectories) >= before + len(actions), HANG_GUARD_S, "the chunk's commands", log
    )
    wait_until(
        lambda: (probe.newest_state_ns() or 0) >= stamp + len(actions) * 100_000_000,
        HANG_GUARD_S,
        "the last state",
        log,
    )


def _heard_everything(log: Path) -> bool:
    """The recorder's newest progress line no longer names an input it has not heard."""
    lines = [line for line in log.read_text().splitlines() if "kept so far" in line]
    return bool(lines) and "nothing heard yet" not in lines[-1]


def test_record_a_takeover_load_it_and_run_an_sft_step(processes, tmp_path: Path) -> None:
    out = tmp_path / "demos"
    log = tmp_path / "record.log"
    _start_graph(processes, tmp_path)
    command = ["-m", "svrl.cli", "record", "--out", str(out), "--instruction", INSTRUCTION]
    recorder = processes.start_python(*command, "--progress-period-s", "1", log=log)
    probe = GraphProbe("record_test")
    try:
        rng = np.random.default_rng(0)
        policy = rng.uniform(-0.004, 0.004, size=(9, 7))
        policy[:, -1] = [-1.0] * 4 + [1.0] * 5
        teleop = rng.uniform(-0.004, 0.004, size=(4, 7))
        teleop[:, -1] = 1.0
        policy_pub = probe.node.create_publisher(ActionChunk, topics.ACTION_CHUNK, 10)
        teleop_pub = probe.node.create_publisher(ActionChunk, topics.TELEOP_CHUNK, 10)
        wait_until(lambda: policy_pub.get_subscription_count() and teleop_pub.get_subscription_count(),
                   HANG_GUARD_S, "arm_controller's chunk subscriptions", tmp_path / "arm_controller.log")  # fmt: skip
        probe.reset_sim(sim_task(0), log=tmp_path / "sim_node.log")
        assert probe.set_mode("policy").success
        # the recorder refuses to start until it has heard the cameras, joint states and arm mode
        wait_until(
            lambda: _trigger(probe, topics.RECORD_START, log).success, HANG_GUARD_S, "a ready recorder", log
        )

        _run_chunk(probe, policy_pub, policy[:5], tmp_path / "arm_controller.log")
        assert probe.set_mode("teleop").success  # the operator takes over
        _run_chunk(probe, teleop_pub, teleop, tmp_path / "arm_controller.log")
        # bad input mid-episode: an image of the wrong size, a joint state missing a joint; both refused
        stamp = nanoseconds_to_stamp(probe.newest_state_ns())
        probe.image_pubs["main"].publish(image_msg(np.zeros((16, 16, 3), np.uint8), stamp, FUZZ_FRAME))
        probe.joint_pub.publish(joint_state_msg(["joint1"], [0.0], [0.0], stamp))
        wait_until(
            lambda: "the recording is 32x32" in log.read_text(), HANG_GUARD_S, "the image refusal", log
        )
        wait_until(lambda: "lacks joints" in log.read_text(), HANG_GUARD_S, "the joint state refusal", log)
        assert probe.set_mode("policy").success  # ... and hands back
        _run_chunk(probe, policy_pub, policy[5:], tmp_path / "arm_controller.log")

        stop = _trigger(probe, topics.RECORD_STOP, log)
        assert stop.success and "13 frames (4 teleop, 1 takeover(s))" in stop.message, stop.message
    finally:
        probe.close()
    recorder.send_signal(signal.SIGINT)  # Ctrl-C: the dataset is finalised
    assert recorder.wait(timeout=HANG_GUARD_S) == 0, log_tail(log)
    assert "dataset written to" in log.read_text()

    ds = LeRobotDataset(out)
    assert ds.num_episodes == 1 and len(ds) == 13 and ds.image_shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert ds.episodes[0].instruction == INSTRUCTION and ds.episodes[0].metadata["takeovers"] == 1
    np.testing.assert_array_equal(ds.extra["control_source"], [0] * 5 + [1] * 4 + [0] * 4)
    # the recorded actions are the ones the policy and the operator sent, recovered from the commands
    sent = np.concatenate([policy[:5], teleop, policy[5:]]).astype(np.float32)
    np.testing.assert_allclose(ds.actions, sent, atol=1e-5)
    # the observation of every frame is the state the action was applied to: proprio moves as commanded
    assert np.all(np.diff(ds.proprio[:, 8:11], axis=0) != 0)
    meta = json.loads((out / "meta/svrl.json").read_text())
    assert meta["control_source_codes"] == {"0": "policy", "1": "teleop"}
    dropped = meta["recording"]["dropped"]
    assert dropped["image_wrong_size"] >= 1 and dropped["joint_states_bad"] >= 1, dropped

    from svrl_trainer.sft import SFTConfig, train_sft

    result = train_sft(
        SFTConfig(
            data=[out],
            out=tmp_path / "sft",
            preset="debug",
            steps=1,
            batch_size=4,
            warmup_steps=1,
            log_every=1,
            save_every=0,
            progress=False,
            threads=1,
        )
    )
    assert np.isfinite(result.final_loss) and (result.checkpoint / "config.json").exists()


def test_record_interventions_keeps_the_goal_an_operator_took_over(
    processes, graph_checkpoint, tmp_path: Path
) -> None:
    """`--interventions`: one episode per ExecuteInstruction goal, written only when the operator took over;
    the episode runs on past the goal's takeover abort, through the operator's chunk, to the hand-back."""
    from svrl_interfaces.action import ExecuteInstruction

    from tests.ros.graph_harness import sim_instruction, start_nodes

    out = tmp_path / "fixes"
    log = tmp_path / "record.log"
    overrides = [f"policy_server.checkpoint={graph_checkpoint}", "policy_server.backend=onnx"]
    start_nodes(processes, tmp_path, [*overrides, f"sim_node.image_size={IMAGE_SIZE}"])
    command = ["-m", "svrl.cli", "record", "--out", str(out), "--instruction", INSTRUCTION]
    recorder = processes.start_python(*command, "--interventions", "--progress-period-s", "0.5", log=log)
    probe = GraphProbe("interventions_test")
    graph_log = tmp_path / "policy_server.log"
    try:
        probe.wait_for_server(HANG_GUARD_S, graph_log)
        assert probe.set_mode("policy").success
        wait_until(lambda: _heard_everything(log), HANG_GUARD_S, "a recorder that heard every input", log)
        # goal 1: the policy alone, to its step budget: recorded, not kept (no takeover)
        probe.result(probe.send_goal(sim_instruction(0), max_steps=4, log=graph_log), log=graph_log)
        wait_until(
            lambda: "no_intervention" in log.read_text(), HANG_GUARD_S, "goal 1's episode dropped", log
        )
        # goal 2: the operator takes over mid-goal, moves the arm, hands back
        before = len(probe.trajectories)
        handle = probe.send_goal(sim_instruction(0), max_steps=200, log=graph_log)
        wait_until(
            lambda: len(probe.trajectories) >= before + 3, HANG_GUARD_S, "the policy moving", graph_log
        )
        assert probe.set_mode("teleop").success
        _status, result = probe.result(handle, log=graph_log)
        assert result.reason == ExecuteInstruction.Result.REASON_TAKEOVER, result
        teleop = np.random.default_rng(1).uniform(-0.004, 0.004, size=(3, 7))
        teleop[:, -1] = -1.0
        teleop_pub = probe.node.create_publisher(ActionChunk, topics.TELEOP_CHUNK, 10)
        wait_until(
            teleop_pub.get_subscription_count, HANG_GUARD_S, "arm_controller's teleop subscription", log
        )
        _run_chunk(probe, teleop_pub, teleop, tmp_path / "arm_controller.log")
        assert probe.set_mode("policy").success  # hand back: the episode closes
        wait_until(lambda: "episode 0 kept" in log.read_text(), HANG_GUARD_S, "the intervention kept", log)
    finally:
        probe.close()
    recorder.send_signal(signal.SIGINT)
    assert recorder.wait(timeout=HANG_GUARD_S) == 0, log_tail(log)

    ds = LeRobotDataset(out)
    assert ds.num_episodes == 1
    control = ds.extra["control_source"]
    assert control[0] == 0 and list(control[-3:]) == [1, 1, 1] and int(control.sum()) == 3
    assert ds.episodes[0].metadata["takeovers"] == 1 and ds.episodes[0].metadata["goal_status"] == "aborted"
    np.testing.assert_allclose(ds.actions[-3:], teleop.astype(np.float32), atol=1e-5)
    meta = json.loads((out / "meta/svrl.json").read_text())
    assert meta["recording"]["episodes_not_kept"] == {"no_intervention": 1}
