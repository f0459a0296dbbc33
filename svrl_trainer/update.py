"""One GRPO policy update over a batch of rolled-out trajectories.

SimpleVLA-RL's schedule: one pass (ppo_epochs = 1) over the batch, split into a few mini-batches of
trajectories, one optimizer step each. Inside a mini-batch the chunk-steps are fed to the network in
micro-batches and backpropagated one by one; the per-token weights of `trajectory_token_weights`
make the accumulated gradient exactly the full mini-batch's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from svrl_policy.sampling import token_entropy, token_log_probs
from svrl_trainer.distributed import DistContext, gradient_sync, scalar
from svrl_trainer.grpo import GrpoLossConfig, loss_stats, token_policy_loss, trajectory_token_weights
from svrl_trainer.rollout import TrajectoryBatch


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
    for _ in range(config.ppo_epochs):
        order = rng.permutation(batch.size)
        for mini in np.array_split(order, min(config.mini_batches, batch.size)):
            if mini.size == 0:
                continue
            optimizer.zero_grad(set_to_none=True)
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
                totals["loss"] += float(loss.detach())
                m = torch.from_numpy(mask[rows, cols])
                s = loss_stats(loss, m, clipped, ratio.detach(), log_ratio.detach())
                totals["clip"] += s.clip_fraction * s.tokens
                totals["kl"] += s.approx_kl * s.tokens
                totals["ratio"] += s.ratio_mean * s.tokens
                totals["entropy"] += float((entropy * m).sum())
                totals["tokens"] += s.tokens
            grad_norm = torch.nn.utils.clip_grad_norm_(learner.parameters(), config.grad_clip)
            optimizer.step()
            grad_total += scalar(grad_norm)
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
    )
