"""Policy server node: serves svrl/execute_instruction and publishes svrl/action_chunk.

One goal at a time goes through the same admission, limits, feedback, cancel and result code whatever
produces the chunks; a *driver* (drivers.py) adapts each kind of runner: the scripted expert in an
in-process simulator, or a trained checkpoint behind the robot graph (docs/robot_graph.md).

Liveness: goal admission never touches the runner thread; every runner call has a deadline
(`runner_deadline_s`) after which the goal aborts with reason error and the node keeps serving; every
wait wakes at least once per control period to see a cancel; when a goal ends for any reason a stop
chunk (chunk_length 0) is published so the arm holds within one control period.

Operator takeover: arm_controller publishes who owns the arm on svrl/arm_mode (latched). When it leaves
"policy" while a goal runs (teleop, hold), the goal ends with REASON_TAKEOVER; a goal sent while the
operator holds the arm is accepted and ends at once with the same reason, so the client learns why.

Following a trainer (`follow_checkpoints`, learned runner; docs/sim_training.md): trainer_node announces each
checkpoint on svrl/checkpoint; the newest is guarded (same action space and codec as the running checkpoint,
intact files) and loaded off the runner thread, then swapped in when no goal runs or at the start of the next
goal, before its first inference. A refused one is logged and reported on /diagnostics
(`policy_server: checkpoint`), and the server keeps the model it has. Off by default: a robot changes its
policy only when its operator turns this on.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger
from svrl_interfaces.action import ExecuteInstruction
from svrl_interfaces.msg import ActionChunk, PolicyCheckpoint

from svrl_ros import topics
from svrl_ros.checkpoint_follower import Announced, CheckpointFollower
from svrl_ros.conversions import (
    duration_to_seconds,
    float32_sequence,
    nanoseconds_to_stamp,
    seconds_to_duration,
)
from svrl_ros.diagnostics import diagnostic_array
from svrl_ros.drivers import Driver, LearnedDriver, RunnerDeadlineError, SelfExecutingDriver
from svrl_ros.goal_context import GoalContext, GoalEnded
from svrl_ros.inference_schedule import INFERENCE_MODES
from svrl_ros.learned_policy import CheckpointNotFoundError
from svrl_ros.node_runner import FatalError, run_node
from svrl_ros.runners import (
    LEARNED,
    RUNNER_NAMES,
    EpisodeRunner,
    RunnerThread,
    clip_text,
    make_runner,
)

Result = ExecuteInstruction.Result
Feedback = ExecuteInstruction.Feedback
ON_NEW_GOAL = ("reject", "preempt")
SUCCESS_SOURCES = ("sim", "operator", "none")
BACKENDS = ("auto", "torch", "onnx", "tensorrt")  # svrl_policy.runtime.BACKENDS (that module imports torch)
CHOICES = {
    "on_new_goal": ON_NEW_GOAL,
    "success_source": SUCCESS_SOURCES,
    "backend": BACKENDS,
    "inference": INFERENCE_MODES,
}
ARM_MODE_POLICY = "policy"  # chunk_executor.MODE_POLICY (that module pulls in the kinematics)
EXECUTOR_THREADS = 6  # a running goal, a preempting one, admission/cancel, topics, services, parameters


class BadParameterError(ValueError):
    """A parameter value the node cannot run with; the message names it and the allowed values."""


def _choice_problem(name: str, value: Any) -> str | None:
    allowed = CHOICES.get(name)
    if allowed is None or value in allowed:
        return None
    return f"{name} must be one of {list(allowed)}, got {value!r}"


def _descriptor(description: str, **kwargs: Any) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, **kwargs)


def _float_range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=low, to_value=high, step=0.0)]


def _int_range(low: int, high: int) -> list[IntegerRange]:
    return [IntegerRange(from_value=low, to_value=high, step=1)]


class PolicyServer(Node):
    def __init__(self, runner: EpisodeRunner | None = None, **node_kwargs: Any) -> None:
        super().__init__("policy_server", **node_kwargs)
        self._declare_parameters()
        self._check_start_parameters()
        self._runner_thread = RunnerThread()
        self._goal_group = ReentrantCallbackGroup()
        self._io_group = ReentrantCallbackGroup()
        self._chunk_pub = self.create_publisher(ActionChunk, topics.ACTION_CHUNK, 10)
        self._last_chunk: ActionChunk | None = None

        runner_name = self._param("runner")
        if runner is None and runner_name == LEARNED:
            self._driver: Driver = LearnedDriver(self)
        else:
            runner = (
                runner
                or self._runner_thread.submit(
                    make_runner, runner_name, init_state_index=self._param("init_state_index")
                ).result()
            )
            self._driver = SelfExecutingDriver(self, runner)

        # Goal slots: `_in_flight` counts accepted goals not yet finished (admission sees a goal the
        # moment it is accepted, so no second goal slips in before the first executes); `_generation`
        # numbers accepted goals, and a goal whose number is no longer the newest has been preempted.
        self._slot = threading.Condition()
        self._in_flight = 0
        self._generation = 0
        self._generation_of: dict[bytes, int] = {}
        self._owner: GoalContext | None = None
        self._goals: dict[bytes, GoalContext] = {}

        # The e-stop is arm_controller's to enforce; here it ends the running goal with its own reason
        # (instead of a stale-observation error once the held arm stops producing states) and refuses
        # new goals while it is pressed.
        self._estop_pressed = False
        topics.subscribe_estop(self, self._on_estop, callback_group=self._io_group)
        # Who owns the arm (arm_controller publishes it latched): a goal ends when an operator takes the arm,
        # and one sent while they hold it ends at once, both with REASON_TAKEOVER. None until first heard:
        # a graph without the mode topic runs goals as before.
        self._arm_mode: str | None = None
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.create_subscription(
            String, topics.ARM_MODE, self._on_arm_mode, latched, callback_group=self._io_group
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_service(
            Trigger, topics.CONFIRM_SUCCESS, self._on_confirm_success, callback_group=self._io_group
        )
        self._action_server = ActionServer(
            self,
            ExecuteInstruction,
            topics.EXECUTE_INSTRUCTION,
            execute_callback=self._execute,
            goal_callback=self._on_goal,
            handle_accepted_callback=self._on_accepted,
            cancel_callback=self._on_cancel,
            callback_group=self._goal_group,
        )
        self._follower: CheckpointFollower | None = None
        if isinstance(self._driver, LearnedDriver):
            self._follow_checkpoints()
        elif self._param("follow_checkpoints"):
            self.get_logger().warning(
                f"follow_checkpoints ignored: runner {runner_name!r} loads no checkpoint"
            )
        self.get_logger().info(f"policy_server ready (runner: {self._driver.describe()})")

    # -- parameters --------------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        declare = self.declare_parameter
        declare(
            "runner", "sim_expert", _descriptor(f"what produces the chunks: {RUNNER_NAMES}", read_only=True)
        )
        declare(
            "default_max_steps",
            400,
            _descriptor(
                "control steps allowed when a goal leaves max_steps at 0",
                integer_range=_int_range(1, 100_000),
            ),
        )
        declare(
            "runner_deadline_s",
            30.0,
            _descriptor(
                "wall time one runner call (start, inference, a self-executing chunk) may take before the goal "
                "aborts with reason error",
                floating_point_range=_float_range(0.01, 3600.0),
            ),
        )
        declare(
            "max_instruction_chars",
            512,
            _descriptor(
                "longer instructions are rejected (operator input; never logged whole)",
                integer_range=_int_range(1, 100_000),
            ),
        )
        declare(
            "on_new_goal",
            "reject",
            _descriptor(
                f"a goal arriving while one runs: {list(ON_NEW_GOAL)} (preempt aborts the running goal)"
            ),
        )
        declare(
            "init_state_split",
            "eval",
            _descriptor("sim: the initial-state split reset_sim / sim_expert start from (train | eval)"),
        )
        declare(
            "init_state_index",
            0,
            _descriptor(
                "sim: which initial state of the split to reset to", integer_range=_int_range(0, 1_000_000)
            ),
        )
        declare(
            "pace_realtime",
            False,
            _descriptor("sim_expert: take a control period of wall time per step, as a real arm would"),
        )
        # learned runner
        declare(
            "checkpoint",
            "",
            _descriptor(
                "learned: checkpoint directory (policy.onnx / policy.engine inside are used when fresh); empty = "
                "the newest `make demo` checkpoint under demo_dir, else a base under models_dir. Settable at run "
                "time between goals (refused while a goal runs); loads on the runner thread"
            ),
        )
        declare("backend", "auto", _descriptor(f"learned: runtime, one of {list(BACKENDS)}", read_only=True))
        declare(
            "follow_checkpoints",
            False,
            _descriptor(
                f"learned: load the checkpoints trainer_node announces on {topics.POLICY_CHECKPOINT} when their "
                "action space and codec match the running one's (swapped between goals; a refused one is "
                "reported on /diagnostics and the model serving stays). Off by default: a robot's operator "
                "turns it on. Settable at run time"
            ),
        )
        declare(
            "inference",
            "sync",
            _descriptor(
                f"learned: {list(INFERENCE_MODES)}. sync: the next chunk is computed from the state after the "
                "current chunk's last action (lock-step profiles: bit-identical to in-process episodes); async: "
                "computed from the newest observation while the current chunk still runs, so a real-time arm "
                "never waits at a chunk boundary (pair with arm_controller's blending). Read at goal start"
            ),
        )
        declare(
            "async_lead_steps",
            0,
            _descriptor(
                "learned, async: start the next inference when this many steps of the running chunk are left; "
                "0 = from the measured inference latency (ceil(slowest recent / period) + 1)",
                integer_range=_int_range(0, 10_000),
            ),
        )
        declare(
            "simulated_latency_s",
            0.0,
            _descriptor(
                "learned, benches and tests only: add this much wall time to every inference, to stand for a "
                "slower model on a small one. 0 in every profile",
                floating_point_range=_float_range(0.0, 10.0),
            ),
        )
        declare(
            "success_source",
            "sim",
            _descriptor(
                f"learned: what ends a goal with success: {list(SUCCESS_SOURCES)} (operator = the "
                f"{topics.CONFIRM_SUCCESS} Trigger service; none = only the step/time budget)"
            ),
        )
        declare(
            "observation_timeout_s",
            5.0,
            _descriptor(
                "learned: wall time to wait for a usable observation (or for the arm to make progress) before "
                "the goal aborts naming what was missing",
                floating_point_range=_float_range(0.01, 600.0),
            ),
        )
        declare(
            "image_stamp_tolerance_s",
            0.0,
            _descriptor(
                "learned: pair a joint state with each camera's image nearest in stamp within this many seconds "
                "(0: only the same stamp, as sim_node gives; cameras with their own clock need about half "
                'a camera frame period or more, docs/robot_graph.md "Time")',
                read_only=True,
                floating_point_range=_float_range(0.0, 10.0),
            ),
        )
        declare(
            "reset_sim",
            False,
            _descriptor(
                "learned: at goal start, reset the sim episode when the instruction is a sim task's instruction"
            ),
        )
        declare(
            "temperature",
            0.0,
            _descriptor(
                "learned: sampling temperature, 0 = greedy", floating_point_range=_float_range(0.0, 5.0)
            ),
        )
        declare(
            "control_rate_hz",
            10.0,
            _descriptor(
                "learned: control periods per second (must match sim_node and arm_controller)",
                floating_point_range=_float_range(0.1, 1000.0),
            ),
        )
        declare(
            "demo_dir", "runs/demo", _descriptor("learned: where `make demo` writes its runs", read_only=True)
        )
        declare("models_dir", "models", _descriptor("learned: shipped base checkpoints", read_only=True))

    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _check_start_parameters(self) -> None:
        """The same choices the run-time callback enforces, checked once at start: a typo in a profile
        must stop the node with a message, not fall back to some default."""
        for name in CHOICES:
            problem = _choice_problem(name, self._param(name))
            if problem is not None:
                raise BadParameterError(problem)

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        for param in params:
            value = param.value
            problem = _choice_problem(param.name, value)
            if problem is not None:
                return SetParametersResult(successful=False, reason=problem)
            if param.name == "follow_checkpoints" and getattr(self, "_follower", None) is not None:
                self._follower.set_enabled(bool(value))
            if param.name == "checkpoint" and isinstance(self._driver_or_none(), LearnedDriver):
                reason = self._driver.request_load(str(value))
                if reason is not None:
                    self.get_logger().warning(f"checkpoint not changed: {reason}")
                    return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    @property
    def goal_slot(self) -> threading.Condition:
        """The lock goal admission holds; a driver takes it to change what admission depends on."""
        return self._slot

    def chunk_subscribers(self) -> int:
        """How many subscriptions (arm_controller, recorders) are matched to svrl/action_chunk."""
        return self._chunk_pub.get_subscription_count()

    @property
    def driver(self) -> Driver | None:
        """What produces the chunks (None while the node is still being built); benchmarks read its timings."""
        return self._driver_or_none()

    def _driver_or_none(self) -> Driver | None:
        return getattr(self, "_driver", None)

    def goal_running(self) -> bool:
        with self._slot:
            return self._in_flight > 0

    # -- goal admission: decided here, never on the runner thread -----------------------------------
    def _on_goal(self, goal: ExecuteInstruction.Goal) -> GoalResponse:
        instruction = goal.instruction.strip()
        reason = self._admission_problem(goal.instruction, instruction)
        if reason is None:
            with self._slot:  # the driver's answer and the slot under one lock: no checkpoint swap between
                reason = self._driver.admit(instruction)
                if reason is None and self._in_flight and self._param("on_new_goal") != "preempt":
                    reason = "another instruction is running (on_new_goal=reject)"
                elif reason is None:
                    self._in_flight += 1
        if reason is not None:
            self.get_logger().warning(f"rejected goal {clip_text(instruction)!r}: {reason}")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _admission_problem(self, raw: str, instruction: str) -> str | None:
        limit = self._param("max_instruction_chars")
        if len(raw) > limit:
            return f"the instruction has {len(raw)} characters; the limit is {limit} (max_instruction_chars)"
        if not instruction:
            return "the instruction is empty"
        if self._estop_pressed:
            return "the e-stop is pressed (svrl/estop)"
        stuck = self._runner_stuck_for()
        if stuck is not None:
            return f"the runner is still stuck in a call that started {stuck:.1f} s ago"
        return None

    def _runner_stuck_for(self) -> float | None:
        busy = self._runner_thread.busy_for()
        return busy if busy is not None and busy > self._param("runner_deadline_s") else None

    def _on_estop(self, msg: Bool) -> None:
        with self._slot:
            self._estop_pressed = bool(msg.data)
            if self._estop_pressed:
                for ctx in list(self._goals.values()):
                    ctx.estopped = True
                    ctx.wake.set()

    def _on_arm_mode(self, msg: String) -> None:
        mode = msg.data.strip()
        with self._slot:
            changed, self._arm_mode = mode != self._arm_mode, mode
            if mode != ARM_MODE_POLICY:
                for ctx in list(self._goals.values()):
                    ctx.taken_over = mode
                    ctx.wake.set()
        if changed:
            self.get_logger().info(f"arm mode is now {mode!r} ({topics.ARM_MODE})")

    def arm_mode(self) -> str | None:
        """The mode arm_controller last published on svrl/arm_mode, or None before it was heard."""
        with self._slot:
            return self._arm_mode

    def _on_accepted(self, goal_handle: ServerGoalHandle) -> None:
        with self._slot:
            self._generation += 1
            self._generation_of[bytes(goal_handle.goal_id.uuid)] = self._generation
            if self._owner is not None:  # preempt mode: the running goal sees this at its next poll
                self._owner.preempted = True
                self._owner.wake.set()
        goal_handle.execute()

    def _on_cancel(self, goal_handle: Any) -> CancelResponse:
        goal_id = getattr(getattr(goal_handle, "goal_id", None), "uuid", None)
        ctx = self._goals.get(bytes(goal_id)) if goal_id is not None else None
        if ctx is not None:
            ctx.wake.set()
        return CancelResponse.ACCEPT

    def _on_confirm_success(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        source = self._param("success_source")
        ctx = self._owner
        if source != "operator":
            response.success, response.message = False, f"success_source is {source!r}, not 'operator'"
        elif ctx is None:
            response.success, response.message = False, "no goal is running"
        else:
            ctx.confirmed.set()
            ctx.wake.set()
            response.success, response.message = True, f"success confirmed for {clip_text(ctx.instruction)!r}"
        return response

    # -- execution ---------------------------------------------------------------------------------
    def _execute(self, goal_handle: ServerGoalHandle) -> Result:
        key = bytes(goal_handle.goal_id.uuid)
        goal = goal_handle.request
        period = self._driver.control_period_s
        with self._slot:
            generation = self._generation_of.pop(key, self._generation)
        ctx = GoalContext(
            handle=goal_handle,
            instruction=goal.instruction.strip(),
            generation=generation,
            max_steps=goal.max_steps or self._param("default_max_steps"),
            timeout_s=duration_to_seconds(goal.timeout),
            poll_s=min(0.05, period),
        )
        with self._slot:  # _on_estop walks _goals under the same lock, from another executor thread
            self._goals[key] = ctx
            ctx.estopped = self._estop_pressed  # pressed between admission and here: end at once
            if self._arm_mode is not None and self._arm_mode != ARM_MODE_POLICY:
                ctx.taken_over = self._arm_mode  # the operator holds the arm: end at once, with the reason
        try:
            return self._run_goal(ctx)
        finally:
            with self._slot:
                self._goals.pop(key, None)
                if self._owner is ctx:
                    self._owner = None
                self._in_flight -= 1
                self._slot.notify_all()
            self._install_pending_if_idle()

    def _take_arm(self, ctx: GoalContext) -> None:
        """Wait for the previous goal to hand the arm over (preempt mode), polling this goal's signals."""
        with self._slot:
            while True:
                if ctx.generation != self._generation:
                    ctx.preempted = True
                if ctx.stop_requested():
                    ctx.check()
                if self._owner is None:
                    self._owner, ctx.owns_arm = ctx, True
                    return
                self._slot.wait(ctx.poll_s)

    def _run_goal(self, ctx: GoalContext) -> Result:
        log = self.get_logger()
        label = clip_text(ctx.instruction)
        try:
            self._take_arm(ctx)
            self._install_pending(ctx)
            log.info(f"goal {label!r}: started ({self._driver.describe()})")
            self._feedback(ctx, Feedback.PHASE_STARTING)
            self._driver.start(ctx)
            while True:
                ctx.check()
                self._feedback(ctx, Feedback.PHASE_INFERRING)
                self._driver.run_chunk(ctx)
                ctx.chunk_index += 1
        except GoalEnded as end:
            outcome = end
        except RunnerDeadlineError as error:
            log.error(f"goal {label!r}: {error}")
            outcome = GoalEnded(Result.REASON_ERROR, str(error))
        except Exception as error:  # a runner failure ends this goal, never the node
            log.error(f"goal {label!r}: runner failed: {error!r}")
            outcome = GoalEnded(Result.REASON_ERROR, str(error) or repr(error))
        finally:
            if ctx.owns_arm:
                self._publish_stop()
                self._driver.stop(ctx)
        return self._finish(ctx, outcome)

    def _finish(self, ctx: GoalContext, end: GoalEnded) -> Result:
        elapsed = time.monotonic() - ctx.started
        if end.reason == Result.REASON_CANCELED and ctx.handle.is_cancel_requested:
            ctx.handle.canceled()
        elif end.success:
            ctx.handle.succeed()
        else:
            ctx.handle.abort()
        self.get_logger().info(
            f"goal {clip_text(ctx.instruction)!r}: {end.reason} after {ctx.steps} steps ({elapsed:.2f} s): "
            f"{end.message}"
        )
        return Result(
            success=end.success,
            steps=ctx.steps,
            reason=end.reason,
            message=end.message,
            elapsed=seconds_to_duration(elapsed),
        )

    # -- helpers the drivers use ---------------------------------------------------------------------
    def call_runner(self, ctx: GoalContext, function: Any, *args: Any) -> Any:
        """Run `function` on the runner thread and wait for it under `runner_deadline_s`.

        The wait wakes every poll period, so a cancel ends the goal at once; the call itself cannot be
        interrupted and finishes on its own (the next goal queues behind it, or is rejected while it
        is stuck past its deadline).
        """
        deadline_s = self._param("runner_deadline_s")
        future = self._runner_thread.submit(function, *args)
        started = time.monotonic()
        while True:
            try:
                return future.result(timeout=ctx.poll_s)
            except FutureTimeoutError:
                pass
            if ctx.stop_requested():
                ctx.check()
            if time.monotonic() - started > deadline_s:
                name = getattr(function, "__name__", "call")
                raise RunnerDeadlineError(
                    f"the runner did not answer within {deadline_s:.2f} s (runner_deadline_s) in {name}"
                )

    def call_runner_quietly(self, function: Any, *args: Any) -> None:
        """A clean-up call: waits up to the deadline when the runner is idle; failures are logged.

        When a goal ends while a runner call is still going (cancel mid-chunk, a missed deadline), the
        clean-up queues behind it and the goal ends now: its result must not wait for the runner.
        """
        busy = self._runner_thread.busy_for() is not None
        future = self._runner_thread.submit(function, *args)
        if busy:
            return
        try:
            future.result(timeout=self._param("runner_deadline_s"))
        except Exception as error:
            self.get_logger().warning(f"runner clean-up failed: {error!r}")

    def publish_chunk(
        self,
        ctx: GoalContext,
        actions: np.ndarray,
        *,
        stamp_ns: int | None,
        action_space: str,
        dim_names: list[str],
        control_period_s: float,
        checkpoint_id: str,
    ) -> None:
        msg = ActionChunk()
        msg.header.stamp = (
            nanoseconds_to_stamp(stamp_ns) if stamp_ns is not None else self.get_clock().now().to_msg()
        )
        msg.header.frame_id = "base_link"
        msg.action_space = action_space
        msg.dim_names = list(dim_names)
        msg.chunk_length, msg.dims = (int(n) for n in actions.shape)
        msg.control_period = seconds_to_duration(control_period_s)
        msg.actions = float32_sequence(actions)
        msg.chunk_index = ctx.chunk_index
        msg.checkpoint_id = checkpoint_id
        self._last_chunk = msg
        self._chunk_pub.publish(msg)

    def republish_chunk(self) -> None:
        """The running goal's last chunk again, unchanged (same stamp and index): see drivers.CHUNK_RESEND_S."""
        if self._last_chunk is not None:
            self._chunk_pub.publish(self._last_chunk)

    def _publish_stop(self) -> None:
        """chunk_length 0 = drop the rest of the current chunk and hold (docs/robot_graph.md)."""
        msg = ActionChunk()
        stamp_ns = self._driver.newest_stamp_ns()
        msg.header.stamp = (
            nanoseconds_to_stamp(stamp_ns) if stamp_ns is not None else self.get_clock().now().to_msg()
        )
        msg.header.frame_id = "base_link"
        msg.action_space = self._driver.action_space
        msg.checkpoint_id = self._driver.checkpoint_id
        msg.control_period = seconds_to_duration(self._driver.control_period_s)
        self._chunk_pub.publish(msg)

    def feedback(self, ctx: GoalContext, phase: str) -> None:
        self._feedback(ctx, phase)

    def _feedback(self, ctx: GoalContext, phase: str) -> None:
        ctx.handle.publish_feedback(Feedback(step=ctx.steps, phase=phase, chunk_index=ctx.chunk_index))

    # -- following a trainer's checkpoints (learned runner) ---------------------------------------------
    def _follow_checkpoints(self) -> None:
        driver = self._driver
        assert isinstance(driver, LearnedDriver)
        self._follower = CheckpointFollower(
            load=driver.load_policy,
            running_path=lambda: driver.policy_path,
            on_pending=self._install_pending_if_idle,
            on_change=self._publish_checkpoint_diagnostics,
            log=self.get_logger(),
            enabled=bool(self._param("follow_checkpoints")),
        )
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.create_subscription(
            PolicyCheckpoint, topics.POLICY_CHECKPOINT, self._on_checkpoint_announced, latched,
            callback_group=self._io_group,
        )  # fmt: skip
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        # wall time: a paused lock-step sim's /clock stands still, diagnostics must not
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0, self._publish_checkpoint_diagnostics, self._io_group, clock=steady)

    def _on_checkpoint_announced(self, msg: PolicyCheckpoint) -> None:
        self._follower.announce(
            Announced(
                path=msg.path,
                step=int(msg.step),
                checkpoint_id=msg.checkpoint_id,
                action_space=msg.action_space,
                codec_fingerprint=msg.codec_fingerprint,
            )
        )
        self._publish_checkpoint_diagnostics()

    def _install_pending_if_idle(self) -> None:
        """Swap in a loaded checkpoint now if no goal runs and the runner thread is idle (under the goal
        slot, so no goal is admitted meanwhile); otherwise the next goal's start does it."""
        follower = getattr(self, "_follower", None)
        if follower is None:
            return
        with self._slot:
            if self._in_flight or self._runner_thread.busy_for() is not None or self._driver.loading:
                return
            policy = follower.take_pending()
            if policy is not None:
                self._driver.install(policy)
                follower.installed(policy)

    def _install_pending(self, ctx: GoalContext) -> None:
        """At a goal's start, before its first inference: swap in a loaded checkpoint on the runner thread
        (queued behind any call still running there), so every chunk of the goal comes from one model."""
        policy = self._follower.take_pending() if self._follower is not None else None
        if policy is not None:
            try:
                self.call_runner(ctx, self._driver.install, policy)
            finally:  # a cancel while waiting ends the goal; the queued install still runs before any inference
                self._follower.installed(policy)

    def _publish_checkpoint_diagnostics(self) -> None:
        follower = getattr(self, "_follower", None)
        publisher = getattr(self, "_diagnostics_pub", None)
        if follower is None or publisher is None:
            return
        stamp = self.get_clock().now().to_msg()
        status = follower.status(self._driver.checkpoint_id)
        publisher.publish(diagnostic_array(stamp, f"{self.get_name()}: checkpoint", "svrl_policy", *status))

    def destroy_node(self) -> None:
        if getattr(self, "_follower", None) is not None:
            self._follower.close()
        self._runner_thread.shutdown()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    fatal = (
        FatalError((CheckpointNotFoundError,), 1),
        FatalError((BadParameterError,), 2, "bad configuration: ", while_building=True),
    )
    code = run_node(
        PolicyServer,
        "policy_server",
        args=args,
        fatal=fatal,
        make_executor=lambda: MultiThreadedExecutor(num_threads=EXECUTOR_THREADS),
    )
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
