"""The ros2_control bring-up of the `real` profile agrees with the URDF, with svrl's topics and with itself.

No ros2_control here (it is C++ with no PyPI wheels), so these tests hold the files to the rules the
controller manager and ros2_controllers apply when they read them (Jazzy and later), and to the contract
of docs/robot_graph.md: svrl's arm_controller is the only way into the hardware's trajectory controller.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from svrl_ros import topics
from svrl_ros.robot_description import (
    MOCK_HARDWARE,
    RobotDescriptionError,
    command_joints,
    load_robot_description,
    ros2_control_problems,
)
from svrl_ros.stack import ProfileError, load_profile, node_parameters, parameter_file_paths

from svrl_sim import robot

REPO_ROOT = Path(__file__).resolve().parents[2]
URDF = REPO_ROOT / "urdf" / "svrl_arm.urdf"
CONTROLLERS = REPO_ROOT / "ros2_ws" / "src" / "svrl_ros" / "config" / "controllers.yaml"
JTC_TYPE = "joint_trajectory_controller/JointTrajectoryController"
FORWARD_TYPE = "forward_command_controller/ForwardCommandController"


def _controllers() -> tuple[dict, dict[str, dict]]:
    """(controller_manager parameters, controller name -> its parameters) from the controllers YAML."""
    raw = yaml.safe_load(CONTROLLERS.read_text())
    for key in raw:  # /**/ keys: the same file works under any launch namespace
        assert key.startswith("/**/"), key
    manager = raw["/**/controller_manager"]["ros__parameters"]
    controllers = {
        name: raw.get(f"/**/{name}", {}).get("ros__parameters", {})
        for name, value in manager.items()
        if isinstance(value, dict) and "type" in value
    }
    return manager, controllers


def _by_type(manager: dict, controller_type: str) -> list[str]:
    return [
        name
        for name, value in manager.items()
        if isinstance(value, dict) and value.get("type") == controller_type
    ]


def test_urdf_ros2_control_block_follows_current_ros2_control_rules() -> None:
    root = ET.parse(URDF).getroot()
    assert ros2_control_problems(root) == []
    (block,) = root.findall("ros2_control")
    finger2 = next(j for j in block.findall("joint") if j.get("name") == "finger_joint2")
    assert finger2.get("mimic") == "true" and not finger2.findall("command_interface")
    assert not finger2.findall("param"), "the pre-Jazzy <param name='mimic'> form must be gone"


def test_stale_or_wrong_mimic_declarations_are_found() -> None:
    text = URDF.read_text()
    stale = text.replace(
        '<joint name="finger_joint2" mimic="true">',
        '<joint name="finger_joint2"><param name="mimic">finger_joint1</param><param name="multiplier">1</param>',
    )
    assert any("pre-Jazzy" in p for p in ros2_control_problems(ET.fromstring(stale)))
    commanded = text.replace(
        '<joint name="finger_joint2" mimic="true">',
        '<joint name="finger_joint2" mimic="true"><command_interface name="position"/>',
    )
    assert any("has a command interface" in p for p in ros2_control_problems(ET.fromstring(commanded)))
    unmimicked = re.sub(r'<mimic joint="finger_joint1"[^>]*/>', "", text)
    assert any("has no <mimic>" in p for p in ros2_control_problems(ET.fromstring(unmimicked)))
    unknown = text.replace('<joint name="joint7">\n      <command', '<joint name="joint8">\n      <command')
    assert any(
        "'joint8' is not a joint of the URDF" in p for p in ros2_control_problems(ET.fromstring(unknown))
    )


def test_hardware_plugin_replaces_only_the_hardware_element() -> None:
    mock = load_robot_description(URDF)
    assert f"<plugin>{MOCK_HARDWARE}</plugin>" in mock
    real = load_robot_description(
        URDF, "my_arm_driver/MyArmSystem", {"robot_ip": "10.0.0.2", "use_tool": True}
    )
    hardware = ET.fromstring(real).find("ros2_control/hardware")
    assert hardware.find("plugin").text == "my_arm_driver/MyArmSystem"
    assert {p.get("name"): p.text for p in hardware.findall("param")} == {
        "robot_ip": "10.0.0.2",
        "use_tool": "true",
    }
    # everything else (links, joints, limits, the joints' interfaces) is the file the simulator loads
    assert command_joints(real) == command_joints(mock)
    assert len(ET.fromstring(real).findall("joint")) == len(ET.parse(URDF).getroot().findall("joint"))


def test_bad_hardware_choices_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RobotDescriptionError, match="without a hardware_plugin"):
        load_robot_description(URDF, None, {"robot_ip": "10.0.0.2"})
    with pytest.raises(RobotDescriptionError, match="not a pluginlib class name"):
        load_robot_description(URDF, "MyArmSystem")
    with pytest.raises(RobotDescriptionError, match="not found"):
        load_robot_description(tmp_path / "nope.urdf")
    broken = tmp_path / "broken.urdf"
    broken.write_text("<robot><link name='a'></robot>")
    with pytest.raises(RobotDescriptionError, match="not valid XML"):
        load_robot_description(broken)


def test_controllers_drive_exactly_what_the_urdf_offers() -> None:
    manager, controllers = _controllers()
    offered = command_joints(load_robot_description(URDF))
    (jtc,) = _by_type(manager, JTC_TYPE)
    arm = controllers[jtc]
    # the joint order svrl's arm_controller sends (joint1..joint7), all position-commanded in the URDF
    assert arm["joints"] == list(robot.ARM_JOINTS)
    for joint in arm["joints"]:
        assert set(arm["command_interfaces"]) <= set(offered[joint]), joint
    assert (
        arm["cmd_timeout"] > arm["constraints"]["goal_time"] >= 0.0
    )  # ros2_controllers ignores it otherwise
    assert arm["allow_nonzero_velocity_at_trajectory_end"] is False
    (gripper,) = _by_type(manager, FORWARD_TYPE)
    assert controllers[gripper]["joints"] == ["finger_joint1"]  # one value, as svrl publishes
    assert controllers[gripper]["interface_name"] in offered["finger_joint1"]
    assert "finger_joint2" not in offered  # the mimic joint follows; nothing commands it
    assert manager["update_rate"] >= 10 * 10  # well above the 10 Hz policy rate
    assert manager["enforce_command_limits"] is True  # URDF limits clamped behind svrl's filter too
    assert "joint_state_broadcaster/JointStateBroadcaster" in {
        v["type"] for v in manager.values() if isinstance(v, dict)
    }


def test_svrl_arm_controller_is_the_only_way_into_the_hardware_controllers() -> None:
    """Names chosen so the safety filter sits in front of the hardware (config/controllers.yaml's header)."""
    manager, _ = _controllers()
    (jtc,) = _by_type(manager, JTC_TYPE)
    (gripper,) = _by_type(manager, FORWARD_TYPE)
    profile = load_profile("real")
    nodes = {n.key: n for n in profile.nodes}
    # no hardware controller shares the name of svrl's safety node (two /arm_controller nodes)
    assert nodes["arm_controller"].name == "arm_controller" and "arm_controller" not in manager
    # svrl's output is remapped onto the trajectory controller's topic; the gripper topic matches as is
    assert nodes["arm_controller"].remappings == {topics.ARM_TRAJECTORY: f"{jtc}/joint_trajectory"}
    assert f"{gripper}/commands" == topics.GRIPPER_COMMANDS
    # nothing else in the profile is pointed at either command topic
    for node in profile.nodes:
        if node.key != "arm_controller":
            targets = set(node.remappings.values())
            assert not targets & {f"{jtc}/joint_trajectory", topics.GRIPPER_COMMANDS}, node.key
    # the spawner activates exactly the controllers the YAML defines
    spawned = [a for a in nodes["controller_spawner"].arguments if not a.startswith("-")]
    assert set(spawned[: len(spawned) - 1]) == {
        name for name, v in manager.items() if isinstance(v, dict) and "type" in v
    }
    assert nodes["controller_manager"].name == spawned[-1] == "controller_manager"
    assert parameter_file_paths(nodes["controller_manager"]) == [CONTROLLERS]


def test_real_profile_bring_up_nodes_and_robot_description() -> None:
    profile = load_profile("real")
    nodes = {n.key: n for n in profile.nodes}
    bringup = {n.key for n in profile.nodes if n.group == "arm_bringup"}
    assert bringup == {"robot_state_publisher", "controller_manager", "controller_spawner"}
    assert all(nodes[key].full_ros_only for key in bringup)
    assert not any(n.full_ros_only for n in profile.nodes if n.key not in bringup)
    description = node_parameters(profile, nodes["robot_state_publisher"])["robot_description"]
    assert ET.fromstring(description).find("ros2_control/hardware/plugin").text == MOCK_HARDWARE
    plugged = load_profile(
        "real",
        [
            "robot_description.hardware_plugin=my_arm_driver/MyArmSystem",
            "robot_description.hardware_parameters.robot_ip=10.0.0.2",
        ],
    )
    hardware = ET.fromstring(
        node_parameters(plugged, nodes["robot_state_publisher"])["robot_description"]
    ).find("ros2_control/hardware")
    assert hardware.find("plugin").text == "my_arm_driver/MyArmSystem"
    assert hardware.find("param").attrib == {"name": "robot_ip"} and hardware.find("param").text == "10.0.0.2"
    server, arm = nodes["policy_server"].parameters, nodes["arm_controller"].parameters
    assert (server["runner"], server["backend"], server["success_source"], server["reset_sim"]) == (
        "learned",
        "auto",
        "operator",
        False,
    )
    assert (arm["trigger"], arm["start_mode"]) == ("timer", "hold")
    # the cameras publish where policy_server listens (realsense-ros v4 topic names)
    cameras = [n.parameters for n in profile.nodes if n.group == "cameras"]
    published = {f"{c['camera_namespace']}/{c['camera_name']}/color/image_raw" for c in cameras}
    assert published == set(topics.CAMERA_IMAGE_TOPICS.values())
    assert arm["control_rate_hz"] == server["control_rate_hz"]
    assert profile.use_sim_time is False


def test_robot_description_errors_name_the_profile_part(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="robot_description has urdf, hardware_plugin"):
        load_profile("real", ["robot_description.plugin=x/Y"])
    with pytest.raises(ProfileError, match="not a pluginlib class name"):
        profile = load_profile("real", ["robot_description.hardware_plugin=NoSlash"])
        rsp = next(n for n in profile.nodes if n.key == "robot_state_publisher")
        node_parameters(profile, rsp)
    path = tmp_path / "p.yaml"
    path.write_text(
        "nodes:\n  rsp: {package: robot_state_publisher, executable: robot_state_publisher,"
        " parameters: {robot_description: $(robot_description)}}\n"
    )
    with pytest.raises(ProfileError, match="has no 'robot_description' section"):
        load_profile(str(path))
    path.write_text("nodes:\n  cm: {package: controller_manager, executable: ros2_control_node,"
                    " parameter_files: [config/nope.yaml]}\n")  # fmt: skip
    (cm,) = load_profile(str(path)).nodes
    with pytest.raises(ProfileError, match=r"parameter file config/nope\.yaml not found"):
        parameter_file_paths(cm)
    path.write_text("nodes:\n  a: {package: p, executable: e}\nnode: {}\n")
    with pytest.raises(ProfileError, match=r"unknown keys \['node'\]"):
        load_profile(str(path))


# The parameter types ros2_controllers declare (generate_parameter_library): a YAML `1` where a double is
# declared makes the controller fail to configure on the robot.
_DECLARED_TYPES = {
    "controller_manager": {"update_rate": "INTEGER", "enforce_command_limits": "BOOL"},
    "joint_trajectory_controller": {
        "joints": "STRING_ARRAY",
        "command_interfaces": "STRING_ARRAY",
        "state_interfaces": "STRING_ARRAY",
        "cmd_timeout": "DOUBLE",
        "constraints.goal_time": "DOUBLE",
        "constraints.stopped_velocity_tolerance": "DOUBLE",
        "allow_nonzero_velocity_at_trajectory_end": "BOOL",
        "interpolation_method": "STRING",
    },
    "gripper_controller": {"joints": "STRING_ARRAY", "interface_name": "STRING"},
}


@pytest.mark.ros
def test_rcl_reads_the_controllers_file_under_a_namespace(ros_env) -> None:
    """rcl's own YAML parser (the one ros2_control_node uses) matches the `/**/` keys under a launch
    namespace and types every value as the controllers declare it."""
    import rclpy
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(CONTROLLERS), "-r", "__ns:=/robot1"], context=context)
    try:
        for node_name, declared in _DECLARED_TYPES.items():
            node = rclpy.create_node(
                node_name, context=context, automatically_declare_parameters_from_overrides=True
            )
            assert node.get_namespace() == "/robot1"
            for name, type_name in declared.items():
                assert node.has_parameter(name), f"{node_name}: {name} not read from {CONTROLLERS.name}"
                assert node.get_parameter(name).type_ == Parameter.Type[type_name], (node_name, name)
            if node_name == "controller_manager":
                assert node.get_parameter("joint_trajectory_controller.type").value == JTC_TYPE
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
