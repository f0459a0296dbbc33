"""Resume state of `svrl sft` / `svrl pretrain`: what a killed run needs to finish exactly as if never killed.

The output directory is always a loadable policy checkpoint. Every `save_every` steps it is replaced, in one
rename (svrl_policy.checkpoint.atomic_directory), by the current weights plus

    optimizer.safetensors   AdamW moments (safetensors, no pickle; svrl_trainer.run_state's format)
    trainer_state.json      step, parameters of the run, loss history, RNG streams (python, numpy, torch's
                            global generator, the augmentation generator), the partial logging window
    COMPLETE                marker read by run_state.load_run_state

so a kill at any moment leaves the previous state or the new one. The learning-rate schedule is a pure
function of the step (`lr_at`), so the step is its position. The final save keeps `trainer_state.json`
(`finished: true`, for `--resume` of a finished run and for provenance) and drops the optimizer moments,
which would double the checkpoint's size for nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from svrl_trainer.run_state import (
    COMPLETE_MARKER,
    STATE_JSON,
    load_run_state,
    restore_rng,
    rng_state,
    save_run_state,
)

if TYPE_CHECKING:
    from svrl_trainer.sft import SFTConfig

log = logging.getLogger(__name__)

STATE_FORMAT = "svrl-sft-state"
# SFTConfig fields that do not change the weights a run produces: a resumed run may change them.
_NOT_PARAMETERS = frozenset(
    {
        "out",
        "threads",
        "log_every",
        "save_every",
        "stop_after",
        "progress",
        "device",
        "allow_download",
        "resume",
        "overwrite",
    }
)


class RunExistsError(ValueError):
    """The output directory holds another run and neither --resume nor --overwrite was given."""


class ResumeMismatchError(ValueError):
    """--resume on a run whose recorded parameters differ from this command's."""


@dataclass
class SFTProgress:
    """The loop's counters, saved with the state so logs and history continue seamlessly."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    run_loss: float = 0.0
    run_acc: float = 0.0
    run_aux: float = 0.0  # auxiliary loss (aux_weight > 0); states saved before it existed resume at 0
    run_kp: float = 0.0  # keypoint loss (keypoint_weight > 0); likewise
    run_n: int = 0


@dataclass
class ResumePoint:
    """A complete, unfinished state read from the output directory."""

    progress: SFTProgress
    optimizer_state: dict[str, Any]
    rng: dict[str, Any]


def run_parameters(cfg: SFTConfig) -> dict[str, Any]:
    """The parameters that determine the result, JSON-normalised (absolute paths) for comparison."""
    params: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.name in _NOT_PARAMETERS:
            continue
        value = getattr(cfg, f.name)
        if f.name == "data":
            value = [str(Path(d).resolve()) for d in value]
        elif isinstance(value, Path):
            value = str(value.resolve())
        params[f.name] = value
    return json.loads(json.dumps(params))  # tuples -> lists, as they come back from the file


def read_state(out: Path) -> dict[str, Any] | None:
    """trainer_state.json of `out`, or None when `out` holds no sft run state."""
    path = Path(out) / STATE_JSON
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    if state.get("format") != STATE_FORMAT:
        raise RunExistsError(f"{path} is not an svrl sft/pretrain state (format {state.get('format')!r})")
    return state


def prepare_output(cfg: SFTConfig) -> ResumePoint | dict[str, Any] | None:
    """Check `cfg.out` against --resume / --overwrite before any work.

    Returns None (start from step 0), a ResumePoint (continue), or the finished run's state (nothing to do).
    """
    out = Path(cfg.out)
    if cfg.resume and cfg.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    if cfg.resume:
        _recover_interrupted_swap(out)
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if not occupied:
        if cfg.resume:
            log.info("--resume: %s holds no run yet; starting at step 0", out)
        return None
    state = read_state(out) if out.is_dir() else None
    if cfg.overwrite:
        # Only ever delete what svrl wrote: a training state or a policy checkpoint, never a folder of
        # something else that happened to be named as --out.
        if state is None and not (out.is_dir() and (out / "manifest.json").is_file()):
            raise RunExistsError(
                f"--overwrite: {out} holds neither an sft/pretrain run nor a policy checkpoint; not deleting "
                "it. Remove it yourself or choose another --out."
            )
        log.warning("--overwrite: removing %s", out)
        shutil.rmtree(out)
        return None
    if not cfg.resume:
        what = (
            f"a {state['config'].get('stage')} run at step {state['step']}/{state['config'].get('steps')}"
            if state
            else "files of something else"
        )
        raise RunExistsError(
            f"{out} already holds {what}. Pass --resume to continue it, --overwrite to replace it, "
            "or choose another --out."
        )
    if state is None:
        raise RunExistsError(
            f"--resume: {out} holds no {STATE_JSON} (not a resumable sft/pretrain run, or one saved before "
            "resume existed). Pass --overwrite to replace it, or choose another --out."
        )
    check_same_parameters(state["config"], run_parameters(cfg), out)
    if state.get("finished"):
        return state
    trainer_state, optimizer_state = load_run_state(out)
    progress = SFTProgress(**trainer_state["progress"])
    return ResumePoint(progress, optimizer_state, trainer_state["rng"])


def check_same_parameters(recorded: dict[str, Any], current: dict[str, Any], out: Path) -> None:
    """Refuse to resume with different parameters: the result would match neither run."""
    # A parameter added to svrl after the run started is absent from its record; the run used that
    # parameter's default, so resuming with the default is the same run.
    from svrl_trainer.sft import SFTConfig

    defaults = {
        f.name: f.default for f in dataclasses.fields(SFTConfig) if f.default is not dataclasses.MISSING
    }
    keys = sorted(set(recorded) | set(current))
    diff = [
        f"{k}: run {recorded.get(k)!r}, now {current.get(k)!r}"
        for k in keys
        if recorded.get(k, defaults.get(k)) != current.get(k)
    ]
    if diff:
        raise ResumeMismatchError(
            f"--resume: {out} was started with other parameters ({'; '.join(diff)}). Resume with the "
            "original ones, or pass --overwrite / another --out to start a new run."
        )


def write_state(
    tmp: Path,
    cfg: SFTConfig,
    progress: SFTProgress,
    *,
    optimizer: torch.optim.Optimizer | None,
    numpy_rng: np.random.Generator,
    augment_gen: torch.Generator,
) -> None:
    """Fill a checkpoint's temporary directory with the run state (optimizer moments unless finished)."""
    finished = optimizer is None
    state: dict[str, Any] = {
        "format": STATE_FORMAT,
        "finished": finished,
        "step": progress.step,
        "config": run_parameters(cfg),
        "progress": dataclasses.asdict(progress),
    }
    if finished:
        (tmp / STATE_JSON).write_text(json.dumps(state, indent=1))
        return
    rng = rng_state(numpy_rng)
    rng["augment"] = augment_gen.get_state().tolist()
    save_run_state(tmp, optimizer.state_dict(), {**state, "rng": rng})
    (tmp / COMPLETE_MARKER).write_text("ok\n")


def restore_generators(
    rng: dict[str, Any], numpy_rng: np.random.Generator, augment_gen: torch.Generator
) -> None:
    restore_rng(rng, numpy_rng)
    augment_gen.set_state(torch.tensor(rng["augment"], dtype=torch.uint8))


def _recover_interrupted_swap(out: Path) -> None:
    """A kill between atomic_directory's two renames leaves `out` missing and the previous state at
    `.NAME.old-*`: put it back, so --resume still finds the newest complete state."""
    if out.exists():
        return
    olds = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
    for old in reversed(olds):
        if (old / STATE_JSON).is_file():
            log.warning("restoring %s from %s (a save was interrupted between its renames)", out, old)
            old.rename(out)
            return
