"""`svrl bench serve`: the report has its fields, its counts add up and its figures are finite.

Never a threshold on time: the machine running the tests is shared and its load is not ours to judge.
One policy_server process serves both sizes (a given checkpoint is served from one process).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.ros.conftest import build_graph_checkpoint

CHUNKS = 6
SIZES = [32, 64]


def test_bench_serve_is_registered() -> None:
    from svrl.cli import build_parser

    args = build_parser().parse_args(["bench", "serve", "--json", "--sizes", "32", "64", "--chunks", "6"])
    assert args.json and args.sizes == SIZES and args.chunks == CHUNKS and args.backend == "onnx"
    assert args.handler.__name__ == "_handle_bench_serve"


def _finite(stats: dict) -> bool:
    return all(isinstance(stats[k], float) and math.isfinite(stats[k]) for k in ("median", "p90"))


@pytest.mark.ros
@pytest.mark.timeout(150)
def test_bench_serve_report(processes, tmp_path: Path) -> None:
    from svrl_ros.bench_serve import format_table, run_serve_bench

    ckpt = build_graph_checkpoint(tmp_path)  # debug preset, 64 px, exported to ONNX
    report = run_serve_bench(
        sizes=SIZES, chunks=CHUNKS, warmup=1, backend="onnx", ckpt=str(ckpt), spawn=processes.start_python
    )
    report = json.loads(json.dumps(report))  # what --json prints is plain JSON

    machine = report["machine"]
    assert machine["cpu"] and machine["nproc"] >= 1 and len(machine["load_avg_before"]) == 3
    assert report["backend"] == "onnx" and report["target_overhead_ms"] == 3.0
    assert [r["image_size"] for r in report["results"]] == SIZES
    for r in report["results"]:
        assert r["model_image_size"] == 64 and r["runtime"].startswith("onnxruntime")
        assert r["goal_reason"] == "max_steps", r
        assert r["chunks"] >= 1 and r["chunks"] + r["resent_excluded"] == CHUNKS, r
        # greedy decoding of the same observation: the served chunk is the bare runtime's chunk
        assert r["served_equals_bare"] == r["chunks"], r
        for key in (
            "serve_ms", "bare_ms", "overhead_ms", "overhead_paired_ms", "roundtrip_ms", "inbound_ms", "outbound_ms"
        ):  # fmt: skip
            assert _finite(r[key]), (key, r[key])
        breakdown = r["serve_breakdown_ms"]
        assert set(breakdown) == {"to_runner", "observation", "inference", "to_publish"}
        assert all(_finite(part) for part in breakdown.values())
        assert r["serve_ms"]["median"] > 0 and r["bare_ms"]["median"] > 0
        expected = r["serve_ms"]["median"] - r["bare_ms"]["median"]
        assert r["overhead_ms"]["median"] == pytest.approx(expected, abs=2e-3)
        assert isinstance(r["overhead_within_target"], bool)
    table = format_table(report)
    assert all(f"{size} px" in table for size in SIZES)
