"""SimEnv behaviour: observation contract, reward/termination, chunked steps, reproducibility, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from svrl_sim.constants import CAMERAS, PROPRIO_DIM
from svrl_sim.tasks import InitState, UnknownTaskError, all_tasks

from .conftest import IMAGE_SIZE


def test_observation_follows_the_contract(env) -> None:
    obs, info = env.reset("goal/put_red_cube_on_plate", InitState("eval", 0))
    assert set(obs) == {"images", "proprio", "instruction"}
    assert set(obs["images"]) == set(CAMERAS)
    for img in obs["images"].values():
        assert img.dtype == np.uint8 and img.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert img.std() > 0  # not a blank frame
    p = obs["proprio"]
    assert p.dtype == np.float32 and p.shape == (PROPRIO_DIM,)
    assert p[7] == pytest.approx(1.0)  # gripper starts open
    assert np.linalg.norm(p[11:15]) == pytest.approx(1.0, abs=1e-5) and p[11] >= 0  # unit quaternion, w >= 0
    assert 0.1 < p[10] < 0.4  # tool above the table
    assert obs["instruction"] == "put the red cube on the plate"
    assert info["step"] == 0 and info["success"] is False


def test_images_only_when_asked(env) -> None:
    obs, _ = env.reset("goal/press_button", InitState("eval", 0), render=False)
    assert "images" not in obs
    obs, *_ = env.step(np.zeros(7), render=False)
    assert "images" not in obs
    obs, *_ = env.step(np.zeros(7), render=True)
    assert set(obs["images"]) == set(CAMERAS)


def test_success_predicate_is_false_at_reset_for_every_task(env) -> None:
    for task in all_tasks():
        for split, index in (("eval", 0), ("eval", 49), ("train", 0), ("train", 199)):
            env.reset(task.name, InitState(split, index), render=False)
            assert not env.success(), (task.name, split, index)


def test_reward_is_one_exactly_on_the_success_step(env) -> None:
    env.reset("goal/press_button", InitState("eval", 3), render=False)
    rewards, terminated = [], False
    while not terminated:
        _, reward, terminated, truncated, info = env.step(env.expert_action(), render=False)
        rewards.append(reward)
        assert not truncated
    assert rewards[-1] == 1.0 and sum(rewards) == 1.0 and info["success"]
    with pytest.raises(RuntimeError, match="ended"):
        env.step(np.zeros(7))


def test_time_limit_truncates(env) -> None:
    _obs, _ = env.reset("goal/press_button", InitState("eval", 0), render=False)
    max_steps = env.task.max_steps
    hold = np.zeros(7)
    steps = 0
    truncated = False
    while not truncated:
        _, reward, terminated, truncated, info = env.step(hold, render=False)
        steps += 1
        assert not terminated and reward == 0.0
    assert steps == max_steps == info["step"]


def test_step_chunk_runs_k_steps_and_stops_at_success(env) -> None:
    # Record the expert step by step, then replay its actions open loop as ONE long chunk with extra
    # actions at the end: the env is deterministic, so the chunk must stop exactly where the expert succeeded.
    env.reset("goal/open_drawer", InitState("eval", 1), render=False)
    actions, terminated = [], False
    while not terminated:
        actions.append(env.expert_action())
        _, _, terminated, truncated, info = env.step(actions[-1], render=False)
        assert not truncated
    length = info["step"]
    env.reset("goal/open_drawer", InitState("eval", 1))
    obs, reward, terminated, truncated, info = env.step_chunk(np.zeros((8, 7)))
    assert info["executed_steps"] == 8 and info["step"] == 8 and not (terminated or truncated)
    assert "images" in obs
    env.reset("goal/open_drawer", InitState("eval", 1))
    padded = np.concatenate([np.stack(actions), np.zeros((20, 7))])
    obs, reward, terminated, truncated, info = env.step_chunk(padded)
    assert terminated and reward == 1.0 and info["executed_steps"] == length
    assert set(obs["images"]) == set(CAMERAS)


def test_step_chunk_stops_early_on_the_time_limit(env) -> None:
    env.reset("goal/press_button", InitState("eval", 0), render=False)
    limit = env.task.max_steps
    _, _, _, truncated, info = env.step_chunk(np.zeros((limit + 20, 7)), render=False)
    assert truncated and info["executed_steps"] == limit


@pytest.mark.parametrize(
    "action, message",
    [
        (np.full(7, np.nan), "NaN or inf"),
        (np.array([0, 0, np.inf, 0, 0, 0, 1.0]), "NaN or inf"),
        (np.zeros(6), r"shape \[7\]"),
        (np.zeros((1, 7)), r"shape \[7\]"),
        ("forward", "not numeric"),
    ],
)
def test_bad_actions_raise_and_leave_the_env_usable(env, action, message) -> None:
    env.reset("goal/put_red_cube_on_plate", InitState("eval", 2), render=False)
    env.step(np.zeros(7), render=False)
    before = env.data.qpos.copy(), env.data.time, env.step_count
    with pytest.raises(ValueError, match=message):
        env.step(action)
    assert (
        np.array_equal(env.data.qpos, before[0])
        and env.data.time == before[1]
        and env.step_count == before[2]
    )
    _, _, _terminated, _truncated, info = env.step(np.zeros(7), render=False)  # still usable
    assert info["step"] == before[2] + 1


def test_bad_chunks_raise_before_any_step(env) -> None:
    env.reset("goal/put_red_cube_on_plate", InitState("eval", 2), render=False)
    chunk = np.zeros((5, 7))
    chunk[3, 0] = np.nan  # a NaN late in the chunk: nothing of the chunk may run
    with pytest.raises(ValueError, match=r"index \[3, 0\]"):
        env.step_chunk(chunk)
    assert env.step_count == 0 and env.data.time == 0.0
    with pytest.raises(ValueError, match=r"shape \[K, 7\]"):
        env.step_chunk(np.zeros((0, 7)))


def test_bad_reset_arguments_raise_and_leave_the_env_usable(env) -> None:
    env.reset("goal/open_drawer", InitState("eval", 0), render=False)
    with pytest.raises(UnknownTaskError, match="did you mean"):
        env.reset("goal/open_drawr", InitState("eval", 0))
    with pytest.raises(IndexError, match="out of range"):
        env.reset("goal/open_drawer", InitState("train", 200))
    assert env.task.name == "goal/open_drawer" and env.episode_running
    env.step(np.zeros(7), render=False)


def test_constructor_rejects_bad_settings() -> None:
    from svrl_sim.env import SimEnv

    with pytest.raises(ValueError, match="action_space"):
        SimEnv(image_size=32, action_space="torque")
    with pytest.raises(ValueError, match="control_hz"):
        SimEnv(image_size=32, control_hz=7)
    with pytest.raises(ValueError, match="image_size"):
        SimEnv(image_size=8)
    with pytest.raises(ValueError, match="cameras"):
        SimEnv(image_size=32, cameras=("side",))


def test_step_before_reset_is_a_clear_error() -> None:
    from svrl_sim.env import SimEnv

    with pytest.raises(RuntimeError, match="reset"):
        SimEnv(image_size=32).step(np.zeros(7))


def _rollout(env, task: str, index: int, actions: np.ndarray) -> tuple[dict, list[np.ndarray]]:
    obs, _ = env.reset(task, InitState("eval", index))
    first = {c: obs["images"][c].copy() for c in CAMERAS}
    trace = [obs["proprio"]]
    for a in actions:
        obs, *_ = env.step(a, render=False)
        trace.append(obs["proprio"])
    trace.append(env.data.qpos.copy())
    return first, trace


def test_reset_is_reproducible_whatever_ran_before(env) -> None:
    from svrl_sim.env import SimEnv

    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (25, 7)) * np.array([0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1.0])
    # dirty the shared env with another task first (different objects, drawer moved)
    env.reset("pretrain/close_drawer", InitState("train", 5))
    for _ in range(10):
        env.step(env.expert_action(), render=False)
    first_a, trace_a = _rollout(env, "goal/stack_red_cube_on_green_cube", 4, actions)
    fresh = SimEnv(image_size=IMAGE_SIZE)
    first_b, trace_b = _rollout(fresh, "goal/stack_red_cube_on_green_cube", 4, actions)
    for c in CAMERAS:
        assert np.array_equal(first_a[c], first_b[c]), c
    for a, b in zip(trace_a, trace_b, strict=True):
        assert np.array_equal(a, b)


def test_joint_position_actions_work_with_the_expert() -> None:
    from svrl_sim.env import SimEnv

    env = SimEnv(image_size=32, action_space="joint_pos")
    env.reset("goal/put_red_cube_on_plate", InitState("train", 0), render=False)
    terminated = truncated = False
    while not (terminated or truncated):
        action = env.expert_action()
        assert action.shape == (8,)
        _, _, terminated, truncated, _ = env.step(action, render=False)
    assert terminated


def test_a_faster_control_rate_keeps_the_time_limit_in_seconds() -> None:
    from svrl_sim.env import SimEnv

    env = SimEnv(image_size=32, control_hz=20)
    env.reset("goal/press_button", InitState("train", 4), render=False)
    assert env.n_substeps == 25 and env.max_steps == 2 * env.task.max_steps
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(env.expert_action(), render=False)
    assert terminated


def test_joint_targets_are_clamped_to_the_urdf_limits() -> None:
    from svrl_sim import robot
    from svrl_sim.env import SimEnv

    env = SimEnv(image_size=32, action_space="joint_pos")
    env.reset("goal/press_button", InitState("eval", 0), render=False)
    lower, upper, _ = robot.arm_limits()
    env.step(np.concatenate([upper + 5.0, [1.0]]), render=False)  # far beyond the limits
    target = env.data.ctrl[env.index.arm_act]
    assert np.all(target <= upper) and np.all(target >= lower)
