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
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from svrl_trainer.rollout_policy import ChunkNoise, RolloutPolicy, as_rollout_policy, sample_from_logits


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
    policy: Any,
    env: ChunkedVectorEnv,
    specs: Sequence[EpisodeSpec],
    *,
    temperature: float,
    max_chunks: int,
    seed: int | None = None,
    keep_observations: bool = True,
    on_wave_done: Callable[[int], None] | None = None,
    pipeline: bool = False,
) -> TrajectoryBatch:
    """Roll out every spec, `env.num_envs` at a time.

    `policy`: a `rollout_policy.RolloutPolicy` or an svrl `Policy` (run in torch).
    Wave i samples from its own generator seeded by (seed, i), so the same specs and seed give the
    same trajectories whichever process runs which wave (see `rollout_engine.RayRollout`), and whether
    or not the wave is `pipeline`d (see `collect_wave`).
    `keep_observations=False` (evaluation) stores no frames: only outcomes, tokens and log-probs.
    """
    results = []
    for index, wave in enumerate(split_waves(specs, env.num_envs)):
        results.append(
            collect_wave(
                policy, env, wave, index, seed, temperature, max_chunks, keep_observations, pipeline=pipeline
            )
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
    policy: Any,
    env: ChunkedVectorEnv,
    specs: list[EpisodeSpec],
    wave_index: int,
    seed: int | None,
    temperature: float,
    max_chunks: int,
    keep_observations: bool = True,
    *,
    pipeline: bool = False,
) -> TrajectoryBatch:
    """One wave of at most `env.num_envs` episodes, sampled from `wave_generator(seed, wave_index)`.

    `pipeline=False`: per chunk, one policy call on every env, then one simulator step of every env.
    `pipeline=True`: the envs are split into two contiguous halves (VectorEnv gives contiguous envs to the
    same worker, so each half steps on its own workers); while one half's chunk steps in the simulator
    workers (a background thread waits on them), the main thread runs the policy on the other half. The
    trajectories are the same as without the pipeline: noise is per env and chunk (`ChunkNoise`) and each
    env is simulated independently of the others.
    """
    wave = _Wave(
        as_rollout_policy(policy),
        env,
        specs,
        temperature,
        max_chunks,
        ChunkNoise(wave_generator(seed, wave_index), env.num_envs),
        keep_observations,
    )
    return wave.run_pipelined() if pipeline else wave.run_sequential()


class _Wave:
    """The state of one wave's rollout: what is stored per trajectory, and which envs still run.

    Env rows are the env's indices 0..num_envs-1; rows >= len(specs) pad a short wave with inactive copies
    of its first episode (they are reset, never stepped, and their policy outputs are never stored).
    """

    def __init__(
        self,
        policy: RolloutPolicy,
        env: ChunkedVectorEnv,
        specs: list[EpisodeSpec],
        temperature: float,
        max_chunks: int,
        noise: ChunkNoise,
        keep_observations: bool,
    ) -> None:
        self.policy, self.env, self.specs = policy, env, specs
        self.temperature, self.max_chunks, self.noise = temperature, max_chunks, noise
        self.keep_observations = keep_observations
        self.timing = {"sim_s": 0.0, "policy_s": 0.0, "bookkeeping_s": 0.0, "sim_overlapped_s": 0.0}
        n = self.n = len(specs)
        t0 = time.perf_counter()
        episodes = [(s.task, s.init_state) for s in specs]
        padded = episodes + [episodes[0]] * (env.num_envs - n)
        self.obs, _infos = env.reset(padded)
        self.timing["sim_s"] += time.perf_counter() - t0
        self.instructions = list(self.obs["instruction"][:n])
        self.cams = sorted(self.obs["images"]) if keep_observations else []
        stored = max_chunks if keep_observations else 0
        self.images = {
            c: np.zeros((n, stored, *self.obs["images"][c].shape[1:]), np.uint8) for c in self.cams
        }
        self.proprio = np.zeros((n, stored, self.obs["proprio"].shape[1]), np.float32)
        self.tokens: np.ndarray | None = None
        self.log_probs: np.ndarray | None = None
        self.num_chunks = np.zeros(n, np.int64)
        self.finish_steps = np.zeros(n, np.int64)
        self.success = np.zeros(n, bool)
        self.worker_failed = np.zeros(n, bool)
        self.active = np.zeros(env.num_envs, bool)
        self.active[:n] = True

    # ------------------------------------------------------------------ the two schedules
    def run_sequential(self) -> TrajectoryBatch:
        rows = np.arange(self.env.num_envs)
        for chunk in range(self.max_chunks):
            if not self.active.any():
                break
            actions, live = self.act(self.obs, rows, chunk)
            t = time.perf_counter()
            self.obs, *outcome = self.env.step_chunk(actions, self.active)
            self.timing["sim_s"] += time.perf_counter() - t
            self.record_step(live, *outcome)
        return self.result()

    def run_pipelined(self) -> TrajectoryBatch:
        """Turns (half, chunk) in the order A0, B0, A1, B1, ...: the policy on one half while the
        other half's previous chunk steps; at most one simulator call is in flight."""
        size = self.env.num_envs
        halves = [h for h in np.array_split(np.arange(size), 2) if h.size]
        latest = [self.obs for _ in halves]  # each half's rows are current in its own latest obs
        in_flight: tuple[int, Future, np.ndarray] | None = None

        def finish() -> None:
            nonlocal in_flight
            if in_flight is None:
                return
            half, future, live = in_flight
            t = time.perf_counter()
            (obs, *outcome), step_s = future.result()
            waited = time.perf_counter() - t
            self.timing["sim_s"] += waited
            self.timing["sim_overlapped_s"] += max(0.0, step_s - waited)
            latest[half] = obs
            self.record_step(live, *outcome)
            in_flight = None

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="svrl-sim-step") as pool:
            try:
                for chunk in range(self.max_chunks):
                    for h, rows in enumerate(halves):
                        if in_flight is not None and in_flight[0] == h:
                            finish()  # the other half had nothing to run meanwhile
                        mask = np.zeros(size, bool)
                        mask[rows] = self.active[rows]
                        if not mask.any():
                            continue
                        actions, live = self.act(latest[h], rows, chunk)
                        finish()
                        in_flight = (h, pool.submit(_timed_step, self.env, actions, mask), live)
                    if not self.active.any() and in_flight is None:
                        break
                finish()
            finally:
                if in_flight is not None:  # an error above: let the env call end before leaving
                    in_flight[1].exception()
        return self.result()

    # ------------------------------------------------------------------ one policy call, one step
    def act(self, obs: dict[str, Any], rows: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """Store `rows`' observations, run the policy on them; returns (actions[num_envs, K, D] with
        zeros outside `rows`, the indices of the episodes this chunk belongs to)."""
        n = self.n
        t = time.perf_counter()
        live = rows[(rows < n) & self.active[rows]]
        if self.keep_observations:
            for c in self.cams:
                self.images[c][live, chunk] = obs["images"][c][live]
            self.proprio[live, chunk] = obs["proprio"][live]
        sub = obs if rows.size == self.env.num_envs else _rows_of(obs, rows)
        self.timing["bookkeeping_s"] += time.perf_counter() - t

        t = time.perf_counter()
        logits = self.policy.chunk_logits(sub)
        tokens, logp = sample_from_logits(logits, self.temperature, self.noise, chunk, rows)
        chunk_actions = self.policy.decode(tokens.numpy())
        self.timing["policy_s"] += time.perf_counter() - t

        t = time.perf_counter()
        if self.tokens is None:
            self.tokens = np.zeros((n, self.max_chunks, tokens.shape[1]), np.int64)
            self.log_probs = np.zeros((n, self.max_chunks, tokens.shape[1]), np.float32)
        position = np.searchsorted(rows, live)
        self.tokens[live, chunk] = tokens.numpy()[position]
        self.log_probs[live, chunk] = logp.numpy()[position]  # type: ignore[index]
        self.num_chunks[live] += 1
        actions = np.zeros((self.env.num_envs, *chunk_actions.shape[1:]), chunk_actions.dtype)
        actions[rows] = chunk_actions
        self.timing["bookkeeping_s"] += time.perf_counter() - t
        return actions, live

    def record_step(
        self,
        live: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Outcomes of the episodes in `live` after their chunk; a lost worker's episode is not a failure."""
        for i in live:
            info = infos[i]
            self.finish_steps[i] += int(info.get("executed_steps", 0))
            failed = bool(info.get("worker_failed", False))
            self.worker_failed[i] |= failed
            self.success[i] |= bool(rewards[i] > 0) and not failed
            if terminated[i] or truncated[i] or failed:
                self.active[i] = False

    def result(self) -> TrajectoryBatch:
        n, chunks = self.n, self.max_chunks
        tokens = self.tokens if self.tokens is not None else np.zeros((n, chunks, 0), np.int64)
        log_probs = self.log_probs if self.log_probs is not None else np.zeros((n, chunks, 0), np.float32)
        return TrajectoryBatch(
            specs=self.specs,
            instructions=self.instructions,
            images=self.images,
            proprio=self.proprio,
            tokens=tokens,
            old_log_probs=log_probs,
            num_chunks=self.num_chunks,
            finish_steps=self.finish_steps,
            success=self.success,
            worker_failed=self.worker_failed,
            timing=self.timing,
        )


def _rows_of(obs: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """The observations of env rows `rows` (what the policy reads: images, proprio, instruction)."""
    out: dict[str, Any] = {
        "proprio": obs["proprio"][rows],
        "instruction": [obs["instruction"][i] for i in rows],
    }
    if "images" in obs:
        out["images"] = {c: frames[rows] for c, frames in obs["images"].items()}
    return out


def _timed_step(env: ChunkedVectorEnv, actions: np.ndarray, mask: np.ndarray) -> tuple[tuple, float]:
    """env.step_chunk in the background thread, with how long the simulator took."""
    t = time.perf_counter()
    out = env.step_chunk(actions, mask)
    return out, time.perf_counter() - t


def max_chunks_for(max_steps: int, chunk_length: int) -> int:
    return math.ceil(max_steps / chunk_length)
