"""Names and sizes shared by the env, the vector env and the CLI (no heavy imports)."""

from __future__ import annotations

# Same values as svrl_policy.features.CAMERA_MAIN / CAMERA_WRIST (docs/contracts.md). svrl_sim does not
# import svrl_policy, so they are spelled here once and checked against it by a test when it exists.
CAMERA_MAIN = "main"
CAMERA_WRIST = "wrist"
CAMERAS: tuple[str, str] = (CAMERA_MAIN, CAMERA_WRIST)

PROPRIO_DIM = 15  # joint_pos[7], gripper_opening[1], ee_pos[3], ee_quat_wxyz[4]
ACTION_DIMS: dict[str, int] = {"ee_delta": 7, "joint_pos": 8}
# The names of each action dimension, as ActionChunk.dim_names carries them (same as
# svrl_policy.features.ACTION_NAMES; a test checks the two agree).
ACTION_NAMES: dict[str, tuple[str, ...]] = {
    "ee_delta": ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"),
    "joint_pos": (*(f"joint_{i}" for i in range(7)), "gripper"),
}
DEFAULT_IMAGE_SIZE = 128
DEFAULT_CONTROL_HZ = 10
