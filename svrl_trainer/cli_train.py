"""Handlers of `svrl train` and `svrl eval`: progress display and result files around the trainer."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()


def run_train(config_path: str, *, resume: bool, overrides: dict, overwrite: bool = False) -> int:
    """Exit 2 with the reason (no traceback) when the run folder holds another run or --resume would
    continue it under a changed config."""
    from svrl_trainer.config import ResumeConfigError, load_train_config
    from svrl_trainer.train import GrpoTrainer, RunExistsError, metrics_summary

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_train_config(config_path, overrides)
    try:
        trainer = GrpoTrainer(config, resume=resume, overwrite=overwrite)
    except (RunExistsError, ResumeConfigError) as error:
        console.print(f"svrl train: {error}", style="red", markup=False, highlight=False)
        return 2
    # SIGTERM (a scheduler stopping the job) ends the run like Ctrl-C: the last complete checkpoint stays.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    console.print(f"GRPO on {len(trainer.tasks)} tasks from {config.init_checkpoint or 'the last checkpoint'}; "
                  f"run folder {trainer.out_dir}; starting at step {trainer.step}")  # fmt: skip
    try:
        with Progress(
            TextColumn("[bold]GRPO"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[summary]}"), console=console,
        ) as progress:  # fmt: skip
            bar = progress.add_task("train", total=config.total_steps, completed=trainer.step, summary="")

            def on_step(metrics: dict) -> None:
                progress.update(bar, completed=metrics["step"], summary=metrics_summary(metrics))

            trainer.train(progress=on_step)
    finally:
        trainer.close()
    evals = [m for m in trainer.history if "eval/success" in m]
    if evals:
        console.print(f"held-out success: step {evals[0]['step']} {100 * evals[0]['eval/success']:.1f} % -> "
                      f"step {evals[-1]['step']} {100 * evals[-1]['eval/success']:.1f} %")  # fmt: skip
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from svrl_policy.policy import Policy
    from svrl_trainer.catalog import resolve_tasks
    from svrl_trainer.evaluate import evaluate
    from svrl_trainer.rollout_engine import make_rollout_engine

    torch.set_num_threads(1)
    policy = Policy.from_pretrained(args.ckpt)
    tasks = resolve_tasks(args.backend, args.tasks)
    engine = make_rollout_engine(
        "local",
        policy,
        backend=args.backend,
        num_envs=args.num_envs,
        image_size=args.image_size,
        num_workers=None,
        env_options=getattr(args, "env_options", None) or {},
    )
    total = len(tasks) * args.episodes_per_task
    try:
        with Progress(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:  # fmt: skip
            bar = progress.add_task("eval", total=total)
            report = evaluate(
                engine, tasks, episodes_per_task=args.episodes_per_task,
                chunk_length=policy.config.chunk_len, progress=lambda n: progress.advance(bar, n),
                protocol=(getattr(args, "env_options", None) or {}).get("protocol"),
                split=args.split, temperature=args.temperature, seed=args.seed,
            )  # fmt: skip
        out = Path(args.out or Path(args.ckpt) / report.folder_name)
        report.write(out, title=Path(args.ckpt).name)
        if args.videos:
            from svrl_trainer.videos import record_eval_videos

            videos = record_eval_videos(
                engine,
                tasks,
                per_task=args.videos,
                chunk_length=policy.config.chunk_len,
                out_dir=out / "videos",
            )
            console.print(f"wrote {len(videos)} rollout videos to {out}/videos")
    finally:
        engine.close()
    console.print(report.markdown())
    console.print(f"wrote {out}/eval.json, eval.md, eval.png")
    return 0
