"""Headless rendering: a working backend is picked and named; with none, the error says what to install."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from svrl_sim.rendering import RenderBackendError, select_backend


def test_backend_is_auto_selected_when_mujoco_gl_is_unset() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    code = (
        "import os\n"
        "from svrl_sim.env import SimEnv\n"
        "from svrl_sim.tasks import InitState\n"
        "obs, _ = SimEnv(image_size=32).reset('goal/press_button', InitState('eval', 0))\n"
        "assert obs['images']['main'].std() > 0\n"
        "print(os.environ['MUJOCO_GL'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("egl", "osmesa")


def test_first_working_backend_wins() -> None:
    assert select_backend(lambda b: None) == "egl"
    assert select_backend(lambda b: "no EGL device" if b == "egl" else None) == "osmesa"


def test_no_backend_gives_an_actionable_error() -> None:
    with pytest.raises(RenderBackendError) as err:
        select_backend(lambda b: f"{b} library missing")
    text = str(err.value)
    for needle in ("egl library missing", "osmesa library missing", "libegl1", "libosmesa6", "MUJOCO_GL"):
        assert needle in text


def test_mismatched_pyopengl_platform_is_refused() -> None:
    env = dict(os.environ, MUJOCO_GL="egl", PYOPENGL_PLATFORM="osmesa")
    code = "from svrl_sim.rendering import ensure_gl_backend; ensure_gl_backend()"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "must match" in out.stderr
