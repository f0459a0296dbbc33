"""Evaluation protocols by name: what a published LIBERO number means, written down once.

A LIBERO success rate depends on more than the policy: which cameras it saw, how frames were flipped,
compressed, resized and cropped, how many steps an episode may take, how many no-op steps let the objects
settle first, and which initial states were used for training. Two papers' numbers are comparable only under
one protocol. Each protocol here is one function returning an `EvalProtocol`; `PROTOCOLS` is the registry.

- `simplevla_rl` (PRIME-RL/SimpleVLA-RL `rob_rollout.py` + `libero_utils.py`): the agentview camera only,
  rendered at 256², rotated 180°, JPEG round trip, Lanczos resize to 224², centre crop of 90 % of the area
  resized back to 224² (`rollout.center_crop`), no proprio, 512 env steps for every suite, 10 settle steps,
  greedy decoding. RL trains on the same 50 initial states it evaluates on (their issue #34).
- `openvla_oft` (moojink/openvla-oft `run_libero_eval.py`): the same image pipeline on the agentview and the
  wrist camera, 8-D proprio (eef position, axis-angle, 2 gripper joints), per-suite horizons 220 / 280 / 300 /
  520 (spatial / object / goal / 10), 10 settle steps.
  Both papers binarise the gripper command (its sign) before stepping the env.
- `plain`: frames rotated upright at the requested size, both cameras, svrl's 15-D proprio, 512 steps: for
  svrl policies trained on LIBERO frames without a paper's preprocessing.

Splits (`split_init_states`): `paper` trains and evaluates on all 50 standard initial states of a task (what
SimpleVLA-RL did); `fair` holds 10 of them out (every fifth) for evaluation and trains on the other 40.

The image pipeline is numpy + Pillow (no TensorFlow): the JPEG encoder (libjpeg via Pillow, quality 95 like
`tf.image.encode_jpeg`) and the Lanczos kernel are the same definitions as the originals' but not
bit-identical to TensorFlow's; the crop follows `tf.image.crop_and_resize`'s sampling exactly.
"""

from __future__ import annotations

import difflib
import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

LIBERO_SUITES: tuple[str, ...] = ("libero_spatial", "libero_object", "libero_goal", "libero_10")
SPLITS = ("paper", "fair")
FAIR_EVAL_EVERY = 5  # `fair`: init states 4, 9, 14, ... (every fifth) are held out for evaluation


@dataclass(frozen=True)
class EvalProtocol:
    """How frames reach the policy and how long an episode may run."""

    name: str
    summary: str
    cameras: tuple[str, ...]
    """svrl camera names the policy is given: 'main' (LIBERO's agentview), 'wrist' (robot0_eye_in_hand)"""
    horizons: Mapping[str, int]
    """env steps per suite after the settle steps (the episode is truncated there)"""
    settle_steps: int = 10
    """no-op steps (zero motion, gripper open) after each reset so the objects come to rest; not counted"""
    render_size: int | None = 256
    """size the simulator renders at before the pipeline; None: the env's image size itself"""
    image_size: int | None = 224
    """policy input size the protocol defines; None: whatever size the env is asked for"""
    flip: bool = True
    """rotate 180°: LIBERO (robosuite, OpenGL convention) renders upside down"""
    jpeg_quality: int | None = 95
    center_crop_area: float = 0.9
    """share of the image AREA kept by the centre crop (OpenVLA's crop_scale); 1.0 = no crop"""
    proprio: str = "svrl"
    """'svrl': svrl's 15-D layout (docs/contracts.md); 'oft': OpenVLA-OFT's 8-D eef pos, axis-angle, gripper"""
    greedy: bool = True
    binarize_gripper: bool = True
    """send the gripper command's sign (-1 open, +1 close, 0 stays 0), as both papers' LIBERO loops do
    (`normalize_gripper_action(..., binarize=True)`); their sign inversion is a property of OpenVLA's RLDS data,
    not of the env, and svrl's convention already matches LIBERO's"""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def max_steps(self, suite: str) -> int:
        if suite not in self.horizons:
            raise KeyError(
                f"protocol {self.name!r} has no horizon for suite {suite!r} (has {sorted(self.horizons)})"
            )
        return int(self.horizons[suite])

    def frame(self, image: np.ndarray, size: int) -> np.ndarray:
        """One rendered uint8[H, W, 3] frame -> what the policy sees, uint8[size, size, 3]."""
        return protocol_image(
            image, size=size, flip=self.flip, jpeg_quality=self.jpeg_quality, crop_area=self.center_crop_area
        )

    def check_image_size(self, size: int) -> None:
        if self.image_size is not None and size != self.image_size:
            raise ValueError(
                f"protocol {self.name!r} gives the policy {self.image_size}x{self.image_size} images; the env "
                f"was asked for {size}. Use image_size {self.image_size} (svrl eval --image-size "
                f"{self.image_size}, env.image_size in a train config) or the 'plain' protocol"
            )


# ------------------------------------------------------------------ the image pipeline
def rotate_180(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image)[::-1, ::-1])


def jpeg_round_trip(image: np.ndarray, quality: int = 95) -> np.ndarray:
    """Encode and decode as JPEG, as the RLDS dataset builders stored LIBERO frames."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def lanczos_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Antialiased Lanczos-3 resize to size x size (tf.image.resize(method='lanczos3', antialias=True))."""
    from PIL import Image

    img = np.asarray(image, np.uint8)
    if img.shape[:2] == (size, size):
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS))


def center_crop_area(image: np.ndarray, area: float, size: int | None = None) -> np.ndarray:
    """Keep the centred `area` share of the image (side sqrt(area)) and resize it back, exactly as
    OpenVLA's `crop_and_resize` does with `tf.image.crop_and_resize` (bilinear, corner-aligned sampling:
    output pixel i reads input coordinate y1*(H-1) + i*(y2-y1)*(H-1)/(size-1)) on the image as float in
    [0, 1], then back to uint8 like `tf.image.convert_image_dtype` (x * 255.5, truncated)."""
    img = np.asarray(image)
    if img.ndim != 3 or img.dtype != np.uint8:
        raise ValueError(f"center_crop_area needs uint8[H, W, C], got {img.dtype} {img.shape}")
    if not 0.0 < area <= 1.0:
        raise ValueError(f"crop area must be in (0, 1], got {area}")
    h, w = img.shape[:2]
    size = int(size or h)
    side = math.sqrt(area)
    lo, hi = (1.0 - side) / 2.0, (1.0 + side) / 2.0

    def coords(n: int) -> np.ndarray:
        if size == 1:
            return np.array([0.5 * (lo + hi) * (n - 1)])
        return lo * (n - 1) + np.arange(size) * (hi - lo) * (n - 1) / (size - 1)

    ys, xs = coords(h), coords(w)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    f = img.astype(np.float32) / 255.0
    top = f[y0][:, x0] * (1 - fx) + f[y0][:, x1] * fx
    bottom = f[y1][:, x0] * (1 - fx) + f[y1][:, x1] * fx
    out = np.clip(top * (1 - fy) + bottom * fy, 0.0, 1.0)
    return np.clip(out * 255.5, 0, 255).astype(np.uint8)


def protocol_image(
    image: np.ndarray, *, size: int, flip: bool, jpeg_quality: int | None, crop_area: float
) -> np.ndarray:
    """flip -> JPEG round trip -> Lanczos resize to `size` -> centre crop of `crop_area` back to `size`."""
    img = np.asarray(image, np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"a frame must be uint8[H, W, 3], got {img.shape}")
    if flip:
        img = rotate_180(img)
    if jpeg_quality is not None:
        img = jpeg_round_trip(img, jpeg_quality)
    img = lanczos_resize(img, size)
    if crop_area < 1.0:
        img = center_crop_area(img, crop_area, size)
    return np.ascontiguousarray(img)


# ------------------------------------------------------------------ the protocols
def simplevla_rl() -> EvalProtocol:
    return EvalProtocol(
        name="simplevla_rl",
        summary="SimpleVLA-RL: agentview only, 224², flipped, JPEG, 90 % centre crop, 512 steps, greedy",
        cameras=("main",),
        horizons=dict.fromkeys(LIBERO_SUITES, 512),
        notes=(
            "RL trains on the 50 evaluation initial states (split 'paper'); use split 'fair' to hold some out",
        ),
    )


def openvla_oft() -> EvalProtocol:
    return EvalProtocol(
        name="openvla_oft",
        summary="OpenVLA-OFT: agentview + wrist 224², flipped, JPEG, 90 % crop, 8-D proprio, 220/280/300/520 steps",
        cameras=("main", "wrist"),
        horizons={"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520},
        proprio="oft",
    )


def plain() -> EvalProtocol:
    return EvalProtocol(
        name="plain",
        summary="upright frames at the env's image size, both cameras, svrl proprio, 512 steps",
        cameras=("main", "wrist"),
        horizons=dict.fromkeys(LIBERO_SUITES, 512),
        render_size=None,
        image_size=None,
        jpeg_quality=None,
        center_crop_area=1.0,
        binarize_gripper=False,
    )


PROTOCOLS: dict[str, Callable[[], EvalProtocol]] = {
    "simplevla_rl": simplevla_rl,
    "openvla_oft": openvla_oft,
    "plain": plain,
}


def get_protocol(name: str) -> EvalProtocol:
    if name not in PROTOCOLS:
        close = difflib.get_close_matches(str(name), PROTOCOLS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown evaluation protocol {name!r}{hint}; choose one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]()


def split_init_states(count: int, split: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(train indices, eval indices) of a task's `count` standard initial states."""
    if split == "paper":
        every = tuple(range(count))
        return every, every
    if split == "fair":
        held_out = tuple(i for i in range(count) if i % FAIR_EVAL_EVERY == FAIR_EVAL_EVERY - 1)
        return tuple(i for i in range(count) if i not in held_out), held_out
    raise ValueError(f"unknown init-state split {split!r}; choose one of {SPLITS}")
