"""What trainer_node reports about a GRPO run, computed without ROS (unit-tested without DDS).

`TrainingProgress` is fed by GrpoTrainer's hooks (each step's metrics, each complete checkpoint) and by the
node's own life (building, finished, failed); trainer_node turns `status()` into one DiagnosticStatus and
`announcement()` into a svrl_interfaces/PolicyCheckpoint message. Thread-safe: the trainer calls it from the
training thread, the node's diagnostics timer reads it from the executor's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svrl_ros.checkpoint_guard import read_interface

OK, WARN, ERROR = 0, 1, 2
STARTING, TRAINING, FINISHED, FAILED = "starting", "training", "finished", "failed"
POLICY_SUBDIR = "policy"  # svrl_trainer saves the policy of checkpoints/step_NNNNNN/ in this folder
# metric key -> diagnostics key, in the order an operator reads them
REPORTED_METRICS = {
    "rollout/sampled_success": "sampled_success",
    "eval/success": "eval_success",
    "rollout/kept_groups": "kept_groups",
    "rollout/lost_episodes": "lost_episodes",
    "train/updated": "updated",
    "train/clip_fraction": "clip_fraction",
    "time/step_s": "step_s",
}


@dataclass(frozen=True)
class Announcement:
    """One checkpoint as svrl/checkpoint announces it (svrl_interfaces/msg/PolicyCheckpoint)."""

    path: str
    step: int
    checkpoint_id: str
    action_space: str
    codec_fingerprint: str
    run_dir: str


class TrainingProgress:
    """The run's state, its newest metrics and checkpoint, and the diagnostics they make."""

    def __init__(self, run_dir: str | Path, total_steps: int, backend: str) -> None:
        self._lock = threading.Lock()
        self.run_dir = str(run_dir)
        self.total_steps = int(total_steps)
        self.backend = backend
        self.state = STARTING
        self.step = 0
        self.metrics: dict[str, Any] = {}
        self.last_eval: float | None = None
        self.checkpoints = 0
        self.last_announcement: Announcement | None = None
        self.error = ""

    # -- fed by the trainer and the node --------------------------------------------------------------
    def started(self, step: int) -> None:
        with self._lock:
            self.state, self.step = TRAINING, int(step)

    def on_step(self, metrics: dict[str, Any]) -> None:
        """GrpoTrainer's `progress` hook: the step's metrics (evaluation, when due, is added later)."""
        with self._lock:
            self.step = int(metrics.get("step", self.step))
            self.metrics = metrics  # the trainer adds eval/* to this very dict before it checkpoints

    def on_checkpoint(self, checkpoint_dir: str | Path, metrics: dict[str, Any]) -> Announcement:
        """GrpoTrainer's `on_checkpoint` hook: the announcement of the policy saved in `checkpoint_dir`.

        Reads the saved files (checkpoint_guard.read_interface), so what is announced is what is on disk.
        """
        interface = read_interface(Path(checkpoint_dir) / POLICY_SUBDIR)
        announcement = Announcement(
            path=str(interface.path),
            step=int(metrics.get("step", self.step)),
            checkpoint_id=interface.checkpoint_id,
            action_space=interface.action_space,
            codec_fingerprint=interface.fingerprint,
            run_dir=self.run_dir,
        )
        with self._lock:
            self.metrics = metrics
            self.checkpoints += 1
            self.last_announcement = announcement
        return announcement

    def finished(self) -> None:
        with self._lock:
            self.state = FINISHED

    def failed(self, reason: str) -> None:
        with self._lock:
            self.state, self.error = FAILED, reason

    # -- read by the node ------------------------------------------------------------------------------
    def status(self) -> tuple[int, str, dict[str, str]]:
        """(level OK/WARN/ERROR, one-line message, key/values) for /diagnostics.

        WARN while episodes are being lost (a simulator instance stopped answering: its episodes leave the
        batch, training goes on) or a step made no update (every group all-success or all-fail).
        """
        with self._lock:
            metrics = dict(self.metrics)
            if "eval/success" in metrics:
                self.last_eval = float(metrics["eval/success"])
            state, step, error = self.state, self.step, self.error
            announcement, checkpoints, last_eval = self.last_announcement, self.checkpoints, self.last_eval
        values = {
            "state": state,
            "step": str(step),
            "total_steps": str(self.total_steps),
            "backend": self.backend,
            "run_dir": self.run_dir,
            "checkpoints_announced": str(checkpoints),
        }
        for key, name in REPORTED_METRICS.items():
            if key in metrics:
                values[name] = _format(metrics[key])
        if last_eval is not None:
            values["eval_success"] = _format(last_eval)
        if announcement is not None:
            values["last_checkpoint"] = announcement.path
            values["last_checkpoint_id"] = announcement.checkpoint_id
        if state == FAILED:
            return ERROR, f"training failed: {error}", values
        if state == FINISHED:
            return OK, f"training finished at step {step} of {self.total_steps}", values
        if state == STARTING:
            return OK, "building the trainer (policy, environments)", values
        lost = int(metrics.get("rollout/lost_episodes", 0) or 0)
        summary = f"step {step} of {self.total_steps}"
        if "rollout/sampled_success" in metrics:
            summary += f", sampled success {float(metrics['rollout/sampled_success']):.3f}"
        if lost:
            return WARN, f"{summary}; {lost} episode(s) lost with a simulator that stopped answering", values
        if metrics.get("train/updated") == 0:
            return WARN, f"{summary}; no update (every group all-success or all-fail)", values
        return OK, summary, values


def _format(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
