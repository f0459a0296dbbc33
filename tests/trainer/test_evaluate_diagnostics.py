"""`svrl eval`'s diagnostics beside the reported figure: training states (does GRPO generalise or only fit
what it trained on?) and sampled decoding (is a gain in sampled success also a greedy one?). Neither may
ever be mistaken for, or overwrite, the held-out greedy evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from svrl_trainer.catalog import resolve_tasks
from svrl_trainer.evaluate import evaluate
from svrl_trainer.rollout_engine import make_rollout_engine

from .conftest import CHUNK


class _RecordingEngine:
    """Stands in for a rollout engine: records what evaluate() asked for, every episode succeeds."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def collect(self, specs, **kwargs):
        self.calls.append({"specs": list(specs), **kwargs})
        n = len(specs)
        return SimpleNamespace(specs=list(specs), success=np.ones(n, bool), worker_failed=np.zeros(n, bool))


def test_split_chooses_the_initial_states_and_the_report_names_it() -> None:
    tasks = resolve_tasks("toy", ["toy"])
    engine = _RecordingEngine()
    held_out = evaluate(engine, tasks, episodes_per_task=3, chunk_length=CHUNK)
    trained = evaluate(engine, tasks, episodes_per_task=3, chunk_length=CHUNK, split="train")
    for task in tasks:
        asked = [[s.init_state for s in call["specs"] if s.task == task.name] for call in engine.calls]
        assert asked == [list(task.eval_states[:3]), list(task.train_states[:3])]
    assert held_out.to_dict()["split"] == "eval" and "Diagnostic" not in held_out.markdown()
    assert (
        trained.to_dict()["split"] == "train"
        and "Diagnostic: train initial states, greedy" in trained.markdown()
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [({"split": "test"}, "split must be"), ({"temperature": -1.0}, "temperature must be"),
     ({"temperature": float("nan")}, "temperature must be")],
)  # fmt: skip
def test_bad_diagnostic_options_are_refused_before_any_rollout(options, message) -> None:
    engine = _RecordingEngine()
    with pytest.raises(ValueError, match=message):
        evaluate(engine, resolve_tasks("toy", ["toy"]), episodes_per_task=2, chunk_length=CHUNK, **options)
    assert engine.calls == []


def test_sampled_evaluation_is_repeatable_for_a_seed(policy) -> None:
    tasks = resolve_tasks("toy", ["toy"])
    engine = make_rollout_engine("local", policy, backend="toy", num_envs=8, image_size=32, num_workers=None)
    try:
        runs = [
            evaluate(engine, tasks, episodes_per_task=4, chunk_length=CHUNK, temperature=1.0, seed=seed)
            for seed in (3, 3)
        ]
    finally:
        engine.close()
    assert runs[0].to_dict() == runs[1].to_dict()
    assert runs[0].temperature == 1.0 and "sampled at T = 1" in runs[0].markdown()


def test_cli_writes_a_diagnostic_beside_the_held_out_report_never_over_it(init_checkpoint, tmp_path) -> None:
    import shutil

    ckpt = tmp_path / "policy"
    shutil.copytree(init_checkpoint, ckpt)
    base = [sys.executable, "-m", "svrl.cli", "eval", "--ckpt", str(ckpt), "--backend", "toy", "--tasks", "toy",
            "--episodes-per-task", "2", "--num-envs", "8", "--image-size", "32"]  # fmt: skip
    for extra in ([], ["--split", "train", "--temperature", "1.0"]):
        run = subprocess.run(base + extra, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
    held_out = json.loads((ckpt / "eval" / "eval.json").read_text())
    diagnostic = json.loads((ckpt / "eval_train_T1" / "eval.json").read_text())
    assert (held_out["split"], held_out["temperature"]) == ("eval", 0.0)
    assert (diagnostic["split"], diagnostic["temperature"]) == ("train", 1.0)
