"""Child processes of svrl's benchmarks and checks, started and stopped the way `ros2 launch` does.

Why one module: a bench or `svrl graph-check` starts whole graphs (`svrl up`) or single nodes as children, and
each must end with SIGINT first (so nodes run their shutdown: a recorder finalises, a server writes its
timings), then SIGKILL if it hangs, with its log closed and readable for the error message.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

Spawn = Callable[..., subprocess.Popen]
"""`spawn(*python_args, log=path)`: tests pass their own, which stops what it started when the test ends."""


def spawn_python(*args: str, log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """`python *args` with this interpreter, stdout and stderr into `log` (closed by `stop_process`)."""
    handle = open(log, "wb")  # noqa: SIM115 - closed in stop_process
    proc = subprocess.Popen(
        [sys.executable, *args],
        env=None if env is None else dict(env),
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    proc.log_handle = handle  # type: ignore[attr-defined]
    return proc


def stop_process(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGINT, then SIGKILL after `timeout_s`; closes the log `spawn_python` opened."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    handle = getattr(proc, "log_handle", None)
    if handle is not None:
        handle.close()


def log_tail(log: Path, chars: int = 4000) -> str:
    """The end of a child's log, for an error message that says what went wrong."""
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"
