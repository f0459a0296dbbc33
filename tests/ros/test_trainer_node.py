"""trainer_node: `svrl train` as a ROS 2 node. It reports progress on /diagnostics and announces every checkpoint
on svrl/checkpoint (latched) with the id and interface fingerprint of the files it wrote; a bad config ends it
at once with one line and exit code 2.

The run is GRPO on the toy PointReach backend with a tiny debug policy, two steps, a checkpoint each: seconds.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from svrl_ros.checkpoint_guard import read_interface
from svrl_ros.training_progress import ERROR, OK, WARN, TrainingProgress

from tests.conftest import REPO_ROOT, ProcessGroup
from tests.ros.graph_harness import log_tail, wait_until
from tests.ros.trainer_harness import TrainerProbe

TOTAL_STEPS = 2


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random debug policy for PointReach and a two-step GRPO config that checkpoints every step."""
    import torch

    from svrl_policy.codec import ActionCodec
    from svrl_policy.config import get_preset
    from svrl_policy.policy import Policy

    root = tmp_path_factory.mktemp("trainer_node")
    torch.manual_seed(0)
    config = get_preset("debug", chunk_len=4, image_size=32, augment_shift=0, num_bins=16)
    codec = ActionCodec(
        low=np.r_[[-0.1] * 6, -1.0], high=np.r_[[0.1] * 6, 1.0], chunk_len=4, gripper_index=6, num_bins=16
    )
    Policy(config, codec).save_pretrained(root / "init")
    raw = {
        "init_checkpoint": str(root / "init"),
        "out_dir": str(root / "run"),
        "total_steps": TOTAL_STEPS,
        "env": {"backend": "toy", "tasks": ["toy"], "num_envs": 16, "image_size": 32},
        "grpo": {"group_size": 4, "groups_per_batch": 2, "max_sampling_rounds": 1, "dynamic_sampling": False,
                 "temperature": 1.0},
        "optim": {"lr": 3e-3, "mini_batches": 1, "micro_batch_steps": 64},
        "eval": {"every": 0},
        "checkpoint": {"every": 1, "keep_last": 3},
    }  # fmt: skip
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    return root


# ---------------------------------------------------------------------------------------------- no DDS
def test_progress_levels_and_values() -> None:
    progress = TrainingProgress("runs/x", 10, "ros")
    level, message, values = progress.status()
    assert (level, values["state"]) == (OK, "starting") and "building" in message
    progress.started(0)
    progress.on_step(
        {"step": 1, "rollout/sampled_success": 0.25, "rollout/lost_episodes": 0, "train/updated": 1}
    )
    level, message, values = progress.status()
    assert level == OK and values["step"] == "1" and values["sampled_success"] == "0.2500"
    progress.on_step({"step": 2, "rollout/lost_episodes": 3, "train/updated": 1})
    level, message, _ = progress.status()
    assert level == WARN and "3 episode(s) lost" in message
    progress.on_step({"step": 3, "rollout/lost_episodes": 0, "train/updated": 0})
    assert progress.status()[0] == WARN and "no update" in progress.status()[1]
    progress.failed("boom")
    level, message, values = progress.status()
    assert level == ERROR and "boom" in message and values["state"] == "failed"


def test_progress_announces_what_is_on_disk(toy_run: Path, tmp_path: Path) -> None:
    import shutil

    step_dir = tmp_path / "checkpoints" / "step_000007"
    shutil.copytree(toy_run / "init", step_dir / "policy")
    progress = TrainingProgress(tmp_path, 10, "toy")
    announcement = progress.on_checkpoint(step_dir, {"step": 7, "eval/success": 0.5})
    interface = read_interface(toy_run / "init")
    assert announcement.step == 7 and Path(announcement.path) == (step_dir / "policy").resolve()
    assert announcement.codec_fingerprint == interface.fingerprint
    assert announcement.checkpoint_id.startswith("step_000007/policy@")
    assert announcement.checkpoint_id.split("@")[1] == interface.checkpoint_id.split("@")[1]
    values = progress.status()[2]
    assert values["eval_success"] == "0.5000" and values["last_checkpoint_id"] == announcement.checkpoint_id


# ---------------------------------------------------------------------------------------------- over DDS
def _start_trainer(
    processes: ProcessGroup, toy_run: Path, tmp_path: Path, *params: str
) -> tuple[subprocess.Popen, Path, Path]:
    """trainer_node on the toy config, its run folder in tmp_path, `params` (`name:=value`) added; the process,
    its log and its run folder."""
    log = tmp_path / "trainer_node.log"
    run_dir = tmp_path / "run"
    extra = [arg for param in params for arg in ("-p", param)]
    node = processes.start_python(
        "-m", "svrl_ros.trainer_node", "--ros-args",
        "-p", f"config:={toy_run / 'config.yaml'}", "-p", f"out_dir:={run_dir}", *extra,
        log=log,
    )  # fmt: skip
    return node, log, run_dir


@pytest.mark.ros
@pytest.mark.timeout(180)
def test_trainer_node_reports_progress_and_announces_each_checkpoint(
    toy_run: Path, processes: ProcessGroup, tmp_path: Path
) -> None:
    node, log, run_dir = _start_trainer(
        processes, toy_run, tmp_path, "overrides:=[seed=1]", "diagnostics_period_s:=0.2"
    )
    probe = TrainerProbe("trainer_probe")
    late = None
    try:
        finished = lambda: probe.in_state("finished") or node.poll() is not None  # noqa: E731
        wait_until(finished, 150, "training to finish", log)
        assert node.poll() is None, f"trainer_node exited with {node.returncode}{log_tail(log)}"
        with probe.lock:
            statuses, announcements = list(probe.statuses), list(probe.announcements)
        level, message, values = statuses[-1]
        assert level == OK and values["step"] == str(TOTAL_STEPS) and values["checkpoints_announced"] == "2"
        assert values["backend"] == "toy" and values["run_dir"] == str(run_dir)
        assert message == f"training finished at step {TOTAL_STEPS} of {TOTAL_STEPS}"
        assert any(s[2]["state"] == "training" and "sampled_success" in s[2] for s in statuses)

        assert [a.step for a in announcements] == [1, 2]  # the node was up long before its first step
        assert announcements[-1].checkpoint_id == values["last_checkpoint_id"]
        init = read_interface(toy_run / "init")
        for announced in announcements:
            assert Path(announced.path) == run_dir / "checkpoints" / f"step_{announced.step:06d}" / "policy"
            on_disk = read_interface(announced.path)
            assert announced.checkpoint_id == on_disk.checkpoint_id
            # GRPO changed the weights, not the interface: a policy_server serving `init` accepts it
            assert announced.codec_fingerprint == on_disk.fingerprint == init.fingerprint
            assert announced.action_space == "ee_delta" and announced.run_dir == str(run_dir)
            assert on_disk.checkpoint_id != init.checkpoint_id

        # latched: a subscriber that comes after the run still hears the newest checkpoint
        late = TrainerProbe("late_probe")
        wait_until(lambda: late.announcements, 30, "the latched announcement", log)
        assert late.announcements[-1].checkpoint_id == announcements[-1].checkpoint_id
        assert node.poll() is None  # exit_when_done is off: it serves until stopped
    finally:
        probe.close()
        if late is not None:
            late.close()
    processes.stop()
    assert node.returncode == 0, log_tail(log)


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_bad_config_or_absent_sims_end_the_node_with_one_line(
    toy_run: Path, ros_env: dict[str, str], tmp_path: Path
) -> None:
    config = ["-p", f"config:={toy_run / 'config.yaml'}", "-p", f"out_dir:={tmp_path / 'run'}"]
    no_sims = (
        '[env.backend=ros, env.num_envs=1, "env.tasks=[goal/press_button]",'
        ' "env.options={namespaces: [nowhere], spawn: false, start_timeout_s: 2}"]'
    )
    cases = [
        (2, "bad configuration: parameter config: ", ["-p", f"config:={tmp_path / 'missing.yaml'}"]),
        (2, "bad configuration: grpo.group_size=1", [*config, "-p", "overrides:=[grpo.group_size=1]"]),
        # a fault, not a config error: the simulator instances do not answer
        (1, "cannot start: InstanceLostError: sim instances ['/nowhere'] do not answer",
         [*config, "-p", f"overrides:={no_sims}"]),
    ]  # fmt: skip
    for code, expected, args in cases:
        run = subprocess.run(
            [sys.executable, "-m", "svrl_ros.trainer_node", "--ros-args", *args],
            env=ros_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=100,
        )  # fmt: skip
        output = run.stdout + run.stderr
        assert run.returncode == code and expected in output, f"{expected}: {run.returncode}\n{output}"
        assert "Traceback" not in output, output


@pytest.mark.ros
@pytest.mark.timeout(180)
def test_ctrl_c_mid_training_ends_the_run_cleanly(
    toy_run: Path, processes: ProcessGroup, tmp_path: Path
) -> None:
    """As `svrl train`: Ctrl-C stops the run between two writes, exit code 0, the last checkpoint complete."""
    node, log, run_dir = _start_trainer(processes, toy_run, tmp_path, "overrides:=[total_steps=100000]")
    wait_until(lambda: "checkpoint of step 2 announced" in log.read_text() or node.poll() is not None, 150,
               "two checkpoints", log)  # fmt: skip
    assert node.poll() is None, log_tail(log)
    node.send_signal(signal.SIGINT)
    assert node.wait(timeout=60) == 0, log_tail(log)
    text = log.read_text()
    assert "Traceback" not in text and "training failed" not in text, log_tail(log)
    from svrl_trainer.train import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    assert (
        latest is not None
        and read_interface(latest / "policy").fingerprint == read_interface(toy_run / "init").fingerprint
    )
