"""`svrl bench sim`: how fast the embedded simulator runs on this machine.

Reports env-steps/s with 1 and 2 worker processes (random actions, both cameras rendered every step: the
worst case; training renders once per action chunk), the cost of one physics step and of one camera render,
and the 1 -> 2 worker scaling. Numbers depend on what else the machine is doing: run it on an idle machine.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import numpy as np

BENCH_TASK = "goal/put_red_cube_on_plate"  # 7 objects on the table: a typical scene


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _random_actions(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    scale = np.array([0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1.0])  # the ee_delta limits at 10 Hz
    return rng.uniform(-1.0, 1.0, size=(n, k, 7)) * scale


def _cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU time of these processes (Linux /proc), None where unavailable."""
    total = 0.0
    try:
        tick = os.sysconf("SC_CLK_TCK")
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    return total


def vector_steps_per_s(
    workers: int, steps: int, image_size: int, seed: int = 0
) -> tuple[float, float | None]:
    """(env-steps/s, CPU ms per env-step) of a VectorEnv with one env per worker, rendering both cameras every
    step. The CPU cost (workers + this process) does not depend on what else runs on the machine."""
    from svrl_sim.tasks import InitState
    from svrl_sim.vector_env import VectorEnv

    rng = np.random.default_rng(seed)
    # One rasteriser thread per worker: the 1 -> 2 worker scaling then measures processes, not Mesa threads.
    with VectorEnv(workers, workers, image_size=image_size, auto_reset=True, render_threads=1) as venv:
        venv.reset([(BENCH_TASK, InitState("train", i)) for i in range(workers)])
        for _ in range(10):  # warm-up: first renders allocate GL buffers
            venv.step(_random_actions(rng, workers, 1)[:, 0])
        pids = [p for p in venv.worker_pids if p is not None]
        cpu0, parent0 = _cpu_seconds(pids), time.process_time()
        start = time.perf_counter()
        for _ in range(steps):
            venv.step(_random_actions(rng, workers, 1)[:, 0])
        elapsed = time.perf_counter() - start
        cpu1, parent1 = _cpu_seconds(pids), time.process_time()
    cpu_ms = None
    if cpu0 is not None and cpu1 is not None:
        cpu_ms = (cpu1 - cpu0 + parent1 - parent0) / (workers * steps) * 1e3
    return workers * steps / elapsed, cpu_ms


def component_costs(image_size: int, repeats: int = 200) -> dict[str, float]:
    """ms per physics step and per camera render, measured in this process."""
    from svrl_sim._mj import mujoco
    from svrl_sim.env import SimEnv
    from svrl_sim.tasks import InitState

    env = SimEnv(image_size=image_size)
    env.reset(BENCH_TASK, InitState("train", 0))
    rng = np.random.default_rng(1)
    for a in _random_actions(rng, 5, 1)[:, 0]:
        env.step(a, render=False)
    n_phys = repeats * 10
    start = time.perf_counter()
    for _ in range(n_phys):
        mujoco.mj_step(env.model, env.data)
    physics_ms = (time.perf_counter() - start) / n_phys * 1e3
    env.render()
    start = time.perf_counter()
    for _ in range(repeats):
        env.render()
    render_ms = (time.perf_counter() - start) / (repeats * len(env.cameras)) * 1e3
    start = time.perf_counter()
    for a in _random_actions(rng, repeats, 1)[:, 0]:
        if not env.episode_running:
            env.reset(BENCH_TASK, InitState("train", 0), render=False)
        env.step(a, render=False)
    control_ms = (time.perf_counter() - start) / repeats * 1e3
    substeps = env.n_substeps
    env.close()
    return {
        "physics_step_ms": physics_ms,
        "render_ms_per_camera": render_ms,
        "control_step_ms_no_render": control_ms,
        "physics_steps_per_control_step": substeps,
    }


def run_benchmark(steps: int = 1000, image_size: int = 128, repeats: int = 3) -> dict[str, Any]:
    """The full benchmark as a JSON-ready dict.

    The 1- and 2-worker runs alternate `repeats` times and the best of each is reported (other jobs on a
    shared machine only ever slow a run down); every sample is in the result too."""
    from svrl_sim.rendering import ensure_gl_backend

    backend = ensure_gl_backend()
    # Single-threaded rasteriser here too, so the per-render cost matches what one worker sees. (Read by
    # Mesa when this process creates its first GL context, which happens below.)
    os.environ.setdefault("LP_NUM_THREADS", "1")
    import mujoco

    costs = component_costs(image_size)
    samples: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(max(1, repeats)):
        for workers in (1, 2):
            rate, cpu_ms = vector_steps_per_s(workers, steps, image_size)
            samples[workers].append(rate)
            if cpu_ms is not None:
                cpu[workers].append(cpu_ms)
    one, two = max(samples[1]), max(samples[2])
    return {
        "env_steps_per_s_1_worker": round(one, 1),
        "env_steps_per_s_2_workers": round(two, 1),
        "scaling_1_to_2_workers": round(two / one, 2),
        # CPU time (workers + driver process) per env-step: independent of other load on the machine. Equal
        # values for 1 and 2 workers mean the workers add no overhead to each other; then 2 workers on 2 idle
        # cores give 2x.
        "cpu_ms_per_env_step_1_worker": round(min(cpu[1]), 3) if cpu[1] else None,
        "cpu_ms_per_env_step_2_workers": round(min(cpu[2]), 3) if cpu[2] else None,
        "physics_step_ms": round(costs["physics_step_ms"], 4),
        "render_ms_per_camera": round(costs["render_ms_per_camera"], 3),
        "control_step_ms_no_render": round(costs["control_step_ms_no_render"], 3),
        "physics_steps_per_control_step": costs["physics_steps_per_control_step"],
        "cameras_per_step": 2,
        "render_threads_per_worker": 1,
        "render_threads_in_process": int(os.environ["LP_NUM_THREADS"]),
        "image_size": image_size,
        "control_hz": 10,
        "steps_per_worker": steps,
        "repeats": max(1, repeats),
        "samples_env_steps_per_s": {
            "1_worker": [round(x, 1) for x in samples[1]],
            "2_workers": [round(x, 1) for x in samples[2]],
        },
        "task": BENCH_TASK,
        "machine": {
            "cpu": _cpu_model(),
            "nproc": os.cpu_count(),
            "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "gl_backend": backend,
            "mujoco": mujoco.__version__,
            "python": platform.python_version(),
        },
    }
