"""`svrl bench rollout`: env-steps/s with the policy in the loop, where the time goes, and the bytes a
rollout keeps per policy step (SimpleVLA-RL keeps ~1.2 MB of float32 pixels per step on LIBERO)."""

from __future__ import annotations

import argparse
import json
import os
import time

SIMPLEVLA_RL_BYTES_PER_STEP = 6 * 224 * 224 * 4  # fused SigLIP+DINOv2 float32 pixel tensor per step


def run_rollout_bench(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from svrl_policy.bench import machine_info
    from svrl_policy.codec import ActionCodec
    from svrl_policy.config import get_preset
    from svrl_policy.policy import Policy
    from svrl_trainer.catalog import make_env, resolve_tasks
    from svrl_trainer.rollout import EpisodeSpec, collect, max_chunks_for

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.ckpt:
        policy = Policy.from_pretrained(args.ckpt)
    else:  # a random policy of the preset: the cost per chunk does not depend on the weights
        config = get_preset(args.preset, image_size=args.image_size)
        from svrl_sim.env import DEFAULT_CONTROL_HZ, MAX_ANGULAR_SPEED, MAX_LINEAR_SPEED

        # the simulator's own per-step ee_delta limits, so decoded actions span what the env accepts
        step_limit = np.r_[[MAX_LINEAR_SPEED] * 3, [MAX_ANGULAR_SPEED] * 3] / DEFAULT_CONTROL_HZ
        codec = ActionCodec(low=np.r_[-step_limit, -1.0], high=np.r_[step_limit, 1.0])
        policy = Policy(config, codec)
    policy.eval()
    tasks = resolve_tasks("sim", [args.suite])
    env = make_env("sim", args.num_envs, image_size=policy.config.image_size, num_workers=args.workers)
    try:
        specs = [
            EpisodeSpec(tasks[i % len(tasks)].name, tasks[i % len(tasks)].train_states[i])
            for i in range(args.episodes)
        ]
        started = time.perf_counter()
        batch = collect(
            policy, env, specs, temperature=args.temperature,
            max_chunks=max_chunks_for(max(t.max_steps for t in tasks), policy.config.chunk_len),
            seed=0,
        )  # fmt: skip
        wall = time.perf_counter() - started
    finally:
        env.close()
    env_steps = int(batch.finish_steps.sum())
    policy_steps = int(batch.num_chunks.sum())
    timing = batch.timing
    accounted = sum(timing.values())
    bytes_per_step = batch.stored_bytes_per_step()
    return {
        "env_steps": env_steps,
        "policy_steps": policy_steps,
        "wall_s": round(wall, 2),
        "env_steps_per_s": round(env_steps / wall, 1),
        "ms_per_policy_forward_batch": round(1000 * timing["policy_s"] / max(policy_steps / args.num_envs, 1), 1),
        "fraction_sim": round(timing["sim_s"] / accounted, 3),
        "fraction_policy": round(timing["policy_s"] / accounted, 3),
        "fraction_bookkeeping": round(timing["bookkeeping_s"] / accounted, 3),
        "bytes_per_policy_step": bytes_per_step,
        "simplevla_rl_bytes_per_step": SIMPLEVLA_RL_BYTES_PER_STEP,
        "memory_ratio_vs_simplevla_rl": round(SIMPLEVLA_RL_BYTES_PER_STEP / bytes_per_step, 1),
        "settings": {
            "policy": args.ckpt or args.preset, "image_size": policy.config.image_size, "suite": args.suite,
            "num_envs": args.num_envs, "workers": args.workers, "episodes": args.episodes,
            "temperature": args.temperature, "torch_threads": args.threads,
        },
        "machine": {"cpu": machine_info()["cpu"], "nproc": os.cpu_count(),
                    "load_avg_1min": round(os.getloadavg()[0], 2)},
    }  # fmt: skip


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "rollout", help="env-steps/s with the policy in the loop, time split, bytes per step"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--ckpt", default=None, help="policy checkpoint (default: a random policy of --preset)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--suite", default="spatial")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--temperature", type=float, default=1.6)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the policy")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    result = run_rollout_bench(args)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value}")
    return 0
