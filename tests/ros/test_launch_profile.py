"""launch/svrl.launch.py and `svrl up` read the same stack profile and start the same nodes.

`ros2 launch` is not installable from pip (no launch / launch_ros wheels on PyPI, for Kilted or Jazzy), so
the launch file runs here against stand-ins for the launch classes it uses. They take the keyword
arguments of the real classes (launch / launch_ros of Jazzy), so a misspelt argument fails here, and
record what the launch file asks for, which is then compared with what `svrl up` would run. What this
cannot show (substitution semantics, the processes really starting) was not run on a full install.
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


class _DeclareLaunchArgument(_Recorded):
    def __init__(self, name, *, default_value=None, description=None, choices=None) -> None:
        if choices is not None and default_value is not None:
            assert default_value in choices, (name, default_value, choices)  # launch raises on this too
        super().__init__(name, default_value=default_value, description=description, choices=choices)


class _OpaqueFunction(_Recorded):
    def __init__(self, *, function, args=None, kwargs=None) -> None:
        super().__init__(function=function, args=args, kwargs=kwargs)


class _GroupAction(_Recorded):
    def __init__(self, actions, *, scoped=True, forwarding=True, launch_configurations=None) -> None:
        super().__init__(list(actions), scoped=scoped, forwarding=forwarding)


class _PushRosNamespace(_Recorded):
    def __init__(self, namespace) -> None:
        super().__init__(namespace)


# launch_ros.actions.Node's own keywords, plus the ExecuteProcess ones the launch file passes through
_NODE_KEYWORDS = {
    "executable", "package", "name", "namespace", "exec_name", "parameters", "remappings", "ros_arguments",
    "arguments", "output", "emulate_tty", "respawn", "respawn_delay", "additional_env",
}  # fmt: skip


class _Node(_Recorded):
    def __init__(self, **kwargs) -> None:
        unknown = set(kwargs) - _NODE_KEYWORDS
        assert not unknown, f"launch_ros Node has no argument(s) {unknown}"
        assert "executable" in kwargs
        super().__init__(**kwargs)


class _LaunchConfiguration(_Recorded):
    values: ClassVar[dict[str, str]] = {}

    def perform(self, _context) -> str:
        return self.values[self.args[0]]


@pytest.fixture
def launch_module(monkeypatch: pytest.MonkeyPatch):
    fakes = {
        "launch": types.SimpleNamespace(LaunchDescription=_Recorded),
        "launch.actions": types.SimpleNamespace(
            DeclareLaunchArgument=_DeclareLaunchArgument,
            OpaqueFunction=_OpaqueFunction,
            GroupAction=_GroupAction,
        ),
        "launch.substitutions": types.SimpleNamespace(LaunchConfiguration=_LaunchConfiguration),
        "launch_ros": types.SimpleNamespace(),
        "launch_ros.actions": types.SimpleNamespace(Node=_Node, PushRosNamespace=_PushRosNamespace),
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


def _launch(launch_module, **arguments: str) -> tuple[list[_Recorded], dict[str, _Recorded]]:
    """(what the launch file returns, the declared arguments by name) for `arguments`."""
    description = launch_module.generate_launch_description()
    declared = {a.args[0]: a for a in description.args[0] if isinstance(a, _DeclareLaunchArgument)}
    _LaunchConfiguration.values = {
        name: a.kwargs["default_value"] for name, a in declared.items()
    } | arguments
    (opaque,) = [a for a in description.args[0] if isinstance(a, _OpaqueFunction)]
    return opaque.kwargs["function"](context=None), declared


def test_launch_arguments_a_ros_user_expects(launch_module) -> None:
    _, declared = _launch(launch_module)
    assert {"profile", "namespace", "use_sim_time", "log_level", "checkpoint"} <= set(declared)
    assert all(a.kwargs["description"] for a in declared.values())
    assert declared["log_level"].kwargs["choices"] == ["debug", "info", "warn", "error", "fatal"]


def test_launch_real_profile_starts_the_bring_up_with_its_files(launch_module) -> None:
    nodes, _ = _launch(launch_module, profile="real", checkpoint="/opt/policy", log_level="warn")
    by_name = {(n.kwargs["namespace"], n.kwargs["name"]): n for n in nodes}
    assert set(by_name) == {
        ("", "camera"), ("", "wrist_camera"), ("", "robot_state_publisher"),
        ("", "controller_manager"), ("", "controller_spawner"), ("", "policy_server"), ("", "arm_controller"),
    }  # fmt: skip
    assert all(n.kwargs["ros_arguments"] == ["--log-level", "warn"] for n in nodes)
    manager = by_name[("", "controller_manager")]
    *files, params = manager.kwargs["parameters"]
    assert [Path(f).name for f in files] == ["controllers.yaml"] and Path(files[0]).is_file()
    assert params == {"use_sim_time": False}
    rsp_params = by_name[("", "robot_state_publisher")].kwargs["parameters"][-1]
    assert (
        rsp_params["robot_description"].startswith("<robot")
        and "mock_components/GenericSystem" in (rsp_params["robot_description"])
    )
    assert by_name[("", "policy_server")].kwargs["parameters"][-1]["checkpoint"] == "/opt/policy"
    camera = by_name[("", "wrist_camera")]
    assert camera.kwargs["executable"] == "camera_node"
    assert (
        camera.kwargs["parameters"][-1]["camera_namespace"],
        camera.kwargs["parameters"][-1]["camera_name"],
    ) == (
        "wrist_camera",
        "camera",
    )  # camera_node's topics: wrist_camera/camera/color/image_raw, as topics.WRIST_CAMERA_IMAGE
    assert by_name[("", "arm_controller")].kwargs["remappings"] == [
        ("arm_controller/joint_trajectory", "joint_trajectory_controller/joint_trajectory")
    ]


def test_launch_real_profile_arguments_choose_drivers_and_namespace(launch_module) -> None:
    nodes, _ = _launch(
        launch_module,
        profile="real",
        namespace="/robot1/",
        camera_driver="realsense2_camera",
        arm_bringup="false",
        arm_command_topic="/scaled_joint_trajectory_controller/joint_trajectory",
    )
    (group,) = nodes
    push, *started = group.args[0]
    assert isinstance(push, _PushRosNamespace) and push.args == ("robot1",)
    names = {n.kwargs["name"]: n for n in started}
    assert set(names) == {
        "camera",
        "policy_server",
        "arm_controller",
    }  # no robot_state_publisher, no ros2_control
    cameras = [n for n in started if n.kwargs["name"] == "camera"]
    # realsense-ros publishes ~/color/...: its node is /<camera_namespace>/<camera_name> (rs_launch.py's naming)
    assert sorted(c.kwargs["namespace"] for c in cameras) == ["camera", "wrist_camera"]
    assert all(
        (c.kwargs["package"], c.kwargs["executable"]) == ("realsense2_camera", "realsense2_camera_node")
        for c in cameras
    )
    assert cameras[0].kwargs["parameters"][-1]["rgb_camera.color_profile"] == "640x480x30"
    assert names["arm_controller"].kwargs["remappings"] == [
        ("arm_controller/joint_trajectory", "/scaled_joint_trajectory_controller/joint_trajectory")
    ]
    nodes, _ = _launch(launch_module, profile="real", hardware_plugin="my_arm_driver/MyArmSystem")
    rsp = next(n for n in nodes if n.kwargs["name"] == "robot_state_publisher")
    assert "<plugin>my_arm_driver/MyArmSystem</plugin>" in rsp.kwargs["parameters"][-1]["robot_description"]
    with pytest.raises(ValueError, match="log_level 'loud'"):
        _launch(launch_module, profile="real", log_level="loud")
    with pytest.raises(ProfileError, match="camera_driver 'usb_cam'"):
        _launch(launch_module, profile="real", camera_driver="usb_cam")


def test_svrl_up_namespace_is_the_launch_namespace() -> None:
    from svrl_ros.stack import with_namespace

    profile = with_namespace(load_profile("real"), "/robot1/")
    started = {n.key: n for n in profile.nodes if not n.full_ros_only}
    for key in ("camera", "wrist_camera", "policy_server", "arm_controller"):
        assert "__ns:=/robot1" in node_command(started[key], Path("p.yaml")), key
    (qualified,) = yaml.safe_load(params_file_content(profile, started["policy_server"]))
    assert qualified == "/robot1/policy_server"
    assert with_namespace(profile, "") == profile
