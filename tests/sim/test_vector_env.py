"""VectorEnv: same frames in every worker, batched chunked steps, survives a killed worker, never hangs."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from svrl_sim.constants import CAMERAS, PROPRIO_DIM
from svrl_sim.tasks import InitState
from svrl_sim.vector_env import VectorEnv, WorkerFailedWarning

SIZE = 40
TASK = "goal/put_red_cube_on_plate"


@pytest.fixture(scope="module")
def venv():
    with VectorEnv(4, num_workers=2, image_size=SIZE, timeout_s=60) as v:
        yield v


def test_same_init_state_gives_identical_frames_in_every_worker(venv) -> None:
    from svrl_sim.env import SimEnv

    obs, _infos = venv.reset([(TASK, InitState("eval", 5))] * 4)
    assert venv._owner[0] != venv._owner[3]  # envs 0 and 3 live in different workers
    for c in CAMERAS:
        frames = obs["images"][c]
        assert frames.shape == (4, SIZE, SIZE, 3) and frames.dtype == np.uint8
        for i in range(1, 4):
            assert np.array_equal(frames[0], frames[i]), (c, i)
    assert np.array_equal(obs["proprio"][0], obs["proprio"][3])
    # ... and identical to an env in this process
    local, _ = SimEnv(image_size=SIZE).reset(TASK, InitState("eval", 5))
    for c in CAMERAS:
        assert np.array_equal(local["images"][c], obs["images"][c][2])
    assert np.array_equal(local["proprio"], obs["proprio"][2])


def test_batched_chunk_step_and_active_mask(venv) -> None:
    obs, _ = venv.reset([(TASK, InitState("eval", i)) for i in range(4)])
    assert (
        obs["proprio"].shape == (4, PROPRIO_DIM)
        and obs["instruction"] == ["put the red cube on the plate"] * 4
    )
    actions = np.zeros((4, 5, 7))
    actions[1] = np.nan  # inactive rows are ignored, whatever they hold
    active = np.array([True, False, True, True])
    before = obs["images"]["main"][1].copy()
    obs, rewards, terminated, truncated, infos = venv.step_chunk(actions, active)
    assert [i["executed_steps"] for i in infos] == [5, 0, 5, 5]
    assert rewards.shape == terminated.shape == truncated.shape == (4,)
    assert np.array_equal(obs["images"]["main"][1], before)
    obs, *_ = venv.step_chunk(np.zeros((4, 2, 7)), render=False)
    assert "images" not in obs


def test_identical_actions_give_identical_trajectories_across_workers(venv) -> None:
    venv.reset([(TASK, InitState("train", 9))] * 4)
    rng = np.random.default_rng(3)
    for _ in range(4):
        chunk = rng.uniform(-1, 1, (1, 4, 7)) * np.array([0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1.0])
        obs, *_ = venv.step_chunk(np.repeat(chunk, 4, axis=0))
    for c in CAMERAS:
        assert all(np.array_equal(obs["images"][c][0], obs["images"][c][i]) for i in range(4))
    assert all(np.array_equal(obs["proprio"][0], obs["proprio"][i]) for i in range(4))


def test_bad_inputs_raise_in_the_parent_and_leave_it_usable(venv) -> None:
    venv.reset([(TASK, InitState("eval", 0))] * 4)
    with pytest.raises(ValueError, match="NaN or inf"):
        venv.step_chunk(np.full((4, 2, 7), np.nan))
    with pytest.raises(ValueError, match="shape"):
        venv.step_chunk(np.zeros((3, 2, 7)))
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros((4, 6)))
    with pytest.raises(KeyError, match="did you mean"):
        venv.reset([("goal/put_red_cube_on_plat", InitState("eval", 0))] * 4)
    with pytest.raises(IndexError):
        venv.reset([(TASK, InitState("eval", 99))] * 4)
    with pytest.raises(ValueError, match="pairs"):
        venv.reset([(TASK, InitState("eval", 0))] * 3)
    _obs, _rewards, *_, infos = venv.step_chunk(np.zeros((4, 2, 7)))
    assert [i["executed_steps"] for i in infos] == [2, 2, 2, 2]


def test_stepping_a_finished_env_is_refused(venv) -> None:
    venv.reset([("goal/press_button", InitState("eval", 0))] * 4)
    _, _, _, truncated, _ = venv.step_chunk(np.zeros((4, 60, 7)), render=False)  # past the 50-step limit
    assert truncated.all()
    with pytest.raises(RuntimeError, match="no running episode"):
        venv.step_chunk(np.zeros((4, 1, 7)))
    venv.step_chunk(np.zeros((4, 1, 7)), active_mask=np.zeros(4, bool))  # nothing active: fine


def test_a_killed_worker_is_replaced_and_its_episodes_fail(venv) -> None:
    venv.reset([(TASK, InitState("eval", i)) for i in range(4)])
    victim = venv.worker_pids[1]
    os.kill(victim, signal.SIGKILL)
    time.sleep(0.1)
    with pytest.warns(WorkerFailedWarning, match="worker 1"):
        _obs, rewards, terminated, _truncated, infos = venv.step_chunk(np.zeros((4, 3, 7)))
    lost = venv._workers[1].env_ids
    for i in range(4):
        if i in lost:
            assert terminated[i] and rewards[i] == 0.0 and infos[i]["worker_failed"]
        else:
            assert not terminated[i] and infos[i]["executed_steps"] == 3
    assert venv.worker_pids[1] != victim
    # the replacement works: reset and step everything again
    venv.reset([(TASK, InitState("eval", i)) for i in range(4)])
    _, _, _, _, infos = venv.step_chunk(np.zeros((4, 2, 7)))
    assert [i["executed_steps"] for i in infos] == [2, 2, 2, 2]


def test_auto_reset_restarts_finished_episodes() -> None:
    with VectorEnv(2, num_workers=1, image_size=32, auto_reset=True) as v:
        obs, _ = v.reset([("goal/press_button", InitState("eval", 0))] * 2)
        first = obs["proprio"].copy()
        obs, _rewards, _terminated, truncated, infos = v.step_chunk(np.zeros((2, 60, 7)))
        assert truncated.all() and all(i.get("auto_reset") for i in infos)
        assert np.array_equal(obs["proprio"], first)  # back at the start of the same init state
        v.step_chunk(np.zeros((2, 1, 7)))  # and running again


def test_close_stops_every_worker() -> None:
    v = VectorEnv(2, num_workers=2, image_size=32)
    pids = v.worker_pids
    v.close()
    v.close()  # idempotent
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        v.step(np.zeros((2, 7)))


def test_a_hung_worker_times_out_instead_of_hanging() -> None:
    with VectorEnv(1, num_workers=1, image_size=32, timeout_s=2.0) as v:
        v.reset([(TASK, InitState("eval", 0))])
        os.kill(v.worker_pids[0], signal.SIGSTOP)  # frozen, not dead
        with pytest.warns(WorkerFailedWarning, match="did not answer"):
            _, _, terminated, _, infos = v.step_chunk(np.zeros((1, 1, 7)))
        assert terminated[0] and infos[0]["worker_failed"]


def test_a_worker_killed_before_reset_is_replaced_and_the_reset_completes(venv) -> None:
    os.kill(venv.worker_pids[0], signal.SIGKILL)
    time.sleep(0.1)
    with pytest.warns(WorkerFailedWarning, match="worker 0"):
        obs, _ = venv.reset([(TASK, InitState("eval", 8))] * 4)
    for c in CAMERAS:  # the new worker renders exactly what the old one would have
        assert np.array_equal(obs["images"][c][0], obs["images"][c][3])
    _, _, _, _, infos = venv.step_chunk(np.zeros((4, 1, 7)))
    assert [i["executed_steps"] for i in infos] == [1, 1, 1, 1]
