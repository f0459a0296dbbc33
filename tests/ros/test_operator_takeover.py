"""An operator takes the arm: policy_server follows svrl/arm_mode (latched) and ends goals with REASON_TAKEOVER.

A fake mode publisher stands for arm_controller (transient-local, depth 1, like the real one); goals travel
over real FastDDS. Time limits are hang guards only.
"""

from __future__ import annotations

import time

import pytest
from action_msgs.msg import GoalStatus
from svrl_interfaces.action import ExecuteInstruction

from tests.ros.test_policy_server_limits import ScriptedRunner, make_graph  # noqa: F401 - fixture

pytestmark = [pytest.mark.ros, pytest.mark.timeout(90)]
Result = ExecuteInstruction.Result
GUARD_S = 20.0


def mode_publisher(graph):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
    from svrl_ros import topics

    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    publisher = graph.client_node.create_publisher(String, topics.ARM_MODE, latched)

    def publish(mode: str) -> None:
        publisher.publish(String(data=mode))
        deadline = time.monotonic() + GUARD_S
        while graph.server.arm_mode() != mode:
            assert time.monotonic() < deadline, f"policy_server never heard the mode {mode!r}"
            time.sleep(0.01)

    return publish


def test_takeover_ends_the_goal_sends_stop_and_blocks_goals_until_handed_back(make_graph) -> None:  # noqa: F811
    runner = ScriptedRunner(succeed_after=None, chunk_length=1, sleep_s=0.02)
    graph = make_graph(runner)
    assert graph.server.arm_mode() is None  # nothing heard yet: goals run as before
    publish_mode = mode_publisher(graph)
    publish_mode("policy")

    handle = graph.wait(
        graph.client.send_goal_async(ExecuteInstruction.Goal(instruction="reach", max_steps=100_000))
    )
    assert handle.accepted
    deadline = time.monotonic() + GUARD_S
    while sum(c.chunk_length > 0 for c in graph.chunks) < 3:
        assert time.monotonic() < deadline, "the goal never started"
        time.sleep(0.01)
    publish_mode("teleop")
    response = graph.wait(handle.get_result_async())
    assert response.status == GoalStatus.STATUS_ABORTED
    assert response.result.reason == Result.REASON_TAKEOVER
    assert "'teleop' mode" in response.result.message and response.result.steps >= 3
    deadline = time.monotonic() + GUARD_S
    while graph.chunks[-1].chunk_length != 0:  # the stop chunk follows the goal's last chunk
        assert time.monotonic() < deadline, "no stop chunk after the takeover"
        time.sleep(0.01)

    # while the operator holds the arm, a goal ends at once with the same reason and commands nothing
    moving_before = sum(c.chunk_length > 0 for c in graph.chunks)
    response = graph.run(instruction="reach again")
    assert response.status == GoalStatus.STATUS_ABORTED
    assert (response.result.reason, response.result.steps) == (Result.REASON_TAKEOVER, 0)
    publish_mode("hold")
    assert graph.run(instruction="reach again").result.reason == Result.REASON_TAKEOVER
    assert sum(c.chunk_length > 0 for c in graph.chunks) == moving_before

    # handed back: goals run again
    publish_mode("policy")
    runner.succeed_after = 3
    response = graph.run(instruction="reach")
    assert response.status == GoalStatus.STATUS_SUCCEEDED and response.result.reason == Result.REASON_SUCCESS
