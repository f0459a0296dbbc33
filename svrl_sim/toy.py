"""PointReach: a tiny, fully deterministic task suite for testing learners, not robots.

A point moves on a plane; the instruction names one of four coloured targets; success is reaching it.
It speaks the same batched-observation and chunked-step interface as `VectorEnv` (images from both
camera names, 15-D proprio, instructions), steps hundreds of thousands of times per second in numpy,
and so lets the GRPO trainer's learning behaviour be asserted in seconds — the role CleanRL's classic
control tasks play for its algorithms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SUITE = "toy"
TARGETS = {
    "red": (0.6, 0.6, (230, 40, 40)),
    "green": (-0.6, 0.6, (40, 200, 60)),
    "blue": (-0.6, -0.6, (50, 80, 230)),
    "yellow": (0.6, -0.6, (230, 210, 40)),
}
STEP_LIMIT = 0.1  # largest move per control step, per axis
SUCCESS_RADIUS = 0.12
START_OFFSET = 0.2  # each task starts this far from its target, towards the centre of the plane...
START_JITTER = 0.04  # ...give or take this much per axis: the right move depends on the instruction
MAX_STEPS = 8
NUM_STATES = {"train": 200, "eval": 50}


@dataclass(frozen=True)
class ToyTask:
    name: str
    suite: str
    instruction: str
    max_steps: int
    colour: str


def toy_tasks() -> list[ToyTask]:
    return [ToyTask(f"{SUITE}/reach_{c}", SUITE, f"move to the {c} target", MAX_STEPS, c) for c in TARGETS]


def get_toy_task(name: str) -> ToyTask:
    for task in toy_tasks():
        if task.name == name:
            return task
    raise KeyError(f"unknown toy task {name!r}; toy tasks: {[t.name for t in toy_tasks()]}")


def toy_init_states(task: str | ToyTask, split: str) -> list[tuple[str, int]]:
    if split not in NUM_STATES:
        raise ValueError(f"split must be one of {sorted(NUM_STATES)}, got {split!r}")
    return [(split, i) for i in range(NUM_STATES[split])]


def start_position(task: ToyTask, init_state: tuple[str, int]) -> np.ndarray:
    """Deterministic start: train and eval draw from different seeds, so their states never coincide."""
    split, index = init_state
    if not 0 <= index < NUM_STATES[split]:
        raise IndexError(f"{split} init state {index} out of range [0, {NUM_STATES[split]})")
    seed = (list(TARGETS).index(task.colour), 0 if split == "train" else 1, index)
    rng = np.random.default_rng(seed)
    target = np.array(TARGETS[task.colour][:2])
    towards_centre = -target / np.linalg.norm(target)
    return target + START_OFFSET * towards_centre + rng.uniform(-START_JITTER, START_JITTER, 2)


class PointReachVectorEnv:
    """num_envs point-reach episodes stepped together; `ee_delta` actions (dx, dy used; rest ignored)."""

    action_dim = 7
    cameras = ("main", "wrist")

    def __init__(self, num_envs: int, image_size: int = 32) -> None:
        self.num_envs = num_envs
        self.image_size = image_size
        self._tasks: list[ToyTask] = []
        self._pos = np.zeros((num_envs, 2))
        self._steps = np.zeros(num_envs, np.int64)
        self._done = np.ones(num_envs, bool)

    def reset(self, episodes: Sequence[tuple[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if len(episodes) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} episodes, got {len(episodes)}")
        self._tasks = [get_toy_task(name) for name, _ in episodes]
        self._pos = np.stack([start_position(t, s) for t, (_, s) in zip(self._tasks, episodes, strict=True)])
        self._steps[:] = 0
        self._done[:] = False
        return self._observe(), [{} for _ in range(self.num_envs)]

    def step_chunk(self, actions: np.ndarray, active: np.ndarray):
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 3 or actions.shape[0] != self.num_envs or actions.shape[2] != self.action_dim:
            raise ValueError(f"actions must be [{self.num_envs}, K, {self.action_dim}], got {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("actions contain NaN/inf")
        rewards = np.zeros(self.num_envs, np.float32)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        infos: list[dict[str, Any]] = [{"executed_steps": 0} for _ in range(self.num_envs)]
        targets = np.array([TARGETS[t.colour][:2] for t in self._tasks])
        for i in np.flatnonzero(np.asarray(active, bool) & ~self._done):
            for action in actions[i]:
                self._pos[i] = np.clip(self._pos[i] + np.clip(action[:2], -STEP_LIMIT, STEP_LIMIT), -1, 1)
                self._steps[i] += 1
                infos[i]["executed_steps"] += 1
                if np.linalg.norm(self._pos[i] - targets[i]) < SUCCESS_RADIUS:
                    rewards[i], terminated[i] = 1.0, True
                    break
                if self._steps[i] >= self._tasks[i].max_steps:
                    truncated[i] = True
                    break
            self._done[i] = terminated[i] or truncated[i]
        return self._observe(), rewards, terminated, truncated, infos

    def close(self) -> None:
        """Nothing to release: no processes, no renderer."""

    def _observe(self) -> dict[str, Any]:
        n, s = self.num_envs, self.image_size
        image = np.zeros((n, s, s, 3), np.uint8)
        for i, _task in enumerate(self._tasks):
            for _name, (tx, ty, rgb) in TARGETS.items():
                r, c = _pixel(ty, s), _pixel(tx, s)
                image[i, max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = rgb
            r, c = _pixel(self._pos[i, 1], s), _pixel(self._pos[i, 0], s)
            image[i, r, c] = 255
        proprio = np.zeros((n, 15), np.float32)
        proprio[:, :2] = self._pos
        return {
            "images": {cam: image for cam in self.cameras},
            "proprio": proprio,
            "instruction": [t.instruction for t in self._tasks],
        }


def _pixel(coordinate: float, size: int) -> int:
    return int(np.clip((coordinate + 1) / 2 * (size - 1), 0, size - 1))
