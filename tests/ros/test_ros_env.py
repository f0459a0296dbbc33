"""RosEnv (env backend `ros`) over real FastDDS: two sim_node instances, each in its own namespace.

It must be the in-process VectorEnv moved behind topics: the same episodes bit for bit (observations, rewards,
early ends, step counts, infos), the same rollouts through svrl_trainer's unchanged `collect`, and the same
fault model (a killed instance's episode leaves the batch as lost; bad input is refused before anything runs,
and the sim refuses it too and holds its state).
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

IMAGE_SIZE = 32
K = 8  # actions per chunk
EASY = "goal/press_button"  # the expert presses it in 27 steps (mid-chunk); horizon 50 (mid-chunk too)


def _expert_chunks(task: str, init_state, chunks: int) -> np.ndarray:
    """The scripted expert's actions for one episode, run open-loop on a local SimEnv, padded to `chunks`."""
    from svrl_sim.env import SimEnv

    env = SimEnv(image_size=16, action_space="ee_delta")
    try:
        env.reset(task, init_state, render=False)
        actions = []
        while env.episode_running and len(actions) < chunks * K:
            action = env.expert_action()
            actions.append(action)
            env.step(action, render=False)
        assert env.success(), "the expert must solve the easy task: the test needs a mid-chunk success"
    finally:
        env.close()
    out = np.zeros((chunks * K, 7))
    out[: len(actions)] = actions
    return out.reshape(chunks, K, 7)


def _same_obs(a: dict, b: dict) -> None:
    assert a["instruction"] == b["instruction"]
    np.testing.assert_array_equal(a["proprio"], b["proprio"])
    assert sorted(a.get("images", {})) == sorted(b.get("images", {}))
    for cam in a.get("images", {}):
        np.testing.assert_array_equal(a["images"][cam], b["images"][cam])


def _same_step(a: tuple, b: tuple) -> None:
    _same_obs(a[0], b[0])
    for x, y in zip(a[1:4], b[1:4], strict=True):
        np.testing.assert_array_equal(x, y)
    assert a[4] == b[4]  # infos: task, init_state, step, executed_steps, success, active


def _debug_policy():
    import torch

    from svrl_policy.codec import ActionCodec
    from svrl_policy.config import get_preset
    from svrl_policy.policy import Policy

    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = get_preset("debug", chunk_len=4, image_size=IMAGE_SIZE, augment_shift=0)
    codec = ActionCodec(
        low=np.r_[[-0.02] * 6, -1.0], high=np.r_[[0.02] * 6, 1.0], chunk_len=4, gripper_index=6
    )
    return Policy(config, codec).eval()


def test_ros_env_reproduces_the_vector_env_exactly(ros_env) -> None:
    from svrl_sim.tasks import InitState
    from svrl_trainer.catalog import make_env
    from svrl_trainer.rollout import EpisodeSpec, collect

    episodes = [(EASY, InitState("train", 0)), (EASY, InitState("train", 1))]
    solved = _expert_chunks(*episodes[0], chunks=4)  # success at step 27: inside chunk 4
    still = np.random.default_rng(0).uniform(-1e-3, 1e-3, (7, K, 7))  # reaches the horizon (50) in chunk 7
    local = make_env("sim", 2, image_size=IMAGE_SIZE, num_workers=2)
    ros = make_env("ros", 2, image_size=IMAGE_SIZE, timeout_s=60.0)
    try:
        assert ros.namespaces == ["/env_0", "/env_1"]
        expected, got = local.reset(episodes), ros.reset(episodes)
        _same_obs(expected[0], got[0])
        assert got[1] == expected[1]  # infos: task, init_state, step 0, success False
        active = np.ones(2, bool)
        ends = {}
        for chunk in range(8):
            actions = np.zeros((2, K, 7))
            actions[0] = solved[min(chunk, 3)]
            actions[1] = still[min(chunk, 6)]
            mask = active.copy()
            if chunk == 1:
                mask[1] = False  # an inactive env is not stepped and reports executed_steps 0
            if not mask.any():
                break
            expected = local.step_chunk(actions, mask)
            got = ros.step_chunk(actions, mask)
            _same_step(expected, got)
            for i in np.flatnonzero(mask & (got[2] | got[3])):
                ends[int(i)] = (chunk, got[4][i]["step"], bool(got[2][i]), got[4][i]["executed_steps"])
                active[i] = False
        # the cases the comparison had to cover: a success and a time limit, both inside a chunk
        assert ends == {0: (3, 27, True, 3), 1: (7, 50, False, 2)}

        # one env alone (env_ids), then svrl_trainer's own rollout on both, unchanged: the same batch
        _same_obs(local.reset([episodes[1]], env_ids=[1])[0], ros.reset([episodes[1]], env_ids=[1])[0])
        policy = _debug_policy()
        specs = [
            EpisodeSpec(EASY, InitState("train", 2)),
            EpisodeSpec("goal/open_drawer", InitState("train", 3)),
        ]
        # pipelined (the sim steps in a background thread) on both sides: the policy's batch is then the same
        a = collect(policy, local, specs, temperature=1.0, max_chunks=3, seed=7, pipeline=True)
        b = collect(policy, ros, specs, temperature=1.0, max_chunks=3, seed=7, pipeline=True)
        assert b.finish_steps.tolist() == a.finish_steps.tolist() == [12, 12]
        for name in ("proprio", "tokens", "old_log_probs", "num_chunks", "success", "worker_failed"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        for cam in a.images:
            np.testing.assert_array_equal(a.images[cam], b.images[cam])
    finally:
        ros.close()
        local.close()
    assert ros.instance_pids == [None, None]  # close() stopped what it spawned


def test_ros_env_faults(ros_env) -> None:
    from svrl_sim.tasks import InitState
    from svrl_sim.vector_env import WorkerFailedWarning
    from svrl_trainer.catalog import make_env

    with pytest.raises(ValueError, match="no option"):
        make_env("ros", 2, image_size=IMAGE_SIZE, namespace=["a", "b"])  # refused before anything starts
    env = make_env("ros", 2, image_size=IMAGE_SIZE, timeout_s=60.0)
    try:
        episodes = [(EASY, InitState("train", 0)), (EASY, InitState("train", 1))]
        env.reset(episodes)
        chunk = np.full((2, K, 7), 1e-3)
        _, _, _, _, infos = env.step_chunk(chunk)
        assert [i["step"] for i in infos] == [K, K]

        # bad input, refused here before any instance is touched: the running episodes go on untouched
        with pytest.raises(KeyError, match="no_such_task"):
            env.reset([("goal/no_such_task", InitState("train", 0)), episodes[1]])
        with pytest.raises(IndexError):
            env.reset([(EASY, InitState("train", 10**6)), episodes[1]])
        nan = chunk.copy()
        nan[1, 3, 2] = np.nan
        with pytest.raises(ValueError, match=r"env\(s\) \[1\] contain NaN"):
            env.step_chunk(nan)
        _, _, _, _, infos = env.step_chunk(chunk)
        assert [i["step"] for i in infos] == [2 * K, 2 * K]

        # the same bad input sent straight to a sim: refused there too, and the sim holds its state
        from svrl_interfaces.srv import ResetEpisode

        before = env._instances[1].stamp_ns
        answers, lost = env._call({1: ("step", env._chunk_request(1, nan[1], render=False))})
        assert not lost and not answers[1].success and "non_finite" in answers[1].message
        assert answers[1].episode_step == 2 * K and _ns(answers[1].sim_time) == before
        stale = env._chunk_request(1, chunk[1], render=False)
        stale.state_stamp.sec -= 1
        answers, _ = env._call({1: ("step", stale)})
        assert not answers[1].success and "stale_stamp" in answers[1].message
        answers, _ = env._call({1: ("reset", ResetEpisode.Request(task="goal/nope", split="train"))})
        assert not answers[1].success and "unknown task" in answers[1].message
        _, _, _, _, infos = env.step_chunk(chunk)
        assert [i["step"] for i in infos] == [3 * K, 3 * K] and env._instances[1].stamp_ns > before

        # something else steps instance 1 behind RosEnv's back: RosEnv's next chunk for it carries a stamp
        # that is no longer the sim's, the sim refuses it, and the episode is lost; the instance stays up
        answers, _ = env._call({1: ("step", env._chunk_request(1, chunk[1], render=False))})
        assert answers[1].success
        with pytest.warns(WorkerFailedWarning, match="stale_stamp"):
            _, _, terminated, _, infos = env.step_chunk(chunk)
        assert infos[1]["worker_failed"] and terminated[1] and infos[0]["step"] == 4 * K
        alive = env.instance_pids[1]
        env.reset(episodes)
        assert alive is not None and env.instance_pids[1] == alive  # not restarted

        # an instance killed mid-episode: its episode leaves the batch (lost, not failed); the other goes on
        _, _, _, _, infos = env.step_chunk(chunk)
        assert [i["step"] for i in infos] == [K, K]
        dead = env.instance_pids[1]
        os.kill(dead, signal.SIGKILL)
        with pytest.warns(WorkerFailedWarning, match="/env_1"):
            _, rewards, terminated, _, infos = env.step_chunk(chunk)
        assert infos[1]["worker_failed"] and terminated[1] and rewards[1] == 0 and not infos[1]["success"]
        assert infos[0]["executed_steps"] == K and not infos[0].get("worker_failed")
        with pytest.raises(RuntimeError, match="no running episode"):
            env.step_chunk(chunk)  # env 1's episode ended with its instance (the rollout drops it)
        _, _, _, _, infos = env.step_chunk(chunk, np.array([True, False]))
        assert infos[0]["step"] == 3 * K and infos[1] == {"executed_steps": 0, "active": False}

        # the next reset restarts the spawned instance: the batch is whole again
        _, infos = env.reset(episodes)
        assert env.instance_pids[1] not in (None, dead) and not any(i.get("worker_failed") for i in infos)
        _, _, _, _, infos = env.step_chunk(chunk)
        assert [i["step"] for i in infos] == [K, K]
    finally:
        env.close()


def test_ros_env_attaches_to_running_instances(processes, tmp_path) -> None:
    """spawn=False: instances started elsewhere (a launch file, an Isaac Sim bridge), still starting when
    RosEnv comes; one that vanishes is lost after timeout_s and reported lost again after each reset."""
    from svrl_sim.tasks import InitState
    from svrl_sim.vector_env import WorkerFailedWarning
    from svrl_trainer.catalog import make_env

    node = processes.start_python(
        "-m", "svrl_ros.sim_node", "--ros-args", "-r", "__ns:=/sim_a", "-r", "/clock:=/sim_a/clock",
        "-p", f"image_size:={IMAGE_SIZE}", "-p", "use_sim_time:=true", log=tmp_path / "sim_a.log",
    )  # fmt: skip
    env = make_env("ros", 1, image_size=IMAGE_SIZE, spawn=False, namespaces=["sim_a"], timeout_s=3.0)
    try:
        assert env.instance_pids == [None]  # nothing of RosEnv's own
        _, infos = env.reset([(EASY, InitState("eval", 4))])
        assert infos[0]["init_state"] == InitState("eval", 4)
        _, _, _, _, infos = env.step_chunk(np.zeros((1, K, 7)))
        assert infos[0]["step"] == K
        node.kill()
        node.wait()
        with pytest.warns(WorkerFailedWarning, match=r"/sim_a did not answer within 3 s"):
            _, _, terminated, _, infos = env.step_chunk(np.zeros((1, K, 7)))
        assert infos[0]["worker_failed"] and terminated[0]
        _, infos = env.reset([(EASY, InitState("eval", 4))])  # looked for again, still gone
        assert infos == [{"worker_failed": True}]
        assert env.step_chunk(np.zeros((1, K, 7)))[4][0]["worker_failed"]
    finally:
        env.close()


def _ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def test_env_options_come_from_the_train_config(tmp_path) -> None:
    """`env.options` reaches make_env as keyword options; a resume compares them like any other key."""
    from svrl_trainer.catalog import make_env
    from svrl_trainer.config import (
        TrainConfig,
        TrainConfigError,
        config_to_dict,
        load_train_config,
        resume_config_diff,
    )

    path = tmp_path / "run.yaml"
    path.write_text("env:\n  backend: ros\n  options:\n    namespaces: [sim_a, sim_b]\n    spawn: false\n")
    config = load_train_config(path, {"env.options.timeout_s": 5})
    assert config.env.options == {"namespaces": ["sim_a", "sim_b"], "spawn": False, "timeout_s": 5}
    stored = config_to_dict(config)
    assert resume_config_diff(stored, config) == []
    changed = load_train_config(path, {"env.options.spawn": True})
    assert resume_config_diff(stored, changed) == [
        "env.options.spawn: run False, now True",
        "env.options.timeout_s: run 5, now '<absent>'",
    ]
    before_options = config_to_dict(TrainConfig())  # a run saved before env.options existed
    del before_options["env"]["options"]
    assert resume_config_diff(before_options, TrainConfig()) == []
    with pytest.raises(TrainConfigError, match=r"env\.options"):
        load_train_config(path, {"env.options": "spawn"})
    with pytest.raises(ValueError, match="takes no options"):
        make_env("sim", 1, image_size=IMAGE_SIZE, spawn=False)
