"""PyTorch eager runtime: the reference every other runtime is checked against."""

from __future__ import annotations

from pathlib import Path

import torch

from svrl_policy.checkpoint import PolicyComponents
from svrl_policy.policy import Policy
from svrl_policy.preprocess import ModelInputs
from svrl_policy.runtime.base import PolicyRuntime


class TorchRuntime(PolicyRuntime):
    backend = "torch"

    def __init__(self, policy: Policy) -> None:
        super().__init__(
            PolicyComponents(
                config=policy.config,
                codec=policy.codec,
                proprio_stats=policy.preprocessor.proprio_stats,
                tokenizer=policy.preprocessor.tokenizer,
            )
        )
        self.policy = policy.eval()

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str | Path, *, device: str = "cpu") -> TorchRuntime:
        return cls(Policy.from_pretrained(ckpt_dir, device=device))

    @property
    def name(self) -> str:
        return f"torch:{self.policy.device}"

    @torch.no_grad()
    def logits(self, inputs: ModelInputs) -> torch.Tensor:
        device = self.policy.device
        return self.policy({k: v.to(device) for k, v in inputs.items()})
