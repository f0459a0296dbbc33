"""The GRPO trainer end to end on the toy PointReach suite: it runs, logs, evaluates on held-out
states only, checkpoints atomically, and a resumed run reproduces the uninterrupted one exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from svrl_policy.policy import Policy
from svrl_trainer.config import TrainConfigError, load_train_config
from svrl_trainer.train import GrpoTrainer, latest_checkpoint

from .conftest import CHUNK


def _config(tmp_path: Path, init: Path, **top) -> Path:
    raw = {
        "init_checkpoint": str(init),
        "out_dir": str(tmp_path / "run"),
        "total_steps": 3,
        "seed": 7,
        "env": {"backend": "toy", "tasks": ["toy"], "num_envs": 32, "image_size": 32},
        "grpo": {"group_size": 8, "groups_per_batch": 4, "max_sampling_rounds": 2},
        "optim": {"lr": 1e-3, "mini_batches": 2, "micro_batch_steps": 16},
        "eval": {"every": 2, "episodes_per_task": 4, "before_training": True},
        "checkpoint": {"every": 1, "keep_last": 2},
        **top,
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(config_path: Path, resume: bool = False, **overrides) -> list[dict]:
    trainer = GrpoTrainer(load_train_config(config_path, overrides), resume=resume)
    try:
        return trainer.train()
    finally:
        trainer.close()


def _steps(history: list[dict]) -> dict[int, dict]:
    return {m["step"]: m for m in history if "train/updated" in m}


def test_train_logs_evaluates_and_keeps_last_checkpoints(tmp_path, init_checkpoint) -> None:
    history = _run(_config(tmp_path, init_checkpoint))
    run = tmp_path / "run"
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2, 3]
    assert "eval/success" in lines[0] and "eval/success" in lines[2]
    for m in _steps(history).values():
        assert 0.0 <= m["rollout/sampled_success"] <= 1.0
        if m["train/updated"]:
            assert np.isfinite(m["train/loss"]) and m["train/trajectories"] % 8 == 0
            # 2 cameras x 32x32x3 uint8 + 15 float32 proprio + 2 x 28 tokens (int64 + float32)
            assert m["memory/bytes_per_policy_step"] == 2 * 32 * 32 * 3 + 15 * 4 + 28 * 8 + 28 * 4
    eval_report = json.loads((run / "eval_step_000000" / "eval.json").read_text())
    assert eval_report["episodes"] == 4 * 4 and (run / "eval_step_000000" / "eval.png").stat().st_size > 0
    assert (run / "learning_curve.png").stat().st_size > 0
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["step_000002", "step_000003"]
    assert latest_checkpoint(run).name == "step_000003"


def test_resume_reproduces_the_uninterrupted_run(tmp_path, init_checkpoint) -> None:
    straight = _steps(_run(_config(tmp_path / "a", init_checkpoint), **{"eval.every": 0}))
    config_b = _config(tmp_path / "b", init_checkpoint)
    _run(config_b, total_steps=2, **{"eval.every": 0})
    # a kill during a later checkpoint write leaves a temporary folder, never a half checkpoint
    (tmp_path / "b" / "run" / "checkpoints" / ".step_000003.tmp-123").mkdir()
    resumed = _steps(_run(config_b, resume=True, **{"eval.every": 0}))
    assert set(resumed) == {1, 2, 3}
    for key in ("rollout/sampled_success", "train/loss", "train/clip_fraction", "train/approx_kl"):
        assert resumed[3][key] == straight[3][key], key


def test_unknown_config_key_names_the_closest(tmp_path, init_checkpoint) -> None:
    path = _config(tmp_path, init_checkpoint)
    with pytest.raises(TrainConfigError, match=r"'grpo.temprature' \(did you mean 'grpo.temperature'\?\)"):
        load_train_config(path, {"grpo.temprature": 1.0})
    with pytest.raises(TrainConfigError, match="group_size"):
        load_train_config(path, {"grpo.group_size": 1})


@pytest.mark.parametrize("name", ["tiny", "paper"])
def test_shipped_configs_load_with_the_paper_algorithm(name: str) -> None:
    config = load_train_config(
        Path(__file__).resolve().parents[2] / "svrl_trainer" / "configs" / f"{name}.yaml"
    )
    g = config.grpo
    assert (g.group_size, g.clip_ratio_low, g.clip_ratio_high) == (8, 0.2, 0.28)
    assert g.temperature == (1.6 if name == "paper" else 1.0)  # tiny: see the comment in tiny.yaml
    assert (g.kl_coef, g.entropy_coef, g.dynamic_sampling) == (0.0, 0.0, True)
    assert (g.accuracy_lower, g.accuracy_upper, config.optim.grad_clip) == (0.1, 0.9, 1.0)


def test_time_budget_ends_the_run_like_its_last_step(tmp_path, init_checkpoint) -> None:
    """A run out of training time still evaluates and checkpoints, then stops: `svrl bench learn`'s budget."""
    history = _run(_config(tmp_path, init_checkpoint), total_steps=50, time_budget_minutes=1e-9)
    assert [m["step"] for m in history] == [0, 1]
    assert "eval/success" in history[1] and history[1]["time/training_s"] > 0
    assert latest_checkpoint(tmp_path / "run").name == "step_000001"


def test_eval_videos_show_the_counted_episodes(tmp_path, init_checkpoint) -> None:
    """One GIF per episode, one frame per chunk, named with the outcome the evaluation counted."""
    from PIL import Image

    from svrl_trainer.catalog import resolve_tasks
    from svrl_trainer.evaluate import evaluate
    from svrl_trainer.rollout_engine import make_rollout_engine
    from svrl_trainer.videos import record_eval_videos

    policy = Policy.from_pretrained(init_checkpoint)
    tasks = resolve_tasks("toy", ["toy"])
    engine = make_rollout_engine("local", policy, backend="toy", num_envs=8, image_size=32, num_workers=None)
    try:
        report = evaluate(engine, tasks, episodes_per_task=2, chunk_length=CHUNK)
        videos = record_eval_videos(engine, tasks, per_task=2, chunk_length=CHUNK, out_dir=tmp_path)
    finally:
        engine.close()
    assert len(videos) == 8 and sorted(videos) == sorted(tmp_path.glob("*.gif"))
    for result in report.tasks:
        named = [v for v in videos if v.name.startswith(result.task.replace("/", "__"))]
        assert sum(v.stem.endswith("_success") for v in named) == result.successes
    with Image.open(videos[0]) as gif:
        assert gif.size == (2 * 32, 32) and 1 <= gif.n_frames <= 2  # two cameras side by side; <= 2 chunks


def test_paper_config_scales_out_like_simplevla_rl() -> None:
    config = load_train_config(
        Path(__file__).resolve().parents[2] / "svrl_trainer" / "configs" / "paper.yaml"
    )
    assert (config.rollout.backend, config.learner.strategy) == ("ray", "fsdp")
    assert (config.grpo.groups_per_batch * config.grpo.group_size, config.optim.lr) == (512, 5e-6)


def test_sigkill_mid_run_then_resume_matches_the_straight_run(tmp_path, init_checkpoint) -> None:
    """`svrl train` killed with SIGKILL at a random moment resumes from its last complete checkpoint;
    the steps after it, and the logs, are those of the run that was never interrupted."""
    import signal
    import subprocess
    import sys
    import time

    steps = 6
    straight = _steps(_run(_config(tmp_path / "a", init_checkpoint), total_steps=steps))
    config = _config(tmp_path / "b", init_checkpoint, total_steps=steps)
    command = [sys.executable, "-m", "svrl.cli", "train", "--config", str(config)]
    run_dir = tmp_path / "b" / "run"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while latest_checkpoint(run_dir) is None or latest_checkpoint(run_dir).name < "step_000002":
            assert process.poll() is None and time.monotonic() < deadline, "run ended before the kill"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    killed_at = int(latest_checkpoint(run_dir).name.split("_")[1])
    assert killed_at < steps
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(steps + 1))  # no step logged twice
    for step in range(killed_at + 1, steps + 1):
        got = next(m for m in lines if m["step"] == step)
        for key in ("rollout/sampled_success", "train/loss", "train/clip_fraction", "train/grad_norm"):
            assert got.get(key) == straight[step].get(key), (step, key)


def test_config_values_are_typed_as_people_write_them(tmp_path, init_checkpoint) -> None:
    """`--set optim.lr=5e-5` reaches YAML as the string '5e-5' (YAML 1.1 wants a dot); it is a number."""
    path = _config(tmp_path, init_checkpoint)
    config = load_train_config(path, {"optim.lr": "5e-5", "time_budget_minutes": 2, "env.num_workers": None})
    assert config.optim.lr == 5e-5 and isinstance(config.time_budget_minutes, float)
    with pytest.raises(TrainConfigError, match=r"optim\.lr: expected a number, got 'fast'"):
        load_train_config(path, {"optim.lr": "fast"})
    with pytest.raises(TrainConfigError, match="total_steps: expected an integer"):
        load_train_config(path, {"total_steps": 2.5})
    with pytest.raises(TrainConfigError, match=r"grpo\.dynamic_sampling: expected true or false"):
        load_train_config(path, {"grpo.dynamic_sampling": "maybe"})


def test_train_states_per_task_limits_what_grpo_draws_from(tmp_path, init_checkpoint) -> None:
    """`env.train_states_per_task`: GRPO's groups start only from each task's first N training states."""
    path = _config(tmp_path, init_checkpoint)
    trainer = GrpoTrainer(load_train_config(path, {"env.train_states_per_task": 3}))
    try:
        assert [len(t.train_states) for t in trainer.tasks] == trainer.schedule.states_per_task
        assert set(trainer.schedule.states_per_task) == {3}
        assert trainer.train_step()["step"] == 1
    finally:
        trainer.close()
    with pytest.raises(TrainConfigError, match="train_states_per_task"):
        load_train_config(path, {"env.train_states_per_task": -1})
    with pytest.raises(ValueError, match="fewer training states"):
        GrpoTrainer(load_train_config(path, {"env.train_states_per_task": 10**6}))
