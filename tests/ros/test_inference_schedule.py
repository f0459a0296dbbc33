"""When policy_server starts the next inference (svrl_ros.inference_schedule), and the takeover end of a goal."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from svrl_interfaces.action import ExecuteInstruction
from svrl_ros.goal_context import GoalContext, GoalEnded
from svrl_ros.inference_schedule import (
    LatencyWindow,
    lead_steps,
    steps_run_on,
    steps_to_episode_end,
    trigger_step,
)

P = 100_000_000


def test_lead_covers_the_slowest_recent_inference_plus_one_step() -> None:
    assert lead_steps([0.02, 0.25, 0.11], 0.1, 8) == 4  # ceil(2.5) + 1
    assert lead_steps([0.3], 0.1, 8) == 4  # exactly three periods: ceil(3.0) + 1, no float surprise
    assert lead_steps([0.001], 0.1, 8) == 2
    assert lead_steps([], 0.1, 8) == 4  # nothing measured yet: half the chunk


def test_lead_is_clamped_to_the_chunk_and_a_given_lead_wins() -> None:
    assert lead_steps([5.0], 0.1, 8) == 7  # slower than the chunk: start after its first step
    assert lead_steps([0.25], 0.1, 8, configured=2) == 2
    assert lead_steps([], 0.1, 8, configured=50) == 7
    assert lead_steps([], 0.1, 1) == 1 and trigger_step(1, 1) == 1  # one-step chunks cannot overlap
    with pytest.raises(ValueError):
        lead_steps([], 0.0, 8)
    with pytest.raises(ValueError):
        lead_steps([], 0.1, 8, configured=-1)


def test_trigger_waits_for_at_least_one_step() -> None:
    assert trigger_step(8, 3) == 5
    assert trigger_step(8, 8) == 1  # never two chunks from the same observation
    assert trigger_step(3, 7) == 1


def test_steps_run_on_counts_only_what_the_previous_chunk_executed() -> None:
    start = 10 * P
    # counted up to period 15; the next observation is at 17; the previous chunk ends at 18
    assert steps_run_on(start + 8 * P, start + 5 * P, start + 7 * P, P) == 2
    # the observation is past the previous chunk's end: the arm held after it, those periods do not count
    assert steps_run_on(start + 8 * P, start + 5 * P, start + 11 * P, P) == 3
    assert steps_run_on(start + 8 * P, start + 5 * P, start + 5 * P, P) == 0


def test_the_episode_ends_at_the_first_state_the_sim_called_done_not_at_the_newest() -> None:
    """CI once counted 111 steps for a 110-step episode: the sim ran on one action before the server looked."""
    chunk = 104 * P
    assert steps_to_episode_end(chunk, [110 * P, 111 * P], P, 8) == 6
    assert steps_to_episode_end(chunk, [111 * P, 110 * P], P, 8) == 6  # arrival order does not matter
    assert steps_to_episode_end(chunk, [120 * P], P, 8) == 8  # never more than the chunk
    assert steps_to_episode_end(chunk, [chunk], P, 8) == 0
    with pytest.raises(ValueError):
        steps_to_episode_end(chunk, [], P, 8)


def test_latency_window_keeps_the_recent_finite_values() -> None:
    window = LatencyWindow(size=3)
    for value in (0.1, math.nan, -1.0, 0.2, 0.3, 0.4):
        window.add(value)
    assert window.values() == [0.2, 0.3, 0.4]


def _ctx(**kw) -> GoalContext:
    handle = SimpleNamespace(is_cancel_requested=False)
    return GoalContext(
        handle=handle, instruction="x", generation=1, max_steps=10, timeout_s=0, poll_s=0.01, **kw
    )


def test_takeover_ends_the_goal_with_its_reason() -> None:
    ctx = _ctx()
    ctx.check()
    ctx.taken_over = "teleop"
    assert ctx.stop_requested()
    with pytest.raises(GoalEnded) as ended:
        ctx.check()
    assert ended.value.reason == ExecuteInstruction.Result.REASON_TAKEOVER == "takeover"
    assert "'teleop' mode" in ended.value.message and not ended.value.success
    ctx.estopped = True  # the e-stop is the stronger reason
    with pytest.raises(GoalEnded) as ended:
        ctx.check()
    assert ended.value.reason == ExecuteInstruction.Result.REASON_ESTOP
