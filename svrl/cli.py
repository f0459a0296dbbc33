"""The single `svrl` command: the table of contents above the packages.

Each subcommand lives next to the code it drives and registers itself here through a small
`register(subparsers)` function, so this file stays a table of contents. Heavy imports (torch,
mujoco, rclpy) happen inside the handlers: `svrl --help` must answer instantly on any machine.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# (module, function) pairs; each function adds its subcommands to the parsers it is given.
# The planned-command table (svrl_trainer.commands) comes last: it only fills names nobody registered.
_TOP_LEVEL_REGISTRARS: list[tuple[str, str]] = [
    ("svrl_sim.cli", "register"),
    ("svrl_policy.cli", "register"),
    ("svrl_trainer.sft_cli", "register"),
    ("svrl_ros.cli", "register"),
    ("svrl_ros.graph_check", "register"),
    ("svrl_ros.record_cli", "register"),
    ("svrl_trainer.demo", "register"),
    ("svrl_trainer.commands", "register"),
]
_BENCH_REGISTRARS: list[tuple[str, str]] = [
    ("svrl_sim.cli", "register_bench"),
    ("svrl_policy.cli", "register_bench"),
    ("svrl_ros.cli", "register_bench"),
    ("svrl_trainer.bench_rollout", "register_bench"),
    ("svrl_trainer.bench_learn", "register_bench"),
    ("svrl_trainer.bench_learn_table", "register_bench"),
    ("svrl_trainer.commands", "register_bench"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svrl",
        description=(
            "SimpleVLA-RL on ROS 2. Pipeline: pretrain -> sft -> train -> eval -> export -> up. "
            "Run `svrl <command> --help` for the options of each step."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    for module_name, func_name in _TOP_LEVEL_REGISTRARS:
        getattr(importlib.import_module(module_name), func_name)(sub)

    bench = sub.add_parser("bench", help="measure speed (simulator, policy, rollouts, learning)")
    bench_sub = bench.add_subparsers(dest="bench_target", metavar="<target>")
    bench_sub.required = True
    for module_name, func_name in _BENCH_REGISTRARS:
        getattr(importlib.import_module(module_name), func_name)(bench_sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
