"""Roll out a policy in a vectorised environment and keep exactly what the GRPO loss needs.

Per policy step (= one action chunk) a trajectory stores the observation the chunk was computed from
(uint8 frames, proprio), the sampled tokens and their rollout-time log-probs. Nothing float-valued
per pixel is ever stored: a 128x128 two-camera step costs ~98 KB here, against ~1.2 MB of float32
pixel tensors per step in SimpleVLA-RL. Rendering happens only at chunk boundaries, inside
`step_chunk`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class EpisodeSpec:
    """One trajectory to roll out: a task, one of its initial states, and its GRPO group."""

    task: str
    init_state: Any
    group_id: int = 0


class ChunkedVectorEnv(Protocol):
    num_envs: int

    def reset(self, episodes: Sequence[tuple[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]: ...

    def step_chunk(
        self, actions: np.ndarray, active: np.ndarray
    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]: ...


class ChunkPolicy(Protocol):
    def sample(
        self, obs: dict[str, Any], temperature: float, *, generator: torch.Generator | None = None
    ): ...


@dataclass
class TrajectoryBatch:
    """N trajectories of at most C chunks each; arrays are indexed [trajectory, chunk, ...]."""

    specs: list[EpisodeSpec]
    instructions: list[str]
    images: dict[str, np.ndarray]  # camera -> uint8[N, C, H, W, 3]
    proprio: np.ndarray  # float32[N, C, P]
    tokens: np.ndarray  # int64[N, C, K*D]
    old_log_probs: np.ndarray  # float32[N, C, K*D]
    num_chunks: np.ndarray  # int64[N]: chunks computed (and at least partly executed)
    finish_steps: np.ndarray  # int64[N]: env steps executed
    success: np.ndarray  # bool[N]
    worker_failed: np.ndarray  # bool[N]: the env's worker died mid-episode; the episode is *lost*
    # (its outcome is unknown, not a failure): training and evaluation drop it, see `completed`
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.specs)

    @property
    def group_ids(self) -> np.ndarray:
        return np.array([s.group_id for s in self.specs], dtype=np.int64)

    @property
    def rewards(self) -> np.ndarray:
        return self.success.astype(np.float32)

    @property
    def lost(self) -> int:
        """Episodes lost with a dead simulator worker (VectorEnv reports them `worker_failed`)."""
        return int(self.worker_failed.sum())

    def completed(self) -> TrajectoryBatch:
        """The episodes that ran to their end. A lost episode's 0 reward is not an outcome: fed to GRPO it
        would push down whatever actions the policy happened to take before the worker died."""
        return self if not self.worker_failed.any() else self.select(np.flatnonzero(~self.worker_failed))

    def stored_bytes_per_step(self) -> int:
        """Bytes kept for one policy step of one trajectory (frames, proprio, tokens, log-probs)."""
        per_step_arrays = [*self.images.values(), self.proprio, self.tokens, self.old_log_probs]
        return int(sum(a.itemsize * int(np.prod(a.shape[2:])) for a in per_step_arrays))

    def select(self, index: np.ndarray) -> TrajectoryBatch:
        index = np.asarray(index)
        return TrajectoryBatch(
            specs=[self.specs[i] for i in index],
            instructions=[self.instructions[i] for i in index],
            images={cam: frames[index] for cam, frames in self.images.items()},
            proprio=self.proprio[index],
            tokens=self.tokens[index],
            old_log_probs=self.old_log_probs[index],
            num_chunks=self.num_chunks[index],
            finish_steps=self.finish_steps[index],
            success=self.success[index],
            worker_failed=self.worker_failed[index],
            timing=dict(self.timing),
        )

    @staticmethod
    def concatenate(batches: Sequence[TrajectoryBatch]) -> TrajectoryBatch:
        chunks = max(b.tokens.shape[1] for b in batches)

        def pad(a: np.ndarray) -> np.ndarray:
            extra = chunks - a.shape[1]
            return a if extra == 0 else np.pad(a, [(0, 0), (0, extra)] + [(0, 0)] * (a.ndim - 2))

        timing: dict[str, float] = {}
        for b in batches:
            for k, v in b.timing.items():
                timing[k] = timing.get(k, 0.0) + v
        return TrajectoryBatch(
            specs=[s for b in batches for s in b.specs],
            instructions=[s for b in batches for s in b.instructions],
            images={cam: np.concatenate([pad(b.images[cam]) for b in batches]) for cam in batches[0].images},
            proprio=np.concatenate([pad(b.proprio) for b in batches]),
            tokens=np.concatenate([pad(b.tokens) for b in batches]),
            old_log_probs=np.concatenate([pad(b.old_log_probs) for b in batches]),
            num_chunks=np.concatenate([b.num_chunks for b in batches]),
            finish_steps=np.concatenate([b.finish_steps for b in batches]),
            success=np.concatenate([b.success for b in batches]),
            worker_failed=np.concatenate([b.worker_failed for b in batches]),
            timing=timing,
        )


def collect(
    policy: ChunkPolicy,
    env: ChunkedVectorEnv,
    specs: Sequence[EpisodeSpec],
    *,
    temperature: float,
    max_chunks: int,
    seed: int | None = None,
    keep_observations: bool = True,
    on_wave_done=None,
) -> TrajectoryBatch:
    """Roll out every spec, `env.num_envs` at a time; one batched policy forward per chunk.

    Wave i samples from its own generator seeded by (seed, i), so the same specs and seed give the
    same trajectories whichever process runs which wave (see `rollout_engine.RayRollout`).
    `keep_observations=False` (evaluation) stores no frames: only outcomes, tokens and log-probs.
    """
    results = []
    for index, wave in enumerate(split_waves(specs, env.num_envs)):
        results.append(
            collect_wave(policy, env, wave, index, seed, temperature, max_chunks, keep_observations)
        )
        if on_wave_done is not None:
            on_wave_done(len(wave))
    return TrajectoryBatch.concatenate(results)


def split_waves(specs: Sequence[EpisodeSpec], width: int) -> list[list[EpisodeSpec]]:
    return [list(specs[i : i + width]) for i in range(0, len(specs), width)]


def wave_generator(seed: int | None, wave_index: int) -> torch.Generator | None:
    """A sampling generator that depends only on the run's round seed and the wave's index."""
    if seed is None:
        return None
    state = np.random.SeedSequence([seed, wave_index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def collect_wave(
    policy: ChunkPolicy,
    env: ChunkedVectorEnv,
    specs: list[EpisodeSpec],
    wave_index: int,
    seed: int | None,
    temperature: float,
    max_chunks: int,
    keep_observations: bool = True,
) -> TrajectoryBatch:
    """One wave of at most `env.num_envs` episodes, sampled from `wave_generator(seed, wave_index)`."""
    return _collect_wave(
        policy, env, specs, temperature, max_chunks, wave_generator(seed, wave_index), keep_observations
    )


def _collect_wave(
    policy: ChunkPolicy,
    env: ChunkedVectorEnv,
    specs: list[EpisodeSpec],
    temperature: float,
    max_chunks: int,
    generator: torch.Generator | None,
    keep_observations: bool,
) -> TrajectoryBatch:
    n = len(specs)
    timing = {"sim_s": 0.0, "policy_s": 0.0, "bookkeeping_s": 0.0}
    t0 = time.perf_counter()
    episodes = [(s.task, s.init_state) for s in specs]
    # A wave smaller than the env's width fills the rest with copies of its first episode, inactive.
    padded = episodes + [episodes[0]] * (env.num_envs - n)
    obs, _infos = env.reset(padded)
    timing["sim_s"] += time.perf_counter() - t0
    instructions = list(obs["instruction"][:n])

    cams = sorted(obs["images"]) if keep_observations else []
    stored_chunks = max_chunks if keep_observations else 0
    images = {c: np.zeros((n, stored_chunks, *obs["images"][c].shape[1:]), np.uint8) for c in cams}
    proprio = np.zeros((n, stored_chunks, obs["proprio"].shape[1]), np.float32)
    tokens = log_probs = None
    num_chunks = np.zeros(n, np.int64)
    finish_steps = np.zeros(n, np.int64)
    success = np.zeros(n, bool)
    worker_failed = np.zeros(n, bool)
    active = np.zeros(env.num_envs, bool)
    active[:n] = True

    for chunk in range(max_chunks):
        if not active.any():
            break
        t = time.perf_counter()
        if keep_observations:
            for c in cams:
                images[c][active[:n], chunk] = obs["images"][c][:n][active[:n]]
            proprio[active[:n], chunk] = obs["proprio"][:n][active[:n]]
        timing["bookkeeping_s"] += time.perf_counter() - t

        t = time.perf_counter()
        out = policy.sample(obs, temperature, generator=generator)
        timing["policy_s"] += time.perf_counter() - t

        t = time.perf_counter()
        if tokens is None:
            tokens = np.zeros((n, max_chunks, out.tokens.shape[1]), np.int64)
            log_probs = np.zeros((n, max_chunks, out.tokens.shape[1]), np.float32)
        live = active[:n]
        tokens[live, chunk] = out.tokens.numpy()[:n][live]
        log_probs[live, chunk] = out.log_probs.numpy()[:n][live]
        num_chunks[live] += 1
        timing["bookkeeping_s"] += time.perf_counter() - t

        t = time.perf_counter()
        obs, rewards, terminated, truncated, infos = env.step_chunk(out.actions, active)
        timing["sim_s"] += time.perf_counter() - t

        for i in np.flatnonzero(live):
            info = infos[i]
            finish_steps[i] += int(info.get("executed_steps", 0))
            failed = bool(info.get("worker_failed", False))
            worker_failed[i] |= failed
            success[i] |= bool(rewards[i] > 0) and not failed
            if terminated[i] or truncated[i] or failed:
                active[i] = False
    if tokens is None:  # max_chunks == 0
        tokens = np.zeros((n, max_chunks, 0), np.int64)
        log_probs = np.zeros((n, max_chunks, 0), np.float32)
    return TrajectoryBatch(
        specs=specs,
        instructions=instructions,
        images=images,
        proprio=proprio,
        tokens=tokens,
        old_log_probs=log_probs,
        num_chunks=num_chunks,
        finish_steps=finish_steps,
        success=success,
        worker_failed=worker_failed,
        timing=timing,
    )


def max_chunks_for(max_steps: int, chunk_length: int) -> int:
    return math.ceil(max_steps / chunk_length)
