"""`svrl bench learn-table`: per-suite bench results laid out as the paper's table, and refused when they
do not belong in one table. The results are made by `bench_learn.summarise`, the function the bench uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from svrl_trainer.bench_learn import LearnPlan, summarise
from svrl_trainer.bench_learn_table import combine, table_markdown, write_table


def _base(tmp_path: Path, sha: str) -> Path:
    base = tmp_path / f"base-{sha}"
    base.mkdir(exist_ok=True)
    (base / "manifest.json").write_text(json.dumps({"sha256": {"model.safetensors": sha}}))
    return base


def _result(
    tmp_path: Path, suite: str, sft1: float, grpo: float, sft10: float, sha: str = "aaa", demos: int = 10,
    overrides: tuple[str, ...] = ("optim.lr=2e-4",),
):  # fmt: skip
    plan = LearnPlan(
        out=tmp_path / suite, suite=suite, base=_base(tmp_path, sha), baseline_demos_per_task=demos,
        grpo_overrides=overrides,
    )  # fmt: skip
    reports = {
        name: {"success_rate": rate, "episodes": 300, "tasks": []}
        for name, rate in (("sft_1demo", sft1), ("grpo", grpo), (f"sft_{demos}demo", sft10))
    }
    step = {"train/updated": 1, "rollout/sampled_success": 0.3, "time/training_s": 1800.0}
    return summarise(plan, reports, {"grpo": [step, step]}, {})


def test_suites_in_the_papers_order_with_averages_and_gains(tmp_path: Path) -> None:
    results = [
        _result(tmp_path, "long", 0.10, 0.30, 0.40),
        _result(tmp_path, "spatial", 0.20, 0.60, 0.50),
    ]
    combined = combine(results)
    assert combined["suites"] == ["spatial", "long"]
    assert combined["success"]["grpo"]["average"] == pytest.approx(0.45)
    assert combined["average_gain_points"] == pytest.approx(30.0)
    assert combined["per_suite"]["spatial"]["grpo_steps"] == 2
    table = table_markdown(combined)
    assert "| held-out success | spatial | long | average |" in table
    assert "| 1-demo SFT + GRPO | 60.0 % | 30.0 % | 45.0 % |" in table
    assert "| gain (points) | +40.0 | +20.0 | +30.0 |" in table
    assert "| 10-demo SFT | 50.0 % | 40.0 % | 45.0 % |" in table
    assert "GRPO settings beyond `svrl_trainer/configs/tiny.yaml`: `optim.lr=2e-4`." in table
    assert f"Base: `{tmp_path / 'base-aaa'}`" in table  # outside the working directory: as recorded

    paths = []
    for r in results:
        path = tmp_path / f"{r['suite']}.json"
        path.write_text(json.dumps(r))
        paths.append(path)
    out = tmp_path / "table"
    write_table(paths, out)
    assert json.loads((out / "bench_learn_suites.json").read_text())["sources"] == [str(p) for p in paths]
    assert (out / "bench_learn_suites.md").read_text() == table
    assert (out / "bench_learn_suites.png").stat().st_size > 0


def test_a_base_under_the_working_directory_is_named_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    table = table_markdown(combine([_result(tmp_path, "spatial", 0.2, 0.6, 0.5)]))
    assert "Base: `base-aaa` (weights sha256 aaa)" in table


def test_results_that_do_not_belong_in_one_table_are_refused(tmp_path: Path) -> None:
    spatial = _result(tmp_path, "spatial", 0.2, 0.6, 0.5)
    with pytest.raises(ValueError, match="twice"):
        combine([spatial, _result(tmp_path, "spatial", 0.1, 0.2, 0.3)])
    with pytest.raises(ValueError, match="different bases"):
        combine([spatial, _result(tmp_path, "object", 0.1, 0.2, 0.3, sha="bbb")])
    with pytest.raises(ValueError, match="different baselines"):
        combine([spatial, _result(tmp_path, "object", 0.1, 0.2, 0.3, demos=5)])
    with pytest.raises(ValueError, match="different --grpo-set"):
        combine([spatial, _result(tmp_path, "object", 0.1, 0.2, 0.3, overrides=("optim.lr=5e-5",))])


def test_the_command_says_why_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    old = {k: v for k, v in _result(tmp_path, "spatial", 0.2, 0.6, 0.5).items() if k != "base"}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))  # a result from before results named their base
    out = tmp_path / "table"
    run = subprocess.run(
        [sys.executable, "-m", "svrl.cli", "bench", "learn-table", str(path), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stdout.startswith("svrl bench learn-table:") and "base" in run.stdout
    assert not out.exists()


def test_one_suite_has_no_average_column(tmp_path: Path) -> None:
    table = table_markdown(combine([_result(tmp_path, "goal", 0.2, 0.4, 0.6)]))
    assert table.startswith("| held-out success | goal |\n|---|---|\n| 1-demo SFT | 20.0 % |\n")
