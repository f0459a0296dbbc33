"""`svrl` subcommands owned by svrl_ros (registered from svrl.cli)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    up = sub.add_parser(
        "up",
        help="start the ROS 2 node graph of a stack profile (what `ros2 launch svrl_ros svrl.launch.py` starts)",
    )
    up.add_argument("--profile", default="sim_expert", help="name in launch/profiles/ or a YAML path")
    up.add_argument(
        "--set",
        action="append",
        metavar="NODE.PARAM=VALUE",
        help="override a node parameter of the profile (repeatable; values typed like YAML)",
    )
    up.add_argument(
        "--checkpoint",
        default="",
        help="policy checkpoint for the profile's policy_server (sim: default = newest `make demo` run)",
    )
    up.add_argument(
        "--remap",
        action="append",
        metavar="NODE.FROM:=TO",
        help="remap a topic of one node (repeatable), e.g. arm_controller.arm_controller/joint_trajectory:="
        "/scaled_joint_trajectory_controller/joint_trajectory for a vendor driver's controller",
    )
    up.add_argument(
        "--namespace",
        default="",
        help="ROS namespace for every node and topic (as ros2 launch's namespace:=)",
    )
    up.set_defaults(handler=_handle_up)


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    """Add `svrl bench serve` (svrl_ros/bench_serve.py, imported only when it runs)."""
    p = bench_sub.add_parser(
        "serve",
        help="per-chunk latency from observation arrival to published chunk in policy_server vs the bare runtime",
        description="Serve chunks through a policy_server process in lock-step and report, per image size, the "
        "time from the arrival of the message that completed an observation to the chunk's publish, the bare "
        "runtime on the same observations, and the overhead (target <= 3 ms per chunk). Progress on stderr.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    p.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="image sizes (default 128 224; --ckpt: its own)"
    )
    p.add_argument("--chunks", type=int, default=30, help="measured chunks per size")
    p.add_argument("--warmup", type=int, default=3, help="chunks served first and not measured (>= 1)")
    p.add_argument("--backend", default="onnx", choices=("auto", "torch", "onnx", "tensorrt"))
    p.add_argument("--preset", default="tiny", help="preset of the random policy (without --ckpt)")
    p.add_argument("--ckpt", default=None, help="bench this checkpoint instead of a random policy")
    p.set_defaults(handler=_handle_bench_serve)
    register_bench_chunks(bench_sub)


def register_bench_chunks(bench_sub: argparse._SubParsersAction) -> None:
    """Add `svrl bench chunks` (svrl_ros/bench_chunks.py, imported only when it runs)."""
    p = bench_sub.add_parser(
        "chunks",
        help="real-time sim graph: states the arm had no command for at chunk boundaries, sync vs async "
        "inference and each blending",
        description="Run the sim graph in real time (sim_node timing realtime, arm_controller on its timer) "
        "and, per configuration, one goal: count the sim states no command answered, the states skipped where "
        "a new chunk took over, and the commanded joint-velocity jumps at boundaries. Progress on stderr.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    p.add_argument("--steps", type=int, default=80, help="control periods per goal (>= 16)")
    p.add_argument(
        "--latencies", type=float, nargs="+", default=[0.0, 0.3],
        help="seconds added to every inference (policy_server simulated_latency_s), one goal each",
    )  # fmt: skip
    p.add_argument(
        "--trigger", default="timer", choices=("timer", "joint_states"),
        help="arm_controller trigger: timer (a robot) or joint_states (one cycle per state: exact counts)",
    )  # fmt: skip
    p.add_argument("--ckpt", default=None, help="a checkpoint instead of the calm random debug policy")
    p.set_defaults(handler=_handle_bench_chunks)


def _handle_bench_chunks(args: argparse.Namespace) -> int:
    import json

    from svrl_ros.bench_chunks import format_table, run_chunks_bench

    if args.steps < 16:
        print("svrl bench chunks: --steps must be >= 16", file=sys.stderr)
        return 2
    report = run_chunks_bench(
        steps=args.steps, latencies=args.latencies, trigger=args.trigger, ckpt=args.ckpt
    )
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _handle_bench_serve(args: argparse.Namespace) -> int:
    import json

    from svrl_ros.bench_serve import format_table, run_serve_bench

    if args.chunks < 1 or args.warmup < 1:
        print("svrl bench serve: --chunks and --warmup must be >= 1", file=sys.stderr)
        return 2
    report = run_serve_bench(
        sizes=args.sizes,
        chunks=args.chunks,
        warmup=args.warmup,
        backend=args.backend,
        preset=args.preset,
        ckpt=args.ckpt,
    )
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _handle_up(args: argparse.Namespace) -> int:
    from svrl_ros.up import handle_up

    return handle_up(args)
