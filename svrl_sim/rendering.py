"""Headless OpenGL: pick a backend that works, and render the scene's cameras into numpy arrays.

MuJoCo chooses its GL backend from MUJOCO_GL when it is first imported and fails on a headless machine
when the variable is unset. `ensure_gl_backend()` keeps a user's choice, otherwise tries EGL then OSMesa (each
in a throw-away subprocess, because PyOpenGL cannot switch platform once loaded), exports the winner so worker
processes inherit it, and logs which one it picked. The renderer then creates its context with that backend's
class explicitly, so it works even if something imported mujoco before the choice was made. Both are Mesa software rasterisers on a machine without a GPU and run at about the same
speed.

Cost model (why the env renders only on request): a software-rendered frame costs milliseconds while a
physics step costs microseconds, so rendering dominates a rollout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

_CANDIDATES = ("egl", "osmesa")
_APT_PACKAGES = {"egl": "libegl1 libgl1-mesa-dri libgbm1 libopengl0", "osmesa": "libosmesa6"}
_PROBE = (
    "import os, sys; os.environ['MUJOCO_GL'] = sys.argv[1]; os.environ['PYOPENGL_PLATFORM'] = sys.argv[1]\n"
    "import mujoco\n"
    "ctx = mujoco.GLContext(16, 16); ctx.make_current(); ctx.free()\n"
)
_SELECTED: str | None = None


class RenderBackendError(RuntimeError):
    """No headless OpenGL backend works on this machine."""


def _probe(backend: str) -> str | None:
    """None if `backend` can create a context in a fresh interpreter, else the error text."""
    env = dict(os.environ)
    env.pop("PYOPENGL_PLATFORM", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, backend], env=env, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"


def ensure_gl_backend() -> str:
    """Make sure MUJOCO_GL names a working headless backend; return it ("egl" or "osmesa").

    Raises RenderBackendError naming the apt packages to install when neither works.
    """
    global _SELECTED
    if _SELECTED is not None:
        return _SELECTED
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        platform = os.environ.get("PYOPENGL_PLATFORM", "").strip().lower()
        if chosen in _CANDIDATES and platform and platform != chosen:
            raise RenderBackendError(
                f"MUJOCO_GL={chosen} but PYOPENGL_PLATFORM={platform}: they must match "
                f"(unset PYOPENGL_PLATFORM or set it to {chosen})"
            )
        _SELECTED = chosen
        log.info("rendering with MUJOCO_GL=%s (set by the environment)", chosen)
        return chosen
    if "OpenGL" in sys.modules:  # PyOpenGL fixes its platform when first imported: too late to choose
        raise RenderBackendError(
            "PyOpenGL was imported before a headless GL backend was chosen; set MUJOCO_GL=egl (or osmesa) in "
            "the environment before starting Python"
        )
    # (mujoco itself may already be imported: the renderer below picks its GL context class explicitly.)
    backend = select_backend(_probe)
    os.environ["MUJOCO_GL"] = backend
    os.environ["PYOPENGL_PLATFORM"] = backend
    _SELECTED = backend
    log.info("rendering with MUJOCO_GL=%s (auto-selected; set MUJOCO_GL to override)", backend)
    return backend


def select_backend(probe: Callable[[str], str | None]) -> str:
    """The first of EGL, OSMesa for which `probe` reports no error, else an actionable RenderBackendError."""
    errors: dict[str, str] = {}
    for backend in _CANDIDATES:
        err = probe(backend)
        if err is None:
            return backend
        errors[backend] = err
    detail = "; ".join(f"{b}: {e}" for b, e in errors.items())
    raise RenderBackendError(
        "no headless OpenGL backend works (" + detail + "). Install one of them, e.g. on Debian/Ubuntu "
        f"`sudo apt-get install {_APT_PACKAGES['egl']}` (EGL) or `sudo apt-get install "
        f"{_APT_PACKAGES['osmesa']}` (OSMesa), then set MUJOCO_GL=egl or MUJOCO_GL=osmesa."
    )


def gl_backend() -> str | None:
    """The backend chosen so far in this process (None before `ensure_gl_backend`)."""
    return _SELECTED or (os.environ.get("MUJOCO_GL") or None)


class OffscreenRenderer:
    """One GL context + MuJoCo render context, shared by every env of a process.

    Valid for any model built by `svrl_sim.scene` at this image size, because the scene uploads nothing
    model-specific (no textures or meshes) into the render context.
    """

    def __init__(self, model, width: int, height: int) -> None:
        backend = ensure_gl_backend()
        import mujoco

        self._mujoco = mujoco
        if backend == "egl":
            from mujoco.egl import GLContext
        elif backend == "osmesa":
            from mujoco.osmesa import GLContext
        else:  # glfw & co: a desktop session; fall back to whatever mujoco picked
            GLContext = mujoco.GLContext
        self.width, self.height = int(width), int(height)
        self._gl = self._ctx = None
        try:
            self._gl = GLContext(self.width, self.height)
            self._gl.make_current()
        except Exception as exc:
            other = "osmesa" if backend == "egl" else "egl"
            raise RenderBackendError(
                f"could not create a MUJOCO_GL={backend} context ({type(exc).__name__}: {exc}). Install "
                f"`{_APT_PACKAGES.get(backend, 'the OpenGL libraries')}`, or try MUJOCO_GL={other} "
                f"(`{_APT_PACKAGES[other]}`)."
            ) from exc
        self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._scene = mujoco.MjvScene(model, maxgeom=256)
        for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX", "mjRND_FOG", "mjRND_HAZE"):
            self._scene.flags[getattr(mujoco.mjtRndFlag, flag)] = 0
        self._option = mujoco.MjvOption()
        self._option.geomgroup[:] = 0
        self._option.geomgroup[0] = 1  # scene.VISIBLE_GROUP
        self._option.sitegroup[:] = 0
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, self.width, self.height)
        self._buffer = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self._catmask = int(mujoco.mjtCatBit.mjCAT_ALL)

    def render(self, model, data, camera_id: int, out: np.ndarray | None = None) -> np.ndarray:
        """Draw camera `camera_id` of (model, data) into `out` (uint8 HxWx3, row 0 = top of the image)."""
        mj = self._mujoco
        self._gl.make_current()
        self._camera.fixedcamid = camera_id
        mj.mjv_updateScene(model, data, self._option, None, self._camera, self._catmask, self._scene)
        mj.mjr_render(self._rect, self._scene, self._ctx)
        mj.mjr_readPixels(self._buffer, None, self._rect, self._ctx)
        if out is None:
            return self._buffer[::-1].copy()
        np.copyto(out, self._buffer[::-1])
        return out

    def close(self) -> None:
        if self._ctx is not None:
            self._gl.make_current()
            self._ctx.free()
            self._ctx = None
        if self._gl is not None:
            self._gl.free()
            self._gl = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: GL libraries may already be gone
            self.close()


_SHARED: dict[tuple[int, int], OffscreenRenderer] = {}


def shared_renderer(model, width: int, height: int) -> OffscreenRenderer:
    """The process-wide renderer for this image size (created on first use)."""
    key = (int(width), int(height))
    renderer = _SHARED.get(key)
    if renderer is None:
        renderer = _SHARED[key] = OffscreenRenderer(model, width, height)
    return renderer
