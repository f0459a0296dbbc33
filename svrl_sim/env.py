"""`SimEnv`: one tabletop simulation with the gymnasium-style API of docs/contracts.md.

Control runs at `control_hz` (10 Hz default) over a 2 ms physics step. Cameras are rendered only when an
observation asks for them (`render=True`), never on physics steps: a software-rendered frame costs as much as
a hundred physics steps, so a policy that acts in chunks should step with `step_chunk`, which renders once at
the end of the chunk.

Action spaces (docs/contracts.md):
- `ee_delta` (7): dx, dy, dz (m per control step, robot base frame), droll, dpitch, dyaw (rad per control
  step, a rotation vector in the base frame, applied to the current tool orientation), gripper (-1 open,
  +1 close; values in between command a partly closed gripper). Translation is clipped per axis to
  0.2 m/s x control period (0.02 m at 10 Hz), rotation per axis to 1 rad/s x period (0.1 rad at 10 Hz). The
  delta is taken from the measured tool pose and turned into joint targets by damped least squares on
  MuJoCo's Jacobian (one step; the next action starts again from the measured pose).
- `joint_pos` (8): absolute targets for joint1..7 (rad) and the gripper as above. Targets are clipped to the
  URDF limits and to the URDF joint speed x control period.

`reset(task, init_state)` rebuilds the whole state from the init state (mj_resetData, then every position,
velocity, control and model switch is written), so the same init state gives bit-identical observations in
any process, whatever ran before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from svrl_sim import robot
from svrl_sim._mj import mujoco
from svrl_sim.constants import ACTION_DIMS, CAMERAS, DEFAULT_CONTROL_HZ, DEFAULT_IMAGE_SIZE
from svrl_sim.experts import ScriptedExpert
from svrl_sim.goals import SceneView, task_success
from svrl_sim.kinematics import ArmKinematics, finger_position
from svrl_sim.rendering import shared_renderer
from svrl_sim.scene import PHYSICS_DT, SceneIndex, build_model, yaw_quat
from svrl_sim.tasks import InitState, Task, as_init_state, get_task, scene_init

Observation = dict[str, Any]


class EpisodeNotRunningError(RuntimeError):
    """step() before reset() or after the episode ended."""


class SimEnv:
    """One tabletop scene with a 7-DoF arm; tasks from `svrl_sim.tasks`.

    >>> env = SimEnv(image_size=128, action_space="ee_delta")
    >>> obs, info = env.reset("goal/open_drawer", InitState("eval", 0))
    >>> obs, reward, terminated, truncated, info = env.step(env.expert_action())
    """

    def __init__(
        self,
        image_size: int = DEFAULT_IMAGE_SIZE,
        action_space: str = "ee_delta",
        control_hz: float = DEFAULT_CONTROL_HZ,
        cameras: tuple[str, ...] = CAMERAS,
    ) -> None:
        if not isinstance(image_size, (int, np.integer)) or not 16 <= int(image_size) <= 1024:
            raise ValueError(f"image_size must be an int in [16, 1024], got {image_size!r}")
        if action_space not in ACTION_DIMS:
            raise ValueError(f"action_space {action_space!r} is not one of {sorted(ACTION_DIMS)}")
        substeps = 1.0 / (float(control_hz) * PHYSICS_DT)
        if not 1 <= round(substeps) <= 1000 or abs(substeps - round(substeps)) > 1e-6:
            raise ValueError(
                f"control_hz={control_hz} must divide the {1 / PHYSICS_DT:.0f} Hz physics rate "
                "(e.g. 10, 20, 25 or 50)"
            )
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown or not cameras:
            raise ValueError(f"cameras {unknown or cameras!r} must be a non-empty subset of {CAMERAS}")
        self.image_size = int(image_size)
        self.action_space = action_space
        self.action_dim = ACTION_DIMS[action_space]
        self.control_hz = float(control_hz)
        self.control_dt = 1.0 / self.control_hz
        self.n_substeps = round(substeps)
        self.cameras = tuple(cameras)

        self.model = build_model(self.image_size)
        self.data = mujoco.MjData(self.model)
        self.index = SceneIndex(self.model)
        self.view = SceneView(self.model, self.data, self.index)
        # The one kinematics module, bound to this scene's state: the graph's arm_controller maps ee_delta
        # actions with the same code on a robot-only model, bit for bit.
        self.kinematics = ArmKinematics(self.model, self.data)
        self._renderer = None
        self._image_out: dict[str, np.ndarray] | None = None

        self.task: Task | None = None
        self.init_state: InitState | None = None
        self._expert: ScriptedExpert | None = None
        self._start: dict[str, np.ndarray] = {}
        self._steps = 0
        self._running = False
        self._succeeded = False

    # ------------------------------------------------------------------------------------------ episode
    def reset(
        self, task: str | Task, init_state: InitState | tuple[str, int], *, render: bool = True
    ) -> tuple[Observation, dict[str, Any]]:
        """Start an episode of `task` from a fixed init state. Bad names/indices raise before anything changes."""
        t = get_task(task)
        ref = as_init_state(init_state)
        init = scene_init(t, ref)
        m, d, idx = self.model, self.data, self.index

        mujoco.mj_resetData(m, d)
        idx.apply_activation(m, t.objects)
        for name, entry in idx.objects.items():
            if name in init.poses:
                x, y, z, yaw = init.poses[name]
                pos, quat = np.array([x, y, z]), yaw_quat(yaw)
            else:
                pos, quat = entry.park, np.array([1.0, 0.0, 0.0, 0.0])
            if entry.qpos_adr >= 0:
                d.qpos[entry.qpos_adr : entry.qpos_adr + 3] = pos
                d.qpos[entry.qpos_adr + 3 : entry.qpos_adr + 7] = quat
            else:
                d.mocap_pos[entry.mocap_id] = pos
                d.mocap_quat[entry.mocap_id] = quat
        d.qpos[idx.drawer_qpos] = init.drawer
        d.qpos[idx.button_qpos] = 0.0
        d.qpos[idx.arm_qpos] = init.robot_q
        d.qpos[idx.finger_qpos] = robot.FINGER_OPEN
        d.ctrl[idx.arm_act] = init.robot_q
        d.ctrl[idx.grip_act] = robot.FINGER_OPEN
        mujoco.mj_forward(m, d)

        self.task, self.init_state = t, ref
        self._start = {n: self.view.pos(n) for n in t.objects}
        self._expert = ScriptedExpert(t, self.control_dt)
        self._steps = 0
        self._running = True
        self._succeeded = False
        info = self._info(executed=0)
        return self._observe(render), info

    def step(
        self, action: np.ndarray, render: bool = True
    ) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """One control step. reward is 1.0 on the step the task first succeeds, else 0.0."""
        a = self._check_actions(action, chunk=False)
        return self._run(a[None], render)

    def step_chunk(
        self, actions: np.ndarray, render: bool = True
    ) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Up to K control steps from actions[K, D], stopping early at success or truncation, rendering once
        at the end. info["executed_steps"] says how many ran."""
        return self._run(self._check_actions(actions, chunk=True), render)

    def step_command(
        self, arm_target: np.ndarray, finger_target: float, render: bool = True
    ) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
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

    def expert_action(self) -> np.ndarray:
        """The scripted expert's next action for the current state, in this env's action space.

        The expert is a state machine: call this once per control step and step with (something close to)
        its answer.
        """
        self._require_running()
        assert self._expert is not None
        a = self._expert.act(self.view).astype(np.float64)
        if self.action_space == "ee_delta":
            return a.astype(np.float32)
        q_target = self.kinematics.ee_delta_target(a[:3], a[3:6], self.control_dt)
        return np.concatenate([q_target, a[6:7]]).astype(np.float32)

    def render(self) -> dict[str, np.ndarray]:
        """Images of every configured camera for the current state (uint8 HxWx3)."""
        if self._renderer is None:
            self._renderer = shared_renderer(self.model, self.image_size, self.image_size)
        images = {}
        for cam in self.cameras:
            out = self._image_out[cam] if self._image_out is not None else None
            images[cam] = self._renderer.render(self.model, self.data, self.index.camera_ids[cam], out)
        return images

    def proprio(self) -> np.ndarray:
        """joint_pos[7] (rad), gripper_opening[1] (0 closed .. 1 open), ee_pos[3] (m), ee_quat[4] (w, x, y, z)."""
        return self.kinematics.proprio()

    def success(self) -> bool:
        """The task's success predicate on the current state."""
        self._require_task()
        assert self.task is not None
        return task_success(self.task, self.view, self._start)

    @property
    def instruction(self) -> str:
        self._require_task()
        assert self.task is not None
        return self.task.instruction

    @property
    def step_count(self) -> int:
        return self._steps

    @property
    def max_steps(self) -> int:
        """Time limit of the current task in control steps. `Task.max_steps` is counted at 10 Hz; at another
        control rate the limit in seconds stays the same."""
        self._require_task()
        assert self.task is not None
        return math.ceil(self.task.max_steps * self.control_hz / DEFAULT_CONTROL_HZ - 1e-9)

    @property
    def episode_running(self) -> bool:
        return self._running

    def bind_image_buffers(self, buffers: Mapping[str, np.ndarray] | None) -> None:
        """Render into these arrays (e.g. shared memory) instead of fresh ones; None to undo."""
        if buffers is not None:
            for cam in self.cameras:
                buf = buffers[cam]
                if buf.shape != (self.image_size, self.image_size, 3) or buf.dtype != np.uint8:
                    raise ValueError(
                        f"buffer for {cam!r} must be uint8[{self.image_size}, {self.image_size}, 3]"
                    )
        self._image_out = dict(buffers) if buffers is not None else None

    def close(self) -> None:
        """Release this env's references (the GL context is shared per process and lives on)."""
        self._renderer = None
        self._running = False

    def __enter__(self) -> SimEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def _run(
        self, actions: np.ndarray, render: bool
    ) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        return self._run_steps(len(actions), lambda i: self._apply(actions[i]), render)

    def _run_steps(
        self, count: int, apply_step: Callable[[int], None], render: bool
    ) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        assert self.task is not None
        reward, terminated, truncated, executed = 0.0, False, False, 0
        for i in range(count):
            apply_step(i)
            executed += 1
            self._steps += 1
            if task_success(self.task, self.view, self._start):
                reward, terminated = 1.0, True
                self._succeeded = True
            elif self._steps >= self.max_steps:
                truncated = True
            if terminated or truncated:
                self._running = False
                break
        return self._observe(render), reward, terminated, truncated, self._info(executed)

    def _apply(self, a: np.ndarray) -> None:
        if self.action_space == "ee_delta":
            q_target = self.kinematics.ee_delta_target(a[:3], a[3:6], self.control_dt)
        else:
            q_target = self.kinematics.joint_position_target(a, self.control_dt)
        self._actuate(q_target, finger_position(a[-1]))

    def _actuate(self, arm_target: np.ndarray, finger_target: float) -> None:
        """One control period holding these position targets: what a joint trajectory controller does."""
        m, d, idx = self.model, self.data, self.index
        d.ctrl[idx.arm_act] = arm_target
        d.ctrl[idx.grip_act] = finger_target
        for _ in range(self.n_substeps):
            mujoco.mj_step(m, d)
        mujoco.mj_forward(m, d)  # positions, contacts and camera poses of the state we report

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
