"""Network builders. Each architecture maps `ModelInputs` to logits[B, K*D, num_bins] in one pass."""

from __future__ import annotations

from torch import nn

from svrl_policy.config import PolicyConfig


def build_model(config: PolicyConfig) -> nn.Module:
    """A randomly initialised network for `config` (weights come from a checkpoint or training)."""
    if config.architecture == "tiny":
        from svrl_policy.models.tiny import TinyVLA

        return TinyVLA(config)
    if config.architecture == "hf_vla":
        from svrl_policy.models.hf_vla import HFVLA

        return HFVLA(config)
    raise ValueError(f"unknown architecture {config.architecture!r}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
