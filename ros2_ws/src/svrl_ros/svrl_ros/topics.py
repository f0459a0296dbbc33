"""Topic and service names of the robot graph (../docs/robot_graph.md), written once.

Names follow realsense-ros v4 (cameras) and ros2_control (arm and gripper commands). All are relative,
so a namespace given at launch applies to every one; `/clock` is the only absolute name.
"""

from __future__ import annotations

MAIN_CAMERA_IMAGE = "camera/camera/color/image_raw"
MAIN_CAMERA_INFO = "camera/camera/color/camera_info"
WRIST_CAMERA_IMAGE = "wrist_camera/camera/color/image_raw"
WRIST_CAMERA_INFO = "wrist_camera/camera/color/camera_info"
# Policy camera name (svrl_policy / svrl_sim) -> image topic.
CAMERA_IMAGE_TOPICS = {"main": MAIN_CAMERA_IMAGE, "wrist": WRIST_CAMERA_IMAGE}
CAMERA_INFO_TOPICS = {"main": MAIN_CAMERA_INFO, "wrist": WRIST_CAMERA_INFO}
CAMERA_FRAMES = {"main": "camera_color_optical_frame", "wrist": "wrist_camera_color_optical_frame"}

JOINT_STATES = "joint_states"
ARM_TRAJECTORY = "arm_controller/joint_trajectory"
GRIPPER_COMMANDS = "gripper_controller/commands"

ACTION_CHUNK = "svrl/action_chunk"
TELEOP_CHUNK = "svrl/teleop/action_chunk"
# RViz's interactive-marker protocol (teleop_marker): `<ns>/update`, `<ns>/feedback`, `<ns>/get_interactive_markers`.
TELEOP_MARKERS = "svrl/teleop"
TELEOP_UPDATE = TELEOP_MARKERS + "/update"
TELEOP_FEEDBACK = TELEOP_MARKERS + "/feedback"
TELEOP_GET_MARKERS = TELEOP_MARKERS + "/get_interactive_markers"
EXECUTE_INSTRUCTION = "svrl/execute_instruction"
# The action's goal statuses (action_msgs/GoalStatusArray, latched), as every ROS 2 action server publishes them.
EXECUTE_INSTRUCTION_STATUS = EXECUTE_INSTRUCTION + "/_action/status"
EXECUTE_INSTRUCTION_RESULT = EXECUTE_INSTRUCTION + "/_action/get_result"
SET_MODE = "svrl/set_mode"
# arm_controller's control mode (policy / teleop / hold) as std_msgs/String, transient-local depth 1, published
# on every change: policy_server aborts a goal when the mode leaves "policy"; teleop and recorders follow it.
ARM_MODE = "svrl/arm_mode"
ESTOP = "svrl/estop"
RESET_ESTOP = "svrl/reset_estop"
CONFIRM_SUCCESS = "svrl/confirm_success"
# trainer_node announces each new checkpoint (svrl_interfaces/PolicyCheckpoint, transient-local depth 1); a
# policy_server with follow_checkpoints loads it between goals when it passes checkpoint_guard.
POLICY_CHECKPOINT = "svrl/checkpoint"
# episode_recorder (`svrl record`): start / stop (keep) / discard an episode, std_srvs/Trigger each.
RECORD_START = "svrl/record/start_episode"
RECORD_STOP = "svrl/record/stop_episode"
RECORD_DISCARD = "svrl/record/discard_episode"
DIAGNOSTICS = "/diagnostics"

SIM_RESET = "sim/reset_episode"
SIM_STEP = "sim/step"
# RosEnv's lock-step chunk: the ee_delta chunk travels with the request, the answer carries the new state.
SIM_STEP_CHUNK = "sim/step_chunk"
SIM_STATUS = "sim/episode_status"


def subscribe_estop(node, callback, callback_group=None) -> list:
    """Listen to the e-stop from any publisher, and get a latched press that happened before we started.

    Two subscriptions: transient-local (receives the last value a latched publisher kept, e.g. a press
    from before this node started) and volatile (the only kind that matches a plain, volatile publisher:
    a transient-local subscription would silently receive nothing from it). Depth 10, so a quick
    press-release cannot collapse into the release alone. Duplicates are harmless: True latches.
    """
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    profiles = [
        QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=durability)
        for durability in (DurabilityPolicy.TRANSIENT_LOCAL, DurabilityPolicy.VOLATILE)
    ]
    from std_msgs.msg import Bool

    return [
        node.create_subscription(Bool, ESTOP, callback, qos, callback_group=callback_group)
        for qos in profiles
    ]
