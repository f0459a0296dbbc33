"""svrl_policy: the VLA policy and everything the trainer and the robot must agree on.

Heavy modules (torch, transformers, onnxruntime) load lazily: `from svrl_policy import Policy` imports torch,
`import svrl_policy.features` does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "ActionCodec",
    "CheckpointError",
    "Policy",
    "PolicyConfig",
    "Preprocessor",
    "SampleOutput",
    "get_preset",
    "load_runtime",
]

_LAZY = {
    "ActionCodec": "svrl_policy.codec",
    "CheckpointError": "svrl_policy.checkpoint",
    "PolicyConfig": "svrl_policy.config",
    "get_preset": "svrl_policy.config",
    "Policy": "svrl_policy.policy",
    "SampleOutput": "svrl_policy.policy",
    "Preprocessor": "svrl_policy.preprocess",
    "load_runtime": "svrl_policy.runtime",
}

if TYPE_CHECKING:  # pragma: no cover
    from svrl_policy.checkpoint import CheckpointError
    from svrl_policy.codec import ActionCodec
    from svrl_policy.config import PolicyConfig, get_preset
    from svrl_policy.policy import Policy, SampleOutput
    from svrl_policy.preprocess import Preprocessor
    from svrl_policy.runtime import load_runtime


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'svrl_policy' has no attribute {name!r}")
