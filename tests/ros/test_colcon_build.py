"""ros2_ws builds with colcon the way a full ROS 2 install builds it (ament_cmake + ament_python),
and installs what `ros2 launch` / `ros2 run` look for: the launch file, stack profiles, the URDF, the
node executable under lib/<pkg>, and the generated interface modules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ros, pytest.mark.timeout(600)]


def test_colcon_builds_and_installs_the_workspace(tmp_path: Path) -> None:
    venv_bin = Path(sys.executable).parent
    colcon = venv_bin / "colcon"
    if not colcon.exists():
        pytest.fail("colcon is missing from the venv: `make setup` installs it with the ros-build extra")
    prefix = str(venv_bin.parent)
    env = {
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ['PATH']}",
        "VIRTUAL_ENV": prefix,
        "AMENT_PREFIX_PATH": prefix,
        "CMAKE_PREFIX_PATH": prefix,
        "MAKEFLAGS": f"-j{os.cpu_count() or 1}",
    }
    install = tmp_path / "install"
    run = subprocess.run(
        [str(colcon), "--log-base", str(tmp_path / "log"), "build",
         "--base-paths", str(REPO_ROOT / "ros2_ws" / "src"),
         "--build-base", str(tmp_path / "build"), "--install-base", str(install),
         "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "Finished <<< svrl_interfaces" in run.stdout and "Finished <<< svrl_ros" in run.stdout
    share = install / "svrl_ros" / "share" / "svrl_ros"
    for relative in (
        "package.xml",
        "launch/svrl.launch.py",
        "launch/profiles/sim_expert.yaml",
        "urdf/svrl_arm.urdf",
        "launch/profiles/real.yaml",
        "config/controllers.yaml",
        "launch/profiles/teleop.yaml",
        "rviz/teleop.rviz",
    ):
        assert (share / relative).is_file(), relative
    # what the real profile's ros2_control_node loads, found the way an install finds it
    assert "/**/joint_trajectory_controller" in yaml.safe_load(
        (share / "config" / "controllers.yaml").read_text()
    )
    for executable in ("policy_server", "teleop_marker"):
        assert os.access(install / "svrl_ros" / "lib" / "svrl_ros" / executable, os.X_OK), executable
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "svrl_ros").exists() or (
        install / "svrl_ros" / "share" / "ament_index" / "resource_index" / "packages" / "svrl_ros"
    ).exists()
    generated = list((install / "svrl_interfaces").rglob("svrl_interfaces/action/_execute_instruction.py"))
    assert generated, "ExecuteInstruction was not generated"
    shutil.rmtree(tmp_path / "build", ignore_errors=True)
