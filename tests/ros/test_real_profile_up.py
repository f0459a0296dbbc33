"""`svrl up --profile real` on a machine with no arm: svrl's nodes start with the profile's parameters,
the full-ROS-only bring-up is skipped with a note, arm commands go to ros2_control's controllers, and the
arm starts in hold.

The cameras play a folder of images instead of a live RealSense (camera_node's playback), so the
profile's camera parameters and topic names are exercised over DDS without hardware.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from PIL import Image as PILImage
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String
from svrl_interfaces.action import ExecuteInstruction
from svrl_ros import topics

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]
JTC_TOPIC = "/joint_trajectory_controller/joint_trajectory"  # config/controllers.yaml


def _image_folder(root: Path) -> Path:
    folder = root / "frames"
    folder.mkdir()
    for i in range(3):
        pixels = np.full((48, 64, 3), 40 * (i + 1), dtype=np.uint8)
        PILImage.fromarray(pixels).save(folder / f"{i:03d}.png")
    return folder


def test_real_profile_up_without_an_arm_holds_and_skips_the_bring_up(
    processes, tmp_path, graph_checkpoint
) -> None:
    frames = _image_folder(tmp_path)
    log = tmp_path / "up.log"
    overrides = []
    for camera in ("camera", "wrist_camera"):
        overrides += ["--set", f"{camera}.playback.path={frames}", "--set", f"{camera}.playback.loop=true"]
    stack = processes.start_python(
        "-m",
        "svrl.cli",
        "up",
        "--profile",
        "real",
        "--checkpoint",
        str(graph_checkpoint),
        *overrides,
        log=log,
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("real_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    seen: dict[str, Image] = {}
    modes: list[str] = []
    got_both = threading.Event()

    def on_image(topic: str, msg: Image) -> None:
        seen.setdefault(topic, msg)
        if len(seen) == 2:
            got_both.set()

    for topic in (topics.MAIN_CAMERA_IMAGE, topics.WRIST_CAMERA_IMAGE):
        node.create_subscription(Image, topic, lambda m, t=topic: on_image(t, m), qos_profile_sensor_data)
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_subscription(String, topics.ARM_MODE, lambda m: modes.append(m.data), latched)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert got_both.wait(timeout=120), log.read_text()
        assert {seen[t].encoding for t in seen} == {"rgb8"} and seen[topics.MAIN_CAMERA_IMAGE].width == 64
        # the safety filter's output is remapped onto ros2_control's trajectory controller: arm_controller is
        # the only publisher there and on the gripper controller's topic, and nothing is left on its own topic
        deadline = time.monotonic() + 60

        def publisher_names(topic: str) -> list[str]:
            return [i.node_name for i in node.get_publishers_info_by_topic(topic)]

        # endpoints are discovered before the names of their nodes: wait for both
        while time.monotonic() < deadline and (
            not publisher_names(JTC_TOPIC) or "_NODE_NAME_UNKNOWN_" in publisher_names(JTC_TOPIC)
        ):
            time.sleep(0.2)
        assert publisher_names(JTC_TOPIC) == ["arm_controller"]
        assert publisher_names("/" + topics.GRIPPER_COMMANDS) == ["arm_controller"]
        assert node.get_publishers_info_by_topic("/" + topics.ARM_TRAJECTORY) == []
        # it starts in hold: nothing moves until a person names an owner
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not modes:
            time.sleep(0.1)
        assert modes == ["hold"]
        # policy_server loaded the checkpoint and serves goals
        client = ActionClient(node, ExecuteInstruction, topics.EXECUTE_INSTRUCTION)
        assert client.wait_for_server(timeout_sec=90), log.read_text()
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)

    stack.send_signal(signal.SIGINT)
    assert stack.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    assert "skipped (need a full ROS 2 install; use ros2 launch): robot_state_publisher, controller_manager, " \
        "controller_spawner" in text  # fmt: skip
    assert "The arm's driver must already be running" in text
    assert "policy_server ready" in text and "arm_controller ready: trigger timer" in text
