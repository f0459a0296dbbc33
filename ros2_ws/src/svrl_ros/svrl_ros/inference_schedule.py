"""When policy_server starts the next inference (parameter `inference`), without ROS.

- `sync`: the next chunk is computed from the state after the current chunk's last action, so the arm has
  nothing to execute while the policy runs (a lock-step sim simply waits: that is what keeps a graph run
  bit-identical to the in-process episode, and why lock-step profiles keep it).
- `async`: the next chunk is computed while the current one still runs: once only `lead` steps of it are
  left, the newest observation goes to the policy. The new chunk is stamped with that observation's time;
  arm_controller skips its actions for periods that passed during inference and blends the overlap
  (chunk_blending). This is LeRobot's asynchronous inference (a queue threshold) with openpi's
  real-time-chunking view of the delay (the first actions of a chunk are already in the past when it lands).

`lead` is given (`async_lead_steps`), or derived from measured inference latency: enough whole control
periods to cover the slowest recent inference, plus one for the delivery and arm_controller's cycle phase.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

INFERENCE_SYNC = "sync"
INFERENCE_ASYNC = "async"
INFERENCE_MODES = (INFERENCE_SYNC, INFERENCE_ASYNC)
LATENCY_WINDOW = 8  # recent chunks whose latency decides the lead
MARGIN_STEPS = 1


def lead_steps(latencies_s: Iterable[float], period_s: float, chunk_len: int, configured: int = 0) -> int:
    """Steps before the end of a chunk of `chunk_len` at which the next inference starts, in 1 .. chunk_len-1.

    configured > 0 is used as given (clamped); otherwise ceil(slowest recent latency / period) + 1, or half
    the chunk before anything was measured. A chunk of one step cannot overlap: 1.
    """
    if period_s <= 0:
        raise ValueError(f"period_s ({period_s}) must be > 0")
    if chunk_len < 1:
        raise ValueError(f"chunk_len ({chunk_len}) must be >= 1")
    if configured < 0:
        raise ValueError(f"async_lead_steps ({configured}) must be >= 0 (0 = from measured latency)")
    if configured > 0:
        lead = configured
    else:
        measured = [x for x in latencies_s if math.isfinite(x) and x >= 0]
        lead = math.ceil(max(measured) / period_s - 1e-9) + MARGIN_STEPS if measured else chunk_len // 2
    return max(1, min(lead, chunk_len - 1))


def trigger_step(chunk_len: int, lead: int) -> int:
    """Steps of the running chunk executed before the next observation is taken: at least one, so two
    chunks never start from the same observation."""
    return max(1, chunk_len - lead)


def steps_run_on(previous_end_ns: int, counted_to_ns: int, observation_ns: int, period_ns: int) -> int:
    """Steps the previous chunk executed after the goal last counted (`counted_to_ns`) up to the observation
    the next chunk starts from: they ran while the server waited, and belong to the goal's step count.
    Steps past the previous chunk's end were not executed (the arm held) and do not count."""
    return max(0, round((min(observation_ns, previous_end_ns) - counted_to_ns) / period_ns))


def steps_to_episode_end(
    chunk_stamp_ns: int, end_stamps_ns: Iterable[int], period_ns: int, length: int
) -> int:
    """Steps of a chunk (started from the state at `chunk_stamp_ns`) the episode lasted: up to the first state
    the sim reported done or successful, not up to the newest state. The sim runs on after its episode ends
    (a robot does not vanish), so the arm may have executed one more action by the time the server looks;
    that step is not the episode's, and the in-process rollout does not count it either."""
    first_end = min(end_stamps_ns)
    return int(min(length, max(0, round((first_end - chunk_stamp_ns) / period_ns))))


class LatencyWindow:
    """The last few inference latencies (s): observation complete -> chunk published."""

    def __init__(self, size: int = LATENCY_WINDOW) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        if math.isfinite(seconds) and seconds >= 0:
            self._values.append(float(seconds))

    def values(self) -> list[float]:
        return list(self._values)
