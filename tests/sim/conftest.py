"""Fixtures for the simulator tests: small images, one shared env per module (building one costs ~50 ms,
but the GL context is per process anyway)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("mujoco")

IMAGE_SIZE = 48


@pytest.fixture(scope="module")
def env() -> Iterator:
    from svrl_sim.env import SimEnv

    e = SimEnv(image_size=IMAGE_SIZE)
    yield e
    e.close()
