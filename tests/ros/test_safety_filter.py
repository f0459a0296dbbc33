"""The arm controller's safety filter and chunk timing, without ROS (svrl_ros.safety_filter, chunk_executor)."""

from __future__ import annotations

import numpy as np
import pytest
from svrl_ros.chunk_executor import (
    ERROR,
    MODE_HOLD,
    MODE_POLICY,
    MODE_TELEOP,
    OK,
    ChunkSchedule,
    ControlCore,
    action_targets,
)
from svrl_ros.safety_filter import (
    ACTION_NAMES,
    CLIP_ACCELERATION,
    CLIP_POSITION,
    CLIP_VELOCITY,
    SafetyFilter,
    SafetyLimits,
    SafetyViolation,
)

from svrl_sim import robot
from svrl_sim.kinematics import ArmKinematics, finger_position

pytestmark = pytest.mark.timeout(120)

PERIOD = 0.1
PERIOD_NS = 100_000_000
HOME = np.array(robot.HOME_Q)
LOWER, UPPER, VELOCITY = robot.arm_limits()
FINGERS = np.array([0.04, 0.04])


@pytest.fixture(scope="module")
def kin() -> ArmKinematics:
    return ArmKinematics()


@pytest.fixture
def safety(kin: ArmKinematics) -> SafetyFilter:
    return SafetyFilter(SafetyLimits(period_s=PERIOD), kinematics=ArmKinematics(kin.model))


def assert_safe(q: np.ndarray, finger: float) -> None:
    assert q.shape == (7,) and np.isfinite(q).all()
    assert (q >= LOWER).all() and (q <= UPPER).all()
    assert np.isfinite(finger) and 0.0 <= finger <= robot.FINGER_OPEN


# ------------------------------------------------------------------------------------ safety filter
def test_action_names_match_the_policy_package_and_what_policy_server_sends() -> None:
    """A chunk whose dim_names the filter does not know is refused: every sender must spell them alike."""
    from svrl_ros.runners import DIM_NAMES

    features = pytest.importorskip("svrl_policy.features")
    assert {k: tuple(v) for k, v in features.ACTION_NAMES.items()} == ACTION_NAMES
    assert {k: tuple(v) for k, v in DIM_NAMES.items()} == ACTION_NAMES
    for space, names in DIM_NAMES.items():
        chunk = np.zeros((2, len(names)), np.float32)
        chunk[:, :7] = HOME[: min(7, len(names))] if space == "joint_pos" else 0.0
        assert (
            SafetyFilter(SafetyLimits(period_s=PERIOD_NS * 1e-9)).check_chunk(chunk, space, names, PERIOD_NS)
            is None
        ), space


def test_small_step_passes_bit_for_bit(safety: SafetyFilter) -> None:
    target = HOME + 0.01
    result = safety.command(HOME, target, 0.02)
    assert not result.refused and result.clips == ()
    assert result.arm.tobytes() == target.tobytes()
    assert result.finger == 0.02


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_chunk_is_refused_whole(safety: SafetyFilter, bad: float) -> None:
    actions = np.zeros((4, 7))
    actions[3, 2] = bad
    reason = safety.check_chunk(actions, "ee_delta")
    assert reason is not None and "NaN/inf" in reason and "action 3 dim 2" in reason


def test_wrong_action_space_dims_names_period_refused(safety: SafetyFilter) -> None:
    ok = np.zeros((2, 7))
    assert safety.check_chunk(ok, "ee_delta", ACTION_NAMES["ee_delta"], PERIOD_NS) is None
    assert "action_space" in safety.check_chunk(ok, "cartesian")
    assert "[K >= 1, 8]" in safety.check_chunk(ok, "joint_pos")
    assert "dim_names" in safety.check_chunk(ok, "ee_delta", ["a"] * 7)
    assert "period" in safety.check_chunk(ok, "ee_delta", (), 50_000_000)


def test_velocity_clip(safety: SafetyFilter) -> None:
    result = safety.command(HOME, HOME + 1.0, 0.0)
    assert CLIP_VELOCITY in result.clips
    assert np.allclose(result.arm - HOME, np.minimum(VELOCITY * PERIOD, 1.0))


def test_acceleration_clip_against_previous_step(safety: SafetyFilter) -> None:
    safety.limits = SafetyLimits(period_s=PERIOD, max_acceleration=5.0)
    dv = 5.0 * PERIOD**2
    first = safety.command(HOME, HOME + 0.2, 0.0)  # from rest: at most dv
    assert CLIP_ACCELERATION in first.clips and np.allclose(first.arm - HOME, dv)
    second = safety.command(HOME, HOME - 0.2, 0.0)  # reversing: previous step dv, so at most 0 now
    assert CLIP_ACCELERATION in second.clips and np.allclose(second.arm - HOME, 0.0)
    safety.reset_motion()
    assert np.allclose(safety.command(HOME, HOME - 0.2, 0.0).arm - HOME, -dv)


def test_position_clip_to_urdf_limits(safety: SafetyFilter) -> None:
    measured = UPPER - 0.01
    measured[1] = 0.3
    # Only the position clip is under test: a workspace that cannot refuse.
    safety.limits = SafetyLimits(period_s=PERIOD, workspace_min=(-5, -5, -5), workspace_max=(5, 5, 5))
    result = safety.command(measured, measured + 0.1, 0.0)
    assert CLIP_POSITION in result.clips
    assert_safe(result.arm, result.finger)
    assert np.array_equal(result.arm, np.minimum(measured + 0.1, UPPER))


def test_workspace_refusal_holds(safety: SafetyFilter, kin: ArmKinematics) -> None:
    kin.set_joint_positions(HOME)
    tool = kin.tool_pose().position
    safety.limits = SafetyLimits(
        period_s=PERIOD, workspace_min=(-1, -1, -1), workspace_max=(1, 1, float(tool[2]) + 0.001)
    )
    assert not safety.command(HOME, HOME, 0.0).refused
    up = HOME.copy()
    up[3] += 0.1  # unbend the elbow: the tool rises
    result = safety.command(HOME, up, 0.0)
    assert result.refused and "workspace" in result.reason
    assert np.array_equal(safety.previous_step, np.zeros(7))


def test_gripper_is_clipped_and_must_be_finite(safety: SafetyFilter) -> None:
    assert safety.command(HOME, HOME, 0.5).finger == robot.FINGER_OPEN
    assert safety.command(HOME, HOME, np.nan).refused


def test_publishable_is_the_last_line(safety: SafetyFilter) -> None:
    with pytest.raises(SafetyViolation):
        safety.publishable(UPPER + 1e-9, 0.0)
    with pytest.raises(SafetyViolation):
        safety.publishable(np.full(7, np.nan), 0.0)
    with pytest.raises(SafetyViolation):
        safety.publishable(HOME, 0.05)


def test_random_garbage_never_leaves_the_limits(safety: SafetyFilter) -> None:
    """Property-style: whatever comes in, what comes out is finite and inside the URDF limits."""
    rng = np.random.default_rng(0)
    specials = np.array([np.nan, np.inf, -np.inf, 1e300, -1e300, 0.0])
    refused = accepted = 0
    for _ in range(400):
        measured = rng.uniform(LOWER - 0.05, UPPER + 0.05)
        target = measured + rng.normal(0, rng.choice([0.01, 0.3, 10.0]), 7)
        if rng.random() < 0.2:
            target[rng.integers(7)] = rng.choice(specials)
        finger = float(rng.choice([rng.uniform(-1, 1), *specials]))
        result = safety.command(measured, target, finger)
        if result.refused:
            refused += 1
            q, f = safety.hold(measured, finger)
            assert_safe(q, f)
        else:
            accepted += 1
            assert_safe(result.arm, result.finger)
            assert (np.abs(result.arm - measured) <= VELOCITY * PERIOD + 1e-12).all() or (
                (measured < LOWER) | (measured > UPPER)
            ).any()
    assert refused and accepted  # both paths were exercised


def test_gate_order(safety: SafetyFilter) -> None:
    assert "e-stop" in safety.gate(estop_latched=True, source_owns=False, joint_state_age_s=99.0)
    assert "own" in safety.gate(estop_latched=False, source_owns=False, joint_state_age_s=99.0)
    assert "stale" in safety.gate(estop_latched=False, source_owns=True, joint_state_age_s=99.0)
    assert safety.gate(estop_latched=False, source_owns=True, joint_state_age_s=0.01) is None
    assert safety.gate(estop_latched=False, source_owns=True, joint_state_age_s=None) is None


def test_bad_limits_refused() -> None:
    with pytest.raises(ValueError):
        SafetyLimits(period_s=PERIOD, workspace_min=(1, 0, 0), workspace_max=(0, 1, 1))
    with pytest.raises(ValueError):
        SafetyLimits(period_s=PERIOD, max_acceleration=float("nan"))


# ------------------------------------------------------------------------------------ chunk timing
def test_schedule_index_from_stamps_each_once() -> None:
    schedule = ChunkSchedule(PERIOD_NS)
    from svrl_ros.chunk_executor import Chunk

    schedule.replace(Chunk(MODE_POLICY, 1_000_000_000, np.arange(12.0).reshape(3, 4), "x"))
    assert schedule.take(1_000_000_000 - PERIOD_NS) is None  # not yet valid
    assert schedule.take(1_000_000_000 + 40_000_000)[0] == 0  # rounds to 0
    assert schedule.take(1_000_000_000) is None  # index 0 already executed
    i, action = schedule.take(1_000_000_000 + 2 * PERIOD_NS + 3)
    assert i == 2 and action.tolist() == [8.0, 9.0, 10.0, 11.0]
    assert schedule.take(1_000_000_000 + 3 * PERIOD_NS) is None  # used up


def make_core(kin: ArmKinematics, lockstep: bool, mode: str = MODE_POLICY, **kw) -> ControlCore:
    safety = SafetyFilter(SafetyLimits(period_s=PERIOD, **kw), kinematics=ArmKinematics(kin.model))
    return ControlCore(safety, lockstep=lockstep, command_timeout_s=0.3, start_mode=mode, kinematics=kin)


def ee_chunk(k: int) -> np.ndarray:
    actions = np.zeros((k, 7), np.float32)
    actions[:, 0] = 0.01
    actions[:, 6] = -1.0
    return actions


def test_lockstep_runs_each_action_once_and_stop_chunk_holds(kin: ArmKinematics) -> None:
    core = make_core(kin, lockstep=True)
    core.on_joint_state(0, HOME, FINGERS, 0.0)
    assert core.on_chunk(MODE_POLICY, 0, ee_chunk(3), "ee_delta")
    first = core.cycle(0.0)
    assert first is not None and first.stamp_ns == 0 and not first.hold
    assert core.cycle(0.0) is None  # same state: nothing twice
    core.on_joint_state(PERIOD_NS, first.arm, FINGERS, 0.1)
    assert core.cycle(0.1).stamp_ns == PERIOD_NS
    assert core.on_chunk(MODE_POLICY, PERIOD_NS, np.zeros((0, 7), np.float32), "ee_delta")  # stop
    core.on_joint_state(2 * PERIOD_NS, first.arm, FINGERS, 0.2)
    assert core.cycle(0.2) is None  # lock-step hold = nothing
    assert core.counters["commands"] == 2 and core.counters["stop_chunks"] == 1


def test_timer_mode_holds_after_command_timeout(kin: ArmKinematics) -> None:
    core = make_core(kin, lockstep=False)
    core.on_joint_state(0, HOME, FINGERS, 0.0)
    core.on_chunk(MODE_POLICY, 0, ee_chunk(1), "ee_delta")
    command = core.cycle(0.0)
    assert command is not None and not command.hold
    core.on_joint_state(PERIOD_NS, command.arm, FINGERS, 0.1)
    assert core.cycle(0.1) is None  # chunk used up, last command still fresh: the controller tracks it
    core.on_joint_state(4 * PERIOD_NS, command.arm, FINGERS, 0.4)
    held = core.cycle(0.4)
    assert held is not None and held.hold and np.array_equal(held.arm, command.arm)
    assert held.finger == command.finger  # the gripper keeps its last command


def test_timer_mode_stale_joint_state_holds(kin: ArmKinematics) -> None:
    core = make_core(kin, lockstep=False, joint_state_timeout_s=0.25)
    core.on_joint_state(0, HOME, FINGERS, 0.0)
    core.on_chunk(MODE_POLICY, 0, ee_chunk(10), "ee_delta")
    assert not core.cycle(0.0).hold
    held = core.cycle(0.3)
    assert held.hold and np.array_equal(held.arm, HOME) and "stale" in core.message
    assert core.schedule.current is None


def test_mode_ownership_and_estop_latch(kin: ArmKinematics) -> None:
    core = make_core(kin, lockstep=True, mode=MODE_HOLD)
    core.on_joint_state(0, HOME, FINGERS, 0.0)
    assert not core.on_chunk(MODE_POLICY, 0, ee_chunk(2), "ee_delta")  # hold owns nothing
    assert core.set_mode("dance") == (False, "unknown mode 'dance': one of ['policy', 'teleop', 'hold']")
    assert core.set_mode(MODE_TELEOP)[0]
    assert not core.on_chunk(MODE_POLICY, 0, ee_chunk(2), "ee_delta")
    assert core.on_chunk(MODE_TELEOP, 0, ee_chunk(2), "ee_delta")
    core.on_estop(True)
    assert core.level == ERROR and core.cycle(0.0) is None
    assert not core.set_mode(MODE_POLICY)[0]
    assert core.set_mode(MODE_HOLD)[0] and core.estop_latched  # latched across the switch
    core.on_estop(False)
    assert not core.set_mode(MODE_TELEOP)[0]
    core.on_estop(True)
    assert not core.reset_estop()[0]  # the topic still says True
    core.on_estop(False)
    assert core.reset_estop()[0] and not core.estop_latched and core.mode == MODE_HOLD
    assert core.set_mode(MODE_POLICY)[0] and core.level == OK


def test_refused_chunk_drops_the_running_one(kin: ArmKinematics) -> None:
    core = make_core(kin, lockstep=True)
    core.on_joint_state(0, HOME, FINGERS, 0.0)
    core.on_chunk(MODE_POLICY, 0, ee_chunk(5), "ee_delta")
    bad = ee_chunk(5)
    bad[4, 1] = np.nan
    core.on_chunk(MODE_POLICY, 0, bad, "ee_delta")
    assert core.cycle(0.0) is None and "NaN" in core.message and core.counters["chunks_refused"] == 1


# ------------------------------------------------------------------------------------ against SimEnv
def test_expert_through_the_filter_is_bit_identical_to_simenv(kin: ArmKinematics) -> None:
    """Lock-step contract: the targets published for an action equal what SimEnv._apply commands, and the
    defaults never clip normal expert motion."""
    sim_env = pytest.importorskip("svrl_sim.env")
    env = sim_env.SimEnv(image_size=16, action_space="ee_delta")
    core = make_core(kin, lockstep=True)
    stamp = 0
    for task, split_index in (("goal/open_drawer", ("eval", 0)), ("object/cube_red_in_basket", ("train", 1))):
        env.reset(task, split_index, render=False)
        core.set_mode(MODE_POLICY)
        while env.episode_running:
            arm_q = env.kinematics.joint_positions
            finger_q = env.data.qpos[env.kinematics.finger_qpos].copy()
            action = env.expert_action()
            core.on_joint_state(stamp, arm_q, finger_q, 0.0)
            core.on_chunk(MODE_POLICY, stamp, action[None], "ee_delta")
            command = core.cycle(0.0)
            env.step(action, render=False)
            assert command is not None and command.stamp_ns == stamp
            assert command.arm.tobytes() == env.data.ctrl[env.index.arm_act].tobytes()
            assert command.finger == env.data.ctrl[env.index.grip_act]
            stamp += PERIOD_NS
    assert sum(v for k, v in core.counters.items() if k.startswith("clips_")) == 0
    assert core.counters["steps_refused"] == 0 and core.counters["commands"] > 50


def test_action_targets_match_kinematics(kin: ArmKinematics) -> None:
    action = np.array([0.01, -0.005, 0.0, 0.0, 0.05, 0.0, 0.3])
    arm, finger = action_targets(kin, HOME, FINGERS, action, "ee_delta", PERIOD)
    other = ArmKinematics(kin.model)
    other.set_joint_positions(HOME, FINGERS)
    assert arm.tobytes() == other.ee_delta_target(action[:3], action[3:6], PERIOD).tobytes()
    assert finger == finger_position(0.3)


def test_a_measured_joint_beyond_its_limit_is_refused_not_snapped_back(safety: SafetyFilter) -> None:
    measured = HOME.copy()
    measured[6] = UPPER[6] + 0.3  # joint7 (the wrist's roll) far past its limit: a clip would snap it back
    result = safety.command(measured, HOME, 0.02)
    assert result.refused and "joints [7]" in result.reason
    measured[6] = UPPER[6] + 0.01  # within the tolerance: an overshoot, still commandable
    result = safety.command(measured, measured, 0.02)
    assert not result.refused, result.reason
