"""`PolicyConfig`: every number that fixes a policy's shape and its input/output interface.

The config is frozen and validated on construction, stored as `config.json` in every checkpoint, and is the
only thing needed to rebuild the network before its weights are loaded. Named presets live in one registry
(`get_preset`), so "tiny", "small" and "oft" each mean exactly one thing everywhere.

This module imports nothing heavy: the CLI parses configs without loading torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from svrl_policy.features import ACTION_DIMS, CAMERAS, PROPRIO_DIM

CONFIG_FORMAT_VERSION = 1
ARCHITECTURES = ("tiny", "hf_vla")
TOKENIZERS = ("byte", "word", "hf")
WORD_BUCKETS = 4096  # hashed-word vocabulary of the "word" tokenizer
OFT_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"


class ConfigError(ValueError):
    """A config value breaks a rule; the message names the field, the value and the rule."""


class UnknownPresetError(KeyError):
    """No preset of that name; the message suggests the closest one."""

    def __str__(self) -> str:  # KeyError would print the message inside quotes
        return str(self.args[0])


@dataclass(frozen=True)
class PolicyConfig:
    """Shape and interface of one policy. Derived values are properties, never stored twice."""

    preset: str = "tiny"  # name it was built from (informational; overrides may follow)
    architecture: str = "tiny"  # "tiny" (models/tiny.py) or "hf_vla" (models/hf_vla.py)

    # --- action interface (SimpleVLA-RL: K=8 x D=7 tokens of 256 bins, decoded in one pass) ---
    action_space: str = "ee_delta"
    action_dim: int = 7
    chunk_len: int = 8
    num_bins: int = 256
    gripper_index: int | None = 6  # binary dim (-1 open / +1 close), decoded by sign; None: no gripper

    # --- observation interface ---
    cameras: tuple[str, ...] = CAMERAS
    image_size: int = 128  # square model input; other camera sizes are resized by the Preprocessor
    center_crop: float = 1.0  # fraction of the side kept before resizing, at train AND serve time
    augment_shift: int = 4  # train-time random shift in pixels (pad + random crop); 0 disables
    proprio_dim: int = PROPRIO_DIM  # 0 = the policy ignores proprioception

    # --- language ---
    tokenizer: str = "byte"  # "byte" / "word" (offline, tiny) or "hf" (the backbone's own tokenizer)
    max_text_len: int = 96  # tokens after the prompt template; longer prompts are truncated (with a warning).
    # 96 bytes hold every svrl_sim instruction whole (the longest is 82): the goal suite tells tasks apart
    # by their last words, so truncation would make them indistinguishable.
    prompt_template: str = "{instruction}"

    # --- tiny backbone ---
    width: int = 192
    depth: int = 4
    heads: int = 6
    mlp_ratio: float = 2.0
    patch_size: int = 16  # conv stem stride: image_size / patch_size patches per side
    dropout: float = 0.0
    keypoints: int = 0  # spatial-softmax keypoints per camera, each one token (0: patch tokens only)
    # Keypoints per camera whose feature filter is read from the instruction (models/tiny.py): they can find
    # "the red cube" among other red things and cubes, where a fixed filter finds the mean of all of them.
    text_keypoints: int = 0
    # Residual dilated 3x3 conv blocks (dilation 1, 2, 4, ...) over the stride-4 map the keypoints read: one
    # linear 4x4 conv sees a 4-px patch and can only match colours; a few blocks see the neighbouring
    # objects, which is what tells "the cube next to the bowl" from the other cube. 0: none.
    keypoint_refine: int = 0
    # Outputs of an auxiliary head trained on privileged simulator state (SFT `aux_weight`); read by the
    # training loss only, never by acting, so serving and export ignore it. 0: no head.
    aux_dim: int = 0

    # --- hf_vla backbone (transformers configs as plain dicts, so no download is needed to rebuild) ---
    vision_config: dict[str, Any] | None = None  # SiglipVisionConfig kwargs
    text_config: dict[str, Any] | None = None  # Qwen2Config / LlamaConfig kwargs incl. "model_type"
    vision_pretrained: str | None = None  # local dir or hub id, read only by `build_pretrained_backbone`
    text_pretrained: str | None = None  # local dir or hub id (also the tokenizer source for "hf")
    action_token_start: int | None = None  # first of the 256 action-token ids; None: vocab_size - num_bins

    format_version: int = field(default=CONFIG_FORMAT_VERSION)

    def __post_init__(self) -> None:
        # Normalise JSON lists to tuples so a loaded config equals the one that was saved.
        if isinstance(self.cameras, list):
            object.__setattr__(self, "cameras", tuple(self.cameras))
        self._validate()

    # ------------------------------------------------------------------ derived
    @property
    def num_action_tokens(self) -> int:
        """K*D: one token per (chunk step, action dimension), laid out k*D + d."""
        return self.chunk_len * self.action_dim

    @property
    def num_patches_per_camera(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def use_proprio(self) -> bool:
        return self.proprio_dim > 0

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        def fail(name: str, rule: str) -> None:
            raise ConfigError(f"PolicyConfig.{name} = {getattr(self, name)!r}: {rule}")

        if self.format_version != CONFIG_FORMAT_VERSION:
            fail("format_version", f"this svrl reads version {CONFIG_FORMAT_VERSION}")
        if self.architecture not in ARCHITECTURES:
            fail("architecture", f"must be one of {ARCHITECTURES}")
        if self.action_space not in ACTION_DIMS:
            fail("action_space", f"must be one of {tuple(ACTION_DIMS)}")
        if self.action_dim != ACTION_DIMS[self.action_space]:
            fail(
                "action_dim", f"action_space {self.action_space!r} has {ACTION_DIMS[self.action_space]} dims"
            )
        if self.chunk_len < 1:
            fail("chunk_len", "must be >= 1")
        if not 2 <= self.num_bins <= 65536:
            fail("num_bins", "must be in [2, 65536]")
        if self.gripper_index is not None and not 0 <= self.gripper_index < self.action_dim:
            fail("gripper_index", f"must be None or in [0, {self.action_dim})")
        if not self.cameras:
            fail("cameras", "needs at least one camera")
        if len(set(self.cameras)) != len(self.cameras):
            fail("cameras", "camera names must be unique")
        if self.image_size < 16:
            fail("image_size", "must be >= 16 pixels")
        if not 0.1 <= self.center_crop <= 1.0:
            fail("center_crop", "must be in [0.1, 1.0]")
        if not 0 <= self.augment_shift < self.image_size // 4:
            fail("augment_shift", f"must be in [0, image_size/4 = {self.image_size // 4})")
        if self.proprio_dim < 0:
            fail("proprio_dim", "must be >= 0 (0 disables proprioception)")
        if self.tokenizer not in TOKENIZERS:
            fail("tokenizer", f"must be one of {TOKENIZERS}")
        if self.max_text_len < 4:
            fail("max_text_len", "must be >= 4 tokens")
        if "{instruction}" not in self.prompt_template:
            fail("prompt_template", "must contain the placeholder {instruction}")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", "must be in [0, 1)")
        if self.architecture == "tiny":
            if self.tokenizer not in ("byte", "word"):
                fail("tokenizer", "the tiny architecture uses an offline tokenizer: 'byte' or 'word'")
            if self.keypoints < 0:
                fail("keypoints", "must be >= 0 (0: no keypoint tokens)")
            if self.text_keypoints < 0:
                fail("text_keypoints", "must be >= 0 (0: no instruction-conditioned keypoints)")
            if self.aux_dim < 0:
                fail("aux_dim", "must be >= 0 (0: no auxiliary head)")
            if not 0 <= self.keypoint_refine <= 6:
                fail("keypoint_refine", "must be in [0, 6] (dilations up to 32 px of the stride-4 map)")
            if self.keypoint_refine and not (self.keypoints or self.text_keypoints):
                fail("keypoint_refine", "refines the map keypoints read: needs keypoints or text_keypoints")
            patch = self.patch_size
            if patch < 4 or patch & (patch - 1):
                fail("patch_size", "must be a power of two >= 4 (conv stem = 4x4 then 2x2 stages)")
            if self.image_size % patch:
                fail("image_size", f"must be a multiple of patch_size ({patch})")
            if self.width % self.heads:
                fail("width", f"must be divisible by heads ({self.heads})")
            if self.depth < 1:
                fail("depth", "must be >= 1")
            if self.mlp_ratio <= 0:
                fail("mlp_ratio", "must be > 0")
        else:
            if self.aux_dim:
                fail("aux_dim", "the auxiliary head exists in the tiny architecture only")
            if self.text_keypoints:
                fail(
                    "text_keypoints", "instruction-conditioned keypoints exist in the tiny architecture only"
                )
            if self.keypoint_refine:
                fail("keypoint_refine", "keypoints exist in the tiny architecture only")
            if self.vision_config is None or self.text_config is None:
                fail("vision_config", "hf_vla needs both vision_config and text_config dicts")
            if "model_type" not in self.text_config:
                fail("text_config", "needs a 'model_type' ('qwen2' or 'llama')")
            vocab = int(self.text_config.get("vocab_size", 0))
            start = self.action_token_start if self.action_token_start is not None else vocab - self.num_bins
            if start < 0 or start + self.num_bins > vocab:
                fail(
                    "action_token_start",
                    f"action tokens [{start}, {start + self.num_bins}) exceed vocab {vocab}",
                )

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cameras"] = list(self.cameras)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        """Strict: an unknown key is an error (a typo must not silently fall back to a default)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            hints = {k: difflib.get_close_matches(k, known, n=1) for k in unknown}
            hint_txt = ", ".join(
                f"{k!r}" + (f" (did you mean {v[0]!r}?)" if v else "") for k, v in hints.items()
            )
            raise ConfigError(f"unknown PolicyConfig field(s): {hint_txt}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **overrides: Any) -> PolicyConfig:
        """A validated copy with some fields changed; unknown names get a "did you mean"."""
        return PolicyConfig.from_dict({**self.to_dict(), **overrides})


# ---------------------------------------------------------------------------------------------- presets
_PRESETS: dict[str, Callable[[], PolicyConfig]] = {}


def register_preset(name: str) -> Callable[[Callable[[], PolicyConfig]], Callable[[], PolicyConfig]]:
    def deco(fn: Callable[[], PolicyConfig]) -> Callable[[], PolicyConfig]:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} registered twice")
        _PRESETS[name] = fn
        return fn

    return deco


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str, **overrides: Any) -> PolicyConfig:
    """The named preset, optionally with validated field overrides (e.g. `image_size=96`)."""
    if name not in _PRESETS:
        close = difflib.get_close_matches(name, _PRESETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownPresetError(
            f"unknown policy preset {name!r}.{hint} Available: {', '.join(preset_names())}"
        )
    cfg = _PRESETS[name]()
    return cfg.replace(**overrides) if overrides else cfg


@register_preset("tiny")
def _tiny() -> PolicyConfig:
    # ~1.4 M parameters: both cameras + proprio (the GRPO probe showed image-only from scratch cannot
    # localise the gripper), 128 px, 8x8 patches per camera, 4 bidirectional layers.
    return PolicyConfig(preset="tiny")


@register_preset("tiny96")
def _tiny96() -> PolicyConfig:
    # Same network at 96 px (6x6 patches per camera): ~1.6x cheaper per forward pass.
    return PolicyConfig(preset="tiny96", image_size=96, augment_shift=3)


@register_preset("debug")
def _debug() -> PolicyConfig:
    # For tests and CI only: trains in seconds, shapes identical to tiny except the sizes.
    return PolicyConfig(preset="debug", image_size=64, augment_shift=2, width=64, depth=2, heads=2)


def _siglip_base_224() -> dict[str, Any]:
    return {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 16,
    }


@register_preset("small")
def _small() -> PolicyConfig:
    # SigLIP-base/16 (86 M) + Qwen2.5-0.5B (494 M): fits one consumer GPU for RL.
    return PolicyConfig(
        preset="small",
        architecture="hf_vla",
        image_size=224,
        augment_shift=8,
        tokenizer="hf",
        max_text_len=48,
        prompt_template=OFT_PROMPT,
        vision_config=_siglip_base_224(),
        text_config={
            "model_type": "qwen2",
            "vocab_size": 151936,
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True,
        },
        vision_pretrained="google/siglip-base-patch16-224",
        text_pretrained="Qwen/Qwen2.5-0.5B",
    )


@register_preset("oft")
def _oft() -> PolicyConfig:
    # OpenVLA-OFT-like: SigLIP-so400m/14 + Llama-2-7B, OFT prompt, the last 256 of Llama-2's 32000 ids as
    # action tokens (SimpleVLA-RL reads actions from the LM head there). One SigLIP tower instead of OFT's
    # fused SigLIP+DINOv2; both cameras + proprio as in OFT's best LIBERO setup.
    return PolicyConfig(
        preset="oft",
        architecture="hf_vla",
        image_size=224,
        augment_shift=8,
        center_crop=0.9,
        tokenizer="hf",
        max_text_len=48,
        prompt_template=OFT_PROMPT,
        vision_config={
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": 32000,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
        },
        vision_pretrained="google/siglip-so400m-patch14-224",
        text_pretrained="meta-llama/Llama-2-7b-hf",
    )


@register_preset("debug-hf")
def _debug_hf() -> PolicyConfig:
    # A few-hundred-k-parameter hf_vla for tests: real transformers classes, random weights, byte tokenizer.
    return PolicyConfig(
        preset="debug-hf",
        architecture="hf_vla",
        image_size=32,
        augment_shift=2,
        tokenizer="byte",
        max_text_len=88,
        prompt_template=OFT_PROMPT,
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": 640,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "tie_word_embeddings": False,
        },
    )


@register_preset("tiny96kp")
def _tiny96kp() -> PolicyConfig:
    # tiny96 with what a from-scratch base needs to learn precise grasps in CPU hours: 16 spatial-softmax
    # keypoints per camera (sub-patch object positions) and hashed-word prompts (one token per word).
    return PolicyConfig(
        preset="tiny96kp", image_size=96, augment_shift=3, tokenizer="word", max_text_len=32, keypoints=16
    )


@register_preset("tiny96tk")
def _tiny96tk() -> PolicyConfig:
    # tiny96kp + 8 instruction-conditioned keypoints per camera: a spatial softmax whose filter the prompt
    # chooses, so a keypoint can follow the named object rather than the mean of everything of its colour.
    return _tiny96kp().replace(preset="tiny96tk", text_keypoints=8)


@register_preset("tiny96tkr")
def _tiny96tkr() -> PolicyConfig:
    # tiny96tk whose keypoints read a refined map (3 residual blocks, dilations 1, 2, 4): pulled onto the
    # focus pixels (stem and keypoints alone, 350 steps), loss 0.16 against tiny96tk's 0.42.
    return _tiny96tk().replace(preset="tiny96tkr", keypoint_refine=3)
