"""The base policy's design choices: hashed-word prompts, spatial-softmax keypoints, DART demo noise."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from svrl_policy.export import export_onnx
from svrl_policy.models.tiny import SpatialSoftmax
from svrl_policy.runtime import load_runtime
from svrl_policy.tokenizer import WordTokenizer, tokenizer_from_dict
from tests.policy.conftest import make_policy

pytestmark = pytest.mark.filterwarnings("ignore")  # tracer warnings from torch.onnx


def test_word_ids_are_stable_case_blind_and_split_punctuation(caplog) -> None:
    tok = WordTokenizer(8, buckets=4096)
    ids, mask = tok.encode(["Put the RED cube, now", "put the red cube , now", ""])
    np.testing.assert_array_equal(ids[0], ids[1])  # case and spacing around punctuation do not matter
    assert tok.words("Put the RED cube, now") == ["put", "the", "red", "cube", ",", "now"]
    assert ids[0, 0] == tok.BOS and ids[0, 7] == tok.EOS and mask[0].all()
    assert ids[2].tolist()[:3] == [tok.BOS, tok.EOS, tok.PAD] and mask[2].sum() == 2
    # SHA-256 buckets: the same id in every process (a salted hash() would differ between runs)
    assert (
        tok.word_id("cube")
        == 3 + int.from_bytes(__import__("hashlib").sha256(b"cube").digest()[:8], "little") % 4096
    )
    with caplog.at_level(logging.WARNING):
        long, _ = tok.encode(["one two three four five six seven eight nine"])
    assert long.shape == (1, 8) and "truncated" in caplog.text
    again = tokenizer_from_dict(tok.to_dict())
    np.testing.assert_array_equal(again.encode(["put the red cube"])[0], tok.encode(["put the red cube"])[0])


def test_spatial_softmax_reads_a_spot_at_sub_patch_precision() -> None:
    layer = SpatialSoftmax(channels=1, num=1, size=24)
    with torch.no_grad():
        layer.proj.weight.fill_(1.0)
        layer.proj.bias.zero_()
    features = torch.zeros(2, 1, 24, 24)
    features[0, 0, 5, 17] = 40.0  # a sharp peak: the expectation sits on the pixel centre
    features[1, 0, 6, 17] = 40.0  # one pixel (1/4 of a 16-px patch at stride 4) lower
    with torch.no_grad():
        xy = layer(features)[:, 0]
    centre = lambda i: (i + 0.5) / 24 * 2 - 1  # noqa: E731
    torch.testing.assert_close(xy[0], torch.tensor([centre(17), centre(5)]), atol=1e-3, rtol=0)
    assert float(xy[1, 1] - xy[0, 1]) == pytest.approx(2 / 24, abs=1e-3)


def test_keypoint_word_policy_round_trips_and_exports_with_parity(tmp_path: Path) -> None:
    policy = make_policy("debug", tokenizer="word", max_text_len=16, keypoints=4)
    ckpt = policy.save_pretrained(tmp_path / "kp")
    export_onnx(ckpt)
    torch_rt, ort_rt = load_runtime(ckpt, "torch"), load_runtime(ckpt, "onnx", threads=1)
    obs = torch_rt.preprocessor.example_observation(batch=3, seed=1)
    inputs = torch_rt.preprocessor(obs)
    assert inputs["input_ids"].shape == (3, 16)
    with torch.no_grad():
        ref = policy.model(**{k: v for k, v in inputs.items()})
    torch.testing.assert_close(torch_rt.logits(inputs), ref)  # the checkpoint rebuilt the same network
    assert (ort_rt.logits(inputs) - ref).abs().max().item() < 1e-4
    assert torch.equal(torch_rt.sample(obs, 0.0).tokens, ort_rt.sample(obs, 0.0).tokens)
