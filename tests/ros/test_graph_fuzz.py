"""Fuzz the robot graph over real DDS while a goal runs (issue #9, "Reliability").

`svrl up --profile sim` (lock-step sim_node, policy_server with a random exported policy, arm_controller)
runs as a child process, exactly as an operator starts it. While one goal runs, this process publishes
garbage on every input the graph has: both cameras (wrong size, encoding, step, truncated data), extra
goals (empty, 100 kB), action chunks (NaN, inf, 1e6, a declared shape that disagrees with the data,
wrong action space / dims / period), joint states (unknown, missing, duplicated joint names, NaN
positions), and stamps out of order. It records everything arm_controller commands.

What must hold: no node dies, the running goal ends with a result (whatever its reason: in lock-step a
refused chunk drops the running one and the sim waits, so it usually ends on a stale observation),
empty / huge instructions are rejected, every trajectory point that reached the arm is finite and
inside the URDF limits, every gripper value is finite and in [0, 0.04] m, and afterwards a fresh goal
still runs through the graph and ends with a result.

Joint states are never forged with a stamp *ahead* of the sim: arm_controller ignores states older than
the newest one, so one state from the future would hold the arm until sim time catches up (safe, and a
different test).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from tests.ros.graph_harness import (
    FUZZ_FRAME,
    HANG_GUARD_S,
    GraphProbe,
    gripper_violations,
    log_tail,
    sim_instruction,
    sim_task,
    start_stack,
    trajectory_violations,
    wait_future,
    wait_until,
)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

PERIOD_NS = 100_000_000
GOAL_STEPS = 300  # the goal must outlast the sensor fuzz: 80 lock-step steps took 1.05 s in a CI run
OBSERVATION_TIMEOUT_S = 3.0
ARM = [f"joint{i}" for i in range(1, 8)]
FINGERS = ["finger_joint1", "finger_joint2"]
HOME = [0.0, -0.293, 0.0, -2.577, 0.0, 2.284, 0.785, 0.04, 0.04]


def _stamp(ns: int):
    from svrl_ros.conversions import nanoseconds_to_stamp

    return nanoseconds_to_stamp(max(0, int(ns)))


def bad_images(stamp_ns: int) -> list:
    """Images no reader can use as they are (and one it can: a wrong size, which the Preprocessor resizes)."""
    from sensor_msgs.msg import Image

    def image(height: int, width: int, encoding: str, step: int, nbytes: int, stamp: int = stamp_ns) -> Image:
        msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=0)
        msg.header.stamp = _stamp(stamp)
        msg.header.frame_id = FUZZ_FRAME
        msg.data = bytes(nbytes)
        return msg

    return [
        image(32, 48, "rgb8", 48 * 3, 32 * 48 * 3),  # wrong size, well formed
        image(64, 64, "mono8", 64, 64 * 64),  # wrong encoding
        image(64, 64, "rgba8", 64 * 4, 64 * 64 * 4),
        image(64, 64, "16UC1", 128, 64 * 128),
        image(64, 64, "", 192, 64 * 192),
        image(64, 64, "rgb8", 10, 64 * 10),  # step shorter than a row
        image(64, 64, "rgb8", 199, 64 * 192),  # step disagrees with the data
        image(64, 64, "rgb8", 192, 64 * 192 // 2),  # truncated
        image(0, 0, "rgb8", 0, 0),  # no pixels
        image(100_000, 100_000, "bgr8", 300_000, 12),  # absurd header, tiny data
        image(64, 64, "rgb8", 192, 64 * 192, stamp=stamp_ns - 3 * PERIOD_NS),  # out of order
        image(64, 64, "bgr8", 192, 64 * 192, stamp=0),  # out of order: the oldest stamp there is
    ]


def bad_joint_states(stamp_ns: int) -> list:
    from sensor_msgs.msg import JointState

    def state(names: list[str], positions: list[float], stamp: int = stamp_ns) -> JointState:
        msg = JointState(name=names, position=[float(v) for v in positions])
        msg.header.stamp = _stamp(stamp)
        msg.header.frame_id = FUZZ_FRAME
        return msg

    nan_home = list(HOME)
    nan_home[1] = math.nan
    inf_home = list(HOME)
    inf_home[6] = math.inf
    return [
        state(["shoulder", "elbow"], [0.0, 0.0]),  # only unknown joints
        state(ARM, HOME[:7]),  # fingers missing
        state(ARM[:3] + FINGERS, HOME[:3] + HOME[7:]),  # arm joints missing
        state(ARM + FINGERS + ["joint4"], [*HOME, math.nan]),  # duplicated name, second one NaN
        state(ARM + FINGERS, nan_home),  # NaN position
        state(ARM + FINGERS, inf_home),  # inf position
        state(ARM + FINGERS, HOME[:3]),  # fewer positions than names
        state([], []),  # empty
        state(ARM + FINGERS, HOME, stamp=stamp_ns - 3 * PERIOD_NS),  # out of order: an older state
        state(ARM + FINGERS, HOME, stamp=0),  # out of order: the oldest stamp there is
    ]


EE_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


def _chunk(
    values: np.ndarray,
    k: int,
    d: int,
    *,
    stamp_ns: int,
    space: str = "ee_delta",
    dim_names: list[str] = EE_NAMES,
    period_s: float = 0.1,
):
    """An ActionChunk that declares k x d (whatever `values` holds)."""
    from svrl_interfaces.msg import ActionChunk
    from svrl_ros.conversions import float32_sequence, seconds_to_duration

    msg = ActionChunk(action_space=space, chunk_length=k, dims=d, dim_names=list(dim_names))
    msg.header.stamp = _stamp(stamp_ns)
    msg.header.frame_id = FUZZ_FRAME
    msg.control_period = seconds_to_duration(period_s)
    msg.actions = float32_sequence(values)
    msg.checkpoint_id = "fuzz"
    return msg


def bad_chunks(stamp_ns: int) -> list:
    """Chunks the safety filter must refuse (NaN/inf, shapes, spaces, periods) and out-of-order stamps."""
    names = EE_NAMES

    def chunk(values: np.ndarray, k: int, d: int, *, stamp: int = stamp_ns, **kwargs):
        return _chunk(values, k, d, stamp_ns=stamp, **kwargs)

    calm = np.zeros((8, 7), np.float32)
    with_nan, with_inf = calm.copy(), calm.copy()
    with_nan[0, 2] = np.nan
    with_inf[3, 0] = np.inf
    return [
        chunk(with_nan, 8, 7),
        chunk(with_inf, 8, 7),
        chunk(np.full((8, 7), np.nan, np.float32), 8, 7, stamp=stamp_ns + PERIOD_NS),
        chunk(calm[:5], 8, 7),  # declares 8 x 7, carries 5 x 7
        chunk(calm, 3, 7),  # declares 3 x 7, carries 8 x 7
        chunk(calm.reshape(-1)[:54], 6, 9),  # wrong dims for ee_delta
        chunk(calm, 8, 7, dim_names=names[:3]),  # dim_names disagree with dims
        chunk(calm, 8, 7, dim_names=list(reversed(names))),  # wrong dim names
        chunk(calm, 8, 7, space="teleport"),  # unknown action space
        chunk(calm, 8, 7, space="joint_pos", dim_names=[]),  # joint_pos has 8 dims, not 7
        chunk(calm, 8, 7, period_s=0.25),  # wrong control period
        chunk(calm, 0, 7, stamp=0),  # a stop chunk from an ancient stamp (out of order)
        chunk(np.full((8, 7), 1e6, np.float32), 8, 7, stamp=0),  # out of order: ancient stamp
    ]


def absurd_chunks(stamp_ns: int, length: int = 40) -> list:
    """Well-formed, finite chunks for the state at `stamp_ns` that ask for the impossible."""
    huge = np.full((length, 7), 1e6, np.float32)  # 1000 km per step
    huge[:, 1::2] *= -1
    joints = np.full((length, 8), -1e6, np.float32)  # joint_pos: 1e6 rad away, far outside every limit
    joints[:, 3] = 1e6
    return [
        _chunk(huge, length, 7, stamp_ns=stamp_ns),
        _chunk(joints, length, 8, stamp_ns=stamp_ns, space="joint_pos", dim_names=[]),
    ]


def filter_decisions(probe: GraphProbe) -> int:
    """Commands published + steps refused, from arm_controller's newest diagnostics."""
    with probe.lock:
        values = probe.diagnostics[-1][1] if probe.diagnostics else {}
    return int(values.get("commands", 0)) + int(values.get("steps_refused", 0))


def test_fuzz_while_a_goal_runs(processes, graph_checkpoint: Path, tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    stack = start_stack(
        processes,
        log,
        [
            f"policy_server.checkpoint={graph_checkpoint}",
            "policy_server.backend=onnx",
            f"policy_server.observation_timeout_s={OBSERVATION_TIMEOUT_S}",
            "sim_node.image_size=64",
        ],
    )
    probe = GraphProbe("fuzz_probe")
    try:
        probe.wait_for_server(HANG_GUARD_S, log)
        handle = probe.send_goal(sim_instruction(0), GOAL_STEPS, log)
        assert handle.accepted, log_tail(log)
        result_future = handle.get_result_async()
        started = time.monotonic()
        wait_until(lambda: len(probe.trajectories_since(started)) >= 3, 60, "the first trajectories", log)

        # ---- while the goal runs: garbage on every sensor input, and goals that must be rejected
        extra_goals = []
        for round_index in range(6):
            now_ns = probe.newest_state_ns() or 0
            for msg in bad_images(now_ns):
                for pub in probe.image_pubs.values():
                    pub.publish(msg)
            for msg in bad_joint_states(now_ns):
                probe.joint_pub.publish(msg)
                time.sleep(0.005)
            if round_index == 0:
                for text in ("", "   \n\t", "x" * 100_000):
                    extra_goals.append(probe.send_goal(text, 5, log))
            time.sleep(0.05)
        assert not result_future.done(), "the goal ended during the sensor fuzz: raise GOAL_STEPS"
        # ... absurd but well-formed chunks for the current state (they replace the policy's and run
        # until the policy's next chunk or a refusal), then chunks the filter must refuse outright
        for msg in absurd_chunks(probe.newest_state_ns() or 0):
            probe.chunk_pub.publish(msg)
            time.sleep(0.3)
        for _ in range(2):
            now_ns = probe.newest_state_ns() or 0
            for msg in bad_chunks(now_ns):
                probe.chunk_pub.publish(msg)
                time.sleep(0.01)
            for msg in bad_joint_states(now_ns) + bad_images(now_ns):
                (probe.joint_pub if hasattr(msg, "position") else probe.image_pubs["main"]).publish(msg)
        response = wait_future(result_future, 90, "the running goal's result", log)
        assert response.result.reason, f"the running goal ended without a reason: {response.result}"

        # ---- with no goal running nothing else commands the arm: whatever moves now is an absurd chunk,
        # executed through the safety filter from a fresh episode state (a state whose action was
        # refused never gets another one: the lock-step sim stays paused on it)
        for msg in absurd_chunks(0):
            before = filter_decisions(probe)
            msg.header.stamp = _stamp(probe.reset_sim(sim_task(0), log))
            sent = time.monotonic()
            probe.chunk_pub.publish(msg)
            wait_until(
                lambda before=before: filter_decisions(probe) > before,
                30,
                f"a {msg.action_space} command",
                log,
            )
            wait_until(lambda: probe.quiet_for(0.5), 30, f"the {msg.action_space} chunk to end", log)
            assert probe.trajectories_since(sent), f"the absurd {msg.action_space} chunk moved nothing"
        fuzz_ended = time.monotonic()

        assert not any(h.accepted for h in extra_goals), "an empty or huge instruction was accepted"
        # rejected also when nothing runs (not merely because another goal was running)
        for text in ("", "x" * 100_000):
            assert not probe.send_goal(text, 5, log).accepted, f"accepted {text[:10]!r}... while idle"

        # ---- a fresh goal still runs through the graph and ends with a result
        fresh_started = time.monotonic()
        handle = probe.send_goal(sim_instruction(1), 16, log)
        assert handle.accepted, log_tail(log)
        _status, fresh = probe.result(handle, 90, log)
        assert fresh.reason and fresh.steps > 0, f"the fresh goal did not run: {fresh}{log_tail(log)}"
        assert probe.trajectories_since(fresh_started), "the fresh goal commanded nothing"
        time.sleep(0.3)  # commands published just before the result may still be in flight

        # ---- no node died
        assert stack.poll() is None, f"svrl up exited{log_tail(log)}"
        names = probe.node_names()
        assert {"sim_node", "policy_server", "arm_controller"} <= names, names
        assert probe.node.count_publishers("arm_controller/joint_trajectory") == 1
        text = log.read_text(errors="replace")
        assert "exited on their own" not in text and "Traceback" not in text, log_tail(log)
    finally:
        probe.close()

    # ---- what reached the arm
    with probe.lock:
        points, grippers = list(probe.trajectories), list(probe.grippers)
        names_seen = set(probe.trajectory_names)
        diagnostics = [values for _, values, _ in probe.diagnostics]
    assert len(points) >= 20, f"too few trajectories to judge the invariant: {len(points)}"
    assert len([p for p in points if p.arrived_s >= fuzz_ended]) >= 1
    assert names_seen == {tuple(ARM)}, names_seen
    assert trajectory_violations(points) == [], "non-finite or out-of-limit targets reached the arm"
    assert len(grippers) >= 20 and gripper_violations(grippers) == []
    final = diagnostics[-1]
    assert int(final["chunks_refused"]) >= 10, final  # the fuzz reached arm_controller
    assert int(final["joint_states_bad"]) >= 10 and int(final["joint_states_out_of_order"]) >= 1, final
    assert int(final["safety_violations"]) == 0, final


def test_a_late_state_does_not_hide_the_current_observation() -> None:
    """Out-of-order arrival (a forged or late joint state with an older stamp arrives last) must not
    make policy_server lose the observation it waits for, nor move its idea of "newest" back in time:
    in lock-step the sim waits for that chunk, so losing it stalls the goal until the timeout."""
    from svrl_ros.learned_policy import JointReading
    from svrl_ros.observation_buffer import ObservationStore, StatusSample

    store = ObservationStore(("main", "wrist"))
    image, joints = np.zeros((4, 4, 3), np.uint8), JointReading(np.zeros(7), np.zeros(2))
    for stamp in (100, 200):
        store.add_image("main", stamp, image)
        store.add_image("wrist", stamp, image)
        store.add_joints(stamp, joints)
        store.add_status(StatusSample(stamp, stamp // 100, False, False))
    store.add_joints(50, joints)  # late
    store.add_status(StatusSample(50, 0, False, False))
    obs = store.newest_observation(150)
    assert obs is not None and obs.stamp_ns == 200
    assert store.newest_state_ns() == 200
    assert store.newest_status().stamp_ns == 200
