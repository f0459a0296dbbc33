"""The base policy that ships with svrl, as a VLA ships its pretrained weights.

A 1-demo fine-tune is only as good as the base under it, and pretraining a usable base takes hours of CPU;
a user who wants the paper's learning curve should not have to pay that first. So one base, trained by
`svrl pretrain` on the pretraining pool (disjoint from the evaluation suites), is committed under `models/`
with a model card (`models/<name>/README.md`: the commands, data, steps, loss curve, pool success, time)
saying how to reproduce it. `svrl demo` and `svrl bench learn` start from it unless told otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

SHIPPED_BASE = "base-tiny96"
MODELS_ENV = "SVRL_MODELS_DIR"


class ShippedModelMissingError(FileNotFoundError):
    """The models folder is not where this svrl was installed from (a wheel, a sparse clone)."""


def models_dir() -> Path:
    """`$SVRL_MODELS_DIR`, else the repository's `models/` (svrl is installed editable from its clone)."""
    override = os.environ.get(MODELS_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[1] / "models"


def shipped_base() -> Path:
    """The shipped base checkpoint's directory; a clear error when it is not there. Its weights are checked
    against the manifest's sha256 when a policy loads them (a Git LFS pointer or a truncated file fails)."""
    path = models_dir() / SHIPPED_BASE
    if not (path / "model.safetensors").is_file():
        raise ShippedModelMissingError(
            f"the shipped base {SHIPPED_BASE!r} is not at {path}: svrl finds it in the models/ folder of the "
            f"clone it was installed from (pip install -e), or in ${MODELS_ENV}. Pass a base of your own "
            "(--base), or pretrain one (svrl pretrain; the model card in models/ has the commands)."
        )
    return path
