"""The robot description that robot_state_publisher publishes and ros2_control reads.

One URDF (urdf/svrl_arm.urdf) serves the simulator, RViz and ros2_control. Its `<ros2_control>` block
names mock hardware, so a bring-up with no arm attached works out of the box. A real arm swaps only the
`<hardware>` element (plugin + parameters) at launch time, here, instead of keeping a second robot file
that would drift from the one the policy was trained on.

`ros2_control_problems` checks the block against the rules ros2_control applies when it parses the
description (Jazzy and later), so a mistake fails a test here rather than the controller manager on the
robot. No rclpy import: the launch file and `svrl up` use this before any node exists.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MOCK_HARDWARE = "mock_components/GenericSystem"


class RobotDescriptionError(ValueError):
    """A URDF or hardware choice that ros2_control would refuse; the message names the file and the part."""


def load_robot_description(
    urdf: str | Path,
    hardware_plugin: str | None = None,
    hardware_parameters: Mapping[str, Any] | None = None,
) -> str:
    """The URDF text with its `<ros2_control><hardware>` replaced when a plugin is given.

    `hardware_parameters` become the `<param>` entries of the new hardware element (values written
    as ROS reads them: booleans lower-case). With no plugin the file is returned as parsed, mock hardware
    included; passing parameters without a plugin is refused, as they would silently go to the mock.
    """
    path = Path(urdf)
    if not path.is_file():
        raise RobotDescriptionError(f"robot description not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise RobotDescriptionError(f"{path}: not valid XML: {error}") from error
    blocks = root.findall("ros2_control")
    if len(blocks) != 1:
        raise RobotDescriptionError(f"{path}: expected one <ros2_control> block, found {len(blocks)}")
    if hardware_plugin:
        _replace_hardware(path, blocks[0], hardware_plugin, dict(hardware_parameters or {}))
    elif hardware_parameters:
        raise RobotDescriptionError(
            f"hardware_parameters {sorted(hardware_parameters)} given without a hardware_plugin: they would "
            f"go to {MOCK_HARDWARE}; name the plugin they belong to"
        )
    problems = ros2_control_problems(root)
    if problems:
        raise RobotDescriptionError(f"{path}: " + "; ".join(problems))
    return ET.tostring(root, encoding="unicode")


def _replace_hardware(path: Path, block: ET.Element, plugin: str, parameters: dict[str, Any]) -> None:
    if any(c.isspace() for c in plugin) or "/" not in plugin.strip("/"):
        raise RobotDescriptionError(
            f"hardware_plugin {plugin!r} is not a pluginlib class name like 'my_arm_driver/MyArmSystem'"
        )
    hardware = block.find("hardware")
    if hardware is None:
        raise RobotDescriptionError(f"{path}: <ros2_control> has no <hardware> element")
    for child in list(hardware):
        hardware.remove(child)
    ET.SubElement(hardware, "plugin").text = plugin
    for name, value in parameters.items():
        ET.SubElement(hardware, "param", name=str(name)).text = _param_text(value)


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def ros2_control_problems(root: ET.Element) -> list[str]:
    """What ros2_control's description parser (Jazzy+) would refuse or silently ignore in `root`.

    - every joint of a `<ros2_control>` block exists in the URDF and is not fixed;
    - a joint with a URDF `<mimic>` tag (unless marked mimic="false") has no command interface, and the
      joint it follows is in the same block; mimic="true" needs a `<mimic>` tag;
    - no `<param name="mimic">` / `multiplier`: the pre-Jazzy form, ignored since, so the mimic joint
      would never move in mock hardware;
    - every block names a hardware plugin.
    """
    problems: list[str] = []
    urdf_joints = {j.get("name"): j for j in root.findall("joint")}
    for block in root.findall("ros2_control"):
        plugin = block.find("hardware/plugin")
        if plugin is None or not (plugin.text or "").strip():
            problems.append(f"<ros2_control name={block.get('name')!r}> names no hardware plugin")
        declared = [j.get("name") for j in block.findall("joint")]
        for joint in block.findall("joint"):
            name = joint.get("name")
            urdf_joint = urdf_joints.get(name)
            if urdf_joint is None:
                problems.append(f"ros2_control joint {name!r} is not a joint of the URDF")
                continue
            if urdf_joint.get("type") == "fixed":
                problems.append(f"ros2_control joint {name!r} is fixed in the URDF")
            stale = [
                p.get("name") for p in joint.findall("param") if p.get("name") in {"mimic", "multiplier"}
            ]
            if stale:
                problems.append(
                    f"joint {name!r}: <param name=...> {stale} is the pre-Jazzy mimic form, ignored now; "
                    'declare <mimic> in the URDF joint and mimic="true" here'
                )
            mimic_attr = (joint.get("mimic") or "").lower()
            mimic_tag = urdf_joint.find("mimic")
            if mimic_attr == "true" and mimic_tag is None:
                problems.append(f'joint {name!r} is marked mimic="true" but its URDF joint has no <mimic>')
            if mimic_tag is not None and mimic_attr != "false":
                if joint.findall("command_interface"):
                    problems.append(f"mimic joint {name!r} has a command interface (ros2_control refuses it)")
                if mimic_tag.get("joint") not in declared:
                    problems.append(
                        f"mimic joint {name!r} follows {mimic_tag.get('joint')!r}, which is not in the same "
                        "<ros2_control> block"
                    )
    return problems


def command_joints(urdf_xml: str) -> dict[str, list[str]]:
    """Joint name -> its command interfaces, in the order the `<ros2_control>` block declares them."""
    root = ET.fromstring(urdf_xml)
    return {
        joint.get("name"): [c.get("name") for c in joint.findall("command_interface")]
        for block in root.findall("ros2_control")
        for joint in block.findall("joint")
        if joint.findall("command_interface")
    }
