"""Run a chain of public `svrl` commands as subprocesses, each reused when it already ran with the same
arguments.

`svrl demo` and `svrl bench learn` are both such chains. Running every stage as the command a user
would type means the printed line can be copied and rerun by hand, a crash in one stage leaves the
finished ones on disk, and rerunning the chain resumes it where it stopped.

Provenance: a finished stage records its exact arguments next to its output (`.svrl-stage.<done>.json`,
written atomically). A rerun reuses the output only when those arguments are identical; when they differ,
or when an output exists without a record (made by hand, or before records existed), the chain stops and
says so, rather than silently presenting a result made with other parameters (or deleting someone's run).
A stage killed mid-run has no record yet: if its command takes `--resume` it is rerun and continues itself
(and refuses on its own if its parameters changed); otherwise its output would be incomplete, so it is refused.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from svrl_trainer.atomic import write_text_atomic

# Stage chatter goes to stderr so that a chain's result on stdout (e.g. `--json`) stays parseable.
console = Console(stderr=True)


def svrl_command(*args: str) -> list[str]:
    """`svrl ARGS...` with this interpreter, so the chain runs in the same environment as its caller."""
    return [sys.executable, "-m", "svrl.cli", *args]


class StageMismatchError(SystemExit):
    """An existing stage output was made with other arguments (or with unknown ones)."""


def stage_record(done: Path) -> Path:
    """Where the arguments of the stage whose completion `done` marks are recorded."""
    return done.with_name(f".svrl-stage.{done.name}.json")


def run_stage(title: str, command: list[str], done: Path | None) -> float | None:
    """Run one stage unless it already ran with these arguments; returns its wall time, None when reused.

    `command` is an `svrl_command(...)` list; `done` is a path that exists once the stage finished (None:
    always run, record nothing).
    """
    shown = "svrl " + " ".join(shlex.quote(a) for a in command[3:])
    arguments = list(command[1:])  # not the interpreter's path: the same chain from another venv matches
    if done is not None and _reusable(title, arguments, done):
        console.print(f"[dim]skip[/] {title}: {done} exists, made by the same arguments")
        return None
    console.rule(f"[bold]{title}")
    console.print(f"$ {shown}", markup=False, highlight=False)
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=sys.stderr)
    elapsed = time.monotonic() - started
    if done is not None:
        record = {
            "format": "svrl-stage",
            "title": title,
            "arguments": arguments,
            "seconds": round(elapsed, 1),
        }
        write_text_atomic(stage_record(done), json.dumps(record, indent=1) + "\n")
    console.print(f"[green]done[/] in {elapsed:.0f} s")
    return elapsed


def _reusable(title: str, arguments: list[str], done: Path) -> bool:
    """True: reuse; False: (re)run; raises StageMismatchError when running would hide or mix provenance."""
    path = stage_record(done)
    recorded = json.loads(path.read_text())["arguments"] if path.is_file() else None
    if recorded is not None and recorded != arguments:
        differ = sorted(set(recorded) ^ set(arguments)) or ["(argument order)"]
        raise StageMismatchError(
            f"stage '{title}': {done} was made by other arguments than this run's (differing: {' '.join(differ)}).\n"
            f"  recorded: svrl {shlex.join(recorded[2:])}\n  now:      svrl {shlex.join(arguments[2:])}\n"
            "Not reusing it, and not overwriting it: remove that output, or give this run another output folder."
        )
    if recorded is not None:
        return done.exists()
    if done.exists() and "--resume" not in arguments:
        raise StageMismatchError(
            f"stage '{title}': {done} exists but has no record of the arguments it was made with ({path.name}): "
            "made by hand, by an older svrl, or interrupted. Remove that output, or give this run another "
            "output folder."
        )
    if done.exists():
        console.print(
            f"[yellow]resume[/] {title}: {done} exists without a record (interrupted); rerunning with --resume"
        )
    return False


def latest_grpo_policy(run_dir: Path) -> Path:
    """The policy of a finished GRPO stage's newest complete checkpoint (what the next stage uses)."""
    from svrl_trainer.train import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise SystemExit(f"no complete GRPO checkpoint in {run_dir}")
    return latest / "policy"


def add_base_args(p: argparse.ArgumentParser, *, pretrain_steps: int, pretrain_demos_per_task: int) -> None:
    """--base / --pretrain for a chain that starts from a pretrained base (default: the shipped one)."""
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--base",
        type=Path,
        default=None,
        help="start from this pretrained base (default: the base shipped in models/)",
    )
    which.add_argument(
        "--pretrain",
        action="store_true",
        help="pretrain a base in <out>/base first (pool demos, then svrl pretrain) instead of the shipped one",
    )
    p.add_argument("--pretrain-steps", type=int, default=pretrain_steps, help="with --pretrain")
    p.add_argument(
        "--pretrain-demos-per-task", type=int, default=pretrain_demos_per_task, help="with --pretrain"
    )


def chosen_base(args: argparse.Namespace) -> Path | None:
    """The base --base / --pretrain chose: a checkpoint directory, or None to pretrain one."""
    if args.pretrain:
        return None
    if args.base is not None:
        return args.base
    from svrl_policy.shipped import ShippedModelMissingError, shipped_base

    try:
        return shipped_base()
    except ShippedModelMissingError as error:
        raise SystemExit(f"{error}\nOr pass --pretrain to pretrain a small one first.") from None


def base_or_pretrain(
    base: Path | None, out: Path, *, demos_per_task: int, steps: int, image_size: int, threads: int
) -> tuple[Path, dict[str, float | None]]:
    """`base` itself when given; else pool demonstrations, then `svrl pretrain` into <out>/base. Returns the
    base and the wall time of each stage that ran."""
    if base is not None:
        return base, {}
    size = str(image_size)
    pool, base = out / "data" / "pretrain", out / "base"
    stage_s = {
        "pool_demos": run_stage(
            "demonstrations of the pretraining pool (disjoint from the evaluation suites)",
            svrl_command("demos", "--suite", "pretrain", "--per-task", str(demos_per_task), "--out", str(pool),
                         "--image-size", size),
            pool / "meta" / "info.json",
        ),
        "pretrain": run_stage(
            "pretrain the base policy (behaviour cloning on the pool)",
            svrl_command("pretrain", "--data", str(pool), "--out", str(base), "--steps", str(steps),
                         "--image-size", size, "--preset", "tiny96" if image_size == 96 else "tiny",
                         "--batch-size", "32", "--threads", str(threads), "--resume"),
            base / "config.json",
        ),
    }  # fmt: skip
    return base, stage_s


def base_provenance(base: Path) -> dict[str, str | None]:
    """Which base a result started from: its path and the sha256 of its weights (the manifest's)."""
    manifest = base / "manifest.json"
    sha = json.loads(manifest.read_text())["sha256"].get("model.safetensors") if manifest.is_file() else None
    return {"path": str(base), "model_sha256": sha}
