"""`svrl demo`: the paper's pipeline in miniature on the embedded default, end to end.

    base (shipped in models/, or --pretrain: pool demos -> pretrain) -> 1 demo per task -> SFT -> eval -> GRPO
        -> eval -> ONNX export -> the exported policy through the ROS robot graph, next to the same episodes
        in process

Each step is one of the public `svrl` commands, printed before it runs so that it can be rerun or
changed by hand, and skipped when its output already exists (rerunning the demo resumes it).
The closing tables compare held-out success of the 1-demo SFT policy and after GRPO, then the exported
policy's episodes through `svrl up --profile sim` (lock-step) with the same episodes in process.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

from svrl_trainer import pipeline
from svrl_trainer.pipeline import console, latest_grpo_policy, run_stage, svrl_command


@dataclass(frozen=True)
class DemoPlan:
    out: Path
    suite: str = "spatial"
    base: Path | None = None  # the pretrained base (the CLI's default: the shipped one); None: pretrain one
    pretrain_demos_per_task: int = 8
    pretrain_steps: int = 500
    pretrain_batch_size: int = 32
    sft_steps: int = 300
    grpo_steps: int = 10
    grpo_eval_every: int = 5
    eval_episodes_per_task: int = 20
    image_size: int = 96
    threads: int = os.cpu_count() or 1


def run_demo(plan: DemoPlan) -> int:
    out = plan.out
    size = str(plan.image_size)
    task_data = out / "data" / f"{plan.suite}_1demo"
    sft = out / "sft_1demo"
    grpo_dir = out / "grpo"
    base, _ = pipeline.base_or_pretrain(plan.base, out, demos_per_task=plan.pretrain_demos_per_task,
                                        steps=plan.pretrain_steps, image_size=plan.image_size, threads=plan.threads)  # fmt: skip
    run_stage(f"one demonstration per {plan.suite} task (training initial states only)",
         svrl_command("demos", "--suite", plan.suite, "--per-task", "1", "--split", "train", "--out", str(task_data),
               "--image-size", size), task_data / "meta" / "info.json")  # fmt: skip
    run_stage("1-demo SFT from the base",
         svrl_command("sft", "--data", str(task_data), "--init", str(base), "--out", str(sft),
               "--steps", str(plan.sft_steps), "--threads", str(plan.threads), "--resume"), sft / "config.json")  # fmt: skip
    run_stage("GRPO (SimpleVLA-RL) from the 1-demo SFT policy, evaluated on held-out initial states",
         svrl_command("train", "--config", str(Path(__file__).parent / "configs" / "tiny.yaml"),
               "--set", f"init_checkpoint={sft}", "--set", f"out_dir={grpo_dir}",
               "--set", f"total_steps={plan.grpo_steps}", "--set", f"env.tasks=[{plan.suite}]",
               "--set", f"env.image_size={plan.image_size}",
               "--set", f"eval.episodes_per_task={plan.eval_episodes_per_task}",
               "--set", f"eval.every={plan.grpo_eval_every}", "--resume"),
         grpo_dir / "DONE")  # fmt: skip
    (grpo_dir / "DONE").write_text("ok\n")
    final = latest_grpo_policy(grpo_dir)
    run_stage("export the final policy to ONNX (what the robot runs)",
         svrl_command("export", "--ckpt", str(final), "--format", "onnx"), final / "policy.onnx")  # fmt: skip
    graph = out / "graph_check"
    run_stage("the exported policy through the robot graph (svrl up --profile sim, lock-step) vs in process",
         svrl_command("graph-check", "--ckpt", str(final), "--suite", plan.suite, "--out", str(graph),
               "--report-only"),
         graph / "graph_check.json")  # fmt: skip
    return _summarise(out, grpo_dir, graph)


def _summarise(out: Path, grpo_dir: Path, graph: Path) -> int:
    lines = [json.loads(line) for line in (grpo_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in lines if "eval/success" in m]
    if not evals:
        console.print("[red]no evaluation was recorded[/]")
        return 1
    first, last = evals[0], evals[-1]
    steps = [m for m in lines if "train/updated" in m]
    with_signal = sum(m["train/updated"] for m in steps)
    table = (
        "| policy | held-out success |\n|---|---|\n"
        f"| 1-demo SFT (GRPO step 0) | {100 * first['eval/success']:.1f} % |\n"
        f"| + GRPO, step {last['step']} | {100 * last['eval/success']:.1f} % |\n"
        f"\nGRPO steps whose batch held a group with mixed outcomes (a learning signal): "
        f"{with_signal} of {len(steps)}.\n"
    )
    graph_report = json.loads((graph / "graph_check.json").read_text())
    table += "\n" + (graph / "graph_check.md").read_text()
    (out / "summary.md").write_text(table)
    console.rule("[bold]result")
    console.print(table)
    console.print(
        f"learning curve and per-task reports: {grpo_dir}/eval_step_*/eval.png, metrics in {grpo_dir}/metrics.jsonl"
    )
    if not graph_report["all_agree"]:
        console.print("[red]the robot graph and the in-process run disagree (table above)[/]")
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the embedded default, end to end (resumable)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--suite", default="spatial", choices=["spatial", "object", "goal", "long"])
    p.add_argument("--grpo-steps", type=int, default=DemoPlan.grpo_steps)
    pipeline.add_base_args(
        p, pretrain_steps=DemoPlan.pretrain_steps, pretrain_demos_per_task=DemoPlan.pretrain_demos_per_task
    )
    p.add_argument("--sft-steps", type=int, default=DemoPlan.sft_steps)
    p.add_argument("--eval-episodes-per-task", type=int, default=DemoPlan.eval_episodes_per_task)
    p.add_argument("--image-size", type=int, default=DemoPlan.image_size)
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    return run_demo(
        DemoPlan(
            out=args.out,
            suite=args.suite,
            base=pipeline.chosen_base(args),
            pretrain_demos_per_task=args.pretrain_demos_per_task,
            pretrain_steps=args.pretrain_steps,
            sft_steps=args.sft_steps,
            grpo_steps=args.grpo_steps,
            eval_episodes_per_task=args.eval_episodes_per_task,
            image_size=args.image_size,
        )
    )
