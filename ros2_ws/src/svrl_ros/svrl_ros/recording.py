"""A recording session, without ROS: when episodes start and end, which are kept, and the dataset they go to.

Episodes are split one of two ways (`split`):

- `service`: an operator (or script) calls start / stop; `discard` throws the open episode away.
- `goals`: one episode per `ExecuteInstruction` goal, seen on the action's status topic. It opens when a goal
  starts executing. It closes when the goal ends, unless an operator has taken the arm: a takeover ends the
  policy's goal (policy_server aborts it with reason `takeover` when `svrl/arm_mode` leaves "policy"), but
  the episode goes on through the operator's motion and closes when the mode leaves "teleop" (the hand-back)
  or the next goal starts. So an intervention episode holds the policy's frames, the takeover, the operator's
  frames and the hand-back, each frame marked by who was in control.

Every episode shows the session's one instruction (the goal's own text is not on any topic a third node
can read): record each task into its own folder; `svrl sft --data` takes several.

Which episodes are written (`keep`): `all`, or `interventions`, only those with at least one teleop frame
(the "record interventions" mode: let the policy run, take over when it errs, and collect exactly the
corrections). Success is what the goal reported; an episode in which the operator took over is taken as
finished by the operator (the reason the operator took the arm), and `discard` drops it when it was not.

The dataset is written with `svrl_policy.dataset.DatasetWriter` and committed after every kept episode
(staged, renamed into place): the folder always holds a complete dataset of the episodes kept so far, so a
recorder killed outright loses only the open episode. `close()` is what Ctrl-C calls: it keeps the open
episode too and finalises the dataset.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from svrl_policy.features import ACTION_SPACE_EE_DELTA
from svrl_ros.episode_assembler import (
    CONTROL_CODES,
    CONTROL_FEATURE,
    MODE_TELEOP,
    Episode,
    EpisodeAssembler,
)

if TYPE_CHECKING:  # pyarrow and MuJoCo load when a session starts, not when `svrl --help` lists it
    from svrl_policy.dataset import DatasetWriter

log = logging.getLogger(__name__)

SPLITS = ("service", "goals")
KEEPS = ("all", "interventions")
GOAL_END_GRACE_S = 0.5  # a goal's end waits this long for a takeover's mode message that may trail it
# action_msgs/GoalStatus codes, spelled here to keep this module ROS-free.
GOAL_EXECUTING = 2
GOAL_SUCCEEDED, GOAL_CANCELED, GOAL_ABORTED = 4, 5, 6
GOAL_TERMINAL = {GOAL_SUCCEEDED: "succeeded", GOAL_CANCELED: "canceled", GOAL_ABORTED: "aborted"}


@dataclass
class SessionSummary:
    kept: int = 0
    frames: int = 0
    teleop_frames: int = 0
    skipped: Counter = field(default_factory=Counter)  # why an episode was not written
    dropped: Counter = field(default_factory=Counter)  # frames/messages dropped, by reason

    def line(self) -> str:
        drops = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        skips = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return (
            f"{self.kept} episode(s), {self.frames} frames ({self.teleop_frames} teleop); "
            f"episodes not kept: {skips}; dropped: {drops}"
        )


class RecordingSession:
    """Owns an `EpisodeAssembler` and a `DatasetWriter`; the node feeds it messages and events."""

    def __init__(
        self,
        out: str | Path,
        instruction: str,
        *,
        split: str = "service",
        keep: str = "all",
        fps: int = 10,
        cameras: tuple[str, ...] = ("main", "wrist"),
        image_tolerance_s: float | None = None,
        default_mode: str | None = None,
        task_name: str | None = None,
        overwrite: bool = False,
        min_frames: int = 1,
        image_size: tuple[int, int] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if keep not in KEEPS:
            raise ValueError(f"keep must be one of {KEEPS}, got {keep!r}")
        from svrl_policy.dataset import INFO_PATH, DatasetError

        if not instruction or not instruction.strip():
            raise ValueError("instruction must be a non-empty string (the task the demonstrations show)")
        self.out = Path(out).absolute()
        if self.out.exists() and any(self.out.iterdir()):
            if not overwrite:
                raise DatasetError(
                    f"{self.out} already exists and is not empty; choose another folder or overwrite"
                )
            if not (self.out / INFO_PATH).exists():
                raise DatasetError(
                    f"refusing to overwrite {self.out}: it has no {INFO_PATH}, so it is not a dataset"
                )
        self.instruction = instruction.strip()
        self.task_name = task_name or self.instruction
        self.split, self.keep = split, keep
        self.fps = int(fps)
        self.overwrite = overwrite
        self.min_frames = max(1, int(min_frames))
        self.assembler = EpisodeAssembler(
            cameras,
            period_s=1.0 / self.fps,
            image_tolerance_s=image_tolerance_s,
            default_mode=default_mode,
            image_shape=image_size,
            resize=image_size is not None,
        )
        self.summary = SessionSummary()
        self._writer: DatasetWriter | None = None
        self._goal: str | None = None  # id of the goal whose episode is open
        self._goal_end: tuple[float, str] | None = None  # (when, how) the open episode's goal ended
        self._finished_goals: set[str] = set()
        self._ignored_goals: set[str] = set()
        self._episode_goal_status = ""
        self.closed = False

    # ------------------------------------------------------------------------------------ episodes
    @property
    def episode_open(self) -> bool:
        return self.assembler.recording

    def start_episode(self) -> tuple[bool, str]:
        if self.closed:
            return False, "the recording is closed"
        if self.episode_open:
            return False, f"an episode is already being recorded ({len(self.assembler.frames)} frames)"
        missing = self.assembler.missing_inputs()
        if missing and self.split == "service":
            return (
                False,
                f"not ready: nothing heard yet from {', '.join(missing)} (is the robot graph running?)",
            )
        self.assembler.start_episode()
        self._episode_goal_status = ""
        return True, "recording an episode"

    def stop_episode(self, *, discard: bool = False) -> tuple[bool, str]:
        """Close the open episode: written (if the keep rule says so) or, with `discard`, dropped."""
        if not self.episode_open:
            return False, "no episode is being recorded"
        episode = self.assembler.finish_episode()
        self._goal, self._goal_end = None, None
        self.summary.dropped.update(episode.dropped)
        if discard:
            self.summary.skipped["discarded"] += 1
            return True, f"discarded an episode of {len(episode)} frames"
        return self._write(episode)

    def _write(self, episode: Episode) -> tuple[bool, str]:
        if len(episode) < self.min_frames:
            self.summary.skipped["too_short"] += 1
            return True, f"episode not kept: {len(episode)} frame(s) < {self.min_frames}"
        if self.keep == "interventions" and not episode.has_teleop:
            self.summary.skipped["no_intervention"] += 1
            return True, f"episode not kept: {len(episode)} frames and no takeover (keep=interventions)"
        arrays = episode.arrays(self.assembler.cameras)
        if self._writer is None:
            self._writer = self._open_writer(arrays)
        teleop = int(sum(c == MODE_TELEOP for c in episode.controls))
        success = self._episode_goal_status in ("", "succeeded") or episode.has_teleop
        index = self._writer.add_episode(
            **arrays,
            instruction=self.instruction,
            task_name=self.task_name,
            success=success,
            metadata={
                "teleop_frames": teleop,
                "takeovers": episode.takeovers,
                "handbacks": episode.handbacks,
                "goal_status": self._episode_goal_status or None,
                "first_stamp_ns": episode.frames[0].stamp_ns,
                "dropped": dict(episode.dropped),
            },
        )
        self._writer.commit()
        self.summary.kept += 1
        self.summary.frames += len(episode)
        self.summary.teleop_frames += teleop
        return True, (
            f"episode {index} kept: {len(episode)} frames ({teleop} teleop, {episode.takeovers} takeover(s))"
        )

    def _open_writer(self, arrays: dict[str, Any]) -> DatasetWriter:
        from svrl_policy.dataset import DatasetWriter

        h, w = next(iter(arrays["images"].values())).shape[1:3]
        writer = DatasetWriter(
            self.out,
            fps=self.fps,
            camera_names=list(self.assembler.cameras),
            image_shape=(h, w),
            action_space=ACTION_SPACE_EE_DELTA,
            robot_type="svrl_ros",
            overwrite=self.overwrite,
            extra_features={CONTROL_FEATURE: "int64"},
        )
        writer.svrl_metadata["control_source_codes"] = {str(v): k for k, v in CONTROL_CODES.items()}
        return writer

    # ------------------------------------------------------------------------------------ goals split
    def on_goal_statuses(self, statuses: list[tuple[str, int]], now_s: float) -> list[str]:
        """ExecuteInstruction goal statuses (id, code) as the action server publishes them; returns what
        happened, for the log."""
        events: list[str] = []
        if self.split != "goals" or self.closed:
            return events
        for goal_id, code in statuses:
            if goal_id in self._finished_goals:
                continue
            if code in GOAL_TERMINAL:
                self._finished_goals.add(goal_id)
                if goal_id == self._goal:
                    self._goal = None
                    self._goal_end = (now_s, GOAL_TERMINAL[code])
                    self._episode_goal_status = GOAL_TERMINAL[code]
                    events.append(f"goal {goal_id[:8]} {GOAL_TERMINAL[code]}")
            elif code == GOAL_EXECUTING and goal_id != self._goal:
                if self.assembler.mode == MODE_TELEOP and self.episode_open and self._goal is None:
                    # policy_server ends a goal sent while the operator holds the arm at once: it must not
                    # cut the intervention being recorded
                    if goal_id not in self._ignored_goals:
                        self._ignored_goals.add(goal_id)
                        events.append(f"goal {goal_id[:8]} ignored: the operator holds the arm")
                    continue
                if self.episode_open:
                    events.append(self.stop_episode()[1])
                self.start_episode()
                self._goal = goal_id
                missing = self.assembler.missing_inputs()
                note = f" (nothing heard yet from {', '.join(missing)})" if missing else ""
                events.append(f"goal {goal_id[:8]} executing: recording{note}")
        events += self.tick(now_s)
        return events

    def tick(self, now_s: float) -> list[str]:
        """Close a goal's episode once its goal ended and no operator holds the arm (goals split)."""
        if self.split != "goals" or not self.episode_open or self._goal is not None or self._goal_end is None:
            return []
        if self.assembler.mode == MODE_TELEOP:
            return []  # a takeover: the episode goes on until the operator hands back
        if now_s - self._goal_end[0] < GOAL_END_GRACE_S:
            return []
        return [self.stop_episode()[1]]

    # ------------------------------------------------------------------------------------ closing
    def close(self) -> Path | None:
        """Keep the open episode (if the keep rule allows) and finalise the dataset; None if it is empty."""
        if self.closed:
            return self.out if self._writer is not None else None
        if self.episode_open:
            log.info(self.stop_episode()[1])
        self.closed = True
        if self._writer is None:
            return None
        self._writer.svrl_metadata["recording"] = {
            "split": self.split,
            "keep": self.keep,
            "image_tolerance_s": self.assembler.tolerance_ns * 1e-9,
            "episodes_not_kept": dict(self.summary.skipped),
            "dropped": dict(self.summary.dropped),
        }
        return self._writer.finalize()

    def abort(self) -> None:
        """Throw everything away (an error the recording cannot survive)."""
        self.closed = True
        if self._writer is not None:
            self._writer.abort()
