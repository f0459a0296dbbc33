"""Measure the scripted experts: success rate and episode length per task, over fixed init states.

The experts must succeed on >= 95 % of the initial states of every task in both splits (demonstrations are
only as good as they are). Episodes run without rendering, so checking every task takes about a minute.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass


@dataclass(frozen=True)
class ExpertResult:
    task: str
    split: str
    successes: int
    episodes: int
    lengths: tuple[int, ...]  # control steps of each episode (the time limit when it failed)
    failed_indices: tuple[int, ...]

    @property
    def rate(self) -> float:
        return self.successes / max(self.episodes, 1)


def run_expert(task: str, split: str, indices: list[int], action_space: str = "ee_delta") -> ExpertResult:
    """Run the expert from each init state index (no rendering) and count successes."""
    from svrl_sim.env import SimEnv
    from svrl_sim.tasks import InitState

    env = SimEnv(image_size=32, action_space=action_space)
    lengths, failed = [], []
    for i in indices:
        env.reset(task, InitState(split, i), render=False)
        terminated = truncated = False
        info: dict = {}
        while not (terminated or truncated):
            _, _, terminated, truncated, info = env.step(env.expert_action(), render=False)
        lengths.append(int(info["step"]))
        if not terminated:
            failed.append(i)
    env.close()
    return ExpertResult(task, split, len(indices) - len(failed), len(indices), tuple(lengths), tuple(failed))


def check_experts(
    task_names: list[str],
    splits: tuple[str, ...] = ("eval", "train"),
    per_task: int = 20,
    workers: int = 2,
    action_space: str = "ee_delta",
) -> list[ExpertResult]:
    """Expert results for every (task, split), over the first `per_task` init states of each split."""
    from svrl_sim.rendering import ensure_gl_backend

    ensure_gl_backend()  # decide once; the worker processes inherit MUJOCO_GL
    jobs = [(t, s, list(range(per_task)), action_space) for t in task_names for s in splits]
    if workers <= 1:
        return [run_expert(*job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(run_expert, *job) for job in jobs]
        return [f.result() for f in futures]
