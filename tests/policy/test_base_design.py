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


def test_text_keypoints_follow_the_object_the_prompt_names() -> None:
    """Two objects in two feature channels: the prompt's words pick which one the keypoint lands on."""
    from svrl_policy.models.tiny import TextKeypoints

    layer = TextKeypoints(width=2, channels=2, num=1, size=24)
    with torch.no_grad():
        layer.word_queries.fill_(1.0)
        layer.to_filter.weight.copy_(torch.eye(2) * 40.0)  # word embedding e_i -> a filter for channel i
        layer.to_filter.bias.zero_()
        layer.keys.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
        layer.keys.bias.zero_()
    features = torch.zeros(1, 2, 24, 24)
    features[0, 0, 5, 17] = 1.0  # "red cube" lights channel 0 here ...
    features[0, 1, 20, 3] = 1.0  # ... "blue cube" channel 1 there
    words = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # two one-word prompts
    with torch.no_grad():
        xy = layer(features.expand(2, -1, -1, -1), words, torch.zeros(2, 1))[:, 0, 0]
    centre = lambda i: (i + 0.5) / 24 * 2 - 1  # noqa: E731
    torch.testing.assert_close(xy[0], torch.tensor([centre(17), centre(5)]), atol=2e-2, rtol=0)
    torch.testing.assert_close(xy[1], torch.tensor([centre(3), centre(20)]), atol=2e-2, rtol=0)


def test_text_keypoint_policy_exports_with_parity_and_padding_does_not_matter(tmp_path: Path) -> None:
    policy = make_policy("debug", tokenizer="word", max_text_len=16, keypoints=4, text_keypoints=3)
    ckpt = policy.save_pretrained(tmp_path / "tk")
    export_onnx(ckpt)
    torch_rt, ort_rt = load_runtime(ckpt, "torch"), load_runtime(ckpt, "onnx", threads=1)
    obs = torch_rt.preprocessor.example_observation(batch=2, seed=3)
    inputs = torch_rt.preprocessor(obs)
    ref = torch_rt.logits(inputs)
    assert (ort_rt.logits(inputs) - ref).abs().max().item() < 1e-4
    # The same prompt with more padding: masked words never reach a filter.
    longer = policy.preprocessor(obs)
    n = int(longer["attention_mask"][0].sum())
    with torch.no_grad():
        a = policy.model(
            **{
                **longer,
                "input_ids": longer["input_ids"][:1, :n],
                "attention_mask": longer["attention_mask"][:1, :n],
                **{k: v[:1] for k, v in longer.items() if k not in ("input_ids", "attention_mask")},
            }
        )
        b = policy.model(**{k: v[:1] for k, v in longer.items()})
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
