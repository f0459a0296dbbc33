"""Asynchronous inference keeps a real-time arm busy at chunk boundaries; synchronous inference cannot.

The DDS test runs the whole sim graph in real time (`svrl up --profile sim`, sim_node `timing: realtime`)
with a policy made deliberately slow in a controlled way (`simulated_latency_s` 0.25 s, two and a half
control periods, added to every inference). The outcome still hangs on the machine's own latency (see the
`slow` mark below), so the DDS test is out of `make test`:
synchronous inference leaves two states without a command at each boundary while the sim keeps time (the
chunk cannot arrive before the state after its predecessor's last action plus 0.25 s); a loaded machine
can only stall the sim's own timer and shrink that, so the test asks for one per boundary on average.
Asynchronous inference starts the next chunk once 7 steps or fewer remain, that is as soon as a chunk lands, so
each chunk must land within 0.8 s - 2 x latency: 0.3 s less twice the graph's own latency.
arm_controller runs one cycle per joint state (`trigger: joint_states`), so "no command for a state" is an
exact count, not a timing judgement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from svrl_ros.bench_chunks import (
    ChunkProbe,
    ChunkSeen,
    GoalRecord,
    Sample,
    boundary_metrics,
    graph_overrides,
    start_graph,
)
from svrl_ros.child_process import stop_process

from tests.ros.graph_harness import sim_instruction

P = 100_000_000


def test_bench_chunks_is_registered() -> None:
    from svrl.cli import build_parser

    args = build_parser().parse_args(
        ["bench", "chunks", "--latencies", "0", "0.2", "--trigger", "joint_states"]
    )
    assert args.latencies == [0.0, 0.2] and args.trigger == "joint_states" and args.steps == 80
    assert args.handler.__name__ == "_handle_bench_chunks"


def _sample(arrived: float, k: int, value: float) -> Sample:
    return Sample(arrived, k * P, np.full(7, value))


def _chunk(arrived: float, k: int, length: int) -> ChunkSeen:
    return ChunkSeen(arrived, k * P, length)


def test_metrics_count_gaps_holds_and_jumps() -> None:
    """Two chunks of 4; the second lands after state 4 went unanswered (a one-period gap)."""
    record = GoalRecord(
        states=[_sample(0.1 * k, k, 0.0) for k in range(0, 12)],
        chunks=[_chunk(0.0, 0, 4), _chunk(0.45, 4, 4)],
        commands=[_sample(0.1 * k + 0.01, k, 0.01 * k) for k in range(0, 4)]
        + [_sample(0.51, 5, 0.05), _sample(0.61, 6, 0.06), _sample(0.71, 7, 0.07)]
        + [_sample(0.81, 7, 0.07)]  # a re-send for state 7: dropped
        + [_sample(0.91, 9, 0.5), _sample(1.01, 10, 0.5)],  # holds: one latched target repeated
    )
    m = boundary_metrics(record, P)
    assert m["commands"] == 7 and m["chunks"] == 2
    assert m["periods"] == 8 and m["without_command"] == 1  # states 0..7, state 4 unanswered
    assert m["boundaries"] == [1] and m["boundary_gap_total"] == 1 and m["boundary_gap_max"] == 1
    # a steady ramp: the commanded velocity never changes, across the gap too (velocity per elapsed time)
    assert m["jump_boundary_rad_s2"]["max"] == pytest.approx(0.0, abs=1e-9)
    assert m["jump_other_rad_s2"]["max"] == pytest.approx(0.0, abs=1e-9)


def test_metrics_count_one_stall_once_however_many_chunks_land_in_it() -> None:
    record = GoalRecord(
        states=[_sample(0.1 * k, k, 0.0) for k in range(0, 12)],
        chunks=[_chunk(0.0, 0, 4), _chunk(0.52, 4, 4), _chunk(0.58, 5, 4)],
        commands=[_sample(0.1 * k + 0.01, k, 0.01 * k) for k in (0, 1, 2, 3, 6, 7, 8)],
    )
    m = boundary_metrics(record, P)
    assert (m["without_command"], m["boundaries"], m["boundary_gap_total"]) == (2, [2], 2)


def test_metrics_seamless_takeover_has_no_gap() -> None:
    record = GoalRecord(
        states=[_sample(0.1 * k, k, 0.0) for k in range(0, 8)],
        chunks=[_chunk(0.0, 0, 8), _chunk(0.25, 1, 8)],
        commands=[_sample(0.1 * k + 0.01, k, 0.01 * k * k) for k in range(0, 8)],
    )
    m = boundary_metrics(record, P)
    assert (m["without_command"], m["boundaries"]) == (0, [0])
    assert m["jump_other_rad_s2"]["median"] == pytest.approx(np.linalg.norm(np.full(7, 0.02)) / 0.01)


def test_metrics_a_late_command_of_the_old_chunk_is_not_the_takeover() -> None:
    """The command for state 3 (old chunk) is received just after the chunk inferred from state 4."""
    record = GoalRecord(
        states=[_sample(0.1 * k, k, 0.0) for k in range(0, 10)],
        chunks=[_chunk(0.0, 0, 4), _chunk(0.40, 4, 4)],
        commands=[_sample(0.1 * k + 0.01, k, 0.01 * k) for k in (0, 1, 2)]
        + [_sample(0.405, 3, 0.03)]
        + [_sample(0.1 * k + 0.01, k, 0.01 * k) for k in (6, 7, 8)],
    )
    m = boundary_metrics(record, P)
    assert (m["without_command"], m["boundaries"]) == (2, [2])


def test_probe_counts_a_resent_chunk_once() -> None:
    """policy_server re-publishes the running chunk after a stall; it is not a new chunk."""
    import threading
    from types import SimpleNamespace

    probe = ChunkProbe.__new__(ChunkProbe)
    probe._lock, probe._record = threading.Lock(), GoalRecord()

    def chunk(stamp_s: int, length: int = 8) -> SimpleNamespace:
        return SimpleNamespace(
            header=SimpleNamespace(stamp=SimpleNamespace(sec=stamp_s, nanosec=0)), chunk_length=length
        )

    for msg, received in ((chunk(3), 1), (chunk(3), 2), (chunk(4), 3), (chunk(4, 0), 4)):
        probe._on_chunk(msg, {"received_timestamp": received * 1_000_000_000})
    assert [(c.arrived_s, c.stamp_ns) for c in probe._record.chunks] == [(1.0, 3 * 10**9), (3.0, 4 * 10**9)]


# `slow`: out of `make test` (run by `make test-all`). It holds only where the graph's own latency stays well
# under async's slack. On session 11's 2-core Intel Xeon (idle) it failed 8 of 12 runs: sync boundaries left
# 2-4 states unanswered, not the 2 the 0.25 s explains, and async goals 2-15 (the slack above was ~0.1 s). A
# wall-clock outcome cannot gate CI; `svrl bench chunks` measures the same thing as a benchmark.
@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_async_inference_leaves_no_state_without_a_command_where_sync_does(
    processes, graph_checkpoint: Path, tmp_path: Path
) -> None:
    log = tmp_path / "stack.log"
    overrides = graph_overrides(graph_checkpoint, "none", "joint_states")
    proc = start_graph(processes.start_python, [*overrides, "policy_server.async_lead_steps=7"], log)
    probe = None
    try:
        probe = ChunkProbe()
        probe.wait_for_graph(proc, log)
        results = {}
        for inference in ("sync", "async"):
            probe.set_parameters(inference=inference, simulated_latency_s=0.25)
            record = probe.run_goal(sim_instruction(0), 40)
            assert record.reason.startswith("max_steps") and record.steps == 40, (
                record.reason,
                log.read_text()[-3000:],
            )
            results[inference] = boundary_metrics(record)
    finally:
        if probe is not None:
            probe.close()
        stop_process(proc)
    sync, async_ = results["sync"], results["async"]
    # sync: 5 chunks of 8; at the 4 boundaries the arm had nothing to execute (2 states each on time)
    assert sync["chunks"] == 5 and len(sync["boundaries"]) == 4, sync
    assert sync["boundary_gap_total"] >= 4 and sync["without_command"] >= 4, sync
    # async: more, overlapping chunks; every one took over with no state left unanswered
    assert async_["chunks"] > 5 and len(async_["boundaries"]) >= 4, async_
    assert async_["boundary_gap_total"] == 0 and async_["without_command"] == 0, async_
