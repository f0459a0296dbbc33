"""svrl_sim's episode rules on any physics engine: what the Isaac Sim bridge shares with the embedded sim.

`sim_node.SimNode` drives a `SimEnv`. `BridgeEnv` offers the part of SimEnv's interface SimNode uses
(reset, step_command, step_chunk, render, proprio, the episode's bookkeeping) and runs it on an `Engine`: an
object that only loads a scene spec, holds joint position targets for one control period, and reports
joints, object poses, contacts and camera images. Everything that decides what an episode *is* stays in
svrl_sim and runs unchanged here:

- the scene of a (task, init state): `svrl_sim.scene_spec.scene_spec` (the same data the MuJoCo scene is
  built from);
- an `ee_delta` action -> joint targets: `svrl_sim.kinematics.ArmKinematics` on the robot-only model, from
  the measured joints (what `arm_controller` does on a real arm);
- success: `svrl_sim.goals.task_success` on a `PoseState` (plain poses, drawer travel, button depth,
  finger contacts) the engine reports; reward 1.0 on the step of first success, the horizon in control steps;
- action checks, stepping, truncation and the episode's bookkeeping: `svrl_sim.episode.EpisodeRules`, the
  code SimEnv itself runs (BridgeEnv only says how to load a scene, actuate and read the success state).

`MujocoEngine` is the embedded simulator behind the Engine interface: the tests run BridgeEnv on it and check
it reproduces SimEnv step for step, and `isaac_bridge --engine mujoco` runs the bridge's whole code path on a
CPU. An Isaac Sim engine (isaac_bridge.IsaacEngine) is the only part that needs a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from svrl_sim import robot
from svrl_sim import scene_spec as spec_lib
from svrl_sim.constants import ACTION_DIMS, CAMERAS, DEFAULT_CONTROL_HZ, DEFAULT_IMAGE_SIZE
from svrl_sim.episode import EpisodeNotRunningError as EpisodeNotRunningError  # BridgeEnv raises it
from svrl_sim.episode import EpisodeRules, check_env_config
from svrl_sim.goals import PoseState
from svrl_sim.scene_spec import PHYSICS_DT, CameraSpec, SceneSpec, quat_to_mat, scene_spec
from svrl_sim.tasks import InitState, Task

JOINT_NAMES: tuple[str, ...] = (*robot.ARM_JOINTS, *robot.FINGER_JOINTS)  # the order joint arrays use here

Observation = dict[str, Any]


class Engine(Protocol):
    """A physics engine and renderer holding one scene (see module docstring)."""

    def load(self, spec: SceneSpec) -> None:
        """Put the scene in the spec's state: every object's pose, activity and joint positions, the arm at
        `spec.robot.initial_q` with its position targets there, fingers at `initial_fingers`, no velocity."""

    def actuate(self, arm_target: np.ndarray, finger_target: float) -> None:
        """Hold these position targets (7 arm joints in rad, each finger in m) for one control period."""

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions[9], velocities[9]) of the joints in `JOINT_NAMES` order."""

    def pose_state(self, names: Sequence[str]) -> PoseState:
        """Poses of these objects, drawer travel, button depth, and which of them touch a finger pad."""

    def render(self, cameras: Sequence[str]) -> dict[str, np.ndarray]:
        """uint8[H, W, 3] images of these cameras for the current state (row 0 = top of the image)."""

    def close(self) -> None: ...


# ----------------------------------------------------------------------------------------------------------
# What SimNode reads from SimEnv's MuJoCo model and data, for an engine that has none


class _Address:
    def __init__(self, i: int) -> None:
        self.qposadr = np.array([i])
        self.dofadr = np.array([i])


class _JointModel:
    """`model.joint(name).qposadr / .dofadr` index `data.qpos / data.qvel`; `cam_fovy[camera_ids[c]]`."""

    def __init__(self, cameras: Sequence[CameraSpec]) -> None:
        self._joints = {name: _Address(i) for i, name in enumerate(JOINT_NAMES)}
        self.cam_fovy = np.array([c.fovy_deg for c in cameras])

    def joint(self, name: str) -> _Address:
        return self._joints[name]


class _JointData:
    def __init__(self) -> None:
        self.qpos = np.zeros(len(JOINT_NAMES))
        self.qvel = np.zeros(len(JOINT_NAMES))


class _CameraIndex:
    def __init__(self, cameras: Sequence[CameraSpec]) -> None:
        self.camera_ids = {c.name: i for i, c in enumerate(cameras)}


# ----------------------------------------------------------------------------------------------------------


class BridgeEnv(EpisodeRules):
    """SimEnv's episode rules (`svrl_sim.episode.EpisodeRules`, the same code) on an `Engine`: the subset of
    SimEnv's interface `sim_node` uses."""

    def __init__(
        self,
        engine: Engine,
        image_size: int = DEFAULT_IMAGE_SIZE,
        action_space: str = "ee_delta",
        control_hz: float = DEFAULT_CONTROL_HZ,
        cameras: tuple[str, ...] = CAMERAS,
    ) -> None:
        check_env_config(image_size, action_space, control_hz, cameras, PHYSICS_DT)
        from svrl_sim.kinematics import ArmKinematics  # mujoco, on the robot-only model

        self.engine = engine
        self.image_size = int(image_size)
        self.action_space = action_space
        self.action_dim = ACTION_DIMS[action_space]
        self.control_hz = float(control_hz)
        self.control_dt = 1.0 / self.control_hz
        self.cameras = tuple(cameras)
        self.kinematics = ArmKinematics()
        specs = [c for c in spec_lib.cameras(self.image_size) if c.name in self.cameras]
        self.model, self.data, self.index = _JointModel(specs), _JointData(), _CameraIndex(specs)

        self.spec: SceneSpec | None = None
        self._names: tuple[str, ...] = ()
        self._clear_episode()

    # ------------------------------------------------------------------------------------------ episode
    def _load(self, t: Task, ref: InitState) -> dict[str, np.ndarray]:
        """The engine loads the scene spec of this init state (`reset`, svrl_sim.episode)."""
        spec = scene_spec(t, ref, image_size=self.image_size, control_hz=self.control_hz)
        self.engine.load(spec)
        self._sync()
        self.spec = spec
        self._names = tuple(sorted(t.objects))
        return {o.name: np.asarray(o.pos, dtype=float) for o in spec.active_objects}

    def render(self) -> dict[str, np.ndarray]:
        images = self.engine.render(self.cameras)
        size = (self.image_size, self.image_size, 3)
        for cam, image in images.items():
            if image.shape != size or image.dtype != np.uint8:
                raise RuntimeError(
                    f"engine rendered {cam!r} as {image.dtype}{list(image.shape)}, expected uint8{list(size)}"
                )
        return images

    def proprio(self) -> np.ndarray:
        return self.kinematics.proprio()

    def pose_state(self) -> PoseState:
        return self.engine.pose_state(self._names)

    @property
    def max_steps(self) -> int:
        self._require_task()
        assert self.spec is not None
        return self.spec.max_steps

    def close(self) -> None:
        self._running = False
        self.engine.close()

    # ------------------------------------------------------------------------------------------ internals
    def _success_state(self) -> PoseState:
        return self.pose_state()

    def _actuate(self, arm_target: np.ndarray, finger_target: float) -> None:
        self.engine.actuate(np.asarray(arm_target, dtype=np.float64), float(finger_target))
        self._sync()

    def _sync(self) -> None:
        """Measured joints -> the arrays SimNode publishes and the kinematics the next action starts from."""
        q, qd = self.engine.joint_state()
        q, qd = np.asarray(q, dtype=np.float64), np.asarray(qd, dtype=np.float64)
        if (
            q.shape != (len(JOINT_NAMES),)
            or qd.shape != q.shape
            or not (np.isfinite(q).all() and np.isfinite(qd).all())
        ):
            raise RuntimeError(
                f"engine reported joint state {q!r} / {qd!r}: expected {len(JOINT_NAMES)} finite values each"
            )
        self.data.qpos[:], self.data.qvel[:] = q, qd
        self.kinematics.set_joint_positions(q[:7], q[7:])


# ----------------------------------------------------------------------------------------------------------
# Pure geometry an engine without joint read-outs needs (tested against MuJoCo)


def slide_travel(
    parent_pos: Sequence[float], parent_quat: Sequence[float], child_pos: Sequence[float], axis
) -> float:
    """Position of a slide joint from two body poses: the child's offset from the parent along the joint axis
    (parent frame). The drawer's travel from the cabinet and drawer bodies; the button's depth is minus the
    cap's travel along +z."""
    local = quat_to_mat(np.asarray(parent_quat)).T @ (
        np.asarray(child_pos, dtype=float) - np.asarray(parent_pos)
    )
    return float(np.dot(local, np.asarray(axis, dtype=float)))


def usd_camera_lens(camera: CameraSpec, aperture_mm: float = 20.955) -> tuple[float, float, float]:
    """(focal length, horizontal aperture, vertical aperture) in mm of a USD camera with this spec's field of
    view and square pixels: vertical fov = 2 atan(vertical aperture / (2 focal length))."""
    vertical = aperture_mm
    horizontal = aperture_mm * camera.width / camera.height
    focal = vertical / (2.0 * math.tan(math.radians(camera.fovy_deg) / 2.0))
    return focal, horizontal, vertical


# ----------------------------------------------------------------------------------------------------------


class MujocoEngine:
    """The embedded MuJoCo simulator behind the Engine interface (tests, and the bridge without a GPU)."""

    def __init__(self, image_size: int = DEFAULT_IMAGE_SIZE, control_hz: float = DEFAULT_CONTROL_HZ) -> None:
        from svrl_sim.env import SimEnv

        self._env = SimEnv(image_size=image_size, control_hz=control_hz)
        m = self._env.model
        self._qpos = np.array([m.joint(j).qposadr[0] for j in JOINT_NAMES])
        self._dof = np.array([m.joint(j).dofadr[0] for j in JOINT_NAMES])

    def load(self, spec: SceneSpec) -> None:
        # SimEnv.reset writes the same init state the spec describes (tests/sim/test_scene_spec.py).
        self._env.reset(spec.task, InitState(spec.split, spec.init_state_index), render=False)
        if self._env.max_steps != spec.max_steps:
            raise ValueError(
                f"spec horizon {spec.max_steps} != MuJoCo's {self._env.max_steps}: control rates differ"
            )

    def actuate(self, arm_target: np.ndarray, finger_target: float) -> None:
        self._env._actuate(arm_target, finger_target)  # the physics of one control period, nothing else

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        d = self._env.data
        return d.qpos[self._qpos].copy(), d.qvel[self._dof].copy()

    def pose_state(self, names: Sequence[str]) -> PoseState:
        from svrl_sim.goals import pose_state

        return pose_state(self._env.view, names)

    def render(self, cameras: Sequence[str]) -> dict[str, np.ndarray]:
        images = self._env.render()
        return {c: images[c] for c in cameras}

    def close(self) -> None:
        self._env.close()
