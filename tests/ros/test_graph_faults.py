"""Faults in the robot graph over real DDS (issue #9, "Reliability"): cancel, e-stop, a dead camera, a
dead policy server.

The graph runs the way a robot does: `sim_node` in real time (a wall-clock timer steps the physics and
publishes a state every control period whether or not anyone commands) and `arm_controller` on its
own timer, with its watchdogs. The sim profile's nodes are started one by one, each its own process with
exactly the parameters file and command line `svrl up` would use, so one node can be killed without
`svrl up` taking the rest down with it.

The cameras: sim_node's camera topics are remapped under `sim_cameras/`, and a relay process (the
stand-in for a camera driver, tests/ros/graph_harness.py) republishes them on the real topics. Killing
the relay with SIGKILL kills only the cameras while the arm, its joint states and the sim keep going,
which is what a camera driver crashing on a robot looks like. (Stopping sim_node's image publishing by
parameter would not be a crash, and killing sim_node would also stop the joint states.)

"The arm holds" is read from what arm_controller commands: every trajectory it publishes once the
hold began is the same target, and that target is a joint position the sim measured (the latched
hold of ros2_control), re-commanded every control period. Counts of commands are used instead of
wall-clock deadlines; the only time limits are hang guards.

The four tests share one graph (starting it takes most of the time on a loaded machine); each first
puts the arm back in policy mode with the e-stop released. The policy-server kill runs last.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from action_msgs.msg import GoalStatus

from tests.conftest import ProcessGroup
from tests.ros.graph_harness import (
    HANG_GUARD_S,
    GraphProbe,
    Stamped,
    camera_remappings,
    ros_domain,
    sim_instruction,
    start_nodes,
    start_relay,
    trajectory_violations,
    wait_future,
    wait_until,
)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]

OBSERVATION_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 0.5
PERIOD_S = 0.1
GOAL_STEPS = 300  # never reached: every goal here is ended by the fault under test
IN_FLIGHT = 2  # commands a hold may trail by: published before the stop reached arm_controller


@dataclass
class Graph:
    group: ProcessGroup
    nodes: dict[str, Any]
    probe: GraphProbe
    folder: Path
    relay: Any

    def log(self) -> Path:
        """The policy server's log (goal outcomes), for failure messages."""
        return self.folder / "policy_server.log"

    def restart_relay(self) -> None:
        """A dead relay is started again; returns once camera frames flow (hang guard only)."""
        if self.relay.poll() is not None:
            self.relay = start_relay(self.group, self.folder / f"relay_{time.monotonic_ns()}.log")
        asked = time.monotonic()
        wait_until(lambda: self.probe.last_image_s > asked + 1.0, 60, "camera frames through the relay")


@pytest.fixture(scope="module")
def graph(graph_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("graph_faults")
    overrides = [
        f"policy_server.checkpoint={graph_checkpoint}",
        "policy_server.backend=onnx",
        f"policy_server.observation_timeout_s={OBSERVATION_TIMEOUT_S}",
        "sim_node.timing=realtime",
        "sim_node.image_size=64",
        "arm_controller.trigger=timer",
        f"arm_controller.command_timeout_s={COMMAND_TIMEOUT_S}",
    ]
    with ros_domain() as env:
        group = ProcessGroup(env)
        probe = None
        try:
            nodes = start_nodes(group, folder, overrides, {"sim_node": camera_remappings()})
            relay = start_relay(group, folder / "relay.log")
            probe = GraphProbe("faults_probe")
            graph = Graph(group, nodes, probe, folder, relay)
            probe.wait_for_server(HANG_GUARD_S, graph.log())
            yield graph
        finally:
            if probe is not None:
                probe.close()
            group.stop()


def _ready(graph: Graph) -> None:
    """Arm in policy mode, e-stop released, cameras up, every node alive."""
    dead = {k: p.returncode for k, p in graph.nodes.items() if p.poll() is not None}
    assert not dead, f"node(s) died: {dead}"
    graph.restart_relay()
    graph.probe.estop(False)  # reset_estop is refused until arm_controller has heard the release
    wait_until(lambda: graph.probe.reset_estop().success, 10, "the e-stop cleared")
    assert graph.probe.set_mode("policy").success


def _start_moving_goal(graph: Graph, index: int = 0, attempts: int = 3) -> tuple[Any, float]:
    """Send a goal and return once arm_controller is executing its chunks (commands changing).

    A goal that ends before its first step on a stale observation is sent again (at most `attempts`
    times): right after the camera relay restarts, policy_server may not have matched it yet.
    """
    probe = graph.probe
    for _attempt in range(attempts):
        handle = probe.send_goal(sim_instruction(index), GOAL_STEPS, graph.log())
        assert handle.accepted
        started = time.monotonic()
        result = handle.get_result_async()

        def moving(result=result, started=started) -> bool:
            points = probe.trajectories_since(started)
            return result.done() or (len(points) >= 4 and len({p.values.tobytes() for p in points}) >= 3)

        wait_until(moving, 60, "the arm executing the goal's chunks", graph.log())
        if not result.done():
            return handle, started
        ended = result.result().result
        if ended.steps > 0 or "stale observation" not in ended.message:
            break
    raise AssertionError(f"the goal ended before the arm moved: {ended}")


def _assert_holds(probe: GraphProbe, since: float, what: str, settle_s: float = 1.5) -> np.ndarray:
    """After `since` the arm is held: (after at most IN_FLIGHT commands) one target, re-commanded every
    period, equal to a joint position the sim measured. Returns the hold target."""
    wait_until(lambda: len(probe.trajectories_since(since)) >= 8, 30, f"hold commands after {what}")
    time.sleep(settle_s)
    after = probe.trajectories_since(since)
    final = after[-1].values
    differing = [p for p in after if not np.array_equal(p.values, final)]
    assert len(differing) <= IN_FLIGHT and all(p in after[:IN_FLIGHT] for p in differing), (
        f"the arm did not hold after {what}: {len(differing)} of {len(after)} commands differ from the last"
    )
    assert len(after) - len(differing) >= 8, f"the hold is not re-commanded every period after {what}"
    with probe.lock:
        measured = [s.values for s in probe.joint_states]
    assert any(np.array_equal(final, m) for m in measured), "the hold target is not a measured position"
    return final


def _goal_result(graph: Graph, handle: Any) -> tuple[int, Any, float]:
    status, result = graph.probe.result(handle, 60, graph.log())
    return status, result, time.monotonic()


def test_cancel_stops_motion(graph: Graph) -> None:
    _ready(graph)
    probe = graph.probe
    handle, _ = _start_moving_goal(graph)
    canceled_at = time.monotonic()
    wait_future(handle.cancel_goal_async(), 30, "the cancel response", graph.log())
    status, result, ended = _goal_result(graph, handle)
    assert status == GoalStatus.STATUS_CANCELED and result.reason == "canceled", result
    assert probe.stop_chunks_since(canceled_at), "no stop chunk after the cancel"
    _assert_holds(probe, ended, "the cancel")


def test_estop_stops_motion_and_stays_latched(graph: Graph) -> None:
    _ready(graph)
    probe = graph.probe
    handle, _ = _start_moving_goal(graph, 1)
    probe.estop(True)
    status, result, ended = _goal_result(graph, handle)
    assert status == GoalStatus.STATUS_ABORTED and result.reason == "estop", result
    _assert_holds(probe, ended, "the e-stop")

    # latched across mode switches: no owner but 'hold' is allowed, and no goal is accepted
    for mode in ("policy", "teleop"):
        answer = probe.set_mode(mode)
        assert not answer.success and "e-stop" in answer.message, answer
    assert probe.set_mode("hold").success
    assert not probe.set_mode("policy").success
    assert not probe.send_goal(sim_instruction(0), 10, graph.log()).accepted
    wait_until(
        lambda: probe.diagnostics and probe.diagnostics[-1][1].get("estop_latched") == "true",
        10,
        "diagnostics reporting the latch",
    )
    # only svrl/reset_estop clears it, and only once the e-stop topic says False
    assert not probe.reset_estop().success
    probe.estop(False)
    wait_until(lambda: probe.reset_estop().success, 10, "reset_estop accepted after the release")
    assert probe.set_mode("policy").success


def test_dead_camera_ends_the_goal_and_the_arm_holds(graph: Graph) -> None:
    _ready(graph)
    probe = graph.probe
    handle, _ = _start_moving_goal(graph, 2)
    graph.relay.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    status, result, ended = _goal_result(graph, handle)
    assert status == GoalStatus.STATUS_ABORTED and result.reason == "error", result
    assert "stale observation" in result.message and "image" in result.message, result.message
    # The running chunk is used up within its length, then the command watchdog holds; the goal's
    # end re-latches the hold once. From then on the arm holds the measured position.
    _assert_holds(probe, ended, "the camera died")
    assert len(probe.trajectories_since(killed)) >= 8
    graph.restart_relay()


def test_dead_policy_server_the_arm_holds(graph: Graph) -> None:
    _ready(graph)
    probe = graph.probe
    _start_moving_goal(graph, 3)
    graph.nodes["policy_server"].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    # No stop chunk comes: the chunk in progress runs out and arm_controller's command watchdog holds.
    chunk_s = 8 * PERIOD_S
    wait_until(
        lambda: _trailing_constant(probe.trajectories_since(killed), 8),
        30,
        "arm_controller holding after the policy server died",
    )
    held = _assert_holds(probe, killed + chunk_s + COMMAND_TIMEOUT_S + 1.0, "the policy server died")
    assert graph.nodes["sim_node"].poll() is None and graph.nodes["arm_controller"].poll() is None
    with probe.lock:
        last = probe.diagnostics[-1][2] if probe.diagnostics else ""
    assert last.startswith("holding"), f"diagnostics do not say the arm holds: {last!r}"
    assert trajectory_violations(probe.trajectories_since(0)) == []
    assert held.shape == (7,)


def _trailing_constant(points: list[Stamped], n: int) -> bool:
    return len(points) >= n and all(np.array_equal(p.values, points[-1].values) for p in points[-n:])
