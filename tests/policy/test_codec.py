from __future__ import annotations

import numpy as np
import pytest

from svrl_policy.codec import ActionCodec


def _codec(seed: int = 0) -> tuple[ActionCodec, np.ndarray]:
    rng = np.random.default_rng(seed)
    actions = rng.normal(scale=[0.01, 0.02, 0.03, 0.1, 0.1, 0.1, 1.0], size=(2000, 7))
    actions[:, 6] = np.sign(actions[:, 6])
    return ActionCodec.fit(actions, chunk_len=8, gripper_index=6), actions


def test_round_trip_is_within_half_a_bin() -> None:
    codec, actions = _codec()
    inside = np.clip(actions, codec.low, codec.high)
    decoded = codec.detokenize(codec.tokenize(inside))
    err = np.abs(decoded[:, :6] - inside[:, :6])
    assert (err <= codec.bin_width[:6] / 2 + 1e-7).all()  # + float32 rounding of the decoded value
    assert err.max() > 0  # a real quantiser, not the identity


def test_range_is_q01_q99_and_outliers_clip_to_the_end_bins() -> None:
    codec, actions = _codec()
    np.testing.assert_allclose(codec.low[:6], np.quantile(actions[:, :6], 0.01, axis=0))
    np.testing.assert_allclose(codec.high[:6], np.quantile(actions[:, :6], 0.99, axis=0))
    bins = codec.tokenize(np.stack([codec.low - 5, codec.high + 5]))
    assert (bins[0] == 0).all() and (bins[1] == 255).all()


def test_gripper_decodes_by_sign_to_exactly_plus_minus_one() -> None:
    codec, _ = _codec()
    bins = np.zeros((256, 7), dtype=np.int64)
    bins[:, 6] = np.arange(256)
    grip = codec.detokenize(bins)[:, 6]
    assert set(np.unique(grip)) == {-1.0, 1.0}
    assert (grip[:128] == -1).all() and (grip[128:] == 1).all()
    assert codec.detokenize(codec.tokenize(np.array([[0, 0, 0, 0, 0, 0, -1.0]])))[0, 6] == -1.0


def test_chunk_layout_is_time_major() -> None:
    codec, _ = _codec()
    chunk = np.tile(np.linspace(codec.low, codec.high, 8)[None], (2, 1, 1))  # (B=2, K=8, D=7)
    tokens = codec.encode_chunk(chunk)
    assert tokens.shape == (2, 56)
    per_value = codec.tokenize(chunk)
    for k in range(8):
        for d in range(7):
            assert tokens[0, k * 7 + d] == per_value[0, k, d]
    assert codec.decode_chunk(tokens).shape == (2, 8, 7)


def test_constant_dimension_stays_tokenisable_and_decodes_to_its_value() -> None:
    actions = np.zeros((100, 7))
    actions[:, 0] = 0.01
    codec = ActionCodec.fit(actions, chunk_len=8, gripper_index=6)
    decoded = codec.detokenize(codec.tokenize(actions[:1]))
    assert abs(decoded[0, 0] - 0.01) < 1e-4 and abs(decoded[0, 3]) < 1e-4


def test_json_round_trip_and_errors() -> None:
    codec, _ = _codec()
    assert ActionCodec.from_dict(codec.to_dict()) == codec
    with pytest.raises(ValueError, match="NaN"):
        ActionCodec.fit(np.array([[np.nan] * 7]))
    with pytest.raises(ValueError, match="outside"):
        codec.detokenize(np.full((1, 7), 256))
    with pytest.raises(ValueError, match="expects tokens"):
        codec.decode_chunk(np.zeros((1, 55), dtype=np.int64))
