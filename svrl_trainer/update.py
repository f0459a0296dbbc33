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
) -> UpdateStats:
    """Apply the clipped-surrogate update; `advantages` has one value per trajectory of `batch`."""
    policy.train()
    mask = chunk_token_mask(batch, action_dim)
    totals = {"loss": 0.0, "clip": 0.0, "kl": 0.0, "ratio": 0.0, "entropy": 0.0, "grad": 0.0, "tokens": 0}
    steps = 0
    for _ in range(config.ppo_epochs):
        order = rng.permutation(batch.size)
        for mini in np.array_split(order, min(config.mini_batches, batch.size)):
            if mini.size == 0:
                continue
            optimizer.zero_grad(set_to_none=True)
            weights = trajectory_token_weights(torch.from_numpy(mask[mini]))  # [n, C, T]
            pairs = [(j, c) for j, i in enumerate(mini) for c in range(int(batch.num_chunks[i]))]
            mini_loss = 0.0
            for start in range(0, len(pairs), config.micro_batch_steps):
                part = pairs[start : start + config.micro_batch_steps]
                rows = np.array([mini[j] for j, _ in part])
                cols = np.array([c for _, c in part])
                obs = {
                    "images": {cam: frames[rows, cols] for cam, frames in batch.images.items()},
                    "proprio": batch.proprio[rows, cols],
                    "instruction": [batch.instructions[r] for r in rows],
                }
                tokens = torch.from_numpy(batch.tokens[rows, cols])
                stats = policy.evaluate(obs, tokens, config.temperature)
                old = torch.from_numpy(batch.old_log_probs[rows, cols])
                adv = torch.from_numpy(advantages[rows].astype(np.float32)).unsqueeze(1).expand_as(old)
                w = weights[[j for j, _ in part], cols]
                pg, clipped, ratio, log_ratio = token_policy_loss(stats.log_probs, old, adv, loss_config)
                loss = (pg * w).sum()
                if loss_config.entropy_coef:
                    loss = loss - loss_config.entropy_coef * (stats.entropy * w).sum()
                loss.backward()
                mini_loss += float(loss.detach())
                m = torch.from_numpy(mask[rows, cols])
                s = loss_stats(loss, m, clipped, ratio.detach(), log_ratio.detach())
                totals["clip"] += s.clip_fraction * s.tokens
                totals["kl"] += s.approx_kl * s.tokens
                totals["ratio"] += s.ratio_mean * s.tokens
                totals["entropy"] += float((stats.entropy * m).sum())
                totals["tokens"] += s.tokens
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
            optimizer.step()
            totals["loss"] += mini_loss
            totals["grad"] += float(grad_norm)
            steps += 1
    policy.eval()
    tokens = max(totals["tokens"], 1)
    return UpdateStats(
        loss=totals["loss"] / max(steps, 1),
        clip_fraction=totals["clip"] / tokens,
        approx_kl=totals["kl"] / tokens,
        ratio_mean=totals["ratio"] / tokens,
        entropy=totals["entropy"] / tokens,
        grad_norm=totals["grad"] / max(steps, 1),
        optimizer_steps=steps,
        trajectories=batch.size,
    )
