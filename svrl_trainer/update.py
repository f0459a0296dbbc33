"""One GRPO policy update over a batch of rolled-out trajectories.

SimpleVLA-RL's schedule: one pass (ppo_epochs = 1) over the batch, split into a few mini-batches of
whole groups, one optimizer step each. Inside a mini-batch the chunk-steps are fed to the network in
micro-batches and backpropagated one by one; the per-token weights of `trajectory_token_weights`
make the accumulated gradient exactly the full mini-batch's.

Two guards, both for a batch that is not the paper's full 512 healthy trajectories:
- a batch with fewer valid groups than a full one takes proportionally fewer optimizer steps
  (`full_batch_groups`), so two kept groups do not get four steps of their own;
- a mini-batch whose loss or gradient is not finite is skipped (gradients dropped, weights and AdamW
  moments untouched) and the reason is returned and logged, instead of writing NaN into the weights.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from svrl_policy.sampling import token_entropy, token_log_probs
from svrl_trainer.distributed import DistContext, gradient_sync, scalar
from svrl_trainer.grpo import GrpoLossConfig, loss_stats, token_policy_loss, trajectory_token_weights
from svrl_trainer.rollout import TrajectoryBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpdateConfig:
    temperature: float = 1.6
    """the log-probs are of softmax(logits / T) with the rollout temperature (SimpleVLA-RL: 1.6)"""
    mini_batches: int = 4
    """optimizer steps per batch (SimpleVLA-RL: 512 trajectories / ppo_mini_batch 128 = 4)"""
    ppo_epochs: int = 1
    micro_batch_steps: int = 64
    """chunk-steps per forward/backward: bounds activation memory, not the result"""
    grad_clip: float = 1.0
    full_batch_groups: int | None = None
    """groups in a full batch (grpo.groups_per_batch): a batch with fewer groups takes proportionally
    fewer optimizer steps, each on a mini-batch of the nominal size. None: always `mini_batches` steps"""


@dataclass
class UpdateStats:
    loss: float
    clip_fraction: float
    approx_kl: float
    ratio_mean: float
    entropy: float
    grad_norm: float
    optimizer_steps: int
    trajectories: int
    skipped_steps: int = 0
    """mini-batches whose loss or gradient was not finite: no optimizer step was taken"""
    skip_reasons: list[str] = field(default_factory=list)


def num_mini_batches(groups: int, mini_batches: int, full_batch_groups: int | None) -> int:
    """Optimizer steps for a batch of `groups` groups.

    Without scaling: `mini_batches` (at most one per group). With it, the mini-batch keeps the size it
    has in a full batch (full_batch_groups / mini_batches groups), so the steps scale with the groups
    kept: with 64-group batches and 4 steps, 20 kept groups take 1 step, 40 take 2-3, 64 take 4.
    """
    cap = max(1, min(mini_batches, groups))
    if not full_batch_groups:
        return cap
    per_step = full_batch_groups / mini_batches
    return int(min(cap, max(1, round(groups / per_step))))


def group_mini_batches(
    group_ids: np.ndarray, mini_batches: int, rng: np.random.Generator, full_batch_groups: int | None = None
) -> list[np.ndarray]:
    """Trajectory indices of each mini-batch: groups shuffled, then split whole.

    A group's advantages are relative to its own members, so a mini-batch holding part of a group would
    step towards its successes (or away from its failures) without the other side of the comparison.
    """
    groups = np.unique(group_ids)
    order = groups[rng.permutation(len(groups))]
    parts = np.array_split(order, num_mini_batches(len(groups), mini_batches, full_batch_groups))
    return [np.concatenate([np.flatnonzero(group_ids == g) for g in part]) for part in parts if part.size]


def chunk_token_mask(batch: TrajectoryBatch, action_dim: int) -> np.ndarray:
    """bool[N, C, K*D]: the token's action step was executed in the environment."""
    _n, chunks, tokens_per_chunk = batch.tokens.shape
    chunk_length = tokens_per_chunk // action_dim
    step = np.arange(chunks)[:, None] * chunk_length + np.arange(tokens_per_chunk)[None, :] // action_dim
    return step[None] < batch.finish_steps[:, None, None]


def grpo_update(
    policy,
    optimizer: torch.optim.Optimizer,
    batch: TrajectoryBatch,
    advantages: np.ndarray,
    action_dim: int,
    config: UpdateConfig,
    loss_config: GrpoLossConfig,
    rng: np.random.Generator,
    *,
    learner: torch.nn.Module | None = None,
    dist: DistContext | None = None,
) -> UpdateStats:
    """Apply the clipped-surrogate update; `advantages` has one value per trajectory of `batch`.

    Data-parallel (`dist` with several ranks, `learner` the DDP/FSDP module): every rank holds the whole
    batch and draws the same permutation; rank r backpropagates trajectories r, r + W, ... of each
    mini-batch with the whole mini-batch's token weights, and pads to the same number of micro-batches
    as the busiest rank (FSDP gathers parameters in every forward, so all ranks must run as many).
    """
    learner = learner if learner is not None else policy
    dist = dist or DistContext()
    rank, world = dist.rank, dist.world_size
    policy.train()
    mask = chunk_token_mask(batch, action_dim)
    totals = {"loss": 0.0, "clip": 0.0, "kl": 0.0, "ratio": 0.0, "entropy": 0.0, "tokens": 0.0}
    grad_total = 0.0
    steps = 0
    skipped: list[str] = []
    for _ in range(config.ppo_epochs):
        minis = group_mini_batches(batch.group_ids, config.mini_batches, rng, config.full_batch_groups)
        for index, mini in enumerate(minis):
            optimizer.zero_grad(set_to_none=True)
            mini_totals = dict.fromkeys(totals, 0.0)
            weights = trajectory_token_weights(torch.from_numpy(mask[mini]))  # [n, C, T], whole mini-batch
            pairs_of = [
                [(j, c) for j in range(r, len(mini), world) for c in range(int(batch.num_chunks[mini[j]]))]
                for r in range(world)
            ]
            size = config.micro_batch_steps
            micro_batches = max(1, *(-(-len(p) // size) for p in pairs_of))
            for k in range(micro_batches):
                part = pairs_of[rank][k * size : (k + 1) * size]
                padding = not part  # this rank has no work left: a zero-weight pass keeps ranks in step
                if padding:
                    part = [next(p for p in pairs_of if p)[0]]
                rows = np.array([mini[j] for j, _ in part])
                cols = np.array([c for _, c in part])
                obs = {
                    "images": {cam: frames[rows, cols] for cam, frames in batch.images.items()},
                    "proprio": batch.proprio[rows, cols],
                    "instruction": [batch.instructions[r] for r in rows],
                }
                tokens = torch.from_numpy(batch.tokens[rows, cols])
                with gradient_sync(learner, enabled=k == micro_batches - 1):
                    logits = learner(policy.preprocess(obs))
                    new_log_probs = token_log_probs(
                        logits, tokens.to(logits.device), config.temperature
                    ).cpu()
                    entropy = token_entropy(logits.detach(), config.temperature).cpu()
                    old = torch.from_numpy(batch.old_log_probs[rows, cols])
                    adv = torch.from_numpy(advantages[rows].astype(np.float32)).unsqueeze(1).expand_as(old)
                    w = weights[[j for j, _ in part], cols] * (0.0 if padding else 1.0)
                    pg, clipped, ratio, log_ratio = token_policy_loss(new_log_probs, old, adv, loss_config)
                    loss = (pg * w).sum()
                    if loss_config.entropy_coef:
                        loss = loss - loss_config.entropy_coef * (entropy * w).sum()
                    # DDP and FSDP average gradients over ranks; the batch's gradient is their sum
                    (loss * world).backward()
                if padding:
                    continue
                mini_totals["loss"] += float(loss.detach())
                m = torch.from_numpy(mask[rows, cols])
                s = loss_stats(loss, m, clipped, ratio.detach(), log_ratio.detach())
                mini_totals["clip"] += s.clip_fraction * s.tokens
                mini_totals["kl"] += s.approx_kl * s.tokens
                mini_totals["ratio"] += s.ratio_mean * s.tokens
                mini_totals["entropy"] += float((entropy * m).sum())
                mini_totals["tokens"] += s.tokens
            grad_norm = scalar(torch.nn.utils.clip_grad_norm_(learner.parameters(), config.grad_clip))
            reason = non_finite_reason(mini_totals["loss"], grad_norm, dist)
            if reason:
                optimizer.zero_grad(set_to_none=True)  # the step is dropped; weights and moments untouched
                skipped.append(f"mini-batch {index + 1}/{len(minis)}: {reason}")
                log.warning("skipped an optimizer step: %s", skipped[-1])
                continue
            optimizer.step()
            for key, value in mini_totals.items():
                totals[key] += value
            grad_total += grad_norm
            steps += 1
    policy.eval()
    summed = dict(zip(totals, dist.all_sum(list(totals.values())), strict=True))
    tokens = max(summed["tokens"], 1.0)
    return UpdateStats(
        loss=summed["loss"] / max(steps, 1),
        clip_fraction=summed["clip"] / tokens,
        approx_kl=summed["kl"] / tokens,
        ratio_mean=summed["ratio"] / tokens,
        entropy=summed["entropy"] / tokens,
        grad_norm=grad_total / max(steps, 1),
        optimizer_steps=steps,
        trajectories=batch.size,
        skipped_steps=len(skipped),
        skip_reasons=skipped,
    )


def non_finite_reason(loss: float, grad_norm: float, dist: DistContext) -> str:
    """Why this mini-batch must not step ('' when it may). Ranks agree: the gradient norm is of the
    all-reduced gradient, and a non-finite loss on any rank is summed into every rank's verdict."""
    bad_loss = dist.all_sum([0.0 if math.isfinite(loss) else 1.0])[0] > 0
    parts = []
    if bad_loss:
        parts.append(f"loss is {loss}" if not math.isfinite(loss) else "loss is not finite on another rank")
    if not math.isfinite(grad_norm):
        parts.append(f"gradient norm is {grad_norm}")
    return ", ".join(parts)
