"""One running ExecuteInstruction goal: its budget, its progress, and the signals that end it early.

Shared by the policy server and its drivers; every wait inside a goal goes through `GoalContext.sleep`
or polls `stop_requested`, so a cancel or a preemption is seen within one control period.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from rclpy.action.server import ServerGoalHandle
from svrl_interfaces.action import ExecuteInstruction

Result = ExecuteInstruction.Result


class GoalEnded(Exception):
    """Raised anywhere inside a goal's loop to end it; carries the result fields."""

    def __init__(self, reason: str, message: str, success: bool = False) -> None:
        super().__init__(message)
        self.reason, self.message, self.success = reason, message, success


@dataclass
class GoalContext:
    """One running goal: its budget, progress, and the signals that end it early."""

    handle: ServerGoalHandle
    instruction: str
    generation: int
    max_steps: int
    timeout_s: float
    poll_s: float
    started: float = field(default_factory=time.monotonic)
    steps: int = 0
    chunk_index: int = 0
    wake: threading.Event = field(default_factory=threading.Event)
    confirmed: threading.Event = field(default_factory=threading.Event)
    preempted: bool = False
    estopped: bool = False
    taken_over: str | None = None  # the arm's mode (svrl/arm_mode) once it left "policy" during this goal
    owns_arm: bool = False
    # learned runner: what ends it with success, and the stamps it started from / continues from
    success_source: str = "none"
    start_ns: int = 0
    judge_after_ns: int = -1  # episode statuses up to this stamp cannot end the goal (they predate it)
    next_ns: int = 0
    # async inference: the mode this goal runs with, and where the last published chunk's actions end
    inference: str = "sync"
    chunk_end_ns: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.max_steps - self.steps)

    def stop_requested(self) -> bool:
        return (
            self.preempted
            or self.estopped
            or self.taken_over is not None
            or self.handle.is_cancel_requested
            or self._timed_out()
        )

    def _timed_out(self) -> bool:
        return self.timeout_s > 0 and time.monotonic() - self.started > self.timeout_s

    def check(self) -> None:
        """Raise GoalEnded if the goal must end now: e-stop, cancel, takeover, preemption, time or step budget."""
        if self.estopped:
            raise GoalEnded(Result.REASON_ESTOP, "the e-stop was pressed (svrl/estop); the arm holds")
        if self.handle.is_cancel_requested:
            raise GoalEnded(Result.REASON_CANCELED, "canceled by the client")
        if self.taken_over is not None:
            raise GoalEnded(
                Result.REASON_TAKEOVER,
                f"arm_controller is in {self.taken_over!r} mode, not 'policy' (svrl/arm_mode): the operator "
                "owns the arm; svrl/set_mode 'policy' hands it back",
            )
        if self.preempted:
            raise GoalEnded(Result.REASON_PREEMPTED, "preempted by a newer goal (on_new_goal=preempt)")
        if self._timed_out():
            raise GoalEnded(Result.REASON_TIMEOUT, f"no success within {self.timeout_s:.1f} s")
        if self.steps >= self.max_steps:
            raise GoalEnded(Result.REASON_MAX_STEPS, f"no success within {self.max_steps} steps")

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` of wall time, ending early (GoalEnded) on cancel or preemption."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.wake.wait(min(self.poll_s, remaining))
            if self.stop_requested():
                self.check()
