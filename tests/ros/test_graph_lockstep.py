"""A lock-step run through the robot graph reproduces the in-process episode, chunk for chunk.

`svrl up --profile sim` (sim_node in lock-step, policy_server with the learned runner on an exported ONNX
policy, arm_controller) against the same runtime stepping a SimEnv directly, from the same initial
states: same action chunks (so the same tokens), same outcome, same number of steps. This is what makes
"the policy node that was trained is the one that drives the arm" checkable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from svrl_ros.graph_check import (
    GraphClient,
    chunks_agree,
    first_difference,
    graph_check,
    start_graph,
    stop_graph,
)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]


def test_graph_reproduces_in_process_episodes(ros_env, graph_checkpoint: Path, tmp_path: Path) -> None:
    report = graph_check(graph_checkpoint, "spatial", 1, tmp_path, max_tasks=2)
    assert report["runtime"].startswith("onnxruntime"), "the graph should run the exported policy"
    assert len(report["episodes"]) == 2
    for episode in report["episodes"]:
        ours, graph = episode["in_process"], episode["graph"]
        assert graph["chunks"] >= 2, f"too short to compare anything: {episode}"
        assert (graph["success"], graph["steps"], graph["chunks"]) == (
            ours["success"],
            ours["steps"],
            ours["chunks"],
        ), episode
        assert episode["agree"], episode
    written = json.loads((tmp_path / "graph_check.json").read_text())
    assert written["all_agree"] is True
    assert "| yes |" in (tmp_path / "graph_check.md").read_text()


def test_chunk_comparison_catches_a_single_changed_action() -> None:
    a = [np.zeros((8, 7), np.float32), np.ones((8, 7), np.float32)]
    b = [x.copy() for x in a]
    assert chunks_agree(a, b)
    b[1][3, 2] = np.nextafter(np.float32(1), np.float32(2))
    assert not chunks_agree(a, b)
    assert not chunks_agree(a, b[:1])
    assert first_difference(a, b) == {"chunk": 1, "action": 3, "max_abs": float(b[1][3, 2] - 1)}
    assert first_difference(a, a) is None and first_difference(a, b[:1])["chunk"] == 1
    assert chunks_agree(a, [a[0], a[1][:5]])  # a chunk cut by the step budget compares on its prefix


def test_a_free_text_goal_runs_on_its_budget_and_says_success_was_not_judged(
    ros_env, graph_checkpoint: Path, tmp_path: Path
) -> None:
    """`svrl up --profile sim` serves any instruction; only a sim task's own instruction can be judged."""
    proc = start_graph(graph_checkpoint, 0, 64, tmp_path / "stack.log", ros_env)
    client = None
    try:
        client = GraphClient()
        assert client.wait_for_server(120.0), (tmp_path / "stack.log").read_text()
        trace = client.run("free text", "wave at the camera, then point at the red cube", max_steps=24)
    finally:
        if client is not None:
            client.close()
        stop_graph(proc)
    assert (trace.success, trace.steps) == (False, 24), trace
    assert trace.reason.startswith("max_steps") and "not judged" in trace.reason, trace
    assert len(trace.chunks) == 3  # 24 steps in chunks of 8, each published before it ran


def test_verdict_tells_a_safety_stop_from_a_difference() -> None:
    from svrl_ros.graph_check import DIFFERENT, SAFETY_STOP, SAME, EpisodeTrace, verdict

    chunks = [np.full((8, 7), i, np.float32) for i in range(4)]
    ref = EpisodeTrace("t", False, 30, chunks)
    assert verdict(ref, EpisodeTrace("t", False, 30, [c.copy() for c in chunks])) == SAME
    refused = "error: arm_controller stopped executing the chunk: refused action 2 of the policy chunk: ..."
    assert verdict(ref, EpisodeTrace("t", False, 18, chunks[:3], refused)) == SAFETY_STOP
    other = [c.copy() for c in chunks[:3]]
    other[1][0, 0] += 1e-3
    assert verdict(ref, EpisodeTrace("t", False, 18, other, refused)) == DIFFERENT  # saw something else
    assert verdict(ref, EpisodeTrace("t", False, 18, chunks[:3], "error: stale observation")) == DIFFERENT


def test_verdict_explains_a_difference_after_a_clip_and_only_after_it() -> None:
    """The graph's filter clipped a command in chunk 1: chunks may part from chunk 2 on, not before."""
    from svrl_ros.graph_check import DIFFERENT, SAFETY_CLIP, EpisodeTrace, verdict

    chunks = [np.full((8, 7), i, np.float32) for i in range(4)]
    clipped = {"chunk": 1, "action": 5, "step": 13, "what": "clipped: velocity"}
    ref = EpisodeTrace("t", False, 32, chunks, first_filter_event=clipped)
    later = [c.copy() for c in chunks]
    later[2][0, 0] += 1e-3
    assert verdict(ref, EpisodeTrace("t", True, 20, later[:3], "success")) == SAFETY_CLIP
    earlier = [c.copy() for c in chunks]
    earlier[1][6, 0] += 1e-3  # within the clipped chunk: the clip cannot have caused it
    assert verdict(ref, EpisodeTrace("t", False, 32, earlier)) == DIFFERENT
    refused = EpisodeTrace(
        "t", False, 32, chunks, first_filter_event={**clipped, "what": "refused: workspace"}
    )
    assert verdict(refused, EpisodeTrace("t", False, 32, later)) == DIFFERENT
    assert verdict(EpisodeTrace("t", False, 32, chunks), EpisodeTrace("t", False, 32, later)) == DIFFERENT


def test_filter_shadow_notes_the_first_step_the_graph_would_clip() -> None:
    """The shadow runs arm_controller's filter on the sim's measured joints: a move within the limits passes,
    and with limits a hundredth as fast the very first moving step is clipped (and only the first noted)."""
    from svrl_ros.graph_check import FilterShadow
    from svrl_ros.safety_filter import SafetyLimits

    from svrl_sim.env import SimEnv
    from svrl_sim.tasks import InitState

    move = np.array([0.01, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    with SimEnv(image_size=32) as env:
        env.reset("spatial/red_cube_on_box", InitState("eval", 0))
        shadow = FilterShadow(env, "ee_delta")
        for index in range(3):
            shadow.before_step(move, 0, index)
            env.step(move, render=False)
        assert shadow.first_event is None
        slow = FilterShadow(env, "ee_delta", SafetyLimits(period_s=env.control_dt, velocity_scale=0.01))
        slow.before_step(move, 2, 4)
        slow.before_step(move, 2, 5)
    assert slow.first_event == {"chunk": 2, "action": 4, "step": 3, "what": "clipped: velocity"}
