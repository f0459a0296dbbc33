"""`ActionCodec`: robot-unit action chunks <-> integer action tokens.

Per dimension d the codec stores a range [low_d, high_d], fitted as the 1st/99th percentiles of the training
actions (OpenVLA's `bounds_q99`), so a few outliers do not stretch the bins. Values are clipped to the range
and mapped to `num_bins` uniform bins; a token decodes to its bin centre, so a round trip is exact to within
half a bin. Unlike OpenVLA (255 centres, tokens 254/255 aliased) every one of the 256 bins is distinct.

The gripper dimension is binary by contract (-1 open, +1 close): its range is fixed to [-1, 1] rather than
fitted (a demo set that never opens the gripper would otherwise collapse it) and it decodes by sign.

Chunk layout: an action chunk a[K, D] is the token row t[k*D + d] (time-major), the order in which
SimpleVLA-RL reads its 56 placeholder positions.

The codec is fitted once, on the pretraining data, saved with every checkpoint as `codec.json`, and reused by
SFT, GRPO and the ROS node: base and fine-tuned policies share bins by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

# A dimension whose fitted range is (nearly) empty, e.g. rotation deltas that a scripted expert never uses,
# gets this half-width around its value so that tokenising stays well defined and decodes back to ~the value.
_MIN_HALF_RANGE = 1e-4


@dataclass(frozen=True)
class ActionCodec:
    low: np.ndarray  # float64[D]
    high: np.ndarray  # float64[D]
    num_bins: int = 256
    chunk_len: int = 8
    gripper_index: int | None = 6

    def __post_init__(self) -> None:
        low = np.asarray(self.low, dtype=np.float64).reshape(-1)
        high = np.asarray(self.high, dtype=np.float64).reshape(-1)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        if low.shape != high.shape:
            raise ValueError(f"ActionCodec: low has {low.size} dims but high has {high.size}")
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ValueError("ActionCodec: low/high must be finite (check the dataset for NaN actions)")
        if not (high > low).all():
            bad = np.flatnonzero(high <= low).tolist()
            raise ValueError(f"ActionCodec: high must exceed low in every dim; violated in dims {bad}")
        if self.num_bins < 2:
            raise ValueError(f"ActionCodec: num_bins={self.num_bins} must be >= 2")
        if self.gripper_index is not None and not 0 <= self.gripper_index < low.size:
            raise ValueError(f"ActionCodec: gripper_index={self.gripper_index} outside [0, {low.size})")

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(
        cls,
        actions: np.ndarray,
        *,
        num_bins: int = 256,
        chunk_len: int = 8,
        gripper_index: int | None = 6,
        quantiles: tuple[float, float] = (0.01, 0.99),
    ) -> ActionCodec:
        """Fit the per-dimension q01/q99 range on actions[N, D] (all frames of a dataset)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] == 0:
            raise ValueError(f"ActionCodec.fit expects actions[N, D] with N > 0, got shape {actions.shape}")
        if not np.isfinite(actions).all():
            raise ValueError("ActionCodec.fit: actions contain NaN/inf; clean the dataset first")
        low = np.quantile(actions, quantiles[0], axis=0)
        high = np.quantile(actions, quantiles[1], axis=0)
        centre = (low + high) / 2
        narrow = (high - low) < 2 * _MIN_HALF_RANGE
        low = np.where(narrow, centre - _MIN_HALF_RANGE, low)
        high = np.where(narrow, centre + _MIN_HALF_RANGE, high)
        if gripper_index is not None:
            low[gripper_index], high[gripper_index] = -1.0, 1.0
        return cls(low=low, high=high, num_bins=num_bins, chunk_len=chunk_len, gripper_index=gripper_index)

    # ------------------------------------------------------------------ derived
    @property
    def action_dim(self) -> int:
        return int(self.low.size)

    @property
    def num_tokens(self) -> int:
        return self.chunk_len * self.action_dim

    @property
    def bin_width(self) -> np.ndarray:
        return (self.high - self.low) / self.num_bins

    # ------------------------------------------------------------------ per-value mapping
    def tokenize(self, actions: np.ndarray) -> np.ndarray:
        """actions[..., D] (robot units) -> bins int64[..., D] in [0, num_bins)."""
        a = np.asarray(actions, dtype=np.float64)
        if a.shape[-1] != self.action_dim:
            raise ValueError(f"tokenize: last axis has {a.shape[-1]} dims, codec has {self.action_dim}")
        a = np.clip(a, self.low, self.high)
        bins = np.floor((a - self.low) / (self.high - self.low) * self.num_bins)
        return np.clip(bins, 0, self.num_bins - 1).astype(np.int64)

    def detokenize(self, bins: np.ndarray) -> np.ndarray:
        """bins int[..., D] -> float32[..., D]: bin centres; the gripper dim becomes exactly -1 or +1."""
        b = np.asarray(bins)
        if b.shape[-1] != self.action_dim:
            raise ValueError(f"detokenize: last axis has {b.shape[-1]} dims, codec has {self.action_dim}")
        if b.size and (b.min() < 0 or b.max() >= self.num_bins):
            raise ValueError(f"detokenize: token outside [0, {self.num_bins}): min {b.min()}, max {b.max()}")
        values = self.low + (b.astype(np.float64) + 0.5) * self.bin_width
        if self.gripper_index is not None:
            g = self.gripper_index
            values[..., g] = np.where(values[..., g] >= 0.0, 1.0, -1.0)
        return values.astype(np.float32)

    # ------------------------------------------------------------------ chunk layout
    def encode_chunk(self, chunks: np.ndarray) -> np.ndarray:
        """chunks[B, K, D] -> tokens int64[B, K*D] with token index k*D + d."""
        c = np.asarray(chunks)
        if c.ndim != 3 or c.shape[1:] != (self.chunk_len, self.action_dim):
            raise ValueError(f"encode_chunk expects [B, {self.chunk_len}, {self.action_dim}], got {c.shape}")
        return self.tokenize(c).reshape(c.shape[0], self.num_tokens)

    def decode_chunk(self, tokens: np.ndarray) -> np.ndarray:
        """tokens int[B, K*D] -> actions float32[B, K, D] in robot units."""
        t = np.asarray(tokens)
        if t.ndim != 2 or t.shape[1] != self.num_tokens:
            raise ValueError(f"decode_chunk expects tokens[B, {self.num_tokens}], got {t.shape}")
        return self.detokenize(t.reshape(t.shape[0], self.chunk_len, self.action_dim))

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "uniform_bins_q01_q99",
            "num_bins": self.num_bins,
            "chunk_len": self.chunk_len,
            "gripper_index": self.gripper_index,
            "low": self.low.tolist(),
            "high": self.high.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionCodec:
        if data.get("type") != "uniform_bins_q01_q99":
            raise ValueError(f"codec.json: unknown codec type {data.get('type')!r}")
        return cls(
            low=np.asarray(data["low"], dtype=np.float64),
            high=np.asarray(data["high"], dtype=np.float64),
            num_bins=int(data["num_bins"]),
            chunk_len=int(data["chunk_len"]),
            gripper_index=data["gripper_index"],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ActionCodec):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
