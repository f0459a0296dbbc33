"""Names that the simulator, the trainer, the dataset files and the ROS node must spell identically.

A string literal for one of these in another module is a bug waiting to happen: import the constant.
"""

from __future__ import annotations

# Camera names used as keys of `obs["images"]` (docs/contracts.md). The ROS topics map onto them:
# /camera/camera/color/image_raw -> main, /wrist_camera/camera/color/image_raw -> wrist.
CAMERA_MAIN = "main"
CAMERA_WRIST = "wrist"
CAMERAS: tuple[str, ...] = (CAMERA_MAIN, CAMERA_WRIST)

# Keys of the observation dict (single or batched form).
OBS_IMAGES = "images"
OBS_PROPRIO = "proprio"
OBS_INSTRUCTION = "instruction"

# proprio = joint_pos[7] (rad), gripper_opening[1] (0 closed .. 1 open), ee_pos[3] (m), ee_quat[4] (w, x, y, z)
PROPRIO_DIM = 15
PROPRIO_NAMES: tuple[str, ...] = (
    *(f"joint_pos_{i}" for i in range(7)),
    "gripper_opening",
    "ee_x",
    "ee_y",
    "ee_z",
    "ee_qw",
    "ee_qx",
    "ee_qy",
    "ee_qz",
)

# Action spaces (docs/contracts.md). The gripper is the last dimension in both: -1 open, +1 close.
ACTION_SPACE_EE_DELTA = "ee_delta"
ACTION_SPACE_JOINT_POS = "joint_pos"
ACTION_DIMS: dict[str, int] = {ACTION_SPACE_EE_DELTA: 7, ACTION_SPACE_JOINT_POS: 8}
ACTION_NAMES: dict[str, tuple[str, ...]] = {
    ACTION_SPACE_EE_DELTA: ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),
    ACTION_SPACE_JOINT_POS: (*(f"joint_{i}" for i in range(7)), "gripper"),
}
GRIPPER_OPEN = -1.0
GRIPPER_CLOSE = 1.0

# LeRobotDataset v3 feature keys.
LEROBOT_IMAGE_PREFIX = "observation.images."
LEROBOT_STATE = "observation.state"
LEROBOT_ACTION = "action"


def lerobot_image_key(camera: str) -> str:
    """`observation.images.<camera>`, the LeRobot feature key of a camera."""
    return f"{LEROBOT_IMAGE_PREFIX}{camera}"


# Privileged per-frame columns that simulated demos carry (svrl_sim.demos): the scripted expert's current
# object and target relative to the gripper (m, world axes). Only `svrl pretrain/sft --aux-weight` reads
# them, as the target of the policy's auxiliary head; a dataset without them trains without that loss.
FOCUS_FEATURES: tuple[str, ...] = (
    *(f"focus.object_d{a}" for a in "xyz"),
    *(f"focus.target_d{a}" for a in "xyz"),
)


def focus_pixel_features(cameras: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Where that object and target appear in each camera's image, per frame (svrl_sim.projection): (x, y),
    -1 to 1 across the image, x to the right, y down; beyond ±1 = out of view. `svrl pretrain/sft
    --keypoint-weight` teaches a policy's first two text keypoints per camera to sit on them."""
    return tuple(
        f"focus.{what}_px_{cam}_{axis}" for cam in cameras for what in ("object", "target") for axis in "xy"
    )


FOCUS_PIXEL_FEATURES: tuple[str, ...] = focus_pixel_features(CAMERAS)
