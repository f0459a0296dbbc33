"""Shared pieces of the trainer tests: the random toy-suite policy they all start from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from svrl_policy.codec import ActionCodec
from svrl_policy.config import get_preset
from svrl_policy.policy import Policy

CHUNK = 4


def toy_policy(seed: int = 0, **overrides) -> Policy:
    """A random debug-preset policy for the toy suite: 4-step chunks, 32 px, +-0.1 deltas."""
    torch.manual_seed(seed)
    config = get_preset("debug", chunk_len=CHUNK, image_size=32, augment_shift=0, **overrides)
    codec = ActionCodec(
        low=np.r_[[-0.1] * 6, -1.0], high=np.r_[[0.1] * 6, 1.0], chunk_len=CHUNK, gripper_index=6
    )
    return Policy(config, codec).eval()


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("init") / "policy"
    toy_policy().save_pretrained(path)
    return path


@pytest.fixture()
def policy() -> Policy:
    return toy_policy()
