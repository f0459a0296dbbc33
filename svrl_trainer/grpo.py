"""GRPO as SimpleVLA-RL implements it, written to be read next to the paper.

One update, in order:
  1. every trajectory gets a 0/1 outcome reward (success of the task);
  2. groups (G rollouts from one initial state) whose success rate is outside
     [accuracy_lower, accuracy_upper] carry no signal and are dropped ("dynamic sampling");
  3. advantage = (R - mean_group) / (std_group + eps), the same value on every executed action token;
  4. per-token PPO ratio against the rollout-time log-probs, clipped asymmetrically to
     [1 - clip_low, 1 + clip_high] ("clip-higher");
  5. loss = mean over trajectories of (mean over that trajectory's executed tokens); no KL, no entropy.

Tokens of a trajectory are laid out chunk after chunk: token t of chunk c encodes action step
c * K + t // D, dimension t % D. A token is "executed" iff its action step < finish_step, which also
covers a last chunk that was cut short by success or the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GrpoLossConfig:
    clip_ratio_low: float = 0.2
    """ratio floor is 1 - clip_ratio_low (SimpleVLA-RL: 0.2)"""
    clip_ratio_high: float = 0.28
    """ratio ceiling is 1 + clip_ratio_high (SimpleVLA-RL: 0.28, DAPO's clip-higher)"""
    kl_coef: float = 0.0
    """SimpleVLA-RL trains without a KL term; kept as a key so the ablation can be run (needs ref log-probs)"""
    entropy_coef: float = 0.0
    """SimpleVLA-RL adds no entropy bonus; entropy is logged only"""

    def __post_init__(self) -> None:
        if not 0.0 <= self.clip_ratio_low < 1.0:
            raise ValueError(f"clip_ratio_low={self.clip_ratio_low} must be in [0, 1)")
        if self.clip_ratio_high < 0.0:
            raise ValueError(f"clip_ratio_high={self.clip_ratio_high} must be >= 0")


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """z-score of each trajectory's reward within its group (unbiased std, as torch.std in veRL).

    A group of one has no spread: its advantage is 0 rather than NaN.
    """
    rewards = rewards.to(torch.float64)
    advantages = torch.zeros_like(rewards)
    for gid in torch.unique(group_ids):
        members = group_ids == gid
        group = rewards[members]
        if group.numel() < 2:
            continue
        advantages[members] = (group - group.mean()) / (group.std(unbiased=True) + eps)
    return advantages.to(torch.float32)


def keep_groups(
    rewards: torch.Tensor, group_ids: torch.Tensor, accuracy_lower: float = 0.1, accuracy_upper: float = 0.9
) -> torch.Tensor:
    """Per-trajectory mask: True where the trajectory's group success rate is within the bounds.

    With G=8 and the defaults this keeps groups with 1 to 7 successes: all-fail and all-success groups
    have zero advantage everywhere and would only dilute the batch.
    """
    keep = torch.zeros_like(group_ids, dtype=torch.bool)
    for gid in torch.unique(group_ids):
        members = group_ids == gid
        rate = rewards[members].to(torch.float64).mean().item()
        keep[members] = accuracy_lower <= rate <= accuracy_upper
    return keep


def executed_token_mask(finish_steps: torch.Tensor, num_tokens: int, action_dim: int) -> torch.Tensor:
    """bool[N, num_tokens]: token j (flattened over chunks) belongs to an executed action step."""
    token_step = torch.arange(num_tokens, device=finish_steps.device) // action_dim
    return token_step.unsqueeze(0) < finish_steps.unsqueeze(1)


@dataclass
class LossStats:
    loss: float
    clip_fraction: float
    approx_kl: float
    ratio_mean: float
    tokens: int


def token_policy_loss(
    new_log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, config: GrpoLossConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate; `advantages` already broadcast to the tokens' shape.

    Returns (pg_loss, clipped, ratio, log_ratio), all shaped like the inputs.
    """
    log_ratio = new_log_probs - old_log_probs
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - config.clip_ratio_low, 1.0 + config.clip_ratio_high)
    return torch.maximum(pg_loss1, pg_loss2), pg_loss2 > pg_loss1, ratio, log_ratio


def trajectory_token_weights(mask: torch.Tensor) -> torch.Tensor:
    """Weights that turn a plain weighted sum of token losses into SimpleVLA-RL's aggregation.

    w = mask / (executed tokens of the trajectory) / (trajectories). Because the result is a sum,
    the tokens can be split into any micro-batches (each backpropagated on its own to bound memory)
    and the accumulated gradient is exactly that of the whole batch.
    """
    mask = mask.to(torch.float32)
    tokens_per_traj = mask.flatten(1).sum(dim=1).clamp(min=1.0)
    shape = (-1,) + (1,) * (mask.dim() - 1)
    return mask / tokens_per_traj.view(shape) / mask.shape[0]


def clipped_policy_loss(
    new_log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    config: GrpoLossConfig,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LossStats]:
    """PPO clipped surrogate, token-mean within each trajectory, then mean over trajectories.

    Shapes: log-probs, mask and entropy are [N, T] (T tokens of a trajectory, all chunks); advantages
    are [N] (one per trajectory) and broadcast to its tokens.
    """
    weights = trajectory_token_weights(mask).to(new_log_probs.dtype)
    adv = advantages.unsqueeze(1).to(new_log_probs.dtype).expand_as(new_log_probs)
    pg_loss, clipped, ratio, log_ratio = token_policy_loss(new_log_probs, old_log_probs, adv, config)
    loss = (pg_loss * weights).sum()
    if config.entropy_coef and entropy is not None:
        loss = loss - config.entropy_coef * (entropy * weights).sum()
    return loss, loss_stats(loss, mask, clipped, ratio, log_ratio)


def loss_stats(
    loss: torch.Tensor,
    mask: torch.Tensor,
    clipped: torch.Tensor,
    ratio: torch.Tensor,
    log_ratio: torch.Tensor,
) -> LossStats:
    with torch.no_grad():
        m = mask.to(ratio.dtype)
        total = m.sum().clamp(min=1.0)
        # low-variance KL estimator (ratio - 1) - log ratio, http://joschu.net/blog/kl-approx.html
        approx_kl = (((ratio - 1.0) - log_ratio) * m).sum() / total
        return LossStats(
            loss=float(loss.detach()),
            clip_fraction=float((clipped.to(m.dtype) * m).sum() / total),
            approx_kl=float(approx_kl),
            ratio_mean=float((ratio * m).sum() / total),
            tokens=int(m.sum().item()),
        )
