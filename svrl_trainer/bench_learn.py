"""`svrl bench learn`: the paper's data-efficiency experiment on our suites.

    pool demos -> pretrain (base) -> 1 demo/task -> SFT ──> eval ──> GRPO (time budget) -> eval
                                  └ 10 demos/task -> SFT ─> eval (the baseline GRPO should beat)

Every stage is a public `svrl` command run as a subprocess and skipped when its output exists, so an
interrupted bench resumes. Every success figure is greedy decoding on the suite's held-out evaluation
initial states (default 50 per task: 300 episodes for a 6-task suite, so one figure is good to about
+-5 points); demonstrations and GRPO only ever use training states.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from svrl_trainer.atomic import save_figure_atomic, write_text_atomic
from svrl_trainer.pipeline import (
    add_base_args,
    base_or_pretrain,
    base_provenance,
    chosen_base,
    console,
    latest_grpo_policy,
    run_stage,
    svrl_command,
)

TINY_CONFIG = Path(__file__).parent / "configs" / "tiny.yaml"


@dataclass(frozen=True)
class LearnPlan:
    out: Path
    suite: str = "spatial"
    base: Path | None = None
    """the pretrained base (the CLI's default: the shipped one); None: pretrain one in <out>/base"""
    pretrain_demos_per_task: int = 8
    pretrain_steps: int = 1500
    sft_steps: int = 300
    baseline_demos_per_task: int = 10
    grpo_minutes: float = 60.0
    baseline_grpo_minutes: float = 0.0
    """also run GRPO from the N-demo baseline for this long (0: not): does RL help a start with signal?"""
    grpo_max_steps: int = 10_000
    grpo_eval_every: int = 5
    grpo_eval_episodes_per_task: int = 10
    eval_episodes_per_task: int = 50
    image_size: int = 96
    threads: int = os.cpu_count() or 1
    grpo_overrides: tuple[str, ...] = ()
    """extra `--set KEY=VALUE` for the GRPO run (e.g. grpo.temperature=1.2)"""


def run_learn_bench(plan: LearnPlan) -> dict[str, Any]:
    out, size = plan.out, str(plan.image_size)
    out.mkdir(parents=True, exist_ok=True)
    stage_s: dict[str, float | None] = {}
    base, pretrain_s = base_or_pretrain(plan.base, out, demos_per_task=plan.pretrain_demos_per_task,
                                        steps=plan.pretrain_steps, image_size=plan.image_size, threads=plan.threads)  # fmt: skip
    stage_s.update(pretrain_s)
    policies = {}
    for name, demos in (
        ("sft_1demo", 1),
        (f"sft_{plan.baseline_demos_per_task}demo", plan.baseline_demos_per_task),
    ):
        data, ckpt = out / "data" / f"{plan.suite}_{demos}demo", out / name
        stage_s[f"{name}_demos"] = run_stage(
            f"{demos} demonstration(s) per {plan.suite} task (training initial states)",
            svrl_command("demos", "--suite", plan.suite, "--per-task", str(demos), "--split", "train",
                         "--out", str(data), "--image-size", size),
            data / "meta" / "info.json",
        )  # fmt: skip
        stage_s[name] = run_stage(
            f"SFT on {demos} demo(s) per task from the base",
            svrl_command("sft", "--data", str(data), "--init", str(base), "--out", str(ckpt),
                         "--steps", str(plan.sft_steps), "--threads", str(plan.threads), "--resume"),
            ckpt / "config.json",
        )  # fmt: skip
        policies[name] = ckpt
    baseline = f"sft_{plan.baseline_demos_per_task}demo"
    runs = {"grpo": (policies["sft_1demo"], plan.grpo_minutes)}
    if plan.baseline_grpo_minutes > 0:
        runs["grpo_from_baseline"] = (policies[baseline], plan.baseline_grpo_minutes)
    for name, (init, minutes) in runs.items():
        policies[name], stage_s[name] = _grpo_stage(plan, init, out / name, minutes)
    reports = {}
    for name, ckpt in policies.items():
        report_dir = out / "eval" / name
        stage_s[f"eval_{name}"] = run_stage(
            f"held-out evaluation of {name}",
            svrl_command("eval", "--ckpt", str(ckpt), "--tasks", plan.suite, "--image-size", size,
                         "--episodes-per-task", str(plan.eval_episodes_per_task), "--out", str(report_dir)),
            report_dir / "eval.json",
        )  # fmt: skip
        reports[name] = json.loads((report_dir / "eval.json").read_text())
    histories = {
        name: [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        for name in runs
    }
    result = summarise(plan, reports, histories, stage_s)
    write_text_atomic(out / "bench_learn.json", json.dumps(result, indent=1))
    write_text_atomic(out / "bench_learn.md", result_table(result))
    plot_learning(result, histories, out / "bench_learn.png")
    return result


def _grpo_stage(plan: LearnPlan, init: Path, run_dir: Path, minutes: float) -> tuple[Path, float | None]:
    """GRPO from `init` for `minutes` of training time; returns its final policy and the stage's wall time."""
    overrides = [
        f"init_checkpoint={init}", f"out_dir={run_dir}", f"env.tasks=[{plan.suite}]",
        f"env.image_size={plan.image_size}", f"total_steps={plan.grpo_max_steps}",
        f"time_budget_minutes={minutes}", f"eval.every={plan.grpo_eval_every}",
        f"eval.episodes_per_task={plan.grpo_eval_episodes_per_task}", f"checkpoint.every={plan.grpo_eval_every}",
        *plan.grpo_overrides,
    ]  # fmt: skip
    wall = run_stage(
        f"GRPO from {init.name}, {minutes:g} min of training time",
        svrl_command("train", "--config", str(TINY_CONFIG), "--resume", *[a for o in overrides for a in ("--set", o)]),
        run_dir / "DONE",
    )  # fmt: skip
    (run_dir / "DONE").write_text("ok\n")
    return latest_grpo_policy(run_dir), wall


def summarise(
    plan: LearnPlan,
    reports: dict[str, dict],
    histories: dict[str, list[dict]],
    stage_s: dict[str, float | None],
) -> dict[str, Any]:
    """The bench's figures: held-out success of each policy, the GRPO gains, and where the time went."""
    baseline = f"sft_{plan.baseline_demos_per_task}demo"
    success = {name: r["success_rate"] for name, r in reports.items()}
    starts = {"grpo": "sft_1demo", "grpo_from_baseline": baseline}
    runs = {}
    for name, history in histories.items():
        steps = [m for m in history if "train/updated" in m]
        runs[name] = {
            "start": starts[name],
            "gain_points": 100 * (success[name] - success[starts[name]]),
            "steps": len(steps),
            "steps_with_signal": sum(int(m["train/updated"]) for m in steps),
            "mean_sampled_success": sum(m["rollout/sampled_success"] for m in steps) / max(len(steps), 1),
            "training_minutes": (steps[-1].get("time/training_s", 0.0) / 60) if steps else 0.0,
        }
    return {
        "machine": _machine(),
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()},
        "suite": plan.suite,
        "episodes_per_figure": {name: r["episodes"] for name, r in reports.items()},
        "success": success,
        "per_task": {name: {t["task"]: t["success_rate"] for t in r["tasks"]} for name, r in reports.items()},
        "grpo_gain_points": runs["grpo"]["gain_points"],
        "grpo_beats_baseline": success["grpo"] > success[baseline],
        "grpo_runs": runs,
        "base": base_provenance(plan.base or plan.out / "base"),
        "stage_seconds": stage_s,
        "finished": time.strftime("%Y-%m-%d %H:%M"),
    }


def _machine() -> str:
    from svrl_policy.bench import machine_info

    info = machine_info()
    return f"{info['cpu']}, {info['nproc']} cores" + (f", {info['cuda']}" if info["cuda"] else "")


def result_table(result: dict[str, Any]) -> str:
    n = result["plan"]["baseline_demos_per_task"]
    runs = result["grpo_runs"]
    rows = [("1-demo SFT (GRPO start)", "sft_1demo"), (f"{n}-demo SFT (baseline)", f"sft_{n}demo")]
    labels = {"grpo": "1-demo SFT + GRPO", "grpo_from_baseline": f"{n}-demo SFT + GRPO"}
    rows += [
        (f"{labels[k]} ({r['steps']} steps, {r['training_minutes']:.0f} min)", k) for k, r in runs.items()
    ]
    lines = [f"| {result['suite']} suite, held-out | episodes | success |", "|---|---|---|"]
    lines += [
        f"| {label} | {result['episodes_per_figure'][key]} | {100 * result['success'][key]:.1f} % |"
        for label, key in rows
    ]
    lines.append("")
    for key, r in runs.items():
        lines.append(
            f"- {labels[key]}: {r['gain_points']:+.1f} points; sampled success {100 * r['mean_sampled_success']:.1f} % "
            f"on average; steps whose batch held a mixed-outcome group (a learning signal): "
            f"{r['steps_with_signal']} of {r['steps']}."
        )
    lines.append(f"\nMachine: {result['machine']}.\n")
    return "\n".join(lines)


def plot_learning(result: dict[str, Any], histories: dict[str, list[dict]], path: Path) -> None:
    """Each GRPO run's held-out curve against training minutes, both SFT policies as reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = result["plan"]["baseline_demos_per_task"]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    styles = {
        "grpo": ("#c44e52", "1-demo SFT + GRPO"),
        "grpo_from_baseline": ("#55a868", f"{n}-demo SFT + GRPO"),
    }
    for name, history in histories.items():
        colour, label = styles[name]
        curve = [
            (m.get("time/training_s", 0.0) / 60, 100 * m["eval/success"])
            for m in history
            if "eval/success" in m
        ]
        if curve:
            ax.plot(*zip(*curve, strict=True), "o-", ms=3, color=colour, label=f"{label} (periodic eval)")
        final = 100 * result["success"][name]
        ax.plot([result["grpo_runs"][name]["training_minutes"]], [final], "*", ms=14, color=colour,
                label=f"{label}, final: {final:.1f} %")  # fmt: skip
    for key, label, colour in (
        ("sft_1demo", "1-demo SFT", "#8c8c8c"),
        (f"sft_{n}demo", f"{n}-demo SFT", "#4c72b0"),
    ):
        value = 100 * result["success"][key]
        ax.axhline(value, ls="--", color=colour, label=f"{label}: {value:.1f} %")
    ax.set_xlabel("GRPO training time (min)")
    ax.set_ylabel("held-out success (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{result['suite']}: data efficiency ({result['machine']})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_figure_atomic(fig, path)


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser("learn", help="1-demo SFT -> GRPO vs a 10-demo SFT baseline, held-out success")
    p.add_argument("--out", type=Path, default=Path("runs/bench_learn"))
    p.add_argument("--suite", default="spatial", choices=["spatial", "object", "goal", "long"])
    add_base_args(
        p, pretrain_steps=LearnPlan.pretrain_steps, pretrain_demos_per_task=LearnPlan.pretrain_demos_per_task
    )
    p.add_argument("--sft-steps", type=int, default=LearnPlan.sft_steps)
    p.add_argument("--baseline-demos-per-task", type=int, default=LearnPlan.baseline_demos_per_task)
    p.add_argument("--grpo-minutes", type=float, default=LearnPlan.grpo_minutes)
    p.add_argument("--baseline-grpo-minutes", type=float, default=LearnPlan.baseline_grpo_minutes,
                   help="also run GRPO from the N-demo SFT baseline for this long (default: off)")  # fmt: skip
    p.add_argument("--grpo-max-steps", type=int, default=LearnPlan.grpo_max_steps)
    p.add_argument("--grpo-eval-every", type=int, default=LearnPlan.grpo_eval_every)
    p.add_argument("--grpo-eval-episodes-per-task", type=int, default=LearnPlan.grpo_eval_episodes_per_task)
    p.add_argument("--eval-episodes-per-task", type=int, default=LearnPlan.eval_episodes_per_task)
    p.add_argument("--image-size", type=int, default=LearnPlan.image_size)
    p.add_argument("--grpo-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra GRPO config override (repeatable)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    plan = LearnPlan(
        out=args.out, suite=args.suite, base=chosen_base(args), pretrain_steps=args.pretrain_steps,
        pretrain_demos_per_task=args.pretrain_demos_per_task, sft_steps=args.sft_steps,
        baseline_demos_per_task=args.baseline_demos_per_task, grpo_minutes=args.grpo_minutes,
        baseline_grpo_minutes=args.baseline_grpo_minutes,
        grpo_max_steps=args.grpo_max_steps, grpo_eval_every=args.grpo_eval_every,
        grpo_eval_episodes_per_task=args.grpo_eval_episodes_per_task,
        eval_episodes_per_task=args.eval_episodes_per_task, image_size=args.image_size,
        grpo_overrides=tuple(args.grpo_set),
    )  # fmt: skip
    result = run_learn_bench(plan)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        console.rule("[bold]bench learn")
        console.print(result_table(result))
        console.print(f"curve: {plan.out / 'bench_learn.png'}")
    return 0
