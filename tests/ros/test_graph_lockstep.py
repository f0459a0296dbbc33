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
from svrl_ros.graph_check import chunks_agree, graph_check

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
    assert chunks_agree(a, [a[0], a[1][:5]])  # a chunk cut by the step budget compares on its prefix
