"""A policy_server started with a value it cannot run with stops at once and says which parameter."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]


@pytest.mark.parametrize(
    ("name", "value"), [("on_new_goal", "preemt"), ("success_source", "operater"), ("backend", "tensorflow")]
)
def test_a_typo_in_a_choice_parameter_stops_the_node(ros_env, name: str, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "svrl_ros.policy_server", "--ros-args", "-p", f"{name}:={value}"],
        env=ros_env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{name} must be one of" in done.stdout + done.stderr
