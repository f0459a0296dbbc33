"""The `svrl sim`, `svrl demos` and `svrl bench sim` commands, run as a user would run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from svrl_sim import cli
from svrl_sim.tasks import SUITES, tasks_in_suite


def _svrl(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "svrl.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_cli_suites_match_the_registry() -> None:
    assert cli._SUITES == SUITES


def test_help_does_not_import_mujoco() -> None:
    code = (
        "import sys, svrl.cli as c; c.build_parser(); "
        "assert 'mujoco' not in sys.modules and 'svrl_sim.env' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_sim_show_writes_a_montage(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "goal.png"
    result = _svrl("sim", "show", "--suite", "goal", "--out", str(out), "--image-size", "32")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as img:
        w, h = img.size
    n = len(tasks_in_suite("goal"))
    assert w >= 3 * 64 and h >= ((n + 2) // 3) * 32  # 3 columns of (main | wrist) tiles


def test_demos_writes_a_lerobot_dataset(tmp_path: Path) -> None:
    dataset = pytest.importorskip("svrl_policy.dataset")
    out = tmp_path / "demos"
    result = _svrl(
        "demos",
        "--suite",
        "goal",
        "--per-task",
        "1",
        "--out",
        str(out),
        "--image-size",
        "32",
        "--workers",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert "failed 0 time(s)" in result.stdout
    ds = dataset.LeRobotDataset(out)
    assert ds.num_episodes == len(tasks_in_suite("goal"))
    episode = ds.episode(0)
    assert episode["images"]["main"].shape[1:] == (32, 32, 3)
    assert episode["actions"].shape[1] == 7 and episode["proprio"].shape[1] == 15
    assert episode["success"] and episode["task_name"].startswith("goal/")


def test_demos_of_named_tasks_from_a_later_init_state(tmp_path: Path) -> None:
    """--tasks records only the named tasks (short names too), --first-state starts past the states another
    dataset of the same tasks used: the episode is the expert's from that state, not from state 0."""
    import numpy as np

    from svrl_sim.demos import record_episodes

    dataset = pytest.importorskip("svrl_policy.dataset")
    out = tmp_path / "more"
    args = ("demos", "--suite", "pretrain", "--per-task", "1", "--image-size", "32", "--workers", "1")
    result = _svrl(*args, "--out", str(out), "--tasks", "lift_can", "--first-state", "7")
    assert result.returncode == 0, result.stderr
    ds = dataset.LeRobotDataset(out)
    assert ds.num_episodes == 1
    episode = ds.episode(0)
    assert episode["task_name"] == "pretrain/lift_can"
    ((_, at_7),), ((_, at_0),) = (
        record_episodes("pretrain/lift_can", "train", [i], 32, "ee_delta") for i in (7, 0)
    )
    assert at_7 is not None and at_0 is not None
    np.testing.assert_allclose(episode["proprio"], at_7["proprio"], atol=1e-6)
    assert episode["proprio"].shape != at_0["proprio"].shape or not np.allclose(
        episode["proprio"], at_0["proprio"]
    )

    bad = _svrl(*args, "--out", str(tmp_path / "bad"), "--tasks", "spatial/pick_up_the_cube")
    assert bad.returncode != 0 and "not a task of suite 'pretrain'" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_bench_reports_json() -> None:
    result = _svrl("bench", "sim", "--json", "--steps", "15", "--image-size", "32", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in (
        "env_steps_per_s_1_worker",
        "env_steps_per_s_2_workers",
        "scaling_1_to_2_workers",
        "physics_step_ms",
        "render_ms_per_camera",
    ):
        assert report[key] > 0, key
    assert report["machine"]["gl_backend"] in ("egl", "osmesa")
