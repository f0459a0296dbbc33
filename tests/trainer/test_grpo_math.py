"""GRPO pieces against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from svrl_trainer.grpo import (
    GrpoLossConfig,
    clipped_policy_loss,
    executed_token_mask,
    group_advantages,
    keep_groups,
)


def test_advantage_one_success_in_eight() -> None:
    rewards = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])
    adv = group_advantages(rewards, torch.zeros(8, dtype=torch.long))
    std = math.sqrt(0.125)  # unbiased: (0.875^2 + 7 * 0.125^2) / 7 = 0.125
    assert adv[0].item() == pytest.approx(0.875 / (std + 1e-6), rel=1e-6)
    assert adv[1:].tolist() == pytest.approx([-0.125 / (std + 1e-6)] * 7, rel=1e-6)


def test_advantage_saturated_groups_are_zero_and_groups_are_independent() -> None:
    rewards = torch.tensor([1.0, 1, 1, 0, 0, 0, 1, 0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    adv = group_advantages(rewards, groups)
    assert adv[:6].tolist() == [0.0] * 6  # all-success, all-fail
    assert adv[6].item() == pytest.approx(0.5 / (math.sqrt(0.5) + 1e-6), rel=1e-6)
    assert adv[7].item() == pytest.approx(-adv[6].item(), rel=1e-6)


def test_single_rollout_group_has_zero_advantage_not_nan() -> None:
    assert group_advantages(torch.tensor([1.0]), torch.tensor([3])).tolist() == [0.0]


def test_dynamic_sampling_keeps_only_mixed_groups() -> None:
    group_of = torch.arange(4).repeat_interleave(8)
    rewards = torch.zeros(32)
    rewards[8:9] = 1  # group 1: 1/8 -> kept
    rewards[16:23] = 1  # group 2: 7/8 -> kept
    rewards[24:32] = 1  # group 3: 8/8 -> dropped; group 0: 0/8 -> dropped
    keep = keep_groups(rewards, group_of, 0.1, 0.9)
    assert keep.view(4, 8).all(dim=1).tolist() == [False, True, True, False]
    assert keep.view(4, 8).any(dim=1).tolist() == [False, True, True, False]


def test_executed_mask_handles_a_partial_last_chunk() -> None:
    # K=4 steps of D=2 dims per chunk, 2 chunks -> 16 tokens; success after 5 steps
    mask = executed_token_mask(torch.tensor([5, 8, 0]), num_tokens=16, action_dim=2)
    assert mask[0].tolist() == [True] * 10 + [False] * 6
    assert mask[1].all() and not mask[2].any()


def _loss(ratios: list[float], advantage: float):
    old = torch.log(torch.full((1, len(ratios)), 0.5))
    new = old + torch.log(torch.tensor([ratios]))
    return clipped_policy_loss(
        new, old, torch.tensor([advantage]), torch.ones(1, len(ratios), dtype=torch.bool), GrpoLossConfig()
    )


def test_clip_higher_bounds_positive_advantage() -> None:
    loss, stats = _loss([1.5, 0.5, 1.0], advantage=1.0)
    # per token: max(-1.5, -1.28) = -1.28 ; max(-0.5, -0.8) = -0.5 ; -1.0
    assert loss.item() == pytest.approx((-1.28 - 0.5 - 1.0) / 3, rel=1e-6)
    assert stats.clip_fraction == pytest.approx(1 / 3)


def test_clip_low_bounds_negative_advantage() -> None:
    loss, stats = _loss([1.5, 0.5, 1.0], advantage=-1.0)
    # per token: max(1.5, 1.28) = 1.5 ; max(0.5, 0.8) = 0.8 ; 1.0
    assert loss.item() == pytest.approx((1.5 + 0.8 + 1.0) / 3, rel=1e-6)
    assert stats.clip_fraction == pytest.approx(1 / 3)


def test_token_mean_per_trajectory_then_mean_over_trajectories() -> None:
    zeros = torch.zeros(2, 3)
    mask = torch.tensor([[True, False, False], [True, True, True]])
    loss, stats = clipped_policy_loss(zeros, zeros, torch.tensor([1.0, 0.0]), mask, GrpoLossConfig())
    assert loss.item() == pytest.approx(-0.5)  # a global token mean would give -0.25
    assert stats.tokens == 4 and stats.approx_kl == pytest.approx(0.0)


def test_gradient_flows_only_through_unclipped_executed_tokens() -> None:
    old = torch.zeros(1, 4)
    new = torch.tensor([[0.0, math.log(2.0), 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, True, False]])
    loss, _ = clipped_policy_loss(new, old, torch.tensor([1.0]), mask, GrpoLossConfig())
    loss.backward()
    grad = new.grad[0].tolist()
    assert grad[1] == 0.0  # ratio 2 > 1.28 with positive advantage: clipped, no gradient
    assert grad[3] == 0.0  # not executed
    assert grad[0] == pytest.approx(-1 / 3) and grad[2] == pytest.approx(-1 / 3)


def test_bad_clip_config_raises() -> None:
    with pytest.raises(ValueError, match="clip_ratio_low"):
        GrpoLossConfig(clip_ratio_low=1.5)


def test_micro_batched_backward_equals_whole_batch() -> None:
    """Splitting tokens into micro-batches (to bound memory) must not change the gradient."""
    from svrl_trainer.grpo import token_policy_loss, trajectory_token_weights

    gen = torch.Generator().manual_seed(0)
    old = torch.randn(4, 12, generator=gen)
    logits = (old + 0.3 * torch.randn(4, 12, generator=gen)).requires_grad_(True)
    adv = torch.tensor([1.0, -0.5, 0.2, -1.0])
    mask = executed_token_mask(torch.tensor([6, 2, 5, 1]), 12, action_dim=2)
    whole, _ = clipped_policy_loss(logits, old, adv, mask, GrpoLossConfig())
    (grad_whole,) = torch.autograd.grad(whole, logits)

    weights = trajectory_token_weights(mask)
    grad_parts = torch.zeros_like(logits)
    for cols in (slice(0, 5), slice(5, 12)):
        part = logits[:, cols].detach().requires_grad_(True)
        pg, *_ = token_policy_loss(
            part, old[:, cols], adv.unsqueeze(1).expand(-1, part.shape[1]), GrpoLossConfig()
        )
        (pg * weights[:, cols]).sum().backward()
        grad_parts[:, cols] = part.grad
    assert torch.allclose(grad_whole, grad_parts, atol=1e-7)
