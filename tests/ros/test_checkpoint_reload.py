"""The transfer loop's guard: policy_server swaps to an announced checkpoint with its action space and codec,
refuses an incompatible or corrupt one and keeps the model it has, and never swaps within a goal.

The guard and the follower are tested without DDS first (checkpoint_guard, checkpoint_follower); then the
sim graph (`svrl up --profile sim`'s nodes, lock-step) with `follow_checkpoints` on hears announcements from
the test over real DDS, and the chunks arm_controller executes say which checkpoint computed them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from svrl_ros import checkpoint_guard
from svrl_ros.checkpoint_follower import Announced, CheckpointFollower
from svrl_ros.checkpoint_guard import CheckpointRefused, check_compatible, read_interface

from tests.conftest import ProcessGroup
from tests.ros.graph_harness import (
    HANG_GUARD_S,
    GraphProbe,
    log_tail,
    ros_domain,
    sim_instruction,
    start_nodes,
    wait_until,
)

GOAL_STEPS = 16  # two chunks of the debug policy


# ---------------------------------------------------------------------------------------------- checkpoints
def _perturbed_copy(source: Path, target: Path, seed: int) -> Path:
    """What GRPO writes: the same policy (config, codec, stats, tokenizer) with other weights."""
    import torch

    from svrl_policy.policy import Policy

    policy = Policy.from_pretrained(source)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in policy.model.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
    return policy.save_pretrained(target, metadata={"grpo_step": seed})


def _joint_pos_policy(target: Path) -> Path:
    import torch

    from svrl_policy.codec import ActionCodec
    from svrl_policy.config import get_preset
    from svrl_policy.policy import Policy

    torch.manual_seed(0)
    config = get_preset("debug", action_space="joint_pos", action_dim=8, gripper_index=7)
    codec = ActionCodec(low=-np.ones(8), high=np.ones(8), chunk_len=config.chunk_len, gripper_index=7)
    return Policy(config, codec).save_pretrained(target)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """serving; compatible (new weights); other_codec (another codec fit); joint_pos; corrupt weights."""
    import torch
    from svrl_ros.calm_policy import calm_policy_checkpoint

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reload_ckpts")
    serving = calm_policy_checkpoint(root, seed=0, export=False, name="serving")
    corrupt = _perturbed_copy(serving, root / "corrupt", seed=2)
    weights = corrupt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-9] ^= 0xFF  # a flipped byte in the tensor data: the manifest's sha256 no longer matches
    weights.write_bytes(bytes(data))
    return {
        "serving": serving,
        "compatible": _perturbed_copy(serving, root / "compatible", seed=1),
        "other_codec": calm_policy_checkpoint(root, seed=1, export=False, name="other_codec"),
        "joint_pos": _joint_pos_policy(root / "joint_pos"),
        "corrupt": corrupt,
    }


# ---------------------------------------------------------------------------------------------- the guard
def test_guard_checks_svrl_policy_files_without_torch() -> None:
    """The guard runs where only onnxruntime is installed: it must not import torch to check the files."""
    from svrl_policy import checkpoint as policy_checkpoint

    assert checkpoint_guard.INTERFACE_FILES == (
        policy_checkpoint.CONFIG_FILE,
        policy_checkpoint.CODEC_FILE,
        policy_checkpoint.PREPROCESSOR_FILE,
        policy_checkpoint.TOKENIZER_FILE,
    )
    assert checkpoint_guard.MANIFEST_FILE == policy_checkpoint.MANIFEST_FILE
    code = "import sys, svrl_ros.checkpoint_guard; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_guard_accepts_new_weights_and_refuses_another_interface(checkpoints: dict[str, Path]) -> None:
    serving = read_interface(checkpoints["serving"])
    compatible = read_interface(checkpoints["compatible"])
    assert compatible.fingerprint == serving.fingerprint  # GRPO changes weights only
    assert compatible.checkpoint_id != serving.checkpoint_id  # ...and the id says which weights
    check_compatible(serving, compatible)
    with pytest.raises(CheckpointRefused, match=r"codec/interface differs.*codec"):
        check_compatible(serving, read_interface(checkpoints["other_codec"]))
    with pytest.raises(CheckpointRefused, match="action space 'joint_pos' differs"):
        check_compatible(serving, read_interface(checkpoints["joint_pos"]))


def test_guard_reads_only_intact_interface_files(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    broken = Path(shutil.copytree(checkpoints["compatible"], tmp_path / "broken"))
    (broken / "codec.json").write_text((broken / "codec.json").read_text().replace("256", "255", 1))
    with pytest.raises(CheckpointRefused, match=r"codec\.json does not match the sha256"):
        read_interface(broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(CheckpointRefused, match=r"manifest\.json is missing"):
        read_interface(broken)
    with pytest.raises(CheckpointRefused, match="not a directory"):
        read_interface(tmp_path / "nowhere")
    with pytest.raises(CheckpointRefused, match="empty"):
        read_interface("")


def test_announcement_must_describe_its_files(checkpoints: dict[str, Path]) -> None:
    candidate = read_interface(checkpoints["compatible"])
    checkpoint_guard.check_announcement(
        candidate,
        checkpoint_id=candidate.checkpoint_id,
        action_space="ee_delta",
        fingerprint=candidate.fingerprint,
    )
    with pytest.raises(CheckpointRefused, match="codec_fingerprint announced 'abc'"):
        checkpoint_guard.check_announcement(
            candidate, checkpoint_id=candidate.checkpoint_id, action_space="ee_delta", fingerprint="abc"
        )


# ---------------------------------------------------------------------------------------------- the follower
class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, text: str) -> None:
        self.lines.append(("info", text))

    def warning(self, text: str) -> None:
        self.lines.append(("warning", text))

    def error(self, text: str) -> None:
        self.lines.append(("error", text))


class _Loaded:
    def __init__(self, path: str) -> None:
        from svrl_ros.learned_policy import checkpoint_id

        from svrl_policy.checkpoint import load_components

        load_components(path, verify=True)  # as the runtimes do: every file's checksum, weights included
        self.path = Path(path)
        self.checkpoint_id = checkpoint_id(path)


def announced(path: Path, **changes: Any) -> Announced:
    interface = read_interface(path)
    values = {
        "path": str(path),
        "step": 1,
        "checkpoint_id": interface.checkpoint_id,
        "action_space": interface.action_space,
        "codec_fingerprint": interface.fingerprint,
    }
    return Announced(**{**values, **changes})


def _follower(serving: list[Path], enabled: bool) -> tuple[CheckpointFollower, threading.Event, _Log]:
    """A follower guarding against `serving[0]` (a test changes it as an operator would); the event it sets
    when a candidate is ready and its log."""
    pending = threading.Event()
    log = _Log()
    follower = CheckpointFollower(
        load=_Loaded, running_path=lambda: serving[0], on_pending=pending.set, on_change=lambda: None,
        log=log, enabled=enabled,
    )  # fmt: skip
    return follower, pending, log


def test_follower_loads_compatible_refuses_the_rest_and_waits_to_be_installed(
    checkpoints: dict[str, Path],
) -> None:
    serving = [checkpoints["serving"]]
    follower, pending, log = _follower(serving, enabled=False)
    try:
        follower.announce(announced(checkpoints["compatible"]))
        time.sleep(0.2)
        assert follower.take_pending() is None and follower.refused == 0  # off: nothing loads
        follower.set_enabled(True)  # on: the newest announcement heard meanwhile is considered
        assert pending.wait(30)
        policy = follower.take_pending()
        assert policy.checkpoint_id == read_interface(checkpoints["compatible"]).checkpoint_id
        assert follower.take_pending() is None  # handed over once
        follower.installed(policy)
        serving[0] = checkpoints["compatible"]
        for name, expected in (
            ("other_codec", "codec/interface differs"),
            ("joint_pos", "action space 'joint_pos' differs"),
            ("corrupt", "does not load: CorruptCheckpointError"),
        ):
            before = follower.refused
            follower.announce(announced(checkpoints[name]))
            wait_until(lambda before=before: follower.refused > before, 30, f"{name} refused")
            level, message, values = follower.status(policy.checkpoint_id)
            assert level == 1 and expected in message and values["last_refused_reason"] in message
            assert values["serving"] == policy.checkpoint_id and follower.take_pending() is None
        lying = announced(checkpoints["compatible"], checkpoint_id="step_000009/policy@000000000000")
        follower.announce(lying)
        wait_until(lambda: follower.refused == 4, 30, "an announcement that lies about its files refused")
        assert "does not describe the files" in follower.last_refused[1]
        assert follower.loaded == 1 and follower.take_pending() is None
    finally:
        follower.close()
    warnings = [text for level, text in log.lines if level == "warning"]
    assert len(warnings) == 4 and all("keeping the model that is serving" in w for w in warnings)


def test_a_candidate_guarded_against_another_serving_checkpoint_is_dropped(
    checkpoints: dict[str, Path],
) -> None:
    """An operator set `checkpoint` to another interface while a candidate waited: it is not installed."""
    serving = [checkpoints["serving"]]
    follower, pending, log = _follower(serving, enabled=True)
    try:
        follower.announce(announced(checkpoints["compatible"]))
        assert pending.wait(30)
        serving[0] = checkpoints["other_codec"]
        assert follower.take_pending() is None
    finally:
        follower.close()
    assert any("dropped loaded checkpoint" in text and "another interface" in text for _, text in log.lines)


# ---------------------------------------------------------------------------------------------- over DDS
class _AnnouncerProbe(GraphProbe):
    """GraphProbe + trainer_node's latched announcement publisher + policy_server's checkpoint diagnostics."""

    def __init__(self) -> None:
        super().__init__("reload_probe")
        from diagnostic_msgs.msg import DiagnosticArray
        from svrl_interfaces.msg import PolicyCheckpoint
        from svrl_ros import topics
        from svrl_ros.trainer_node import ANNOUNCE_QOS

        self.checkpoint_status: list[tuple[str, dict[str, str]]] = []
        self.announce_pub = self.node.create_publisher(
            PolicyCheckpoint, topics.POLICY_CHECKPOINT, ANNOUNCE_QOS
        )
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_checkpoint_status, 50)

    def _on_checkpoint_status(self, msg: Any) -> None:
        for status in msg.status:
            if status.name.endswith("policy_server: checkpoint"):
                with self.lock:
                    self.checkpoint_status.append(
                        (status.message, {kv.key: kv.value for kv in status.values})
                    )

    def announce(self, item: Announced) -> None:
        from svrl_interfaces.msg import PolicyCheckpoint

        self.announce_pub.publish(
            PolicyCheckpoint(
                path=item.path,
                step=item.step,
                checkpoint_id=item.checkpoint_id,
                action_space=item.action_space,
                codec_fingerprint=item.codec_fingerprint,
                run_dir="test",
            )
        )

    def status_values(self) -> dict[str, str]:
        with self.lock:
            return dict(self.checkpoint_status[-1][1]) if self.checkpoint_status else {}


def _goal_chunk_ids(probe: _AnnouncerProbe, log: Path, during: Any = None) -> set[str]:
    """Run one goal to its end; the checkpoint ids its moving chunks carried. `during()` runs once the first
    chunk of the goal is out (the goal is then running)."""
    started = time.monotonic()
    handle = probe.send_goal(sim_instruction(0), GOAL_STEPS, log)
    assert handle.accepted, log_tail(log)
    if during is not None:
        wait_until(lambda: probe.moving_chunks_since(started), 60, "the goal's first chunk", log)
        during()
    _status, result = probe.result(handle, 120, log)
    assert result.steps > 0, f"the goal did not run: {result.message}{log_tail(log)}"
    return {m.checkpoint_id for m in probe.moving_chunks_since(started)}


@pytest.mark.ros
@pytest.mark.timeout(240)
def test_policy_server_follows_compatible_checkpoints_between_goals(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    ids = {name: read_interface(path).checkpoint_id for name, path in checkpoints.items()}
    overrides = [
        f"policy_server.checkpoint={checkpoints['serving']}",
        "policy_server.backend=torch",
        "policy_server.follow_checkpoints=true",
        "sim_node.image_size=64",
    ]
    log = tmp_path / "policy_server.log"
    with ros_domain() as env:
        group = ProcessGroup(env)
        probe = None
        try:
            start_nodes(group, tmp_path, overrides)
            probe = _AnnouncerProbe()
            probe.wait_for_server(HANG_GUARD_S, log)
            wait_until(lambda: probe.status_values().get("serving") == ids["serving"], 60, "diagnostics", log)

            # refused: another codec, then corrupt weights; the serving model stays
            for name, reason in (("other_codec", "codec/interface differs"), ("corrupt", "does not load")):
                probe.announce(announced(checkpoints[name]))
                wait_until(
                    lambda name=name: probe.status_values().get("last_refused") == ids[name],
                    90, f"{name} refused on /diagnostics", log,
                )  # fmt: skip
                values = probe.status_values()
                assert reason in values["last_refused_reason"] and values["serving"] == ids["serving"]

            # the refusals kept the model (this goal's chunks come from it); a compatible checkpoint announced
            # while the goal runs: the goal ends on the model it started with, the next one swaps
            during = lambda: probe.announce(announced(checkpoints["compatible"]))  # noqa: E731
            assert _goal_chunk_ids(probe, log, during=during) == {ids["serving"]}
            wait_until(
                lambda: ids["compatible"] in (probe.status_values().get(k) for k in ("pending", "serving")),
                60, "the compatible checkpoint loaded", log,
            )  # fmt: skip
            assert _goal_chunk_ids(probe, log) == {ids["compatible"]}
            wait_until(lambda: probe.status_values().get("serving") == ids["compatible"], 30, "serving", log)
            assert probe.status_values()["loaded"] == "1" and probe.status_values()["refused"] == "2"
            text = log.read_text()
            assert "refused checkpoint" in text and "keeping the model that is serving" in text
        finally:
            if probe is not None:
                probe.close()
            group.stop()
