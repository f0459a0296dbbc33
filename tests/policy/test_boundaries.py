"""svrl_policy stays importable by the simulator and the robot: light modules stay light, no reverse imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "svrl_policy"
FORBIDDEN = ("svrl_sim", "svrl_trainer", "svrl_ros", "rclpy", "ray", "wandb")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_modules_import_nothing_from_trainer_sim_or_ros() -> None:
    # cli.py is the `svrl` command glue (it hands `sft`/`pretrain` to svrl_trainer by module name), not library.
    offenders = {
        p.relative_to(PACKAGE).as_posix(): sorted(_imports(p) & set(FORBIDDEN))
        for p in PACKAGE.rglob("*.py")
        if p.name != "cli.py" and _imports(p) & set(FORBIDDEN)
    }
    assert offenders == {}


@pytest.mark.parametrize("module", ["svrl_policy.features", "svrl_policy.config", "svrl_policy.dataset"])
def test_light_modules_do_not_pull_torch(module: str) -> None:
    """The simulator writes datasets and the CLI parses configs without loading torch."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_simulator_constants_agree_with_the_policy_features() -> None:
    constants = pytest.importorskip("svrl_sim.constants")
    from svrl_policy import features

    assert constants.CAMERAS == features.CAMERAS
    assert (constants.CAMERA_MAIN, constants.CAMERA_WRIST) == (features.CAMERA_MAIN, features.CAMERA_WRIST)
    assert constants.PROPRIO_DIM == features.PROPRIO_DIM
    assert dict(constants.ACTION_DIMS) == features.ACTION_DIMS
