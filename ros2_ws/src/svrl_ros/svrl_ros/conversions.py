"""numpy <-> ROS message conversions, kept in one place because the fast path is not the obvious one.

Assigning a numpy array to a sequence field costs tens of milliseconds (rclpy converts element by
element); an `array.array` built from the raw bytes takes microseconds.
"""

from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Duration


def seconds_to_duration(seconds: float) -> Duration:
    nanoseconds = round(seconds * 1e9)
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def duration_to_seconds(duration: Duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


def float32_sequence(values: np.ndarray) -> array.array:
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    out = array.array("f")
    out.frombytes(flat.tobytes())
    return out
