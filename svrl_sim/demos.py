"""`svrl demos`: scripted-expert demonstrations of a suite, written as a LeRobotDataset v3 directory.

Only successful episodes are kept (behaviour cloning on an expert's failures teaches the failure). When the
expert fails from an init state, the next unused state of the same split is tried, so every task ends up with
`per_task` demos unless the split runs out. Episodes are recorded in worker processes (rendering dominates)
and written in a fixed order by this process, so the same command writes the same dataset.

Frame t of an episode holds the observation the expert acted on and the action it took, and (columns
`focus.*`) where the object and target of the expert's current skill were relative to the gripper and where
they appeared in each camera's image: privileged state a simulator knows for free, which `svrl pretrain
--aux-weight` and `--keypoint-weight` use to teach localisation.

`noise` (DART, Laskey et al. 2017): the arm executes the expert's action plus Gaussian noise, while the frame
records the expert's clean action. Noise-free demos only show states on the expert's own path, so a cloned
policy that drifts a centimetre off it has never seen how to come back; with noise every demo also shows the
correction. The noise is seeded by (task, split, init state), so the same command writes the same dataset.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

EPISODES_PER_JOB = 2


@dataclass
class DemoSummary:
    out: Path
    episodes: int = 0
    per_task: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, int]] = field(default_factory=list)  # (task, init state index)
    short: dict[str, int] = field(default_factory=dict)  # tasks that got fewer demos than asked


YAW_NOISE_PER_METRE = 2.0  # yaw noise (rad) per metre of translation noise: 5 mm -> 0.01 rad
# Roll and pitch get none: the expert keeps the gripper pointing down and barely commands them (std 0.002 and
# 0.004 rad per step), so noise there only teaches tilt corrections a policy never needs. A first try with
# 0.025 rad on all three made roll/pitch corrections 10x larger than the expert's own commands.


def action_noise(
    task: str, split: str, index: int, scale: float, action_dim: int
) -> Callable[[], np.ndarray]:
    """A seeded source of DART noise for one episode: translation `scale` m and yaw; never roll, pitch or the
    gripper."""
    import hashlib

    seed = int.from_bytes(hashlib.sha256(f"svrl_sim/demo-noise/{task}/{split}/{index}".encode()).digest()[:8])
    rng = np.random.Generator(np.random.PCG64(seed))
    std = np.zeros(action_dim)
    std[:3] = scale
    if action_dim >= 7:
        std[5] = scale * YAW_NOISE_PER_METRE
    return lambda: rng.normal(0.0, 1.0, action_dim) * std


def check_demo_noise(noise: float, action_space: str) -> None:
    """Refuse a noise level before any dataset folder or worker exists."""
    if not (np.isfinite(noise) and 0.0 <= noise <= 0.02):
        raise ValueError(f"noise={noise} m: must be in [0, 0.02] (larger swamps the expert's own steps)")
    if noise and action_space != "ee_delta":
        raise ValueError("demo noise is defined for the ee_delta action space only")


def record_episodes(
    task: str, split: str, indices: list[int], image_size: int, action_space: str, noise: float = 0.0
) -> list[tuple[int, dict[str, Any] | None]]:
    """Expert episodes from the given init states: (index, arrays) or (index, None) when it failed."""
    from svrl_policy.features import FOCUS_FEATURES, focus_pixel_features
    from svrl_sim.tasks import InitState

    check_demo_noise(noise, action_space)
    env = _worker_env(image_size, action_space)
    columns = (*FOCUS_FEATURES, *focus_pixel_features(env.cameras))
    out: list[tuple[int, dict[str, Any] | None]] = []
    for index in indices:
        obs, _ = env.reset(task, InitState(split, index))
        perturb = action_noise(task, split, index, noise, env.action_dim) if noise else None
        frames: dict[str, list[np.ndarray]] = {c: [] for c in env.cameras}
        proprio, actions, focus = [], [], []
        terminated = truncated = False
        while not (terminated or truncated):
            action = env.expert_action()
            for c in env.cameras:
                frames[c].append(obs["images"][c])
            proprio.append(obs["proprio"])
            actions.append(action)
            focus.append(np.concatenate([env.expert_focus(), env.expert_focus_pixels()]))
            executed = action if perturb is None else action + perturb().astype(action.dtype)
            obs, _, terminated, truncated, _ = env.step(executed)
        if not terminated:
            out.append((index, None))
            continue
        out.append(
            (
                index,
                {
                    "images": {c: np.stack(v) for c, v in frames.items()},
                    "proprio": np.stack(proprio).astype(np.float32),
                    "actions": np.stack(actions).astype(np.float32),
                    "extra": dict(zip(columns, np.stack(focus).T, strict=True)),
                },
            )
        )
    return out


_ENVS: dict[tuple[int, str], Any] = {}


def _worker_env(image_size: int, action_space: str) -> Any:
    """One SimEnv per (image size, action space) per process, reused across jobs."""
    from svrl_sim.env import SimEnv

    key = (image_size, action_space)
    if key not in _ENVS:
        _ENVS[key] = SimEnv(image_size=image_size, action_space=action_space)
    return _ENVS[key]


def _jobs(task: str, start: int, count: int) -> Iterator[tuple[str, list[int]]]:
    for first in range(start, start + count, EPISODES_PER_JOB):
        yield task, list(range(first, min(first + EPISODES_PER_JOB, start + count)))


def write_demos(
    out: str | Path,
    task_names: list[str],
    per_task: int,
    split: str = "train",
    image_size: int = 128,
    action_space: str = "ee_delta",
    workers: int = 2,
    overwrite: bool = False,
    on_episode: Callable[[str, bool], None] | None = None,
    noise: float = 0.0,
    first_state: int = 0,
) -> DemoSummary:
    """Record `per_task` successful expert demos of each task and write them to `out`.

    `noise` > 0: DART noise (metres, standard deviation) on the executed translation, see the module doc.
    `first_state`: the init state to start from, so that a second dataset of the same tasks (more demos of the
    tasks a base fails most) holds states the first one does not instead of repeating its episodes."""
    from svrl_policy.dataset import DatasetWriter  # the dataset format belongs to svrl_policy
    from svrl_policy.features import FOCUS_FEATURES, focus_pixel_features
    from svrl_sim.constants import ACTION_DIMS, CAMERAS, DEFAULT_CONTROL_HZ
    from svrl_sim.rendering import ensure_gl_backend
    from svrl_sim.tasks import get_task, num_init_states

    if per_task < 1:
        raise ValueError(f"per_task must be >= 1, got {per_task}")
    check_demo_noise(noise, action_space)
    tasks = [get_task(t).name for t in task_names]
    n_states = num_init_states(split)
    if first_state < 0:
        raise ValueError(f"first_state must be >= 0, got {first_state}")
    if first_state + per_task > n_states:
        raise ValueError(
            f"first_state={first_state} + per_task={per_task} exceeds the {n_states} init states of split {split!r}"
        )
    ensure_gl_backend()
    summary = DemoSummary(Path(out), per_task={t: 0 for t in tasks})
    next_index = {t: first_state + per_task for t in tasks}
    pool = (
        ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) if workers > 1 else None
    )

    def run(job_list: list[tuple[str, list[int]]]) -> Iterator[tuple[str, list]]:
        """Results in job order, with at most 2 x workers jobs in flight (bounded memory)."""
        if pool is None:
            for task, idx in job_list:
                yield task, record_episodes(task, split, idx, image_size, action_space, noise)
            return
        window: deque[tuple[str, Future]] = deque()
        pending = iter(job_list)
        for task, idx in pending:
            window.append(
                (task, pool.submit(record_episodes, task, split, idx, image_size, action_space, noise))
            )
            if len(window) >= 2 * workers:
                break
        while window:
            task, fut = window.popleft()
            result = fut.result()
            nxt = next(pending, None)
            if nxt is not None:
                window.append(
                    (
                        nxt[0],
                        pool.submit(record_episodes, nxt[0], split, nxt[1], image_size, action_space, noise),
                    )
                )
            yield task, result

    try:
        with DatasetWriter(
            out,
            fps=round(DEFAULT_CONTROL_HZ),
            camera_names=list(CAMERAS),
            image_shape=(image_size, image_size),
            action_dim=ACTION_DIMS[action_space],
            action_space=action_space,
            overwrite=overwrite,
            extra_features=dict.fromkeys((*FOCUS_FEATURES, *focus_pixel_features(CAMERAS)), "float32"),
        ) as writer:
            jobs = [job for t in tasks for job in _jobs(t, first_state, per_task)]
            while jobs:
                for task, episodes in run(jobs):
                    for index, episode in episodes:
                        ok = episode is not None and summary.per_task[task] < per_task
                        if episode is None:
                            summary.failures.append((task, index))
                        elif ok:
                            t = get_task(task)
                            writer.add_episode(
                                **episode, instruction=t.instruction, task_name=task, success=True
                            )
                            summary.per_task[task] += 1
                            summary.episodes += 1
                        if on_episode is not None:
                            on_episode(task, episode is not None)
                jobs = []  # top up the tasks whose expert failed somewhere, from the next unused states
                for t in tasks:
                    missing = per_task - summary.per_task[t]
                    if missing > 0:
                        start = next_index[t]
                        count = min(missing, n_states - start)
                        if count <= 0:
                            summary.short[t] = summary.per_task[t]
                            continue
                        next_index[t] = start + count
                        jobs.extend(_jobs(t, start, count))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return summary
