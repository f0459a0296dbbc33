"""`svrl` subcommands owned by svrl_ros (registered from svrl_trainer.cli)."""

from __future__ import annotations

import argparse


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
    up.set_defaults(handler=_handle_up)


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    """svrl_ros has no benchmarks yet."""


def _handle_up(args: argparse.Namespace) -> int:
    from svrl_ros.up import handle_up

    return handle_up(args)
