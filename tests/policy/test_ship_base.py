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


def test_a_base_trained_on_from_a_shipped_one_keeps_its_stages(
    reach_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--prior: the shipped base's stages, commands and times come first; --dataset: a stage on two datasets
    names both, and the pool is made by the very command the prior's was."""
    import shutil

    pool, more = tmp_path / "run" / "pool", tmp_path / "run" / "more"
    shutil.copytree(reach_dataset, pool)
    shutil.copytree(reach_dataset, more)
    common = dict(batch_size=4, log_every=2, save_every=0, progress=False, stage="pretrain")
    train_sft(SFTConfig(data=[pool], out=tmp_path / "s1", preset="debug", steps=4, **common))
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "eval.json").write_text(json.dumps({"episodes": 2, "success_rate": 0.5, "tasks": []}))
    (evaluation / "eval.png").write_bytes(b"png")
    log = _log(tmp_path / "l.log", [("00:00:10", 2), ("00:00:20", 4)])
    pool_line = "svrl demos --suite pretrain --per-task 2"
    more_line = "svrl demos --suite pretrain --tasks lift_can --per-task 2 --first-state 100"
    both_datasets = ("--dataset", str(pool), pool_line, "--dataset", str(more), more_line)

    def ship(stage: Path, out: Path, *data_args: str) -> None:
        argv = ["ship_base.py", "--stage", str(stage), "--log", str(log), "--eval", str(evaluation),
                "--eval-command", "svrl eval", "--out", str(out), *data_args]  # fmt: skip
        monkeypatch.setattr(sys, "argv", argv)
        _ship_base().main()

    first = tmp_path / "models" / "base-a"
    ship(tmp_path / "s1", first, "--pool-command", pool_line, "--machine", "machine A")
    train_sft(SFTConfig(data=[pool, more], out=tmp_path / "s2", init=first, steps=4, **common))
    with pytest.raises(SystemExit, match="name that base with --prior"):
        ship(tmp_path / "s2", tmp_path / "x", "--dataset", str(pool), pool_line, "--dataset", str(more), "m")
    with pytest.raises(SystemExit, match=r"trained on .*more.* name it with --dataset"):
        ship(tmp_path / "s2", tmp_path / "x", "--prior", str(first), "--dataset", str(pool), pool_line)
    with pytest.raises(SystemExit, match="must be made as the prior's was"):
        ship(tmp_path / "s2", tmp_path / "x", "--prior", str(first), "--dataset", str(pool), "svrl demos other",
             "--dataset", str(more), "m")  # fmt: skip
    with pytest.raises(SystemExit, match="not a base this script shipped"):
        ship(tmp_path / "s2", tmp_path / "x", "--prior", str(tmp_path / "s1"), *both_datasets)
    shutil.copytree(first, tmp_path / "models" / "copy")
    with pytest.raises(SystemExit, match="but the first --stage started from"):
        ship(tmp_path / "s2", tmp_path / "x", "--prior", str(tmp_path / "models" / "copy"), *both_datasets)
    assert not (tmp_path / "x").exists()

    second = tmp_path / "models" / "base-b"
    ship(tmp_path / "s2", second, "--prior", str(first), "--machine", "machine B",
         "--dataset", str(pool), pool_line, "--dataset", str(more), more_line)  # fmt: skip
    training = json.loads((second / "training.json").read_text())
    assert training["commands"][:2] == [
        f"{pool_line} --out runs/base/pool",
        f"{more_line} --out runs/base/more",
    ]
    stage1, stage2 = (shlex.split(c) for c in training["commands"][2:])
    assert stage1 == shlex.split(json.loads((first / "training.json").read_text())["commands"][1])
    assert stage2[stage2.index("--data") + 1 : stage2.index("--init")] == ["runs/base/pool", "runs/base/more"]
    assert stage2[stage2.index("--init") + 1] == "runs/base/stage1"
    assert [s["machine"] for s in training["stages"]] == ["machine A", "machine B"]
    assert [s["step"] for s in training["stages"]] == [4, 4]
    card = (second / "README.md").read_text()
    assert "| 2 | 4 | from stage 1, on 2 datasets |" in card and "machine B |" in card
    assert file_sha256(second / "model.safetensors") == file_sha256(tmp_path / "s2" / "model.safetensors")
