"""svrl_sim: the embedded MuJoCo tabletop simulator (task suites, scripted experts, vectorised rollouts).

    from svrl_sim import SimEnv, VectorEnv, InitState
    env = SimEnv(image_size=128, action_space="ee_delta")
    obs, info = env.reset("goal/open_drawer", InitState("eval", 0))

Importing the package is cheap: mujoco (and the GL backend choice) loads with `SimEnv`/`VectorEnv`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "CAMERAS",
    "InitState",
    "SimEnv",
    "Task",
    "UnknownTaskError",
    "VectorEnv",
    "all_tasks",
    "get_task",
    "init_states",
    "list_suites",
    "tasks_in_suite",
]

_LAZY = {
    "CAMERAS": "svrl_sim.constants",
    "InitState": "svrl_sim.tasks",
    "Task": "svrl_sim.tasks",
    "UnknownTaskError": "svrl_sim.tasks",
    "all_tasks": "svrl_sim.tasks",
    "get_task": "svrl_sim.tasks",
    "init_states": "svrl_sim.tasks",
    "list_suites": "svrl_sim.tasks",
    "tasks_in_suite": "svrl_sim.tasks",
    "SimEnv": "svrl_sim.env",
    "VectorEnv": "svrl_sim.vector_env",
}

if TYPE_CHECKING:  # pragma: no cover
    from svrl_sim.constants import CAMERAS
    from svrl_sim.env import SimEnv
    from svrl_sim.tasks import (
        InitState,
        Task,
        UnknownTaskError,
        all_tasks,
        get_task,
        init_states,
        list_suites,
        tasks_in_suite,
    )
    from svrl_sim.vector_env import VectorEnv


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'svrl_sim' has no attribute {name!r}")
