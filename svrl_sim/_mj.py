"""`mujoco`, imported only after a headless GL backend has been chosen (see rendering.py)."""

from svrl_sim.rendering import ensure_gl_backend

ensure_gl_backend()

import mujoco  # noqa: E402

__all__ = ["mujoco"]
