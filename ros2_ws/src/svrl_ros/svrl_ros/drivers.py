"""How each kind of runner turns a goal into action chunks; `PolicyServer` owns everything around it.

- `SelfExecutingDriver`: a runner that executes its own chunks in an in-process simulator (`sim_expert`).
- `LearnedDriver` (`runner: learned`): a trained checkpoint behind the robot graph. Per chunk it waits
  for the observation at the stamp the chunk starts from, runs the policy, publishes the chunk *before*
  it executes (arm_controller executes it), then waits until the states that follow show it executed
  (docs/robot_graph.md, "Time"). With `inference: async` it waits only until `lead` steps of the chunk
  are left, so the next chunk is computed while this one still runs (inference_schedule).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from svrl_interfaces.action import ExecuteInstruction
from svrl_interfaces.srv import ResetEpisode

from svrl_ros import topics
from svrl_ros.conversions import stamp_to_nanoseconds
from svrl_ros.goal_context import GoalContext, GoalEnded
from svrl_ros.inference_schedule import (
    INFERENCE_ASYNC,
    LatencyWindow,
    lead_steps,
    steps_run_on,
    steps_to_episode_end,
    trigger_step,
)
from svrl_ros.learned_policy import (
    CheckpointNotFoundError,
    LearnedPolicy,
    check_checkpoint_dir,
    resolve_default_checkpoint,
)
from svrl_ros.observation_buffer import ObservationStore, attach_subscriptions
from svrl_ros.runners import DIM_NAMES, EpisodeRunner, clip_text, tasks_by_instruction

if TYPE_CHECKING:
    from svrl_ros.policy_server import PolicyServer

Result = ExecuteInstruction.Result
Feedback = ExecuteInstruction.Feedback
CHUNK_RESEND_S = 1.0  # wall time without progress after which the running chunk is published again


class ArmRefusals:
    """arm_controller's refusals as it reports them on /diagnostics.

    In lock-step a refused step means the sim waits for ever; on a robot the arm holds. Either way the
    goal cannot go on, and the operator should read arm_controller's reason rather than a stale-observation
    timeout some seconds later. A refusal is a *rise* of its refusal counters (chunks_refused,
    steps_refused, safety_violations), never the message text alone: the reason for an old refusal stays on
    /diagnostics (re-published every second) until something runs again, and must not end a later goal.
    """

    COUNTERS = ("chunks_refused", "steps_refused", "safety_violations")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: tuple[float, str] | None = None
        self._total: int | None = None

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if not status.name.endswith(": safety filter"):
                continue
            values = {kv.key: kv.value for kv in status.values}
            try:
                total = sum(int(values.get(key, 0)) for key in self.COUNTERS)
            except ValueError:
                continue
            with self._lock:
                rose = self._total is not None and total > self._total
                self._total = total
                if rose and _level(status.level) >= _level(DiagnosticStatus.WARN):
                    self._latest = (time.monotonic(), status.message)

    def since(self, monotonic_s: float) -> str | None:
        """The newest refusal reported after `monotonic_s`, or None."""
        with self._lock:
            latest = self._latest
        return latest[1] if latest is not None and latest[0] >= monotonic_s else None


def _level(value: bytes | int) -> int:
    """DiagnosticStatus.level is a byte in rclpy (b'\\x01'), an int elsewhere."""
    return value[0] if isinstance(value, bytes) else int(value)


class RunnerDeadlineError(RuntimeError):
    """A runner call did not answer within runner_deadline_s."""


class Driver:
    """How one kind of runner turns a goal into chunks; the server owns everything around it."""

    action_space = "ee_delta"
    checkpoint_id = ""
    control_period_s = 0.1

    def describe(self) -> str:
        raise NotImplementedError

    def admit(self, instruction: str) -> str | None:
        """Cheap, thread-safe check at goal admission: None, or why the goal is rejected."""
        return None

    def start(self, ctx: GoalContext) -> None:
        raise NotImplementedError

    def run_chunk(self, ctx: GoalContext) -> None:
        """Produce, publish and see executed one chunk; update ctx.steps; raise GoalEnded to end."""
        raise NotImplementedError

    def stop(self, ctx: GoalContext) -> None:
        """Clean up after a goal (the server has already published the stop chunk)."""

    def newest_stamp_ns(self) -> int | None:
        return None

    def request_load(self, path: str) -> str | None:
        return "this runner loads no checkpoint"


class SelfExecutingDriver(Driver):
    """A runner that executes its chunks itself, in an in-process simulator (sim_expert)."""

    def __init__(self, server: PolicyServer, runner: EpisodeRunner) -> None:
        self._server = server
        self._runner = runner
        self.checkpoint_id = runner.name

    def describe(self) -> str:
        return self._runner.name

    def admit(self, instruction: str) -> str | None:
        return self._runner.check_instruction(instruction)

    def start(self, ctx: GoalContext) -> None:
        self._server.call_runner(ctx, self._runner.start, ctx.instruction)

    def run_chunk(self, ctx: GoalContext) -> None:
        chunk_started = time.monotonic()
        chunk = self._server.call_runner(ctx, self._runner.run_chunk, ctx.remaining)
        self.action_space, self.control_period_s = chunk.action_space, chunk.control_period_s
        self._server.publish_chunk(
            ctx,
            chunk.actions,
            stamp_ns=None,
            action_space=chunk.action_space,
            dim_names=chunk.dim_names,
            control_period_s=chunk.control_period_s,
            checkpoint_id=self._runner.name,
        )
        ctx.steps += chunk.executed_steps
        self._server.feedback(ctx, Feedback.PHASE_EXECUTING)
        if self._server._param("pace_realtime"):
            budget = chunk.executed_steps * chunk.control_period_s
            ctx.sleep(budget - (time.monotonic() - chunk_started))
        if chunk.success:
            raise GoalEnded(Result.REASON_SUCCESS, "the task's success condition holds", success=True)
        if chunk.done:
            raise GoalEnded(Result.REASON_MAX_STEPS, "the episode ended without success")

    def stop(self, ctx: GoalContext) -> None:
        self._server.call_runner_quietly(self._runner.stop)


@dataclass(frozen=True)
class ChunkTiming:
    """Where one chunk's serving time went, on the monotonic clock (ns); read by `svrl bench serve`.

    completed: the message that completed the observation reached the process; runner_started: the
    runner thread took the call; inference_started: proprio and the observation dict are built and the
    runtime starts; runner_finished: the runtime returned; published: the chunk was handed to DDS.
    """

    stamp_ns: int
    chunk_index: int
    completed_ns: int
    runner_started_ns: int
    inference_started_ns: int
    runner_finished_ns: int
    published_ns: int


class LearnedDriver(Driver):
    """A trained checkpoint driving the arm through the robot graph (docs/robot_graph.md, "Time")."""

    def __init__(self, server: PolicyServer) -> None:
        self._server = server
        self._log = server.get_logger()
        self.store = ObservationStore(
            image_tolerance_ns=round(server._param("image_stamp_tolerance_s") * 1e9)
        )
        self._policy: LearnedPolicy | None = None
        self._loading: str | None = None
        self.chunk_timings: deque[ChunkTiming] = deque(maxlen=1024)  # instrumentation, newest last
        self.latencies = LatencyWindow()  # observation complete -> chunk published: async inference's lead
        self._sim_tasks: dict[str, str] | None = None
        self.control_period_s = 1.0 / server._param("control_rate_hz")
        path = self._initial_checkpoint()
        self._load(path)  # at start-up, on the runner thread, no deadline: the first load may be slow
        if self._policy is None:
            raise CheckpointNotFoundError(f"could not load the checkpoint {path}; see the log above")
        attach_subscriptions(server, self.store, server._io_group)
        self.arm_refusals = ArmRefusals()
        server.create_subscription(
            DiagnosticArray, topics.DIAGNOSTICS, self.arm_refusals.on_diagnostics, 10,
            callback_group=server._io_group,
        )  # fmt: skip
        self._reset_client = server.create_client(
            ResetEpisode, topics.SIM_RESET, callback_group=server._io_group
        )

    # -- checkpoints ---------------------------------------------------------------------------------
    def _initial_checkpoint(self) -> str:
        given = str(self._server._param("checkpoint")).strip()
        if given:
            return given
        path, origin = resolve_default_checkpoint(
            self._server._param("demo_dir"), self._server._param("models_dir")
        )
        self._log.info(f"no checkpoint given: using {origin}: {path}")
        return str(path)

    def _load(self, path: str) -> None:
        self._loading = path
        try:
            self._server._runner_thread.submit(self._load_on_runner_thread, path).result()
        finally:
            self._loading = None

    def _load_on_runner_thread(self, path: str) -> None:
        try:
            policy = self.load_policy(path)
        except Exception as error:  # keep serving with the previous checkpoint, if any
            self._log.error(f"cannot load checkpoint {path}: {error}")
            return
        self.install(policy)

    def install(self, policy: LearnedPolicy) -> None:
        """Serve `policy` from now on. Called on the runner thread, or when no goal runs and it is idle:
        a chunk is always computed by the policy whose id it carries (policy_server, follow_checkpoints)."""
        self._policy = policy
        self.checkpoint_id = policy.checkpoint_id
        self.action_space = policy.action_space
        self.store.set_cameras(policy.cameras)
        self._log.info(f"checkpoint {policy.checkpoint_id} loaded (runtime {policy.runtime_name})")

    def load_policy(self, path: str) -> LearnedPolicy:
        """A new LearnedPolicy with the server's backend and temperature, warmed up (any thread; it is not
        installed): the first chunk of the next goal costs what every other chunk costs."""
        policy = LearnedPolicy(path, self._server._param("backend"), self._server._param("temperature"))
        seconds = policy.warm_up()
        self._log.info(f"checkpoint {policy.checkpoint_id}: warm-up inference took {seconds:.2f} s")
        return policy

    @property
    def policy_path(self):
        """The folder of the checkpoint serving now (None before one is loaded)."""
        policy = self._policy
        return policy.path if policy is not None else None

    @property
    def loading(self) -> str | None:
        """The checkpoint a `checkpoint` parameter change is loading, if any."""
        return self._loading

    def request_load(self, path: str) -> str | None:
        """Load a new checkpoint between goals: refused while a goal runs (a chunk's id must be true)."""
        reason = check_checkpoint_dir(path)
        if reason is not None:
            return reason
        with self._server.goal_slot:  # goal admission checks _loading under the same lock
            if self._server.goal_running():
                return "a goal is running; set checkpoint between goals"
            if self._loading is not None:
                return f"still loading {self._loading}"
            self._loading = path

        def load() -> None:
            try:
                self._load_on_runner_thread(path)
            finally:
                self._loading = None

        self._server._runner_thread.submit(load)
        return None

    def describe(self) -> str:
        policy = self._policy
        return (
            f"learned {policy.checkpoint_id} on {policy.runtime_name}"
            if policy
            else "learned (no checkpoint)"
        )

    def admit(self, instruction: str) -> str | None:
        if self._loading is not None:
            return f"loading checkpoint {self._loading}"
        if self._policy is None:
            return "no checkpoint is loaded"
        return None

    def newest_stamp_ns(self) -> int | None:
        return self.store.newest_state_ns()

    # -- one goal ------------------------------------------------------------------------------------
    def start(self, ctx: GoalContext) -> None:
        server = self._server
        self.control_period_s = 1.0 / server._param("control_rate_hz")
        self._policy.reset_sampling()
        ctx.success_source = server._param("success_source")
        ctx.inference = server._param("inference")
        self._wait_for_executor(ctx)
        task = self._sim_task(ctx.instruction) if server._param("reset_sim") else None
        if task is not None:
            ctx.start_ns = self._reset_sim(ctx, task)
        else:
            if server._param("reset_sim"):
                self._log.info(
                    f"{clip_text(ctx.instruction)!r} is no sim task's instruction: running in the current scene"
                )
                if ctx.success_source == "sim":
                    # The sim's predicate judges the loaded task, not this free-text instruction: only the
                    # step/time budget can end the goal, and the result says success was not judged.
                    ctx.success_source = "none"
            obs = self.store.wait_for(
                self.store.newest_observation,
                server._param("observation_timeout_s"),
                ctx.stop_requested,
                ctx.poll_s,
            )
            ctx.check()
            if obs is None:
                raise self._missing(-1, "first observation")
            ctx.start_ns = obs.stamp_ns
            # No reset: the episode status at the start belongs to what ran before (a success stays latched
            # until the next reset). Only what happens after this goal starts may end it.
            ctx.judge_after_ns = ctx.start_ns
            status = self.store.newest_status()
            if ctx.success_source == "sim" and status is not None and status.done:
                self._log.info("the sim episode has already ended: success cannot be judged for this goal")
                ctx.success_source = "none"
        ctx.next_ns = ctx.start_ns

    def _wait_for_executor(self, ctx: GoalContext) -> None:
        """A chunk published before arm_controller's subscription is matched is lost (volatile QoS), and
        in lock-step the sim then waits for ever: make sure someone will execute the chunks first."""
        timeout = self._server._param("observation_timeout_s")
        deadline = time.monotonic() + timeout
        while self._server.chunk_subscribers() == 0:
            ctx.check()
            if time.monotonic() > deadline:
                raise GoalEnded(
                    Result.REASON_ERROR,
                    f"nobody executes chunks: no subscriber on {topics.ACTION_CHUNK} within {timeout:.1f} s "
                    "(is arm_controller running?)",
                )
            ctx.wake.wait(ctx.poll_s)

    def _sim_task(self, instruction: str) -> str | None:
        if self._sim_tasks is None:
            self._sim_tasks = tasks_by_instruction()
        return self._sim_tasks.get(instruction.strip().lower())

    def _reset_sim(self, ctx: GoalContext, task: str) -> int:
        """Reset the sim episode; returns the stamp of the reset state (the first status at step 0 after it)."""
        server = self._server
        timeout = server._param("observation_timeout_s")
        if (
            not self._reset_client.wait_for_service(timeout_sec=min(timeout, 2.0))
            and not self._reset_client.service_is_ready()
        ):
            raise GoalEnded(Result.REASON_ERROR, f"{topics.SIM_RESET} is not available: is sim_node running?")
        before = self.store.newest_state_ns()
        before = -1 if before is None else before
        request = ResetEpisode.Request(
            task=task,
            split=server._param("init_state_split"),
            init_state_index=server._param("init_state_index"),
        )
        future = self._reset_client.call_async(request)
        started = time.monotonic()
        while not future.done():
            ctx.wake.wait(ctx.poll_s)
            if ctx.stop_requested():
                ctx.check()
            if time.monotonic() - started > timeout:
                raise GoalEnded(
                    Result.REASON_ERROR, f"{topics.SIM_RESET} did not answer within {timeout:.1f} s"
                )
        response = future.result()
        if not response.success:
            raise GoalEnded(Result.REASON_ERROR, f"the sim refused the reset: {response.message}")
        self._log.info(
            f"sim reset to {task} ({request.split} #{request.init_state_index}) for {clip_text(ctx.instruction)!r}"
        )

        # The sim says which stamp the reset state will carry; an older sim (sim_time left at 0) is matched
        # by the first status at step 0 newer than the state before the reset.
        announced = stamp_to_nanoseconds(response.sim_time)
        after = announced - 1 if announced > 0 else before

        def reset_state() -> int | None:
            for status in self.store.statuses_after(after):
                if status.step == 0:
                    return status.stamp_ns
            return None

        stamp = self.store.wait_for(reset_state, timeout, ctx.stop_requested, ctx.poll_s)
        ctx.check()
        if stamp is None:
            raise GoalEnded(
                Result.REASON_ERROR, f"no {topics.SIM_STATUS} of the reset state within {timeout:.1f} s"
            )
        return stamp

    def _missing(self, stamp_ns: int, what: str) -> GoalEnded:
        missing = self.store.missing_at(stamp_ns) if stamp_ns >= 0 else ["any complete observation"]
        refused = dict(self.store.refused)
        extra = f"; refused so far: {refused}" if refused else ""
        timeout = self._server._param("observation_timeout_s")
        return GoalEnded(
            Result.REASON_ERROR,
            f"stale observation: no {what} within {timeout:.1f} s (missing: {', '.join(missing)}){extra}",
        )

    def _check_success(self, ctx: GoalContext, after_ns: int) -> None:
        source = ctx.success_source
        if source == "operator" and ctx.confirmed.is_set():
            raise GoalEnded(Result.REASON_SUCCESS, "the operator confirmed success", success=True)
        statuses = self.store.statuses_after(max(after_ns - 1, ctx.judge_after_ns))
        if source == "sim":
            if any(s.success for s in statuses):
                raise GoalEnded(Result.REASON_SUCCESS, "the sim reports the task's success", success=True)
            if any(s.done for s in statuses):
                raise GoalEnded(Result.REASON_MAX_STEPS, "the episode ended without success")

    def _budget_end(self, ctx: GoalContext) -> None:
        if ctx.steps >= ctx.max_steps and ctx.success_source == "none":
            raise GoalEnded(
                Result.REASON_MAX_STEPS,
                f"step budget of {ctx.max_steps} used; success was not judged (success_source none)",
            )

    def run_chunk(self, ctx: GoalContext) -> None:
        server, store, policy = self._server, self.store, self._policy
        period_ns = round(self.control_period_s * 1e9)
        timeout = server._param("observation_timeout_s")
        target = ctx.next_ns
        self._check_success(ctx, ctx.start_ns)
        # The observation the chunk starts from: exactly `target` in lock-step; the newest one from half
        # a period before it on when the sim (or the robot) runs on in real time.
        obs = store.wait_for(
            lambda: store.newest_observation(target - period_ns // 2), timeout, ctx.stop_requested, ctx.poll_s
        )
        ctx.check()
        if obs is None:
            raise self._missing(target, f"observation at stamp {target / 1e9:.3f} s")
        if ctx.inference == INFERENCE_ASYNC and ctx.chunk_index > 0:
            ctx.steps += steps_run_on(ctx.chunk_end_ns, ctx.next_ns, obs.stamp_ns, period_ns)
            ctx.check()  # the running chunk may have used the budget meanwhile
        completed_ns = store.completed_ns(obs.stamp_ns)
        latency = server._param("simulated_latency_s")
        actions, runner_ns = server.call_runner(ctx, self._timed_infer, policy, obs, ctx.instruction, latency)
        actions = np.asarray(actions, dtype=np.float32)[: ctx.remaining]
        published_s = time.monotonic()
        server.publish_chunk(
            ctx,
            actions,
            stamp_ns=obs.stamp_ns,
            action_space=policy.action_space,
            dim_names=DIM_NAMES.get(policy.action_space, []),
            control_period_s=self.control_period_s,
            checkpoint_id=policy.checkpoint_id,
        )
        published_ns = time.monotonic_ns()
        self.latencies.add((published_ns - (completed_ns or runner_ns[0])) / 1e9)
        if completed_ns is not None:
            self.chunk_timings.append(
                ChunkTiming(obs.stamp_ns, ctx.chunk_index, completed_ns, *runner_ns, published_ns)
            )
        server.feedback(ctx, Feedback.PHASE_EXECUTING)
        length = len(actions)
        ctx.chunk_end_ns = obs.stamp_ns + length * period_ns
        until = length
        if ctx.inference == INFERENCE_ASYNC and ctx.steps + length < ctx.max_steps:
            # More chunks follow: take the next observation while `lead` steps of this one are left.
            lead = lead_steps(
                self.latencies.values(), self.control_period_s, length, server._param("async_lead_steps")
            )
            until = trigger_step(length, lead)
        executed = self._wait_executed(ctx, obs.stamp_ns, length, period_ns, timeout, published_s, until)
        ctx.steps += executed
        ctx.next_ns = obs.stamp_ns + executed * period_ns
        server.feedback(ctx, Feedback.PHASE_EXECUTING)
        self._check_success(ctx, ctx.start_ns)
        self._budget_end(ctx)

    @staticmethod
    def _timed_infer(
        policy: LearnedPolicy, obs: Any, instruction: str, simulated_latency_s: float = 0.0
    ) -> tuple[np.ndarray, tuple[int, int, int]]:
        """`policy.infer(policy.observation(...))`, with the three times ChunkTiming records.

        `simulated_latency_s` (benches, tests) makes the call that much slower, on the runner thread, like a
        bigger model: the server's waits, deadlines and latency measurement all see it.
        """
        started = time.monotonic_ns()
        observation = policy.observation(obs.images, obs.joints, instruction)
        inference_started = time.monotonic_ns()
        actions = policy.infer(observation)
        if simulated_latency_s > 0:
            time.sleep(simulated_latency_s)
        return actions, (started, inference_started, time.monotonic_ns())

    def _wait_executed(
        self,
        ctx: GoalContext,
        stamp_ns: int,
        length: int,
        period_ns: int,
        timeout: float,
        published_s: float,
        until: int | None = None,
    ) -> int:
        """Steps of the chunk executed, read from the stamps of the states that follow it.

        Returns when the state after its `until`-th action (default: its last) arrives, or the episode ends
        / success is confirmed. Aborts when no new state arrives for observation_timeout_s (the arm is not
        executing).
        """
        store = self.store
        until = length if until is None else until
        end_ns = stamp_ns + until * period_ns
        last_seen = store.newest_state_ns()

        def executed_so_far() -> int:
            newest = store.newest_state_ns() or stamp_ns
            return int(min(length, max(0, round((newest - stamp_ns) / period_ns))))

        def progress() -> tuple[str, int] | None:
            newest = store.newest_state_ns()
            if newest is not None and newest >= end_ns - period_ns // 2:
                return ("done", until)
            # The sim's episode end matters only when the sim judges this goal; otherwise (free text, an
            # episode that ended before the goal) its latched done/success says nothing about this goal.
            judged = ctx.success_source == "sim"
            ended = (
                [s.stamp_ns for s in store.statuses_after(stamp_ns) if s.done or s.success] if judged else []
            )
            if ended:
                return ("done", steps_to_episode_end(stamp_ns, ended, period_ns, length))
            if ctx.confirmed.is_set():
                return ("done", executed_so_far())
            if self.arm_refusals.since(published_s) is not None:
                return ("refused", executed_so_far())
            if newest != last_seen:
                return ("moved", executed_so_far())
            return None

        idle_since = time.monotonic()
        while True:
            outcome = store.wait_for(progress, min(timeout, CHUNK_RESEND_S), ctx.stop_requested, ctx.poll_s)
            if ctx.stop_requested():
                ctx.steps += executed_so_far()
                ctx.check()
            if outcome is None and time.monotonic() - idle_since < timeout:
                # Nothing moved for a while: the chunk may never have reached arm_controller (published
                # before its subscription matched, or dropped). The same message again is harmless: each
                # action runs at most once per measured state.
                self._server.republish_chunk()
                continue
            if outcome is None:
                raise GoalEnded(
                    Result.REASON_ERROR,
                    f"stale observation: no new state for {timeout:.1f} s after chunk {ctx.chunk_index} "
                    f"(executed {executed_so_far()} of {length}); is the arm executing (arm_controller "
                    "mode, e-stop) and is the sim running?",
                )
            kind, executed = outcome
            if kind == "done":
                return executed
            if kind == "refused":
                ctx.steps += executed
                raise GoalEnded(
                    Result.REASON_ERROR,
                    f"arm_controller stopped executing the chunk: {self.arm_refusals.since(published_s)}",
                )
            last_seen = store.newest_state_ns()
            idle_since = time.monotonic()
