"""scripts/ship_base.py: the model card's commands, success and time are read from the run, and the shipped
weights are exactly the last stage's."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path

import pytest

from svrl_policy.checkpoint_files import file_sha256
from svrl_trainer.sft import SFTConfig, train_sft

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ship_base.py"


def _ship_base():
    spec = importlib.util.spec_from_file_location("ship_base", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _log(path: Path, lines: list[tuple[str, int]]) -> Path:
    text = [f"2026-11-30 {t},000 INFO svrl_trainer.sft: step {s}/30 loss/ce 1.0" for t, s in lines]
    path.write_text(
        "2026-11-30 00:00:00,000 INFO svrl_trainer.sft: data: 1 episodes\n" + "\n".join(text) + "\n"
    )
    return path


def test_the_card_is_made_from_the_runs_own_records(
    reach_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = dict(
        data=[reach_dataset], batch_size=4, log_every=2, save_every=0, progress=False, stage="pretrain"
    )
    train_sft(SFTConfig(out=tmp_path / "s1", preset="debug", steps=30, stop_after=4, **common))
    train_sft(
        SFTConfig(out=tmp_path / "s2", init=tmp_path / "s1", steps=8, lr=1e-4, warmup_steps=1, **common)
    )
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    tasks = [{"task": "pretrain/lift_can", "episodes": 4, "success_rate": 0.75}]
    (evaluation / "eval.json").write_text(json.dumps({"episodes": 4, "success_rate": 0.75, "tasks": tasks}))
    (evaluation / "eval.png").write_bytes(b"png")
    # 10 s per logged interval; stage 2 was paused 10 minutes (an evaluation): that interval counts as 10 s
    log1 = _log(
        tmp_path / "l1.log", [("00:00:10", 2), ("00:00:20", 4), ("00:00:30", 6)]
    )  # step 6: after the stop
    log2 = _log(tmp_path / "l2.log", [("00:00:10", 2), ("00:00:20", 4), ("00:00:30", 6), ("00:10:30", 8)])
    out = tmp_path / "models" / "base-test"
    argv = ["ship_base.py", "--stage", str(tmp_path / "s1"), "--stage", str(tmp_path / "s2"),
            "--log", str(log1), "--log", str(log2), "--eval", str(evaluation),
            "--eval-command", "svrl eval --ckpt models/base-test --tasks pretrain",
            "--pool-command", "svrl demos --suite pretrain --per-task 2", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    _ship_base().main()

    assert file_sha256(out / "model.safetensors") == file_sha256(tmp_path / "s2" / "model.safetensors")
    assert not (out / "optimizer.safetensors").exists()
    card = (out / "README.md").read_text()
    assert "**75.0 %** (3 of 4 episodes" in card and "| pretrain/lift_can | 4 | 75 % |" in card
    commands = json.loads((out / "training.json").read_text())["commands"]
    stage1, stage2 = (shlex.split(c) for c in commands[1:])
    assert stage1[stage1.index("--stop-after") + 1] == "4" and stage1[stage1.index("--steps") + 1] == "30"
    assert stage2[stage2.index("--init") + 1] == "runs/base/stage1" and "--stop-after" not in stage2
    assert stage2[stage2.index("--lr") + 1] == "0.0001" and stage2[stage2.index("--warmup-steps") + 1] == "1"
    stages = json.loads((out / "training.json").read_text())["stages"]
    assert [(s["training_seconds"], s["paused_intervals_replaced"]) for s in stages] == [(10, 0), (30, 1)]
    assert (out / "loss.png").stat().st_size > 0
