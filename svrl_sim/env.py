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
from collections.abc import Mapping
from typing import Any

import numpy as np

from svrl_sim import robot
from svrl_sim._mj import mujoco
from svrl_sim.constants import ACTION_DIMS, CAMERAS, DEFAULT_CONTROL_HZ, DEFAULT_IMAGE_SIZE
from svrl_sim.episode import EpisodeNotRunningError, EpisodeRules, check_env_config
from svrl_sim.experts import ScriptedExpert
from svrl_sim.goals import SceneView
from svrl_sim.kinematics import ArmKinematics
from svrl_sim.projection import project_point
from svrl_sim.rendering import shared_renderer
from svrl_sim.scene import PHYSICS_DT, SceneIndex, build_model, yaw_quat
from svrl_sim.tasks import InitState, Task, scene_init

Observation = dict[str, Any]

__all__ = ["EpisodeNotRunningError", "InitState", "Observation", "SimEnv"]


class SimEnv(EpisodeRules):
    """One tabletop scene with a 7-DoF arm; tasks from `svrl_sim.tasks`. The episode rules (stepping,
    success, truncation, bookkeeping) are `svrl_sim.episode.EpisodeRules`, shared with the Isaac bridge.

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
        n_substeps = check_env_config(image_size, action_space, control_hz, cameras, PHYSICS_DT)
        self.image_size = int(image_size)
        self.action_space = action_space
        self.action_dim = ACTION_DIMS[action_space]
        self.control_hz = float(control_hz)
        self.control_dt = 1.0 / self.control_hz
        self.n_substeps = n_substeps
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

        self._expert: ScriptedExpert | None = None
        self._clear_episode()

    # ------------------------------------------------------------------------------------------ episode
    def _load(self, t: Task, ref: InitState) -> dict[str, np.ndarray]:
        """Rebuild the whole state from the init state (`reset`, svrl_sim.episode)."""
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

        self._expert = ScriptedExpert(t, self.control_dt)
        return {n: self.view.pos(n) for n in t.objects}

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

    def expert_focus(self) -> np.ndarray:
        """The expert's current object and target relative to the gripper (`ScriptedExpert.focus_offsets`)."""
        self._require_running()
        assert self._expert is not None
        return self._expert.focus_offsets(self.view).astype(np.float32)

    def expert_focus_pixels(self) -> np.ndarray:
        """Where the expert's current object and target appear in each camera: for every camera of
        `self.cameras`, (object x, y, target x, y), in view within [-1, 1] (svrl_sim.projection)."""
        self._require_running()
        assert self._expert is not None
        points = self._expert.focus_points(self.view)
        return np.concatenate(
            [
                project_point(self.model, self.data, self.index.camera_ids[cam], point)
                for cam in self.cameras
                for point in points
            ]
        ).astype(np.float32)

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

    @property
    def max_steps(self) -> int:
        """Time limit of the current task in control steps. `Task.max_steps` is counted at 10 Hz; at another
        control rate the limit in seconds stays the same."""
        self._require_task()
        assert self.task is not None
        return math.ceil(self.task.max_steps * self.control_hz / DEFAULT_CONTROL_HZ - 1e-9)

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
    def _actuate(self, arm_target: np.ndarray, finger_target: float) -> None:
        """One control period holding these position targets: what a joint trajectory controller does."""
        m, d, idx = self.model, self.data, self.index
        d.ctrl[idx.arm_act] = arm_target
        d.ctrl[idx.grip_act] = finger_target
        for _ in range(self.n_substeps):
            mujoco.mj_step(m, d)
        mujoco.mj_forward(m, d)  # positions, contacts and camera poses of the state we report

    def _success_state(self) -> SceneView:
        return self.view
