"""ExecuteInstruction over real FastDDS between two processes: the policy server in a child process
(scripted-expert runner in the embedded simulator), this test as the client."""

from __future__ import annotations

import threading
import time

import pytest
import rclpy
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from svrl_interfaces.action import ExecuteInstruction
from svrl_interfaces.msg import ActionChunk

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

# Upper bounds against hangs only (the server loads MuJoCo first); nothing asserts on speed.
SERVER_START_LIMIT_S = 90.0
EPISODE_LIMIT_S = 120.0


def _first_task_instruction() -> str:
    from svrl_sim.tasks import tasks_in_suite

    return tasks_in_suite("spatial")[0].instruction


class Client:
    """An rclpy client node with its own context and executor thread."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("test_client", context=self.context)
        self.action = ActionClient(self.node, ExecuteInstruction, "svrl/execute_instruction")
        self.chunks: list[ActionChunk] = []
        self.node.create_subscription(ActionChunk, "svrl/action_chunk", self.chunks.append, 50)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def wait(self, future, limit_s: float):
        deadline = time.monotonic() + limit_s
        while not future.done():
            assert time.monotonic() < deadline, "no answer from the policy server"
            time.sleep(0.01)
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)


@pytest.fixture
def server_and_client(processes, tmp_path):
    server = processes.start_python(
        "-m",
        "svrl_ros.policy_server",
        "--ros-args",
        "-p",
        "runner:=sim_expert",
        "-p",
        "pace_realtime:=true",
        log=tmp_path / "policy_server.log",
    )
    client = Client()
    try:
        if not client.action.wait_for_server(timeout_sec=SERVER_START_LIMIT_S):
            pytest.fail(
                f"server never came up; exit code {server.poll()}; log:\n{server.log_path.read_text()}"
            )
        yield client
    finally:
        client.close()


def test_goal_feedback_result_then_cancel_and_rejections(server_and_client) -> None:
    client = server_and_client
    instruction = _first_task_instruction()

    # goal -> feedback -> result
    feedback: list[ExecuteInstruction.Feedback] = []
    goal_handle = client.wait(
        client.action.send_goal_async(
            ExecuteInstruction.Goal(instruction=instruction),
            feedback_callback=lambda f: feedback.append(f.feedback),
        ),
        EPISODE_LIMIT_S,
    )
    assert goal_handle.accepted
    response = client.wait(goal_handle.get_result_async(), EPISODE_LIMIT_S)
    assert response.status == GoalStatus.STATUS_SUCCEEDED
    assert response.result.success
    assert response.result.reason == ExecuteInstruction.Result.REASON_SUCCESS
    assert response.result.steps > 0
    phases = [f.phase for f in feedback]
    assert phases[0] == ExecuteInstruction.Feedback.PHASE_STARTING
    assert ExecuteInstruction.Feedback.PHASE_EXECUTING in phases
    assert feedback[-1].step == response.result.steps
    deadline = time.monotonic() + 5
    while not client.chunks and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.chunks, "no ActionChunk was published"
    chunk = client.chunks[0]
    assert chunk.action_space == "ee_delta" and chunk.dims == 7
    assert len(chunk.actions) == chunk.dims * chunk.chunk_length

    # cancel: paced in real time, the episode is still running after its first chunk
    executing = threading.Event()

    def on_feedback(message) -> None:
        if message.feedback.phase == ExecuteInstruction.Feedback.PHASE_EXECUTING:
            executing.set()

    goal_handle = client.wait(
        client.action.send_goal_async(
            ExecuteInstruction.Goal(instruction=instruction), feedback_callback=on_feedback
        ),
        EPISODE_LIMIT_S,
    )
    assert goal_handle.accepted
    assert executing.wait(EPISODE_LIMIT_S)
    cancel = client.wait(goal_handle.cancel_goal_async(), EPISODE_LIMIT_S)
    assert len(cancel.goals_canceling) == 1
    response = client.wait(goal_handle.get_result_async(), EPISODE_LIMIT_S)
    assert response.status == GoalStatus.STATUS_CANCELED
    assert response.result.reason == ExecuteInstruction.Result.REASON_CANCELED
    assert not response.result.success

    # goals the server must refuse before doing any work
    for bad in ("", "   ", "recite a poem"):
        goal_handle = client.wait(client.action.send_goal_async(ExecuteInstruction.Goal(instruction=bad)), 30)
        assert not goal_handle.accepted, f"accepted {bad!r}"
