"""The data-parallel learner (DDP, FSDP) under torchrun: two CPU ranks over gloo update the policy exactly
as one process does, because each rank backpropagates its share with the whole mini-batch's weights;
and a two-rank run stopped after one step resumes (weights, sharded AdamW moments, RNG) exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from svrl_trainer.config import load_train_config
from svrl_trainer.train import GrpoTrainer, latest_checkpoint

from .conftest import toy_policy
from .test_grpo_trainer import _config

COMPARED = (
    "rollout/sampled_success",
    "train/trajectories",
    "train/loss",
    "train/clip_fraction",
    "train/entropy",
)


def _metrics(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: m[k] for k in COMPARED if k in m} for m in lines if "train/updated" in m]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(latest_checkpoint(run) / "policy" / "model.safetensors"))


@pytest.fixture(scope="module")
def aux_init_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base with the pretraining-only auxiliary head, as `--aux-weight` writes: GRPO must freeze it
    (DDP refuses parameters that never get a gradient; FSDP shards frozen and trained ones together)."""
    path = tmp_path_factory.mktemp("aux_init") / "policy"
    toy_policy(aux_dim=6).save_pretrained(path)
    return path


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_learn_exactly_what_one_process_learns(tmp_path, aux_init_checkpoint, strategy) -> None:
    init_checkpoint = aux_init_checkpoint
    settings = {"total_steps": 2, "eval": {"every": 0}, "checkpoint": {"every": 2, "keep_last": 1}}
    single = _config(tmp_path / "single", init_checkpoint, **settings)
    trainer = GrpoTrainer(load_train_config(single))
    try:
        trainer.train()
    finally:
        trainer.close()

    ranks = _config(tmp_path / "ranks", init_checkpoint, **settings)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    train = [
        "-m",
        "svrl.cli",
        "train",
        "--config",
        str(ranks),
        "--set",
        f"learner.strategy={strategy}",
    ]
    for extra in (
        ["--set", "total_steps=1", "--set", "checkpoint.every=1"],
        ["--resume"],
    ):  # stop, then resume
        run = subprocess.run(
            [*torchrun, *train, *extra], env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr[-3000:]
    expected, got = _metrics(tmp_path / "single" / "run"), _metrics(tmp_path / "ranks" / "run")
    assert len(got) == 2 and any("train/loss" in m for m in got)
    for a, b in zip(expected, got, strict=True):
        assert a.keys() == b.keys() and all(b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6) for k in a)
    reference, learned = _weights(tmp_path / "single" / "run"), _weights(tmp_path / "ranks" / "run")
    assert reference.keys() == learned.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(learned[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    initial = load_file(str(init_checkpoint / "model.safetensors"))
    assert any(not torch.equal(initial[n], learned[n]) for n in initial)  # an update did happen
    aux = [n for n in initial if n.startswith("aux_")]
    assert aux and all(torch.equal(initial[n], learned[n]) for n in aux)  # the aux head stayed frozen
