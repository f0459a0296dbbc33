"""Rollouts on Ray actors are the in-process rollouts, moved: same seeds, same trajectories, bit for bit,
and after a weight broadcast the actors act with the learner's new weights (local 2-CPU Ray cluster)."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch

from svrl_trainer.catalog import make_env, resolve_tasks
from svrl_trainer.config import load_train_config
from svrl_trainer.rollout import EpisodeSpec, TrajectoryBatch
from svrl_trainer.rollout_engine import LocalRollout, RayRollout
from svrl_trainer.train import GrpoTrainer

from .test_grpo_trainer import _config


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _specs(count: int) -> list[EpisodeSpec]:
    tasks = resolve_tasks("toy", ["toy"])
    return [EpisodeSpec(tasks[i % 4].name, tasks[i % 4].train_states[i], i // 4) for i in range(count)]


def _same(a: TrajectoryBatch, b: TrajectoryBatch) -> bool:
    return (
        a.specs == b.specs
        and all(np.array_equal(a.images[c], b.images[c]) for c in a.images)
        and all(
            np.array_equal(getattr(a, f), getattr(b, f))
            for f in ("proprio", "tokens", "old_log_probs", "num_chunks", "finish_steps", "success")
        )
    )


def test_ray_actors_roll_out_exactly_what_the_learner_would(ray_cluster, policy) -> None:
    specs = _specs(20)  # 3 waves of 8 over 2 actors, the last one partial
    local = LocalRollout(policy, make_env("toy", 8, image_size=32))
    remote = RayRollout(policy, backend="toy", num_actors=2, num_envs=8, image_size=32)
    try:
        kwargs = {"temperature": 1.0, "max_chunks": 2}
        reference = local.collect(specs, seed=123, **kwargs)
        waves_done: list[int] = []
        on_ray = remote.collect(specs, seed=123, on_wave_done=waves_done.append, **kwargs)
        assert _same(reference, on_ray)
        assert sorted(waves_done) == [4, 8, 8]
        assert not _same(reference, local.collect(specs, seed=124, **kwargs))  # the seed matters

        with torch.no_grad():  # the learner's weights move (as an update would move them)...
            for p in policy.model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        moved = local.collect(specs, seed=123, **kwargs)
        assert not _same(moved, reference)
        assert _same(remote.collect(specs, seed=123, **kwargs), reference)  # ...actors still hold the old
        remote.sync(policy)
        assert _same(remote.collect(specs, seed=123, **kwargs), moved)  # ...until the broadcast
    finally:
        local.close()
        remote.close()


def test_grpo_on_ray_matches_the_in_process_run(ray_cluster, tmp_path, policy) -> None:
    """Three GRPO steps with rollouts on 2 Ray actors equal, metric for metric, the in-process run."""
    init = tmp_path / "init"
    policy.save_pretrained(init)

    def run(name: str, backend: str) -> list[dict]:
        path = _config(tmp_path / name, init, eval={"every": 3, "episodes_per_task": 4})
        trainer = GrpoTrainer(load_train_config(path, {"rollout.backend": backend}))
        try:
            return trainer.train()
        finally:
            trainer.close()

    def outcomes(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in history]

    local, on_ray = run("local", "local"), run("ray", "ray")
    assert [m["step"] for m in on_ray] == [0, 1, 2, 3]
    assert any(m.get("train/updated") for m in local)  # the weights did change between rollouts
    assert outcomes(on_ray) == outcomes(local)


def test_more_actors_than_cpus_is_an_error_not_a_hang(ray_cluster, policy) -> None:
    with pytest.raises(RuntimeError, match="num_actors=3 but the Ray cluster has 2 CPUs"):
        RayRollout(policy, backend="toy", num_actors=3, num_envs=8, image_size=32)
