"""Blending overlapping chunks (svrl_ros.chunk_blending) and the schedule that feeds it, without ROS."""

from __future__ import annotations

import numpy as np
import pytest
from svrl_ros.chunk_blending import (
    BLEND_CROSSFADE,
    BLEND_ENSEMBLE,
    BLEND_NONE,
    BlendConfig,
    Covering,
    blend,
    crossfade_weight,
    ensemble_weights,
)
from svrl_ros.chunk_executor import MODE_POLICY, Chunk, ChunkSchedule, ControlCore, action_targets
from svrl_ros.safety_filter import SafetyFilter, SafetyLimits

from svrl_sim import robot
from svrl_sim.kinematics import ArmKinematics, finger_position

pytestmark = pytest.mark.timeout(60)

P = 100_000_000  # one control period, ns
T0 = 1_000_000_000


def chunk(stamp_periods: int, values: list[float], gripper: float = 1.0, space: str = "x") -> Chunk:
    """A chunk of 2-D actions [value, gripper] stamped `stamp_periods` periods after T0."""
    actions = np.array([[v, gripper] for v in values], dtype=np.float64)
    return Chunk(MODE_POLICY, T0 + stamp_periods * P, actions, space)


def at(k: int) -> int:
    return T0 + k * P


# ------------------------------------------------------------------------------------ the weights
def test_ensemble_weights_are_acts_exponential_oldest_first() -> None:
    assert ensemble_weights(1, 0.01).tolist() == [1.0]
    np.testing.assert_allclose(ensemble_weights(4, 0.0), [0.25] * 4)
    w = ensemble_weights(3, 0.5)
    assert w.sum() == pytest.approx(1.0)
    assert w[1] / w[0] == pytest.approx(np.exp(-0.5)) and w[2] / w[1] == pytest.approx(np.exp(-0.5))
    assert ensemble_weights(3, -0.5)[-1] > ensemble_weights(3, -0.5)[0]  # negative decay: newest counts most
    with pytest.raises(ValueError):
        ensemble_weights(0, 0.01)


def test_crossfade_ramps_over_the_shared_periods() -> None:
    # the newer chunk first ran at period 2; the older one's last action is for period 4 (ends at 5)
    weights = [crossfade_weight(at(k), at(2), at(5), P) for k in (2, 3, 4, 5, 6)]
    assert weights == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert crossfade_weight(at(3), at(3), None, P) == 1.0  # nothing older
    assert crossfade_weight(at(6), at(6), at(5), P) == 1.0  # starts after the older one ended


def test_config_refuses_unknown_blending_and_bad_decay() -> None:
    with pytest.raises(ValueError, match="not one of"):
        BlendConfig("average")
    with pytest.raises(ValueError, match="decay"):
        BlendConfig(BLEND_ENSEMBLE, decay=float("nan"))


def test_one_chunk_or_none_returns_the_action_unchanged() -> None:
    a, b = np.array([0.1, 1.0]), np.array([0.3, -1.0])
    for mode in (BLEND_NONE, BLEND_ENSEMBLE, BLEND_CROSSFADE):
        assert blend([Covering(a, at(0))], at(0), P, BlendConfig(mode)) is a  # bit for bit
    assert blend([Covering(a, at(0)), Covering(b, at(0), at(3))], at(0), P, BlendConfig(BLEND_NONE)) is b
    with pytest.raises(ValueError):
        blend([], at(0), P, BlendConfig())


def test_gripper_is_never_averaged_the_newest_chunk_decides() -> None:
    old, new = np.array([0.0, 1.0]), np.array([1.0, -1.0])
    for mode in (BLEND_ENSEMBLE, BLEND_CROSSFADE):
        out = blend(
            [Covering(old, at(0)), Covering(new, at(1), at(3))], at(1), P, BlendConfig(mode, decay=0.0)
        )
        assert out[1] == -1.0, mode  # not 0.0, a half-closed command
        assert 0.0 < out[0] < 1.0, mode  # the arm dimension is blended
    everything = blend(
        [Covering(old, at(0)), Covering(new, at(1), at(3))], at(1), P, BlendConfig(BLEND_ENSEMBLE, 0.0, None)
    )
    assert everything.tolist() == [0.5, 0.0]  # gripper_index None: every dimension is blended


# ------------------------------------------------------------------------------------ the schedule
def run(schedule: ChunkSchedule, periods: range) -> list[float | None]:
    out = []
    for k in periods:
        taken = schedule.take(at(k))
        out.append(None if taken is None else round(float(taken[1][0]), 6))
    return out


def test_overlap_none_switches_to_the_newer_chunk() -> None:
    s = ChunkSchedule(P, BlendConfig(BLEND_NONE))
    s.add(chunk(0, [0, 1, 2, 3]))
    assert run(s, range(0, 2)) == [0, 1]
    s.add(chunk(2, [10, 11, 12, 13]))  # arrives in time: starts at its own first action
    assert run(s, range(2, 7)) == [10, 11, 12, 13, None]


def test_overlap_ensemble_and_crossfade_figures() -> None:
    ens = ChunkSchedule(P, BlendConfig(BLEND_ENSEMBLE, decay=0.0))
    ens.add(chunk(0, [0, 1, 2, 3]))
    run(ens, range(0, 2))
    ens.add(chunk(2, [10, 11, 12, 13]))
    assert run(ens, range(2, 6)) == [6.0, 7.0, 12, 13]  # (2+10)/2, (3+11)/2, then the newer alone

    fade = ChunkSchedule(P, BlendConfig(BLEND_CROSSFADE))
    fade.add(chunk(0, [0, 1, 2, 3]))
    run(fade, range(0, 2))
    fade.add(chunk(2, [10, 11, 12, 13]))
    # two shared periods (2 and 3): weights 1/3 and 2/3 for the newer chunk, then 1
    expected = [2 + (10 - 2) / 3, 3 + 2 * (11 - 3) / 3, 12, 13]
    assert run(fade, range(2, 6)) == pytest.approx(expected)


def test_late_chunk_skips_its_stale_prefix() -> None:
    s = ChunkSchedule(P, BlendConfig(BLEND_ENSEMBLE, decay=0.0))
    s.add(chunk(0, [0, 1, 2, 3, 4, 5]))
    run(s, range(0, 4))
    s.add(chunk(1, [10, 11, 12, 13, 14, 15]))  # computed from period 1, arrives at period 4
    taken = s.take(at(4))
    assert taken is not None and taken[0] == 3  # its actions for periods 1..3 have passed
    assert taken[1][0] == pytest.approx((4 + 13) / 2)


def test_early_chunk_waits_for_its_first_period_and_the_current_one_runs_on() -> None:
    s = ChunkSchedule(P, BlendConfig(BLEND_NONE))
    s.add(chunk(0, [0, 1, 2, 3]))
    s.add(chunk(5, [20, 21]))  # stamped in the future
    assert run(s, range(0, 7)) == [0, 1, 2, 3, None, 20, 21]


def test_stale_chunk_is_ignored_and_a_wholly_past_one_changes_nothing() -> None:
    s = ChunkSchedule(P)
    s.add(chunk(3, [0, 1, 2, 3]))
    assert not s.add(chunk(1, [9, 9]))  # older than the newest held: out of order
    assert s.current.stamp_ns == at(3)
    run(s, range(3, 5))
    assert s.add(chunk(3, [0, 1, 2, 3]))  # re-sent: what ran of it stays executed
    assert run(s, range(3, 5)) == [None, None]
    s.add(chunk(4, [7]))  # only an action for period 4, which has passed
    assert run(s, range(5, 8)) == [2, 3, None]


def test_another_action_space_replaces_everything_held() -> None:
    s = ChunkSchedule(P, BlendConfig(BLEND_ENSEMBLE))
    s.add(chunk(0, [0, 1, 2, 3]))
    s.add(chunk(1, [5, 5, 5], space="y"))
    assert [c.action_space for c in s.chunks] == ["y"]


def test_single_chunks_in_sequence_run_exactly_as_produced() -> None:
    """Lock-step, synchronous: chunks follow each other without overlap; every blending gives the same."""
    for mode in (BLEND_NONE, BLEND_ENSEMBLE, BLEND_CROSSFADE):
        s = ChunkSchedule(P, BlendConfig(mode))
        out = []
        for start in (0, 3, 6):
            s.add(chunk(start, [start + 0.1, start + 0.2, start + 0.3]))
            out += run(s, range(start, start + 3))
        assert out == pytest.approx([k + d for k in (0, 3, 6) for d in (0.1, 0.2, 0.3)]), mode


# ------------------------------------------------------------------------------------ through the filter
def test_blended_action_goes_through_kinematics_and_the_safety_filter() -> None:
    kin = ArmKinematics()
    safety = SafetyFilter(SafetyLimits(period_s=0.1), kinematics=ArmKinematics(kin.model))
    core = ControlCore(
        safety, lockstep=True, command_timeout_s=0.3, start_mode=MODE_POLICY, kinematics=kin,
        blending=BlendConfig(BLEND_ENSEMBLE, decay=0.0),
    )  # fmt: skip
    home, fingers = np.array(robot.HOME_Q), np.array([0.04, 0.04])
    old = np.zeros((4, 7))
    old[:, 0], old[:, 6] = 0.004, 1.0
    new = np.zeros((4, 7))
    new[:, 1], new[:, 6] = 0.004, -1.0
    core.on_joint_state(0, home, fingers, 0.0)
    core.on_chunk(MODE_POLICY, 0, old, "ee_delta")
    first = core.cycle(0.0)
    core.on_joint_state(P, first.arm, fingers, 0.1)
    assert core.on_chunk(MODE_POLICY, P, new, "ee_delta")
    assert not core.on_chunk(MODE_POLICY, 0, old, "ee_delta") and core.counters["chunks_stale"] == 1
    second = core.cycle(0.1)
    blended = np.array([0.002, 0.002, 0, 0, 0, 0, -1.0])
    arm, finger = action_targets(ArmKinematics(kin.model), first.arm, fingers, blended, "ee_delta", 0.1)
    np.testing.assert_allclose(second.arm, arm, atol=1e-12)
    assert second.finger == finger_position(-1.0) == finger
