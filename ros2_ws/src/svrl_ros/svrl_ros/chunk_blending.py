"""How overlapping action chunks become one action per control period, without ROS.

With asynchronous inference (policy_server `inference: async`) the next chunk arrives while the current one
still has steps left, so several chunks can cover the same control period. `arm_controller` asks this module
what to execute for that period (parameter `blending`):

- `none`: the newest chunk that covers the period decides (LeRobot's async default, "latest wins"). The
  older chunk runs until the newer one covers the current period, so an early chunk never leaves a hole.
- `ensemble`: ACT's temporal ensembling: every chunk that covers the period votes, the k-th oldest with
  weight exp(-decay * k), normalised. ACT's decay (0.01) weighs older predictions a little more; 0 is a
  plain mean; a negative decay favours the newest chunk.
- `crossfade`: the newer chunk's weight rises linearly over the periods it overlaps the older one:
  (j + 1) / (L + 1) at the j-th of L shared periods, so the older chunk fades out by its own end and the
  newer one takes over with no step in the blend weights.

The gripper dimension is binary (open / close): an average would be a half-closed command no policy ever
produced. It is never blended: the newest covering chunk decides it, because it was computed from the
newest image.

Everything is in the chunks' action space (ee_delta deltas or joint_pos targets); the safety filter runs on
the blended action, like on any other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BLEND_NONE = "none"
BLEND_ENSEMBLE = "ensemble"
BLEND_CROSSFADE = "crossfade"
BLENDINGS = (BLEND_NONE, BLEND_ENSEMBLE, BLEND_CROSSFADE)
ACT_DECAY = 0.01  # ACT's temporal-ensembling constant m


@dataclass(frozen=True)
class BlendConfig:
    """mode: one of BLENDINGS; decay: the ensemble's exp(-decay * k) constant; gripper_index: the binary
    dimension the newest chunk decides (None: every dimension is blended)."""

    mode: str = BLEND_NONE
    decay: float = ACT_DECAY
    gripper_index: int | None = -1

    def __post_init__(self) -> None:
        if self.mode not in BLENDINGS:
            raise ValueError(f"blending {self.mode!r} is not one of {list(BLENDINGS)}")
        if not math.isfinite(self.decay) or abs(self.decay) > 10.0:
            raise ValueError(f"ensemble decay ({self.decay}) must be finite and within -10 .. 10")


@dataclass(frozen=True)
class Covering:
    """One chunk's vote for a control period.

    action: its action for the period; fade_start_ns: the period it was first executed for (crossfade
    counts the shared periods from there); previous_end_ns: the period just after the next older covering
    chunk's last action (None for the oldest).
    """

    action: np.ndarray
    fade_start_ns: int
    previous_end_ns: int | None = None


def ensemble_weights(count: int, decay: float) -> np.ndarray:
    """ACT weights for `count` predictions of one period, oldest first: exp(-decay * k), summing to 1."""
    if count < 1:
        raise ValueError(f"count ({count}) must be >= 1")
    weights = np.exp(-decay * np.arange(count, dtype=np.float64))
    return weights / weights.sum()


def crossfade_weight(t_ns: int, fade_start_ns: int, previous_end_ns: int | None, period_ns: int) -> float:
    """Weight of the newer chunk at period t: (j + 1) / (L + 1) for the j-th of L shared periods, 1 after.

    The shared periods run from the newer chunk's first executed period to the older chunk's end; a chunk
    with nothing older to fade from (or that starts after the older one ended) gets 1.
    """
    if previous_end_ns is None:
        return 1.0
    shared = round((previous_end_ns - fade_start_ns) / period_ns)
    if shared <= 0:
        return 1.0
    j = round((t_ns - fade_start_ns) / period_ns)
    return float(min(1.0, max(0.0, (j + 1) / (shared + 1))))


def blend(coverings: Sequence[Covering], t_ns: int, period_ns: int, config: BlendConfig) -> np.ndarray:
    """The action for period t from the chunks that cover it (oldest first). float64[D].

    With one covering chunk (or `none`) its action comes back unchanged, bit for bit: the lock-step graph
    executes exactly what the policy produced.
    """
    if not coverings:
        raise ValueError("no chunk covers this period")
    newest = coverings[-1].action
    if config.mode == BLEND_NONE or len(coverings) == 1:
        return newest
    actions = np.stack([np.asarray(c.action, dtype=np.float64) for c in coverings])  # (N, D)
    if config.mode == BLEND_ENSEMBLE:
        out = ensemble_weights(len(coverings), config.decay) @ actions
    else:  # crossfade, folded from the oldest: each newer chunk fades in over what came before it
        out = actions[0].copy()
        for cover, action in zip(coverings[1:], actions[1:], strict=True):
            alpha = crossfade_weight(t_ns, cover.fade_start_ns, cover.previous_end_ns, period_ns)
            out = (1.0 - alpha) * out + alpha * action
    if config.gripper_index is not None:
        out[config.gripper_index] = newest[config.gripper_index]
    return out
