"""launch/svrl.launch.py and `svrl up` read the same stack profile and start the same nodes.

`ros2 launch` is not installable from pip, so the launch file runs here against minimal stand-ins
for the four launch classes it uses; they record what the launch file asks for, which is then
compared with what `svrl up` would run.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from svrl_ros.stack import ProfileError, load_profile, node_command, params_file_content

REPO_ROOT = Path(__file__).resolve().parents[2]


class _Recorded:
    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorded):
    values: ClassVar[dict[str, str]] = {}

    def perform(self, _context) -> str:
        return self.values[self.args[0]]


@pytest.fixture
def launch_module(monkeypatch: pytest.MonkeyPatch):
    fakes = {
        "launch": types.SimpleNamespace(LaunchDescription=_Recorded),
        "launch.actions": types.SimpleNamespace(DeclareLaunchArgument=_Recorded, OpaqueFunction=_Recorded),
        "launch.substitutions": types.SimpleNamespace(LaunchConfiguration=_LaunchConfiguration),
        "launch_ros": types.SimpleNamespace(),
        "launch_ros.actions": types.SimpleNamespace(Node=_Recorded),
    }
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("svrl_launch", REPO_ROOT / "launch" / "svrl.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nodes(launch_module, **arguments: str) -> list[_Recorded]:
    description = launch_module.generate_launch_description()
    declared = {
        a.args[0]: a.kwargs["default_value"]
        for a in description.args[0]
        if a.kwargs.get("default_value") is not None
    }
    _LaunchConfiguration.values = {**declared, **arguments}
    (opaque,) = [a for a in description.args[0] if "function" in a.kwargs]
    return opaque.kwargs["function"](context=None)


def test_launch_file_starts_the_profile_nodes(launch_module) -> None:
    profile = load_profile("sim_expert")
    nodes = _nodes(launch_module, profile="sim_expert")
    assert [n.kwargs["name"] for n in nodes] == [spec.name for spec in profile.nodes]
    for node, spec in zip(nodes, profile.nodes, strict=True):
        assert node.kwargs["package"] == spec.package and node.kwargs["executable"] == spec.executable
        (params,) = node.kwargs["parameters"]
        expected = yaml.safe_load(params_file_content(profile, spec))[spec.name]["ros__parameters"]
        assert params == expected


def test_launch_use_sim_time_override(launch_module) -> None:
    nodes = _nodes(launch_module, profile="sim_expert", use_sim_time="true")
    assert all(n.kwargs["parameters"][0]["use_sim_time"] is True for n in nodes)


def test_every_profile_names_real_executables() -> None:
    """Each executable in a profile is a console script of svrl_ros's setup.py and an importable module."""
    setup_py = (REPO_ROOT / "ros2_ws/src/svrl_ros/setup.py").read_text()
    for path in sorted((REPO_ROOT / "launch/profiles").glob("*.yaml")):
        for spec in load_profile(str(path)).nodes:
            if spec.full_ros_only:
                continue
            assert f"{spec.executable} = {spec.python_module}:main" in setup_py, spec
            assert importlib.util.find_spec(spec.python_module) is not None, spec
            assert node_command(spec, Path("p.yaml"))[1:3] == ["-m", spec.python_module]


def test_bad_profiles_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="no stack profile 'nope'"):
        load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  a: {package: svrl_ros, executable: policy_server, paramters: {}}\n")
    with pytest.raises(ProfileError, match="unknown keys"):
        load_profile(str(bad))
    bad.write_text("nodes: {}\n")
    with pytest.raises(ProfileError, match="'nodes' must map"):
        load_profile(str(bad))


def test_launch_checkpoint_argument_sets_the_policy_server(launch_module) -> None:
    nodes = _nodes(launch_module, profile="sim_expert", checkpoint="/ckpts/a")
    (server,) = [n for n in nodes if n.kwargs["executable"] == "policy_server"]
    assert server.kwargs["parameters"][0]["checkpoint"] == "/ckpts/a"
    assert "checkpoint" not in _nodes(launch_module, profile="sim_expert")[0].kwargs["parameters"][0]


def test_schema_name_arguments_full_ros_only_and_set(tmp_path: Path, launch_module) -> None:
    path = tmp_path / "robot.yaml"
    path.write_text(
        "nodes:\n"
        "  left_cam: {package: svrl_ros, executable: policy_server, name: cam_a, arguments: [--flag, x],"
        " parameters: {rate: 1}}\n"
        "  right_cam: {package: svrl_ros, executable: policy_server, name: cam_b}\n"
        "  rsp: {package: robot_state_publisher, executable: robot_state_publisher, full_ros_only: true}\n"
    )
    profile = load_profile(str(path), ["left_cam.rate=2.5", "right_cam.enabled=true", "left_cam.lr=5e-5"])
    left, right, rsp = profile.nodes
    assert (left.key, left.name, left.arguments) == ("left_cam", "cam_a", ("--flag", "x"))
    assert left.parameters == {"rate": 2.5, "lr": 5e-5} and right.parameters == {"enabled": True}
    assert rsp.full_ros_only and not left.full_ros_only
    command = node_command(left, Path("p.yaml"))
    assert command[3:5] == ["--flag", "x"] and command.index("--ros-args") == 5
    assert "__node:=cam_a" in command
    nodes = _nodes(launch_module, profile=str(path))
    assert [n.kwargs["name"] for n in nodes] == ["cam_a", "cam_b", "rsp"]  # launch starts every node
    assert nodes[0].kwargs["arguments"] == ["--flag", "x"]
    with pytest.raises(ProfileError, match="has no node 'nope'"):
        load_profile(str(path), ["nope.rate=1"])
    with pytest.raises(ProfileError, match=r"expected node\.param=value"):
        load_profile(str(path), ["left_cam=1"])
    path.write_text("nodes:\n  a: {package: p, executable: e}\n  a: {package: p, executable: f}\n")
    with pytest.raises(ProfileError, match="duplicate key"):
        load_profile(str(path))
    path.write_text("nodes:\n  a: {package: p, executable: e}\n  b: {package: p, executable: e, name: a}\n")
    with pytest.raises(ProfileError, match="share the ROS name"):
        load_profile(str(path))


def test_sim_profile() -> None:
    profile = load_profile("sim")
    by_key = {n.key: n for n in profile.nodes}
    assert profile.use_sim_time and set(by_key) >= {"sim_node", "policy_server", "arm_controller"}
    assert by_key["sim_node"].parameters["timing"] == "lockstep"
    server = by_key["policy_server"].parameters
    assert (server["runner"], server["success_source"], server["reset_sim"]) == ("learned", "sim", True)
    assert by_key["arm_controller"].parameters == {"trigger": "joint_states", "start_mode": "policy"}
