"""What `arm_controller` commands and when (docs/robot_graph.md, "Time"), without ROS.

`ControlCore` owns the whole decision: the mode (who owns the arm), the latched e-stop, the current
chunk, the newest joint state, the hold target and the safety filter. The node only converts messages
and calls it, so every rule below is unit-tested without DDS:

- action i of a chunk is meant for the state at `stamp + i * period`; a cycle for the state at t takes
  `i = round((t - stamp) / period)`, and each index runs at most once;
- a chunk with no actions is a stop: drop the chunk and hold;
- chunks that overlap (asynchronous inference sends the next one before the current one ends) are
  blended per period by `chunk_blending` (none / ensemble / crossfade; the gripper is never averaged);
  a chunk older than the newest one held is ignored (delivered out of order);
- lock-step (`lockstep=True`): no action for t means nothing is commanded (the sim waits); holds send
  nothing either;
- timer: no action for t holds the measured position once the last command is older than
  `command_timeout_s`. A hold re-commands one fixed target, latched when the hold began, so the arm does
  not sag one tracking error per period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from svrl_ros.chunk_blending import BlendConfig, Covering, blend
from svrl_ros.safety_filter import SafetyFilter, SafetyViolation
from svrl_sim.kinematics import ArmKinematics, finger_position

MODE_POLICY = "policy"
MODE_TELEOP = "teleop"
MODE_HOLD = "hold"
MODES = (MODE_POLICY, MODE_TELEOP, MODE_HOLD)

# diagnostic_msgs/DiagnosticStatus levels, spelled here to keep this module ROS-free.
OK, WARN, ERROR = 0, 1, 2


def action_targets(
    kinematics: ArmKinematics,
    arm_q: np.ndarray,
    finger_q: np.ndarray,
    action: np.ndarray,
    action_space: str,
    period_s: float,
) -> tuple[np.ndarray, float]:
    """One action -> (arm joint targets, finger target) from the measured joints, exactly as SimEnv._apply."""
    a = np.asarray(action, dtype=np.float64)
    kinematics.set_joint_positions(arm_q, finger_q)
    if action_space == "ee_delta":
        q_target = kinematics.ee_delta_target(a[:3], a[3:6], period_s)
    else:
        q_target = kinematics.joint_position_target(a, period_s)
    return q_target, finger_position(a[-1])


@dataclass
class Chunk:
    source: str  # MODE_POLICY or MODE_TELEOP
    stamp_ns: int
    actions: np.ndarray  # float64[K, D]
    action_space: str
    executed: set[int] = field(default_factory=set)
    fade_start_ns: int | None = None  # the first period it was executed for (crossfade)

    def index_for(self, t_ns: int, period_ns: int) -> int:
        return round((int(t_ns) - self.stamp_ns) / period_ns)

    def end_ns(self, period_ns: int) -> int:
        """The period just after its last action."""
        return self.stamp_ns + len(self.actions) * period_ns


class ChunkSchedule:
    """Which action applies to the state at time t, from the chunks that cover it; each index once.

    Chunks are kept oldest first (by stamp) while they still cover a period to come, so that with
    asynchronous inference a chunk arriving before the current one ends can be blended with it
    (chunk_blending). With one chunk at a time (lock-step, synchronous inference) this is the plain
    rule: action `round((t - stamp) / period)` of the chunk, each index at most once.
    """

    MAX_CHUNKS = 16  # a bound on memory if chunks arrive far faster than they run out

    def __init__(self, period_ns: int, blending: BlendConfig | None = None) -> None:
        if period_ns <= 0:
            raise ValueError(f"period_ns must be > 0, got {period_ns}")
        self.period_ns = int(period_ns)
        self.blending = blending if blending is not None else BlendConfig()
        self.chunks: list[Chunk] = []

    @property
    def current(self) -> Chunk | None:
        """The newest chunk (what a stop or a refusal drops, what the status names), or None."""
        return self.chunks[-1] if self.chunks else None

    def add(self, chunk: Chunk) -> bool:
        """Schedule a new chunk; False (nothing changes) for one older than the newest held (reordered).

        The same stamp again replaces that chunk (a re-sent chunk keeps what already ran of it); a chunk of
        another action space or width cannot be blended with the held ones and replaces them all.
        """
        newest = self.current
        if newest is not None and chunk.stamp_ns < newest.stamp_ns:
            return False
        if newest is not None and (
            chunk.action_space != newest.action_space or chunk.actions.shape[1:] != newest.actions.shape[1:]
        ):
            self.chunks = []
        same = [c for c in self.chunks if c.stamp_ns == chunk.stamp_ns]
        if same and same[0].actions.shape == chunk.actions.shape:
            chunk.executed |= same[0].executed
            chunk.fade_start_ns = same[0].fade_start_ns
        self.chunks = [c for c in self.chunks if c.stamp_ns != chunk.stamp_ns] + [chunk]
        del self.chunks[: -self.MAX_CHUNKS]
        return True

    def replace(self, chunk: Chunk) -> None:
        """Kept for callers of the single-chunk schedule: the same as `add`."""
        self.add(chunk)

    def drop(self) -> None:
        self.chunks = []

    def index_for(self, t_ns: int) -> int | None:
        """Index of the newest chunk's action meant for t (may be out of its range), or None."""
        chunk = self.current
        return None if chunk is None else chunk.index_for(t_ns, self.period_ns)

    def take(self, t_ns: int) -> tuple[int, np.ndarray] | None:
        """(index in the newest covering chunk, the action for the state at t_ns), marked executed in
        every covering chunk; None when no chunk has an action for t (none yet valid, all used up, or
        already executed)."""
        period = self.period_ns
        # Chunks whose last action lies before t will never run again.
        self.chunks = [c for c in self.chunks if c.index_for(t_ns, period) < len(c.actions)]
        covering = [
            c
            for c in self.chunks
            if 0 <= (i := c.index_for(t_ns, period)) < len(c.actions) and i not in c.executed
        ]
        if not covering:
            return None
        coverings = []
        previous_end: int | None = None
        for chunk in covering:
            if chunk.fade_start_ns is None:
                chunk.fade_start_ns = int(t_ns)
            coverings.append(
                Covering(chunk.actions[chunk.index_for(t_ns, period)], chunk.fade_start_ns, previous_end)
            )
            previous_end = chunk.end_ns(period)
        action = blend(coverings, int(t_ns), period, self.blending)
        for chunk in covering:
            chunk.executed.add(chunk.index_for(t_ns, period))
        return covering[-1].index_for(t_ns, period), action


@dataclass(frozen=True)
class JointState:
    stamp_ns: int
    arm_q: np.ndarray  # float64[7]
    finger_q: np.ndarray  # float64[2]
    arrived_s: float  # steady clock


@dataclass(frozen=True)
class Command:
    """One control period's output: gripper then trajectory, stamped with the joint state it answers."""

    stamp_ns: int
    arm: np.ndarray  # float64[7], rad
    finger: float  # m
    hold: bool


class ControlCore:
    """Mode, e-stop, chunk timing, holds and the safety filter of one arm. Not thread-safe (one executor)."""

    def __init__(
        self,
        safety: SafetyFilter,
        *,
        lockstep: bool,
        command_timeout_s: float,
        start_mode: str = MODE_HOLD,
        kinematics: ArmKinematics | None = None,
        blending: BlendConfig | None = None,
    ) -> None:
        if start_mode not in MODES:
            raise ValueError(f"start_mode {start_mode!r} is not one of {MODES}")
        self.safety = safety
        self.period_s = safety.limits.period_s
        self.schedule = ChunkSchedule(round(self.period_s * 1e9), blending)
        self.lockstep = lockstep
        self.command_timeout_s = float(command_timeout_s)
        self.kinematics = kinematics if kinematics is not None else ArmKinematics()
        self.mode = start_mode
        self.estop_latched = False
        self.estop_topic = False
        self.joint: JointState | None = None
        self._hold: tuple[np.ndarray, float] | None = None  # latched hold target (timer mode)
        self._last_command_s: float | None = None
        self._last_finger: float | None = None
        self._last_action_stamp_ns: int | None = None
        self._last_sent: Command | None = None  # lock-step: re-sent if the sim re-sends its state
        self._hold_status: tuple[int, str] | None = None
        self.level, self.message = OK, f"waiting for joint_states (mode {start_mode})"
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "commands",
                "commands_resent",
                "holds",
                "chunks_accepted",
                "chunks_refused",
                "chunks_ignored",
                "chunks_stale",
                "stop_chunks",
                "steps_refused",
                "clips_velocity",
                "clips_acceleration",
                "clips_position",
                "clips_gripper",
                "joint_states_bad",
                "joint_states_out_of_order",
                "stale_holds",
                "safety_violations",
            ),
            0,
        )

    # ------------------------------------------------------------------------------------ inputs
    def on_joint_state(self, stamp_ns: int, arm_q: np.ndarray, finger_q: np.ndarray, now_s: float) -> bool:
        """Store the newest measured state; False for one older than the newest (ignored, counted)."""
        if self.joint is not None and stamp_ns < self.joint.stamp_ns:
            self.counters["joint_states_out_of_order"] += 1
            self._status(WARN, "ignored a joint state older than the newest one")
            return False
        self.joint = JointState(
            int(stamp_ns), np.asarray(arm_q, np.float64), np.asarray(finger_q, np.float64), now_s
        )
        return True

    def bad_joint_state(self, reason: str) -> None:
        self.counters["joint_states_bad"] += 1
        self._status(WARN, f"ignored joint_states: {reason}")

    def on_chunk(
        self,
        source: str,
        stamp_ns: int,
        actions: np.ndarray,
        action_space: str,
        dim_names: Sequence[str] = (),
        period_ns: int = 0,
    ) -> bool:
        """A chunk from `source`; True when it changed what is executed (the node then runs a cycle)."""
        if self.estop_latched:
            self.counters["chunks_ignored"] += 1
            self._status(ERROR, f"ignored a {source} chunk: e-stop latched")
            return False
        if source != self.mode:
            self.counters["chunks_ignored"] += 1
            self._status(WARN, f"ignored a {source} chunk: the arm is owned by {self.mode}")
            return False
        if len(actions) == 0:
            self.counters["stop_chunks"] += 1
            self._drop_and_hold()
            self._status(OK, f"stop chunk from {source}: holding", sticky=True)
            return True
        reason = self.safety.check_chunk(actions, action_space, dim_names, period_ns)
        if reason is not None:
            self.refuse_chunk(source, reason)
            return True
        if not self.schedule.add(Chunk(source, int(stamp_ns), np.asarray(actions, np.float64), action_space)):
            self.counters["chunks_stale"] += 1  # older than the newest chunk held: delivered out of order
            self._status(WARN, f"ignored a {source} chunk older than the newest one")
            return False
        self._hold = None
        self.counters["chunks_accepted"] += 1
        return True

    def refuse_chunk(self, source: str, reason: str) -> None:
        """A chunk that cannot be used (check 4, or a malformed message): drop what runs and hold."""
        self.counters["chunks_refused"] += 1
        self._drop_and_hold()
        self._status(WARN, f"refused a {source} chunk: {reason}", sticky=True)

    def on_estop(self, value: bool) -> None:
        self.estop_topic = bool(value)
        if value and not self.estop_latched:
            self.estop_latched = True
            self._drop_and_hold()
            self._status(ERROR, "e-stop latched (svrl/reset_estop clears it)")

    def set_mode(self, mode: str) -> tuple[bool, str]:
        """Switch the owner of the arm; every switch drops the chunk and re-syncs to the measured state."""
        if mode not in MODES:
            return False, f"unknown mode {mode!r}: one of {list(MODES)}"
        if self.estop_latched and mode != MODE_HOLD:
            return False, "e-stop latched: only 'hold' is allowed until svrl/reset_estop clears it"
        previous, self.mode = self.mode, mode
        self._drop_and_hold()
        message = f"mode {previous} -> {mode}; command re-synced to the measured joint state"
        self._status(ERROR if self.estop_latched else OK, message, sticky=True)
        return True, message

    def reset_estop(self) -> tuple[bool, str]:
        """Clear the latch; refused while the e-stop topic still says True. The arm stays in hold mode."""
        if not self.estop_latched:
            return True, "e-stop was not latched"
        if self.estop_topic:
            return False, "svrl/estop still says True: release it first"
        self.estop_latched = False
        self.mode = MODE_HOLD
        self._drop_and_hold()
        message = "e-stop cleared; mode is hold until svrl/set_mode chooses an owner"
        self._status(OK, message, sticky=True)
        return True, message

    # ------------------------------------------------------------------------------------ the cycle
    def cycle(self, now_s: float) -> Command | None:
        """One control cycle for the newest joint state; the command to publish, or None."""
        js = self.joint
        if js is None:
            return None
        age = None if self.lockstep else now_s - js.arrived_s
        reason = self.safety.gate(
            estop_latched=self.estop_latched, source_owns=self.mode != MODE_HOLD, joint_state_age_s=age
        )
        if reason is not None:
            if self.mode == MODE_HOLD and not self.estop_latched:
                reason = "mode hold"
                level = OK
            elif self.estop_latched:
                level = ERROR
            else:
                level = WARN
                self.counters["stale_holds"] += self._hold is None
                self.schedule.drop()  # the state it would act on is unknown: nothing of it runs later
            return self._hold_command(level, f"holding: {reason}")

        taken = None
        if self._last_action_stamp_ns != js.stamp_ns:  # at most one action per measured state
            taken = self.schedule.take(js.stamp_ns)
        elif (
            self.lockstep
            and self._last_sent is not None
            and self._last_sent.stamp_ns == js.stamp_ns
            and self._last_command_s is not None
            and js.arrived_s > self._last_command_s
        ):
            # The paused sim re-sent the state this command answered (it arrived again after the command
            # went out): the command was lost (a subscription not matched yet, a full queue). Send the very
            # same command again; a sim that did step has moved on and drops it by its stamp.
            self.counters["commands_resent"] += 1
            return self._last_sent
        if taken is None:
            # Keep the reason of a refusal or stop on /diagnostics until something runs again.
            level, message = self._hold_status or (OK, "holding: no action for the current state")
            timed_out = self._last_command_s is None or now_s - self._last_command_s > self.command_timeout_s
            if self._hold is not None or timed_out:
                return self._hold_command(level, message)
            return None

        index, action = taken
        chunk = self.schedule.current
        assert chunk is not None
        self._last_action_stamp_ns = js.stamp_ns
        try:
            arm, finger = action_targets(
                self.kinematics, js.arm_q, js.finger_q, action, chunk.action_space, self.period_s
            )
            result = self.safety.command(js.arm_q, arm, finger)
        except (ValueError, SafetyViolation) as error:
            self.counters["safety_violations"] += 1
            self._drop_and_hold()
            self._status(ERROR, f"refused action {index}: {error}", sticky=True)
            return self._hold_command(*self._hold_status)
        if result.refused:
            self.counters["steps_refused"] += 1
            self._drop_and_hold()
            return self._hold_command(
                WARN, f"refused action {index} of the {chunk.source} chunk: {result.reason}"
            )
        for clip in result.clips:
            self.counters[f"clips_{clip}"] += 1
        assert result.arm is not None and result.finger is not None
        self._hold = None
        self._hold_status = None
        self._last_command_s = now_s
        self._last_finger = result.finger
        self.counters["commands"] += 1
        if result.clips:
            self._status(WARN, f"executing {chunk.source} chunk; clipped: {', '.join(result.clips)}")
        else:
            self._status(OK, f"executing {chunk.source} chunk")
        self._last_sent = Command(js.stamp_ns, result.arm, result.finger, hold=False)
        return self._last_sent

    # ------------------------------------------------------------------------------------ internals
    def _drop_and_hold(self) -> None:
        """Drop the chunk and latch a hold target at the measured state (re-sync)."""
        self.schedule.drop()
        self._last_sent = None  # a stopped arm is never re-commanded
        self.safety.reset_motion()
        self._hold = None
        if self.joint is not None:
            self._hold = self._hold_target(self.joint)

    def _hold_target(self, js: JointState) -> tuple[np.ndarray, float]:
        # The gripper keeps its last command (re-commanding the measured opening would let go of a grasp).
        finger = self._last_finger if self._last_finger is not None else float(np.mean(js.finger_q))
        return self.safety.hold(js.arm_q, finger)

    def _hold_command(self, level: int, message: str) -> Command | None:
        self._status(level, message)
        if self.lockstep or self.joint is None:
            return None  # a paused lock-step sim is a held arm
        if self._hold is None:
            self._hold = self._hold_target(self.joint)
        self.safety.reset_motion()
        self.counters["holds"] += 1
        arm, finger = self._hold
        return Command(self.joint.stamp_ns, arm.copy(), finger, hold=True)

    def _status(self, level: int, message: str, sticky: bool = False) -> None:
        """Report a decision; `sticky` keeps it while the hold it caused lasts."""
        self.level, self.message = level, message
        if sticky:
            self._hold_status = (level, message)
