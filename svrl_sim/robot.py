"""The robot description as the simulator sees it: names, limits and home pose read from the URDF.

`urdf/svrl_arm.urdf` is the single source of kinematics for the sim, RViz and the real controller. This
module reads joint names and limits from that file (plain XML, no mujoco import) so the env, the tests
and the action clamps all use the numbers the ros2_control side uses.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

ARM_JOINTS: tuple[str, ...] = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINTS: tuple[str, str] = ("finger_joint1", "finger_joint2")
EE_LINK = "tool0"
WRIST_CAMERA_LINK = "wrist_camera_link"

# Joint configuration that puts the tool centre point at (0.42, 0, 0.26) m pointing straight down with
# the fingers closing along the base y axis. Solved once with the env's IK and written down here so it
# is a constant, not a computation that could differ between processes.
HOME_Q: tuple[float, ...] = (0.0, -0.293, 0.0, -2.577, 0.0, 2.284, 0.785)
FINGER_OPEN = 0.04  # m per finger; the full stroke is 2 x 0.04 = 8 cm


def urdf_path() -> Path:
    """Location of the robot description (override with SVRL_URDF for a modified arm)."""
    override = os.environ.get("SVRL_URDF")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1] / "urdf" / "svrl_arm.urdf"


@dataclass(frozen=True)
class JointLimit:
    lower: float  # rad or m
    upper: float
    velocity: float  # rad/s or m/s
    effort: float  # N m or N


@lru_cache(maxsize=4)
def joint_limits(path: str | None = None) -> dict[str, JointLimit]:
    """Limits of every revolute/prismatic joint in the URDF, by joint name."""
    file = Path(path) if path else urdf_path()
    if not file.is_file():
        raise FileNotFoundError(f"robot description not found: {file} (set SVRL_URDF to its path)")
    root = ET.parse(file).getroot()
    limits: dict[str, JointLimit] = {}
    for joint in root.findall("joint"):
        if joint.get("type") not in ("revolute", "prismatic"):
            continue
        lim = joint.find("limit")
        if lim is None:
            raise ValueError(f"{file}: joint {joint.get('name')!r} has no <limit> element")
        limits[str(joint.get("name"))] = JointLimit(
            lower=float(lim.get("lower", "0")),
            upper=float(lim.get("upper", "0")),
            velocity=float(lim.get("velocity", "0")),
            effort=float(lim.get("effort", "0")),
        )
    return limits


def arm_limits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower[7], upper[7], velocity[7]) of the arm joints, in URDF order joint1..joint7."""
    lim = joint_limits()
    lower = np.array([lim[j].lower for j in ARM_JOINTS])
    upper = np.array([lim[j].upper for j in ARM_JOINTS])
    velocity = np.array([lim[j].velocity for j in ARM_JOINTS])
    return lower, upper, velocity
