"""`svrl bench rollout`: env-steps/s with the policy in the loop, where the time goes, and the bytes a
rollout keeps per policy step (SimpleVLA-RL keeps ~1.2 MB of float32 pixels per step on LIBERO).

`--backend ros` (or any plug-in env backend on the embedded sim's tasks): the price of training over topics,
as env-steps/s through that backend against the in-process VectorEnv on the same episodes, with 1 and 2 envs
(`--instances`). The backend is reached through the registry by name: this module never imports ROS.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from svrl_trainer.commands import parse_key_values

SIMPLEVLA_RL_BYTES_PER_STEP = 6 * 224 * 224 * 4  # fused SigLIP+DINOv2 float32 pixel tensor per step


def run_rollout_bench(args: argparse.Namespace) -> dict:
    if getattr(args, "backend", "sim") != "sim":
        return run_backend_comparison(args)
    return _run_sim_bench(args)


def _run_sim_bench(args: argparse.Namespace) -> dict:
    """Every (runtime, pipeline) variant asked for, on one env and the same episodes, side by side.

    One variant: its figures at the top level (the layout this command always had). Several: a list
    under "variants". `--repeats N` runs the variants round-robin N times and keeps each one's fastest
    run, so a burst of load from other jobs does not land on one variant only.
    """
    from svrl_policy.bench import machine_info
    from svrl_trainer.catalog import make_env
    from svrl_trainer.rollout_policy import make_rollout_policy

    policy, specs, max_chunks = _bench_episodes(args)
    variants = [(r, p) for r in _choices(args.runtime, RUNTIMES) for p in _choices(args.pipeline, PIPELINE)]
    runtimes: dict[str, object] = {}
    env = make_env("sim", args.num_envs, image_size=policy.config.image_size, num_workers=args.workers)
    try:
        export_s: dict[str, float] = {}
        for runtime in dict.fromkeys(r for r, _ in variants):
            started = time.perf_counter()
            runtimes[runtime] = make_rollout_policy(runtime, policy, threads=args.threads)
            export_s[runtime] = round(time.perf_counter() - started, 3)
        best: dict[tuple[str, str], dict] = {}
        for _ in range(max(1, args.repeats)):
            for runtime, pipeline in variants:
                figures = _one_variant(runtimes[runtime], env, specs, max_chunks, args, pipeline == "on")
                figures["setup_s"] = export_s[runtime]
                key = (runtime, pipeline)
                if key not in best or figures["env_steps_per_s"] > best[key]["env_steps_per_s"]:
                    best[key] = figures
    finally:
        env.close()
        for rollout_policy in runtimes.values():
            rollout_policy.close()  # type: ignore[attr-defined]
    settings = {
        "policy": args.ckpt or args.preset, "image_size": policy.config.image_size, "suite": args.suite,
        "num_envs": args.num_envs, "workers": args.workers, "episodes": args.episodes,
        "temperature": args.temperature, "torch_threads": args.threads, "repeats": args.repeats,
    }  # fmt: skip
    machine = {"cpu": machine_info()["cpu"], "nproc": os.cpu_count()}
    results = [best[v] for v in variants]
    if len(results) == 1:
        return {**results[0], "settings": settings, "machine": machine}
    return {"variants": results, "settings": settings, "machine": machine}


def run_backend_comparison(args: argparse.Namespace) -> dict:
    """Env-steps/s of `args.backend` against the in-process VectorEnv ('sim'), for each env count in
    `--instances`, on the same episodes with the same policy and seed (so the same work: the backends must
    give the same trajectories). `ratio` = backend / VectorEnv. `--repeats N` keeps each side's best run."""
    from svrl_policy.bench import machine_info
    from svrl_trainer.catalog import make_env
    from svrl_trainer.rollout_policy import make_rollout_policy

    options = parse_key_values(args.env_option, "--env-option")  # bad input ends it before any work
    policy, specs, max_chunks = _bench_episodes(args)
    runtime = _choices(args.runtime, RUNTIMES)
    if len(runtime) != 1:
        raise SystemExit(f"--backend {args.backend} compares one runtime at a time, got {args.runtime!r}")
    rollout_policy = make_rollout_policy(runtime[0], policy, threads=args.threads)
    comparisons = []
    try:
        for count in sorted({int(c) for c in str(args.instances).split(",") if c.strip()}):
            sides: dict[str, dict] = {}
            per_count = argparse.Namespace(**{**vars(args), "num_envs": count})
            envs = {
                "sim": make_env("sim", count, image_size=policy.config.image_size, num_workers=count),
                args.backend: make_env(args.backend, count, image_size=policy.config.image_size, **options),
            }
            try:
                for env in envs.values():  # warm-up, untimed: first renders, first policy forwards
                    _one_variant(rollout_policy, env, specs[:count], 2, per_count, False)
                for _ in range(max(1, args.repeats)):
                    for name, env in envs.items():
                        figures = _one_variant(rollout_policy, env, specs, max_chunks, per_count, False)
                        if name not in sides or figures["env_steps_per_s"] > sides[name]["env_steps_per_s"]:
                            sides[name] = figures
            finally:
                for env in envs.values():
                    env.close()
            if sides["sim"]["env_steps"] != sides[args.backend]["env_steps"]:
                raise RuntimeError(
                    f"{args.backend} ran {sides[args.backend]['env_steps']} env steps where the in-process "
                    f"VectorEnv ran {sides['sim']['env_steps']} on the same episodes: not the same work"
                )
            comparisons.append({
                "instances": count,
                "sim_env_steps_per_s": sides["sim"]["env_steps_per_s"],
                f"{args.backend}_env_steps_per_s": sides[args.backend]["env_steps_per_s"],
                "ratio": round(sides[args.backend]["env_steps_per_s"] / sides["sim"]["env_steps_per_s"], 3),
                "sim": sides["sim"],
                args.backend: sides[args.backend],
            })  # fmt: skip
    finally:
        rollout_policy.close()  # type: ignore[attr-defined]
    settings = {
        "policy": args.ckpt or args.preset, "image_size": policy.config.image_size, "suite": args.suite,
        "backend": args.backend, "env_options": options, "episodes": args.episodes,
        "temperature": args.temperature, "runtime": args.runtime, "torch_threads": args.threads,
        "repeats": args.repeats,
    }  # fmt: skip
    machine = {
        "cpu": machine_info()["cpu"],
        "nproc": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    return {"backend": args.backend, "comparisons": comparisons, "settings": settings, "machine": machine}


def _bench_episodes(args: argparse.Namespace) -> tuple[Any, list, int]:
    """What every variant and backend runs: the policy (torch seeded, `--threads`), the `--episodes` episodes
    of `--suite` (task i, train state i, round-robin over the tasks) and the chunk budget of its longest task."""
    import torch

    from svrl_trainer.catalog import resolve_tasks
    from svrl_trainer.rollout import EpisodeSpec, max_chunks_for

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    policy = _bench_policy(args)
    tasks = resolve_tasks("sim", [args.suite])
    specs = [
        EpisodeSpec(tasks[i % len(tasks)].name, tasks[i % len(tasks)].train_states[i])
        for i in range(args.episodes)
    ]
    return policy, specs, max_chunks_for(max(t.max_steps for t in tasks), policy.config.chunk_len)


RUNTIMES = ("torch", "onnx")
PIPELINE = ("off", "on")


def _choices(text: str, allowed: tuple[str, ...]) -> list[str]:
    """'torch,onnx' -> ['torch', 'onnx'], each checked against `allowed`."""
    picked = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in picked if c not in allowed]
    if unknown or not picked:
        raise SystemExit(f"choose from {', '.join(allowed)} (comma-separated), got {text!r}")
    return list(dict.fromkeys(picked))


def _bench_policy(args: argparse.Namespace):
    """The checkpoint, or a random policy of the preset (the cost per chunk does not depend on weights)."""
    import numpy as np

    from svrl_policy.codec import ActionCodec
    from svrl_policy.config import get_preset
    from svrl_policy.policy import Policy

    if args.ckpt:
        return Policy.from_pretrained(args.ckpt).eval()
    config = get_preset(args.preset, image_size=args.image_size)
    from svrl_sim.constants import DEFAULT_CONTROL_HZ
    from svrl_sim.kinematics import MAX_ANGULAR_SPEED, MAX_LINEAR_SPEED

    # the simulator's own per-step ee_delta limits, so decoded actions span what the env accepts
    step_limit = np.r_[[MAX_LINEAR_SPEED] * 3, [MAX_ANGULAR_SPEED] * 3] / DEFAULT_CONTROL_HZ
    codec = ActionCodec(low=np.r_[-step_limit, -1.0], high=np.r_[step_limit, 1.0])
    return Policy(config, codec).eval()


def _one_variant(
    rollout_policy, env, specs, max_chunks: int, args: argparse.Namespace, pipeline: bool
) -> dict:
    """One timed rollout of every spec; the time split is of the main process's wall clock (with the
    pipeline, `sim` is only the time spent *waiting* for the simulator; the hidden part is reported apart)."""
    from svrl_trainer.rollout import collect

    started = time.perf_counter()
    batch = collect(
        rollout_policy,
        env,
        specs,
        temperature=args.temperature,
        max_chunks=max_chunks,
        seed=0,
        pipeline=pipeline,
    )
    wall = time.perf_counter() - started
    env_steps = int(batch.finish_steps.sum())
    policy_steps = int(batch.num_chunks.sum())
    timing = batch.timing
    accounted = timing["sim_s"] + timing["policy_s"] + timing["bookkeeping_s"]
    simulated = timing["sim_s"] + timing.get("sim_overlapped_s", 0.0)
    bytes_per_step = batch.stored_bytes_per_step()
    return {
        "runtime": rollout_policy.name,
        "pipeline": pipeline,
        "env_steps": env_steps,
        "policy_steps": policy_steps,
        "wall_s": round(wall, 2),
        "env_steps_per_s": round(env_steps / wall, 1),
        "ms_per_policy_forward_batch": round(1000 * timing["policy_s"] / max(policy_steps / args.num_envs, 1), 1),
        "fraction_sim": round(timing["sim_s"] / accounted, 3),
        "fraction_policy": round(timing["policy_s"] / accounted, 3),
        "fraction_bookkeeping": round(timing["bookkeeping_s"] / accounted, 3),
        "sim_overlapped_s": round(timing.get("sim_overlapped_s", 0.0), 2),
        "fraction_sim_hidden": round(timing.get("sim_overlapped_s", 0.0) / max(simulated, 1e-9), 3),
        "bytes_per_policy_step": bytes_per_step,
        "simplevla_rl_bytes_per_step": SIMPLEVLA_RL_BYTES_PER_STEP,
        "memory_ratio_vs_simplevla_rl": round(SIMPLEVLA_RL_BYTES_PER_STEP / bytes_per_step, 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "rollout", help="env-steps/s with the policy in the loop, time split, bytes per step"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--ckpt", default=None, help="policy checkpoint (default: a random policy of --preset)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--suite", default="spatial", help="a suite or one task of the embedded sim")
    p.add_argument(
        "--backend", default="sim",
        help="sim (the in-process VectorEnv), or an env backend to compare with it, e.g. ros (RosEnv)",
    )  # fmt: skip
    p.add_argument(
        "--instances", default="1,2", help="--backend other than sim: env counts to compare, e.g. '1,2'"
    )
    p.add_argument(
        "--env-option", action="append", default=[], metavar="KEY=VALUE",
        help="--backend other than sim: one of its make_env options (YAML value), e.g. timeout_s=60",
    )  # fmt: skip
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--temperature", type=float, default=1.6)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads of the policy (torch or ONNX)")
    p.add_argument("--runtime", default="torch", help="torch, onnx, or both: 'torch,onnx'")
    p.add_argument("--pipeline", default="off", help="off, on, or both: 'off,on' (see rollout.pipeline)")
    p.add_argument(
        "--repeats", type=int, default=1, help="run the variants round-robin N times, keep the best"
    )
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    result = run_rollout_bench(args)
    if args.json:
        print(json.dumps(result, indent=1))
    elif "comparisons" in result:
        for row in result["comparisons"]:
            backend = result["backend"]
            print(
                f"{row['instances']} env(s): {backend} {row[f'{backend}_env_steps_per_s']} env-steps/s, "
                f"in-process {row['sim_env_steps_per_s']} env-steps/s, ratio {row['ratio']}"
            )
    else:
        for figures in result.get("variants", [result]):
            for key, value in figures.items():
                print(f"{key:32s} {value}")
            print()
    return 0
