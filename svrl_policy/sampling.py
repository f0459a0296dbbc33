"""Token sampling and tempered log-probs: the single definition shared by every runtime and the RL loss.

SimpleVLA-RL samples each action token independently from softmax(logits / T) and optimises the SAME
tempered distribution (T = 1.6 at train time), so `sample_tokens` and `token_log_probs` must compute
log_softmax(logits / T) identically. Temperature 0 means greedy (argmax); its log-probs are those of the
untempered distribution (T = 1), and `token_log_probs(..., temperature=0)` follows the same rule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def tempered_log_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) in float32; T = 0 (greedy) uses T = 1."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    t = 1.0 if temperature == 0 else float(temperature)
    return F.log_softmax(logits.float() / t, dim=-1)


def sample_tokens(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits[B, T, V] -> (tokens int64[B, T], log_probs float32[B, T]); T = 0 is argmax."""
    logp = tempered_log_softmax(logits, temperature)  # (B, T, V)
    if temperature == 0:
        tokens = logp.argmax(dim=-1)
    else:
        B, T, V = logp.shape
        tokens = torch.multinomial(logp.exp().view(B * T, V), 1, generator=generator).view(B, T)
    return tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """Differentiable log pi_T(tokens): float32[B, T]."""
    logp = tempered_log_softmax(logits, temperature)
    return logp.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)


def token_entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Entropy of each tempered per-token distribution: float32[B, T] (for logging)."""
    logp = tempered_log_softmax(logits, temperature)
    return -(logp.exp() * logp).sum(-1)
