"""Policy server node: serves /svrl/execute_instruction and publishes /svrl/action_chunk.

ROS plumbing only. What produces the chunks is an `EpisodeRunner` (see runners.py), chosen by the
`runner` parameter, so the goal checks, limits, feedback and cancel handling here are shared by every
way of running a task.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import rclpy
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from svrl_interfaces.action import ExecuteInstruction
from svrl_interfaces.msg import ActionChunk

from svrl_ros.conversions import duration_to_seconds, float32_sequence, seconds_to_duration
from svrl_ros.runners import RUNNERS, ChunkResult, EpisodeRunner, make_runner

Result = ExecuteInstruction.Result
Feedback = ExecuteInstruction.Feedback


class PolicyServer(Node):
    def __init__(self, runner: EpisodeRunner | None = None, **node_kwargs) -> None:
        super().__init__("policy_server", **node_kwargs)
        self.declare_parameter(
            "runner",
            "sim_expert",
            ParameterDescriptor(
                description=f"what produces the action chunks: one of {sorted(RUNNERS)}", read_only=True
            ),
        )
        self.declare_parameter(
            "default_max_steps",
            400,
            ParameterDescriptor(
                description="control steps allowed when a goal leaves max_steps at 0",
                integer_range=[IntegerRange(from_value=1, to_value=100_000, step=1)],
            ),
        )
        self.declare_parameter(
            "init_state_index",
            0,
            ParameterDescriptor(
                description="sim runners: which evaluation initial state to reset to", read_only=True
            ),
        )
        self.declare_parameter(
            "pace_realtime",
            False,
            ParameterDescriptor(
                description="sim runners: take a control period of wall time per step, as a real arm would"
            ),
        )
        # Every runner call happens on this one thread: simulators and inference runtimes keep
        # thread-bound state (an EGL context can be current in one thread only).
        self._runner_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runner")
        self._runner = runner or self._on_runner_thread(
            make_runner,
            self.get_parameter("runner").value,
            init_state_index=self.get_parameter("init_state_index").value,
        )
        self._busy = threading.Lock()
        self._chunk_pub = self.create_publisher(ActionChunk, "svrl/action_chunk", 10)
        self._action_server = ActionServer(
            self,
            ExecuteInstruction,
            "svrl/execute_instruction",
            execute_callback=self._execute,
            goal_callback=self._on_goal,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            callback_group=ReentrantCallbackGroup(),
        )
        self.get_logger().info(f"policy_server ready (runner: {self._runner.name})")

    # -- goal admission: decide before any work starts -------------------------------------------
    def _on_goal(self, goal: ExecuteInstruction.Goal) -> GoalResponse:
        instruction = goal.instruction.strip()
        if not instruction:
            self.get_logger().warning("rejected goal: the instruction is empty")
            return GoalResponse.REJECT
        reason = self._on_runner_thread(self._runner.check_instruction, instruction)
        if reason is not None:
            self.get_logger().warning(f"rejected goal: {reason}")
            return GoalResponse.REJECT
        # Taken here, released when the goal's execution ends: one goal at a time, with no window
        # between acceptance and execution in which a second goal could slip in.
        if not self._busy.acquire(blocking=False):
            self.get_logger().warning(f"rejected goal {instruction!r}: another instruction is running")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    # -- execution -------------------------------------------------------------------------------
    def _execute(self, goal_handle: ServerGoalHandle) -> Result:
        try:
            return self._run_episode(goal_handle)
        finally:
            self._busy.release()

    def _run_episode(self, goal_handle: ServerGoalHandle) -> Result:
        goal = goal_handle.request
        max_steps = goal.max_steps or self.get_parameter("default_max_steps").value
        timeout_s = duration_to_seconds(goal.timeout)
        started = time.monotonic()
        steps = 0
        chunk_index = 0

        def finish(success: bool, reason: str, message: str) -> Result:
            elapsed = time.monotonic() - started
            if reason == Result.REASON_CANCELED:
                goal_handle.canceled()
            elif success:
                goal_handle.succeed()
            else:
                goal_handle.abort()
            self.get_logger().info(f"{goal.instruction!r}: {reason} after {steps} steps ({elapsed:.2f} s)")
            return _result(success, steps, reason, message, elapsed)

        self._publish_feedback(goal_handle, steps, Feedback.PHASE_STARTING, chunk_index)
        try:
            self._on_runner_thread(self._runner.start, goal.instruction.strip())
            while True:
                if goal_handle.is_cancel_requested:
                    return finish(False, Result.REASON_CANCELED, "canceled by the client")
                if timeout_s > 0 and time.monotonic() - started > timeout_s:
                    return finish(False, Result.REASON_TIMEOUT, f"no success within {timeout_s:.1f} s")
                if steps >= max_steps:
                    return finish(False, Result.REASON_MAX_STEPS, f"no success within {max_steps} steps")
                self._publish_feedback(goal_handle, steps, Feedback.PHASE_INFERRING, chunk_index)
                chunk_started = time.monotonic()
                chunk = self._on_runner_thread(self._runner.run_chunk, max_steps - steps)
                if self.get_parameter("pace_realtime").value:
                    budget = chunk.executed_steps * chunk.control_period_s
                    time.sleep(max(0.0, budget - (time.monotonic() - chunk_started)))
                steps += chunk.executed_steps
                self._publish_chunk(chunk, chunk_index)
                self._publish_feedback(goal_handle, steps, Feedback.PHASE_EXECUTING, chunk_index)
                chunk_index += 1
                if chunk.success:
                    return finish(True, Result.REASON_SUCCESS, "the task's success condition holds")
                if chunk.done:
                    return finish(False, Result.REASON_MAX_STEPS, "the episode ended without success")
        except Exception as error:  # a runner failure ends this goal, never the node
            self.get_logger().error(f"runner failed: {error!r}")
            return finish(False, Result.REASON_ERROR, str(error))
        finally:
            self._on_runner_thread(self._runner.stop)

    def _on_runner_thread(self, function, *args, **kwargs):
        return self._runner_thread.submit(function, *args, **kwargs).result()

    def destroy_node(self) -> None:
        self._runner_thread.shutdown(wait=True, cancel_futures=True)
        super().destroy_node()

    def _publish_feedback(
        self, goal_handle: ServerGoalHandle, step: int, phase: str, chunk_index: int
    ) -> None:
        goal_handle.publish_feedback(Feedback(step=step, phase=phase, chunk_index=chunk_index))

    def _publish_chunk(self, chunk: ChunkResult, chunk_index: int) -> None:
        msg = ActionChunk()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = "base_link"
        msg.action_space = chunk.action_space
        msg.dim_names = list(chunk.dim_names)
        msg.chunk_length, msg.dims = (int(n) for n in chunk.actions.shape)
        msg.control_period = seconds_to_duration(chunk.control_period_s)
        msg.actions = float32_sequence(chunk.actions)
        msg.chunk_index = chunk_index
        msg.checkpoint_id = self._runner.name
        self._chunk_pub.publish(msg)


def _result(success: bool, steps: int, reason: str, message: str, elapsed_s: float) -> Result:
    return Result(
        success=success, steps=steps, reason=reason, message=message, elapsed=seconds_to_duration(elapsed_s)
    )


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = None
    try:
        node = PolicyServer()
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
