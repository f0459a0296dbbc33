"""Demonstration frames from what the robot graph says on its topics, without ROS (docs/robot_graph.md).

One frame per control period: the period `arm_controller` commanded. Its commands are the clock of a
recording, because each one answers exactly one measured state and carries that state's stamp
(`JointTrajectory.header.stamp`); a state that nobody commanded (a paused lock-step sim, a held arm) is
no demonstration. A frame is

- the joint state with the command's stamp (the very state the command was computed from; exact, never
  "nearest": the action is only recoverable from the joints it was computed from);
- per camera, the image nearest in stamp within `image_tolerance_s` (default half a control period, the
  window policy_server takes an observation from on a robot: a frame further away belongs to another
  control period; in a simulator every image carries the state's stamp exactly);
- the action in the policy's `ee_delta` space, recovered from the command: the inverse of arm_controller's
  mapping (`ArmKinematics.ee_delta_from_target` on the measured joints, `gripper_command` of the finger
  target), so a recorded action given to arm_controller in the same state commands the same targets;
- who was in control (`svrl/arm_mode` when the command arrived): policy or teleop. Commands under "hold"
  are holds, not demonstrations, and are left out.

The gripper command has no stamp: arm_controller sends it just before the trajectory of the same period,
so a trajectory takes the newest gripper command that arrived since the previous trajectory (or, if the
trajectory overtook it, the next one), as sim_node pairs them.

Bad input never loses a recorded frame: a message that cannot be used (an image of the wrong size, a
joint state missing a joint, a non-finite command) is dropped and counted by reason in `dropped`, and a
frame that lacks a part is dropped and counted the same way; everything already assembled stays.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # MuJoCo is imported when an assembler is built, not by `svrl --help`
    from svrl_sim.kinematics import ArmKinematics

MODE_POLICY = "policy"
MODE_TELEOP = "teleop"
MODE_HOLD = "hold"
# The per-frame `control_source` column of a recorded dataset (meta/svrl.json names the codes).
CONTROL_FEATURE = "control_source"
CONTROL_CODES: dict[str, int] = {MODE_POLICY: 0, MODE_TELEOP: 1}

IMAGE_HISTORY = 64  # images kept per camera while their frame's command is awaited
JOINT_HISTORY = 4096  # joint states kept (a 1 kHz robot: 4 s)


@dataclass(frozen=True)
class RecordedFrame:
    stamp_ns: int
    images: dict[str, np.ndarray]  # camera -> uint8[H, W, 3]
    proprio: np.ndarray  # float32[15]
    action: np.ndarray  # float32[7] ee_delta
    control: str  # MODE_POLICY or MODE_TELEOP


@dataclass
class Episode:
    """The frames of one episode, in stamp order, and what was dropped while it was recorded."""

    frames: list[RecordedFrame]
    dropped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def controls(self) -> list[str]:
        return [f.control for f in self.frames]

    @property
    def takeovers(self) -> int:
        """policy -> teleop switches between consecutive frames (an operator took the arm)."""
        c = self.controls
        return sum(a == MODE_POLICY and b == MODE_TELEOP for a, b in itertools.pairwise(c))

    @property
    def handbacks(self) -> int:
        c = self.controls
        return sum(a == MODE_TELEOP and b == MODE_POLICY for a, b in itertools.pairwise(c))

    @property
    def has_teleop(self) -> bool:
        return MODE_TELEOP in self.controls

    def arrays(self, cameras: Iterable[str]) -> dict:
        """The episode in `DatasetWriter.add_episode`'s form (images, proprio, actions, extra control)."""
        return {
            "images": {c: np.stack([f.images[c] for f in self.frames]) for c in cameras},
            "proprio": np.stack([f.proprio for f in self.frames]),
            "actions": np.stack([f.action for f in self.frames]),
            "extra": {CONTROL_FEATURE: np.array([CONTROL_CODES[f.control] for f in self.frames], np.int64)},
        }


@dataclass
class _Command:
    stamp_ns: int
    arm: np.ndarray  # float64[7] joint targets
    mode: str | None
    finger: float | None = None  # paired gripper target (m)


class EpisodeAssembler:
    """Turns image, joint-state, command and mode messages into frames while an episode is open."""

    def __init__(
        self,
        cameras: Iterable[str] = ("main", "wrist"),
        *,
        period_s: float = 0.1,
        image_tolerance_s: float | None = None,
        image_shape: tuple[int, int] | None = None,
        resize: bool = False,
        default_mode: str | None = None,
        kinematics: ArmKinematics | None = None,
    ) -> None:
        from svrl_sim.kinematics import ArmKinematics, gripper_command

        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        tolerance = period_s / 2 if image_tolerance_s is None else image_tolerance_s
        if not 0 <= tolerance < period_s:
            raise ValueError(f"image_tolerance_s must be in [0, period_s={period_s}), got {tolerance}")
        if default_mode not in (None, MODE_POLICY, MODE_TELEOP):
            raise ValueError(
                f"default_mode must be None, {MODE_POLICY!r} or {MODE_TELEOP!r}, got {default_mode!r}"
            )
        self.cameras = tuple(cameras)
        self.period_s = float(period_s)
        self.tolerance_ns = round(tolerance * 1e9)
        self.image_shape = image_shape  # (H, W); fixed by the first image when None
        if resize and image_shape is None:
            raise ValueError("resize needs an image_shape to resize to")
        self.resize = resize  # resize every image to image_shape (cameras of different sizes)
        self.mode: str | None = None
        self.default_mode = default_mode
        self.kinematics = kinematics if kinematics is not None else ArmKinematics()
        self._gripper_command = gripper_command
        self._images: dict[str, deque[tuple[int, np.ndarray]]] = {
            c: deque(maxlen=IMAGE_HISTORY) for c in self.cameras
        }
        self._joints: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._joint_order: deque[int] = deque()
        self._newest_joint_ns = -1
        self._gripper: float | None = None  # newest gripper target (m)
        self._gripper_fresh = False  # a gripper command arrived since the last trajectory
        self._waiting_gripper: _Command | None = None  # a trajectory that overtook its gripper command
        self._pending: list[_Command] = []
        self._used_stamps: set[int] = set()
        self._heard: set[str] = set()  # inputs that delivered at least one usable message
        self.recording = False
        self.frames: list[RecordedFrame] = []
        self.dropped: Counter = Counter()

    # ------------------------------------------------------------------------------------ episodes
    def missing_inputs(self) -> list[str]:
        """Inputs nothing was heard from yet: an episode started now would record no frames."""
        needed = ["joint_states", *(f"camera {c}" for c in self.cameras)]
        if self.default_mode is None:
            needed.append("arm mode")
        return [n for n in needed if n not in self._heard]

    def start_episode(self) -> None:
        """Frames are collected from the next command on; anything older is not part of the episode."""
        self.recording = True
        self.frames = []
        self.dropped = Counter()
        self._pending = []
        self._waiting_gripper = None

    def finish_episode(self) -> Episode:
        """Close the episode: every pending command becomes a frame with what has arrived, or is dropped."""
        if self._waiting_gripper is not None:
            self._pair_gripper(self._waiting_gripper, self._gripper, "gripper_missing")
            self._waiting_gripper = None
        self._resolve(final=True)
        episode = Episode(sorted(self.frames, key=lambda f: f.stamp_ns), self.dropped)
        self.recording = False
        self.frames, self.dropped, self._pending = [], Counter(), []
        return episode

    # ------------------------------------------------------------------------------------ inputs
    def add_image(self, camera: str, stamp_ns: int, image: np.ndarray) -> str | None:
        """Store one camera image; returns why it was refused (and counts it), or None."""
        if camera not in self._images:
            return None
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            return self.refuse(
                "image_bad", f"{camera} image must be uint8[H, W, 3], got {image.dtype} {image.shape}"
            )
        if self.image_shape is None:
            self.image_shape = (int(image.shape[0]), int(image.shape[1]))
        if self.resize and image.shape[:2] != self.image_shape:
            from PIL import Image as PILImage

            h, w = self.image_shape
            image = np.asarray(PILImage.fromarray(image).resize((w, h), PILImage.Resampling.BILINEAR))
        if image.shape[:2] != self.image_shape:
            return self.refuse(
                "image_wrong_size",
                f"{camera} image is {image.shape[1]}x{image.shape[0]}, the recording is "
                f"{self.image_shape[1]}x{self.image_shape[0]} (fixed by its first image; cameras of "
                "different sizes need an image size to resize to)",
            )
        self._images[camera].append((int(stamp_ns), image))
        self._heard.add(f"camera {camera}")
        self._resolve(final=False)
        return None

    def add_joint_state(self, stamp_ns: int, arm_q: np.ndarray, finger_q: np.ndarray) -> None:
        stamp_ns = int(stamp_ns)
        if stamp_ns not in self._joints:
            self._joint_order.append(stamp_ns)
            while len(self._joint_order) > JOINT_HISTORY:
                self._joints.pop(self._joint_order.popleft(), None)
        self._joints[stamp_ns] = (np.asarray(arm_q, np.float64), np.asarray(finger_q, np.float64))
        self._newest_joint_ns = max(self._newest_joint_ns, stamp_ns)
        self._heard.add("joint_states")
        self._resolve(final=False)

    def add_gripper_command(self, finger: float) -> str | None:
        finger = float(finger)
        if not np.isfinite(finger):
            return self.refuse("command_not_finite", f"gripper command {finger} is not finite")
        self._gripper = finger
        if self._waiting_gripper is not None:
            self._pair_gripper(self._waiting_gripper, finger)
            self._waiting_gripper = None
            self._gripper_fresh = False
        else:
            self._gripper_fresh = True
        self._resolve(final=False)
        return None

    def add_arm_command(self, stamp_ns: int, arm_targets: np.ndarray) -> str | None:
        """One `arm_controller/joint_trajectory` point for the state at stamp_ns."""
        fresh, self._gripper_fresh = self._gripper_fresh, False
        arm = np.asarray(arm_targets, dtype=np.float64)
        if arm.shape != (7,) or not np.isfinite(arm).all():
            return self.refuse(
                "command_not_finite", f"arm command must be 7 finite targets, got {arm.tolist()}"
            )
        stamp_ns = int(stamp_ns)
        if not self.recording:
            return None
        if stamp_ns in self._used_stamps:
            self.dropped["command_repeated"] += 1  # a re-sent command: the frame exists already
            return None
        self._used_stamps.add(stamp_ns)
        command = _Command(stamp_ns, arm, self.mode or self.default_mode)
        if self._waiting_gripper is not None:  # the previous trajectory never got its own gripper command
            self._pair_gripper(self._waiting_gripper, self._gripper, "gripper_missing")
            self._waiting_gripper = None
        if fresh:
            self._pair_gripper(command, self._gripper)
        else:
            self._waiting_gripper = command
        self._resolve(final=False)
        return None

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self._heard.add("arm mode")

    def refuse(self, reason: str, message: str) -> str:
        """Count a message that could not be used (the node logs `message`)."""
        self.dropped[reason] += 1
        return message

    # ------------------------------------------------------------------------------------ assembly
    def _pair_gripper(self, command: _Command, finger: float | None, missing: str = "") -> None:
        if finger is None:
            self.dropped[missing or "gripper_missing"] += 1
            return
        command.finger = finger
        self._pending.append(command)

    def _resolve(self, final: bool) -> None:
        still = []
        for command in self._pending:
            verdict = self._try_frame(command, final)
            if verdict is None:
                still.append(command)
            elif verdict:
                self.dropped[verdict] += 1
        self._pending = still

    def _try_frame(self, c: _Command, final: bool) -> str | None:
        """'' when the frame was made, a drop reason, or None to wait for more messages."""
        if c.mode == MODE_HOLD:
            return "hold"
        if c.mode is None:
            return "no_mode"
        joints = self._joints.get(c.stamp_ns)
        if joints is None:
            return "no_joint_state" if final or self._newest_joint_ns > c.stamp_ns else None
        images = {}
        for camera in self.cameras:
            image, done = self._image_for(camera, c.stamp_ns)
            if image is None:
                return "no_image" if final or done else None
            if not done and not final:
                return None  # a nearer image may still come
            images[camera] = image
        arm_q, finger_q = joints
        try:
            self.kinematics.set_joint_positions(arm_q, finger_q)
            proprio = self.kinematics.proprio()
            delta = self.kinematics.ee_delta_from_target(c.arm, self.period_s)
        except (ValueError, np.linalg.LinAlgError):
            return "action_unrecoverable"
        action = np.concatenate([delta, [self._gripper_command(c.finger)]]).astype(np.float32)
        if not np.isfinite(action).all():  # a singular arm pose: the inverse is undefined
            return "action_unrecoverable"
        self.frames.append(RecordedFrame(c.stamp_ns, images, proprio, action, c.mode))
        return ""

    def _image_for(self, camera: str, stamp_ns: int) -> tuple[np.ndarray | None, bool]:
        """(nearest image within tolerance or None, whether no nearer one can still arrive)."""
        best, best_dt, newest = None, None, None
        for s, image in self._images[camera]:
            newest = s if newest is None else max(newest, s)
            dt = abs(s - stamp_ns)
            if dt <= self.tolerance_ns and (
                best_dt is None or dt < best_dt or (dt == best_dt and s < stamp_ns)
            ):
                best, best_dt = image, dt
        settled = best_dt == 0 or (newest is not None and newest > stamp_ns + self.tolerance_ns)
        return best, settled
