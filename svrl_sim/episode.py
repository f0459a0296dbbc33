"""The episode rules every svrl_sim environment follows, in one place, whatever runs the physics.

`SimEnv` (MuJoCo, embedded) and the Isaac Sim bridge's `BridgeEnv` (svrl_ros.isaac.engine, any `Engine`)
both mix in `EpisodeRules`, so what an episode *is* cannot drift between them: which constructor arguments
are valid, how actions are checked before anything reaches the physics, how an `ee_delta` / `joint_pos`
action becomes joint targets, when an episode succeeds (reward 1.0 on the step of first success) or is
truncated (the horizon in control steps), what `step_command` does after the end, and the info dict.

A class that mixes it in provides the physics and the read-outs: `_load` (put the physics in an init state),
`_actuate` (hold joint position targets for one control period), `_success_state` (what `svrl_sim.goals.task_success` reads), `render`, `proprio` and
`max_steps`, and sets the attributes listed on `EpisodeRules`. This module does not import MuJoCo (the
kinematics are imported when an action is applied), so an engine without it can import the rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from svrl_sim import robot
from svrl_sim.constants import ACTION_DIMS, CAMERAS
from svrl_sim.goals import task_success
from svrl_sim.tasks import InitState, Task, as_init_state, get_task

Observation = dict[str, Any]
StepResult = tuple[Observation, float, bool, bool, dict[str, Any]]


class EpisodeNotRunningError(RuntimeError):
    """step() before reset() or after the episode ended."""


def check_env_config(
    image_size: Any, action_space: str, control_hz: float, cameras: tuple[str, ...], physics_dt: float
) -> int:
    """Validate an environment's constructor arguments; return the physics substeps per control step.

    Shared so that a configuration one environment refuses is refused by every other one with the same words.
    """
    if not isinstance(image_size, (int, np.integer)) or not 16 <= int(image_size) <= 1024:
        raise ValueError(f"image_size must be an int in [16, 1024], got {image_size!r}")
    if action_space not in ACTION_DIMS:
        raise ValueError(f"action_space {action_space!r} is not one of {sorted(ACTION_DIMS)}")
    substeps = 1.0 / (float(control_hz) * physics_dt)
    if not 1 <= round(substeps) <= 1000 or abs(substeps - round(substeps)) > 1e-6:
        raise ValueError(
            f"control_hz={control_hz} must divide the {1 / physics_dt:.0f} Hz physics rate "
            "(e.g. 10, 20, 25 or 50)"
        )
    unknown = [c for c in cameras if c not in CAMERAS]
    if unknown or not cameras:
        raise ValueError(f"cameras {unknown or cameras!r} must be a non-empty subset of {CAMERAS}")
    return round(substeps)


class EpisodeRules:
    """Stepping, success, truncation and bookkeeping of one episode (see module docstring)."""

    # Set by the class that mixes this in.
    action_space: str
    action_dim: int
    control_dt: float
    kinematics: Any  # svrl_sim.kinematics.ArmKinematics
    task: Task | None
    init_state: InitState | None
    _start: dict[str, np.ndarray]
    _steps: int
    _running: bool
    _succeeded: bool

    # ------------------------------------------------------------------------------ what a subclass provides
    def _load(self, task: Task, init_state: InitState) -> dict[str, np.ndarray]:
        """Put the physics in this init state (raising before anything changes on a bad one); return the
        start positions of the task's objects, which the success predicates compare against."""
        raise NotImplementedError

    def _actuate(self, arm_target: np.ndarray, finger_target: float) -> None:
        """One control period holding these position targets: what a joint trajectory controller does."""
        raise NotImplementedError

    def _success_state(self) -> Any:
        """The state `task_success` reads: a `SceneView` or a `PoseState`."""
        raise NotImplementedError

    def render(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def proprio(self) -> np.ndarray:
        raise NotImplementedError

    @property
    def max_steps(self) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ episode
    def _clear_episode(self) -> None:
        """No episode yet (constructor)."""
        self.task = None
        self.init_state = None
        self._start = {}
        self._steps = 0
        self._running = False
        self._succeeded = False

    def reset(
        self, task: str | Task, init_state: InitState | tuple[str, int], *, render: bool = True
    ) -> tuple[Observation, dict[str, Any]]:
        """Start an episode of `task` from a fixed init state. Bad names/indices raise before anything changes."""
        t = get_task(task)
        ref = as_init_state(init_state)
        start = self._load(t, ref)
        self.task, self.init_state = t, ref
        self._start = start
        self._steps = 0
        self._running = True
        self._succeeded = False
        info = self._info(executed=0)
        return self._observe(render), info

    def step(self, action: np.ndarray, render: bool = True) -> StepResult:
        """One control step. reward is 1.0 on the step the task first succeeds, else 0.0."""
        a = self._check_actions(action, chunk=False)
        return self._run(a[None], render)

    def step_chunk(self, actions: np.ndarray, render: bool = True) -> StepResult:
        """Up to K control steps from actions[K, D], stopping early at success or truncation, rendering once
        at the end. info["executed_steps"] says how many ran."""
        return self._run(self._check_actions(actions, chunk=True), render)

    def step_command(self, arm_target: np.ndarray, finger_target: float, render: bool = True) -> StepResult:
        """One control period holding joint-level position targets, as ros2_control's controllers give them.

        This is how the simulated robot graph drives the sim (`sim_node`): `arm_controller` has already
        turned the policy's action into joint targets with `svrl_sim.kinematics`, exactly as `step` would.
        Unlike `step`, it also runs after the episode ended (a robot does not vanish at success): the
        bookkeeping then stays frozen (no reward, success latched) while the physics goes on.
        """
        self._require_task()
        q = np.asarray(arm_target, dtype=np.float64)
        if q.shape != (7,) or not np.isfinite(q).all():
            raise ValueError(f"arm_target must be 7 finite joint positions (rad), got {arm_target!r}")
        f = float(finger_target)
        if not math.isfinite(f):
            raise ValueError(f"finger_target must be finite (m), got {finger_target!r}")
        q = np.clip(q, self.kinematics.lower, self.kinematics.upper)
        f = float(np.clip(f, 0.0, robot.FINGER_OPEN))
        if not self._running:
            self._actuate(q, f)
            return self._observe(render), 0.0, False, False, self._info(executed=1)
        return self._run_steps(1, lambda _i: self._actuate(q, f), render)

    def success(self) -> bool:
        """The task's success predicate on the current state."""
        self._require_task()
        assert self.task is not None
        return task_success(self.task, self._success_state(), self._start)

    @property
    def instruction(self) -> str:
        self._require_task()
        assert self.task is not None
        return self.task.instruction

    @property
    def step_count(self) -> int:
        return self._steps

    @property
    def episode_running(self) -> bool:
        return self._running

    # ------------------------------------------------------------------------------------------ internals
    def _require_task(self) -> None:
        if self.task is None:
            raise EpisodeNotRunningError("no episode: call reset(task, init_state) first")

    def _require_running(self) -> None:
        self._require_task()
        if not self._running:
            raise EpisodeNotRunningError(
                f"the episode of {self.task.name!r} has ended (success or time limit); call reset() first"  # type: ignore[union-attr]
            )

    def _check_actions(self, actions: Any, chunk: bool) -> np.ndarray:
        """Validate before anything touches the physics: shape, dtype, finiteness."""
        try:
            a = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"action is not numeric: {exc}") from None
        want = f"[K, {self.action_dim}]" if chunk else f"[{self.action_dim}]"
        if (chunk and (a.ndim != 2 or a.shape[1] != self.action_dim or a.shape[0] < 1)) or (
            not chunk and a.shape != (self.action_dim,)
        ):
            raise ValueError(
                f"{self.action_space} action must have shape {want} (K >= 1), got {tuple(a.shape)}"
            )
        bad = ~np.isfinite(a)
        if bad.any():
            where = np.argwhere(bad)[0].tolist()
            raise ValueError(f"action contains NaN or inf (first at index {where}); nothing was executed")
        self._require_running()
        return a

    def _run(self, actions: np.ndarray, render: bool) -> StepResult:
        return self._run_steps(len(actions), lambda i: self._apply(actions[i]), render)

    def _run_steps(self, count: int, apply_step: Callable[[int], None], render: bool) -> StepResult:
        assert self.task is not None
        reward, terminated, truncated, executed = 0.0, False, False, 0
        for i in range(count):
            apply_step(i)
            executed += 1
            self._steps += 1
            if task_success(self.task, self._success_state(), self._start):
                reward, terminated = 1.0, True
                self._succeeded = True
            elif self._steps >= self.max_steps:
                truncated = True
            if terminated or truncated:
                self._running = False
                break
        return self._observe(render), reward, terminated, truncated, self._info(executed)

    def _apply(self, a: np.ndarray) -> None:
        """An action -> joint targets with the one kinematics module, then one control period."""
        from svrl_sim.kinematics import finger_position  # mujoco: not at import time

        if self.action_space == "ee_delta":
            q_target = self.kinematics.ee_delta_target(a[:3], a[3:6], self.control_dt)
        else:
            q_target = self.kinematics.joint_position_target(a, self.control_dt)
        self._actuate(q_target, finger_position(a[-1]))

    def _observe(self, render: bool) -> Observation:
        assert self.task is not None
        obs: Observation = {"proprio": self.proprio(), "instruction": self.task.instruction}
        if render:
            obs["images"] = self.render()
        return obs

    def _info(self, executed: int) -> dict[str, Any]:
        assert self.task is not None
        return {
            "task": self.task.name,
            "init_state": self.init_state,
            "step": self._steps,
            "executed_steps": executed,
            "success": self._succeeded,
        }
