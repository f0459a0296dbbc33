"""svrl_sim spells the shared names itself (it must not import svrl_policy at run time); they must match."""

from __future__ import annotations

import pytest

from svrl_sim import constants


def test_names_match_svrl_policy_features() -> None:
    features = pytest.importorskip("svrl_policy.features")
    assert tuple(features.CAMERAS) == constants.CAMERAS
    assert (constants.CAMERA_MAIN, constants.CAMERA_WRIST) == (features.CAMERA_MAIN, features.CAMERA_WRIST)
    assert constants.PROPRIO_DIM == features.PROPRIO_DIM
    assert dict(features.ACTION_DIMS) == constants.ACTION_DIMS


def test_importing_svrl_sim_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, svrl_sim, svrl_sim.tasks, svrl_sim.vector_env\n"
        "heavy = [m for m in ('mujoco', 'torch', 'svrl_policy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
