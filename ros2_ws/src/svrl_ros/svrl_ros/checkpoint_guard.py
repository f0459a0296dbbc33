"""Which checkpoint may replace the one a running policy_server serves: the guard of the transfer loop.

trainer_node announces every checkpoint GRPO writes (svrl/checkpoint); a policy_server that follows them
loads one only when it drives the robot exactly as the running one does apart from its weights:

- its files are intact: the interface files (config.json, codec.json, preprocessor.json, tokenizer.json
  and the tokenizer folder) match the sha256 the manifest recorded (the runtime then verifies every file,
  weights included, as it loads);
- its *interface fingerprint* equals the running checkpoint's: the sha256 of
  - the action interface of config.json: action_space, action_dim, chunk_len, num_bins, gripper_index;
  - the observation interface of config.json: cameras, proprio_dim, tokenizer, max_text_len,
    prompt_template;
  - codec.json whole (the q01/q99 bin edges: the same token must mean the same motion);
  - preprocessor.json whole (the proprio mean/std: the same joints must mean the same input);
  - tokenizer.json and the tokenizer files (the same instruction must mean the same tokens).
  GRPO only changes weights, so every checkpoint of one run, and the SFT checkpoint it started from,
  share one fingerprint; a checkpoint from another codec fit, another action space or other cameras
  does not. The network's size (preset, width, depth, image_size) is free: the Preprocessor resizes.
- the announcement describes these files: its checkpoint_id, action_space and fingerprint equal the ones
  recomputed here (the message is compared, never trusted).

ROS-free and torch-free (plain JSON and hashlib; file names and checksum from svrl_policy.checkpoint_files, the
ones svrl_policy.checkpoint writes with), so the trainer side and the robot side compute the
same fingerprint with the same code, and tests need no DDS.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from svrl_policy.checkpoint_files import (
    CODEC_FILE,
    CONFIG_FILE,
    MANIFEST_FILE,
    PREPROCESSOR_FILE,
    TOKENIZER_FILE,
    file_sha256,
)
from svrl_ros.learned_policy import checkpoint_id as content_id

TOKENIZER_FOLDER = "tokenizer/"  # an "hf" tokenizer's files, listed in the manifest under this prefix
ACTION_FIELDS = ("action_space", "action_dim", "chunk_len", "num_bins", "gripper_index")
OBSERVATION_FIELDS = ("cameras", "proprio_dim", "tokenizer", "max_text_len", "prompt_template")
INTERFACE_FILES = (CONFIG_FILE, CODEC_FILE, PREPROCESSOR_FILE, TOKENIZER_FILE)


class CheckpointRefused(ValueError):
    """A checkpoint that must not replace the running one; the message says what differs or is broken."""


@dataclass(frozen=True)
class CheckpointInterface:
    """What the guard compares: the checkpoint's id, action space and interface fingerprint.

    `parts` keeps the fingerprinted values by name, so a refusal can say *what* differs, not only that
    two hashes do.
    """

    path: Path
    checkpoint_id: str
    action_space: str
    fingerprint: str
    parts: dict[str, Any]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CheckpointRefused(f"{path} is missing: not a complete svrl policy checkpoint") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointRefused(f"{path} cannot be read as JSON: {error}") from error


def read_interface(ckpt_dir: str | Path) -> CheckpointInterface:
    """The interface of the checkpoint at `ckpt_dir`, after checking its interface files' checksums.

    Raises CheckpointRefused naming the file when the directory, its manifest or an interface file is
    missing, unreadable or differs from the checksum recorded at save time.
    """
    path = Path(ckpt_dir)
    if not str(ckpt_dir).strip():
        raise CheckpointRefused("the checkpoint path is empty")
    if not path.is_dir():
        raise CheckpointRefused(f"{path} is not a directory")
    manifest = _read_json(path / MANIFEST_FILE)
    checksums = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not isinstance(checksums, dict):
        raise CheckpointRefused(f"{path / MANIFEST_FILE} lists no sha256 checksums")
    tokenizer_files = sorted(name for name in checksums if name.startswith(TOKENIZER_FOLDER))
    for name in (*INTERFACE_FILES, *tokenizer_files):
        if name not in checksums:
            raise CheckpointRefused(f"{path / MANIFEST_FILE} has no checksum for {name}")
        try:
            actual = file_sha256(path / name)
        except OSError as error:
            raise CheckpointRefused(f"{path / name} cannot be read: {error}") from error
        if actual != checksums[name]:
            raise CheckpointRefused(
                f"{path / name} does not match the sha256 in {MANIFEST_FILE}: modified or damaged after saving"
            )
    config = _read_json(path / CONFIG_FILE)
    if not isinstance(config, dict):
        raise CheckpointRefused(f"{path / CONFIG_FILE} is not a JSON object")
    missing = [f for f in (*ACTION_FIELDS, *OBSERVATION_FIELDS) if f not in config]
    if missing:
        raise CheckpointRefused(f"{path / CONFIG_FILE} lacks {missing}")
    parts: dict[str, Any] = {f: config[f] for f in (*ACTION_FIELDS, *OBSERVATION_FIELDS)}
    parts["codec"] = _read_json(path / CODEC_FILE)
    parts["proprio_stats"] = _read_json(path / PREPROCESSOR_FILE)
    parts["tokenizer_config"] = _read_json(path / TOKENIZER_FILE)
    parts["tokenizer_files"] = {name: checksums[name] for name in tokenizer_files}
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    try:
        ckpt_id = content_id(path)
    except FileNotFoundError as error:  # CheckpointNotFoundError: the manifest vanished meanwhile
        raise CheckpointRefused(str(error)) from error
    return CheckpointInterface(
        path=path.resolve(),
        checkpoint_id=ckpt_id,
        action_space=str(config["action_space"]),
        fingerprint=hashlib.sha256(canonical).hexdigest(),
        parts=parts,
    )


def differences(running: CheckpointInterface, candidate: CheckpointInterface) -> list[str]:
    """The fingerprinted parts that differ, by name (empty when the fingerprints are equal)."""
    if running.fingerprint == candidate.fingerprint:
        return []
    names = sorted(set(running.parts) | set(candidate.parts))
    changed = []
    for name in names:
        old, new = running.parts.get(name), candidate.parts.get(name)
        if old != new:
            changed.append(
                f"{name} {old!r} -> {new!r}" if name in (*ACTION_FIELDS, *OBSERVATION_FIELDS) else name
            )
    return changed


def check_compatible(running: CheckpointInterface, candidate: CheckpointInterface) -> None:
    """Raise CheckpointRefused unless `candidate` has the running checkpoint's action space and codec."""
    if candidate.action_space != running.action_space:
        raise CheckpointRefused(
            f"action space {candidate.action_space!r} differs from the running policy's {running.action_space!r}"
        )
    changed = differences(running, candidate)
    if changed:
        raise CheckpointRefused(
            "its codec/interface differs from the running policy's (fingerprint "
            f"{candidate.fingerprint[:12]} vs {running.fingerprint[:12]}): {'; '.join(changed)}"
        )


def check_announcement(
    candidate: CheckpointInterface, *, checkpoint_id: str, action_space: str, fingerprint: str
) -> None:
    """Raise CheckpointRefused when an announcement does not describe the files it points at."""
    mismatched = [
        f"{name} announced {announced!r}, files say {actual!r}"
        for name, announced, actual in (
            ("checkpoint_id", checkpoint_id, candidate.checkpoint_id),
            ("action_space", action_space, candidate.action_space),
            ("codec_fingerprint", fingerprint, candidate.fingerprint),
        )
        if announced != actual
    ]
    if mismatched:
        raise CheckpointRefused(
            f"the announcement does not describe the files at {candidate.path} (changed after it was "
            f"announced?): {'; '.join(mismatched)}"
        )
