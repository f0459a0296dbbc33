"""Subcommands owned by the trainer package, and the ones still waiting for their issue.

A command that is not built yet says so and exits 2: it never prints a made-up result.
"""

from __future__ import annotations

import argparse
import sys

# name -> (help text, issue that will build it)
_PLANNED: dict[str, tuple[str, str]] = {}
_PLANNED_BENCH: dict[str, tuple[str, str]] = {}


def _not_built(name: str, owner: str):
    def handler(_args: argparse.Namespace) -> int:
        print(f"svrl {name}: not built yet (tracked in the {owner}).", file=sys.stderr)
        return 2

    return handler


def _add_planned(sub: argparse._SubParsersAction, planned: dict[str, tuple[str, str]], prefix: str) -> None:
    existing = set(sub.choices)
    for name, (help_text, owner) in planned.items():
        if name in existing:
            continue
        parser = sub.add_parser(name, help=f"{help_text} [not built yet]")
        parser.set_defaults(handler=_not_built(f"{prefix}{name}", owner))


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="GRPO reinforcement learning (SimpleVLA-RL) from an SFT checkpoint")
    train.add_argument("--config", required=True, help="YAML run config (see svrl_trainer/configs/)")
    train.add_argument(
        "--resume", action="store_true", help="continue from the run's last complete checkpoint"
    )
    train.add_argument(
        "--overwrite", action="store_true", help="clear the previous run in the config's out_dir first"
    )
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set optim.lr=1e-4 --set env.tasks=[spatial,object]",
    )  # fmt: skip
    train.set_defaults(handler=_handle_train)

    ev = sub.add_parser("eval", help="greedy evaluation on held-out initial states")
    ev.add_argument("--ckpt", required=True, help="policy checkpoint directory")
    ev.add_argument("--tasks", nargs="+", default=["spatial"], help="suites and/or task names")
    ev.add_argument("--episodes-per-task", type=int, default=50)
    ev.add_argument("--backend", default="sim", help="env backend: sim, toy, or a plug-in (ros, libero)")
    ev.add_argument("--num-envs", type=int, default=16)
    ev.add_argument("--image-size", type=int, default=128)
    ev.add_argument(
        "--split", choices=["eval", "train"], default="eval",
        help="initial states: eval (held out; the figure to report) or train (diagnostic: fit vs generalise)",
    )  # fmt: skip
    ev.add_argument(
        "--temperature", type=float, default=0.0,
        help="0: greedy (the reported protocol); > 0: sample as GRPO's rollouts do (diagnostic)",
    )  # fmt: skip
    ev.add_argument("--seed", type=int, default=0, help="sampling noise seed (with --temperature > 0)")
    ev.add_argument("--out", default=None, help="folder for eval.json / eval.md / eval.png")
    ev.add_argument(
        "--videos", type=int, default=0, metavar="N", help="also write GIFs of N episodes per task"
    )
    ev.add_argument(
        "--env-option", dest="env_options", action="append", default=[], metavar="KEY=VALUE",
        help="the backend's own option (env.options), e.g. --env-option protocol=openvla_oft for libero",
    )  # fmt: skip
    ev.set_defaults(handler=_handle_eval)

    _add_planned(sub, _PLANNED, "")


def parse_key_values(items: list[str], flag: str) -> dict:
    """Repeated `KEY=VALUE` command-line items (VALUE read as YAML) -> a dict; a malformed one ends the
    command with one line naming `flag` (the train config's --set, a backend's --env-option)."""
    import yaml

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} expects KEY=VALUE, got {item!r}")
        parsed[key] = yaml.safe_load(value)
    return parsed


def _handle_train(args: argparse.Namespace) -> int:
    from svrl_trainer.cli_train import run_train

    return run_train(
        args.config,
        resume=args.resume,
        overwrite=args.overwrite,
        overrides=parse_key_values(args.overrides, "--set"),
    )


def _handle_eval(args: argparse.Namespace) -> int:
    from svrl_trainer.cli_train import run_eval

    args.env_options = parse_key_values(getattr(args, "env_options", []), "--env-option")
    return run_eval(args)


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    _add_planned(bench_sub, _PLANNED_BENCH, "bench ")
