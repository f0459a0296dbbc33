"""sim_node's bookkeeping without DDS: sim time, command checks, lock-step pairing, real-time holds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from svrl_ros.sim_clock import (
    ARM_JOINTS,
    CommandRejected,
    LockstepPairing,
    RealtimeTargets,
    ReasonCounter,
    SimClock,
    arm_target,
    gripper_target,
)

Q = np.arange(7, dtype=np.float64) / 10


def test_arm_joints_match_the_robot_description() -> None:
    from svrl_sim import robot

    assert robot.ARM_JOINTS == ARM_JOINTS


def test_sim_clock_counts_whole_periods_in_nanoseconds() -> None:
    clock = SimClock(10.0)
    assert clock.now_ns == 0
    assert [clock.advance() for _ in range(3)] == [100_000_000, 200_000_000, 300_000_000]
    assert SimClock(25.0).period_ns == 40_000_000
    with pytest.raises(ValueError):
        SimClock(3.0)  # 333333333.33 ns per period: stamps could not compare exactly


def test_arm_target_maps_joints_by_name() -> None:
    names = list(reversed(ARM_JOINTS))
    assert np.array_equal(arm_target(names, [Q[::-1].tolist()]), Q)
    # the last point is the target
    assert np.array_equal(arm_target(ARM_JOINTS, [np.zeros(7).tolist(), Q.tolist()]), Q)


@pytest.mark.parametrize(
    ("names", "points", "reason"),
    [
        (ARM_JOINTS, [], "no_points"),
        ((*ARM_JOINTS[:6], "joint9"), [Q.tolist()], "unknown_joints"),
        (ARM_JOINTS[:6], [Q[:6].tolist()], "missing_joints"),
        ((*ARM_JOINTS, "joint1"), [[*Q.tolist(), 0.0]], "duplicate_joints"),
        (ARM_JOINTS, [Q[:6].tolist()], "wrong_length"),
        (ARM_JOINTS, [[math.nan, *Q[1:].tolist()]], "non_finite"),
        (ARM_JOINTS, [[math.inf, *Q[1:].tolist()]], "non_finite"),
    ],
)
def test_arm_target_rejects_unusable_trajectories(names, points, reason) -> None:
    with pytest.raises(CommandRejected) as caught:
        arm_target(names, points)
    assert caught.value.reason == reason


def test_gripper_target_takes_one_finite_value() -> None:
    assert gripper_target([0.02]) == 0.02
    for bad, reason in (([], "wrong_length"), ([0.0, 0.0], "wrong_length"), ([math.nan], "non_finite")):
        with pytest.raises(CommandRejected) as caught:
            gripper_target(bad)
        assert caught.value.reason == reason


def test_lockstep_pairs_gripper_then_arm_for_the_current_stamp() -> None:
    pairing = LockstepPairing()
    pairing.add_gripper(0.01)
    assert pairing.take() is None  # a gripper command alone does not step
    assert not pairing.add_arm(stamp_ns=5, current_ns=7, arm=Q)  # wrong stamp: dropped
    assert pairing.stale_arm == 1
    assert pairing.take() is None
    assert pairing.add_arm(stamp_ns=7, current_ns=7, arm=Q)
    command = pairing.take()
    assert command is not None and command.finger == 0.01 and np.array_equal(command.arm, Q)
    assert pairing.take() is None  # handed out once


def test_lockstep_arm_first_waits_for_its_gripper() -> None:
    pairing = LockstepPairing()
    assert pairing.add_arm(stamp_ns=0, current_ns=0, arm=Q)
    assert pairing.take() is None
    pairing.add_gripper(0.03)
    command = pairing.take()
    assert command is not None and command.finger == 0.03


def test_lockstep_orphan_gripper_is_superseded_not_paired_later() -> None:
    pairing = LockstepPairing()
    pairing.add_gripper(0.0)  # its trajectory had a wrong stamp
    assert not pairing.add_arm(stamp_ns=1, current_ns=0, arm=Q)
    pairing.add_gripper(0.04)
    pairing.add_arm(stamp_ns=0, current_ns=0, arm=Q)
    command = pairing.take()
    assert command is not None and command.finger == 0.04
    assert pairing.superseded_gripper == 1


def test_lockstep_reset_forgets_queued_commands_and_targets() -> None:
    pairing = LockstepPairing()
    pairing.add_gripper(0.01)
    pairing.add_arm(stamp_ns=0, current_ns=0, arm=Q)
    assert pairing.last_arm is not None and pairing.last_gripper == 0.01
    pairing.forget_targets()
    assert pairing.take() is None
    assert pairing.last_arm is None and pairing.last_gripper is None


def test_realtime_holds_newest_targets_until_the_timeout_then_the_measured_position() -> None:
    targets = RealtimeTargets()
    measured = np.full(7, 0.5)
    # nothing commanded: hold what is measured (arm and gripper), latched at the first period
    first = targets.command(now_s=0.0, timeout_s=0.5, measured_arm=measured, measured_finger=0.04)
    assert np.array_equal(first.arm, measured) and first.finger == 0.04
    later = targets.command(now_s=0.1, timeout_s=0.5, measured_arm=measured + 1, measured_finger=0.0)
    assert np.array_equal(later.arm, measured) and later.finger == 0.04
    targets.set_arm(Q, now_s=1.0)
    targets.set_gripper(0.01)
    fresh = targets.command(now_s=1.4, timeout_s=0.5, measured_arm=measured, measured_finger=0.04)
    assert np.array_equal(fresh.arm, Q) and fresh.finger == 0.01
    stale = targets.command(now_s=1.6, timeout_s=0.5, measured_arm=measured, measured_finger=0.04)
    assert np.array_equal(stale.arm, measured) and stale.finger == 0.01  # the gripper keeps its command
    assert targets.timeouts == 1
    # the hold is latched: a sagging arm does not creep
    held = targets.command(now_s=1.7, timeout_s=0.5, measured_arm=measured - 1, measured_finger=0.04)
    assert np.array_equal(held.arm, measured)
    targets.reset()
    after_reset = targets.command(now_s=2.0, timeout_s=0.5, measured_arm=Q, measured_finger=0.02)
    assert np.array_equal(after_reset.arm, Q) and after_reset.finger == 0.02


def test_reason_counter_logs_first_and_every_power_of_ten() -> None:
    counter = ReasonCounter()
    logged = [n for n in range(1, 1001) if counter.count("x")]
    assert logged == [1, 10, 100, 1000]
    assert counter["x"] == 1000 and counter["y"] == 0
