"""Fixtures for tests of the robot graph: a policy checkpoint small and calm enough to run through it."""

from __future__ import annotations

from pathlib import Path

import pytest
from svrl_ros.calm_policy import calm_policy_checkpoint


def build_graph_checkpoint(root: Path, *, seed: int = 0, export: bool = True) -> Path:
    """svrl_ros.calm_policy's random, calm policy: deterministic chunks that stay inside the workspace."""
    import torch

    torch.set_num_threads(1)
    return calm_policy_checkpoint(root, seed=seed, export=export, name="graph_policy")


@pytest.fixture(scope="session")
def graph_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_graph_checkpoint(tmp_path_factory.mktemp("graph_ckpt"))
