"""RosEnv: the trainer's chunked vector env over ROS 2, one `sim_node` per namespace (`/env_0`, `/env_1`, ...).

Same protocol and results as `svrl_sim.vector_env.VectorEnv` (`reset(episodes)`, `step_chunk(actions, active)`,
`close()`, the same observation dict and info keys), so `svrl_trainer.rollout` runs unchanged over topics; it is
registered as env backend `ros` (`ros_backend`, entry-point group `svrl.env_backends`), so the trainer package
never imports ROS.

Why it is exact: each env step is one `sim/step_chunk` call (StepChunk.srv) that carries the whole ee_delta chunk
AND the sim-time stamp of the observation the chunk was computed from; the answer carries the resulting
observation under its own stamp. The sim refuses a chunk for any other state than its current one, so nothing on
the command topics can slip in between, and an observation is paired with its action by sim time, never by the
order messages arrive in. The sim runs `SimEnv.step_chunk`'s own code, so the episodes are bit-identical to
the in-process VectorEnv's (tests/ros/test_ros_env.py checks it).

Layout: all instances share one ROS domain, each in its own namespace; `/clock` is remapped per namespace
(`/env_0/clock`), since several simulators cannot share one clock. A node that must run on an instance's sim
time gets the same remap. RosEnv either spawns the sim_nodes itself (`spawn=True`, the default) or attaches to
running ones (`spawn=False`, e.g. Isaac Sim bridges or a launch file).

Faults (as VectorEnv reports a dead worker): an instance that dies or does not answer within `timeout_s` loses
the episode it ran; the env reports it `terminated` with reward 0 and `info["worker_failed"] = True`, which the
rollout drops from the batch (a lost episode is not a failure). The other instances go on. A spawned instance
is restarted at the next `reset`; an attached one is tried again there. Bad input (an unknown task, a bad
init-state index, a NaN chunk, a wrong shape) is refused here with a clear error before any instance is
touched; the sim refuses the same itself and holds its state.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import numpy as np

from svrl_ros import topics
from svrl_ros.child_process import log_tail, spawn_python, stop_process
from svrl_sim.vector_env import (
    ClosedOnExit,
    WorkerFailedWarning,
    check_chunk,
    check_reset_ids,
    empty_step_results,
    lost_episode_info,
)

log = logging.getLogger(__name__)

OPTIONS = ("namespaces", "spawn", "timeout_s", "start_timeout_s", "publish_images", "log_dir")
# Each sim_node is single-threaded by design (as VectorEnv's workers): one instance per core is the parallelism.
_CHILD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_POLL_S = 0.02


@dataclass
class _Instance:
    """One sim_node: its namespace, clients, process (when spawned) and the state RosEnv last got from it."""

    index: int
    namespace: str
    reset_client: Any = None
    step_client: Any = None
    process: Popen | None = None
    log_path: Path | None = None
    up: bool = False  # answered its last call; False: lost (restarted or retried at the next reset)
    stamp_ns: int | None = None  # stamp of the state the next chunk must be computed from
    episode: tuple[Any, Any] | None = None  # (task name, InitState) of the current episode


class InstanceLostError(RuntimeError):
    """A sim instance died or stopped answering."""


class RosEnv(ClosedOnExit):
    """`num_envs` sim_node instances over ROS 2, stepped as one lock-step batch (see the module docstring).

    Batched observations as VectorEnv's: {"images": {cam: uint8[N, H, W, 3]}, "proprio": float32[N, 15],
    "instruction": list[str]} ("images" only when rendered). Arrays are copies: safe to keep.
    """

    def __init__(
        self,
        num_envs: int,
        *,
        image_size: int = 128,
        namespaces: Sequence[str] | None = None,
        spawn: bool = True,
        timeout_s: float = 30.0,
        start_timeout_s: float = 120.0,
        publish_images: bool = True,
        log_dir: str | Path | None = None,
    ) -> None:
        """`namespaces`: one per env (default env_0 .. env_{N-1}); `spawn`: start the sim_nodes as child
        processes (else attach to running ones, which must be in lock-step timing); `timeout_s`: how long one
        call may take before its instance counts as lost; `start_timeout_s`: for the nodes to come up
        (spawned ones, or attached ones still starting, e.g. from the same launch file); `publish_images`:
        spawned nodes also publish their camera topics (observers; the answers carry the frames either way);
        `log_dir`: the spawned nodes' logs (default: a temporary folder)."""
        from svrl_sim.constants import ACTION_DIMS, CAMERAS, PROPRIO_DIM

        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        names = [f"env_{i}" for i in range(num_envs)] if namespaces is None else [str(n) for n in namespaces]
        names = ["/" + n.strip("/") for n in names]
        if len(names) != num_envs or len(set(names)) != len(names) or "/" in names:
            raise ValueError(f"namespaces must be {num_envs} distinct non-empty names, got {namespaces!r}")
        if not 16 <= int(image_size) <= 1024:
            raise ValueError(f"image_size must be in [16, 1024], got {image_size!r}")
        if timeout_s <= 0 or start_timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s} and start_timeout_s={start_timeout_s} must be > 0")
        self.num_envs = int(num_envs)
        self.image_size = int(image_size)
        self.action_space = "ee_delta"
        self.action_dim = ACTION_DIMS["ee_delta"]
        self.cameras = tuple(CAMERAS)
        self.spawn = bool(spawn)
        self.timeout_s = float(timeout_s)
        self.start_timeout_s = float(start_timeout_s)
        self.publish_images = bool(publish_images)
        self._closed = False
        self._own_log_dir = log_dir is None
        self.log_dir = Path(tempfile.mkdtemp(prefix="svrl-rosenv-") if log_dir is None else log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        n, s = self.num_envs, self.image_size
        self._images = {c: np.zeros((n, s, s, 3), np.uint8) for c in self.cameras}
        self._proprio = np.zeros((n, PROPRIO_DIM), np.float32)
        self._instructions = [""] * n
        self._running = np.zeros(n, bool)
        self._lost = np.zeros(n, bool)  # the env's current episode was lost with its instance
        self._instances = [_Instance(i, ns) for i, ns in enumerate(names)]
        self._context = None
        self._node = None
        self._executor = None
        try:
            self._start_ros()
            if self.spawn:
                for inst in self._instances:
                    self._spawn(inst)
            self._await_up(
                self._instances, self.start_timeout_s
            )  # attached ones may be starting too (a launch)
        except BaseException:
            self.close()
            raise

    # --------------------------------------------------------------------------------------------- API
    @property
    def namespaces(self) -> list[str]:
        return [inst.namespace for inst in self._instances]

    @property
    def instance_pids(self) -> list[int | None]:
        """Process ids of spawned instances (None: attached, or not running)."""
        return [
            inst.process.pid if inst.process is not None and inst.process.poll() is None else None
            for inst in self._instances
        ]

    def reset(
        self,
        specs: Sequence[tuple[Any, Any]],
        env_ids: Sequence[int] | None = None,
        render: bool = True,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Reset env_ids (default: all) to (task, init state) pairs; returns the batched obs of ALL envs.

        Names and indices are checked here, before any instance is touched (KeyError / IndexError, as
        VectorEnv). An env whose instance is lost reports `info["worker_failed"]` and no running episode; a
        spawned instance that died is restarted first."""
        from svrl_interfaces.srv import ResetEpisode

        from svrl_sim.tasks import as_init_state, get_task, scene_init

        self._check_open()
        ids = check_reset_ids(self.num_envs, specs, env_ids)
        resolved = []
        for task, init_state in specs:
            t, ref = get_task(task), as_init_state(init_state)
            scene_init(t, ref)  # raises IndexError for a bad index, before any instance is touched
            resolved.append((t, ref))
        targets = [self._instances[i] for i in ids]
        self._revive([inst for inst in targets if not inst.up])
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for i in ids:
            self._running[i] = False
            self._lost[i] = False
        requests = {
            i: ResetEpisode.Request(task=t.name, split=ref.split, init_state_index=int(ref.index))
            for i, (t, ref) in zip(ids, resolved, strict=True)
        }
        answers, lost = self._call({i: ("reset", r) for i, r in requests.items() if self._instances[i].up})
        refused = {i: a.message for i, a in answers.items() if not a.success}
        if refused:  # the instance holds its old episode: no running episode for these envs
            for i in answers:
                if i not in refused:
                    self._instances[i].stamp_ns = _ns(answers[i].sim_time)
            raise ValueError(
                "sim/reset_episode refused: "
                + "; ".join(f"{self._instances[i].namespace}: {m}" for i, m in refused.items())
            )
        for i, answer in answers.items():
            inst = self._instances[i]
            inst.stamp_ns = _ns(answer.sim_time)
            inst.episode = (requests[i].task, resolved[ids.index(i)][1])
            self._instructions[i] = answer.instruction
        observed, lost_after = self._call(
            {i: ("step", self._chunk_request(i, np.zeros((0, self.action_dim)), render)) for i in answers}
        )
        lost |= lost_after
        for i, answer in observed.items():
            if not answer.success or _ns(answer.sim_time) != self._instances[i].stamp_ns:
                # the state moved between the two calls: something else steps this sim
                self._lose(
                    self._instances[i],
                    f"answered with another state than its reset's ({_ns(answer.sim_time)} ns, not "
                    f"{self._instances[i].stamp_ns} ns): something else steps it. {answer.message}",
                    answering=True,
                )
                lost.add(i)
                continue
            self._store(i, answer, render)
            self._running[i] = not answer.done
            infos[i] = self._info(i, answer, executed=0)
        for i in ids:
            if i in lost or not self._instances[i].up:
                self._lost[i] = True
                infos[i] = {"worker_failed": True}
        return self._observation(render), infos

    def step_chunk(
        self, actions: np.ndarray, active_mask: Sequence[bool] | np.ndarray | None = None, render: bool = True
    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """`VectorEnv.step_chunk` (same arguments, checks and results) on the sim instances: an env whose
        instance was lost reports its episode failed once (`info["worker_failed"]`), as a dead worker's."""
        self._check_open()
        # A lost env may be named once more: that step reports its episode lost, as VectorEnv does.
        a, active = check_chunk(
            self.num_envs, self.action_dim, actions, active_mask, self._running | self._lost
        )
        stepped = [int(i) for i in np.flatnonzero(active & self._running)]
        answers, lost = self._call({i: ("step", self._chunk_request(i, a[i], render)) for i in stepped})

        rewards, terminated, truncated, infos = empty_step_results(active)
        for i, answer in answers.items():
            if not answer.success:  # the sim held, but our episode is no longer the one it runs
                self._lose(self._instances[i], f"refused a chunk: {answer.message}", answering=True)
                lost.add(i)
                continue
            self._store(i, answer, render)
            rewards[i], terminated[i], truncated[i] = answer.reward, answer.terminated, answer.truncated
            infos[i] = dict(self._info(i, answer, int(answer.executed_steps)), active=True)
            if answer.terminated or answer.truncated or answer.done:
                self._running[i] = False
        for i in {*lost, *(int(j) for j in np.flatnonzero(active & self._lost))}:
            # reported once, as VectorEnv reports a dead worker's episode; stepping it again is an error
            self._running[i] = False
            self._lost[i] = False
            terminated[i], rewards[i] = True, 0.0
            infos[i] = lost_episode_info(bool(active[i]))
        return self._observation(render), rewards, terminated, truncated, infos

    def close(self) -> None:
        """Stop spawned instances (SIGINT, then SIGKILL) and this process's ROS context. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for inst in self._instances:
            if inst.process is not None and inst.process.poll() is None:
                with contextlib.suppress(OSError):
                    inst.process.send_signal(signal.SIGINT)
        for inst in self._instances:
            self._stop_process(inst, grace_s=10.0)
        if self._executor is not None:
            with contextlib.suppress(Exception):
                self._executor.shutdown()
        if self._node is not None:
            with contextlib.suppress(Exception):
                self._node.destroy_node()
        if self._context is not None:
            import rclpy

            rclpy.try_shutdown(context=self._context)
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    # --------------------------------------------------------------------------------------------- ROS side
    def _start_ros(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        from svrl_interfaces.srv import ResetEpisode, StepChunk

        self._context = rclpy.Context()
        # no signal handlers: Ctrl-C stays the host process's (the trainer's) KeyboardInterrupt; no process
        # arguments: a launch file's --ros-args (__node:=trainer_node) must not rename this helper node
        rclpy.init(args=[], context=self._context, signal_handler_options=SignalHandlerOptions.NO)
        self._node = rclpy.create_node(f"ros_env_{os.getpid()}", context=self._context)
        for inst in self._instances:
            inst.reset_client = self._node.create_client(ResetEpisode, f"{inst.namespace}/{topics.SIM_RESET}")
            inst.step_client = self._node.create_client(
                StepChunk, f"{inst.namespace}/{topics.SIM_STEP_CHUNK}"
            )
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)

    def _chunk_request(self, i: int, actions: np.ndarray, render: bool) -> Any:
        from svrl_interfaces.srv import StepChunk

        from svrl_ros.conversions import nanoseconds_to_stamp

        request = StepChunk.Request(action_dim=self.action_dim, render=bool(render))
        request.state_stamp = nanoseconds_to_stamp(self._instances[i].stamp_ns or 0)
        values = array.array("d")
        values.frombytes(np.ascontiguousarray(actions, dtype=np.float64).tobytes())
        request.actions = values
        return request

    def _call(self, calls: dict[int, tuple[str, Any]]) -> tuple[dict[int, Any], set[int]]:
        """Send every request at once, wait for every answer; returns (answers, lost env indices).

        An instance whose process exits, or that does not answer within `timeout_s`, is lost (`_lose`)."""
        futures = {}
        for i, (kind, request) in calls.items():
            inst = self._instances[i]
            client = inst.reset_client if kind == "reset" else inst.step_client
            futures[i] = (client, client.call_async(request))
        answers: dict[int, Any] = {}
        lost: set[int] = set()
        deadline = time.monotonic() + self.timeout_s
        while futures:
            self._executor.spin_once(timeout_sec=_POLL_S)
            for i, (client, future) in list(futures.items()):
                inst = self._instances[i]
                reason = None
                if future.done():
                    try:
                        answers[i] = future.result()
                    except Exception as error:
                        reason = f"failed to answer: {error}"
                elif inst.process is not None and inst.process.poll() is not None:
                    reason = f"exited (code {inst.process.returncode})"
                elif time.monotonic() > deadline:
                    reason = f"did not answer within {self.timeout_s:g} s"
                else:
                    continue
                del futures[i]
                if reason is not None:
                    with contextlib.suppress(Exception):
                        client.remove_pending_request(future)
                    self._lose(inst, reason)
                    lost.add(i)
        return answers, lost

    def _lose(self, inst: _Instance, reason: str, answering: bool = False) -> None:
        """Report a lost episode (as VectorEnv reports a dead worker's). An instance that stopped answering
        is marked down (a spawned one is stopped, to be restarted at the next reset); one that answers but
        no longer runs our episode (`answering`: something else stepped it) stays up: a reset fixes it."""
        inst.stamp_ns = None
        self._running[inst.index] = False
        self._lost[inst.index] = True
        pid = f" (pid {inst.process.pid})" if inst.process is not None else ""
        if answering:
            then = "the next reset starts it again"
        else:
            then = (
                "it is restarted at the next reset"
                if self.spawn
                else "it is looked for again at the next reset"
            )
        message = (
            f"RosEnv instance {inst.namespace}{pid} {reason}. The episode of env {inst.index} was lost and "
            f"is reported as lost (terminated, info['worker_failed']=True), not as a failure; {then}."
        )
        if not answering:
            inst.up = False
            if inst.process is not None:
                self._stop_process(inst, grace_s=0.0)
        warnings.warn(message, WorkerFailedWarning, stacklevel=3)
        log.warning(message)

    def _revive(self, instances: list[_Instance]) -> None:
        """Before a reset: restart lost spawned instances, look again for lost attached ones."""
        if not instances:
            return
        if self.spawn:
            for inst in instances:
                self._spawn(inst)
        try:
            self._await_up(instances, self.start_timeout_s if self.spawn else min(self.timeout_s, 2.0))
        except InstanceLostError as error:
            log.warning("%s", error)
            for inst in instances:  # a spawned one that never answered is not left running
                if not inst.up and inst.process is not None:
                    self._stop_process(inst, grace_s=0.0)

    def _spawn(self, inst: _Instance) -> None:
        self._stop_process(inst, grace_s=0.0)  # never two processes for one namespace
        ns = inst.namespace
        args = [
            "-m", "svrl_ros.sim_node", "--ros-args",
            "-r", f"__ns:={ns}", "-r", f"/clock:={ns}/clock",
            "-p", "timing:=lockstep", "-p", "use_sim_time:=true",
            "-p", f"image_size:={self.image_size}",
            "-p", f"publish_images:={'true' if self.publish_images else 'false'}",
        ]  # fmt: skip
        inst.log_path = self.log_dir / f"sim_node{ns.replace('/', '_')}.log"
        env = {**os.environ, **{k: os.environ.get(k, v) for k, v in _CHILD_ENV.items()}}
        env.setdefault("LP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.num_envs)))
        inst.process = spawn_python(*args, log=inst.log_path, env=env)

    def _await_up(self, instances: list[_Instance], limit_s: float) -> None:
        """Wait until every instance ANSWERS both services; a spawned one that exits or never comes is an error.

        A service that shows up in the graph is not enough: a restarted instance's services are "ready" at once
        (the killed one's endpoints linger in discovery), and a request sent before the new server has matched
        this client is lost without an answer. So each instance is pinged, again every second, with requests
        that change nothing (an empty chunk; a reset without a task, which the sim refuses) until both answer.
        """
        from svrl_interfaces.srv import ResetEpisode

        deadline = time.monotonic() + limit_s
        waiting = list(instances)
        pings: dict[int, list] = {}
        sent_at = -np.inf
        while waiting:
            now = time.monotonic()
            if now - sent_at >= 1.0:  # (re)send the pings of everyone still waiting
                sent_at = now
                for inst in waiting:
                    for client, future in pings.get(inst.index, []):
                        with contextlib.suppress(Exception):
                            client.remove_pending_request(future)
                    empty = self._chunk_request(inst.index, np.zeros((0, self.action_dim)), render=False)
                    pings[inst.index] = [
                        (inst.step_client, inst.step_client.call_async(empty)),
                        (inst.reset_client, inst.reset_client.call_async(ResetEpisode.Request())),
                    ]
            self._executor.spin_once(timeout_sec=0.05)
            for inst in list(waiting):
                if all(future.done() for _, future in pings[inst.index]):
                    inst.up = True
                    waiting.remove(inst)
                elif inst.process is not None and inst.process.poll() is not None:
                    raise InstanceLostError(
                        f"sim_node {inst.namespace} exited with code {inst.process.returncode} while starting; "
                        f"its log:\n{log_tail(inst.log_path) if inst.log_path else '(none)'}"
                    )
            if waiting and time.monotonic() > deadline:
                for inst in waiting:
                    for client, future in pings[inst.index]:
                        with contextlib.suppress(Exception):
                            client.remove_pending_request(future)
                names = [inst.namespace for inst in waiting]
                hint = (
                    "their logs are in " + str(self.log_dir)
                    if self.spawn
                    else "start them first (sim_node in lockstep timing, one namespace each) or use spawn=True"
                )
                raise InstanceLostError(
                    f"sim instances {names} do not answer on {topics.SIM_RESET} and {topics.SIM_STEP_CHUNK} after "
                    f"{limit_s:g} s (ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}); {hint}"
                )

    def _stop_process(self, inst: _Instance, grace_s: float) -> None:
        if inst.process is None:
            return
        if inst.process.poll() is None and grace_s <= 0:
            inst.process.kill()
        stop_process(inst.process, timeout_s=max(grace_s, 0.1))
        inst.process = None

    # --------------------------------------------------------------------------------------------- bookkeeping
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this RosEnv is closed")

    def _store(self, i: int, answer: Any, render: bool) -> None:
        """Keep the answered state as env i's observation (its stamp is what the next chunk must name)."""
        from svrl_ros.conversions import image_from_msg

        self._instances[i].stamp_ns = _ns(answer.sim_time)
        self._proprio[i] = np.asarray(answer.proprio, dtype=np.float32)
        if render:
            frames = dict(zip(answer.cameras, answer.images, strict=True))
            missing = [c for c in self.cameras if c not in frames]
            if missing:
                raise RuntimeError(f"{self._instances[i].namespace} answered without cameras {missing}")
            for cam in self.cameras:
                image = image_from_msg(frames[cam])
                if image.shape != self._images[cam].shape[1:]:
                    raise ValueError(
                        f"{self._instances[i].namespace} renders {cam} at {image.shape[:2]}, this RosEnv expects "
                        f"image_size={self.image_size}: start the instance with image_size:={self.image_size}"
                    )
                self._images[cam][i] = image

    def _info(self, i: int, answer: Any, executed: int) -> dict[str, Any]:
        """The info SimEnv gives (task, init_state, step, executed_steps, success)."""
        episode = self._instances[i].episode
        return {
            "task": answer.task,
            "init_state": episode[1] if episode is not None else None,
            "step": int(answer.episode_step),
            "executed_steps": executed,
            "success": bool(answer.episode_success),
        }

    def _observation(self, render: bool) -> dict[str, Any]:
        obs: dict[str, Any] = {"proprio": self._proprio.copy(), "instruction": list(self._instructions)}
        if render:
            obs["images"] = {c: self._images[c].copy() for c in self.cameras}
        return obs


def _ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


# ------------------------------------------------------------------------------------------------ backend
def make_ros_env(num_envs: int, *, image_size: int, num_workers: int | None = None, **options: Any) -> RosEnv:
    """Env backend `ros`: one sim instance per env (each is its own process, so `num_workers` does not apply);
    `options` (a train config's `env.options`) are RosEnv's keyword arguments."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"env backend 'ros' has no option(s) {unknown}; it takes {list(OPTIONS)}")
    return RosEnv(num_envs, image_size=image_size, **options)


def _ros_tasks(selection: Sequence[str]) -> list:
    """The embedded sim's task definitions: every simulator behind the topics runs the same tasks."""
    from svrl_trainer.catalog import get_backend

    return get_backend("sim").resolve_tasks(selection)


def ros_backend():
    """The `svrl.env_backends` entry point: `env.backend: ros`."""
    from svrl_trainer.catalog import EnvBackend

    return EnvBackend(
        "ros", _ros_tasks, make_ros_env, "sim instances over ROS 2, one namespace each (svrl_ros.ros_env)"
    )
