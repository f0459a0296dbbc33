"""The base shipped in models/: it loads with its checksums verified, it is what its model card says, and it
acts on an observation the way the policy server would feed it."""

from __future__ import annotations

import json

import numpy as np

from svrl_policy.checkpoint_files import file_sha256
from svrl_policy.policy import Policy
from svrl_policy.shipped import SHIPPED_BASE, shipped_base


def test_the_shipped_base_loads_and_acts() -> None:
    path = shipped_base()
    assert path.name == SHIPPED_BASE
    policy = Policy.from_pretrained(path)  # verifies every file against manifest.json
    obs = policy.preprocessor.example_observation(batch=2)
    actions = policy.sample(obs, temperature=0.0).actions
    assert actions.shape == (2, policy.config.chunk_len, 7) and np.isfinite(actions).all()


def test_the_model_card_matches_the_files_beside_it() -> None:
    path = shipped_base()
    size_mb = sum(f.stat().st_size for f in path.iterdir()) / 2**20
    assert size_mb <= 20, f"{path} is {size_mb:.1f} MB: the issue allows 20"
    report = json.loads((path / "eval.json").read_text())
    card = (path / "README.md").read_text()
    assert f"**{100 * report['success_rate']:.1f} %**" in card
    assert f"--ckpt models/{SHIPPED_BASE} --tasks pretrain" in card  # evaluated as shipped, on the pool
    training = json.loads((path / "training.json").read_text())
    assert all(command in card for command in training["commands"])
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["sha256"]["model.safetensors"] == file_sha256(path / "model.safetensors")
