"""Put a pretrained base under models/ with its model card, every figure of the card read from the run itself.

A base is made in stages (`svrl pretrain`, then `svrl pretrain --init ... [--grow ...]`, each taken at a step
with `--stop-after`). Each stage's checkpoint records the exact parameters it ran with (trainer_state.json) and
its loss history; the evaluation folder holds its held-out success; the training logs hold the time. This
script turns those into the card's commands, loss curve, success table and time, and copies the policy files
(not the optimizer moments) next to them, atomically.

    .venv/bin/python scripts/ship_base.py --stage runs/base_v6/ckpt3750 --stage runs/base_v7/ckpt4000 \\
        --log runs/base_v6/train.log --log runs/base_v7/train.log --eval runs/base_v7/eval4000 \\
        --pool-command "svrl demos --suite pretrain --per-task 30 --image-size 96 --noise 0.005" \\
        --out models/base-tiny96

A base trained on from a shipped one (`svrl pretrain --init models/base-tiny96 ...`) names it with `--prior`:
its recorded stages, commands and times come first, since the checkpoints they came from are long gone. A
stage that trained on more than one dataset names each with `--dataset DIR "svrl demos ..."`; the card calls
it runs/base/<DIR's name>.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
import shlex
import shutil
import statistics
from datetime import datetime
from pathlib import Path

POLICY_FILES = (
    "config.json",
    "codec.json",
    "preprocessor.json",
    "tokenizer.json",
    "manifest.json",
    "model.safetensors",
)
POOL_DIR = "runs/base/pool"
LOG_LINE = re.compile(r"^(\S+ \S+),\d+ INFO svrl_trainer\.sft: step (\d+)/\d+ ")
# SFTConfig fields that change the weights but have no CLI flag: a stage must have run with their defaults.
FLAGLESS = ("weight_decay", "min_lr_frac", "grad_clip")


def stage_command(index: int, config: dict, step: int, data: list[str]) -> str:
    """The `svrl pretrain` line that reproduces a stage from its recorded parameters (paths made canonical:
    `data` are the card's names for its datasets)."""
    from svrl_trainer.sft import SFTConfig

    defaults = {f.name: f.default for f in dataclasses.fields(SFTConfig)}
    for name in FLAGLESS:
        if config[name] != defaults[name]:
            raise SystemExit(f"stage {index}: {name}={config[name]} has no CLI flag; the card cannot name it")
    args = ["svrl", "pretrain", "--data", *data]
    if config["init"]:
        args += ["--init", f"runs/base/stage{index - 1}"]
        if config.get("grow"):
            args += ["--grow", config["grow"]]
    else:
        args += ["--preset", config["preset"]]
        if "image_size" in config["preset_overrides"]:
            args += ["--image-size", str(config["preset_overrides"]["image_size"])]
    args += [
        "--steps",
        str(config["steps"]),
        "--batch-size",
        str(config["batch_size"]),
        "--lr",
        f"{config['lr']:g}",
    ]
    args += ["--warmup-steps", str(config["warmup_steps"]), "--seed", str(config["seed"])]
    for flag, name in (("--aux-weight", "aux_weight"), ("--keypoint-weight", "keypoint_weight")):
        if config[name]:
            args += [flag, f"{config[name]:g}"]
    if config["label_sigma"]:
        args += ["--label-sigma", f"{config['label_sigma']:g}"]
    if not config["augment"]:
        args += ["--no-augment"]
    if step < config["steps"]:
        args += ["--stop-after", str(step)]
    args += ["--out", f"runs/base/stage{index}", "--threads", "2", "--save-every", "250", "--resume"]
    return shlex.join(args)


def training_hours(log: Path, last_step: int) -> tuple[float, int]:
    """Hours of training up to `last_step`, from the log's timestamps between consecutive progress lines of
    one process. An interval over 3x the median (the run was paused for an evaluation) counts as the median.
    Returns (hours, intervals replaced)."""
    points: list[tuple[datetime, int]] = []
    segments: list[list[tuple[datetime, int]]] = []
    for line in log.read_text().splitlines():
        if "svrl_trainer.sft: data:" in line and points:
            segments.append(points)
            points = []
        match = LOG_LINE.match(line)
        if match and int(match[2]) <= last_step:
            points.append((datetime.fromisoformat(match[1]), int(match[2])))
    segments.append(points)
    intervals = [
        ((b[0] - a[0]).total_seconds(), b[1] - a[1])
        for seg in segments
        for a, b in itertools.pairwise(seg)
        if b[1] > a[1]
    ]
    per_step = [s / n for s, n in intervals]
    median = statistics.median(per_step)
    replaced = sum(p > 3 * median for p in per_step)
    seconds = sum(
        min(p, median) * n if p > 3 * median else s for (s, n), p in zip(intervals, per_step, strict=True)
    )
    return seconds / 3600, replaced


def cpu_name() -> str:
    """'2-core Intel(R) Xeon(R) Processor': the machine a stage ran on, for the card."""
    import os

    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next(
            line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = "CPU"
    return f"{os.cpu_count()}-core {model}"


def dataset_names(args: argparse.Namespace, states: list[dict]) -> dict[str, tuple[str, str]]:
    """Each dataset the new stages trained on (resolved path) -> (the card's name for it, the svrl demos line
    that made it). A stage trained on data the arguments do not name is refused: the card would be wrong."""
    used = {str(Path(d).resolve()) for s in states for d in s["config"]["data"]}
    if args.pool_command is not None:
        if len(used) != 1:
            raise SystemExit(
                f"the stages were trained on different data ({sorted(used)}): name each with --dataset"
            )
        return {used.pop(): (POOL_DIR, args.pool_command)}
    names = {str(Path(d).resolve()): (f"runs/base/{Path(d).name}", line) for d, line in args.dataset}
    if len({n for n, _ in names.values()}) != len(names):
        raise SystemExit("two --dataset folders share a name: the card could not tell them apart")
    if missing := used - set(names):
        raise SystemExit(f"the stages trained on {sorted(missing)} too: name it with --dataset")
    return names


def plot_loss(histories: list[list[dict]], offsets: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from svrl_trainer.atomic import save_figure_atomic

    fig, (ce, kp) = plt.subplots(1, 2, figsize=(9, 3.2))
    for i, (history, offset) in enumerate(zip(histories, offsets, strict=True), start=1):
        steps = [offset + h["step"] for h in history]
        ce.plot(steps, [h["loss"] for h in history], lw=1, label=f"stage {i}")
        if all("keypoints" in h for h in history):
            kp.plot(steps, [h["keypoints"] for h in history], lw=1, label=f"stage {i}")
    ce.set(xlabel="step (both stages)", ylabel="action-token cross-entropy", title="behaviour cloning loss")
    kp.set(
        xlabel="step (both stages)", ylabel="smooth-L1 (normalised px)", title="keypoint loss", yscale="log"
    )
    for ax in (ce, kp):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure_atomic(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stage", type=Path, action="append", required=True, help="each stage's checkpoint, in order"
    )
    parser.add_argument("--log", type=Path, action="append", required=True, help="each stage's training log")
    parser.add_argument(
        "--eval", type=Path, required=True, help="svrl eval output of the last stage on the pool"
    )
    parser.add_argument("--eval-command", required=True, help="the svrl eval line that made --eval")
    data_source = parser.add_mutually_exclusive_group(required=True)
    data_source.add_argument(
        "--pool-command", help="the svrl demos line that made the one dataset all stages used"
    )
    data_source.add_argument(
        "--dataset", nargs=2, action="append", metavar=("DIR", "COMMAND"),
        help="a dataset the stages trained on and the svrl demos line (without --out) that made it",
    )  # fmt: skip
    parser.add_argument(
        "--prior", type=Path, help="a shipped base the first --stage continued from (its training.json)"
    )
    parser.add_argument(
        "--machine", default=cpu_name(), help="what the new stages ran on (default: this machine's CPU)"
    )
    parser.add_argument(
        "--prior-machine", default="not recorded", help="what the prior's stages ran on, if it does not say"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if len(args.log) != len(args.stage):
        raise SystemExit("one --log per --stage")

    from svrl_policy.checkpoint import atomic_directory, load_components

    final = args.stage[-1]
    load_components(final)  # checksums verified: what ships is what was evaluated
    report = json.loads((args.eval / "eval.json").read_text())
    new_states = [json.loads((s / "trainer_state.json").read_text()) for s in args.stage]
    names = dataset_names(args, new_states)
    if args.prior is not None and not (args.prior / "training.json").is_file():
        raise SystemExit(f"--prior {args.prior} holds no training.json: not a base this script shipped")
    prior = json.loads((args.prior / "training.json").read_text()) if args.prior else None
    init = new_states[0]["config"]["init"]
    if prior is None and init:
        raise SystemExit(f"stage 1 starts from {init}: name that base with --prior")
    if prior is not None and (not init or Path(init).resolve() != args.prior.resolve()):
        raise SystemExit(f"--prior {args.prior}, but the first --stage started from {init}")
    data_commands = [f"{line} --out {directory}" for directory, line in names.values()]
    stage_commands = [
        stage_command(
            i, s["config"], s["step"], [names[str(Path(d).resolve())][0] for d in s["config"]["data"]]
        )
        for i, s in enumerate(new_states, start=len(prior["stages"]) + 1 if prior else 1)
    ]
    times = [training_hours(log, s["step"]) for log, s in zip(args.log, new_states, strict=True)]
    stages = [
        {"checkpoint": str(stage), "step": s["step"], "config": s["config"], "history": s["progress"]["history"],
         "training_seconds": round(t[0] * 3600), "paused_intervals_replaced": t[1], "machine": args.machine}
        for stage, s, t in zip(args.stage, new_states, times, strict=True)
    ]  # fmt: skip
    if prior is not None:
        n = len(prior["stages"])
        prior_data, prior_stages = prior["commands"][:-n], prior["commands"][-n:]
        pool = next((c for c in data_commands if c.endswith(f" --out {POOL_DIR}")), None)
        if pool is not None and pool != prior_data[0]:
            raise SystemExit(f"{POOL_DIR} must be made as the prior's was: {prior_data[0]}")
        data_commands = list(dict.fromkeys(prior_data + data_commands))
        stage_commands = prior_stages + stage_commands
        stages = [{"machine": args.prior_machine, **s} for s in prior["stages"]] + stages
    commands = data_commands + stage_commands

    with atomic_directory(args.out) as tmp:
        for name in POLICY_FILES:
            shutil.copy2(final / name, tmp / name)
        offsets = list(itertools.accumulate([0] + [s["step"] for s in stages[:-1]]))
        plot_loss([s["history"] for s in stages], offsets, tmp / "loss.png")
        shutil.copy2(args.eval / "eval.json", tmp / "eval.json")
        shutil.copy2(args.eval / "eval.png", tmp / "eval.png")
        training = {"stages": stages, "commands": commands, "eval_command": args.eval_command}
        (tmp / "training.json").write_text(json.dumps(training, indent=1) + "\n")
        (tmp / "README.md").write_text(card(args, stages, commands, report))
    print(f"wrote {args.out}: success {100 * report['success_rate']:.1f} % on {report['episodes']} episodes")


def card(args: argparse.Namespace, stages: list[dict], commands: list[str], report: dict) -> str:
    total_steps = sum(s["step"] for s in stages)
    hours = sum(s["training_seconds"] for s in stages) / 3600
    successes = round(report["success_rate"] * report["episodes"])
    rows = "\n".join(
        f"| {i} | {s['step']:,} | {_start(i, s['config'])} | {h['loss']:.3f} | {h['token_acc']:.3f} "
        f"| {h.get('keypoints', float('nan')):.3f} | {s['training_seconds'] / 3600:.1f} h | {s['machine']} |"
        for i, (s, h) in enumerate(((s, s["history"][-1]) for s in stages), start=1)
    )
    tasks = "\n".join(
        f"| {t['task']} | {t['episodes']} | {100 * t['success_rate']:.0f} % |" for t in report["tasks"]
    )
    code = "\n".join(commands)
    return f"""# {args.out.name}: the base policy shipped with svrl

Behaviour-cloned by `svrl pretrain` on the pretraining pool of the embedded simulator (`--suite pretrain`:
randomised layouts, distractors including identical objects, the suites' verbs and structure, and no task or
initial state of the four evaluation suites). `svrl demo` and `svrl bench learn` fine-tune it on 1 (or 10)
demonstrations per task, then GRPO takes over. Made by `scripts/ship_base.py` from the run's own files: every
figure below is read from them.

## Held-out success on the pool

**{100 * report["success_rate"]:.1f} %** ({successes} of {report["episodes"]} episodes; greedy; the pool's
evaluation initial states, which no demonstration starts from):

    {args.eval_command}

| task | episodes | success |
|---|---|---|
{tasks}

## How it was made

{len(stages)} stages, {total_steps:,} optimizer steps of batch 32 in all, about **{hours:.1f} h** of training on
CPUs (no GPU; each stage's machine is in the table). The time comes from the training logs' timestamps; pauses
for evaluations are replaced by the median interval, and other work shared the cores at times, so treat it as
an upper bound.

| stage | steps | start | final CE | token acc | keypoint loss | time | machine |
|---|---|---|---|---|---|---|---|
{rows}

A stage stopped with `--stop-after` keeps the learning-rate schedule of its `--steps` (nearly constant at
these steps: a stage that runs its whole `--steps` is one that decays it). The runs themselves were stopped and
resumed across sessions, and taken at those steps from their periodic checkpoints; resuming is bit-exact
(`tests/policy/test_sft_resume.py`), so the commands below, run once each, give the same weights on the same
machine and thread count (floating-point reductions may differ on another CPU).

```bash
{code}
```

Stage {len(stages)}'s `runs/base/stage{len(stages)}` is this folder's checkpoint (`training.json` holds each
stage's recorded parameters and loss history; the runs originally lived in {", ".join(f"`{s['checkpoint']}`" for s in stages)}).

![loss](loss.png)

## Files

`model.safetensors` (weights, fp32) with `config.json`, `codec.json` (the action tokenizer's bins),
`preprocessor.json`, `tokenizer.json`, and `manifest.json` whose sha256 sums every load checks. `eval.json`
/ `eval.png` are the evaluation above.
"""


def _start(index: int, config: dict) -> str:
    if not config["init"]:
        return f"from scratch, {config['preset']}"
    grown = f", grown {config['grow']}" if config.get("grow") else ""
    more = f", on {len(config['data'])} datasets" if len(config["data"]) > 1 else ""
    return f"from stage {index - 1}{grown}{more}"


if __name__ == "__main__":
    main()
