"""Pairing images with joint states by stamp (observation_buffer.ObservationStore): exact in simulators,
nearest-within-tolerance for cameras that keep their own clock (real or recorded cameras)."""

from __future__ import annotations

import numpy as np
import pytest
from svrl_ros.learned_policy import JointReading
from svrl_ros.observation_buffer import ObservationStore

MS = 1_000_000


def _joints(value: float = 0.0) -> JointReading:
    return JointReading(np.full(7, value), np.zeros(2))


def _image(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, np.uint8)


def test_without_tolerance_only_the_same_stamp_pairs() -> None:
    store = ObservationStore(("main",))
    store.add_joints(100 * MS, _joints())
    store.add_image("main", 99 * MS, _image(1))
    assert store.observation_at(100 * MS) is None
    assert store.missing_at(100 * MS) == ["main image"]
    store.add_image("main", 100 * MS, _image(2))
    assert store.observation_at(100 * MS).images["main"][0, 0, 0] == 2


def test_with_tolerance_the_nearest_image_of_each_camera_pairs_and_ties_go_to_the_earlier() -> None:
    store = ObservationStore(("main", "wrist"), image_tolerance_ns=20 * MS)
    store.add_joints(100 * MS, _joints())
    for stamp, value in ((70, 1), (85, 2), (110, 3)):  # 70 is outside the tolerance
        store.add_image("main", stamp * MS, _image(value))
    assert store.observation_at(100 * MS) is None  # no wrist image yet
    assert store.missing_at(100 * MS) == ["wrist image"]
    store.add_image("wrist", 90 * MS, _image(7))
    store.add_image("wrist", 110 * MS, _image(8))
    obs = store.observation_at(100 * MS)
    assert obs is not None and obs.stamp_ns == 100 * MS  # keyed by the joint state
    assert obs.images["main"][0, 0, 0] == 3  # 110 is 10 ms away, 85 is 15 ms away
    assert obs.images["wrist"][0, 0, 0] == 7  # 90 and 110 are both 10 ms away: the earlier
    assert store.completed_ns(100 * MS) is not None


def test_images_beyond_the_tolerance_never_pair() -> None:
    store = ObservationStore(("main",), image_tolerance_ns=5 * MS)
    store.add_joints(100 * MS, _joints())
    store.add_image("main", 94 * MS, _image(1))
    store.add_image("main", 106 * MS, _image(1))
    assert store.observation_at(100 * MS) is None
    assert store.newest_observation() is None
    assert store.completed_ns(100 * MS) is None


def test_a_negative_tolerance_is_refused() -> None:
    with pytest.raises(ValueError, match="image_tolerance_ns"):
        ObservationStore(image_tolerance_ns=-1)
