"""Feature statistics of a LeRobotDataset v3, in the keys and shapes LeRobot 0.4.x writes and reads.

LeRobot keeps statistics twice: per episode (flattened into `stats/<feature>/<stat>` columns of the
episodes table) and for the whole dataset (`meta/stats.json`). Its editing tools (delete, split, merge,
appending with `LeRobotDataset.save_episode`) rebuild `stats.json` by aggregating the per-episode rows,
so a feature that has no per-episode stats silently loses its statistics there. Hence every feature gets
both, in LeRobot's layout:

- stats: min, max, mean, std, count, q01, q10, q50, q90, q99 (LeRobot's `DEFAULT_QUANTILES`);
- vectors (float32[D]) and scalars (shape [1]): one value per dimension, shape (D,); min/max keep the
  column's dtype (int64 index columns give int64 min/max, as numpy gives LeRobot);
- images: per-channel values scaled to [0, 1], shape (3, 1, 1); `count` is the number of frames sampled;
- fewer than 2 samples: the quantiles are the mean (what LeRobot does).

Quantiles here are exact (numpy's linear interpolation on vectors; a 256-bin histogram per channel is
exact for uint8 pixels), where LeRobot estimates them from 5000-bin histograms: the numbers agree to
LeRobot's binning error, the layout is identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES: tuple[float, ...] = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS: tuple[str, ...] = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
STAT_KEYS: tuple[str, ...] = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)
# Frames of an episode used for its image statistics: all of them up to this many, then an even spread
# growing like n**0.75 (LeRobot's sampling rule, so per-episode `count`s weigh episodes alike in both).
IMAGE_SAMPLES_MIN = 100
IMAGE_SAMPLES_MAX = 10_000


def numeric_stats(values: np.ndarray) -> dict[str, list]:
    """Stats of a numeric column: values[T] or values[T, D] -> each stat as a list of D numbers."""
    x = np.asarray(values)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"numeric stats need values[T > 0] or [T > 0, D], got shape {np.shape(values)}")
    as_float = x.astype(np.float64)
    mean = as_float.mean(0)
    out: dict[str, list] = {
        "min": x.min(0).tolist(),
        "max": x.max(0).tolist(),
        "mean": mean.tolist(),
        "std": as_float.std(0).tolist(),
        "count": [int(x.shape[0])],
    }
    for key, q in zip(QUANTILE_KEYS, QUANTILES, strict=True):
        out[key] = (np.quantile(as_float, q, axis=0) if x.shape[0] >= 2 else mean).tolist()
    return out


def image_sample_indices(n_frames: int) -> np.ndarray:
    """Which frames of an n-frame episode its image statistics are computed from (evenly spread)."""
    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    n = max(min(n_frames, IMAGE_SAMPLES_MIN), min(int(n_frames**0.75), IMAGE_SAMPLES_MAX))
    return np.round(np.linspace(0, n_frames - 1, n)).astype(np.int64)


class ChannelHistogram:
    """Per-channel 256-bin histograms of uint8 RGB frames: exact min/max/mean/std/quantiles, any size."""

    def __init__(self) -> None:
        self.counts = np.zeros((3, 256), dtype=np.int64)
        self.frames = 0

    def update(self, frames: np.ndarray) -> None:
        """Add uint8[N, H, W, 3] frames."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8[N, H, W, 3], got {frames.dtype} {frames.shape}")
        flat = frames.reshape(-1, 3)
        for c in range(3):
            self.counts[c] += np.bincount(flat[:, c], minlength=256)
        self.frames += int(frames.shape[0])

    def merge(self, other: ChannelHistogram) -> None:
        self.counts += other.counts
        self.frames += other.frames

    def stats(self) -> dict[str, list]:
        """LeRobot image stats: (3, 1, 1) nested lists in [0, 1], `count` = frames seen."""
        if self.frames == 0:
            raise ValueError("no frames were added")
        levels = np.arange(256, dtype=np.float64) / 255.0
        n = self.counts.sum(1).astype(np.float64)  # pixels per channel
        mean = (self.counts * levels).sum(1) / n
        var = (self.counts * (levels[None, :] - mean[:, None]) ** 2).sum(1) / n
        present = self.counts > 0
        lo = np.array([levels[np.flatnonzero(p)[0]] for p in present])
        hi = np.array([levels[np.flatnonzero(p)[-1]] for p in present])
        out: dict[str, Any] = {
            "min": _chw(lo),
            "max": _chw(hi),
            "mean": _chw(mean),
            "std": _chw(np.sqrt(var)),
            "count": [self.frames],
        }
        for key, q in zip(QUANTILE_KEYS, QUANTILES, strict=True):
            out[key] = _chw(np.array([_hist_quantile(self.counts[c], q) for c in range(3)]) / 255.0)
        return out


def _chw(values: np.ndarray) -> list:
    """(3,) -> [[[v0]], [[v1]], [[v2]]]: LeRobot's (C, 1, 1) image stats broadcast over (C, H, W)."""
    return [[[float(v)]] for v in values]


def _hist_quantile(counts: np.ndarray, q: float) -> float:
    """numpy's linear-interpolation quantile of the values a histogram of integer levels describes."""
    cumulative = np.cumsum(counts)
    position = q * (cumulative[-1] - 1)
    below, above = int(np.floor(position)), int(np.ceil(position))
    # the k-th smallest value (0-based) is the first level whose cumulative count exceeds k
    v_below = float(np.searchsorted(cumulative, below, side="right"))
    v_above = float(np.searchsorted(cumulative, above, side="right"))
    return v_below + (position - below) * (v_above - v_below)
