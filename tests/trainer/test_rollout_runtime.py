"""Faster rollouts that change nothing the learner sees: the wave's own noise samples exactly what
`Policy.sample` did, a pipelined wave (one half simulated while the other half's policy runs) gives the
same trajectories bit for bit, ONNX Runtime rollouts sample torch's tokens, and a GRPO run on ONNX rollouts
keeps the PPO ratio of the first mini-batch at exactly 1 (the learner recomputes old log-probs in torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import svrl_trainer.update as update_module
from svrl_trainer.catalog import make_env, resolve_tasks
from svrl_trainer.config import TrainConfigError, load_train_config
from svrl_trainer.rollout import EpisodeSpec, TrajectoryBatch, collect, wave_generator
from svrl_trainer.rollout_engine import make_rollout_engine
from svrl_trainer.rollout_policy import (
    ChunkNoise,
    OnnxRolloutPolicy,
    TorchRolloutPolicy,
    recompute_old_log_probs,
    sample_from_logits,
)
from svrl_trainer.train import GrpoTrainer

FIELDS = ("proprio", "tokens", "old_log_probs", "num_chunks", "finish_steps", "success", "worker_failed")


def _specs(count: int) -> list[EpisodeSpec]:
    tasks = resolve_tasks("toy", ["toy"])
    return [EpisodeSpec(tasks[i % 4].name, tasks[i % 4].train_states[i], i // 4) for i in range(count)]


def _same(a: TrajectoryBatch, b: TrajectoryBatch) -> bool:
    return (
        a.specs == b.specs
        and a.instructions == b.instructions
        and all(np.array_equal(a.images[c], b.images[c]) for c in a.images)
        and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in FIELDS)
    )


def test_wave_noise_samples_what_policy_sample_samples(policy) -> None:
    """The full-batch path reproduces `Policy.sample` (torch.multinomial) draw for draw."""
    obs = policy.preprocessor.example_observation(batch=8, seed=2)
    for temperature in (1.0, 1.6, 0.0):
        reference = policy.sample(obs, temperature, generator=torch.Generator().manual_seed(5))
        logits = TorchRolloutPolicy(policy).chunk_logits(obs)
        noise = ChunkNoise(torch.Generator().manual_seed(5), 8)
        tokens, logp = sample_from_logits(logits, temperature, noise, 0, np.arange(8))
        assert torch.equal(tokens, reference.tokens) and torch.equal(logp, reference.log_probs)


def test_sequential_wave_matches_the_plain_policy_sample_loop(policy) -> None:
    """The rollout of one wave is the loop it always was: sample on every env, step the active ones."""
    specs, env = _specs(8), make_env("toy", 8, image_size=32)
    batch = collect(policy, env, specs, temperature=1.0, max_chunks=6, seed=11)
    generator = wave_generator(11, 0)
    obs, _ = env.reset([(s.task, s.init_state) for s in specs])
    active = np.ones(8, bool)
    counts = np.zeros(8, np.int64)
    for chunk in range(6):
        if not active.any():
            break
        out = policy.sample(obs, 1.0, generator=generator)
        live = active.copy()
        counts[live] += 1
        assert np.array_equal(batch.tokens[live, chunk], out.tokens.numpy()[live])
        assert np.array_equal(batch.old_log_probs[live, chunk], out.log_probs.numpy()[live])
        obs, _rewards, terminated, truncated, _ = env.step_chunk(out.actions, active)
        active &= ~(terminated | truncated)
    assert np.array_equal(batch.num_chunks, counts)


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_pipelined_waves_give_identical_trajectories(policy, temperature) -> None:
    specs = _specs(20)  # waves of 8, 8 and 4: the last one is padded, its second half is all padding
    env = make_env("toy", 8, image_size=32)
    kwargs = {"temperature": temperature, "max_chunks": 8, "seed": 123}
    plain = collect(policy, env, specs, **kwargs)
    piped = collect(policy, env, specs, pipeline=True, **kwargs)
    assert _same(plain, piped)
    assert plain.num_chunks.min() < plain.num_chunks.max()  # episodes ended at different chunks
    if temperature > 0:  # (greedy decoding does not depend on the seed)
        assert not _same(plain, collect(policy, env, specs, pipeline=True, **{**kwargs, "seed": 124}))


def test_onnx_rollouts_sample_torch_tokens_and_follow_updates(policy) -> None:
    """Same generator state -> the same tokens as torch; log-probs equal up to float rounding (not bit
    for bit: ONNX Runtime fuses the network's ops differently), hence the learner's recompute."""
    specs, env = _specs(16), make_env("toy", 8, image_size=32)
    kwargs = {"temperature": 1.0, "max_chunks": 8, "seed": 7}
    onnx = OnnxRolloutPolicy(policy)
    root = onnx._root
    try:
        reference = collect(policy, env, specs, **kwargs)
        on_onnx = collect(onnx, env, specs, pipeline=True, **kwargs)
        assert np.array_equal(on_onnx.tokens, reference.tokens)
        assert np.abs(on_onnx.old_log_probs - reference.old_log_probs).max() < 1e-5
        # torch's own log-probs again, up to torch's batch-size dependence (see the GRPO test below)
        exact, stats = recompute_old_log_probs(policy, on_onnx, 1.0, micro_batch_steps=5)
        assert np.abs(exact.old_log_probs - reference.old_log_probs).max() <= 1e-6
        assert stats.chunk_steps == int(on_onnx.num_chunks.sum()) and stats.max_abs_diff < 1e-5

        with torch.no_grad():  # an update moves the learner's weights...
            for p in policy.model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        moved = collect(policy, env, specs, **kwargs)
        onnx.refresh(policy)  # ...and the refresh exports them
        assert np.array_equal(collect(onnx, env, specs, **kwargs).tokens, moved.tokens)
        assert sorted(p.name for p in root.iterdir()) == ["v000002"]  # the previous export is gone
    finally:
        onnx.close()
    assert not root.exists()


def _config(tmp_path: Path, init: Path, **rollout) -> Path:
    raw = {
        "init_checkpoint": str(init),
        "out_dir": str(tmp_path / "run"),
        "total_steps": 2,
        "seed": 3,
        "env": {"backend": "toy", "tasks": ["toy"], "num_envs": 16, "image_size": 32},
        "rollout": rollout,
        "grpo": {"group_size": 8, "groups_per_batch": 4, "max_sampling_rounds": 2, "temperature": 1.0},
        # one mini-batch: every ratio the loss sees is computed before that step's optimizer step
        "optim": {"lr": 1e-3, "mini_batches": 1, "micro_batch_steps": 16},
        "eval": {"every": 0},
        "checkpoint": {"every": 0},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_grpo_on_onnx_rollouts_keeps_the_first_ratio_exactly_one(tmp_path, policy, monkeypatch) -> None:
    init = tmp_path / "init"
    policy.save_pretrained(init)
    ratios: list[torch.Tensor] = []
    loss = update_module.token_policy_loss

    def recording(new, old, adv, config):
        out = loss(new, old, adv, config)
        ratios.append(out[2].detach().clone())
        return out

    monkeypatch.setattr(update_module, "token_policy_loss", recording)
    trainer = GrpoTrainer(load_train_config(_config(tmp_path, init, runtime="onnx", pipeline=True)))
    try:
        history = trainer.train()
    finally:
        trainer.close()
    steps = [m for m in history if "train/updated" in m]
    assert len(steps) == 2 and all(m["train/updated"] == 1 for m in steps)
    for m in steps:
        assert np.isfinite(m["train/loss"]) and np.isfinite(m["train/grad_norm"])
        assert 0.0 <= m["rollout/runtime_log_prob_max_diff"] < 1e-4  # ONNX vs torch: rounding only
        assert m["time/recompute_log_probs_s"] > 0
    # Not bit-exact: torch's CPU kernels round differently for batches of 1-3 rows (a micro-batch's
    # remainder), ~2e-7 in a logit; the ONNX-vs-torch gap without the recompute is ~1e-6.
    worst = max(float((r - 1).abs().max()) for r in ratios)
    assert ratios and worst <= 1e-6, worst


def test_rollout_runtime_config_is_checked(tmp_path, policy) -> None:
    init = tmp_path / "init"
    with pytest.raises(TrainConfigError, match=r"rollout\.runtime"):
        load_train_config(_config(tmp_path, init, runtime="tensorrt"))
    with pytest.raises(TrainConfigError, match="backend=local"):
        load_train_config(_config(tmp_path, init, runtime="onnx", backend="ray"))
    with pytest.raises(ValueError, match="local only"):
        make_rollout_engine(
            "ray", policy, backend="toy", num_envs=4, image_size=32, num_workers=None, runtime="onnx"
        )


def test_pipelined_mujoco_wave_is_the_sequential_one() -> None:
    """Real simulator workers (2 processes, one per half): stepping one half in the background while
    the policy runs on the other changes nothing in the trajectories. (Halves of 4 envs: with 2-row
    halves torch's CPU kernels round the logits differently from the 4-row batch, ~2e-7, so log-probs
    would differ in the last bit; see docs/training.md.)"""
    from svrl_trainer.bench_rollout import _bench_policy

    class Args:
        ckpt, preset, image_size = None, "debug", 64

    torch.manual_seed(0)
    bench_policy = _bench_policy(Args())
    tasks = resolve_tasks("sim", ["spatial"])
    specs = [EpisodeSpec(tasks[i % 6].name, tasks[i % 6].train_states[i], i) for i in range(8)]
    env = make_env("sim", 8, image_size=64, num_workers=2)
    try:
        kwargs = {"temperature": 1.6, "max_chunks": 3, "seed": 5}
        plain = collect(bench_policy, env, specs, **kwargs)
        piped = collect(bench_policy, env, specs, pipeline=True, **kwargs)
    finally:
        env.close()
    assert _same(plain, piped) and int(plain.finish_steps.sum()) > 0
    assert piped.timing["sim_overlapped_s"] > 0  # the simulator did run while the policy ran
