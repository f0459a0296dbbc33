"""`svrl bench sim --backend libero`: LIBERO's env-steps/s through the same VectorEnv, beside svrl_sim's.

Measured like `svrl_sim.bench` (one worker process, random actions, both cameras at the same size): once
rendering both cameras every step (the embedded benchmark's worst case), once rendering once per 8-step chunk
(what rollouts do). LIBERO runs at 20 Hz control, svrl_sim at 10 Hz: the result also gives simulated seconds
per wall second.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

CHUNK = 8


def _rate(
    env: Any, task: str, steps: int, chunk: int, rng: np.random.Generator
) -> tuple[float, float | None]:
    from svrl_sim.bench import _cpu_seconds

    pids = [p for p in env.worker_pids if p is not None]
    done, cpu0, parent0 = 0, _cpu_seconds(pids), time.process_time()
    start = time.perf_counter()
    while done < steps:
        actions = rng.uniform(-1, 1, size=(1, chunk, 7)) * np.array([0.01, 0.01, 0.01, 0.05, 0.05, 0.05, 1.0])
        _obs, _r, terminated, truncated, infos = env.step_chunk(actions, np.ones(1, bool))
        done += int(infos[0]["executed_steps"])
        if terminated[0] or truncated[0]:
            env.reset([(task, 0)])
    elapsed = time.perf_counter() - start
    cpu1, parent1 = _cpu_seconds(pids), time.process_time()
    cpu_ms = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0 + parent1 - parent0) / done * 1e3
    return done / elapsed, cpu_ms


def run_libero_benchmark(steps: int = 64, image_size: int = 128, python: str | None = None) -> dict[str, Any]:
    from svrl_libero.backend import libero_tasks, make_env

    task = next(t for t in libero_tasks() if t.suite == "libero_goal").name
    rng = np.random.default_rng(0)
    options: dict[str, Any] = {"protocol": "plain"}
    if python:
        options["python"] = python
    started = time.perf_counter()
    with make_env(1, image_size=image_size, num_workers=1, **options) as env:
        env.reset([(task, 0)])
        first_reset_s = time.perf_counter() - started
        t = time.perf_counter()
        env.reset([(task, 1)])
        reset_s = time.perf_counter() - t
        env.step_chunk(np.zeros((1, 2, 7)), np.ones(1, bool))  # warm-up
        every, every_cpu = _rate(env, task, steps, 1, rng)
        chunked, chunked_cpu = _rate(env, task, steps, CHUNK, rng)
        python_used = env.factory.python
    return {
        "env_steps_per_s_render_every_step": round(every, 2),
        "env_steps_per_s_render_every_chunk": round(chunked, 2),
        "cpu_ms_per_env_step_render_every_step": None if every_cpu is None else round(every_cpu, 1),
        "cpu_ms_per_env_step_render_every_chunk": None if chunked_cpu is None else round(chunked_cpu, 1),
        "first_reset_s": round(first_reset_s, 1),
        "reset_s": round(reset_s, 2),
        "control_hz": 20,
        "chunk": CHUNK,
        "image_size": image_size,
        "cameras_per_render": 2,
        "steps": steps,
        "task": task,
        "python": python_used,
    }
