"""`svrl sft` and `svrl pretrain`: argument parsing only; the work is in svrl_trainer.sft.

Imports nothing heavy at module level (the `svrl --help` path loads this file).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _add_training_args(p: argparse.ArgumentParser, *, steps: int, batch_size: int, lr: float) -> None:
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="checkpoint directory to write (replaced atomically at each save); must be empty or absent "
        "unless --resume or --overwrite",
    )
    p.add_argument(
        "--preset", default="tiny", help="policy preset when training from scratch (default: tiny)"
    )
    p.add_argument("--image-size", type=int, default=None, help="override the preset's image size (e.g. 96)")
    p.add_argument("--steps", type=int, default=steps, help=f"optimizer steps (default: {steps})")
    p.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"frames per step (default: {batch_size})"
    )
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default: {lr})")
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--label-sigma",
        type=float,
        default=None,
        help="soft ordinal action targets: a Gaussian of this width in bins around each expert token "
        "(default 0: hard labels, as the paper)",
    )
    p.add_argument(
        "--aux-weight",
        type=float,
        default=None,
        help="also train an auxiliary head to predict where the named object and its target are, from "
        "the privileged focus.* columns simulated demos carry; this weight times its smooth-L1 loss is "
        "added to the cross-entropy (default 0: off, as the paper)",
    )
    p.add_argument(
        "--keypoint-weight",
        type=float,
        default=None,
        help="also pull the policy's first two text keypoints per camera onto where the named object and "
        "its target appear in the image (the focus.*_px_* columns simulated demos carry; needs a preset "
        "with text keypoints, e.g. tiny96tk); this weight times its smooth-L1 loss is added (default 0: off)",
    )
    p.add_argument(
        "--no-augment", dest="augment", action="store_false", help="disable random-shift augmentation"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=500,
        help="save the weights and the resume state (optimizer, RNG, step) every N steps; 0: only at the "
        "end (default: 500)",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="STEP",
        help="save the resume state and exit after this step; the learning-rate schedule still spans --steps, "
        "so --resume continues the same run (cut a long run into pieces, or take a stage at a named step)",
    )
    run = p.add_mutually_exclusive_group()
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest complete state (same parameters required); "
        "starts at step 0 when --out holds nothing yet",
    )
    run.add_argument("--overwrite", action="store_true", help="replace whatever --out holds")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--allow-download",
        action="store_true",
        help="small/oft presets: let transformers download the pretrained backbones and tokenizer",
    )


def _add_grow_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--grow",
        default=None,
        metavar="KEY=N",
        help="with --init: first add modules that start as the identity, e.g. keypoint_refine=3 (residual "
        "conv blocks over the keypoints' feature map); the grown policy is checked to act exactly as --init",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sft",
        help="fine-tune a checkpoint on a few demonstrations",
        description="Behaviour cloning (cross-entropy on action tokens) on LeRobotDataset v3 demonstrations. "
        "With --init the base checkpoint's codec and statistics are kept (1-demo SFT starts from the "
        "pretrained base, never from scratch); without it the codec is fitted on --data.",
    )
    p.add_argument("--data", required=True, nargs="+", type=Path, help="dataset directories")
    p.add_argument("--init", type=Path, default=None, help="start from this checkpoint (the pretrained base)")
    _add_grow_arg(p)
    _add_training_args(p, steps=500, batch_size=32, lr=3e-4)
    p.set_defaults(handler=_sft)

    p = sub.add_parser(
        "pretrain",
        help="behaviour-clone the base policy on the pretraining pool",
        description="SFT from scratch on the pretraining pool's scripted demonstrations (disjoint from the "
        "evaluation suites). Without --data the demonstrations are generated first with svrl_sim's experts.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", nargs="+", type=Path, default=None, help="existing pretraining datasets")
    src.add_argument(
        "--demos-per-task", type=int, default=None, help="generate this many demos per pool task"
    )
    p.add_argument(
        "--demos-dir", type=Path, default=None, help="where generated demos go (default: <out>-demos)"
    )
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="continue pretraining from this checkpoint (its codec and statistics kept) instead of a fresh "
        "--preset",
    )
    _add_grow_arg(p)
    _add_training_args(p, steps=3000, batch_size=64, lr=5e-4)
    p.set_defaults(handler=_pretrain)


def _config(args: argparse.Namespace, **extra):
    from svrl_trainer.sft import config_from_args

    overrides = {"image_size": args.image_size} if args.image_size else {}
    return config_from_args(args, preset_overrides=overrides, **extra)


def _train(args: argparse.Namespace, stage: str, **extra) -> int:
    """Run train_sft. Bad parameters, a refused output directory or data the policy cannot use are a
    one-line error (exit 2) before any step; SIGTERM stops like Ctrl-C."""
    import signal

    from svrl_policy.config import ConfigError
    from svrl_trainer.sft import train_sft
    from svrl_trainer.sft_state import ResumeMismatchError, RunExistsError

    # A scheduler's SIGTERM ends the run like Ctrl-C; the newest complete state stays for --resume.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        config = _config(args, stage=stage, **extra)
        result = train_sft(config)
    except (RunExistsError, ResumeMismatchError, ConfigError, ValueError) as exc:
        print(f"svrl {stage}: {exc}", file=sys.stderr)
        return 2
    print(result.checkpoint)
    return 0


def _sft(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _train(args, "sft")


def _pretrain(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = args.data
    if data is None:
        data = [_generate_pool_demos(args)]
    return _train(args, "pretrain", data=data)


def _generate_pool_demos(args: argparse.Namespace) -> Path:
    """Scripted-expert demos of svrl_sim's pretraining pool (train init states only; disjoint from eval)."""
    from svrl_policy.config import get_preset
    from svrl_sim.demos import write_demos
    from svrl_sim.tasks import tasks_in_suite

    out = args.demos_dir or args.out.with_name(args.out.name + "-demos")
    size = args.image_size or get_preset(args.preset).image_size
    tasks = [t.name for t in tasks_in_suite("pretrain")]
    summary = write_demos(out, tasks, args.demos_per_task or 20, split="train", image_size=size, workers=2)
    logging.getLogger(__name__).info(
        "pretraining pool: %d demos of %d tasks -> %s (expert failures skipped: %d)",
        summary.episodes, len(tasks), summary.out, len(summary.failures),
    )  # fmt: skip
    return summary.out
