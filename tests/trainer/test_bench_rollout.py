"""`svrl bench rollout` reports consistent figures from a real rollout in the embedded simulator."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(300)


def test_bench_rollout_json_is_consistent() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "svrl.cli", "bench", "rollout", "--json", "--preset", "debug",
         "--image-size", "64", "--episodes", "4", "--num-envs", "4", "--workers", "1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(run.stdout)
    assert result["env_steps"] > 0 and result["policy_steps"] > 0
    assert result["env_steps"] <= 8 * result["policy_steps"]  # at most K = 8 env steps per chunk
    fractions = result["fraction_sim"] + result["fraction_policy"] + result["fraction_bookkeeping"]
    assert fractions == pytest.approx(1.0, abs=0.01)
    # 2 cameras x 64 x 64 x 3 uint8 + 15 float32 proprio + 56 tokens (int64) + 56 log-probs (float32)
    assert result["bytes_per_policy_step"] == 2 * 64 * 64 * 3 + 15 * 4 + 56 * 8 + 56 * 4
    assert result["memory_ratio_vs_simplevla_rl"] > 8


@pytest.mark.ros
def test_bench_rollout_ros_backend_compares_with_the_in_process_env(ros_env) -> None:
    """`--backend ros`: RosEnv against VectorEnv on the same episodes (the bench refuses unequal work)."""
    run = subprocess.run(
        [sys.executable, "-m", "svrl.cli", "bench", "rollout", "--json", "--backend", "ros", "--instances", "1",
         "--preset", "debug", "--image-size", "32", "--episodes", "2", "--suite", "goal/press_button",
         "--env-option", "timeout_s=60"],
        capture_output=True, text=True, env=ros_env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["backend"] == "ros" and result["settings"]["env_options"] == {"timeout_s": 60}
    (row,) = result["comparisons"]
    assert row["instances"] == 1
    assert row["sim"]["env_steps"] == row["ros"]["env_steps"] > 0  # the same episodes, the same work
    assert row["sim"]["policy_steps"] == row["ros"]["policy_steps"]
    assert row["ros_env_steps_per_s"] == row["ros"]["env_steps_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["ros_env_steps_per_s"] / row["sim_env_steps_per_s"], rel=0.01)


def test_a_malformed_env_option_ends_the_bench_before_any_work() -> None:
    """`--env-option` and `svrl eval`'s / `svrl train`'s KEY=VALUE share one parser; the error names the flag."""
    from svrl_trainer.commands import parse_key_values

    assert parse_key_values(["a=1", "b=[x, y]", "c="], "--set") == {"a": 1, "b": ["x", "y"], "c": None}
    run = subprocess.run(
        [sys.executable, "-m", "svrl.cli", "bench", "rollout", "--backend", "ros", "--env-option", "timeout_s"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode != 0 and "--env-option expects KEY=VALUE, got 'timeout_s'" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
