"""What the operator's drag means for the arm: marker poses -> `ee_delta` action chunks, without ROS.

The operator drags a 6-DoF marker to where the tool should be. Each control period, `TeleopMotion.chunk`
turns the distance from the *measured* tool pose to that target into actions of the policy's own action
space (`ee_delta`: Δxyz in m and a base-frame rotation vector in rad per control period, gripper -1 open
.. +1 closed; svrl_sim.kinematics), so arm_controller runs them through the same kinematics and the same
safety filter as the policy's chunks, and a recording of them is a demonstration in the policy's terms.

Rules, in the order they apply:
1. The target is clamped into the safety filter's workspace box (less `WORKSPACE_MARGIN`), so dragging
   past the box edge slides the tool along it instead of making arm_controller refuse and hold.
2. Each action moves at most `max_linear_speed` x period (by norm, so the direction is kept) and rotates
   at most `max_angular_speed` x period towards the target: however far the marker jumps, the arm
   approaches it at a bounded speed. A chunk of K actions plans K such steps (each from where the previous
   one should have left the tool); the next chunk starts again from the measured pose.
3. The arm moves only while a drag is alive: from the first POSE_UPDATE (or MOUSE_DOWN) until MOUSE_UP,
   and only while feedback keeps arriving (`feedback_timeout_s`, a dead man's switch: a client that
   crashed or lost the network stops the arm). A gripper toggle outside a drag runs `gripper_steps`
   periods of no motion with the new gripper value, so the fingers have time to move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from svrl_ros.safety_filter import DEFAULT_WORKSPACE_MAX, DEFAULT_WORKSPACE_MIN
from svrl_sim import robot
from svrl_sim.kinematics import MAX_ANGULAR_SPEED, MAX_LINEAR_SPEED
from svrl_sim.scene_spec import quat_mul as quaternion_multiply  # the one Hamilton product (w, x, y, z)

GRIPPER_OPEN, GRIPPER_CLOSED = -1.0, 1.0
WORKSPACE_MARGIN = 0.01  # m kept inside the safety filter's box


# ---------------------------------------------------------------------------------------------- quaternions
def normalized_quaternion(q: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of unit length; raises ValueError for a non-finite or zero quaternion."""
    q = np.asarray(q, dtype=np.float64)
    n = float(np.linalg.norm(q))
    if q.shape != (4,) or not np.isfinite(q).all() or n < 1e-9:
        raise ValueError(f"not a usable quaternion (w, x, y, z): {q.tolist()}")
    return q / n


def rotation_vector(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Base-frame rotation vector r with R(target) = exp(r) R(current): the `ee_delta` rotation convention.

    The shorter of the two equivalent rotations (|r| <= pi): q and -q are the same orientation.
    """
    conj = current * np.array([1.0, -1.0, -1.0, -1.0])
    d = quaternion_multiply(target, conj)
    if d[0] < 0:
        d = -d
    s = float(np.linalg.norm(d[1:]))
    if s < 1e-12:
        return np.zeros(3)
    angle = 2.0 * math.atan2(s, float(d[0]))
    return d[1:] / s * angle


def clip_norm(v: np.ndarray, limit: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v if n <= limit else v * (limit / n)


def gripper_from_finger_target(finger_m: float) -> float:
    """Inverse of svrl_sim.kinematics.finger_position: a finger joint target (m) -> gripper -1 .. +1."""
    return float(np.clip(1.0 - 2.0 * finger_m / robot.FINGER_OPEN, -1.0, 1.0))


# ---------------------------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class TeleopLimits:
    period_s: float
    max_linear_speed: float = 0.15  # m/s (the kinematics allow MAX_LINEAR_SPEED)
    max_angular_speed: float = 0.8  # rad/s (the kinematics allow MAX_ANGULAR_SPEED)
    workspace_min: tuple[float, float, float] = DEFAULT_WORKSPACE_MIN
    workspace_max: tuple[float, float, float] = DEFAULT_WORKSPACE_MAX
    feedback_timeout_s: float = 1.0
    chunk_length: int = 1
    gripper_steps: int = 8

    def __post_init__(self) -> None:
        for name in ("period_s", "max_linear_speed", "max_angular_speed", "feedback_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.max_linear_speed > MAX_LINEAR_SPEED or self.max_angular_speed > MAX_ANGULAR_SPEED:
            raise ValueError(
                f"max_linear_speed {self.max_linear_speed} / max_angular_speed {self.max_angular_speed} exceed "
                f"what an ee_delta action may ask ({MAX_LINEAR_SPEED} m/s, {MAX_ANGULAR_SPEED} rad/s)"
            )
        if not 1 <= self.chunk_length <= 50:
            raise ValueError(f"chunk_length must be in 1..50, got {self.chunk_length}")
        if self.gripper_steps < 1:
            raise ValueError(f"gripper_steps must be >= 1, got {self.gripper_steps}")
        lo = np.asarray(self.workspace_min, float) + WORKSPACE_MARGIN
        hi = np.asarray(self.workspace_max, float) - WORKSPACE_MARGIN
        if lo.shape != (3,) or hi.shape != (3,) or not (lo < hi).all():
            raise ValueError(f"workspace {self.workspace_min} .. {self.workspace_max} leaves no room")


# ---------------------------------------------------------------------------------------------- the drag
class TeleopMotion:
    """Drag state and the action chunks it asks for. Not thread-safe (one executor thread)."""

    def __init__(self, limits: TeleopLimits) -> None:
        self.limits = limits
        self._lo = np.asarray(limits.workspace_min, float) + WORKSPACE_MARGIN
        self._hi = np.asarray(limits.workspace_max, float) - WORKSPACE_MARGIN
        self.gripper = GRIPPER_OPEN
        self.target_position: np.ndarray | None = None
        self.target_quaternion: np.ndarray | None = None
        self.dragging = False
        self.last_feedback_s = -math.inf
        self._gripper_steps_left = 0

    # ------------------------------------------------------------------------------------ operator input
    def start_drag(self, now_s: float) -> None:
        """MOUSE_DOWN: a drag begins (no target until the first pose)."""
        self.dragging = True
        self.last_feedback_s = now_s

    def drag_to(self, position: np.ndarray, quaternion: np.ndarray, now_s: float) -> np.ndarray:
        """POSE_UPDATE: the new target (clamped into the workspace; returned). Raises ValueError on a
        non-finite pose, which leaves the previous target as it was."""
        p = np.asarray(position, dtype=np.float64)
        if p.shape != (3,) or not np.isfinite(p).all():
            raise ValueError(f"marker position is not 3 finite numbers: {p.tolist()}")
        q = normalized_quaternion(quaternion)
        self.target_position = np.clip(p, self._lo, self._hi)
        self.target_quaternion = q
        self.dragging = True
        self.last_feedback_s = now_s
        return self.target_position

    def touch(self, now_s: float) -> None:
        """Any other feedback of the live drag keeps it alive."""
        if self.dragging:
            self.last_feedback_s = now_s

    def release(self) -> bool:
        """MOUSE_UP (or a timeout): the drag ends and the target is forgotten. True if a drag was alive."""
        was = self.dragging
        self.dragging = False
        self.target_position = self.target_quaternion = None
        self._gripper_steps_left = 0
        return was

    def set_gripper(self, closed: bool) -> None:
        self.gripper = GRIPPER_CLOSED if closed else GRIPPER_OPEN
        self._gripper_steps_left = self.limits.gripper_steps

    def reset(self, gripper: float) -> None:
        """A mode switch: no drag, and the gripper value continues what the arm was last told."""
        self.release()
        self.gripper = float(np.clip(gripper, -1.0, 1.0))

    # ------------------------------------------------------------------------------------ state
    def timed_out(self, now_s: float) -> bool:
        return self.dragging and now_s - self.last_feedback_s > self.limits.feedback_timeout_s

    def active(self, now_s: float) -> bool:
        """Whether the arm is to be commanded now."""
        drag = self.dragging and self.target_position is not None and not self.timed_out(now_s)
        return drag or self._gripper_steps_left > 0

    # ------------------------------------------------------------------------------------ output
    def chunk(self, position: np.ndarray, quaternion: np.ndarray, now_s: float) -> np.ndarray | None:
        """float32[K, 7] ee_delta actions from the measured tool pose, or None when nothing is to move."""
        if not self.active(now_s):
            return None
        lim = self.limits
        actions = np.zeros((lim.chunk_length, 7), dtype=np.float64)
        actions[:, 6] = self.gripper
        drag = self.dragging and self.target_position is not None and not self.timed_out(now_s)
        if drag:
            assert self.target_position is not None and self.target_quaternion is not None
            remaining = self.target_position - np.asarray(position, dtype=np.float64)
            turn = rotation_vector(self.target_quaternion, normalized_quaternion(quaternion))
            for i in range(lim.chunk_length):
                step = clip_norm(remaining, lim.max_linear_speed * lim.period_s)
                rot = clip_norm(turn, lim.max_angular_speed * lim.period_s)
                actions[i, :3], actions[i, 3:6] = step, rot
                remaining, turn = remaining - step, turn - rot
        else:
            self._gripper_steps_left = max(0, self._gripper_steps_left - 1)
        return actions.astype(np.float32)
