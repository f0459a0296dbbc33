"""The worker side of `VectorEnv`'s pipe protocol, and a process handle for workers in another Python.

Kept to the standard library and numpy on purpose: a worker that runs under another interpreter (LIBERO's own
virtual environment, see svrl_libero/) imports this module and nothing else of svrl_sim.

Messages (pickled tuples over a `multiprocessing.connection.Connection`):
    parent -> worker: ("reset", [(env_id, task, init_state, render), ...])
                      ("step", [(env_id, actions[K][D] as nested lists), ...], render)
                      ("close",)
    worker -> parent: ("ready", pid) once, then ("ok", payload) or ("error", exc_name, text, traceback)
Images and proprio never cross the pipe: the worker writes them into shared memory the parent created.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np


def attach_shared_memory(names: Mapping[str, str], *, untrack: bool = False) -> dict[str, SharedMemory]:
    """Open the parent's segments. `untrack=True` in a process that was not started by multiprocessing: its
    own resource tracker would otherwise unlink the parent's segments when it exits (Python < 3.13)."""
    segments = {key: SharedMemory(name=name) for key, name in names.items()}
    if untrack:
        from multiprocessing import resource_tracker

        for seg in segments.values():
            with contextlib.suppress(Exception):
                resource_tracker.unregister(seg._name, "shared_memory")  # type: ignore[attr-defined]
    return segments


def serve(conn: Connection, envs: Mapping[int, Any], proprio: np.ndarray, auto_reset: bool) -> None:
    """Answer commands until "close" or EOF. Each env has `reset(task, init_state, render=)` and
    `step_chunk(actions, render=)` returning gymnasium-style tuples whose obs carries "proprio"; images go to
    the buffers the env was bound to. A command that raises is reported, and the worker stays alive."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business; it will close us
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        cmd = msg[0]
        if cmd == "close":
            conn.send(("ok", None))
            return
        try:
            if cmd == "reset":
                out = []
                for i, task, init_state, render in msg[1]:
                    obs, info = envs[i].reset(task, init_state, render=render)
                    proprio[i] = obs["proprio"]
                    out.append((i, info))
                conn.send(("ok", out))
            elif cmd == "step":
                render = msg[2]
                out = []
                for i, actions in msg[1]:
                    env = envs[i]
                    obs, reward, terminated, truncated, info = env.step_chunk(actions, render=render)
                    proprio[i] = obs["proprio"]
                    if auto_reset and (terminated or truncated):
                        info = dict(info, final_proprio=np.array(obs["proprio"], copy=True), auto_reset=True)
                        obs, _ = env.reset(env.task, env.init_state, render=render)
                        proprio[i] = obs["proprio"]
                    out.append((i, reward, terminated, truncated, info))
                conn.send(("ok", out))
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as exc:  # report, stay alive: the parent decides
            conn.send(("error", type(exc).__name__, str(exc), traceback.format_exc()))


class ExternalProcess:
    """A worker started with `subprocess` under another interpreter, with the parts of
    `multiprocessing.Process` that `VectorEnv` uses (pid, sentinel, is_alive, exitcode, join, kill, close).

    The sentinel is a pidfd (Linux >= 5.3): it becomes readable when the process ends, so a dead worker is
    noticed by `multiprocessing.connection.wait` at once, as with a multiprocessing child."""

    def __init__(self, argv: list[str], *, pass_fds: tuple[int, ...], env: dict[str, str]) -> None:
        self._popen = subprocess.Popen(argv, pass_fds=pass_fds, env=env, stdin=subprocess.DEVNULL)
        self.pid = self._popen.pid
        self._pidfd: int | None = os.pidfd_open(self.pid) if hasattr(os, "pidfd_open") else None

    @property
    def sentinel(self) -> int:
        if self._pidfd is None:
            raise RuntimeError("this platform has no pidfd_open; external workers need Linux >= 5.3")
        return self._pidfd

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout=timeout)

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()

    def close(self) -> None:
        if self._popen.poll() is None:
            raise ValueError("cannot close a running process")
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
