"""Where rollouts run: in the learner's process, or on Ray actors that each own an env and a policy copy.

Both engines split the episodes into the same waves of `num_envs` and seed wave i from (seed, i), so
for the same seed they produce the same trajectories, bit for bit; the Ray engine only changes which
process steps which wave. After every update the learner calls `sync(policy)`: a no-op in process,
a weight broadcast (one `ray.put`, every actor loads it) on Ray.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from svrl_trainer.catalog import make_env
from svrl_trainer.rollout import EpisodeSpec, TrajectoryBatch, collect, collect_wave, split_waves
from svrl_trainer.rollout_policy import make_rollout_policy

log = logging.getLogger(__name__)


class RolloutEngine(Protocol):
    num_envs: int
    """episodes per wave (one batched policy forward per chunk covers a wave)"""

    def collect(
        self,
        specs: Sequence[EpisodeSpec],
        *,
        temperature: float,
        max_chunks: int,
        seed: int | None = None,
        keep_observations: bool = True,
        on_wave_done: Callable[[int], None] | None = None,
    ) -> TrajectoryBatch: ...

    def sync(self, policy: Any) -> None: ...

    def close(self) -> None: ...

    @property
    def recomputes_log_probs(self) -> bool:
        """the learner must recompute old log-probs in torch before an update (rollout_policy.py)"""
        ...


class LocalRollout:
    """One VectorEnv stepped in the learner's process, by the learner's policy in torch (`runtime`
    'torch': the same object, nothing to synchronise) or by an ONNX Runtime copy ('onnx': re-exported
    by every `sync`; the learner then recomputes old log-probs, see `recomputes_log_probs`)."""

    def __init__(
        self,
        policy: Any,
        env: Any,
        *,
        runtime: str = "torch",
        pipeline: bool = False,
        threads: int | None = 1,
    ) -> None:
        self.policy = policy
        self.env = env
        self.num_envs = env.num_envs
        self.runtime = runtime
        self.pipeline = pipeline
        self.rollout_policy = make_rollout_policy(runtime, policy, threads=threads)

    @property
    def recomputes_log_probs(self) -> bool:
        """True when the rollout's log-probs are not the learner's torch ones (see rollout_policy.py)."""
        return self.runtime != "torch"

    def collect(
        self, specs, *, temperature, max_chunks, seed=None, keep_observations=True, on_wave_done=None
    ):
        return collect(
            self.rollout_policy, self.env, specs, temperature=temperature, max_chunks=max_chunks, seed=seed,
            keep_observations=keep_observations, on_wave_done=on_wave_done, pipeline=self.pipeline,
        )  # fmt: skip

    def sync(self, policy: Any) -> None:
        self.rollout_policy.refresh(policy)

    def close(self) -> None:
        try:
            self.env.close()
        finally:
            self.rollout_policy.close()


class RolloutActor:
    """Runs inside a Ray actor: a policy rebuilt from checkpoint files, and its own vectorised env."""

    def __init__(
        self, policy_files: dict[str, bytes], backend: str, num_envs: int, image_size: int,
        env_workers: int | None, threads: int, pipeline: bool = False, env_options: dict | None = None,
    ) -> None:  # fmt: skip
        from svrl_policy.policy import Policy

        self.pipeline = pipeline
        torch.set_num_threads(threads)
        self._dir = tempfile.TemporaryDirectory(prefix="svrl-actor-")
        for name, data in policy_files.items():
            path = Path(self._dir.name) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.policy = Policy.from_pretrained(self._dir.name)
        self.policy.eval()
        self.env = make_env(
            backend, num_envs, image_size=image_size, num_workers=env_workers, **(env_options or {})
        )

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.policy.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})

    def collect_waves(
        self, waves: list[tuple[int, list[EpisodeSpec]]], seed: int | None, temperature: float,
        max_chunks: int, keep_observations: bool,
    ) -> list[tuple[int, TrajectoryBatch]]:  # fmt: skip
        return [
            (index, collect_wave(self.policy, self.env, specs, index, seed, temperature, max_chunks, keep_observations,
                                 pipeline=self.pipeline))
            for index, specs in waves
        ]  # fmt: skip

    def close(self) -> None:
        self.env.close()
        self._dir.cleanup()


class RayRollout:
    """`num_actors` Ray actors, each with a VectorEnv of `num_envs` envs and a copy of the policy.

    Waves go to actors round-robin and come back in wave order. Connects to `address` (a running
    cluster) or starts a local one sized to this machine.
    """

    def __init__(
        self, policy: Any, *, backend: str, num_actors: int, num_envs: int, image_size: int,
        env_workers: int | None = 1, threads: int = 1, address: str | None = None, pipeline: bool = False,
        env_options: dict | None = None,
    ) -> None:  # fmt: skip
        try:
            import ray
        except ImportError as error:
            raise RuntimeError(
                "rollout.backend=ray needs Ray: pip install 'svrl[dist]' (or set rollout.backend=local)"
            ) from error
        if num_actors < 1:
            raise ValueError(f"rollout.num_actors={num_actors}: need at least one actor")
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        cpus = ray.cluster_resources().get("CPU", 0)
        if num_actors > cpus:  # Ray would wait forever for CPUs that do not exist
            raise RuntimeError(f"rollout.num_actors={num_actors} but the Ray cluster has {cpus:g} CPUs")
        self.num_envs = num_envs
        remote = ray.remote(num_cpus=1)(RolloutActor)
        files = policy_files(policy)
        self.actors = [
            remote.remote(files, backend, num_envs, image_size, env_workers, threads, pipeline, env_options)
            for _ in range(num_actors)
        ]
        log.info("Ray rollout: %d actors x %d envs", num_actors, num_envs)

    def collect(
        self, specs, *, temperature, max_chunks, seed=None, keep_observations=True, on_wave_done=None
    ):
        waves = list(enumerate(split_waves(specs, self.num_envs)))
        per_actor = [waves[i :: len(self.actors)] for i in range(len(self.actors))]
        pending = [
            actor.collect_waves.remote(assigned, seed, temperature, max_chunks, keep_observations)
            for actor, assigned in zip(self.actors, per_actor, strict=True)
            if assigned
        ]
        results: dict[int, TrajectoryBatch] = {}
        while pending:
            done, pending = self._ray.wait(pending, num_returns=1)
            for index, batch in self._ray.get(done[0]):
                results[index] = batch
                if on_wave_done is not None:
                    on_wave_done(batch.size)
        return TrajectoryBatch.concatenate([results[i] for i in range(len(waves))])

    recomputes_log_probs = False  # actors sample in torch: their log-probs are the learner's

    def sync(self, policy: Any) -> None:
        """Broadcast the learner's weights: one object in Ray's store, loaded by every actor."""
        weights = {k: v.detach().cpu().numpy() for k, v in policy.model.state_dict().items()}
        ref = self._ray.put(weights)
        self._ray.get([actor.load_weights.remote(ref) for actor in self.actors])

    def close(self) -> None:
        try:
            self._ray.get([actor.close.remote() for actor in self.actors])
        finally:
            for actor in self.actors:
                self._ray.kill(actor)
            self.actors = []


def policy_files(policy: Any) -> dict[str, bytes]:
    """The policy as checkpoint files in memory: actors load it through the same verified format."""
    with tempfile.TemporaryDirectory(prefix="svrl-policy-") as tmp:
        policy.save_pretrained(Path(tmp) / "p")
        root = Path(tmp) / "p"
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make_rollout_engine(
    engine: str, policy: Any, *, backend: str, num_envs: int, image_size: int, num_workers: int | None,
    num_actors: int = 2, threads: int = 1, address: str | None = None, runtime: str = "torch",
    pipeline: bool = False, env_options: dict | None = None,
) -> RolloutEngine:  # fmt: skip
    """`engine`: 'local' (in process) or 'ray'. Under Ray, `num_workers` is sim processes per actor.

    `runtime`: 'torch' or 'onnx' (local only); `pipeline`: overlap one half's simulation with the other
    half's policy forward (see `rollout.collect_wave`); `env_options`: the env backend's own settings
    (`env.options`)."""
    if engine == "local":
        env = make_env(
            backend, num_envs, image_size=image_size, num_workers=num_workers, **(env_options or {})
        )
        try:
            return LocalRollout(policy, env, runtime=runtime, pipeline=pipeline, threads=threads)
        except BaseException:
            env.close()
            raise
    if engine == "ray":
        if runtime != "torch":
            raise ValueError(
                f"rollout.runtime={runtime!r} runs with rollout.backend=local only; Ray actors use torch"
            )
        return RayRollout(
            policy, backend=backend, num_actors=num_actors, num_envs=num_envs, image_size=image_size,
            env_workers=num_workers or 1, threads=threads, address=address, pipeline=pipeline,
            env_options=env_options,
        )  # fmt: skip
    raise ValueError(f"rollout.backend={engine!r}: choose 'local' or 'ray'")
