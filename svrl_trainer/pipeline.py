"""Run a chain of public `svrl` commands as subprocesses, each skipped when its output exists.

`svrl demo` and `svrl bench learn` are both such chains. Running every stage as the command a user
would type means the printed line can be copied and rerun by hand, a crash in one stage leaves the
finished ones on disk, and rerunning the chain resumes it where it stopped.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

# Stage chatter goes to stderr so that a chain's result on stdout (e.g. `--json`) stays parseable.
console = Console(stderr=True)


def svrl_command(*args: str) -> list[str]:
    """`svrl ARGS...` with this interpreter, so the chain runs in the same environment as its caller."""
    return [sys.executable, "-m", "svrl_trainer.cli", *args]


def run_stage(title: str, command: list[str], done: Path | None) -> float | None:
    """Run one stage unless `done` exists; returns its wall time in seconds, None when skipped."""
    shown = "svrl " + " ".join(shlex.quote(a) for a in command[3:])
    if done is not None and done.exists():
        console.print(f"[dim]skip[/] {title}: {done} exists")
        return None
    console.rule(f"[bold]{title}")
    console.print(f"$ {shown}", markup=False, highlight=False)
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=sys.stderr)
    elapsed = time.monotonic() - started
    console.print(f"[green]done[/] in {elapsed:.0f} s")
    return elapsed


def latest_grpo_policy(run_dir: Path) -> Path:
    """The policy of a finished GRPO stage's newest complete checkpoint (what the next stage uses)."""
    from svrl_trainer.train import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise SystemExit(f"no complete GRPO checkpoint in {run_dir}")
    return latest / "policy"
