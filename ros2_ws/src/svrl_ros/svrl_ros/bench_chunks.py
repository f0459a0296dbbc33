"""`svrl bench chunks`: what the arm does at chunk boundaries, synchronous vs asynchronous inference.

The whole sim graph runs in real time, as on a robot: `svrl up --profile sim` with sim_node `timing:
realtime` (a wall-clock timer steps the physics every control period, holding the newest targets) and
arm_controller on its control timer (`trigger: timer`, or `joint_states` for exact counting). This process
is the operator: it sends one goal per configuration and records what crosses DDS:

- every sim state (joint_states: stamp, joint positions), every arm command (trajectory: the stamp of the
  state it answers, the joint targets, when it arrived) and every chunk (stamp, length, when it arrived);
- **periods without a command**: sim states between the goal's first and last commanded state that no
  command answered; for those the sim held the previous target (the arm stalls). A hold command
  (arm_controller re-sending one latched target after `command_timeout_s`) counts as none.
- **boundary gap**: at each chunk after the first, the states skipped between the first command that can
  be the chunk's (received after it, answering its state or a later one) and the command before it (0 =
  the new chunk took over seamlessly), counted from the commands' stamps, so the sim's own timer jitter
  does not add to it. Arrival is DDS's reception time; a chunk re-sent after a stall counts once;
- **command jumps**: the change of commanded joint velocity from one command to the next (targets /
  periods between them), rad/s², at chunk boundaries and elsewhere.

Configurations: `sync` (the next chunk from the state after the last action) and `async` with each
blending of arm_controller (none / ensemble / crossfade), each with the bare policy and with
`simulated_latency_s` added per inference (a stand-in for a VLA that takes a few control periods). The
policy is a random `debug` policy with a narrow action codec (it wanders a few cm; it never reaches the
workspace limits), so within-chunk motion is as jittery as at boundaries: the gaps are what it measures.
Wall-clock limits here are hang guards only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from svrl_ros.calm_policy import calm_policy_checkpoint
from svrl_ros.child_process import Spawn, log_tail, spawn_python, stop_process

PERIOD_NS = 100_000_000  # sim_node's control period (10 Hz)
DEFAULT_CONFIGS = (("sync", "none"), ("async", "none"), ("async", "ensemble"), ("async", "crossfade"))
DEFAULT_LATENCIES = (0.0, 0.3)
GRAPH_START_LIMIT_S = 180.0
GOAL_LIMIT_S = 180.0


def _progress(message: str) -> None:
    print(f"bench chunks: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ the graph
def graph_overrides(ckpt: Path, blending: str, trigger: str, image_size: int = 64) -> list[str]:
    """`svrl up --profile sim` turned into the real-time graph a robot runs."""
    return [
        f"policy_server.checkpoint={ckpt}",
        "policy_server.success_source=none",
        "policy_server.reset_sim=true",
        "policy_server.observation_timeout_s=20.0",
        "sim_node.timing=realtime",
        f"sim_node.image_size={image_size}",
        f"arm_controller.trigger={trigger}",
        f"arm_controller.blending={blending}",
    ]


def start_graph(spawn: Spawn, overrides: Sequence[str], log: Path) -> subprocess.Popen:
    args = ["-m", "svrl.cli", "up", "--profile", "sim"]
    for override in overrides:
        args += ["--set", override]
    return spawn(*args, log=log)


# ------------------------------------------------------------------------------------------ recording
@dataclass(frozen=True)
class Sample:
    arrived_s: float  # when DDS handed the message to this process (see ChunkProbe._arrived_s)
    stamp_ns: int
    values: np.ndarray  # joint positions or targets (7,)


@dataclass(frozen=True)
class ChunkSeen:
    arrived_s: float
    stamp_ns: int  # the state the chunk was inferred from
    length: int


@dataclass
class GoalRecord:
    """What crossed DDS during one goal."""

    states: list[Sample] = field(default_factory=list)
    commands: list[Sample] = field(default_factory=list)
    chunks: list[ChunkSeen] = field(default_factory=list)
    reason: str = ""
    steps: int = 0


class ChunkProbe:
    """This process's node: records states, commands and chunks; sends goals; sets policy_server parameters."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.action import ActionClient
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter_client import AsyncParameterClient
        from sensor_msgs.msg import JointState
        from svrl_interfaces.action import ExecuteInstruction
        from svrl_interfaces.msg import ActionChunk
        from trajectory_msgs.msg import JointTrajectory

        from svrl_ros import topics

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("bench_chunks", context=self.context)
        self._lock = threading.Lock()
        self._record: GoalRecord | None = None
        self._subscriptions = [
            self.node.create_subscription(JointState, topics.JOINT_STATES, self._on_joint_states, 200),
            self.node.create_subscription(JointTrajectory, topics.ARM_TRAJECTORY, self._on_trajectory, 200),
            self.node.create_subscription(ActionChunk, topics.ACTION_CHUNK, self._on_chunk, 200),
        ]
        self.action = ActionClient(self.node, ExecuteInstruction, topics.EXECUTE_INSTRUCTION)
        self.params = AsyncParameterClient(self.node, "policy_server")
        self._goal_type = ExecuteInstruction.Goal
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    @staticmethod
    def _stamp(msg: Any) -> int:
        return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)

    @staticmethod
    def _arrived_s(info: Any) -> float:
        """When the middleware received the message, not when this executor got round to it.

        A chunk and the first command it causes reach this process a few milliseconds apart; a busy
        executor can run their callbacks in either order (it takes one message per ready subscription
        per turn), which once made a chunk look as if it arrived after its own first command. The DDS
        reception time keeps their true order. Falls back to the system clock (the same clock) for a
        middleware that does not fill it in.
        """
        received = int(info.get("received_timestamp", 0)) if info else 0
        return (received if received > 0 else time.time_ns()) / 1e9

    def _on_joint_states(self, msg: Any, info: Any) -> None:
        index = {n: i for i, n in enumerate(msg.name)}
        try:
            q = np.array([msg.position[index[f"joint{i}"]] for i in range(1, 8)], dtype=np.float64)
        except (KeyError, IndexError):
            return
        with self._lock:
            if self._record is not None:
                self._record.states.append(Sample(self._arrived_s(info), self._stamp(msg), q))

    def _on_trajectory(self, msg: Any, info: Any) -> None:
        if not msg.points:
            return
        q = np.array(msg.points[0].positions, dtype=np.float64)
        with self._lock:
            if self._record is not None:
                self._record.commands.append(Sample(self._arrived_s(info), self._stamp(msg), q))

    def _on_chunk(self, msg: Any, info: Any) -> None:
        seen = ChunkSeen(self._arrived_s(info), self._stamp(msg), int(msg.chunk_length))
        with self._lock:
            record = self._record
            if record is None or seen.length <= 0:
                return
            if any(c.stamp_ns == seen.stamp_ns and c.length == seen.length for c in record.chunks):
                return  # policy_server re-sent the running chunk after a stall (drivers.CHUNK_RESEND_S)
            record.chunks.append(seen)

    def wait_for_graph(self, proc: subprocess.Popen, log: Path) -> None:
        """Until the goal can be sent and every message of it will be recorded.

        A served action says nothing of this node's subscriptions: DDS discovers each process on its own,
        and a goal sent before the trajectory subscription matched arm_controller's publisher loses the
        first chunk's commands. That fits what a fresh CI machine saw twice: 5 chunks, 24 commands (4
        chunks' worth), 3 boundaries of 4.
        """
        deadline = time.monotonic() + GRAPH_START_LIMIT_S
        while not (
            self.action.wait_for_server(timeout_sec=0.5)
            and self.params.wait_for_services(0.5)
            and all(sub.get_publisher_count() > 0 for sub in self._subscriptions)
        ):
            if proc.poll() is not None or time.monotonic() > deadline:
                unmatched = [sub.topic_name for sub in self._subscriptions if not sub.get_publisher_count()]
                raise RuntimeError(
                    f"the real-time sim graph did not come up (unmatched: {unmatched}):\n{log_tail(log)}"
                )
            time.sleep(0.05)

    def set_parameters(self, **values: Any) -> None:
        from rclpy.parameter import Parameter

        future = self.params.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        response = self._wait(future, 30.0, "set_parameters")
        failed = [r.reason for r in response.results if not r.successful]
        if failed:
            raise RuntimeError(f"policy_server refused parameters {values}: {failed}")

    def run_goal(self, instruction: str, max_steps: int) -> GoalRecord:
        record = GoalRecord()
        with self._lock:
            self._record = record
        try:
            goal = self._goal_type(instruction=instruction, max_steps=max_steps)
            handle = self._wait(self.action.send_goal_async(goal), 60.0, "goal response")
            if not handle.accepted:
                raise RuntimeError("policy_server rejected the goal")
            result = self._wait(handle.get_result_async(), GOAL_LIMIT_S, "goal result").result
            time.sleep(0.3)  # the last commands and states are still on their way
        finally:
            with self._lock:
                self._record = None
        record.reason, record.steps = f"{result.reason}: {result.message}", int(result.steps)
        return record

    @staticmethod
    def _wait(future: Any, limit_s: float, what: str) -> Any:
        deadline = time.monotonic() + limit_s
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"hang guard: no {what} within {limit_s:.0f} s")
            time.sleep(0.01)
        return future.result()

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)


# ------------------------------------------------------------------------------------------ measuring
def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not len(values):
        return {"median": None, "max": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"median": round(float(np.median(arr)), 4), "max": round(float(arr.max()), 4)}


def _could_follow(command: Sample, chunk: ChunkSeen) -> bool:
    return command.arrived_s >= chunk.arrived_s and command.stamp_ns >= chunk.stamp_ns


def boundary_metrics(record: GoalRecord, period_ns: int = PERIOD_NS) -> dict[str, Any]:
    """Periods without a command, per-boundary gaps and command jumps of one goal (see the module doc)."""
    # Action commands, one per answered state, from the first chunk on. A hold re-sends one latched target
    # every cycle, so a command equal to its neighbour is a hold (two actions never give identical targets).
    # A chunk's actions answer the state it was inferred from or later ones, so a command that arrived
    # before a chunk, or answers an earlier state, cannot be that chunk's (arrival alone once misled this).
    if not record.chunks:
        return {"commands": 0, "periods": 0, "without_command": 0, "boundaries": []}
    first_chunk = record.chunks[0]
    ordered: list[Sample] = []
    for c in sorted(record.commands, key=lambda s: s.arrived_s):
        if not _could_follow(c, first_chunk) or (ordered and c.stamp_ns <= ordered[-1].stamp_ns):
            continue  # (a re-send for a state already answered is dropped)
        ordered.append(c)
    commands = [
        c
        for i, c in enumerate(ordered)
        if not any(
            0 <= j < len(ordered) and np.array_equal(c.values, ordered[j].values) for j in (i - 1, i + 1)
        )
    ]
    if len(commands) < 2:
        return {"commands": len(commands), "periods": 0, "without_command": 0, "boundaries": []}
    first, last = commands[0].stamp_ns, commands[-1].stamp_ns
    states = sorted({s.stamp_ns for s in record.states if first <= s.stamp_ns <= last})
    answered = {c.stamp_ns for c in commands}
    without = [s for s in states if s not in answered]

    # One boundary per pair of commands a new chunk arrived between (several chunks landing in one stall
    # are one stall).
    pairs: dict[int, int] = {}
    for chunk in record.chunks[1:]:
        taking_over = next((i for i, c in enumerate(commands) if _could_follow(c, chunk)), None)
        if taking_over:  # (None: no command after it; 0: nothing before it)
            pairs[commands[taking_over].stamp_ns] = commands[taking_over - 1].stamp_ns
    gaps = [max(0, round((nxt - prev) / period_ns) - 1) for nxt, prev in sorted(pairs.items())]
    boundary_stamps = set(pairs)

    period_s = period_ns / 1e9
    jumps_boundary, jumps_other = [], []
    for a, b, c in zip(commands, commands[1:], commands[2:], strict=False):
        v1 = (b.values - a.values) / ((b.stamp_ns - a.stamp_ns) / 1e9)
        v2 = (c.values - b.values) / ((c.stamp_ns - b.stamp_ns) / 1e9)
        jump = float(np.linalg.norm(v2 - v1)) / period_s  # rad/s^2
        (jumps_boundary if c.stamp_ns in boundary_stamps else jumps_other).append(jump)
    return {
        "commands": len(commands),
        "chunks": len(record.chunks),
        "periods": len(states),
        "without_command": len(without),
        "boundaries": gaps,
        "boundary_gap_total": int(sum(gaps)),
        "boundary_gap_max": int(max(gaps)) if gaps else 0,
        "jump_boundary_rad_s2": _stats(jumps_boundary),
        "jump_other_rad_s2": _stats(jumps_other),
    }


def _instruction() -> str:
    from svrl_sim.tasks import tasks_in_suite

    return tasks_in_suite("spatial")[0].instruction


def run_chunks_bench(
    *,
    configs: Sequence[tuple[str, str]] = DEFAULT_CONFIGS,
    latencies: Sequence[float] = DEFAULT_LATENCIES,
    steps: int = 80,
    trigger: str = "timer",
    ckpt: str | None = None,
    spawn: Spawn = spawn_python,
) -> dict[str, Any]:
    """One real-time graph per blending; per (inference, latency) one goal of `steps` control periods."""
    from svrl_policy.bench import machine_info

    if steps < 16:
        raise ValueError(f"--steps ({steps}) must be >= 16: a few chunks must follow each other")
    load_before = [round(x, 2) for x in os.getloadavg()]
    by_blending: dict[str, list[str]] = {}
    for inference, blending in configs:
        by_blending.setdefault(blending, []).append(inference)
    rows = []
    with tempfile.TemporaryDirectory(prefix="svrl-bench-chunks-") as tmp:
        path = Path(ckpt) if ckpt else calm_policy_checkpoint(Path(tmp))
        from svrl_policy.checkpoint import load_components

        image_size = int(load_components(path).config.image_size)
        for blending, inferences in by_blending.items():
            log = Path(tmp) / f"graph-{blending}.log"
            _progress(
                f"starting the real-time sim graph (arm_controller blending {blending}, trigger {trigger})"
            )
            proc = start_graph(spawn, graph_overrides(path, blending, trigger, image_size), log)
            probe = None
            try:
                probe = ChunkProbe()
                probe.wait_for_graph(proc, log)
                for latency in latencies:
                    for inference in inferences:
                        probe.set_parameters(inference=inference, simulated_latency_s=float(latency))
                        _progress(f"{inference} / {blending}, +{latency:.2f} s per inference: {steps} steps")
                        record = probe.run_goal(_instruction(), steps)
                        rows.append(
                            {
                                "inference": inference,
                                "blending": blending,
                                "simulated_latency_s": float(latency),
                                "goal": record.reason,
                                "steps": record.steps,
                                **boundary_metrics(record),
                            }
                        )
            finally:
                if probe is not None:
                    probe.close()
                stop_process(proc)
    return {
        "machine": {
            **machine_info(),
            "load_avg_before": load_before,
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "policy": ckpt or "debug preset, random weights, actions within +-0.003",
        "trigger": trigger,
        "period_s": PERIOD_NS / 1e9,
        "results": rows,
    }


def _fmt(stats: dict[str, float | None]) -> str:
    return "n/a" if stats["median"] is None else f"{stats['median']:.1f} / {stats['max']:.1f}"


def format_table(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"machine: {machine['cpu']} ({machine['nproc']} cpus), load {machine['load_avg_before']} -> "
        f"{machine['load_avg_after']}; arm_controller trigger {report['trigger']}; "
        f"period {report['period_s'] * 1000:.0f} ms",
        "periods w/o command = sim states in the goal no command answered (the arm stalled); boundary gap = "
        "states skipped where a new chunk took over (total / max); jumps = change of commanded joint velocity, "
        "rad/s^2, median / max",
        f"{'inference':>9} {'blending':>9} {'+lat s':>6} {'chunks':>6} {'periods':>7} {'w/o cmd':>7} "
        f"{'gap tot/max':>11}  {'jump at boundary':>16}  {'jump elsewhere':>16}",
    ]
    for r in report["results"]:
        if not r.get("periods"):
            lines.append(
                f"{r['inference']:>9} {r['blending']:>9} {r['simulated_latency_s']:>6.2f}  no commands ({r['goal']})"
            )
            continue
        lines.append(
            f"{r['inference']:>9} {r['blending']:>9} {r['simulated_latency_s']:>6.2f} {r['chunks']:>6} "
            f"{r['periods']:>7} {r['without_command']:>7} "
            f"{str(r['boundary_gap_total']) + ' / ' + str(r['boundary_gap_max']):>11}  "
            f"{_fmt(r['jump_boundary_rad_s2']):>16}  {_fmt(r['jump_other_rad_s2']):>16}"
        )
    return "\n".join(lines)
