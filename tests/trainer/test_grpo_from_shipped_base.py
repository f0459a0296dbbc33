"""GRPO from the base shipped in models/ raises its greedy success on the training states it practises on.

The toy test (test_grpo_learns.py) shows the algorithm learns; this one shows it learns on the embedded
simulator from the start svrl gives its users: the shipped base on one pretraining-pool task, the same few
training initial states rolled out again and again (`env.train_states_per_task`), as a user's first GRPO run
on a task the base half-masters. Bounded by GRPO steps, never by time. `slow` (minutes on 2 cores): .ci/run
runs it after `make test`.

Measured with this config and seed (session 9, 2-core AMD EPYC, other jobs on the cores): greedy success on
the 16 states 7/16 -> 13/16 after 10 steps; the test asks for +20 points (4 states).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from svrl_policy.shipped import shipped_base
from svrl_trainer.config import load_train_config
from svrl_trainer.evaluate import evaluate
from svrl_trainer.train import GrpoTrainer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

TASK = "pretrain/lift_puck"
STATES = 16
STEPS = 10
MIN_GAIN = 0.2


def _greedy_success_on_training_states(trainer: GrpoTrainer) -> float:
    own = [dataclasses.replace(t, eval_states=t.train_states) for t in trainer.tasks]
    return evaluate(trainer.rollout, own, episodes_per_task=STATES, chunk_length=trainer.chunk_length).overall


def test_grpo_from_the_shipped_base_raises_success_on_its_training_states(tmp_path: Path) -> None:
    raw = {
        "init_checkpoint": str(shipped_base()),
        "out_dir": str(tmp_path / "run"),
        "total_steps": STEPS,
        "seed": 0,
        "threads": 2,
        "env": {"backend": "sim", "tasks": [TASK], "num_envs": 16, "num_workers": 2, "image_size": 96,
                "train_states_per_task": STATES},
        "grpo": {"group_size": 8, "groups_per_batch": 4, "temperature": 1.0},
        "optim": {"lr": 1e-4, "mini_batches": 2},
        "eval": {"every": 0, "before_training": False},
        "checkpoint": {"every": 0},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    trainer = GrpoTrainer(load_train_config(tmp_path / "config.yaml"))
    try:
        curve = [(0, _greedy_success_on_training_states(trainer))]
        for _ in range(STEPS):
            trainer.train_step()
        curve.append((trainer.step, _greedy_success_on_training_states(trainer)))
    finally:
        trainer.close()
    print(f"greedy success on the {STATES} training states: {curve}")
    start, end = curve[0][1], curve[-1][1]
    assert 0.0 < start < 1.0, f"the base should half-master {TASK}: {curve}"
    assert end >= start + MIN_GAIN, f"GRPO did not raise success by {MIN_GAIN:.0%} in {STEPS} steps: {curve}"
