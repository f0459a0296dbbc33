"""`svrl up` starts a profile's node graph from a pip install and stops it cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from svrl_interfaces.action import ExecuteInstruction

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]


def test_svrl_up_serves_the_profile_and_stops_on_sigint(processes, tmp_path) -> None:
    from svrl_sim.tasks import tasks_in_suite

    stack = processes.start_python("-m", "svrl.cli", "up", "--profile", "sim_expert", log=tmp_path / "up.log")
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("up_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        client = ActionClient(node, ExecuteInstruction, "svrl/execute_instruction")
        assert client.wait_for_server(timeout_sec=90), (tmp_path / "up.log").read_text()
        goal = ExecuteInstruction.Goal(instruction=tasks_in_suite("object")[0].instruction, max_steps=20)
        future = client.send_goal_async(goal)
        rclpy.spin_until_future_complete(node, future, executor=executor, timeout_sec=60)
        handle = future.result()
        assert handle.accepted
        result_future = handle.get_result_async()
        rclpy.spin_until_future_complete(node, result_future, executor=executor, timeout_sec=60)
        result = result_future.result().result
        # 20 paced steps are not enough for the expert to finish: the step limit must end the goal
        assert (result.success, result.reason, result.steps) == (False, "max_steps", 20)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)

    stack.send_signal(signal.SIGINT)
    assert stack.wait(timeout=30) == 0
    log = (tmp_path / "up.log").read_text()
    assert "[policy_server]" in log and "policy_server ready" in log
    # the node process is gone too, not just the supervisor
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", "svrl_ros.policy_server --ros-args -r __node:=policy_server"],
                              capture_output=True, text=True)  # fmt: skip
    assert leftover.stdout.strip() == "", f"policy_server still running: {leftover.stdout}"


def test_svrl_up_fails_when_a_node_dies(processes, tmp_path) -> None:
    bad_profile = tmp_path / "bad.yaml"
    bad_profile.write_text(
        "nodes:\n  policy_server:\n    package: svrl_ros\n    executable: policy_server\n"
        "    parameters: {runner: no_such_runner}\n"
    )
    stack = processes.start_python(
        "-m", "svrl.cli", "up", "--profile", str(bad_profile), log=tmp_path / "up.log"
    )
    assert stack.wait(timeout=90) == 1
    assert "exited on their own" in (tmp_path / "up.log").read_text()
