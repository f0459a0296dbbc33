"""Grow a trained policy: add modules that start as the identity and keep every trained weight.

A base costs CPU-hours. Trying a bigger keypoint map should not mean training it again from nothing: the
grown policy starts out acting exactly as the checkpoint did (checked, not assumed: both run the same
random batch and must give identical logits) and training goes on from there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import torch

from svrl_policy.checkpoint import load_components, load_weights
from svrl_policy.policy import Policy

# Config fields whose increase only adds modules that start as the identity (models/tiny.py).
GROWABLE: dict[str, str] = {
    "keypoint_refine": "keypoint_refiner.",  # KeypointRefiner: each block's last conv starts at zero
}


class GrowError(ValueError):
    """A growth that would change what the policy does, or that names something that cannot grow."""


def parse_growth(spec: str) -> dict[str, int]:
    """'keypoint_refine=3[,key=n ...]' -> {'keypoint_refine': 3}, refusing unknown keys and bad numbers."""
    changes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in GROWABLE:
            raise GrowError(f"--grow {part!r}: expected KEY=N with KEY one of {sorted(GROWABLE)}")
        try:
            changes[key] = int(value)
        except ValueError:
            raise GrowError(f"--grow {part!r}: {value!r} is not an integer") from None
    if not changes:
        raise GrowError(f"--grow {spec!r}: nothing to grow")
    return changes


def grow_policy(directory: str | Path, changes: Mapping[str, int], device: str = "cpu") -> Policy:
    """The checkpoint in `directory` with `changes` applied to its config; raises GrowError if the grown
    policy would not act exactly as the checkpoint does."""
    components = load_components(directory)
    for key, value in changes.items():
        if key not in GROWABLE:
            raise GrowError(f"cannot grow {key!r}: only {sorted(GROWABLE)} add identity-initialised modules")
        if value <= getattr(components.config, key):
            raise GrowError(f"cannot grow {key} from {getattr(components.config, key)} to {value}")
    with torch.device(device):
        base = Policy.from_components(components)
        grown = Policy.from_components(
            dataclasses.replace(components, config=components.config.replace(**changes))
        )
    load_weights(base.model, directory)
    missing, unexpected = grown.model.load_state_dict(base.model.state_dict(), strict=False)
    new_prefixes = tuple(GROWABLE[key] for key in changes)
    foreign = [k for k in missing if not k.startswith(new_prefixes)]
    if unexpected or foreign:
        raise GrowError(f"weights do not carry over: unexpected {unexpected[:5]}, missing {foreign[:5]}")
    _check_same_logits(base, grown)  # (leaves the grown policy in eval mode, as from_pretrained does)
    return grown


def _check_same_logits(base: Policy, grown: Policy) -> None:
    inputs = base.preprocess(base.preprocessor.example_observation(batch=2))
    base.model.eval()
    grown.model.eval()
    with torch.no_grad():
        same = torch.equal(base.forward(inputs), grown.forward(inputs))
    if not same:
        raise GrowError(
            "the grown policy's logits differ from the checkpoint's: its new modules are not identity"
        )
