"""Everything a killed run needs to continue exactly: optimizer, RNG streams, step counters.

Stored as safetensors (tensors) + JSON (everything else) — never pickle, so a checkpoint from an
untrusted source cannot execute code when loaded. Written to a temporary folder and renamed, so a
kill at any moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

OPTIMIZER_TENSORS = "optimizer.safetensors"
STATE_JSON = "trainer_state.json"
COMPLETE_MARKER = "COMPLETE"


def optimizer_state_to_flat(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into named tensors and a JSON-able remainder.

    Parameters are keyed by index (`optimizer.state_dict()`) or by name (a gathered FSDP state);
    tensors are stored as `<param>.<key>`, and optimizer keys (exp_avg, step...) contain no dot.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{param}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_state_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    def param_key(name: str) -> int | str:
        return int(name) if name.isdigit() else name

    state: dict[int | str, dict[str, Any]] = {}
    for name, value in tensors.items():
        param, key = name.rsplit(".", 1)
        state.setdefault(param_key(param), {})[key] = value
    for param, values in meta["scalars"].items():
        state.setdefault(param_key(param), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state(numpy_rng: np.random.Generator) -> dict[str, Any]:
    """The run's generators. Rollout sampling needs none of its own: each round's seed comes from
    `numpy_rng`, and every wave derives its sampler from that seed (see `rollout.wave_generator`)."""
    return {
        "python": _jsonable(random.getstate()),
        "numpy": numpy_rng.bit_generator.state,
        "torch_global": torch.get_rng_state().tolist(),
    }


def restore_rng(state: dict[str, Any], numpy_rng: np.random.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(torch.tensor(state["torch_global"], dtype=torch.uint8))


def write_atomically(final_dir: Path, fill) -> Path:
    """Call fill(tmp_dir) to populate a sibling temporary folder, then rename it into place."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = final_dir.with_name(f".{final_dir.name}.tmp-{os.getpid()}")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir()
    fill(tmp_dir)
    (tmp_dir / COMPLETE_MARKER).write_text("ok\n")
    _fsync_dir(tmp_dir)
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old-{os.getpid()}")
        final_dir.rename(old)
        tmp_dir.rename(final_dir)
        shutil.rmtree(old)
    else:
        tmp_dir.rename(final_dir)
    _fsync_dir(final_dir.parent)
    return final_dir


def save_run_state(directory: Path, optimizer_state: dict[str, Any], state: dict[str, Any]) -> None:
    """Write optimizer tensors + JSON state into an (already temporary) directory."""
    tensors, meta = optimizer_state_to_flat(optimizer_state)
    save_file(tensors, str(directory / OPTIMIZER_TENSORS))
    (directory / STATE_JSON).write_text(json.dumps({"optimizer": meta, **state}, indent=1))


def load_run_state(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer state, optimizer state dict) of a complete checkpoint."""
    directory = Path(directory)
    if not (directory / COMPLETE_MARKER).exists():
        raise FileNotFoundError(f"{directory} is not a complete checkpoint (no {COMPLETE_MARKER} marker)")
    state = json.loads((directory / STATE_JSON).read_text())
    optimizer = optimizer_state_from_flat(
        load_file(str(directory / OPTIMIZER_TENSORS)), state.pop("optimizer")
    )
    return state, optimizer


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
