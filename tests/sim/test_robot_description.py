"""The URDF is the single source of kinematics: the MuJoCo scene must agree with it exactly."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from svrl_sim import robot


def test_urdf_names_the_contract_joints_and_links() -> None:
    root = ET.parse(robot.urdf_path()).getroot()
    joints = {j.get("name"): j for j in root.findall("joint")}
    for name in (*robot.ARM_JOINTS, *robot.FINGER_JOINTS):
        assert name in joints, name
    assert all(joints[j].get("type") == "revolute" for j in robot.ARM_JOINTS)
    assert all(joints[j].get("type") == "prismatic" for j in robot.FINGER_JOINTS)
    mimic = joints["finger_joint2"].find("mimic")
    assert mimic is not None and mimic.get("joint") == "finger_joint1"
    links = {link.get("name") for link in root.findall("link")}
    assert {"base_link", "tool0", "hand", "wrist_camera_link"} <= links


def test_urdf_ros2_control_block_drives_every_joint_by_position() -> None:
    root = ET.parse(robot.urdf_path()).getroot()
    (block,) = root.findall("ros2_control")
    assert block.get("name") == "svrl_arm" and block.get("type") == "system"
    assert block.find("hardware/plugin").text == "mock_components/GenericSystem"
    declared = {j.get("name"): j for j in block.findall("joint")}
    assert set(declared) == {*robot.ARM_JOINTS, *robot.FINGER_JOINTS}
    for name in (*robot.ARM_JOINTS, "finger_joint1"):
        assert [c.get("name") for c in declared[name].findall("command_interface")] == ["position"]
    for name in declared:
        states = {s.get("name") for s in declared[name].findall("state_interface")}
        assert states == {"position", "velocity"}


def test_mujoco_model_uses_the_urdf_limits() -> None:
    from svrl_sim.scene import build_model

    model = build_model(32)
    limits = robot.joint_limits()
    for name in (*robot.ARM_JOINTS, *robot.FINGER_JOINTS):
        joint = model.joint(name)
        np.testing.assert_allclose(joint.range, [limits[name].lower, limits[name].upper])
        np.testing.assert_allclose(
            model.jnt_actfrcrange[joint.id], [-limits[name].effort, limits[name].effort]
        )
    for i, name in enumerate(robot.ARM_JOINTS):
        act = model.actuator(f"{name}_pos")
        np.testing.assert_allclose(act.ctrlrange, [limits[name].lower, limits[name].upper])
        assert model.actuator_trnid[act.id, 0] == model.joint(name).id, i
    # the mimic tag became a joint coupling: finger_joint2 follows finger_joint1
    assert model.neq == 1 and model.eq_type[0] == 2  # mjEQ_JOINT
    assert {model.joint(int(model.eq_obj1id[0])).name, model.joint(int(model.eq_obj2id[0])).name} == set(
        robot.FINGER_JOINTS
    )


def test_home_pose_is_inside_the_limits() -> None:
    lower, upper, _ = robot.arm_limits()
    assert np.all(np.asarray(robot.HOME_Q) > lower) and np.all(np.asarray(robot.HOME_Q) < upper)


def test_unknown_urdf_path_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="robot description not found"):
        robot.joint_limits(str(tmp_path / "missing.urdf"))
