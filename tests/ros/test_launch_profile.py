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
