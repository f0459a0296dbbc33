"""The safety filter of `arm_controller` (docs/robot_graph.md, "Safety filter"), without ROS.

Every command to the arm passes through `SafetyFilter` in the contract's order; the first failing check
decides and the arm holds:

1. e-stop latched, 2. the source does not own the arm, 3. stale joint state  -> `gate`
4. non-finite action, wrong action space / dims / dim names / period     -> `check_chunk`
5. joint targets clipped to velocity, acceleration and URDF position limits -> `command`
6. tool position of the filtered target outside the workspace box        -> `command` (refused)

Clips are applied with `np.clip`, which returns its input bit for bit when the bounds do not bind: a
command that needs no clipping is exactly the target `svrl_sim.kinematics` computed, as `SimEnv` would.
`publishable` is the last line of defence: nothing non-finite or outside the URDF limits leaves here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from svrl_sim import robot
from svrl_sim.constants import ACTION_DIMS, ACTION_NAMES
from svrl_sim.kinematics import ArmKinematics

# Defaults measured on the scripted experts (70 episodes, every suite): joint steps reach at most 0.54 of
# URDF velocity x period, accelerations 19.9 rad/s^2 (joint7), target tool positions x 0.377..0.694,
# y -0.277..0.264, z 0.014..0.281 m. The defaults leave at least a factor 2 / 3 cm of margin.
DEFAULT_VELOCITY_SCALE = 1.0
MEASURED_LIMIT_TOLERANCE = 0.02  # rad a measured joint may sit beyond its URDF limit (overshoot, noise)
DEFAULT_MAX_ACCELERATION = 40.0  # rad/s^2
DEFAULT_WORKSPACE_MIN = (0.10, -0.60, -0.02)  # m, base frame (table top at z = 0)
DEFAULT_WORKSPACE_MAX = (0.90, 0.60, 0.70)
PERIOD_TOLERANCE_NS = 1000  # a chunk's control period may differ from the controller's by this much

CLIP_VELOCITY = "velocity"
CLIP_ACCELERATION = "acceleration"
CLIP_POSITION = "position"
CLIP_GRIPPER = "gripper"


class SafetyViolation(RuntimeError):
    """A command that would leave the URDF limits or is not finite: never published."""


def _arm_limits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return robot.arm_limits()


@dataclass(frozen=True)
class SafetyLimits:
    """Every limit of the filter; the URDF ones default to `svrl_sim.robot.arm_limits()`."""

    period_s: float
    velocity_scale: float = DEFAULT_VELOCITY_SCALE
    max_acceleration: float = DEFAULT_MAX_ACCELERATION
    workspace_min: tuple[float, float, float] = DEFAULT_WORKSPACE_MIN
    workspace_max: tuple[float, float, float] = DEFAULT_WORKSPACE_MAX
    joint_state_timeout_s: float = 0.5
    lower: np.ndarray = field(default_factory=lambda: _arm_limits()[0])
    upper: np.ndarray = field(default_factory=lambda: _arm_limits()[1])
    velocity: np.ndarray = field(default_factory=lambda: _arm_limits()[2])
    finger_max: float = robot.FINGER_OPEN

    def __post_init__(self) -> None:
        scalars = {
            "period_s": self.period_s,
            "velocity_scale": self.velocity_scale,
            "max_acceleration": self.max_acceleration,
            "joint_state_timeout_s": self.joint_state_timeout_s,
        }
        for name, value in scalars.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise ValueError(f"workspace_min/max must be 3 finite numbers each, got {lo!r} / {hi!r}")
        if not (lo < hi).all():
            raise ValueError(f"workspace_min {lo.tolist()} must be below workspace_max {hi.tolist()}")

    @property
    def max_step(self) -> np.ndarray:
        """Largest joint step per control period (rad): velocity_scale x URDF velocity x period."""
        return self.velocity_scale * self.velocity * self.period_s


@dataclass(frozen=True)
class FilterResult:
    """What `command` decided: targets to publish (None = refused, hold) and why."""

    arm: np.ndarray | None  # float64[7], rad
    finger: float | None  # m per finger joint
    clips: tuple[str, ...] = ()  # which clips bound
    reason: str = ""  # why it was refused (empty when accepted)

    @property
    def refused(self) -> bool:
        return self.arm is None


class SafetyFilter:
    """Checks 1-6 of the contract. Keeps one piece of state: the previous command's step (acceleration)."""

    def __init__(self, limits: SafetyLimits, kinematics: ArmKinematics | None = None) -> None:
        self.limits = limits
        # A scratch robot-only model: forward kinematics of candidate targets, never the measured state.
        self._fk = kinematics if kinematics is not None else ArmKinematics()
        self.previous_step = np.zeros(7)

    # ------------------------------------------------------------------------------------ checks 1-3
    def gate(self, *, estop_latched: bool, source_owns: bool, joint_state_age_s: float | None) -> str | None:
        """Checks 1-3; the reason to hold, or None. `joint_state_age_s` None skips the staleness check
        (lock-step: the sim is paused until commanded, so its newest state stays exact however old)."""
        if estop_latched:
            return "e-stop latched (svrl/reset_estop clears it)"
        if not source_owns:
            return "the command's source does not own the arm"
        if joint_state_age_s is not None and not joint_state_age_s <= self.limits.joint_state_timeout_s:
            return (
                f"joint state is stale ({joint_state_age_s:.3f} s old > joint_state_timeout_s "
                f"{self.limits.joint_state_timeout_s} s)"
            )
        return None

    # ------------------------------------------------------------------------------------ check 4
    def check_chunk(
        self,
        actions: np.ndarray,
        action_space: str,
        dim_names: Sequence[str] = (),
        period_ns: int = 0,
    ) -> str | None:
        """Check 4 on a whole chunk; the reason to refuse it, or None. One bad value refuses the chunk."""
        if action_space not in ACTION_DIMS:
            return f"action_space {action_space!r} is not one of {sorted(ACTION_DIMS)}"
        dims = ACTION_DIMS[action_space]
        if actions.ndim != 2 or actions.shape[1] != dims or actions.shape[0] < 1:
            return f"{action_space} chunk must be [K >= 1, {dims}], got {list(actions.shape)}"
        if len(dim_names) and tuple(dim_names) != ACTION_NAMES[action_space]:
            return f"dim_names {list(dim_names)} are not {list(ACTION_NAMES[action_space])}"
        bad = ~np.isfinite(actions)
        if bad.any():
            step, dim = np.argwhere(bad)[0].tolist()
            return f"chunk contains NaN/inf ({int(bad.sum())} values, first at action {step} dim {dim})"
        want_ns = round(self.limits.period_s * 1e9)
        if period_ns and abs(int(period_ns) - want_ns) > PERIOD_TOLERANCE_NS:
            return f"chunk control period {period_ns * 1e-9:.6f} s is not the controller's {self.limits.period_s} s"
        return None

    # ------------------------------------------------------------------------------------ checks 5-6
    def command(self, measured_q: np.ndarray, target_q: np.ndarray, finger: float) -> FilterResult:
        """Clip one step's joint targets (5) and check the workspace (6). Accepting updates the step that
        the next acceleration is measured against; refusing resets it (the arm holds)."""
        lim = self.limits
        measured = np.asarray(measured_q, dtype=np.float64)
        q = np.asarray(target_q, dtype=np.float64)
        if q.shape != (7,) or not np.isfinite(q).all() or not math.isfinite(finger):
            self.reset_motion()
            return FilterResult(None, None, reason=f"non-finite joint targets {q.tolist()} / finger {finger}")
        beyond = (measured < lim.lower - MEASURED_LIMIT_TOLERANCE) | (
            measured > lim.upper + MEASURED_LIMIT_TOLERANCE
        )
        if beyond.any():
            # An encoder fault or a bad calibration: the position clip below would jump the joint back to
            # its limit in one step, faster than any velocity limit. Refuse; a person must look.
            self.reset_motion()
            joints = [int(i) + 1 for i in np.flatnonzero(beyond)]
            return FilterResult(
                None, None, reason=f"measured joints {joints} are beyond their URDF limits: refusing to move"
            )
        clips: list[str] = []
        max_step = lim.max_step
        clipped = np.clip(q, measured - max_step, measured + max_step)
        if (clipped != q).any():
            clips.append(CLIP_VELOCITY)
        # Acceleration: this step may differ from the previous one by max_acceleration x period^2. The
        # previous step is within the velocity bound, so the two bounds always overlap.
        prev = np.clip(self.previous_step, -max_step, max_step)
        dv = lim.max_acceleration * lim.period_s**2
        lo = np.maximum(measured - max_step, measured + prev - dv)
        hi = np.minimum(measured + max_step, measured + prev + dv)
        q2 = np.clip(clipped, lo, hi)
        if (q2 != clipped).any():
            clips.append(CLIP_ACCELERATION)
        q3 = np.clip(q2, lim.lower, lim.upper)  # last: whatever came before, the URDF limits hold
        if (q3 != q2).any():
            clips.append(CLIP_POSITION)
        f = float(np.clip(finger, 0.0, lim.finger_max))
        if f != finger:
            clips.append(CLIP_GRIPPER)

        self._fk.set_joint_positions(q3)
        tool = self._fk.tool_pose().position
        outside = (tool < np.asarray(lim.workspace_min)) | (tool > np.asarray(lim.workspace_max))
        if outside.any() or not np.isfinite(tool).all():
            self.reset_motion()
            return FilterResult(
                None,
                None,
                tuple(clips),
                f"tool target {np.round(tool, 3).tolist()} m is outside the workspace "
                f"{list(lim.workspace_min)} .. {list(lim.workspace_max)}",
            )
        self.publishable(q3, f)
        self.previous_step = q3 - measured
        return FilterResult(q3, f, tuple(clips))

    def hold(self, measured_q: np.ndarray, finger: float) -> tuple[np.ndarray, float]:
        """A hold command: the measured position (inside the URDF limits) and a finger target in range."""
        q = np.clip(np.asarray(measured_q, dtype=np.float64), self.limits.lower, self.limits.upper)
        f = float(np.clip(finger, 0.0, self.limits.finger_max)) if math.isfinite(finger) else 0.0
        self.reset_motion()
        self.publishable(q, f)
        return q, f

    def reset_motion(self) -> None:
        """The arm holds: the next command accelerates from rest."""
        self.previous_step = np.zeros(7)

    def publishable(self, q: np.ndarray, finger: float) -> None:
        """Last line of defence; raises SafetyViolation (never `assert`: it must survive python -O)."""
        lim = self.limits
        if q.shape != (7,) or not np.isfinite(q).all():
            raise SafetyViolation(f"joint targets are not 7 finite numbers: {q.tolist()}")
        if (q < lim.lower).any() or (q > lim.upper).any():
            raise SafetyViolation(f"joint targets {q.tolist()} are outside the URDF limits")
        if not (math.isfinite(finger) and 0.0 <= finger <= lim.finger_max):
            raise SafetyViolation(f"finger target {finger} is outside [0, {lim.finger_max}]")
