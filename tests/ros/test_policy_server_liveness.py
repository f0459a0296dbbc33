"""The action server stays live whatever the runner does: hung calls, cancels mid-chunk, preemption.

Runners here block on events the test controls, so each case proves the server did *not* wait on the
runner (the runner is still blocked when the result arrives). Time limits are hang guards only.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from action_msgs.msg import GoalStatus
from svrl_interfaces.action import ExecuteInstruction
from svrl_ros.runners import ChunkResult

from tests.ros.test_policy_server_limits import make_graph  # noqa: F401 - fixture

pytestmark = [pytest.mark.ros, pytest.mark.timeout(90)]
Result = ExecuteInstruction.Result
GUARD_S = 20.0  # hang guard for one answer; never a speed requirement


class BlockingRunner:
    """run_chunk blocks until `release` is set when the instruction contains 'hang'; else one quick step."""

    name = "blocking"

    def __init__(self, succeed_after: int | None = 3, step_sleep_s: float = 0.0) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.succeed_after = succeed_after
        self.step_sleep_s = step_sleep_s
        self.steps = 0
        self.instruction = ""

    def check_instruction(self, instruction: str) -> str | None:
        return None

    def start(self, instruction: str) -> None:
        self.instruction, self.steps = instruction, 0

    def run_chunk(self, max_steps: int) -> ChunkResult:
        if "hang" in self.instruction:
            self.entered.set()
            self.release.wait(60)
        time.sleep(self.step_sleep_s)
        self.steps += 1
        success = self.succeed_after is not None and self.steps >= self.succeed_after
        return ChunkResult(np.zeros((1, 7), np.float32), 1, success, success, "ee_delta")

    def stop(self) -> None:
        pass


def test_hung_runner_aborts_the_goal_and_the_node_recovers(make_graph) -> None:  # noqa: F811
    runner = BlockingRunner()
    graph = make_graph(runner, runner_deadline_s=0.5)
    try:
        response = graph.run(instruction="hang here")
        assert response.status == GoalStatus.STATUS_ABORTED
        assert response.result.reason == Result.REASON_ERROR
        assert "did not answer within" in response.result.message
        assert not runner.release.is_set()  # the result came while the runner was still blocked
        # still stuck past its deadline: a new goal is refused with a reason (logged), not queued forever
        assert graph.run(instruction="fine") is None
    finally:
        runner.release.set()
    deadline = time.monotonic() + GUARD_S
    while graph.server._runner_thread.busy_for() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    response = graph.run(instruction="fine")
    assert response is not None and response.result.success


def test_cancel_during_a_long_chunk_returns_and_sends_stop(make_graph) -> None:  # noqa: F811
    runner = BlockingRunner()
    graph = make_graph(runner, runner_deadline_s=60.0)
    try:
        handle = graph.wait(graph.client.send_goal_async(ExecuteInstruction.Goal(instruction="hang long")))
        assert handle.accepted
        assert runner.entered.wait(GUARD_S)
        graph.wait(handle.cancel_goal_async())
        response = graph.wait(handle.get_result_async(), GUARD_S)
        assert response.status == GoalStatus.STATUS_CANCELED
        assert response.result.reason == Result.REASON_CANCELED
        assert not runner.release.is_set()
        deadline = time.monotonic() + GUARD_S
        while not any(c.chunk_length == 0 for c in graph.chunks):
            assert time.monotonic() < deadline, "no stop chunk after cancel"
            time.sleep(0.02)
    finally:
        runner.release.set()


def test_instruction_length_cap(make_graph) -> None:  # noqa: F811
    graph = make_graph(BlockingRunner(succeed_after=1), max_instruction_chars=40)
    assert graph.run(instruction="x" * 41) is None
    assert graph.run(instruction="y" * 40).result.success


def test_preempt_aborts_the_running_goal_and_starts_the_new_one(make_graph) -> None:  # noqa: F811
    runner = BlockingRunner(succeed_after=None, step_sleep_s=0.02)
    graph = make_graph(runner, on_new_goal="preempt", default_max_steps=100_000)
    first = graph.wait(graph.client.send_goal_async(ExecuteInstruction.Goal(instruction="first")))
    assert first.accepted
    deadline = time.monotonic() + GUARD_S
    while runner.steps < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    second = graph.wait(
        graph.client.send_goal_async(ExecuteInstruction.Goal(instruction="second", max_steps=3))
    )
    assert second.accepted
    first_result = graph.wait(first.get_result_async(), GUARD_S)
    assert first_result.status == GoalStatus.STATUS_ABORTED
    assert first_result.result.reason == Result.REASON_PREEMPTED
    assert "newer goal" in first_result.result.message
    second_result = graph.wait(second.get_result_async(), GUARD_S)
    assert (second_result.result.reason, second_result.result.steps) == (Result.REASON_MAX_STEPS, 3)


def test_reject_mode_is_the_default(make_graph) -> None:  # noqa: F811
    runner = BlockingRunner(succeed_after=None, step_sleep_s=0.02)
    graph = make_graph(runner)
    first = graph.wait(
        graph.client.send_goal_async(ExecuteInstruction.Goal(instruction="first", max_steps=30))
    )
    assert first.accepted
    second = graph.wait(graph.client.send_goal_async(ExecuteInstruction.Goal(instruction="second")))
    assert not second.accepted
    assert graph.wait(first.get_result_async(), GUARD_S).result.reason == Result.REASON_MAX_STEPS
