"""A checkpoint's file names and the checksum its manifest records: torch-free, so the robot side
(svrl_ros.checkpoint_guard, which checks an announced checkpoint before anything loads it) verifies files
with the same names and the same hash as `svrl_policy.checkpoint` writes them, without importing torch."""

from __future__ import annotations

import hashlib
from pathlib import Path

CONFIG_FILE = "config.json"
CODEC_FILE = "codec.json"
PREPROCESSOR_FILE = "preprocessor.json"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"


def file_sha256(path: str | Path) -> str:
    """The hex sha256 of a file's bytes, as `manifest.json` lists it (read in 1 MiB blocks: weights are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
