"""VectorEnv with an env factory whose workers run under another interpreter (the path LIBERO takes), checked
with a stand-in env so it needs no LIBERO: the protocol, shared memory, and a killed worker's reporting."""

from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from svrl_sim.vector_env import VectorEnv, WorkerFailedWarning
from svrl_sim.worker_protocol import ExternalProcess

ROOT = Path(__file__).resolve().parents[2]

# Runs as `python -c FAKE_WORKER '<json>'`: the same entry steps as svrl_libero.worker.main, a counting env.
FAKE_WORKER = """
import json, sys, numpy as np
from multiprocessing.connection import Connection
from svrl_sim.worker_protocol import attach_shared_memory, serve
cfg = json.loads(sys.argv[1])
seg = attach_shared_memory(cfg["shm_names"], untrack=True)
n, s = cfg["num_envs"], cfg["image_size"]
img = np.ndarray((n, s, s, 3), np.uint8, seg["main"].buf)
pro = np.ndarray((n, 3), np.float32, seg["proprio"].buf)

class Counter:
    def __init__(self, i):
        self.i, self.task, self.init_state, self.steps = i, None, None, 0
    def reset(self, task, init_state, render=True):
        self.task, self.init_state, self.steps = task, init_state, 0
        img[self.i] = init_state
        return {"proprio": np.array([init_state, 0, 0])}, {"step": 0}
    def step_chunk(self, actions, render=True):
        self.steps += len(actions)
        img[self.i] = self.steps
        done = self.steps >= 4
        return {"proprio": np.array([self.init_state, self.steps, float(np.sum(actions))])}, float(done), done, False, {"executed_steps": len(actions), "success": done}

serve(Connection(cfg["fd"]), {i: Counter(i) for i in cfg["env_ids"]}, pro, cfg["auto_reset"])
"""


class CounterFactory:
    cameras = ("main",)
    action_dim = 2
    proprio_dim = 3

    def episode(self, task: Any, init_state: Any) -> tuple[str, Any, str]:
        if task != "count":
            raise KeyError(f"unknown task {task!r}")
        return "count", int(init_state), "count to four"

    def start_worker(self, ctx, index, env_ids, conn, shm_names, num_envs, image_size, auto_reset) -> Any:
        config = {
            "fd": conn.fileno(), "env_ids": env_ids, "shm_names": shm_names, "num_envs": num_envs,
            "image_size": image_size, "auto_reset": auto_reset,
        }  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return ExternalProcess(
            [sys.executable, "-c", FAKE_WORKER, json.dumps(config)], pass_fds=(conn.fileno(),), env=env
        )


def test_external_workers_speak_the_vector_env_protocol() -> None:
    with VectorEnv(2, num_workers=2, image_size=8, env_factory=CounterFactory(), timeout_s=60) as env:
        obs, _ = env.reset([("count", 3), ("count", 7)])
        assert obs["instruction"] == ["count to four"] * 2
        assert obs["images"]["main"][:, 0, 0, 0].tolist() == [3, 7] and obs["proprio"][:, 0].tolist() == [
            3,
            7,
        ]
        obs, rewards, terminated, _, infos = env.step_chunk(np.ones((2, 3, 2)), np.array([True, False]))
        assert obs["proprio"][0].tolist() == [3, 3, 6] and infos[0]["executed_steps"] == 3
        assert infos[1]["executed_steps"] == 0 and obs["images"]["main"][1, 0, 0, 0] == 7
        obs, rewards, terminated, _, _ = env.step_chunk(np.ones((2, 1, 2)), np.array([True, False]))
        assert rewards[0] == 1.0 and terminated[0]
        with pytest.raises(KeyError, match="unknown task"):
            env.reset([("count", 0), ("nothing", 0)])


def test_a_killed_external_worker_is_reported_and_replaced() -> None:
    with VectorEnv(2, num_workers=2, image_size=8, env_factory=CounterFactory(), timeout_s=60) as env:
        env.reset([("count", 1), ("count", 2)])
        victim = env.worker_pids[1]
        os.kill(victim, signal.SIGKILL)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, rewards, terminated, _, infos = env.step_chunk(np.zeros((2, 1, 2)), np.ones(2, bool))
        assert infos[1]["worker_failed"] and terminated[1] and rewards[1] == 0.0
        assert not infos[0].get("worker_failed") and infos[0]["executed_steps"] == 1
        assert any(issubclass(w.category, WorkerFailedWarning) for w in caught)
        assert env.worker_pids[1] not in (None, victim)
        obs, _ = env.reset([("count", 1), ("count", 5)])  # the replacement serves new episodes
        assert obs["proprio"][1, 0] == 5


def test_a_libero_worker_without_libero_says_how_to_install_it() -> None:
    import importlib.util

    from svrl_libero.backend import libero_tasks, make_env

    if importlib.util.find_spec("libero") is not None:
        pytest.skip("LIBERO is importable in svrl's own interpreter here")
    env = make_env(1, image_size=32, num_workers=1, protocol="plain", python=sys.executable, timeout_s=60)
    try:
        with pytest.raises(RuntimeError, match="make setup-libero"):
            env.reset([(libero_tasks()[0].name, 0)])
    finally:
        env.close()
