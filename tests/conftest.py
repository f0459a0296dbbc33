"""Shared fixtures: isolated ROS 2 domains and processes that are always stopped."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _domain_id_range() -> range:
    """Domain ids this run may use: `SVRL_TEST_DOMAINS=first-last` when several test runs share a machine.

    FastDDS maps domain ids 0..101 onto ports safely. Without the variable, sessions are spread by pid so
    that two runs rarely collide; with it, runs given disjoint ranges never do.
    """
    spec = os.environ.get("SVRL_TEST_DOMAINS", "")
    if spec:
        first, _, last = spec.partition("-")
        return range(int(first), int(last) + 1)
    return range(1 + os.getpid() % 50, 101)


# every test gets its own id within a run
_domain_ids = itertools.cycle(_domain_id_range())


@pytest.fixture
def ros_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for one test's ROS graph: its own domain, discovery limited to this machine."""
    domain_id = str(next(_domain_ids))
    monkeypatch.setenv("ROS_DOMAIN_ID", domain_id)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return dict(os.environ)


class ProcessGroup:
    """Child processes of one test, stopped like `ros2 launch` stops them: SIGINT, then SIGKILL."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._procs: list[subprocess.Popen] = []

    def start_python(self, *args: str, log: Path) -> subprocess.Popen:
        handle = open(log, "wb")  # noqa: SIM115 - closed in stop()
        proc = subprocess.Popen(
            [sys.executable, *args], env=self._env, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
        proc.log_handle = handle  # type: ignore[attr-defined]
        proc.log_path = log  # type: ignore[attr-defined]
        self._procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.log_handle.close()  # type: ignore[attr-defined]


@pytest.fixture
def processes(ros_env: dict[str, str]) -> Iterator[ProcessGroup]:
    group = ProcessGroup(ros_env)
    try:
        yield group
    finally:
        group.stop()
