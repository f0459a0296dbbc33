"""`svrl bench learn-table`: per-suite `svrl bench learn` results side by side, in the paper's layout.

SimpleVLA-RL reports its data-efficiency result as one table, a column per LIBERO suite: the 1-demo SFT policy,
the same policy after RL, and the full-data SFT policy. `svrl bench learn` runs one suite per call (a suite is
an hour of CPU), so this command only reads their `bench_learn.json` files and lays them out. It refuses
results that would not belong in one table: two of the same suite, different bases, different baselines or
GRPO runs with different `--grpo-set` settings (one suite at another learning rate is another experiment).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from svrl_trainer.atomic import save_figure_atomic, write_text_atomic

SUITE_ORDER = ("spatial", "object", "goal", "long")


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One table's data from several suites' bench results (each as `svrl bench learn` wrote it)."""
    if not results:
        raise ValueError("no bench results given")
    suites = [r["suite"] for r in results]
    if len(set(suites)) != len(suites):
        raise ValueError(f"a suite appears twice: {suites}")
    bases = {r["base"].get("model_sha256") for r in results}
    if len(bases) != 1:
        raise ValueError(f"the results start from different bases (weights {sorted(map(str, bases))})")
    demos = {r["plan"]["baseline_demos_per_task"] for r in results}
    if len(demos) != 1:
        raise ValueError(f"the results use different baselines ({sorted(demos)} demos per task)")
    n = demos.pop()
    overrides = {tuple(r["plan"].get("grpo_overrides", ())) for r in results}
    if len(overrides) != 1:
        raise ValueError(f"the results ran GRPO with different --grpo-set settings ({sorted(overrides)})")
    order = sorted(results, key=lambda r: SUITE_ORDER.index(r["suite"]) if r["suite"] in SUITE_ORDER else 99)
    rows = {"sft_1demo": {}, "grpo": {}, f"sft_{n}demo": {}}
    per_suite = {}
    for r in order:
        for key in rows:
            rows[key][r["suite"]] = r["success"][key]
        grpo = r["grpo_runs"]["grpo"]
        per_suite[r["suite"]] = {
            "grpo_minutes": grpo["training_minutes"],
            "grpo_steps": grpo["steps"],
            "grpo_gain_points": grpo["gain_points"],
            "episodes": r["episodes_per_figure"]["grpo"],
            "finished": r["finished"],
        }
    for values in rows.values():
        values["average"] = sum(values.values()) / len(values)
    return {
        "suites": [r["suite"] for r in order],
        "baseline_demos_per_task": n,
        "success": rows,
        "per_suite": per_suite,
        "average_gain_points": 100 * (rows["grpo"]["average"] - rows["sft_1demo"]["average"]),
        "grpo_overrides": list(overrides.pop()),
        "base": order[0]["base"],
        "machines": sorted({r["machine"] for r in order}),
    }


def table_markdown(combined: dict[str, Any]) -> str:
    suites, n = combined["suites"], combined["baseline_demos_per_task"]
    rows = combined["success"]
    cols = _columns(suites)
    steps = ", ".join(
        f"{s} {p['grpo_steps']} steps / {p['grpo_minutes']:.0f} min" for s, p in combined["per_suite"].items()
    )
    lines = [
        "| held-out success | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
        _row("1-demo SFT", rows["sft_1demo"], cols),
        _row("1-demo SFT + GRPO", rows["grpo"], cols),
        "| gain (points) | "
        + " | ".join(f"{100 * (rows['grpo'][c] - rows['sft_1demo'][c]):+.1f}" for c in cols)
        + " |",
        _row(f"{n}-demo SFT", rows[f"sft_{n}demo"], cols),
        "",
        f"GRPO: {steps}. Episodes per figure: "
        + ", ".join(f"{s} {p['episodes']}" for s, p in combined["per_suite"].items())
        + f". Base: `{_shown_path(combined['base']['path'])}` (weights sha256 {str(combined['base']['model_sha256'])[:12]}).",
        "GRPO settings beyond `svrl_trainer/configs/tiny.yaml`: "
        + (", ".join(f"`{o}`" for o in combined["grpo_overrides"]) or "none")
        + ".",
        f"Machine: {'; '.join(combined['machines'])}.",
        "",
    ]
    return "\n".join(lines)


def _shown_path(path: str) -> str:
    """Relative to the working directory when under it: a committed table names `models/base-tiny96`, not
    the absolute path of the checkout it ran in (the JSON keeps that, as provenance)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _columns(suites: list[str]) -> list[str]:
    """The suites, then their average when there is more than one."""
    return [*suites, "average"] if len(suites) > 1 else list(suites)


def _row(label: str, values: dict[str, float], cols: list[str]) -> str:
    return f"| {label} | " + " | ".join(f"{100 * values[c]:.1f} %" for c in cols) + " |"


def plot_table(combined: dict[str, Any], path: Path) -> None:
    """Grouped bars, one group per suite: 1-demo SFT, after GRPO, N-demo SFT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = combined["baseline_demos_per_task"]
    cols = _columns(combined["suites"])
    bars = (
        ("sft_1demo", "1-demo SFT", "#8c8c8c"),
        ("grpo", "1-demo SFT + GRPO", "#c44e52"),
        (f"sft_{n}demo", f"{n}-demo SFT", "#4c72b0"),
    )
    x = np.arange(len(cols))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (key, label, colour) in enumerate(bars):
        values = [100 * combined["success"][key][c] for c in cols]
        ax.bar(x + (i - 1) * 0.27, values, 0.27, label=label, color=colour)
        for xi, v in zip(x + (i - 1) * 0.27, values, strict=True):
            ax.text(xi, v + 1, f"{v:.0f}", ha="center", fontsize=7)
    ax.set_xticks(x, cols)
    ax.set_ylabel("held-out success (%)")
    ax.set_ylim(0, 105)
    ax.set_title("data efficiency: 1 demo per task, then GRPO", fontsize=9, pad=22)
    # One row above the axes: inside them it covers the tallest bar's label, whichever suite that is.
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    save_figure_atomic(fig, path)


def write_table(results: list[Path], out: Path) -> dict[str, Any]:
    combined = combine([json.loads(p.read_text()) for p in results])
    combined["sources"] = [str(p) for p in results]
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "bench_learn_suites.json", json.dumps(combined, indent=1) + "\n")
    write_text_atomic(out / "bench_learn_suites.md", table_markdown(combined))
    plot_table(combined, out / "bench_learn_suites.png")
    return combined


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    p = bench_sub.add_parser(
        "learn-table", help="several suites' `svrl bench learn` results as one table in the paper's layout"
    )
    p.add_argument("results", type=Path, nargs="+", help="bench_learn.json files, one per suite")
    p.add_argument("--out", type=Path, default=Path("runs/bench_learn"))
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    try:
        combined = write_table(args.results, args.out)
    except (ValueError, KeyError, FileNotFoundError, json.JSONDecodeError) as error:
        print(f"svrl bench learn-table: {error}")
        return 2
    print(table_markdown(combined))
    print(f"wrote {args.out}/bench_learn_suites.json, .md, .png")
    return 0
