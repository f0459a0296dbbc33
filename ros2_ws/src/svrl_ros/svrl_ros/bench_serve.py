"""`svrl bench serve`: what serving a policy through ROS costs per chunk, next to the bare runtime.

Per image size, a real `PolicyServer` (learned runner, MultiThreadedExecutor, its own process) serves one
goal while this process plays a lock-step sim against it: it publishes both camera images (rgb8, the size
under test), joint_states and sim/episode_status at one stamp, and answers every chunk with the state at the
chunk's end stamp (what arm_controller + sim_node do in lock-step). Measured per chunk:

- **serve**: inside policy_server, from the DDS reception of the message that completed the observation to
  the chunk handed to DDS (`LearnedDriver.chunk_timings`): subscription dispatch, image conversion, waking
  the goal thread, the runner thread hand-off, proprio, the runtime, building and publishing the message.
- **bare**: `load_runtime(ckpt, backend).sample(obs, 0.0)` in this process on the same observations (same
  loader, hence same runtime and thread count, same environment), after the server has stopped.
- **overhead** = serve - bare (median and p90); the issue's target is <= 3 ms per chunk.
- **paired overhead**: per chunk, serve minus that chunk's own runtime call inside the server. On a shared,
  loaded machine the serve and bare runs meet different loads; the paired figure does not.
- informative: the round trip seen by this process (state publish start -> chunk receipt) and its two DDS
  legs (CLOCK_MONOTONIC is system-wide, so the server's and this process's stamps compare directly).

The served chunks are checked against the bare runtime's (greedy decoding of the same inputs must give
the same actions): a mismatch means the two did not see the same observation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from svrl_ros.child_process import Spawn, log_tail, spawn_python, stop_process

TARGET_OVERHEAD_MS = 3.0
DEFAULT_SIZES = (128, 224)
PERIOD_NS = 100_000_000  # one control period at the server's default 10 Hz
START_STAMP_NS = 5 * PERIOD_NS
HOME_ARM = (0.0, -0.3, 0.0, -2.5, 0.0, 2.2, 0.8)
HOME_FINGERS = (0.04, 0.04)
INSTRUCTION = "put the cube on the plate"
SERVER_START_LIMIT_S = 120.0  # hang guards only; nothing is judged on time
CHUNK_LIMIT_S = 30.0
GOAL_GAP_NS = 1000 * PERIOD_NS  # between the last state of one goal and the first of the next
REPUBLISH_AFTER_S = 2.0  # a best-effort image lost on the way: send the same state again


def _progress(message: str) -> None:
    print(f"bench serve: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ the server
def _serve_child(argv: list[str]) -> int:
    """`python -m svrl_ros.bench_serve --serve-child TIMINGS [--ros-args ...]`: policy_server as its main()
    runs it, writing the learned driver's chunk timings to TIMINGS when it stops (SIGINT)."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    from svrl_ros.policy_server import EXECUTOR_THREADS, PolicyServer

    timings_path = Path(argv[0])
    parent = os.getppid()
    rclpy.init(args=["bench_serve", *argv[1:]])  # rcl reads argv[0] as the program name
    node = None
    try:
        node = PolicyServer()
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
        executor.add_node(node)

        def orphan_guard() -> None:  # the bench died without stopping us: stop too
            if os.getppid() != parent:
                rclpy.try_shutdown()

        node.create_timer(0.5, orphan_guard)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            timings = [asdict(t) for t in getattr(node.driver, "chunk_timings", [])]
            timings_path.write_text(json.dumps(timings))
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


# ------------------------------------------------------------------------------ the lock-step sim side
@dataclass
class SentState:
    stamp_ns: int
    images: dict[str, np.ndarray]
    arm: np.ndarray
    fingers: np.ndarray
    publish_started_ns: int = 0
    publishes: int = 0


@dataclass
class ReceivedChunk:
    stamp_ns: int
    chunk_index: int
    received_ns: int
    actions: np.ndarray


@dataclass
class FeederLog:
    states: dict[int, SentState] = field(default_factory=dict)
    chunks: list[ReceivedChunk] = field(default_factory=list)
    stop_chunks: int = 0


class LockstepFeeder:
    """This process's side of the graph: a lock-step sim that answers each chunk with the state at its end."""

    def __init__(self, cameras: Sequence[str], seed: int = 0) -> None:
        import rclpy
        from rclpy.action import ActionClient
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image, JointState
        from svrl_interfaces.action import ExecuteInstruction
        from svrl_interfaces.msg import ActionChunk, EpisodeStatus

        from svrl_ros import topics

        self.image_size = 0  # set per goal
        self.cameras = tuple(cameras)
        self.log = FeederLog()
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._last_publish = 0.0
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bench_serve", context=self.context)
        self._image_pubs = {
            cam: self.node.create_publisher(Image, topics.CAMERA_IMAGE_TOPICS[cam], 5) for cam in self.cameras
        }
        self._joint_pub = self.node.create_publisher(JointState, topics.JOINT_STATES, 50)
        self._status_pub = self.node.create_publisher(EpisodeStatus, topics.SIM_STATUS, 50)
        self.node.create_subscription(ActionChunk, topics.ACTION_CHUNK, self._on_chunk, 50)
        self.client = ActionClient(self.node, ExecuteInstruction, topics.EXECUTE_INSTRUCTION)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _new_state(self, stamp_ns: int) -> SentState:
        size = self.image_size
        images = {c: self._rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in self.cameras}
        arm = np.asarray(HOME_ARM) + self._rng.uniform(-0.05, 0.05, size=7)
        return SentState(stamp_ns, images, arm, np.asarray(HOME_FINGERS))

    def publish_state(self, stamp_ns: int) -> None:
        """Status, both images, then joint_states, as sim_node orders them; the same stamp re-sends the same state."""
        from svrl_interfaces.msg import EpisodeStatus

        from svrl_ros.conversions import image_msg, joint_state_msg, nanoseconds_to_stamp
        from svrl_ros.observation_buffer import ARM_JOINTS, FINGER_JOINTS

        with self._lock:
            state = self.log.states.get(stamp_ns)
            if state is None:
                state = self.log.states[stamp_ns] = self._new_state(stamp_ns)
            stamp = nanoseconds_to_stamp(stamp_ns)
            status = EpisodeStatus(step=(stamp_ns - START_STAMP_NS) // PERIOD_NS, max_steps=100_000)
            status.header.stamp = stamp
            images = {c: image_msg(state.images[c], stamp, c) for c in self.cameras}
            joints = joint_state_msg(
                ARM_JOINTS + FINGER_JOINTS, [*state.arm, *state.fingers], [0.0] * 9, stamp
            )
            state.publish_started_ns = time.monotonic_ns()
            state.publishes += 1
            self._status_pub.publish(status)
            for cam in self.cameras:
                self._image_pubs[cam].publish(images[cam])
            self._joint_pub.publish(joints)
            self._last_publish = time.monotonic()

    def _on_chunk(self, msg: Any) -> None:
        from svrl_ros.conversions import chunk_actions, stamp_to_nanoseconds

        received = time.monotonic_ns()
        stamp_ns = stamp_to_nanoseconds(msg.header.stamp)
        if msg.chunk_length == 0:
            self.log.stop_chunks += 1
            return
        with self._lock:
            self.log.chunks.append(
                ReceivedChunk(stamp_ns, int(msg.chunk_index), received, chunk_actions(msg))
            )
        self.publish_state(stamp_ns + int(msg.chunk_length) * PERIOD_NS)

    def run_goal(self, image_size: int, max_steps: int, server: subprocess.Popen, log: Path) -> Any:
        """Send one goal with images of `image_size` px and play the sim until its result (the response).

        Sim time never goes back: a later goal starts well after every stamp sent before. Its first chunk
        may still come from the previous goal's last state (the server takes the newest observation it
        has); that is one reason the first chunks are warm-up.
        """
        from svrl_interfaces.action import ExecuteInstruction

        deadline = time.monotonic() + SERVER_START_LIMIT_S
        while not self.client.wait_for_server(timeout_sec=0.5):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"policy_server did not come up:\n{log_tail(log)}")
        with self._lock:
            self.image_size = image_size
            start_ns = max(self.log.states) + GOAL_GAP_NS if self.log.states else START_STAMP_NS
        self.publish_state(start_ns)
        goal = ExecuteInstruction.Goal(instruction=INSTRUCTION, max_steps=max_steps)
        handle = self._wait(self.client.send_goal_async(goal), server, log)
        if not handle.accepted:
            raise RuntimeError(f"policy_server rejected the goal:\n{log_tail(log)}")
        return self._wait(handle.get_result_async(), server, log)

    def _wait(self, future: Any, server: subprocess.Popen, log: Path) -> Any:
        """Wait for `future`, re-sending the newest state when no chunk answers it (a lost best-effort image)."""
        last_progress, seen = time.monotonic(), -1
        while not future.done():
            time.sleep(0.005)
            now = time.monotonic()
            with self._lock:
                count = len(self.log.chunks)
                newest = max(self.log.states) if self.log.states else None
                quiet = now - self._last_publish
            if count != seen:
                last_progress, seen = now, count
            if server.poll() is not None:
                raise RuntimeError(f"policy_server exited (code {server.returncode}):\n{log_tail(log)}")
            if now - last_progress > CHUNK_LIMIT_S:
                raise RuntimeError(f"no chunk for {CHUNK_LIMIT_S:.0f} s:\n{log_tail(log)}")
            # before the first chunk the server may not have discovered us yet: repeat more often
            if newest is not None and quiet > (0.2 if count == 0 else REPUBLISH_AFTER_S):
                self.publish_state(newest)
        return future.result()

    def close(self) -> None:
        import rclpy

        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


# ------------------------------------------------------------------------------------------ measuring
def _stats(values_ms: Sequence[float]) -> dict[str, float | None]:
    if not len(values_ms):
        return {"median": None, "p90": None}
    arr = np.asarray(values_ms, dtype=np.float64)
    return {"median": round(float(np.median(arr)), 3), "p90": round(float(np.percentile(arr, 90)), 3)}


def _span(timing: dict[str, int], start: str, end: str) -> float:
    return (timing[f"{end}_ns"] - timing[f"{start}_ns"]) / 1e6


def _diff(a: dict[str, float | None], b: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if a[k] is None or b[k] is None else round(a[k] - b[k], 3) for k in a}


def _checkpoint_for(size: int, preset: str, ckpt: str | None, backend: str, tmp: Path) -> Path:
    if ckpt is not None:
        path = Path(ckpt)
        if backend in ("auto", "onnx"):
            from svrl_policy.checkpoint import ONNX_FILE
            from svrl_policy.export import export_onnx

            if not (path / ONNX_FILE).exists():
                _progress(f"exporting {path} to ONNX")
                export_onnx(path)
        return path
    from svrl_policy.bench import _random_checkpoint  # the same random policy `svrl bench policy` times

    directory = tmp / f"size-{size}"
    directory.mkdir(parents=True, exist_ok=True)
    _progress(f"{size} px: building a random {preset} policy at {size} px with an ONNX export")
    return _random_checkpoint(preset, size, directory)


def _bare_times(
    policy: Any, feeder_log: FeederLog, stamps: Sequence[int], warmup: int
) -> tuple[list[float], list[np.ndarray]]:
    """`runtime.sample(obs, 0.0)` on the observations the server was sent, in the order it saw them."""
    from svrl_ros.learned_policy import JointReading

    observations = []
    for stamp in stamps:
        state = feeder_log.states[stamp]
        joints = JointReading(state.arm.copy(), state.fingers.copy())
        observations.append(policy.observation(state.images, joints, INSTRUCTION))
    runtime = policy.runtime
    for obs in observations[: max(1, warmup)]:
        runtime.sample(obs, 0.0)
    times, chunks = [], []
    for obs in observations:
        started = time.perf_counter_ns()
        out = runtime.sample(obs, 0.0)
        times.append((time.perf_counter_ns() - started) / 1e6)
        actions = np.asarray(out.actions, dtype=np.float32)
        chunks.append(actions[0] if actions.ndim == 3 else actions)
    return times, chunks


def bench_checkpoint(
    ckpt: Path,
    sizes: Sequence[int],
    *,
    backend: str,
    chunks: int,
    warmup: int,
    workdir: Path,
    spawn: Spawn,
) -> list[dict[str, Any]]:
    """One policy_server process on `ckpt` serves one goal of `warmup + chunks` chunks per image size;
    then the bare runtime is timed on the same observations (the server has stopped by then)."""
    from svrl_ros.learned_policy import LearnedPolicy

    policy = LearnedPolicy(ckpt, backend)  # load_runtime(ckpt, backend), as the server loads it
    total = warmup + chunks
    tag = f"{ckpt.name}-{len(list(workdir.glob('timings-*')))}"
    timings_path = workdir / f"timings-{tag}.json"
    log = workdir / f"policy_server-{tag}.log"
    params = {
        "runner": "learned",
        "checkpoint": str(ckpt),
        "backend": backend,
        "success_source": "none",
        "reset_sim": "false",
        "observation_timeout_s": "20.0",
        "runner_deadline_s": "120.0",
        "control_rate_hz": str(1e9 / PERIOD_NS),
    }
    ros_args = [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
    _progress(f"starting policy_server on {ckpt.name} ({policy.runtime_name})")
    server = spawn(
        "-m", "svrl_ros.bench_serve", "--serve-child", str(timings_path), "--ros-args", *ros_args, log=log
    )
    feeder = None
    goals = []
    try:
        feeder = LockstepFeeder(policy.cameras)
        for size in sizes:
            _progress(f"{size} px: serving {total} chunks ({warmup} warm-up)")
            first = len(feeder.log.chunks)
            result = feeder.run_goal(size, total * policy.chunk_len, server, log).result
            goals.append((size, feeder.log.chunks[first:], result))
            _progress(f"{size} px: goal ended ({result.reason}); {len(goals[-1][1])} chunks received")
    finally:
        if feeder is not None:
            feeder.close()
        stop_process(server, timeout_s=15.0)
    if not timings_path.is_file():
        raise RuntimeError(f"policy_server wrote no timings:\n{log_tail(log)}")
    timings = {t["stamp_ns"]: t for t in json.loads(timings_path.read_text())}
    return [
        _summarise(size, received, result, timings, feeder.log, policy, warmup)
        for size, received, result in goals
    ]


def _summarise(
    size: int,
    received: list[ReceivedChunk],
    result: Any,
    timings: dict[int, dict[str, int]],
    sent: FeederLog,
    policy: Any,
    warmup: int,
) -> dict[str, Any]:
    measured = [c for c in received[warmup:] if c.stamp_ns in timings]
    resent = [c for c in measured if sent.states[c.stamp_ns].publishes > 1]
    measured = [c for c in measured if sent.states[c.stamp_ns].publishes == 1]
    rows = [(c, timings[c.stamp_ns], sent.states[c.stamp_ns]) for c in measured]
    serve = [_span(t, "completed", "published") for _, t, _ in rows]
    _progress(f"{size} px: timing the bare runtime on the same {len(rows)} observations")
    bare, bare_chunks = _bare_times(policy, sent, [c.stamp_ns for c in measured], warmup)
    identical = sum(bool(np.array_equal(c.actions, b)) for c, b in zip(measured, bare_chunks, strict=True))
    serve_s, bare_s = _stats(serve), _stats(bare)
    overhead = _diff(serve_s, bare_s)
    return {
        "image_size": size,
        "model_image_size": int(policy.runtime.config.image_size),
        "chunk_len": policy.chunk_len,
        "runtime": policy.runtime_name,
        "chunks": len(rows),
        "warmup_chunks": warmup,
        "resent_excluded": len(resent),
        "goal_reason": result.reason,
        "serve_ms": serve_s,
        "bare_ms": bare_s,
        "overhead_ms": overhead,
        "overhead_within_target": None
        if overhead["median"] is None
        else overhead["median"] <= TARGET_OVERHEAD_MS,
        # the same chunk's serve time minus its own runtime call in the server: paired, so it does not
        # drift with the machine's load between the serve run and the bare run
        "overhead_paired_ms": _stats(
            [serve[i] - _span(t, "inference_started", "runner_finished") for i, (_, t, _) in enumerate(rows)]
        ),
        "serve_breakdown_ms": {
            "to_runner": _stats([_span(t, "completed", "runner_started") for _, t, _ in rows]),
            "observation": _stats([_span(t, "runner_started", "inference_started") for _, t, _ in rows]),
            "inference": _stats([_span(t, "inference_started", "runner_finished") for _, t, _ in rows]),
            "to_publish": _stats([_span(t, "runner_finished", "published") for _, t, _ in rows]),
        },
        "roundtrip_ms": _stats([(c.received_ns - s.publish_started_ns) / 1e6 for c, _, s in rows]),
        "inbound_ms": _stats([(t["completed_ns"] - s.publish_started_ns) / 1e6 for _, t, s in rows]),
        "outbound_ms": _stats([(c.received_ns - t["published_ns"]) / 1e6 for c, t, _ in rows]),
        "served_equals_bare": identical,
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_serve_bench(
    *,
    sizes: Sequence[int] | None = None,
    chunks: int = 30,
    warmup: int = 3,
    backend: str = "onnx",
    preset: str = "tiny",
    ckpt: str | None = None,
    spawn: Spawn = spawn_python,
) -> dict[str, Any]:
    """The whole report: one row per image size, machine info and load."""
    import torch

    from svrl_policy.bench import machine_info

    if chunks < 1 or warmup < 1:
        raise ValueError("--chunks and --warmup must be >= 1 (the first chunk warms the runtime up)")
    if sizes is None:
        if ckpt is not None:
            from svrl_policy.checkpoint import load_components

            sizes = [int(load_components(ckpt).config.image_size)]
        else:
            sizes = list(DEFAULT_SIZES)
    load_before = _load()
    results = []
    with tempfile.TemporaryDirectory(prefix="svrl-bench-serve-") as tmp:
        # a given checkpoint serves every size from one server; a random policy is built per size
        groups = [(None, list(sizes))] if ckpt is not None else [(size, [size]) for size in sizes]
        for size, group in groups:
            path = _checkpoint_for(size or 0, preset, ckpt, backend, Path(tmp))
            kwargs = {"backend": backend, "chunks": chunks, "warmup": warmup, "workdir": Path(tmp)}
            results.extend(bench_checkpoint(path, group, spawn=spawn, **kwargs))
    return {
        "machine": {**machine_info(), "load_avg_before": load_before, "load_avg_after": _load()},
        "policy": ckpt if ckpt is not None else f"{preset} (random weights)",
        "backend": backend,
        "threads": {
            "note": "policy_server and the bare runtime load the runtime alike (load_runtime(ckpt, backend), "
            "default thread count) in the same environment",
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(),
        },
        "target_overhead_ms": TARGET_OVERHEAD_MS,
        "results": results,
    }


def _fmt(stats: dict[str, float | None]) -> str:
    med, p90 = stats["median"], stats["p90"]
    return "n/a" if med is None else f"{med:.2f} / {p90:.2f}"


def format_table(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"machine: {machine['cpu']} ({machine['nproc']} cpus), load {machine['load_avg_before']} -> "
        f"{machine['load_avg_after']}; policy {report['policy']}, backend {report['backend']}",
        "ms per chunk, median / p90; serve = observation complete in policy_server -> chunk published; "
        "overhead = serve - bare; paired = serve - the same chunk's runtime call in the server",
        f"{'size':>5} {'chunks':>6}  {'serve':>17}  {'bare':>17}  {'overhead':>17}  {'paired':>13}  same",
    ]
    for r in report["results"]:
        lines.append(
            f"{r['image_size']:>5} {r['chunks']:>6}  {_fmt(r['serve_ms']):>17}  {_fmt(r['bare_ms']):>17}  "
            f"{_fmt(r['overhead_ms']):>17}  {_fmt(r['overhead_paired_ms']):>13}  "
            f"{r['served_equals_bare']}/{r['chunks']}"
        )
    for r in report["results"]:
        b = r["serve_breakdown_ms"]
        lines.append(
            f"{r['image_size']} px on {r['runtime']}: to runner {_fmt(b['to_runner'])}, observation "
            f"{_fmt(b['observation'])}, inference {_fmt(b['inference'])}, to publish {_fmt(b['to_publish'])}; "
            f"round trip {_fmt(r['roundtrip_ms'])} (DDS in {_fmt(r['inbound_ms'])}, out {_fmt(r['outbound_ms'])})"
        )
    lines.append(f"target: overhead <= {report['target_overhead_ms']:.0f} ms per chunk")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-child":
        sys.exit(_serve_child(sys.argv[2:]))
    sys.exit("usage: svrl bench serve [--json] (this module's own entry point is the bench's server process)")
