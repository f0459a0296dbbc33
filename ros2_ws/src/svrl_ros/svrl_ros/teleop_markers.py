"""The markers `teleop_marker` serves to RViz: what they look like, their controls and their menu.

Two interactive markers, both in the arm's base frame (`BASE_FRAME`, the URDF's root link, where
svrl_sim.kinematics computes tool poses), stamped zero so RViz uses its newest transform:

- `TOOL_TARGET`: the 6-DoF handle the operator drags (three move and three rotate axes; RViz draws the
  arrows and rings), a box between the fingers that toggles the gripper when clicked (BUTTON), and the
  right-click menu. Its description says who owns the arm.
- `TOOL_MEASURED`: where the tool really is (forward kinematics of the measured joints), drawn small and
  grey with no controls, so that during a drag the operator sees the target and the arm side by side.
"""

from __future__ import annotations

import math

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import InteractiveMarker, InteractiveMarkerControl, Marker, MenuEntry

BASE_FRAME = "base_link"
TOOL_TARGET = "svrl_tool_target"
TOOL_MEASURED = "svrl_tool_measured"
GRIPPER_CONTROL = "gripper"
MARKER_SCALE = 0.15  # m: size of RViz's arrows and rings

MENU_TAKE_OVER = 1
MENU_HAND_BACK = 2
MENU_HOLD = 3
MENU_OPEN_GRIPPER = 4
MENU_CLOSE_GRIPPER = 5
MENU_TITLES = {
    MENU_TAKE_OVER: "Take over (teleop)",
    MENU_HAND_BACK: "Hand back to the policy",
    MENU_HOLD: "Hold",
    MENU_OPEN_GRIPPER: "Open gripper",
    MENU_CLOSE_GRIPPER: "Close gripper",
}
MODE_HINTS = {
    "policy": "policy drives the arm (right-click: Take over)",
    "teleop": "teleop: drag to move, click the box for the gripper",
    "hold": "arm holds (right-click: Take over or Hand back)",
}


def pose_msg(position: np.ndarray, quaternion_wxyz: np.ndarray) -> Pose:
    p, q = [float(v) for v in position], [float(v) for v in quaternion_wxyz]
    return Pose(
        position=Point(x=p[0], y=p[1], z=p[2]), orientation=Quaternion(w=q[0], x=q[1], y=q[2], z=q[3])
    )


def pose_arrays(pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """geometry_msgs/Pose -> (position[3], quaternion (w, x, y, z)[4])."""
    p, q = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([q.w, q.x, q.y, q.z])


def _axis(w: float, x: float, y: float, z: float) -> Quaternion:
    n = math.sqrt(w * w + x * x + y * y + z * z)
    return Quaternion(w=w / n, x=x / n, y=y / n, z=z / n)


def _six_dof_controls() -> list[InteractiveMarkerControl]:
    """Move along and rotate about x, y, z. A control acts along the x axis of its orientation."""
    controls = []
    for axis, orientation in (("x", _axis(1, 1, 0, 0)), ("y", _axis(1, 0, 0, 1)), ("z", _axis(1, 0, 1, 0))):
        controls.append(
            InteractiveMarkerControl(
                name=f"move_{axis}",
                orientation=orientation,
                orientation_mode=InteractiveMarkerControl.FIXED,
                interaction_mode=InteractiveMarkerControl.MOVE_AXIS,
            )
        )
        controls.append(
            InteractiveMarkerControl(
                name=f"rotate_{axis}",
                orientation=orientation,
                orientation_mode=InteractiveMarkerControl.INHERIT,
                interaction_mode=InteractiveMarkerControl.ROTATE_AXIS,
            )
        )
    return controls


def _box(size: tuple[float, float, float], rgba: tuple[float, float, float, float]) -> Marker:
    return Marker(
        type=Marker.CUBE,
        scale=Vector3(x=size[0], y=size[1], z=size[2]),
        color=ColorRGBA(r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3]),
    )


def target_marker(pose: Pose, mode: str, gripper_closed: bool) -> InteractiveMarker:
    """The operator's handle at `pose`; its look and description follow the mode and the gripper."""
    active = mode == "teleop"
    rgba = (0.1, 0.8, 0.2, 0.9) if active else (0.9, 0.6, 0.1, 0.6)
    width = 0.02 if gripper_closed else 0.07  # the box shows the finger opening asked for
    gripper = InteractiveMarkerControl(
        name=GRIPPER_CONTROL,
        interaction_mode=InteractiveMarkerControl.BUTTON,
        always_visible=True,
        markers=[_box((0.03, width, 0.03), rgba)],
        description="gripper",
    )
    menu = [
        MenuEntry(id=i, parent_id=0, title=title, command="", command_type=MenuEntry.FEEDBACK)
        for i, title in MENU_TITLES.items()
    ]
    marker = InteractiveMarker(
        name=TOOL_TARGET,
        pose=pose,
        scale=MARKER_SCALE,
        description=f"svrl tool [{mode}] {MODE_HINTS.get(mode, '')}",
        menu_entries=menu,
        controls=[gripper, *_six_dof_controls()],
    )
    marker.header.frame_id = BASE_FRAME
    return marker


def measured_marker(pose: Pose) -> InteractiveMarker:
    """A display-only marker at the measured tool pose (no interaction)."""
    ghost = InteractiveMarkerControl(
        name="measured",
        interaction_mode=InteractiveMarkerControl.NONE,
        always_visible=True,
        markers=[_box((0.02, 0.02, 0.02), (0.6, 0.6, 0.6, 0.7))],
    )
    marker = InteractiveMarker(
        name=TOOL_MEASURED, pose=pose, scale=0.05, description="measured tool", controls=[ghost]
    )
    marker.header.frame_id = BASE_FRAME
    return marker
