"""`Policy`: network + preprocessor + action codec, the object the trainer and the robot both run.

    policy = Policy.from_pretrained("runs/base")
    out = policy.sample(obs_batch, temperature=1.6, generator=g)   # tokens, log-probs, actions [B, K, D]
    logp = policy.log_probs(obs_batch, out.tokens, temperature=1.6) # differentiable, equals out.log_probs

One forward pass per chunk (parallel decoding). Greedy at temperature 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from svrl_policy.checkpoint import (
    PolicyComponents,
    load_components,
    load_weights,
    save_checkpoint,
)
from svrl_policy.codec import ActionCodec
from svrl_policy.config import WORD_BUCKETS, PolicyConfig
from svrl_policy.models import build_model, count_parameters
from svrl_policy.models.tiny import AuxiliaryOutputs
from svrl_policy.preprocess import ModelInputs, Preprocessor, ProprioStats
from svrl_policy.sampling import sample_tokens, token_entropy, token_log_probs
from svrl_policy.tokenizer import ByteTokenizer, HFTokenizer, TextTokenizer, WordTokenizer

log = logging.getLogger(__name__)


@dataclass
class SampleOutput:
    tokens: torch.Tensor  # int64[B, K*D] (CPU), token index k*D + d, values in [0, num_bins)
    log_probs: torch.Tensor  # float32[B, K*D] (CPU), log pi_T(token) of the distribution sampled from
    actions: np.ndarray  # float32[B, K, D], robot units, ready for env.step / the arm controller


@dataclass
class TokenStats:
    log_probs: torch.Tensor  # float32[B, K*D], differentiable
    entropy: torch.Tensor  # float32[B, K*D], entropy of each tempered token distribution


def build_tokenizer(config: PolicyConfig, *, allow_download: bool = False) -> TextTokenizer:
    """A fresh tokenizer for a config (checkpoints store theirs; this is for new policies)."""
    if config.tokenizer == "byte":
        return ByteTokenizer(config.max_text_len)
    if config.tokenizer == "word":
        return WordTokenizer(config.max_text_len, WORD_BUCKETS)
    if not config.text_pretrained:
        raise ValueError(
            "tokenizer='hf' needs config.text_pretrained (a local directory holding the tokenizer)"
        )
    return HFTokenizer(config.text_pretrained, config.max_text_len, allow_download=allow_download)


def is_model_inputs(batch: Mapping[str, Any]) -> bool:
    return "pixel_values" in batch


class Policy(nn.Module):
    def __init__(
        self,
        config: PolicyConfig,
        codec: ActionCodec,
        *,
        proprio_stats: ProprioStats | None = None,
        tokenizer: TextTokenizer | None = None,
        model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.codec = codec
        self.preprocessor = Preprocessor(config, tokenizer or build_tokenizer(config), proprio_stats)
        self.model = model if model is not None else build_model(config)

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_components(cls, components: PolicyComponents) -> Policy:
        return cls(
            components.config,
            components.codec,
            proprio_stats=components.proprio_stats,
            tokenizer=components.tokenizer,
        )

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        verify: bool = True,
    ) -> Policy:
        """Load a checkpoint directory; raises a `CheckpointError` subclass saying what is wrong.

        `verify` checks every file's sha256 against manifest.json first. The network is built directly on
        `device` (not on "meta": transformers models keep non-persistent buffers such as RoPE frequencies
        that a checkpoint does not hold), then the weights are loaded strictly.
        """
        components = load_components(directory, verify=verify)
        with torch.device(device):
            policy = cls.from_components(components)
        load_weights(policy.model, directory)
        if dtype is not None:
            policy.model.to(dtype)
        policy.model.eval()
        log.info(
            "loaded policy %s (%s, %.2f M params) from %s",
            components.config.preset,
            components.config.architecture,
            count_parameters(policy.model) / 1e6,
            directory,
        )
        return policy

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        metadata: dict[str, Any] | None = None,
        extra: Callable[[Path], None] | None = None,
    ) -> Path:
        """Write a checkpoint atomically; `extra(tmp)` adds files in the same rename (see save_checkpoint)."""
        return save_checkpoint(
            directory,
            config=self.config,
            model=self.model,
            codec=self.codec,
            preprocessor=self.preprocessor,
            metadata=metadata,
            extra=extra,
        )

    # ------------------------------------------------------------------ running
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(
        self, obs: Mapping[str, Any], *, train: bool = False, generator: torch.Generator | None = None
    ) -> ModelInputs:
        inputs = self.preprocessor(obs, train=train, generator=generator)
        device = self.device
        return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}

    def forward(self, inputs: ModelInputs) -> torch.Tensor:
        """ModelInputs -> logits float32[B, K*D, num_bins]."""
        return self.model(**inputs).float()

    def forward_with_aux(self, inputs: ModelInputs) -> AuxiliaryOutputs:
        """Logits float32[B, K*D, num_bins], the auxiliary head's float32[B, aux_dim] and the text keypoints
        float32[B, C, K, 2] (each None where the model has none): training and diagnostics only; acting never
        computes the head (models/tiny.py)."""
        out = self.model(**inputs, with_aux=True)
        return AuxiliaryOutputs(*(t.float() if t is not None else None for t in out))

    def _inputs(self, batch: Mapping[str, Any]) -> ModelInputs:
        if is_model_inputs(batch):
            device = self.device
            return {k: v.to(device) for k, v in batch.items()}
        return self.preprocess(batch)

    @torch.no_grad()
    def sample(
        self,
        obs: Mapping[str, Any],
        temperature: float = 1.0,
        *,
        generator: torch.Generator | None = None,
    ) -> SampleOutput:
        """One action chunk per observation. `obs` may also be precomputed `ModelInputs`.

        Runs the network in eval mode (restoring the previous mode). Sampling happens on the generator's
        device when one is given (a CPU generator reproduces the same draws whatever device the model is on).
        """
        was_training = self.model.training
        self.model.eval()
        try:
            logits = self.forward(self._inputs(obs))
        finally:
            self.model.train(was_training)
        if generator is not None and generator.device != logits.device:
            logits = logits.to(generator.device)
        tokens, logp = sample_tokens(logits, temperature, generator)
        tokens, logp = tokens.cpu(), logp.cpu()
        return SampleOutput(tokens=tokens, log_probs=logp, actions=self.codec.decode_chunk(tokens.numpy()))

    def evaluate(self, obs: Mapping[str, Any], tokens: torch.Tensor, temperature: float) -> TokenStats:
        """Differentiable log-probs and entropies of `tokens` under softmax(logits / T), in the current mode."""
        logits = self.forward(self._inputs(obs))
        tokens = torch.as_tensor(tokens, device=logits.device)
        return TokenStats(
            log_probs=token_log_probs(logits, tokens, temperature),
            entropy=token_entropy(logits.detach(), temperature),
        )

    def log_probs(self, obs: Mapping[str, Any], tokens: torch.Tensor, temperature: float) -> torch.Tensor:
        """log pi_T(tokens | obs): float32[B, K*D], differentiable, tempered exactly as `sample` does."""
        logits = self.forward(self._inputs(obs))
        return token_log_probs(logits, torch.as_tensor(tokens, device=logits.device), temperature)

    def decode(self, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
        """tokens[B, K*D] -> actions float32[B, K, D] in robot units."""
        t = tokens.cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
        return self.codec.decode_chunk(t)

    def num_parameters(self) -> int:
        return count_parameters(self.model)

    def freeze_auxiliary_head(self) -> int:
        """Stop training the auxiliary head (models/tiny.py) and return how many tensors were frozen.

        Only pretraining with `aux_weight` gives it a gradient. Everywhere else (GRPO, a plain fine-tune) it
        would sit in the optimizer with none, which DDP refuses, and decay under AdamW for nothing."""
        params = getattr(self.model, "auxiliary_parameters", list)()
        for p in params:
            p.requires_grad_(False)
        return len(params)
