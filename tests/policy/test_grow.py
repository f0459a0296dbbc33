"""The keypoint refiner, and growing a trained checkpoint by one without losing what it learned."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from svrl.cli import main as svrl_main
from svrl_policy.config import ConfigError, get_preset
from svrl_policy.export import export_onnx
from svrl_policy.grow import GrowError, grow_policy, parse_growth
from svrl_policy.policy import Policy
from svrl_trainer.sft import SFTConfig, train_sft
from tests.policy.conftest import make_policy, write_reach_dataset

TK = dict(tokenizer="word", max_text_len=16, text_keypoints=2)


@pytest.fixture(scope="module")
def focus_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reach_dataset(tmp_path_factory.mktemp("data") / "reach_focus", focus=True)


def _keypoints(policy: Policy, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return policy.forward_with_aux(inputs).text_keypoints


def test_a_fresh_refiner_is_the_identity_and_a_trained_one_is_not() -> None:
    plain = make_policy("debug", seed=3, **TK)
    refined = make_policy("debug", seed=3, keypoint_refine=2, **TK)
    refined.model.load_state_dict(plain.model.state_dict(), strict=False)
    inputs = plain.preprocessor(plain.preprocessor.example_observation(batch=2, seed=4))
    assert torch.equal(_keypoints(plain, inputs), _keypoints(refined, inputs))
    with torch.no_grad():
        for block in refined.model.keypoint_refiner.blocks:
            block[-1].weight.normal_(std=0.3)
    assert not torch.equal(_keypoints(plain, inputs), _keypoints(refined, inputs))


def test_refine_is_validated() -> None:
    assert get_preset("tiny96tkr").keypoint_refine == 3
    with pytest.raises(ConfigError, match="needs keypoints or text_keypoints"):
        get_preset("debug", keypoint_refine=1)
    with pytest.raises(ConfigError, match=r"\[0, 6\]"):
        get_preset("debug", keypoint_refine=7, **TK)


def test_a_refined_policy_exports_to_onnx_with_the_same_logits(tmp_path: Path) -> None:
    policy = make_policy("debug", seed=1, keypoint_refine=2, **TK)
    with torch.no_grad():
        for block in policy.model.keypoint_refiner.blocks:  # not the identity, so the refiner is exercised
            block[-1].weight.normal_(std=0.1)
    ckpt = policy.save_pretrained(tmp_path / "refined")
    assert export_onnx(ckpt).is_file()  # export_onnx itself checks onnxruntime's logits against torch


def test_growing_keeps_every_weight_and_the_actions(tmp_path: Path) -> None:
    base = make_policy("debug", seed=2, **TK)
    ckpt = base.save_pretrained(tmp_path / "base")
    grown = grow_policy(ckpt, {"keypoint_refine": 2})
    assert grown.config.keypoint_refine == 2 and len(grown.model.keypoint_refiner.blocks) == 2
    for name, tensor in base.model.state_dict().items():
        assert torch.equal(grown.model.state_dict()[name], tensor), name
    obs = base.preprocessor.example_observation(batch=3, seed=5)
    assert (base.sample(obs, 0.0).actions == grown.sample(obs, 0.0).actions).all()


def test_growth_refusals(tmp_path: Path) -> None:
    ckpt = make_policy("debug", seed=2, keypoint_refine=1, **TK).save_pretrained(tmp_path / "base")
    with pytest.raises(GrowError, match="from 1 to 1"):
        grow_policy(ckpt, {"keypoint_refine": 1})
    with pytest.raises(GrowError, match="only"):
        grow_policy(ckpt, {"width": 64})
    for spec in ("width=3", "keypoint_refine", "keypoint_refine=two", ""):
        with pytest.raises(GrowError):
            parse_growth(spec)
    with pytest.raises(ValueError, match="needs init"):
        SFTConfig(data=[tmp_path], out=tmp_path / "x", grow="keypoint_refine=2")


def test_pretrain_continues_from_a_grown_checkpoint(focus_dataset: Path, tmp_path: Path) -> None:
    """`svrl pretrain --init base --grow keypoint_refine=2` trains the new blocks and keeps the codec."""
    base = train_sft(
        SFTConfig(
            data=[focus_dataset],
            out=tmp_path / "base",
            preset="debug",
            preset_overrides=TK,
            steps=2,
            batch_size=4,
            progress=False,
        )
    ).checkpoint
    out = tmp_path / "grown"
    argv = ["pretrain", "--data", str(focus_dataset), "--init", str(base), "--grow", "keypoint_refine=2",
            "--out", str(out), "--steps", "3", "--batch-size", "4", "--keypoint-weight", "1"]  # fmt: skip
    assert svrl_main(argv) == 0
    grown = Policy.from_pretrained(out)
    assert grown.config.keypoint_refine == 2
    assert grown.codec.to_dict() == Policy.from_pretrained(base).codec.to_dict()
    assert any(block[-1].weight.abs().sum() > 0 for block in grown.model.keypoint_refiner.blocks)
