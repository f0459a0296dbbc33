"""Training runs that can be trusted: a dead simulator worker loses its episode (never a failure in GRPO
or in an evaluation), a non-finite loss never reaches the weights, and a run folder belongs to one run.

The worker death is simulated by a fake vector env that reports what `svrl_sim.vector_env.VectorEnv`
reports for the episodes of a worker it had to replace mid-chunk: terminated, reward 0,
executed_steps 0 and info["worker_failed"] = True."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from svrl_trainer.config import ResumeConfigError, config_to_dict, load_train_config, resume_config_diff
from svrl_trainer.train import GrpoTrainer, RunExistsError

from .conftest import CHUNK
from .test_grpo_trainer import _config


class WorkerDeathEnv:
    """Wraps the toy env; on the first chunk of every wave the episodes in `lost_slots` die with their worker."""

    def __init__(self, inner: Any, lost_slots: tuple[int, ...]) -> None:
        self.inner = inner
        self.num_envs = inner.num_envs
        self.lost_slots = lost_slots
        self._first_chunk = False

    def reset(self, episodes):
        self._first_chunk = True
        return self.inner.reset(episodes)

    def step_chunk(self, actions: np.ndarray, active: np.ndarray):
        obs, rewards, terminated, truncated, infos = self.inner.step_chunk(actions, active)
        if self._first_chunk:
            for i in self.lost_slots:
                if active[i]:
                    # VectorEnv's report for an episode lost with its worker (see VectorEnv.step_chunk)
                    rewards[i], terminated[i], truncated[i] = 0.0, True, False
                    infos[i] = {"worker_failed": True, "executed_steps": 0, "success": False, "active": True}
        self._first_chunk = False
        return obs, rewards, terminated, truncated, infos

    def close(self) -> None:
        self.inner.close()


def _trainer(tmp_path: Path, init: Path, overrides: dict | None = None, **top) -> GrpoTrainer:
    return GrpoTrainer(load_train_config(_config(tmp_path, init, **top), overrides or {}))


def _weights(trainer: GrpoTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.policy.model.state_dict().items()}


# ------------------------------------------------------------------ lost episodes
def test_lost_episodes_leave_the_batch_and_are_reported(tmp_path, init_checkpoint) -> None:
    trainer = _trainer(tmp_path, init_checkpoint, {"grpo.dynamic_sampling": False})
    try:
        trainer.rollout.env = WorkerDeathEnv(trainer.rollout.env, lost_slots=(0, 1, 9))
        batch, metrics, _ = trainer._collect_batch()
    finally:
        trainer.close()
    # 4 groups x 8 = 32 episodes = one wave of 32 envs: slots 0, 1 (group 0) and 9 (group 1) are lost
    assert metrics["rollout/lost_episodes"] == 3
    assert batch is not None and not batch.worker_failed.any()
    sizes = dict(zip(*np.unique(batch.group_ids, return_counts=True), strict=True))
    assert sizes == {0: 6, 1: 7, 2: 8, 3: 8}
    # sampled success counts completed episodes only
    assert metrics["rollout/sampled_success"] == pytest.approx(batch.success.mean())


def test_a_group_left_with_one_episode_is_dropped(tmp_path, init_checkpoint) -> None:
    """A z-score needs two outcomes: a group that lost 7 of its 8 episodes carries no advantage."""
    trainer = _trainer(tmp_path, init_checkpoint, {"grpo.dynamic_sampling": False})
    try:
        trainer.rollout.env = WorkerDeathEnv(trainer.rollout.env, lost_slots=tuple(range(1, 8)))
        batch, metrics, _ = trainer._collect_batch()
    finally:
        trainer.close()
    # round 1: group 0 keeps one episode and is dropped; round 2 (ids 4-7, group 4 likewise) fills the batch
    assert (metrics["rollout/lost_episodes"], metrics["rollout/sampling_rounds"]) == (14, 2)
    assert sorted(set(batch.group_ids.tolist())) == [1, 2, 3, 5] and batch.size == 32


def test_evaluation_counts_only_completed_episodes(tmp_path, init_checkpoint) -> None:
    from svrl_policy.policy import Policy
    from svrl_trainer.catalog import resolve_tasks
    from svrl_trainer.evaluate import evaluate
    from svrl_trainer.rollout_engine import make_rollout_engine

    policy = Policy.from_pretrained(init_checkpoint)
    tasks = resolve_tasks("toy", ["toy"])
    engine = make_rollout_engine("local", policy, backend="toy", num_envs=8, image_size=32, num_workers=None)
    try:
        clean = evaluate(engine, tasks, episodes_per_task=4, chunk_length=CHUNK)
        lost_slots = (0, 5)  # each wave of 8 = two tasks x 4 states: task A's 1st and task B's 2nd state
        engine.env = WorkerDeathEnv(engine.env, lost_slots=lost_slots)
        report = evaluate(engine, tasks, episodes_per_task=4, chunk_length=CHUNK)
    finally:
        engine.close()
    assert (report.episodes, report.lost, clean.lost) == (16 - 4, 4, 0)
    assert report.to_dict()["lost_episodes"] == 4 and "lost" in report.markdown()
    for got, full in zip(report.tasks, clean.tasks, strict=True):
        assert (got.episodes, got.lost) == (3, 1)
        # greedy and deterministic: the completed episodes are exactly the clean run's minus the lost one
        assert full.successes - 1 <= got.successes <= full.successes


# ------------------------------------------------------------------ non-finite updates
def test_non_finite_loss_skips_the_step_and_training_continues(tmp_path, init_checkpoint, caplog) -> None:
    trainer = _trainer(
        tmp_path, init_checkpoint, {"grpo.dynamic_sampling": False, "eval.every": 0, "checkpoint.every": 0}
    )
    collect = trainer.rollout.collect

    def poisoned(*args, **kwargs):
        batch = collect(*args, **kwargs)
        if trainer.step == 0:  # the first step's batch: one NaN log-prob per trajectory
            batch.old_log_probs[:, 0, 0] = np.nan
        return batch

    trainer.rollout.collect = poisoned
    try:
        before = _weights(trainer)
        with caplog.at_level(logging.WARNING, logger="svrl_trainer"):
            first = trainer.train_step()
        after_first = _weights(trainer)
        second = trainer.train_step()
        after_second = _weights(trainer)
    finally:
        trainer.close()
    assert first["train/skipped_steps"] == 2 and first["train/optimizer_steps"] == 0
    assert first["train/updated"] == 0 and "loss is nan" in first["train/skip_reason"]
    assert any("skipped" in r.message and "nan" in r.getMessage() for r in caplog.records)
    assert all(torch.equal(before[k], after_first[k]) for k in before)  # the weights were not touched
    assert not trainer.optimizer.state or all(
        torch.isfinite(t).all()
        for st in trainer.optimizer.state.values()
        for t in st.values()
        if torch.is_tensor(t)
    )
    assert second["train/skipped_steps"] == 0 and second["train/optimizer_steps"] == 2
    assert any(not torch.equal(after_first[k], after_second[k]) for k in before)  # training went on
    assert all(torch.isfinite(v).all() for v in after_second.values())


# ------------------------------------------------------------------ the run folder
def test_a_run_folder_holding_another_run_needs_resume_or_overwrite(
    tmp_path, init_checkpoint, caplog
) -> None:
    small = {"total_steps": 1, "eval.every": 0, "checkpoint.every": 1}
    config = _config(tmp_path, init_checkpoint)
    run = tmp_path / "run"
    GrpoTrainer(load_train_config(config, small)).close()  # nothing written yet: not a run
    first = GrpoTrainer(load_train_config(config, small))
    try:
        first.train()
    finally:
        first.close()
    (run / "notes.txt").write_text("mine")  # not the trainer's: --overwrite must leave it
    with pytest.raises(RunExistsError, match=r"--resume to continue it, --overwrite to replace it"):
        GrpoTrainer(load_train_config(config, small))
    with pytest.raises(ValueError, match="contradict"):
        GrpoTrainer(load_train_config(config, small), resume=True, overwrite=True)
    with caplog.at_level(logging.WARNING, logger="svrl_trainer"):
        again = GrpoTrainer(load_train_config(config, small), overwrite=True)
    again.close()
    assert any("--overwrite: removing the previous run" in r.getMessage() for r in caplog.records)
    assert not (run / "checkpoints").exists() and (run / "notes.txt").read_text() == "mine"
    assert not (run / "metrics.jsonl").exists() and not list(run.glob("eval_step_*"))


def test_resume_refuses_a_changed_config_and_lists_the_keys(tmp_path, init_checkpoint) -> None:
    small = {"total_steps": 1, "eval.every": 0, "checkpoint.every": 1}
    config = _config(tmp_path, init_checkpoint)
    trainer = GrpoTrainer(load_train_config(config, small))
    try:
        trainer.train()
    finally:
        trainer.close()
    changed = {**small, "grpo.temperature": 0.7, "optim.lr": 0.5}
    with pytest.raises(ResumeConfigError) as error:
        GrpoTrainer(load_train_config(config, changed), resume=True)
    message = str(error.value)
    assert "grpo.temperature: run 1.6, now 0.7" in message and "optim.lr: run 0.001, now 0.5" in message
    # longer run, other evaluation and checkpoint cadence: a legitimate resume
    longer = {"total_steps": 2, "eval.every": 1, "checkpoint.every": 2}
    resumed = GrpoTrainer(load_train_config(config, longer), resume=True)
    try:
        assert resumed.step == 1
    finally:
        resumed.close()


def test_a_run_saved_before_a_key_existed_compares_it_as_its_default(tmp_path, init_checkpoint) -> None:
    config = load_train_config(_config(tmp_path, init_checkpoint))
    stored = json.loads(json.dumps(config_to_dict(config)))
    del stored["env"]["init_state_schedule"], stored["grpo"]["oversample"]
    assert resume_config_diff(stored, config) == []
    stored["env"]["tasks"] = ["toy/reach_red"]
    assert resume_config_diff(stored, config) == ["env.tasks: run ['toy/reach_red'], now ['toy']"]


def test_cli_refusal_is_a_message_and_exit_code_2(tmp_path, init_checkpoint) -> None:
    from svrl_trainer.cli_train import console, run_train

    config = _config(tmp_path, init_checkpoint)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    with console.capture() as captured:
        code = run_train(str(config), resume=False, overrides={})
    assert code == 2 and "--overwrite" in captured.get()
