"""Plot the lr on/off runs on spatial side by side (periodic 60-episode eval and sampled success per step).

Reads the metrics.jsonl copied beside this script: lr2e-4 (the README bench, runs/bench13/spatial/grpo),
lr1e-4 and lr6e-4 (runs/bench16). Run from the repository root: `.venv/bin/python docs/figures/lr_spatial/compare_lr.py`.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from svrl_trainer.atomic import save_figure_atomic

HERE = Path(__file__).parent
RUNS = {"lr 1e-4": "lr1e-4", "lr 2e-4 (README bench)": "lr2e-4", "lr 6e-4 (stopped at step 5)": "lr6e-4"}


def main() -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label, folder in RUNS.items():
        rows = [
            json.loads(line) for line in (HERE / folder / "metrics.jsonl").read_text().splitlines() if line
        ]
        evals = [(r["step"], 100 * r["eval/success"]) for r in rows if "eval/success" in r]
        sampled = [
            (r["step"], 100 * r["rollout/sampled_success"]) for r in rows if "rollout/sampled_success" in r
        ]
        left.plot([s for s, _ in evals], [v for _, v in evals], marker="o", label=label)
        right.plot([s for s, _ in sampled], [v for _, v in sampled], alpha=0.8, label=label)
    left.set(
        title="held-out greedy success (60 episodes)", xlabel="GRPO step", ylabel="success %", ylim=(0, 100)
    )
    right.set(title="sampled success of the step's rollouts (T = 1)", xlabel="GRPO step", ylim=(0, 100))
    left.legend(loc="upper left")
    figure.suptitle("spatial, from the same 1-demo SFT checkpoint, 60-min budget, 2-core Xeon")
    figure.tight_layout()
    save_figure_atomic(figure, HERE / "lr_curves.png")


if __name__ == "__main__":
    main()
