"""Policy.sample / Policy.log_probs: greedy determinism, seeded sampling, and tempered log-prob agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.policy.conftest import make_policy

PRESETS = ["debug", pytest.param("debug-hf", marks=pytest.mark.filterwarnings("ignore"))]


@pytest.fixture(params=PRESETS)
def policy(request):
    if request.param == "debug-hf":
        pytest.importorskip("transformers")
    return make_policy(request.param)


def test_sample_shapes_and_robot_units(policy) -> None:
    obs = policy.preprocessor.example_observation(batch=3)
    out = policy.sample(obs, temperature=1.6, generator=torch.Generator().manual_seed(0))
    K, D = policy.config.chunk_len, policy.config.action_dim
    assert out.tokens.shape == out.log_probs.shape == (3, K * D)
    assert out.tokens.dtype == torch.int64 and out.log_probs.dtype == torch.float32
    assert out.actions.shape == (3, K, D) and out.actions.dtype == np.float32
    assert (out.log_probs <= 0).all()
    np.testing.assert_array_equal(out.actions, policy.codec.decode_chunk(out.tokens.numpy()))
    assert set(np.unique(out.actions[..., -1])) <= {-1.0, 1.0}


def test_greedy_is_deterministic_and_is_the_argmax(policy) -> None:
    obs = policy.preprocessor.example_observation(batch=2)
    a, b = policy.sample(obs, 0.0), policy.sample(obs, 0.0)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.log_probs, b.log_probs)
    with torch.no_grad():
        logits = policy(policy.preprocess(obs))
    assert torch.equal(a.tokens, logits.argmax(-1))


def test_seeded_sampling_reproduces_and_differs_across_seeds(policy) -> None:
    obs = policy.preprocessor.example_observation(batch=2)
    s1 = policy.sample(obs, 1.6, generator=torch.Generator().manual_seed(7))
    s2 = policy.sample(obs, 1.6, generator=torch.Generator().manual_seed(7))
    s3 = policy.sample(obs, 1.6, generator=torch.Generator().manual_seed(8))
    assert torch.equal(s1.tokens, s2.tokens)
    assert not torch.equal(s1.tokens, s3.tokens)


@pytest.mark.parametrize("temperature", [0.0, 1.0, 1.6])
def test_log_probs_match_sampling_for_the_same_tokens_and_temperature(policy, temperature: float) -> None:
    obs = policy.preprocessor.example_observation(batch=4)
    out = policy.sample(obs, temperature, generator=torch.Generator().manual_seed(0))
    recomputed = policy.log_probs(obs, out.tokens, temperature)
    torch.testing.assert_close(recomputed, out.log_probs, rtol=0, atol=1e-5)


def test_log_probs_are_tempered_differentiable_and_report_entropy(policy) -> None:
    obs = policy.preprocessor.example_observation(batch=2)
    tokens = policy.sample(obs, 1.0, generator=torch.Generator().manual_seed(0)).tokens
    policy.train()
    stats = policy.evaluate(obs, tokens, 1.6)
    stats.log_probs.mean().backward()
    grads = [p.grad for p in policy.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert not torch.allclose(policy.log_probs(obs, tokens, 1.0), policy.log_probs(obs, tokens, 1.6))
    n_bins = policy.config.num_bins
    assert ((stats.entropy > 0) & (stats.entropy <= np.log(n_bins) + 1e-4)).all()


def test_log_probs_accept_precomputed_inputs(policy) -> None:
    obs = policy.preprocessor.example_observation(batch=2)
    inputs = policy.preprocess(obs)
    out = policy.sample(inputs, 1.6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        policy.log_probs(inputs, out.tokens, 1.6), policy.log_probs(obs, out.tokens, 1.6)
    )


def test_a_sample_does_not_depend_on_its_batch_mates(policy) -> None:
    obs = policy.preprocessor.example_observation(batch=3)
    obs["instruction"] = ["a", "a much longer instruction than the others", "b"]
    full = policy.sample(obs, 0.0)
    first = {"images": {k: v[:1] for k, v in obs["images"].items()}, "proprio": obs["proprio"][:1],
             "instruction": obs["instruction"][:1]}  # fmt: skip
    torch.testing.assert_close(policy.sample(first, 0.0).log_probs, full.log_probs[:1], rtol=0, atol=1e-5)
