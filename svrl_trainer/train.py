"""`svrl train`: GRPO on a policy, SimpleVLA-RL's loop, resumable at any step.

    step = collect valid groups (dynamic sampling) -> group advantages -> clipped update
           -> log -> (evaluate) -> (checkpoint)

A run directory belongs to one run: `svrl train` into a folder holding another run refuses unless told
`--resume` (continue it; the config must match, see config.RESUMABLE_KEYS) or `--overwrite` (clear it).

Training only ever samples each task's *training* initial states; evaluation only its *evaluation*
states. A run directory holds: config.yaml, metrics.jsonl (one line per step), TensorBoard events,
checkpoints/step_NNNNNN/ (policy + optimizer + RNG + counters) and eval_step_NNNNNN/ reports.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from svrl_trainer.atomic import save_figure_atomic, write_text_atomic
from svrl_trainer.catalog import TaskRef, limit_train_states, resolve_tasks
from svrl_trainer.config import TrainConfig, check_resume_config, config_to_dict
from svrl_trainer.distributed import (
    full_state_dict,
    init_from_env,
    load_optimizer_state,
    optimizer_state,
    wrap_learner,
)
from svrl_trainer.evaluate import EvalReport, evaluate
from svrl_trainer.grpo import GrpoLossConfig, group_advantages, keep_groups
from svrl_trainer.init_schedule import InitStateSchedule
from svrl_trainer.rollout import EpisodeSpec, TrajectoryBatch, max_chunks_for
from svrl_trainer.rollout_engine import make_rollout_engine
from svrl_trainer.rollout_policy import recompute_old_log_probs
from svrl_trainer.run_state import (
    COMPLETE_MARKER,
    STATE_JSON,
    load_run_state,
    restore_rng,
    rng_state,
    save_run_state,
    write_atomically,
)
from svrl_trainer.update import UpdateConfig, grpo_update
from svrl_trainer.videos import record_eval_videos

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"
# What a run writes into its folder; their presence means the folder holds a run. (`tb/` alone does not:
# it is created as soon as a trainer is built, and a fresh start purges its old events anyway.)
RUN_FILES = ("config.yaml", "metrics.jsonl", CHECKPOINT_DIR, "learning_curve.png")


class RunExistsError(ValueError):
    """The run folder holds another run and neither --resume nor --overwrite was given."""


class GrpoTrainer:
    def __init__(self, config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> None:
        from svrl_policy.policy import Policy

        self.config = config
        self.out_dir = Path(config.out_dir)
        self.dist = init_from_env()  # rank 0 of 1 unless started by torchrun
        torch.set_num_threads(config.threads)
        self.tasks: list[TaskRef] = limit_train_states(
            resolve_tasks(config.env.backend, config.env.tasks), config.env.train_states_per_task
        )
        self.numpy_rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        self.step = 0
        self.training_s = 0.0  # rollout + update time of all steps so far, across resumes
        self.history: list[dict[str, Any]] = []

        latest = prepare_run_dir(
            self.out_dir, config, resume=resume, overwrite=overwrite, is_main=self.dist.is_main
        )
        if resume and latest is None:
            log.warning(
                "--resume: no complete checkpoint in %s; starting from the initial policy", self.out_dir
            )
        self.schedule = InitStateSchedule(
            [len(t.train_states) for t in self.tasks],
            config.env.init_state_schedule,
            config.env.init_state_explore,
        )
        source = latest / "policy" if latest else Path(config.init_checkpoint)
        if not config.init_checkpoint and latest is None:
            raise ValueError("init_checkpoint is empty: GRPO starts from an SFT checkpoint (see `svrl sft`)")
        self.policy = Policy.from_pretrained(source).to(self.dist.device())
        self.policy.eval()
        self.policy.freeze_auxiliary_head()  # a pretraining-only head: GRPO trains the actions
        # FSDP shards the learner's weights; rank 0 rolls out and checkpoints from a full copy
        fsdp = self.dist.enabled and config.learner.strategy == "fsdp"
        self.rollout_policy = (
            Policy.from_pretrained(source).eval() if fsdp and self.dist.is_main else self.policy
        )
        self.learner = wrap_learner(self.policy, self.dist, config.learner.strategy)
        self.chunk_length = self.policy.config.chunk_len
        self.action_dim = self.policy.config.action_dim
        self.optimizer = torch.optim.AdamW(
            [p for p in self.policy.model.parameters() if p.requires_grad],
            lr=config.optim.lr,
            weight_decay=config.optim.weight_decay,
        )
        if latest is not None:
            state, optimizer_state = load_run_state(latest)
            load_optimizer_state(self.learner, self.optimizer, optimizer_state, self.dist)
            self.step = state["step"]
            self.history = state["history"]
            self.training_s = float(state.get("training_s", 0.0))
            restore_rng(state["rng"], self.numpy_rng)
            if "init_states" in state:
                self.schedule.load_state_dict(state["init_states"])
            log.info("resumed %s at step %d", latest, self.step)
        self.loss_config = GrpoLossConfig(
            clip_ratio_low=config.grpo.clip_ratio_low,
            clip_ratio_high=config.grpo.clip_ratio_high,
            kl_coef=config.grpo.kl_coef,
            entropy_coef=config.grpo.entropy_coef,
        )
        if config.grpo.kl_coef:
            raise NotImplementedError(
                "grpo.kl_coef > 0 needs a reference policy; SimpleVLA-RL runs without KL"
            )
        self.update_config = UpdateConfig(
            temperature=config.grpo.temperature,
            mini_batches=config.optim.mini_batches,
            ppo_epochs=config.optim.ppo_epochs,
            micro_batch_steps=config.optim.micro_batch_steps,
            grad_clip=config.optim.grad_clip,
            full_batch_groups=config.grpo.groups_per_batch if config.optim.scale_mini_batches else None,
        )
        self.max_chunks = max_chunks_for(max(t.max_steps for t in self.tasks), self.chunk_length)
        self.rollout = (
            None
            if not self.dist.is_main
            else make_rollout_engine(
                config.rollout.backend,
                self.rollout_policy,
                backend=config.env.backend,
                num_envs=config.env.num_envs,
                image_size=config.env.image_size,
                num_workers=config.env.num_workers,
                num_actors=config.rollout.num_actors,
                threads=config.threads,
                address=config.rollout.address,
                runtime=config.rollout.runtime,
                pipeline=config.rollout.pipeline,
                env_options=config.env.options,
            )
        )
        self._tb = None
        if self.dist.is_main:
            # A killed run may have logged steps after its last checkpoint; those steps are redone, so
            # the logs restart from the checkpoint too (TensorBoard drops its events after that step).
            # (a fresh start in a resumed folder without a checkpoint drops all of the old events: step 0)
            self._tb = _tensorboard(self.out_dir / "tb", purge_step=self.step + 1 if latest else 0)
            if (self.out_dir / "metrics.jsonl").exists():  # resumed: keep the history up to the checkpoint
                write_text_atomic(
                    self.out_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.history)
                )

    # ------------------------------------------------------------------ the loop
    def train(
        self,
        progress: Callable[[dict[str, Any]], None] | None = None,
        on_checkpoint: Callable[[Path, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Run to `total_steps` (or the time budget). `progress(metrics)` is called after each step's update,
        before its evaluation; `on_checkpoint(path, metrics)` after each checkpoint is complete on disk, with
        that step's metrics (evaluation included): how a wrapper (trainer_node) announces it."""
        cfg = self.config
        main = self.dist.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(
                self.out_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
            )
        if main and self.step == 0 and cfg.eval.before_training and cfg.eval.every:
            self._evaluate()
        budget_s = 60.0 * cfg.time_budget_minutes
        while self.step < cfg.total_steps:
            metrics = self.train_step()
            self.training_s += metrics["time/step_s"]
            metrics["time/training_s"] = self.training_s
            out_of_time = self.dist.broadcast(budget_s > 0 and self.training_s >= budget_s)
            last = self.step == cfg.total_steps or out_of_time
            checkpoint_now = cfg.checkpoint.every and (self.step % cfg.checkpoint.every == 0 or last)
            # gathered on every rank (FSDP shards it), written by rank 0
            optim_state = optimizer_state(self.learner, self.optimizer, self.dist) if checkpoint_now else None
            if main:
                if progress is not None:
                    progress(metrics)
                if cfg.eval.every and (self.step % cfg.eval.every == 0 or last):
                    metrics.update(self._evaluate())
                self._log(metrics)
                if checkpoint_now:
                    path = self.save_checkpoint(optim_state)
                    if on_checkpoint is not None:
                        on_checkpoint(path, metrics)
            if out_of_time:
                log.info("time budget of %.1f min spent at step %d", cfg.time_budget_minutes, self.step)
                break
        if main:
            plot_learning_curve(self.history, self.out_dir / "learning_curve.png")
        return self.history

    def train_step(self) -> dict[str, Any]:
        """Collect a batch of valid groups (rank 0), then one GRPO update (every rank). Increments `self.step`."""
        started = time.perf_counter()
        batch, metrics, update_seed = self._collect_batch() if self.dist.is_main else (None, {}, 0)
        batch, metrics, update_seed = self.dist.broadcast((batch, metrics, update_seed))
        self.step += 1
        metrics["step"] = self.step
        if batch is None:
            log.warning("step %d: every sampled group was all-success or all-fail; no update", self.step)
            metrics["train/updated"] = 0
            metrics["time/step_s"] = time.perf_counter() - started
            return metrics
        advantages = group_advantages(
            torch.from_numpy(batch.rewards), torch.from_numpy(batch.group_ids)
        ).numpy()
        t = time.perf_counter()
        stats = grpo_update(
            self.policy,
            self.optimizer,
            batch,
            advantages,
            self.action_dim,
            self.update_config,
            self.loss_config,
            np.random.default_rng(update_seed),
            learner=self.learner,
            dist=self.dist,
        )
        self._sync_rollout_weights()
        if stats.skipped_steps:
            metrics["train/skip_reason"] = "; ".join(stats.skip_reasons)
            log.warning(
                "step %d: %d of %d optimizer steps skipped (non-finite): %s",
                self.step, stats.skipped_steps, stats.skipped_steps + stats.optimizer_steps,
                metrics["train/skip_reason"],
            )  # fmt: skip
        metrics.update(
            {
                "train/updated": int(stats.optimizer_steps > 0),
                "train/optimizer_steps": stats.optimizer_steps,
                "train/skipped_steps": stats.skipped_steps,
                "train/trajectories": batch.size,
                "train/loss": stats.loss,
                "train/clip_fraction": stats.clip_fraction,
                "train/approx_kl": stats.approx_kl,
                "train/entropy": stats.entropy,
                "train/grad_norm": stats.grad_norm,
                "time/update_s": time.perf_counter() - t,
                "memory/bytes_per_policy_step": batch.stored_bytes_per_step(),
                "time/step_s": time.perf_counter() - started,
            }
        )
        return metrics

    def _sync_rollout_weights(self) -> None:
        full = full_state_dict(self.learner, self.dist)  # collective under FSDP
        if not self.dist.is_main:
            return
        if full is not None:
            self.rollout_policy.load_state_dict(full)
        self.rollout.sync(self.rollout_policy)

    def _collect_batch(self) -> tuple[TrajectoryBatch | None, dict[str, Any], int]:
        """Dynamic sampling: roll out rounds of groups until `groups_per_batch` have mixed outcomes or
        `max_sampling_rounds` are spent (then the update uses what it has, and says so in the metrics).

        Episodes lost with a dead simulator worker are dropped, never scored as failures; a group is
        judged on its completed episodes (at least two). Valid groups beyond a full batch are discarded,
        as in SimpleVLA-RL.
        """
        cfg = self.config.grpo
        started = time.perf_counter()
        kept: list[TrajectoryBatch] = []
        kept_groups = valid_groups = sampled_groups = rounds = lost = successes = completed = 0
        timing = {"sim_s": 0.0, "policy_s": 0.0, "bookkeeping_s": 0.0}
        next_group_id = 0
        while kept_groups < cfg.groups_per_batch and rounds < cfg.max_sampling_rounds:
            rounds += 1
            states = self.schedule.draw(self._groups_this_round(kept_groups), self.numpy_rng)
            specs = [
                EpisodeSpec(self.tasks[t].name, self.tasks[t].train_states[i], next_group_id + k)
                for k, (t, i) in enumerate(states)
                for _ in range(cfg.group_size)
            ]
            batch = self.rollout.collect(
                specs,
                temperature=cfg.temperature,
                max_chunks=self.max_chunks,
                seed=int(self.numpy_rng.integers(2**63)),
            )
            for k, v in batch.timing.items():
                timing[k] = timing.get(k, 0.0) + v
            sampled_groups += len(states)
            lost += batch.lost
            done = batch.completed()
            successes += int(done.success.sum())
            completed += done.size
            for k, state in enumerate(states):
                outcomes = done.success[done.group_ids == next_group_id + k]
                if outcomes.size:
                    self.schedule.observe(state, float(outcomes.mean()))
            next_group_id += len(states)
            valid = self._valid_group_ids(done)
            valid_groups += len(valid)
            take = valid[: cfg.groups_per_batch - kept_groups]
            if take.size:
                kept.append(done.select(np.flatnonzero(np.isin(done.group_ids, take))))
                kept_groups += len(take)
        if lost:
            log.warning(
                "%d rollout episode(s) lost with a dead simulator worker: left out of the batch", lost
            )
        metrics: dict[str, Any] = {
            "rollout/sampled_success": successes / max(completed, 1),
            "rollout/kept_group_fraction": valid_groups / max(sampled_groups, 1),
            "rollout/sampled_groups": sampled_groups,
            "rollout/valid_groups": valid_groups,
            "rollout/kept_groups": kept_groups,
            "rollout/batch_full": int(kept_groups >= cfg.groups_per_batch),
            "rollout/sampling_rounds": rounds,
            "rollout/lost_episodes": lost,
            **self.schedule.summary(),
            "time/rollout_s": time.perf_counter() - started,
            **{f"time/{k}": v for k, v in timing.items()},
        }
        batch = TrajectoryBatch.concatenate(kept) if kept else None
        if batch is not None and self.rollout.recomputes_log_probs:
            batch = self._learner_log_probs(batch, metrics)
        return batch, metrics, int(self.numpy_rng.integers(2**63))

    def _learner_log_probs(self, batch: TrajectoryBatch, metrics: dict[str, Any]) -> TrajectoryBatch:
        """Rollouts sampled by another runtime (ONNX): the PPO ratio needs the learner's own torch
        log-probs of the sampled tokens under the rollout weights (see rollout_policy.py)."""
        batch, stats = recompute_old_log_probs(
            self.rollout_policy, batch, self.config.grpo.temperature, self.config.optim.micro_batch_steps
        )
        metrics["time/recompute_log_probs_s"] = stats.seconds
        metrics["rollout/runtime_log_prob_max_diff"] = stats.max_abs_diff
        return batch

    def _groups_this_round(self, kept_groups: int) -> int:
        """The paper rolls out a full batch of prompts every round (`oversample` x groups_per_batch);
        `sample_missing_only` rolls out just the groups still missing (svrl's earlier behaviour)."""
        cfg = self.config.grpo
        if cfg.sample_missing_only:
            return cfg.groups_per_batch - kept_groups
        return max(1, math.ceil(cfg.oversample * cfg.groups_per_batch))

    def _valid_group_ids(self, batch: TrajectoryBatch) -> np.ndarray:
        """Group ids, ascending, with >= 2 completed episodes and (dynamic sampling) mixed outcomes."""
        cfg = self.config.grpo
        ids, counts = np.unique(batch.group_ids, return_counts=True)
        ids = ids[counts >= 2]
        if not cfg.dynamic_sampling or ids.size == 0:
            return ids
        members = np.isin(batch.group_ids, ids)
        keep = keep_groups(
            torch.from_numpy(batch.rewards[members]),
            torch.from_numpy(batch.group_ids[members]),
            cfg.accuracy_lower,
            cfg.accuracy_upper,
        ).numpy()
        return np.unique(batch.group_ids[members][keep])

    # ------------------------------------------------------------------ evaluation, logging, checkpoints
    def evaluate(self, episodes_per_task: int | None = None) -> EvalReport:
        if not self.dist.is_main:
            raise RuntimeError("evaluation runs on rank 0, which owns the rollouts")
        return evaluate(
            self.rollout,
            self.tasks,
            episodes_per_task=episodes_per_task or self.config.eval.episodes_per_task,
            chunk_length=self.chunk_length,
        )

    def _evaluate(self) -> dict[str, Any]:
        report = self.evaluate()
        report_dir = self.out_dir / f"eval_step_{self.step:06d}"
        report.write(report_dir, title=f"step {self.step}")
        if self.config.eval.videos_per_task:
            record_eval_videos(
                self.rollout, self.tasks, per_task=self.config.eval.videos_per_task,
                chunk_length=self.chunk_length, out_dir=report_dir / "videos",
            )  # fmt: skip
        metrics = {
            "eval/success": report.overall,
            "eval/lost_episodes": report.lost,
            **{f"eval/{s}": v for s, v in report.suites().items()},
        }
        if self.step == 0:
            self._log({"step": 0, **metrics})
        return metrics

    def _log(self, metrics: dict[str, Any]) -> None:
        self.history.append(metrics)
        with open(self.out_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(metrics) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if key != "step" and isinstance(value, int | float):
                    self._tb.add_scalar(key, value, metrics["step"])
            self._tb.flush()

    def save_checkpoint(self, optim_state: dict[str, Any] | None = None) -> Path:
        """Rank 0 writes; `optim_state` is the gathered state under FSDP (see `train`)."""
        if optim_state is None:
            optim_state = self.optimizer.state_dict()
        final = self.out_dir / CHECKPOINT_DIR / f"step_{self.step:06d}"

        def fill(tmp: Path) -> None:
            self.rollout_policy.save_pretrained(tmp / "policy", metadata={"grpo_step": self.step})
            save_run_state(
                tmp,
                optim_state,
                {
                    "step": self.step,
                    "history": self.history,
                    "training_s": self.training_s,
                    "rng": rng_state(self.numpy_rng),
                    "init_states": self.schedule.state_dict(),
                    "config": config_to_dict(self.config),
                },
            )

        path = write_atomically(final, fill)
        self._prune_checkpoints()
        return path

    def _prune_checkpoints(self) -> None:
        keep = self.config.checkpoint.keep_last
        complete = sorted((self.out_dir / CHECKPOINT_DIR).glob("step_*"))
        for old in complete[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        if self.rollout is not None:
            self.rollout.close()
        if self._tb is not None:
            self._tb.close()


def run_artifacts(out_dir: Path) -> list[Path]:
    """What a previous run left in `out_dir` (files the trainer writes), empty when it holds no run."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [out_dir / name for name in RUN_FILES if (out_dir / name).exists()]
    return found + sorted(out_dir.glob("eval_step_*"))


def remove_run(out_dir: Path, artifacts: list[Path]) -> None:
    """Delete a previous run's files (and its TensorBoard events), nothing else the folder holds."""
    tb = Path(out_dir) / "tb"
    for path in [*artifacts, *([tb] if tb.exists() else [])]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def stored_config(out_dir: Path, checkpoint: Path | None) -> dict[str, Any] | None:
    """The config a run was trained with: its newest checkpoint's (what produced those weights), else the
    run folder's config.yaml (a run killed before its first checkpoint)."""
    if checkpoint is not None and (checkpoint / STATE_JSON).is_file():
        config = json.loads((checkpoint / STATE_JSON).read_text()).get("config")
        if config is not None:
            return config
    path = Path(out_dir) / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def prepare_run_dir(
    out_dir: Path, config: TrainConfig, *, resume: bool, overwrite: bool, is_main: bool = True
) -> Path | None:
    """Decide what `out_dir` holds before any work: the checkpoint to resume from, or None (fresh start).

    Refuses (RunExistsError) to train into another run's folder unless `resume` or `overwrite`; with
    `overwrite`, rank 0 deletes the previous run's files (only those, see RUN_FILES) and says so; with
    `resume`, refuses (config.ResumeConfigError) a config that differs in a key that changes the result.
    """
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    artifacts = run_artifacts(out_dir)
    if overwrite:
        if artifacts and is_main:
            log.warning(
                "--overwrite: removing the previous run in %s (%s)",
                out_dir,
                ", ".join(p.name for p in artifacts),
            )
            remove_run(out_dir, artifacts)
        return None
    if not artifacts:
        return None
    latest = latest_checkpoint(out_dir)
    if not resume:
        what = f"a run checkpointed at {latest.name}" if latest else "a run with no complete checkpoint"
        raise RunExistsError(
            f"{out_dir} already holds {what} ({', '.join(p.name for p in artifacts)}). Pass --resume to "
            "continue it, --overwrite to replace it, or choose another out_dir."
        )
    stored = stored_config(out_dir, latest)
    if stored is not None:
        check_resume_config(stored, config, Path(out_dir))
    return latest


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint; half-written ones (killed mid-save) are ignored."""
    candidates = sorted(
        p for p in (Path(out_dir) / CHECKPOINT_DIR).glob("step_*") if (p / COMPLETE_MARKER).exists()
    )
    return candidates[-1] if candidates else None


def _tensorboard(directory: Path, purge_step: int | None = None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(directory), purge_step=purge_step)


def plot_learning_curve(history: list[dict[str, Any]], path: Path) -> None:
    """Held-out (greedy) and sampled training success against GRPO steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [(m["step"], 100 * m["eval/success"]) for m in history if "eval/success" in m]
    sampled = [
        (m["step"], 100 * m["rollout/sampled_success"]) for m in history if "rollout/sampled_success" in m
    ]
    if not evals and not sampled:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if sampled:
        ax.plot(*zip(*sampled, strict=True), color="#aaaaaa", label="sampled (training states)")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", color="#c44e52", label="greedy (held-out states)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left")
    fig.tight_layout()
    save_figure_atomic(fig, path)


def metrics_summary(metrics: dict[str, Any]) -> str:
    keys = ("rollout/sampled_success", "rollout/kept_group_fraction", "train/clip_fraction", "eval/success")
    return " ".join(f"{k.split('/')[-1]}={metrics[k]:.3f}" for k in keys if k in metrics)
