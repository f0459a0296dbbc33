"""`Preprocessor`: the ONE function that turns an observation dict into model tensors.

SFT, GRPO rollouts, the GRPO loss, evaluation and the ROS node all call the same object, loaded from the
same checkpoint, so image geometry, proprio normalisation and prompt wording cannot drift between training
and deployment. The only train/serve difference is explicit: `train=True` enables random-shift
augmentation.

Input (docs/contracts.md), single or batched:
    {"images": {cam: uint8[(N,) H, W, 3]}, "proprio": float32[(N,) 15], "instruction": str | list[str]}
Output (`ModelInputs`, all batched, all fixed-shape so ONNX sees one graph):
    pixel_values   float32[N, C, 3, S, S] in [-1, 1]   (C cameras in config order, S = image_size)
    input_ids      int64[N, L]                          (L = max_text_len)
    attention_mask bool[N, L]
    proprio        float32[N, P]                        (only when the config uses proprio)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from svrl_policy.config import PolicyConfig
from svrl_policy.features import OBS_IMAGES, OBS_INSTRUCTION, OBS_PROPRIO
from svrl_policy.tokenizer import TextTokenizer

ModelInputs = dict[str, torch.Tensor]
INPUT_NAMES = ("pixel_values", "input_ids", "attention_mask", "proprio")

_PROPRIO_STD_FLOOR = 1e-2  # a dim that never moved in the data must not explode when it moves on the robot
_PROPRIO_CLIP = 5.0  # normalised proprio is clipped to +-5 std: out-of-distribution states stay bounded


class ObservationError(ValueError):
    """An observation does not follow docs/contracts.md; the message says which key and what was expected."""


def format_prompt(template: str, instruction: str) -> str:
    """Lower-case, single-spaced instruction inside the model's prompt template (OpenVLA lower-cases too)."""
    text = re.sub(r"\s+", " ", instruction).strip().lower()
    return template.format(instruction=text)


@dataclass(frozen=True)
class ProprioStats:
    mean: np.ndarray  # float32[P]
    std: np.ndarray  # float32[P], already floored

    @classmethod
    def fit(cls, proprio: np.ndarray) -> ProprioStats:
        p = np.asarray(proprio, dtype=np.float64)
        if p.ndim != 2 or p.shape[0] == 0:
            raise ValueError(f"ProprioStats.fit expects proprio[N, P] with N > 0, got {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError("ProprioStats.fit: proprio contains NaN/inf; clean the dataset first")
        return cls(
            mean=p.mean(0).astype(np.float32), std=np.maximum(p.std(0), _PROPRIO_STD_FLOOR).astype(np.float32)
        )

    @classmethod
    def identity(cls, dim: int) -> ProprioStats:
        return cls(mean=np.zeros(dim, np.float32), std=np.ones(dim, np.float32))

    def to_dict(self) -> dict[str, Any]:
        return {"proprio_mean": self.mean.tolist(), "proprio_std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProprioStats:
        mean = np.asarray(data["proprio_mean"], dtype=np.float32)
        std = np.asarray(data["proprio_std"], dtype=np.float32)
        if mean.shape != std.shape or not (np.isfinite(mean).all() and (std > 0).all()):
            raise ValueError("preprocessor.json: proprio_mean/std must be finite, same length, std > 0")
        return cls(mean=mean, std=std)


class Preprocessor:
    """Observation dict -> `ModelInputs`. Stateless apart from the fitted proprio statistics."""

    def __init__(self, config: PolicyConfig, tokenizer: TextTokenizer, proprio: ProprioStats | None = None):
        self.config = config
        self.tokenizer = tokenizer
        if config.use_proprio:
            proprio = proprio if proprio is not None else ProprioStats.identity(config.proprio_dim)
            if proprio.mean.shape != (config.proprio_dim,):
                raise ValueError(
                    f"proprio stats have {proprio.mean.size} dims but config.proprio_dim = {config.proprio_dim}"
                )
        self.proprio_stats = proprio
        self._mean = torch.from_numpy(proprio.mean) if proprio is not None else None
        self._std = torch.from_numpy(proprio.std) if proprio is not None else None

    # ------------------------------------------------------------------ public
    def __call__(
        self, obs: Mapping[str, Any], *, train: bool = False, generator: torch.Generator | None = None
    ) -> ModelInputs:
        obs = batch_if_single(obs)
        batch = _batch_size(obs)
        inputs: ModelInputs = {"pixel_values": self.images(obs, batch, train=train, generator=generator)}
        ids, mask = self.tokenizer.encode(self.prompts(obs[OBS_INSTRUCTION], batch))
        inputs["input_ids"] = torch.from_numpy(ids)
        inputs["attention_mask"] = torch.from_numpy(mask)
        if self.config.use_proprio:
            inputs["proprio"] = self.proprio(obs, batch)
        return inputs

    def prompts(self, instructions: Sequence[str], batch: int) -> list[str]:
        if len(instructions) != batch:
            raise ObservationError(f"'instruction' has {len(instructions)} entries for a batch of {batch}")
        return [format_prompt(self.config.prompt_template, str(s)) for s in instructions]

    def images(
        self,
        obs: Mapping[str, Any],
        batch: int,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        images = obs.get(OBS_IMAGES)
        if not isinstance(images, Mapping):
            raise ObservationError("observation needs 'images': {camera_name: uint8[N, H, W, 3]}")
        per_cam = []
        for cam in self.config.cameras:
            if cam not in images:
                raise ObservationError(
                    f"camera {cam!r} missing from obs['images'] (has {sorted(images)}); this policy was "
                    f"trained with cameras {list(self.config.cameras)}"
                )
            per_cam.append(self._one_camera(cam, images[cam], batch, train, generator))
        return torch.stack(per_cam, dim=1)  # (N, C, 3, S, S)

    def proprio(self, obs: Mapping[str, Any], batch: int) -> torch.Tensor:
        if OBS_PROPRIO not in obs or obs[OBS_PROPRIO] is None:
            raise ObservationError(
                f"this policy uses proprioception: obs['proprio'] must be float32[N, {self.config.proprio_dim}]"
            )
        p = torch.as_tensor(np.asarray(obs[OBS_PROPRIO], dtype=np.float32))
        if p.shape != (batch, self.config.proprio_dim):
            raise ObservationError(
                f"obs['proprio'] has shape {tuple(p.shape)}, expected ({batch}, {self.config.proprio_dim})"
            )
        p = (p - self._mean) / self._std
        return p.clamp(-_PROPRIO_CLIP, _PROPRIO_CLIP)

    def to_dict(self) -> dict[str, Any]:
        return self.proprio_stats.to_dict() if self.proprio_stats is not None else {}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    # ------------------------------------------------------------------ images
    def _one_camera(
        self, cam: str, img: Any, batch: int, train: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        x = torch.as_tensor(np.ascontiguousarray(img)) if not isinstance(img, torch.Tensor) else img
        if x.ndim == 4 and x.shape[0] != batch:
            raise ObservationError(
                f"obs['images'][{cam!r}] has {x.shape[0]} frames but obs['instruction'] has {batch} entries"
            )
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[0] != batch or x.shape[-1] != 3:
            raise ObservationError(
                f"obs['images'][{cam!r}] must be uint8[{batch}, H, W, 3] (RGB), got {x.dtype} {tuple(x.shape)}"
            )
        x = x.permute(0, 3, 1, 2).float()  # (N, 3, H, W)
        size = self.config.image_size
        crop = self.config.center_crop
        if crop < 1.0:
            h, w = x.shape[-2:]
            ch, cw = max(1, round(h * crop)), max(1, round(w * crop))
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[:, :, top : top + ch, left : left + cw]
        if tuple(x.shape[-2:]) != (size, size):
            # Direct resize like OpenVLA (non-square cameras are squeezed, never cropped): identical in sim
            # and on the robot, which is all that matters.
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if train and self.config.augment_shift > 0:
            x = random_shift(x, self.config.augment_shift, generator)
        return x / 127.5 - 1.0

    def example_observation(self, batch: int = 1, seed: int = 0) -> dict[str, Any]:
        """A random, contract-conforming observation batch (export tracing, benchmarks, tests)."""
        rng = np.random.default_rng(seed)
        size = self.config.image_size
        obs: dict[str, Any] = {
            OBS_IMAGES: {
                c: rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8) for c in self.config.cameras
            },
            OBS_INSTRUCTION: ["put the red cube on the plate"] * batch,
        }
        if self.config.use_proprio:
            obs[OBS_PROPRIO] = rng.normal(size=(batch, self.config.proprio_dim)).astype(np.float32)
        return obs


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by `pad` px, then crop each sample at a random offset."""
    return shift_images(x, pad, random_shift_offsets(x.shape[0], pad, generator))


def random_shift_offsets(n: int, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 2) crop offsets (row, column) in [0, 2 * pad] for `shift_images`."""
    return torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)


def shift_images(x: torch.Tensor, pad: int, offsets: torch.Tensor) -> torch.Tensor:
    """Replicate-pad (n, c, h, w) images by `pad` px and crop sample i at offsets[i] = (row, column): image
    content moves by (pad - offset) pixels, which is how a caller moves labels drawn on the image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


def batch_if_single(obs: Mapping[str, Any]) -> Mapping[str, Any]:
    """A single observation (instruction is a str) becomes a batch of one; a batch passes through."""
    if OBS_INSTRUCTION not in obs:
        raise ObservationError("observation needs 'instruction' (str, or list[str] for a batch)")
    if not isinstance(obs[OBS_INSTRUCTION], str):
        return obs
    out: dict[str, Any] = {
        OBS_INSTRUCTION: [obs[OBS_INSTRUCTION]],
        OBS_IMAGES: {k: np.asarray(v)[None] for k, v in obs.get(OBS_IMAGES, {}).items()},
    }
    if obs.get(OBS_PROPRIO) is not None:
        out[OBS_PROPRIO] = np.asarray(obs[OBS_PROPRIO], dtype=np.float32)[None]
    return out


def stack_observations(observations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """list of single observations -> one batched observation (what VectorEnv returns)."""
    if not observations:
        raise ObservationError("stack_observations needs at least one observation")
    first = observations[0]
    out: dict[str, Any] = {
        OBS_INSTRUCTION: [o[OBS_INSTRUCTION] for o in observations],
        OBS_IMAGES: {k: np.stack([o[OBS_IMAGES][k] for o in observations]) for k in first[OBS_IMAGES]},
    }
    if first.get(OBS_PROPRIO) is not None:
        out[OBS_PROPRIO] = np.stack([o[OBS_PROPRIO] for o in observations]).astype(np.float32)
    return out


def _batch_size(obs: Mapping[str, Any]) -> int:
    instr = obs[OBS_INSTRUCTION]
    if isinstance(instr, str) or not isinstance(instr, Sequence):
        raise ObservationError("batched obs['instruction'] must be a list of str")
    return len(instr)
