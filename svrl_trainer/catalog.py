"""Which tasks a run uses and which environment runs them, behind one small interface.

The trainer needs four facts per task (name, suite, horizon, its train and eval initial states) and a
vectorised environment. An *env backend* supplies both. Two are built in (the embedded MuJoCo suites and the
toy PointReach suite); others register from their own packages, so the trainer never imports them: a backend
that needs ROS (`ros`) or another simulator's Python (`libero`) lives beside that dependency and is found
through the `svrl.env_backends` entry-point group, or registered at run time with `register_backend`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

ENTRY_POINT_GROUP = "svrl.env_backends"


@dataclass(frozen=True)
class TaskRef:
    name: str
    suite: str
    instruction: str
    max_steps: int
    train_states: tuple[Any, ...]
    eval_states: tuple[Any, ...]


@dataclass(frozen=True)
class EnvBackend:
    """One source of tasks and vectorised environments.

    `make_env(num_envs, image_size=..., num_workers=..., **options)` returns an object with the chunked
    vector-env protocol of `svrl_sim.vector_env.VectorEnv` (`reset(episodes)`, `step_chunk(actions, active)`,
    `close()`); `options` are the backend's own settings (`env.options` in a train config).
    """

    name: str
    resolve_tasks: Callable[[Sequence[str]], list[TaskRef]]
    make_env: Callable[..., Any]
    summary: str = ""


_REGISTERED: dict[str, EnvBackend] = {}


def register_backend(backend: EnvBackend) -> None:
    """Make `backend` available by name in this process (tests, plug-ins that are not installed)."""
    _REGISTERED[backend.name] = backend


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    return sorted({*_BUILTIN, *_REGISTERED, *_entry_points()})


def get_backend(name: str) -> EnvBackend:
    """The backend called `name`: built in, registered, or loaded from its entry point on first use."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        return _BUILTIN[name]
    entry = _entry_points().get(name)
    if entry is None:
        raise ValueError(
            f"env backend {name!r} is not one of {backend_names()}. A plug-in backend registers under the "
            f"{ENTRY_POINT_GROUP!r} entry-point group: reinstall the package that provides it "
            "(pip install -e . refreshes the entry points)"
        )
    try:
        loaded = entry.load()
    except ImportError as exc:
        raise ValueError(
            f"env backend {name!r} ({entry.value}) cannot be imported here: {exc}. "
            "Install what it needs (its extra, or a sourced ROS 2 environment) first"
        ) from exc
    backend = loaded() if callable(loaded) and not isinstance(loaded, EnvBackend) else loaded
    if not isinstance(backend, EnvBackend) or backend.name != name:
        raise TypeError(f"entry point {entry.value} must give an EnvBackend named {name!r}, got {backend!r}")
    _REGISTERED[name] = backend
    return backend


def resolve_tasks(backend: str, selection: Sequence[str]) -> list[TaskRef]:
    """`selection` names suites and/or tasks; the result keeps that order, without duplicates."""
    if not selection:
        raise ValueError("select at least one suite or task")
    return get_backend(backend).resolve_tasks(selection)


def make_env(
    backend: str, num_envs: int, *, image_size: int, num_workers: int | None = None, **options: Any
) -> Any:
    """A vectorised environment with `reset(episodes)` and `step_chunk(actions, active)`."""
    return get_backend(backend).make_env(num_envs, image_size=image_size, num_workers=num_workers, **options)


# ------------------------------------------------------------------ built-in backends
def _no_options(backend: str, options: dict[str, Any]) -> None:
    if options:
        raise ValueError(f"env backend {backend!r} takes no options, got {sorted(options)}")


def _sim_tasks(selection: Sequence[str]) -> list[TaskRef]:
    from svrl_sim.tasks import get_task, init_states, list_suites, tasks_in_suite

    refs: dict[str, TaskRef] = {}
    for item in selection:
        tasks = tasks_in_suite(item) if item in list_suites() else [get_task(item)]
        for t in tasks:
            refs[t.name] = task_ref(t, init_states)
    return list(refs.values())


def _sim_env(num_envs: int, *, image_size: int, num_workers: int | None = None, **options: Any) -> Any:
    from svrl_sim.vector_env import VectorEnv

    _no_options("sim", options)
    return VectorEnv(num_envs, num_workers=num_workers, image_size=image_size, action_space="ee_delta")


def _toy_tasks(selection: Sequence[str]) -> list[TaskRef]:
    from svrl_sim.toy import toy_init_states, toy_tasks

    by_name = {t.name: t for t in toy_tasks()}
    refs: dict[str, TaskRef] = {}
    for item in selection:
        chosen = toy_tasks() if item == "toy" else [by_name[item]] if item in by_name else None
        if chosen is None:
            raise KeyError(f"unknown toy suite/task {item!r}; choose 'toy' or one of {sorted(by_name)}")
        for t in chosen:
            refs[t.name] = task_ref(t, toy_init_states)
    return list(refs.values())


def _toy_env(num_envs: int, *, image_size: int, num_workers: int | None = None, **options: Any) -> Any:
    from svrl_sim.toy import PointReachVectorEnv

    _no_options("toy", options)
    return PointReachVectorEnv(num_envs, image_size=image_size)


def task_ref(task: Any, init_states: Callable[[Any, str], Sequence[Any]]) -> TaskRef:
    """A TaskRef from a task object with name/suite/instruction/max_steps and its init-state lookup."""
    return TaskRef(
        task.name, task.suite, task.instruction, task.max_steps,
        tuple(init_states(task, "train")), tuple(init_states(task, "eval")),
    )  # fmt: skip


_BUILTIN: dict[str, EnvBackend] = {
    "sim": EnvBackend("sim", _sim_tasks, _sim_env, "the embedded MuJoCo suites (svrl_sim)"),
    "toy": EnvBackend("toy", _toy_tasks, _toy_env, "PointReach, a seconds-long suite for tests"),
}


def limit_train_states(tasks: list[TaskRef], per_task: int) -> list[TaskRef]:
    """Each task with only its first `per_task` training initial states (0: unchanged)."""
    if per_task == 0:
        return tasks
    short = [t.name for t in tasks if len(t.train_states) < per_task]
    if short:
        raise ValueError(f"env.train_states_per_task={per_task}: fewer training states in {', '.join(short)}")
    return [replace(t, train_states=t.train_states[:per_task]) for t in tasks]
