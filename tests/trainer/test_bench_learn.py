"""`svrl bench learn` end to end at toy scale: every stage runs as the command a user would type, the
result names each policy's held-out success, and a rerun resumes instead of starting over."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from svrl_policy.codec import ActionCodec
from svrl_policy.config import get_preset
from svrl_policy.policy import Policy


def test_bench_learn_runs_every_stage_and_reports(tmp_path) -> None:
    from svrl_sim.constants import DEFAULT_CONTROL_HZ
    from svrl_sim.kinematics import MAX_ANGULAR_SPEED, MAX_LINEAR_SPEED

    limit = np.r_[[MAX_LINEAR_SPEED] * 3, [MAX_ANGULAR_SPEED] * 3] / DEFAULT_CONTROL_HZ
    base = tmp_path / "base"  # a random base stands in for pretraining (the bench's own first stage)
    Policy(get_preset("debug"), ActionCodec(low=np.r_[-limit, -1.0], high=np.r_[limit, 1.0])).save_pretrained(
        base
    )
    out = tmp_path / "bench"
    command = [
        sys.executable, "-m", "svrl.cli", "bench", "learn", "--out", str(out), "--base", str(base),
        "--suite", "object", "--image-size", "64", "--sft-steps", "2", "--baseline-demos-per-task", "2", "--grpo-minutes", "0.001",
        "--grpo-eval-every", "1", "--grpo-eval-episodes-per-task", "1", "--eval-episodes-per-task", "1",
        "--grpo-set", "grpo.groups_per_batch=1", "--grpo-set", "grpo.max_sampling_rounds=1",
        "--grpo-set", "env.num_envs=8", "--baseline-grpo-minutes", "0.001", "--json",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)  # stage chatter goes to stderr: stdout is the result alone
    names = {"sft_1demo", "sft_2demo", "grpo", "grpo_from_baseline"}
    assert set(result["success"]) == names
    assert result["episodes_per_figure"] == dict.fromkeys(names, 5)
    for run, start in (("grpo", "sft_1demo"), ("grpo_from_baseline", "sft_2demo")):
        assert result["grpo_runs"][run]["steps"] == 1  # the 0.06 s budget is spent by the first step
        assert result["grpo_runs"][run]["start"] == start
        assert result["grpo_runs"][run]["gain_points"] == 100 * (
            result["success"][run] - result["success"][start]
        )
    assert (out / "grpo_from_baseline" / "config.yaml").read_text().count("sft_2demo") == 1  # started there
    table = (out / "bench_learn.md").read_text()
    assert (
        "1-demo SFT (GRPO start)" in table
        and "2-demo SFT (baseline)" in table
        and "2-demo SFT + GRPO" in table
    )
    assert (out / "bench_learn.png").stat().st_size > 0
    assert json.loads((out / "bench_learn.json").read_text()) == result

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stderr.count("skip") >= 10  # 4 demo/SFT, 2 GRPO, 4 evals
