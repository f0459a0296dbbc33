"""Checkpoint directories: plain JSON + safetensors, written atomically, read with specific errors.

    ckpt/
      config.json          PolicyConfig (rebuilds the network offline)
      model.safetensors    weights (never pickle: nothing here can execute code on load)
      codec.json           ActionCodec: q01/q99 per action dim, 256 bins, chunk layout, gripper index
      preprocessor.json    proprio mean/std (image geometry and prompt come from config.json)
      tokenizer.json       {"type": "byte", ...} or {"type": "hf", "path": "tokenizer"} + tokenizer/
      manifest.json        sha256 of every file above + free-form training metadata
      policy.onnx          optional, written by `svrl export`; bound to the weights by their sha256
      policy.engine        optional TensorRT engine built from policy.onnx

A save goes to a hidden temporary sibling directory which is renamed into place, so a crash mid-save never
leaves a half-written checkpoint under the real name; an existing checkpoint is moved aside first and
deleted only after the new one is in place.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from svrl_policy.checkpoint_files import (
    CODEC_FILE,
    CONFIG_FILE,
    MANIFEST_FILE,
    PREPROCESSOR_FILE,
    TOKENIZER_FILE,
    file_sha256,
)
from svrl_policy.codec import ActionCodec
from svrl_policy.config import ConfigError, PolicyConfig
from svrl_policy.preprocess import Preprocessor, ProprioStats
from svrl_policy.tokenizer import HFTokenizer, TextTokenizer, tokenizer_from_dict

WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "policy.onnx"
ENGINE_FILE = "policy.engine"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, CODEC_FILE, PREPROCESSOR_FILE, TOKENIZER_FILE, MANIFEST_FILE)
FORMAT = "svrl-policy"


class CheckpointError(Exception):
    """Base class: anything wrong with a checkpoint directory."""


class MissingCheckpointFileError(CheckpointError, FileNotFoundError):
    """A required file (or the directory itself) is absent."""


class CorruptCheckpointError(CheckpointError):
    """A file exists but cannot be parsed, fails its checksum, or holds non-finite weights."""


class CheckpointMismatchError(CheckpointError):
    """Files parse, but disagree with each other (config vs weights shapes, config vs codec...)."""


@dataclass
class PolicyComponents:
    """Everything in a checkpoint except the weights: enough for any runtime to preprocess and decode."""

    config: PolicyConfig
    codec: ActionCodec
    proprio_stats: ProprioStats | None
    tokenizer: TextTokenizer
    manifest: dict[str, Any] = field(default_factory=dict)

    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self.config, self.tokenizer, self.proprio_stats)


# ---------------------------------------------------------------------------------------------- saving
@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `target` only if the block completes."""
    target = Path(target).absolute()
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"cannot save a checkpoint to {target}: it exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / CONFIG_FILE).exists():
        raise CheckpointError(
            f"refusing to replace {target}: it is a non-empty directory without {CONFIG_FILE}, so it does not "
            "look like a checkpoint. Choose another output path or remove it yourself."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is read by other users/containers too
    try:
        yield tmp
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_checkpoint(
    directory: str | Path,
    *,
    config: PolicyConfig,
    model: nn.Module,
    codec: ActionCodec,
    preprocessor: Preprocessor,
    metadata: dict[str, Any] | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write a complete checkpoint atomically; returns its path.

    `extra(tmp)` may add files beside the policy's (a trainer's resume state) so that both appear in one
    rename, never one without the other. They are written after the manifest and not listed in it: the
    checkpoint stays valid when a trainer later drops them.
    """
    from safetensors.torch import save_model

    _check_codec_matches(config, codec)
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        _write_json(tmp / CONFIG_FILE, config.to_dict())
        _write_json(tmp / CODEC_FILE, codec.to_dict())
        _write_json(tmp / PREPROCESSOR_FILE, preprocessor.to_dict())
        tokenizer = preprocessor.tokenizer
        _write_json(tmp / TOKENIZER_FILE, tokenizer.to_dict())
        if isinstance(tokenizer, HFTokenizer):
            tokenizer.save(tmp / tokenizer.to_dict()["path"])
        # save_model (not save_file) handles tied weights, e.g. a decoder's shared embedding/LM head.
        save_model(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "svrl": FORMAT})
        files = {p.relative_to(tmp).as_posix(): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        _write_json(
            tmp / MANIFEST_FILE,
            {
                "format": FORMAT,
                "format_version": 1,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "sha256": files,
                "metadata": metadata or {},
            },
        )
        if extra is not None:
            extra(tmp)
    return directory.absolute()


# ---------------------------------------------------------------------------------------------- loading
def _read_json(directory: Path, name: str) -> Any:
    path = directory / name
    if not path.is_file():
        raise MissingCheckpointFileError(
            f"checkpoint {directory} has no {name}. A checkpoint needs {', '.join(REQUIRED_FILES)}; "
            "was it copied completely, or saved by `Policy.save_pretrained`?"
        )
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptCheckpointError(
            f"{path} is not valid JSON ({exc}); re-copy or re-save the checkpoint"
        ) from exc


def check_directory(directory: str | Path) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingCheckpointFileError(f"checkpoint directory {directory} does not exist")
    return directory


def verify_checksums(directory: Path, manifest: dict[str, Any]) -> None:
    """Compare every file against the sha256 recorded at save time (catches bit rot and partial copies)."""
    for name, expected in manifest.get("sha256", {}).items():
        path = directory / name
        if not path.is_file():
            raise MissingCheckpointFileError(
                f"checkpoint {directory} is missing {name} (listed in {MANIFEST_FILE})"
            )
        if file_sha256(path) != expected:
            raise CorruptCheckpointError(
                f"{path} does not match the sha256 recorded in {MANIFEST_FILE}: the file was modified or "
                "damaged after saving. Re-copy the checkpoint (or pass verify=False to load it anyway)."
            )


def load_components(directory: str | Path, *, verify: bool = True) -> PolicyComponents:
    """Config, codec, preprocessor stats and tokenizer of a checkpoint (no weights, no torch model)."""
    directory = check_directory(directory)
    manifest = _read_json(directory, MANIFEST_FILE)
    if manifest.get("format") != FORMAT:
        raise CorruptCheckpointError(
            f"{directory / MANIFEST_FILE}: format is {manifest.get('format')!r}, not {FORMAT!r}"
        )
    for name in REQUIRED_FILES:
        if not (directory / name).is_file():
            raise MissingCheckpointFileError(f"checkpoint {directory} has no {name}")
    if verify:
        verify_checksums(directory, manifest)
    try:
        config = PolicyConfig.from_dict(_read_json(directory, CONFIG_FILE))
    except (ConfigError, TypeError) as exc:
        raise CorruptCheckpointError(f"{directory / CONFIG_FILE}: {exc}") from exc
    try:
        codec = ActionCodec.from_dict(_read_json(directory, CODEC_FILE))
    except (KeyError, ValueError, TypeError) as exc:
        raise CorruptCheckpointError(f"{directory / CODEC_FILE}: {exc}") from exc
    _check_codec_matches(config, codec)
    pre = _read_json(directory, PREPROCESSOR_FILE)
    try:
        stats = ProprioStats.from_dict(pre) if config.use_proprio else None
    except (KeyError, ValueError) as exc:
        raise CorruptCheckpointError(f"{directory / PREPROCESSOR_FILE}: {exc}") from exc
    if stats is not None and stats.mean.shape != (config.proprio_dim,):
        raise CheckpointMismatchError(
            f"{PREPROCESSOR_FILE} has {stats.mean.size} proprio dims but config.proprio_dim = {config.proprio_dim}"
        )
    try:
        tokenizer = tokenizer_from_dict(_read_json(directory, TOKENIZER_FILE), directory)
    except (KeyError, ValueError) as exc:
        raise CorruptCheckpointError(f"{directory / TOKENIZER_FILE}: {exc}") from exc
    if tokenizer.max_length != config.max_text_len:
        raise CheckpointMismatchError(
            f"{TOKENIZER_FILE} max_length={tokenizer.max_length} but config.max_text_len={config.max_text_len}"
        )
    return PolicyComponents(config, codec, stats, tokenizer, manifest)


def load_weights(model: nn.Module, directory: str | Path) -> None:
    """Load model.safetensors into `model`, strictly: every key present, every shape equal, all finite."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise MissingCheckpointFileError(f"checkpoint {directory} has no {WEIGHTS_FILE}")
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own SafetensorError or OSError/ValueError
        raise CorruptCheckpointError(
            f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc}). It may be truncated; "
            "re-copy or re-save the checkpoint."
        ) from exc
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [
        f"{k}: file {shapes[k]} vs model {expected[k]}"
        for k in shapes
        if k in expected and shapes[k] != expected[k]
    ]
    if wrong:
        raise CheckpointMismatchError(
            f"{path}: {len(wrong)} tensor shape(s) differ from what config.json builds, e.g. "
            + "; ".join(wrong[:3])
            + ". The weights were saved with a different config (preset/size)."
        )
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as exc:
        raise CorruptCheckpointError(
            f"{path}: could not read tensor data ({type(exc).__name__}: {exc})"
        ) from exc
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"{path} does not match config.json: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CorruptCheckpointError(f"{path}: tensor {name!r} holds NaN/inf values")


def _check_codec_matches(config: PolicyConfig, codec: ActionCodec) -> None:
    problems = []
    if codec.action_dim != config.action_dim:
        problems.append(f"action_dim {codec.action_dim} vs {config.action_dim}")
    if codec.chunk_len != config.chunk_len:
        problems.append(f"chunk_len {codec.chunk_len} vs {config.chunk_len}")
    if codec.num_bins != config.num_bins:
        problems.append(f"num_bins {codec.num_bins} vs {config.num_bins}")
    if codec.gripper_index != config.gripper_index:
        problems.append(f"gripper_index {codec.gripper_index} vs {config.gripper_index}")
    if problems:
        raise CheckpointMismatchError("codec and config disagree (codec vs config): " + ", ".join(problems))
