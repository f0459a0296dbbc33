"""Which tasks a run uses and which environment runs them, behind one small interface.

The trainer needs four facts per task (name, suite, horizon, its train and eval initial states) and a
vectorised environment; this module gets them from the embedded MuJoCo suites or from the toy
PointReach suite, so the same trainer code runs on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

BACKENDS = ("sim", "toy")


@dataclass(frozen=True)
class TaskRef:
    name: str
    suite: str
    instruction: str
    max_steps: int
    train_states: tuple[Any, ...]
    eval_states: tuple[Any, ...]


def resolve_tasks(backend: str, selection: Sequence[str]) -> list[TaskRef]:
    """`selection` names suites and/or tasks; the result keeps that order, without duplicates."""
    if backend not in BACKENDS:
        raise ValueError(f"env backend {backend!r} is not one of {BACKENDS}")
    if not selection:
        raise ValueError("select at least one suite or task")
    refs: dict[str, TaskRef] = {}
    if backend == "toy":
        from svrl_sim.toy import toy_init_states, toy_tasks

        by_name = {t.name: t for t in toy_tasks()}
        for item in selection:
            chosen = toy_tasks() if item == "toy" else [by_name[item]] if item in by_name else None
            if chosen is None:
                raise KeyError(f"unknown toy suite/task {item!r}; choose 'toy' or one of {sorted(by_name)}")
            for t in chosen:
                refs[t.name] = _ref(t, toy_init_states)
        return list(refs.values())

    from svrl_sim.tasks import get_task, init_states, list_suites, tasks_in_suite

    for item in selection:
        tasks = tasks_in_suite(item) if item in list_suites() else [get_task(item)]
        for t in tasks:
            refs[t.name] = _ref(t, init_states)
    return list(refs.values())


def _ref(task: Any, init_states) -> TaskRef:
    return TaskRef(
        task.name, task.suite, task.instruction, task.max_steps,
        tuple(init_states(task, "train")), tuple(init_states(task, "eval")),
    )  # fmt: skip


def make_env(backend: str, num_envs: int, *, image_size: int, num_workers: int | None = None) -> Any:
    """A vectorised environment with `reset(episodes)` and `step_chunk(actions, active)`."""
    if backend == "toy":
        from svrl_sim.toy import PointReachVectorEnv

        return PointReachVectorEnv(num_envs, image_size=image_size)
    from svrl_sim.vector_env import VectorEnv

    return VectorEnv(num_envs, num_workers=num_workers, image_size=image_size, action_space="ee_delta")
