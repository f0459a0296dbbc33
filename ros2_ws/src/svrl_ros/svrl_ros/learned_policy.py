"""A trained policy as the robot graph runs it: measured joints + camera frames in, one action chunk out.

ROS-free on purpose, so the part that must match training bit for bit (the 15-D proprio from joint
positions, the Preprocessor, greedy decoding) is unit-tested without DDS. The runtime comes from
`svrl_policy.runtime.load_runtime`, which picks torch, ONNX Runtime or TensorRT and says which.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from svrl_policy.checkpoint_files import MANIFEST_FILE  # torch-free, unlike svrl_policy.checkpoint

log = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"  # svrl_trainer.run_state.COMPLETE_MARKER
CHECKPOINTS_SUBDIR = "checkpoints"  # svrl_trainer.train.CHECKPOINT_DIR


class CheckpointNotFoundError(FileNotFoundError):
    """No usable checkpoint; the message says what to run or pass."""


def checkpoint_id(ckpt_dir: str | Path) -> str:
    """`<dir name>@<12 hex>`: the name people recognise plus a hash of the manifest's file checksums.

    The manifest lists the sha256 of every file of the checkpoint, so two different weights never share
    an id, and copying a checkpoint elsewhere keeps it. A GRPO checkpoint's policy lives in
    `step_000010/policy`; its id names the step (`step_000010/policy@...`).
    """
    path = Path(ckpt_dir).resolve()
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
        content = json.dumps(manifest.get("sha256", manifest), sort_keys=True).encode()
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointNotFoundError(f"{manifest_path} cannot be read: {error}") from error
    name = f"{path.parent.name}/{path.name}" if path.name == "policy" else path.name
    return f"{name}@{hashlib.sha256(content).hexdigest()[:12]}"


def check_checkpoint_dir(ckpt_dir: str | Path) -> str | None:
    """None if `ckpt_dir` looks like a checkpoint (a directory with a manifest), else why not."""
    path = Path(ckpt_dir)
    if not str(ckpt_dir).strip():
        return "the checkpoint path is empty"
    if not path.is_dir():
        return f"{path} is not a directory"
    if not (path / MANIFEST_FILE).is_file():
        return f"{path} has no {MANIFEST_FILE}: not a svrl policy checkpoint"
    return None


def newest_demo_checkpoint(demo_dir: str | Path) -> Path | None:
    """The policy of the newest complete GRPO checkpoint `make demo` wrote (runs/demo/grpo/...), if any.

    Same rule as svrl_trainer.pipeline.latest_grpo_policy (a step counts once its COMPLETE marker exists),
    without importing the trainer. An exported one (policy.onnx present) is preferred over a newer one
    that was not exported yet: the demo exports the final step, so normally they are the same.
    """
    steps = sorted(
        p
        for p in (Path(demo_dir) / "grpo" / CHECKPOINTS_SUBDIR).glob("step_*")
        if (p / COMPLETE_MARKER).exists() and (p / "policy" / MANIFEST_FILE).is_file()
    )
    exported = [p for p in steps if (p / "policy" / "policy.onnx").is_file()]
    chosen = (exported or steps)[-1:] if steps else []
    return chosen[0] / "policy" if chosen else None


def shipped_base_checkpoint(models_dir: str | Path) -> Path | None:
    """A base policy shipped with svrl under models/ (the newest-named checkpoint there), if any."""
    root = Path(models_dir)
    found = sorted(p.parent for p in root.glob("*/" + MANIFEST_FILE)) if root.is_dir() else []
    return found[-1] if found else None


def resolve_default_checkpoint(demo_dir: str | Path, models_dir: str | Path) -> tuple[Path, str]:
    """(checkpoint, where it came from) when none was given: `make demo`'s newest, else the shipped base."""
    demo = newest_demo_checkpoint(demo_dir)
    if demo is not None:
        return demo, f"the newest `make demo` checkpoint under {demo_dir}"
    base = shipped_base_checkpoint(models_dir)
    if base is not None:
        return base, f"the base policy shipped under {models_dir}"
    raise CheckpointNotFoundError(
        f"no checkpoint given and none found: nothing complete under {Path(demo_dir) / 'grpo'} and no "
        f"shipped base under {models_dir}. Run `make demo` to train one, or pass checkpoint:=<dir>."
    )


@dataclass(frozen=True)
class JointReading:
    """Measured joints at one stamp: arm (7, rad) and the two fingers (m)."""

    arm: np.ndarray
    fingers: np.ndarray


class LearnedPolicy:
    """One loaded checkpoint: observation assembly, inference, and what the chunk message must carry."""

    def __init__(
        self, ckpt_dir: str | Path, backend: str = "auto", temperature: float = 0.0, seed: int = 0
    ) -> None:
        from svrl_policy.runtime import load_runtime
        from svrl_sim.kinematics import ArmKinematics

        reason = check_checkpoint_dir(ckpt_dir)
        if reason is not None:
            raise CheckpointNotFoundError(reason)
        self.path = Path(ckpt_dir).resolve()
        self.runtime = load_runtime(self.path, backend)
        self.checkpoint_id = checkpoint_id(self.path)
        self.temperature = float(temperature)
        self._seed = seed
        self._generator = None
        # A robot-only model of the arm: the measured joints are written in, nothing else is simulated.
        self._kinematics = ArmKinematics()
        config = self.runtime.config
        self.cameras: tuple[str, ...] = tuple(config.cameras)
        self.action_space: str = config.action_space
        self.chunk_len: int = int(config.chunk_len)
        log.info(
            "learned policy %s loaded with runtime %s (cameras %s, action space %s, chunk %d)",
            self.checkpoint_id,
            self.runtime.name,
            list(self.cameras),
            self.action_space,
            self.chunk_len,
        )

    @property
    def runtime_name(self) -> str:
        return self.runtime.name

    def proprio(self, joints: JointReading) -> np.ndarray:
        """The 15-D proprio of training (svrl_sim SimEnv.proprio) computed from measured joint positions."""
        self._kinematics.set_joint_positions(joints.arm, joints.fingers)
        return self._kinematics.proprio()

    def observation(
        self, images: Mapping[str, np.ndarray], joints: JointReading, instruction: str
    ) -> dict[str, Any]:
        """The policy observation dict, in the layout SimEnv's observations have in training."""
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise ValueError(f"observation lacks camera(s) {missing}; the policy needs {list(self.cameras)}")
        return {
            "images": {c: images[c] for c in self.cameras},
            "proprio": self.proprio(joints),
            "instruction": instruction,
        }

    def warm_up(self) -> float:
        """One greedy inference on a blank observation, at load time; returns its seconds.

        A runtime's first call pays one-off costs: allocations and lazy initialisation, and on a GPU the
        context, kernel selection and autotuning, often seconds. Paid inside a goal, the first chunk would
        arrive after its own actions were due and the arm would hold through all of them; paid here, the
        first goal runs like every other. (The debug policy on ONNX Runtime CPU: 0.01-0.05 s.) Greedy, so
        it leaves a sampling goal's random stream alone.
        """
        from svrl_sim import robot

        size = int(self.runtime.config.image_size)
        blank = np.full((size, size, 3), 128, dtype=np.uint8)
        joints = JointReading(np.asarray(robot.HOME_Q), np.full(2, robot.FINGER_OPEN))
        observation = self.observation({c: blank for c in self.cameras}, joints, "warm up")
        started = time.perf_counter()
        self.runtime.sample(observation, 0.0)
        return time.perf_counter() - started

    def reset_sampling(self) -> None:
        """Start a goal's random stream afresh (temperature > 0 only), so a goal is reproducible."""
        self._generator = None

    def infer(self, observation: Mapping[str, Any]) -> np.ndarray:
        """One chunk float32[K, D] in robot units: greedy at temperature 0, else sampled."""
        generator = None
        if self.temperature > 0.0:
            import torch

            if self._generator is None:
                self._generator = torch.Generator().manual_seed(self._seed)
            generator = self._generator
        out = self.runtime.sample(observation, self.temperature, generator=generator)
        actions = np.asarray(out.actions, dtype=np.float32)
        return actions[0] if actions.ndim == 3 else actions
