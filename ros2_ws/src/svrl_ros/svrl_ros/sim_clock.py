"""The bookkeeping of `sim_node`, without ROS: sim time, command checks, lock-step pairing, real-time holds.

Kept apart from the node so that the rules of docs/robot_graph.md ("Time") can be unit-tested without DDS
and so the node itself is only plumbing. Plain Python and numpy: no rclpy, no MuJoCo.

- `SimClock`: sim time counts control periods in integer nanoseconds (exact, so stamps compare with ==).
- `arm_target` / `gripper_target`: turn the payload of a command message into a target or say, with a
  short reason key for counting, why it cannot be used.
- `LockstepPairing`: one arm command for the current stamp + one gripper command -> one control period.
- `RealtimeTargets`: the newest targets with ros2_control's `cmd_timeout` (a stale arm target holds the
  measured position).
- `ReasonCounter`: log a kind of bad input the first time and then at 10, 100, ... without flooding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ARM_JOINTS: tuple[str, ...] = tuple(f"joint{i}" for i in range(1, 8))  # == svrl_sim.robot.ARM_JOINTS
FINGER_JOINTS: tuple[str, str] = ("finger_joint1", "finger_joint2")


class CommandRejected(ValueError):
    """A command message that cannot be executed. `reason` is a short key to count by; str() says why."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


class SimClock:
    """Sim time as a tick counter: stamp = tick x control period. It only moves forward."""

    def __init__(self, control_rate_hz: float) -> None:
        period_ns = 1e9 / float(control_rate_hz)
        if not math.isfinite(period_ns) or period_ns <= 0 or abs(period_ns - round(period_ns)) > 1e-3:
            raise ValueError(f"control_rate_hz={control_rate_hz} must give a whole number of ns per period")
        self.period_ns = round(period_ns)
        self.tick = 0

    @property
    def now_ns(self) -> int:
        return self.tick * self.period_ns

    def advance(self) -> int:
        """One more control period (a step or a reset); returns the new stamp in ns."""
        self.tick += 1
        return self.now_ns


def arm_target(joint_names: Sequence[str], points_positions: Sequence[Sequence[float]]) -> np.ndarray:
    """Positions of joint1..7 (rad) from a JointTrajectory's names and its points' positions.

    Joints are mapped by name, in any order. The last point is the target (the contract sends one point,
    reached after one control period). Anything unusable raises CommandRejected: the message is ignored
    whole, as ros2_control's joint trajectory controller rejects a bad trajectory.
    """
    names = list(joint_names)
    if not points_positions:
        raise CommandRejected("no_points", "trajectory has no points")
    if len(set(names)) != len(names):
        raise CommandRejected("duplicate_joints", f"trajectory names a joint twice: {names}")
    unknown = [n for n in names if n not in ARM_JOINTS]
    if unknown:
        raise CommandRejected("unknown_joints", f"trajectory names joints this arm lacks: {unknown}")
    missing = [n for n in ARM_JOINTS if n not in names]
    if missing:
        raise CommandRejected("missing_joints", f"trajectory lacks joints {missing}")
    positions = np.asarray(list(points_positions[-1]), dtype=np.float64)
    if positions.shape != (len(names),):
        raise CommandRejected(
            "wrong_length", f"trajectory point has {positions.size} positions for {len(names)} joint names"
        )
    if not np.isfinite(positions).all():
        raise CommandRejected(
            "non_finite", f"trajectory point has non-finite positions: {positions.tolist()}"
        )
    index = {n: i for i, n in enumerate(names)}
    return positions[[index[n] for n in ARM_JOINTS]]


def gripper_target(values: Sequence[float]) -> float:
    """The one finger position (m) of a gripper command (Float64MultiArray data); else CommandRejected."""
    data = list(values)
    if len(data) != 1:
        raise CommandRejected("wrong_length", f"gripper command must carry 1 value (m), got {len(data)}")
    value = float(data[0])
    if not math.isfinite(value):
        raise CommandRejected("non_finite", f"gripper command is not finite: {value}")
    return value


@dataclass(frozen=True)
class Command:
    """Joint-level targets for one control period: what `SimEnv.step_command` takes."""

    arm: np.ndarray  # float64[7], rad
    finger: float  # m per finger joint


class LockstepPairing:
    """Pairs the arm command for the current state with a gripper command; a pair is one control period.

    Rules (docs/robot_graph.md, "Time", lockstep):
    - an arm command whose stamp is not the current state's stamp is dropped (`stale_arm` counts them);
    - a gripper command waits for its arm command. `arm_controller` sends the gripper first, then the
      trajectory, so the gripper command paired with an arm command is the newest one received since the
      last period; older unpaired ones are superseded (`superseded_gripper`), so one orphan gripper
      command (its trajectory was dropped) cannot shift the pairing for the rest of the episode;
    - an arm command that arrives first (the two topics are not ordered with each other) waits for the
      next gripper command.
    `take()` hands out a ready pair once and starts the next period.
    """

    def __init__(self) -> None:
        self._arm: np.ndarray | None = None
        self._gripper: float | None = None
        self.stale_arm = 0
        self.superseded_gripper = 0
        self.last_arm: np.ndarray | None = None  # newest accepted targets: what `sim/step` holds
        self.last_gripper: float | None = None

    def add_gripper(self, finger: float) -> None:
        if self._gripper is not None:
            self.superseded_gripper += 1
        self._gripper = finger
        self.last_gripper = finger

    def add_arm(self, stamp_ns: int, current_ns: int, arm: np.ndarray) -> bool:
        """Queue an arm command; False (and counted) when its stamp is not the current state's."""
        if stamp_ns != current_ns:
            self.stale_arm += 1
            return False
        if self._arm is not None:  # a second trajectory for the same state: the newer one wins
            self.stale_arm += 1
        self._arm = np.array(arm, dtype=np.float64)
        self.last_arm = self._arm
        return True

    def take(self) -> Command | None:
        """The pair for the current state if both halves are in, else None."""
        if self._arm is None or self._gripper is None:
            return None
        command = Command(self._arm, self._gripper)
        self._arm, self._gripper = None, None
        return command

    def drop_queued(self) -> None:
        """Forget commands not executed yet (a reset, or `sim/step` moved the state on)."""
        self._arm, self._gripper = None, None

    def forget_targets(self) -> None:
        """After a reset: nothing commanded yet, `sim/step` holds the measured state."""
        self.drop_queued()
        self.last_arm, self.last_gripper = None, None


class RealtimeTargets:
    """Newest arm and gripper targets of a real-time sim, with the arm's command timeout.

    Like ros2_control: the arm's target expires `cmd_timeout_s` (wall time) after it was received; the
    arm then holds the position it measured when the target expired (latched, so a sagging arm does not
    creep). The gripper, like a forward command controller, holds its last command.
    """

    def __init__(self) -> None:
        self._arm: np.ndarray | None = None
        self._arm_received_s = -math.inf
        self._hold: np.ndarray | None = None
        self._gripper: float | None = None
        self.timeouts = 0

    def set_arm(self, arm: np.ndarray, now_s: float) -> None:
        self._arm = np.array(arm, dtype=np.float64)
        self._arm_received_s = now_s
        self._hold = None

    def set_gripper(self, finger: float) -> None:
        self._gripper = finger

    def reset(self) -> None:
        """After a reset: no targets; the arm and gripper hold what they measure at the next period."""
        self._arm, self._hold, self._gripper = None, None, None
        self._arm_received_s = -math.inf

    def command(
        self, now_s: float, timeout_s: float, measured_arm: np.ndarray, measured_finger: float
    ) -> Command:
        """Targets for the period starting now."""
        if self._arm is not None and now_s - self._arm_received_s <= timeout_s:
            arm = self._arm
        else:
            if self._arm is not None:  # the target just expired
                self.timeouts += 1
                self._arm = None
            if self._hold is None:
                self._hold = np.array(measured_arm, dtype=np.float64)
            arm = self._hold
        if self._gripper is None:
            self._gripper = float(measured_finger)
        return Command(arm, self._gripper)


class ReasonCounter:
    """Counts bad inputs per reason; `count` says when to log (1st, 10th, 100th, ...) so logs stay short."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def count(self, reason: str) -> bool:
        n = self.counts.get(reason, 0) + 1
        self.counts[reason] = n
        return str(n).rstrip("0") == "1"

    def __getitem__(self, reason: str) -> int:
        return self.counts.get(reason, 0)
