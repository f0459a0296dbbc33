"""`VectorEnv`: N `SimEnv`s in worker processes, frames through shared memory, batched chunked steps.

Why processes: software rendering is CPU-bound, so one worker per core is what scales. Why shared memory:
pickling 2 x 128 x 128 x 3 bytes per env per step through a pipe would cost more than rendering them; the
workers render straight into shared arrays and only small replies (rewards, flags, step counts) cross the pipes.

Failure model: every wait on a worker also watches its process sentinel and a timeout, so a worker that dies
(or hangs) is noticed at once, never waited on forever. It is replaced by a fresh one; the episodes it was
running are reported failed (`terminated=True`, reward 0, `info["worker_failed"]=True`) and a warning names the
worker. With `auto_reset=True` those envs restart their last (task, init state) in the new worker.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import warnings
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Protocol, TypeVar

import numpy as np

from svrl_sim.constants import ACTION_DIMS, CAMERAS, DEFAULT_CONTROL_HZ, DEFAULT_IMAGE_SIZE, PROPRIO_DIM
from svrl_sim.rendering import ensure_gl_backend
from svrl_sim.tasks import InitState, Task, as_init_state, get_task, scene_init
from svrl_sim.worker_protocol import attach_shared_memory, serve

log = logging.getLogger(__name__)

# Each worker is single-threaded by design: one worker per core is the parallelism.
_WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class WorkerFailedWarning(RuntimeWarning):
    """A VectorEnv worker died or hung and was replaced."""


_EXCEPTIONS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "IndexError": IndexError,
    "TypeError": TypeError,
    "KeyError": KeyError,
    "UnknownTaskError": KeyError,
    "RuntimeError": RuntimeError,
    "EpisodeNotRunningError": RuntimeError,
}


# ------------------------------------------------------------------------------------------------ worker side
def _worker_main(
    worker: int,
    env_ids: list[int],
    conn: Connection,
    shm_names: dict[str, str],
    num_envs: int,
    config: dict[str, Any],
) -> None:
    """Worker process: owns the SimEnvs `env_ids` and answers commands until "close" or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business; it will close us
    from svrl_sim.env import SimEnv

    size = config["image_size"]
    segments = attach_shared_memory(shm_names)
    try:
        images = {
            c: np.ndarray((num_envs, size, size, 3), np.uint8, segments[c].buf) for c in config["cameras"]
        }
        proprio = np.ndarray((num_envs, PROPRIO_DIM), np.float32, segments["proprio"].buf)
        envs = {}
        for i in env_ids:
            env = SimEnv(
                image_size=size,
                action_space=config["action_space"],
                control_hz=config["control_hz"],
                cameras=tuple(config["cameras"]),
            )
            env.bind_image_buffers({c: images[c][i] for c in config["cameras"]})
            envs[i] = env
        serve(conn, envs, proprio, config["auto_reset"])
    finally:
        for seg in segments.values():
            seg.close()


# ------------------------------------------------------------------------------------------------ env factories
class EnvFactory(Protocol):
    """What a `VectorEnv` runs in its workers. `SimEnvFactory` (svrl_sim's own scenes) is the default; other
    simulators (svrl_libero/) provide their own, so one vector env serves every backend.

    A factory checks episodes in the parent (bad names raise before any worker is touched) and starts one
    worker process that speaks svrl_sim.worker_protocol."""

    cameras: tuple[str, ...]
    action_dim: int
    proprio_dim: int

    def episode(self, task: Any, init_state: Any) -> tuple[str, Any, str]:
        """(task name, init state as the worker takes it, instruction); raises on an unknown task/state."""
        ...

    def start_worker(
        self,
        ctx: Any,
        index: int,
        env_ids: list[int],
        conn: Connection,
        shm_names: dict[str, str],
        num_envs: int,
        image_size: int,
        auto_reset: bool,
    ) -> Any:
        """Start the worker owning `env_ids` on the child end `conn`; returns a handle with the interface of
        `multiprocessing.Process` (pid, sentinel, is_alive, exitcode, join, kill, close)."""
        ...


class SimEnvFactory:
    """svrl_sim's own `SimEnv` in multiprocessing children (what `VectorEnv` always did)."""

    def __init__(
        self,
        action_space: str = "ee_delta",
        control_hz: float = DEFAULT_CONTROL_HZ,
        cameras: tuple[str, ...] = CAMERAS,
    ) -> None:
        if action_space not in ACTION_DIMS:
            raise ValueError(f"action_space {action_space!r} is not one of {sorted(ACTION_DIMS)}")
        if not cameras or any(c not in CAMERAS for c in cameras):
            raise ValueError(f"cameras must be a non-empty subset of {CAMERAS}, got {cameras!r}")
        self.action_space = action_space
        self.action_dim = ACTION_DIMS[action_space]
        self.control_hz = control_hz
        self.cameras = tuple(cameras)
        self.proprio_dim = PROPRIO_DIM

    def episode(self, task: Any, init_state: Any) -> tuple[str, Any, str]:
        t, ref = get_task(task), as_init_state(init_state)
        scene_init(t, ref)  # raises IndexError for a bad index, here in the parent
        return t.name, ref, t.instruction

    def start_worker(
        self,
        ctx: Any,
        index: int,
        env_ids: list[int],
        conn: Connection,
        shm_names: dict[str, str],
        num_envs: int,
        image_size: int,
        auto_reset: bool,
    ) -> Any:
        config = {
            "image_size": image_size,
            "action_space": self.action_space,
            "control_hz": self.control_hz,
            "cameras": list(self.cameras),
            "auto_reset": auto_reset,
        }
        proc = ctx.Process(
            target=_worker_main,
            args=(index, env_ids, conn, shm_names, num_envs, config),
            name=f"svrl-sim-worker-{index}",
            daemon=True,
        )
        proc.start()
        return proc


# ------------------------------------------------------------------------------------------------ batch rules
# What every vectorised backend (VectorEnv here, svrl_ros.ros_env.RosEnv over ROS) checks and reports the same
# way, so a trainer sees one contract whatever runs the sims.
StepResults = tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]


def check_reset_ids(num_envs: int, specs: Sequence[Any], env_ids: Sequence[int] | None) -> list[int]:
    """The env indices a reset addresses (default: all); a spec per env, distinct indices in range."""
    ids = list(range(num_envs)) if env_ids is None else [int(i) for i in env_ids]
    if len(specs) != len(ids):
        raise ValueError(f"got {len(specs)} (task, init_state) pairs for {len(ids)} envs")
    if any(not 0 <= i < num_envs for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"env_ids must be distinct indices in [0, {num_envs}), got {ids}")
    return ids


def check_chunk(
    num_envs: int,
    action_dim: int,
    actions: Any,
    active_mask: Sequence[bool] | np.ndarray | None,
    steppable: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(actions[N, K, D] as float64, active[N]) of a batched chunk, checked before any env is stepped:
    shapes, finite actions for the active envs, and an episode for each of them (`steppable[i]`)."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] != num_envs or a.shape[2] != action_dim or a.shape[1] < 1:
        raise ValueError(
            f"actions must have shape [num_envs={num_envs}, K, {action_dim}], got {tuple(a.shape)}"
        )
    active = np.ones(num_envs, bool) if active_mask is None else np.asarray(active_mask, dtype=bool)
    if active.shape != (num_envs,):
        raise ValueError(f"active_mask must have shape [{num_envs}], got {active.shape}")
    bad = [int(i) for i in np.flatnonzero(active) if not np.isfinite(a[i]).all()]
    if bad:
        raise ValueError(f"actions of env(s) {bad} contain NaN or inf; nothing was executed")
    ended = [int(i) for i in np.flatnonzero(active & ~steppable)]
    if ended:
        raise RuntimeError(
            f"env(s) {ended} have no running episode (never reset, or ended); reset them or leave them out "
            "of active_mask"
        )
    return a, active


def empty_step_results(active: np.ndarray) -> StepResults:
    """rewards, terminated, truncated, infos of a chunk before any env answered (inactive envs keep these)."""
    n = len(active)
    infos: list[dict[str, Any]] = [{"executed_steps": 0, "active": bool(active[i])} for i in range(n)]
    return np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool), infos


def lost_episode_info(active: bool) -> dict[str, Any]:
    """The info of an episode lost with its worker / sim instance (reported once, with terminated=True)."""
    return {"worker_failed": True, "executed_steps": 0, "success": False, "active": active}


_Closing = TypeVar("_Closing", bound="ClosedOnExit")


class ClosedOnExit:
    """`with env:`, and garbage collection as a last resort, close a batched env (VectorEnv, RosEnv): the
    processes and shared memory it owns never outlive it."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Closing) -> _Closing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


# ------------------------------------------------------------------------------------------------ parent side
@contextlib.contextmanager
def _child_environment(extra: dict[str, str]) -> Iterator[None]:
    """Temporarily export variables so spawned children start with them (e.g. single-threaded BLAS)."""
    saved = {k: os.environ.get(k) for k in extra}
    for k, v in extra.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Worker:
    def __init__(self, index: int, env_ids: list[int]) -> None:
        self.index = index
        self.env_ids = env_ids
        self.process: mp.process.BaseProcess | None = None
        self.conn: Connection | None = None


class VectorEnv(ClosedOnExit):
    """`num_envs` envs spread over `num_workers` processes, stepped as one batch.

    The envs are svrl_sim's `SimEnv`s unless `env_factory` says otherwise (e.g. LIBERO's, in its own
    interpreter: svrl_libero/); `action_space`, `control_hz` and `cameras` then come from the factory.

    Batched observations follow docs/contracts.md: {"images": {cam: uint8[N, H, W, 3]}, "proprio":
    float32[N, 15], "instruction": list[str]} ("images" only when rendered). Arrays are copies: safe to keep.
    """

    def __init__(
        self,
        num_envs: int,
        num_workers: int | None = None,
        image_size: int = DEFAULT_IMAGE_SIZE,
        action_space: str = "ee_delta",
        control_hz: float = DEFAULT_CONTROL_HZ,
        cameras: tuple[str, ...] = CAMERAS,
        auto_reset: bool = False,
        timeout_s: float = 120.0,
        start_method: str = "spawn",
        render_threads: int | None = None,
        env_factory: EnvFactory | None = None,
    ) -> None:
        """`render_threads`: rasteriser threads per worker (Mesa llvmpipe's LP_NUM_THREADS); default: the
        machine's cores divided among the workers, so workers do not fight over cores. An LP_NUM_THREADS already
        in the environment wins."""
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if num_workers is None:
            num_workers = min(int(num_envs), os.cpu_count() or 1)
        if not 1 <= num_workers <= num_envs:
            raise ValueError(f"num_workers must be in [1, num_envs={num_envs}], got {num_workers}")
        if env_factory is None:
            env_factory = SimEnvFactory(action_space, control_hz, cameras)
        self.factory = env_factory
        self.num_envs = int(num_envs)
        self.num_workers = int(num_workers)
        self.image_size = int(image_size)
        self.action_space = getattr(env_factory, "action_space", "ee_delta")
        self.action_dim = int(env_factory.action_dim)
        self.cameras = tuple(env_factory.cameras)
        self.proprio_dim = int(env_factory.proprio_dim)
        self.auto_reset = bool(auto_reset)
        self.timeout_s = float(timeout_s)
        self.gl_backend = ensure_gl_backend()  # probe once here; children inherit MUJOCO_GL
        self._ctx = mp.get_context(start_method)
        if render_threads is None:
            render_threads = max(1, (os.cpu_count() or 1) // self.num_workers)
        self._child_env = dict(_WORKER_ENV, LP_NUM_THREADS=str(int(render_threads)))
        self._closed = False
        self._workers: list[_Worker] = []
        self._segments: dict[str, SharedMemory] = {}

        n, s = self.num_envs, self.image_size
        try:
            for cam in self.cameras:
                self._segments[cam] = SharedMemory(create=True, size=n * s * s * 3)
            self._segments["proprio"] = SharedMemory(create=True, size=n * self.proprio_dim * 4)
            self._images = {
                c: np.ndarray((n, s, s, 3), np.uint8, self._segments[c].buf) for c in self.cameras
            }
            self._proprio = np.ndarray((n, self.proprio_dim), np.float32, self._segments["proprio"].buf)
            for c in self.cameras:
                self._images[c][:] = 0
            self._proprio[:] = 0
            # per env: (task name, init state as its worker takes it, instruction)
            self._specs: list[tuple[str, Any, str] | None] = [None] * n
            self._running = np.zeros(n, dtype=bool)
            chunks = np.array_split(np.arange(n), self.num_workers)
            self._workers = [_Worker(w, [int(i) for i in ids]) for w, ids in enumerate(chunks)]
            self._owner = np.zeros(n, dtype=int)
            for w in self._workers:
                self._owner[w.env_ids] = w.index
            for w in self._workers:
                self._start(w)
            for w in self._workers:
                self._await_ready(w)
        except BaseException:
            self.close()
            raise

    # --------------------------------------------------------------------------------------------- API
    @property
    def worker_pids(self) -> list[int | None]:
        return [w.process.pid if w.process is not None else None for w in self._workers]

    def reset(
        self,
        specs: Sequence[tuple[str | Task, InitState | tuple[str, int]]],
        env_ids: Sequence[int] | None = None,
        render: bool = True,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Reset env_ids (default: all) to (task, init state) pairs; returns the batched obs of ALL envs.

        Names and indices are checked here, before any worker is touched."""
        self._check_open()
        ids = check_reset_ids(self.num_envs, specs, env_ids)
        resolved = [self.factory.episode(task, init_state) for task, init_state in specs]
        payload: dict[int, list] = {}
        for i, (name, ref, _) in zip(ids, resolved, strict=True):
            payload.setdefault(int(self._owner[i]), []).append((i, name, ref, render))
        for i, spec in zip(ids, resolved, strict=True):
            self._specs[i] = spec
        replies, failed = self._roundtrip({w: ("reset", items) for w, items in payload.items()})
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for w in list(failed):  # the replacement worker starts empty: reset the requested envs there again
            for i in self._workers[w].env_ids:
                if self._running[i] and i not in ids:  # an episode that was not being reset is lost
                    infos[i] = {"worker_failed": True}
                self._running[i] = False
            retry, failed_again = self._roundtrip({w: ("reset", payload[w])})
            if failed_again:
                raise RuntimeError(f"svrl_sim worker {w} died twice while resetting; giving up")
            replies[w] = retry[w]
        for items in replies.values():
            for i, info in items:
                infos[i] = info
                self._running[i] = True
        return self._observation(render), infos

    def step_chunk(
        self, actions: np.ndarray, active_mask: Sequence[bool] | np.ndarray | None = None, render: bool = True
    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Run actions[N, K, D] (each env stops early at success/time limit); render once at the end.

        Inactive envs (active_mask False) are not stepped and report executed_steps 0. Returns batched obs,
        rewards[N] (1.0 if the env succeeded during this chunk), terminated[N], truncated[N], infos[N]."""
        self._check_open()
        a, active = check_chunk(self.num_envs, self.action_dim, actions, active_mask, self._running)
        payload: dict[int, list] = {}
        for i in np.flatnonzero(active):
            payload.setdefault(int(self._owner[i]), []).append((int(i), a[i].tolist()))
        replies, failed = self._roundtrip({w: ("step", items, render) for w, items in payload.items()})

        rewards, terminated, truncated, infos = empty_step_results(active)
        for items in replies.values():
            for i, reward, term, trunc, info in items:
                rewards[i], terminated[i], truncated[i] = reward, term, trunc
                infos[i] = dict(info, active=True)
                if (term or trunc) and not self.auto_reset:
                    self._running[i] = False
        for w in failed:
            for i in self._workers[w].env_ids:
                was_running = bool(self._running[i])
                self._running[i] = False
                if was_running:  # the episode was lost with the worker
                    terminated[i], rewards[i] = True, 0.0
                    infos[i] = lost_episode_info(bool(active[i]))
            if self.auto_reset:
                self._reset_after_failure(self._workers[w], render)
        return self._observation(render), rewards, terminated, truncated, infos

    def step(
        self, actions: np.ndarray, active_mask: Sequence[bool] | np.ndarray | None = None, render: bool = True
    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """One control step per env: actions[N, D]."""
        a = np.asarray(actions)
        if a.ndim != 2:
            raise ValueError(
                f"actions must have shape [num_envs={self.num_envs}, {self.action_dim}], got {a.shape}"
            )
        return self.step_chunk(a[:, None, :], active_mask, render)

    def close(self) -> None:
        """Stop every worker (politely, then by force) and free the shared memory. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            if w.conn is not None and w.process is not None and w.process.is_alive():
                with contextlib.suppress(OSError, ValueError):
                    w.conn.send(("close",))
        for w in self._workers:
            self._stop(w, grace_s=2.0)
        self._images, self._proprio = {}, None  # drop views before closing the buffers
        for seg in self._segments.values():
            with contextlib.suppress(Exception):
                seg.close()
            with contextlib.suppress(FileNotFoundError):
                seg.unlink()
        self._segments = {}

    # --------------------------------------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this VectorEnv is closed")

    def _start(self, w: _Worker) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        names = {k: seg.name for k, seg in self._segments.items()}
        with _child_environment(self._child_env):
            try:
                proc = self.factory.start_worker(
                    self._ctx,
                    w.index,
                    w.env_ids,
                    child,
                    names,
                    self.num_envs,
                    self.image_size,
                    self.auto_reset,
                )
            except BaseException:
                parent.close()
                raise
            finally:
                child.close()
        w.process, w.conn = proc, parent

    def _await_ready(self, w: _Worker) -> None:
        assert w.conn is not None and w.process is not None
        ready = wait([w.conn, w.process.sentinel], timeout=self.timeout_s)
        if w.conn in ready:
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg is not None and msg[0] == "ready":
                return
            if msg is not None and msg[0] == "error":
                raise RuntimeError(f"svrl_sim worker {w.index} failed to start: {msg[2]}\n{msg[3]}")
        code = w.process.exitcode
        self._stop(w, grace_s=0.0)
        raise RuntimeError(
            f"svrl_sim worker {w.index} did not start within {self.timeout_s:.0f} s (exit code {code}); "
            "check that MUJOCO_GL works in a subprocess (python -c 'import svrl_sim.env')"
            + getattr(self.factory, "start_hint", "")
        )

    def _stop(self, w: _Worker, grace_s: float) -> None:
        proc = w.process
        if proc is not None:
            proc.join(timeout=grace_s)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5.0)
            with contextlib.suppress(ValueError):
                proc.close()
        if w.conn is not None:
            with contextlib.suppress(OSError):
                w.conn.close()
        w.process, w.conn = None, None

    def _replace(self, w: _Worker, reason: str) -> None:
        pid = w.process.pid if w.process is not None else None
        self._stop(w, grace_s=0.0)
        message = (
            f"svrl_sim VectorEnv worker {w.index} (pid {pid}) {reason}; restarted it. The episodes of its "
            f"envs {w.env_ids} were lost and are reported as failed (terminated, "
            "info['worker_failed']=True)."
        )
        warnings.warn(message, WorkerFailedWarning, stacklevel=4)
        log.info(message)
        self._start(w)
        self._await_ready(w)

    def _roundtrip(self, commands: dict[int, tuple]) -> tuple[dict[int, Any], set[int]]:
        """Send one command per worker, collect every reply. Dead or hung workers are replaced and returned
        in the `failed` set; a worker-side exception is re-raised here once all replies are in."""
        failed: set[int] = set()
        pending: dict[int, _Worker] = {}
        for idx, cmd in commands.items():
            w = self._workers[idx]
            assert w.conn is not None and w.process is not None
            if not w.process.is_alive():
                self._replace(w, f"had died (exit code {w.process.exitcode})")
                failed.add(idx)
                continue
            try:
                w.conn.send(cmd)
            except (BrokenPipeError, OSError):
                self._replace(w, "could not be reached")
                failed.add(idx)
                continue
            pending[idx] = w
        replies: dict[int, Any] = {}
        errors: list[tuple[int, tuple]] = []
        while pending:
            by_handle: dict[Any, int] = {}
            for idx, w in pending.items():
                by_handle[w.conn] = idx
                by_handle[w.process.sentinel] = idx  # type: ignore[union-attr]
            ready = wait(list(by_handle), timeout=self.timeout_s)
            if not ready:  # nobody answered in time: the pending workers are hung
                for idx, w in list(pending.items()):
                    self._replace(w, f"did not answer within {self.timeout_s:.0f} s")
                    failed.add(idx)
                pending.clear()
                break
            for handle in ready:
                idx = by_handle[handle]
                if idx not in pending:
                    continue
                w = pending[idx]
                msg = None
                if handle is w.conn or w.conn.poll():  # type: ignore[union-attr]
                    try:
                        msg = w.conn.recv()  # type: ignore[union-attr]
                    except (EOFError, OSError):
                        msg = None
                if msg is None:
                    code = w.process.exitcode if w.process is not None else None
                    self._replace(w, f"died (exit code {code})")
                    failed.add(idx)
                elif msg[0] == "ok":
                    replies[idx] = msg[1]
                else:
                    errors.append((idx, msg))
                del pending[idx]
        if errors:
            idx, (_, name, text, tb) = errors[0]
            log.debug("worker %d traceback:\n%s", idx, tb)
            raise _EXCEPTIONS.get(name, RuntimeError)(f"[svrl_sim worker {idx}] {text}")
        return replies, failed

    def _reset_after_failure(self, w: _Worker, render: bool) -> None:
        items = [
            (i, self._specs[i][0], self._specs[i][1], render)  # type: ignore[index]
            for i in w.env_ids
            if self._specs[i] is not None
        ]
        if not items:
            return
        _, failed = self._roundtrip({w.index: ("reset", items)})
        if not failed:
            for i, _, _, _ in items:
                self._running[i] = True

    def _observation(self, render: bool) -> dict[str, Any]:
        obs: dict[str, Any] = {
            "proprio": self._proprio.copy(),  # type: ignore[union-attr]
            "instruction": [spec[2] if spec is not None else "" for spec in self._specs],
        }
        if render:
            obs["images"] = {c: self._images[c].copy() for c in self.cameras}
        return obs
