"""The policy server's goal limits and failure handling, with a scripted runner in the same process.

The runner below is a test double of the EpisodeRunner protocol (like LeRobot's mock robot): it
lets each limit be hit on purpose. Goals still travel over real FastDDS.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from svrl_interfaces.action import ExecuteInstruction
from svrl_interfaces.msg import ActionChunk
from svrl_ros.conversions import seconds_to_duration
from svrl_ros.policy_server import EXECUTOR_THREADS, PolicyServer
from svrl_ros.runners import ChunkResult

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]
Result = ExecuteInstruction.Result


class ScriptedRunner:
    """Succeeds after `succeed_after` steps (never if None); raises on the instruction 'explode'."""

    name = "scripted"

    def __init__(self, succeed_after: int | None = None, chunk_length: int = 4, sleep_s: float = 0.0) -> None:
        self.succeed_after = succeed_after
        self.chunk_length = chunk_length
        self.sleep_s = sleep_s
        self.steps = 0
        self.stopped = 0
        self.instruction = ""

    def check_instruction(self, instruction: str) -> str | None:
        return None if instruction != "unknown" else "unknown instruction"

    def start(self, instruction: str) -> None:
        self.steps = 0
        self.instruction = instruction

    def run_chunk(self, max_steps: int) -> ChunkResult:
        if self.instruction == "explode":
            raise RuntimeError("camera frame had NaNs")
        time.sleep(self.sleep_s)
        n = min(self.chunk_length, max_steps)
        self.steps += n
        success = self.succeed_after is not None and self.steps >= self.succeed_after
        return ChunkResult(np.zeros((n, 7), np.float32), n, success, success, "ee_delta")

    def stop(self) -> None:
        self.stopped += 1


class Graph:
    """Server and client nodes in one context, spun by a background executor."""

    def __init__(self, runner, **parameters) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.runner = runner
        overrides = [Parameter(name, value=value) for name, value in parameters.items()]
        self.server = PolicyServer(runner=runner, context=self.context, parameter_overrides=overrides)
        self.chunks: list[ActionChunk] = []
        self.client_node = rclpy.create_node("limits_client", context=self.context)
        self.client = ActionClient(self.client_node, ExecuteInstruction, "svrl/execute_instruction")
        self.client_node.create_subscription(ActionChunk, "svrl/action_chunk", self.chunks.append, 100)
        self.executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS, context=self.context)
        self.executor.add_node(self.server)
        self.executor.add_node(self.client_node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        assert self.client.wait_for_server(timeout_sec=30)

    def wait(self, future, limit_s: float = 30.0):
        deadline = time.monotonic() + limit_s
        while not future.done():
            assert time.monotonic() < deadline, "no answer from the policy server"
            time.sleep(0.005)
        return future.result()

    def run(self, **goal_fields):
        handle = self.wait(self.client.send_goal_async(ExecuteInstruction.Goal(**goal_fields)))
        if not handle.accepted:
            return None
        return self.wait(handle.get_result_async())

    def close(self) -> None:
        self.executor.shutdown()
        self.server.destroy_node()
        self.client_node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=5)


@pytest.fixture
def make_graph(ros_env):
    graphs: list[Graph] = []

    def factory(runner, **parameters) -> Graph:
        graphs.append(Graph(runner, **parameters))
        return graphs[-1]

    yield factory
    for graph in graphs:
        graph.close()


def test_success_counts_steps(make_graph) -> None:
    graph = make_graph(ScriptedRunner(succeed_after=10, chunk_length=4))
    response = graph.run(instruction="do it")
    assert response.status == GoalStatus.STATUS_SUCCEEDED
    assert (response.result.success, response.result.reason, response.result.steps) == (
        True,
        Result.REASON_SUCCESS,
        12,
    )
    assert graph.runner.stopped == 1


def test_max_steps_is_exact_and_aborts(make_graph) -> None:
    graph = make_graph(ScriptedRunner(succeed_after=None, chunk_length=4))
    response = graph.run(instruction="never succeeds", max_steps=10)
    assert response.status == GoalStatus.STATUS_ABORTED
    assert (response.result.success, response.result.reason, response.result.steps) == (
        False,
        Result.REASON_MAX_STEPS,
        10,
    )


def test_timeout_aborts(make_graph) -> None:
    graph = make_graph(ScriptedRunner(succeed_after=None, chunk_length=1, sleep_s=0.02))
    response = graph.run(instruction="slow", timeout=seconds_to_duration(0.2))
    assert response.status == GoalStatus.STATUS_ABORTED
    assert response.result.reason == Result.REASON_TIMEOUT
    # How many steps fit in 0.2 s depends on the machine's load (CI once saw the goal's start delayed past
    # the limit: 0 steps); what must hold is that the limit was honoured and the count is the steps the server
    # sent. The timeout can land while the runner computes one more chunk, never sent (session 12 saw 6 sent,
    # 7 computed), so the runner's own count may be one chunk ahead.
    result = response.result
    assert result.elapsed.sec + result.elapsed.nanosec * 1e-9 >= 0.2
    assert result.steps <= graph.runner.steps <= result.steps + 1


def test_runner_error_aborts_the_goal_not_the_node(make_graph) -> None:
    graph = make_graph(ScriptedRunner(succeed_after=2))
    response = graph.run(instruction="explode")
    assert response.status == GoalStatus.STATUS_ABORTED
    assert response.result.reason == Result.REASON_ERROR
    assert "NaNs" in response.result.message
    assert graph.runner.stopped == 1
    # the node still serves the next goal
    assert graph.run(instruction="fine").result.success


def test_rejections(make_graph) -> None:
    graph = make_graph(ScriptedRunner(succeed_after=2))
    assert graph.run(instruction="") is None
    assert graph.run(instruction="unknown") is None


def test_second_goal_rejected_while_busy(make_graph) -> None:
    graph = make_graph(ScriptedRunner(succeed_after=None, chunk_length=1, sleep_s=0.05))
    first = graph.wait(
        graph.client.send_goal_async(ExecuteInstruction.Goal(instruction="long", max_steps=40))
    )
    assert first.accepted
    time.sleep(0.2)
    second = graph.wait(graph.client.send_goal_async(ExecuteInstruction.Goal(instruction="other")))
    assert not second.accepted
    assert graph.wait(first.get_result_async()).result.reason == Result.REASON_MAX_STEPS
