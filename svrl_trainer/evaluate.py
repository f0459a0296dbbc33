"""Greedy evaluation on held-out initial states, reported the way people read results.

Only each task's *evaluation* initial states are used here and the trainer only ever samples
*training* states, so a reported success rate never comes from a state the policy was trained on
(SimpleVLA-RL trains on LIBERO's evaluation states; see their issue #34).

Two diagnostics step outside that on request, and the report says so: `split="train"` runs the training
states (does RL generalise beyond the states it trained on, or only fit them?) and `temperature > 0` samples
as GRPO's rollouts do (is a gain in sampled success also a gain for greedy decoding?).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from svrl_trainer.atomic import save_figure_atomic, write_text_atomic
from svrl_trainer.catalog import TaskRef
from svrl_trainer.rollout import EpisodeSpec, max_chunks_for


@dataclass
class TaskResult:
    task: str
    suite: str
    episodes: int
    """episodes that ran to their end (lost ones excluded: their outcome is unknown)"""
    successes: int
    lost: int = 0
    """episodes lost with a dead simulator worker; counted neither as success nor as failure"""

    @property
    def success_rate(self) -> float:
        return self.successes / max(self.episodes, 1)


@dataclass
class EvalReport:
    tasks: list[TaskResult]
    temperature: float
    protocol: str | None = None
    """the evaluation protocol the env ran under (`env.options.protocol`, svrl_policy/protocols.py), if any"""
    split: str = "eval"
    """which initial states: "eval" (held out, the figure to report) or "train" (a diagnostic)"""

    def suites(self) -> dict[str, float]:
        per_suite: dict[str, list[TaskResult]] = defaultdict(list)
        for result in self.tasks:
            per_suite[result.suite].append(result)
        return {
            suite: sum(r.successes for r in rs) / max(sum(r.episodes for r in rs), 1)
            for suite, rs in sorted(per_suite.items())
        }

    @property
    def is_diagnostic(self) -> bool:
        """not the held-out greedy figure a result reports: training states, or sampled decoding"""
        return self.split != "eval" or self.temperature > 0

    @property
    def folder_name(self) -> str:
        """`eval` for the held-out greedy figure; a diagnostic gets one of its own so it never replaces it"""
        suffix = (["train"] if self.split == "train" else []) + (
            [f"T{self.temperature:g}"] if self.temperature > 0 else []
        )
        return "_".join(["eval", *suffix])

    @property
    def overall(self) -> float:
        return sum(r.successes for r in self.tasks) / max(sum(r.episodes for r in self.tasks), 1)

    @property
    def episodes(self) -> int:
        return sum(r.episodes for r in self.tasks)

    @property
    def lost(self) -> int:
        return sum(r.lost for r in self.tasks)

    def to_dict(self) -> dict:
        return {
            "temperature": self.temperature,
            "split": self.split,
            "protocol": self.protocol,
            "episodes": self.episodes,
            "lost_episodes": self.lost,
            "success_rate": self.overall,
            "suites": self.suites(),
            "tasks": [{**asdict(r), "success_rate": r.success_rate} for r in self.tasks],
        }

    def markdown(self) -> str:
        lines = ["| task | episodes | success |", "|---|---|---|"]
        lines += [f"| {r.task} | {r.episodes} | {100 * r.success_rate:.1f} % |" for r in self.tasks]
        for suite, rate in self.suites().items():
            lines.append(
                f"| **{suite}** (all tasks) | {sum(r.episodes for r in self.tasks if r.suite == suite)} | **{100 * rate:.1f} %** |"
            )
        if self.is_diagnostic:
            decoding = "greedy" if self.temperature == 0 else f"sampled at T = {self.temperature:g}"
            lines.append(
                f"\nDiagnostic: {self.split} initial states, {decoding} (not a held-out greedy figure)."
            )
        if self.lost:
            lines.append(f"\n{self.lost} episode(s) lost with a dead simulator worker: not counted.")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path, title: str = "held-out success") -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / "eval.json", json.dumps(self.to_dict(), indent=1))
        write_text_atomic(out_dir / "eval.md", self.markdown())
        plot_task_success(self, out_dir / "eval.png", title)


def evaluate(
    engine,
    tasks: list[TaskRef],
    *,
    episodes_per_task: int,
    chunk_length: int,
    temperature: float = 0.0,
    progress=None,
    protocol: str | None = None,
    split: str = "eval",
    seed: int = 0,
) -> EvalReport:
    """Run each task from its first `episodes_per_task` evaluation initial states.

    `engine` is a `rollout_engine.RolloutEngine` (in process or Ray actors), already synced to the policy.
    `protocol`: the name of the evaluation protocol the engine's env runs (recorded in the report); a
    protocol that decodes greedily (SimpleVLA-RL's, OpenVLA-OFT's) refuses a temperature above 0.
    `split="train"` runs the first training states instead; `seed` fixes the sampling noise when
    `temperature > 0`, so a sampled evaluation is repeatable.
    """
    if split not in ("eval", "train"):
        raise ValueError(f"split must be 'eval' or 'train', got {split!r}")
    if temperature < 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    if protocol is not None:
        from svrl_policy.protocols import get_protocol

        if get_protocol(protocol).greedy and temperature != 0.0:
            raise ValueError(f"protocol {protocol!r} evaluates greedily (temperature 0), got {temperature}")
    specs: list[EpisodeSpec] = []
    for task in tasks:
        states = task.eval_states if split == "eval" else task.train_states
        if episodes_per_task > len(states):
            raise ValueError(
                f"{task.name} has {len(states)} {split} initial states, {episodes_per_task} requested"
            )
        specs += [EpisodeSpec(task.name, state) for state in states[:episodes_per_task]]
    max_steps = max(task.max_steps for task in tasks)
    batch = engine.collect(
        specs,
        temperature=temperature,
        seed=seed if temperature > 0 else None,  # greedy decoding draws no noise: leave it as it was
        max_chunks=max_chunks_for(max_steps, chunk_length),
        keep_observations=False,
        on_wave_done=progress,
    )
    results = []
    for task in tasks:
        idx = [i for i, s in enumerate(batch.specs) if s.task == task.name and not batch.worker_failed[i]]
        lost = sum(1 for i, s in enumerate(batch.specs) if s.task == task.name and batch.worker_failed[i])
        results.append(TaskResult(task.name, task.suite, len(idx), int(np.sum(batch.success[idx])), lost))
    return EvalReport(results, temperature, protocol, split)


def plot_task_success(report: EvalReport, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.task for r in report.tasks]
    rates = [100 * r.success_rate for r in report.tasks]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names) + 2), 4))
    ax.bar(range(len(names)), rates, color="#4c72b0")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("success (%)")
    ax.set_title(f"{title}: {100 * report.overall:.1f} % over {report.episodes} episodes")
    fig.tight_layout()
    save_figure_atomic(fig, path)
