"""The `sim_training` profile: N sim_node instances (namespaces /env_i, lock-step, a clock each) + trainer_node
training through RosEnv attached to them. It parses with instances and trainer options that agree, the launch
file starts the same nodes, and `svrl up --profile sim_training` runs a GRPO step over DDS and announces its
checkpoint (a one-step run of a random policy: what is checked is the plumbing, not learning).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from svrl_ros.checkpoint_guard import read_interface
from svrl_ros.stack import load_profile, node_command, params_file_content
from svrl_ros.trainer_node import parse_overrides

from tests.conftest import ProcessGroup
from tests.ros.graph_harness import log_tail, wait_until
from tests.ros.test_launch_profile import _nodes, launch_module  # noqa: F401 - the launch stand-ins fixture
from tests.ros.trainer_harness import TrainerProbe

PROFILE = "sim_training"


def _trainer_env(profile: Any) -> dict[str, Any]:
    """The env settings trainer_node's overrides give the train config."""
    (trainer,) = [n for n in profile.nodes if n.executable == "trainer_node"]
    overrides = parse_overrides(trainer.parameters["overrides"])
    return {key.removeprefix("env."): value for key, value in overrides.items() if key.startswith("env.")}


def test_instances_agree_with_the_trainer_options() -> None:
    profile = load_profile(PROFILE)
    sims = [n for n in profile.nodes if n.executable == "sim_node"]
    env = _trainer_env(profile)
    assert env["backend"] == "ros" and env["options"]["spawn"] is False
    assert len(sims) == env["num_envs"] >= 2
    assert [n.namespace for n in sims] == env["options"]["namespaces"]
    for node in sims:
        assert node.parameters["timing"] == "lockstep"
        assert node.parameters["image_size"] == env["image_size"]
        assert node.remappings == {"/clock": f"/{node.namespace}/clock"}  # one clock per instance
        command = node_command(node, Path("p.yaml"))
        assert f"__ns:=/{node.namespace}" in command and f"/clock:=/{node.namespace}/clock" in command
        (qualified,) = yaml.safe_load(params_file_content(profile, node))
        assert qualified == f"/{node.namespace}/sim_node"


def test_launch_file_starts_the_instances_and_the_trainer(launch_module) -> None:  # noqa: F811
    profile = load_profile(PROFILE)
    nodes = _nodes(launch_module, profile=PROFILE)
    started = [(n.kwargs["namespace"], n.kwargs["name"], n.kwargs["executable"]) for n in nodes]
    assert started == [("env_0", "sim_node", "sim_node"), ("env_1", "sim_node", "sim_node"),
                       ("", "trainer_node", "trainer_node")]  # fmt: skip
    for node, spec in zip(nodes, profile.nodes, strict=True):
        assert node.kwargs["remappings"] == list(spec.remappings.items())
        assert node.kwargs["parameters"][-1] == {**spec.parameters, "use_sim_time": False}
    trainer = nodes[-1].kwargs["parameters"][-1]
    assert trainer["config"] == "tiny" and "env.backend=ros" in trainer["overrides"]


@pytest.fixture(scope="module")
def one_step_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GRPO step of a random debug policy on press_button (50 steps), a checkpoint after it."""
    import torch
    from svrl_ros.calm_policy import calm_policy_checkpoint

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sim_training")
    init = calm_policy_checkpoint(root, seed=0, export=False, name="init")
    raw = {
        "init_checkpoint": str(init),
        "total_steps": 1,
        "env": {"tasks": ["goal/press_button"]},
        "grpo": {"group_size": 2, "groups_per_batch": 1, "max_sampling_rounds": 1, "dynamic_sampling": False,
                 "temperature": 1.0},
        "optim": {"mini_batches": 1, "micro_batch_steps": 64},
        "eval": {"every": 0},
        "checkpoint": {"every": 1},
    }  # fmt: skip
    (root / "config.yaml").write_text(yaml.safe_dump(raw))
    return root


@pytest.mark.ros
@pytest.mark.timeout(240)
def test_svrl_up_sim_training_trains_over_the_instances(
    one_step_config: Path, processes: ProcessGroup, tmp_path: Path
) -> None:
    log = tmp_path / "svrl_up.log"
    run_dir = tmp_path / "run"
    stack = processes.start_python(
        "-m", "svrl.cli", "up", "--profile", PROFILE,
        "--set", f"trainer_node.config={one_step_config / 'config.yaml'}",
        "--set", f"trainer_node.out_dir={run_dir}",
        log=log,
    )  # fmt: skip
    listener = TrainerProbe("sim_training_probe")
    try:
        finished = lambda: listener.in_state("finished", "failed")  # noqa: E731
        wait_until(lambda: finished() or stack.poll() is not None, 200, "the training step", log)
        assert stack.poll() is None, f"svrl up ended with {stack.returncode}{log_tail(log)}"
        _level, message, final = finished()[-1]
        assert final["state"] == "finished", f"{message} {final}{log_tail(log)}"
        assert final["backend"] == "ros" and final["step"] == "1" and final["lost_episodes"] == "0"
        wait_until(lambda: listener.announcements, 30, "the checkpoint announcement", log)
        (announced,) = listener.announcements
        assert (
            announced.step == 1 and Path(announced.path) == run_dir / "checkpoints" / "step_000001" / "policy"
        )
        assert announced.codec_fingerprint == read_interface(one_step_config / "init").fingerprint
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert metrics[-1]["step"] == 1 and metrics[-1]["rollout/sampled_groups"] == 1
        text = log.read_text()
        assert "[sim_env_0]" in text and "[sim_env_1]" in text and "[trainer_node]" in text
    finally:
        listener.close()
    stack.send_signal(signal.SIGINT)
    assert stack.wait(timeout=60) == 0, log_tail(log)
