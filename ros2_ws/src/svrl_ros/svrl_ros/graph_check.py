"""`svrl graph-check`: the same policy, the same initial states, in process and through the robot graph.

The proof that training and deployment see the same thing. In process, the policy runtime drives a
`SimEnv` directly, as the evaluation does. Through the graph, `svrl up --profile sim` starts sim_node
(lock-step), policy_server and arm_controller, and this command is the operator: one ExecuteInstruction
goal per task. In lock-step the two must agree episode for episode: same outcome, same number of steps,
and the same action chunks, because every observation the policy sees over DDS (images, proprio rebuilt
from joint states by the shared kinematics) is bit-identical to the in-process one, and every action is
applied to the state it was computed for.

One thing the training simulator does not have is arm_controller's safety filter. Where it refuses a step
the goal ends there; where it clips a command (a joint step over its velocity or acceleration limit) the
arm moves less than the policy asked, and from the next chunk on the two runs may part. The in-process
episode therefore runs a shadow of that filter on the same measured joints and notes the first step it
would clip or refuse, so a verdict can tell "the filter changed the motion" from "the graph saw something
else".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from svrl_ros.child_process import spawn_python, stop_process

# Generous hang guards only; nothing here judges speed.
GRAPH_START_LIMIT_S = 120.0
EPISODE_LIMIT_S = 600.0


@dataclass
class EpisodeTrace:
    task: str
    success: bool
    steps: int
    chunks: list[np.ndarray] = field(default_factory=list, repr=False)
    reason: str = ""
    first_filter_event: dict | None = None
    """in process only: the first step arm_controller's filter would clip or refuse (chunk, action, step, what)"""


class FilterShadow:
    """arm_controller's safety filter, run beside the in-process episode on the same measured joints.

    Until its first clip or refusal the graph commands exactly the targets the simulator computes, so that
    first event is where the graph's motion can start to differ. Only the first is recorded: after it the
    two runs' states differ and the shadow no longer mirrors the graph."""

    def __init__(self, env, action_space: str, limits=None) -> None:
        """limits: a `SafetyLimits`; default: arm_controller's defaults, which the sim profile keeps."""
        from svrl_ros.safety_filter import SafetyFilter, SafetyLimits
        from svrl_sim.kinematics import ArmKinematics

        self.env, self.action_space = env, action_space
        self.kinematics = ArmKinematics()  # robot-only, as arm_controller builds it
        self.filter = SafetyFilter(limits if limits is not None else SafetyLimits(period_s=env.control_dt))
        self.first_event: dict | None = None

    def before_step(self, action: np.ndarray, chunk: int, index: int) -> None:
        if self.first_event is not None:
            return
        from svrl_ros.chunk_executor import action_targets

        env = self.env
        measured_q = env.kinematics.joint_positions
        finger_q = env.data.qpos[env.index.finger_qpos].copy()
        arm, finger = action_targets(
            self.kinematics, measured_q, finger_q, action, self.action_space, env.control_dt
        )
        result = self.filter.command(measured_q, arm, finger)
        if result.refused or result.clips:
            what = f"refused: {result.reason}" if result.refused else f"clipped: {', '.join(result.clips)}"
            self.first_event = {"chunk": chunk, "action": index, "step": env.step_count, "what": what}


def in_process_episode(runtime, task: str, init_index: int, image_size: int) -> EpisodeTrace:
    """Greedy episode with the runtime stepping a SimEnv directly: the evaluation's rollout, batch 1.

    Actions are stepped one at a time (rendering only after a chunk's last one, as `step_chunk` does) so
    the filter shadow sees each measured state."""
    from svrl_sim.env import SimEnv
    from svrl_sim.tasks import InitState

    env = SimEnv(image_size=image_size, action_space=runtime.config.action_space)
    shadow = FilterShadow(env, runtime.config.action_space)
    obs, _ = env.reset(task, InitState("eval", init_index))
    trace = EpisodeTrace(task=task, success=False, steps=0)
    while env.episode_running:
        batch = {
            "images": {cam: img[None] for cam, img in obs["images"].items()},
            "proprio": obs["proprio"][None],
            "instruction": [obs["instruction"]],
        }
        actions = np.asarray(runtime.sample(batch, temperature=0.0).actions[0])
        trace.chunks.append(actions.astype(np.float32))
        for index, action in enumerate(actions):
            shadow.before_step(action, len(trace.chunks) - 1, index)
            last = index == len(actions) - 1
            obs, _reward, terminated, _truncated, info = env.step(action, render=last)
            trace.success = trace.success or terminated
            trace.steps = info["step"]
            if not env.episode_running:
                break
    trace.reason = "success" if trace.success else "time limit"
    trace.first_filter_event = shadow.first_event
    env.close()
    return trace


class GraphClient:
    """The operator's side of the graph: sends goals, records the chunks each goal produced."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.action import ActionClient
        from rclpy.executors import SingleThreadedExecutor
        from svrl_interfaces.action import ExecuteInstruction
        from svrl_interfaces.msg import ActionChunk

        from svrl_ros.conversions import chunk_actions
        from svrl_ros.topics import ACTION_CHUNK, EXECUTE_INSTRUCTION

        self._rclpy = rclpy
        self._goal_type = ExecuteInstruction.Goal
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("svrl_graph_check", context=self.context)
        self.action = ActionClient(self.node, ExecuteInstruction, EXECUTE_INSTRUCTION)
        self._chunks: list[np.ndarray] = []
        self._last_key: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

        def on_chunk(msg: ActionChunk) -> None:
            if msg.chunk_length == 0:
                return
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.chunk_index)
            with self._lock:
                if key == self._last_key:  # policy_server re-sends a chunk nobody executed yet
                    return
                self._last_key = key
                self._chunks.append(chunk_actions(msg).copy())

        self.node.create_subscription(ActionChunk, ACTION_CHUNK, on_chunk, 100)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def wait_for_server(self, limit_s: float) -> bool:
        return self.action.wait_for_server(timeout_sec=limit_s)

    def run(self, task: str, instruction: str, max_steps: int = 0) -> EpisodeTrace:
        """One goal; max_steps 0 leaves the budget to the server (the sim's time limit ends sim tasks)."""
        with self._lock:
            self._chunks = []
        goal = self._goal_type(instruction=instruction, max_steps=max_steps)
        handle = _wait(self.action.send_goal_async(goal), EPISODE_LIMIT_S)
        if not handle.accepted:
            return EpisodeTrace(task=task, success=False, steps=0, reason="goal rejected")
        result = _wait(handle.get_result_async(), EPISODE_LIMIT_S).result
        time.sleep(0.2)  # chunks published just before the result may still be in flight
        with self._lock:
            chunks = list(self._chunks)
        return EpisodeTrace(
            task, bool(result.success), int(result.steps), chunks, f"{result.reason}: {result.message}"
        )

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)


def _wait(future, limit_s: float):
    deadline = time.monotonic() + limit_s
    while not future.done():
        if time.monotonic() > deadline:
            raise TimeoutError("no answer from the policy server")
        time.sleep(0.005)
    return future.result()


SAME = "same"
SAFETY_STOP = "same until arm_controller stopped it"
SAFETY_CLIP = "same until arm_controller clipped a command"
DIFFERENT = "different"
_REFUSAL = "arm_controller stopped executing the chunk"


def verdict(ref: EpisodeTrace, got: EpisodeTrace) -> str:
    """SAME: identical chunks, outcome and steps. SAFETY_STOP: identical chunks up to the step the safety
    filter refused (the training simulator has no workspace box; the robot graph does), then the goal ended
    with arm_controller's reason. SAFETY_CLIP: identical chunks up to and including the one in which the
    filter's shadow saw the first clip, different only after it (the arm moved less than asked, so later
    observations differ). DIFFERENT: anything else, i.e. the two saw or did different things."""
    if ref.success == got.success and ref.steps == got.steps and chunks_agree(ref.chunks, got.chunks):
        return SAME
    if (
        _REFUSAL in got.reason
        and got.steps <= ref.steps
        and got.chunks
        and chunks_agree(ref.chunks[: len(got.chunks)], got.chunks)
    ):
        return SAFETY_STOP
    event = ref.first_filter_event
    if event is not None and event["what"].startswith("clipped"):
        upto = event["chunk"] + 1
        if len(got.chunks) >= upto and chunks_agree(ref.chunks[:upto], got.chunks[:upto]):
            return SAFETY_CLIP
    return DIFFERENT


def chunks_agree(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    """Same chunks in the same order; a chunk cut short by the step budget compares on its prefix."""
    return first_difference(a, b) is None


def first_difference(a: list[np.ndarray], b: list[np.ndarray]) -> dict | None:
    """Where two chunk sequences first part (chunk, action, largest |difference| there), None if nowhere:
    what to look at when a verdict says DIFFERENT (a near-tie between bins gives one dimension one bin off)."""
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        n = min(len(x), len(y))
        if x.shape[1:] != y.shape[1:]:
            return {"chunk": index, "action": 0, "max_abs": None}
        rows = np.flatnonzero((x[:n] != y[:n]).any(axis=tuple(range(1, x.ndim))))
        if rows.size:
            return {
                "chunk": index,
                "action": int(rows[0]),
                "max_abs": float(np.abs(x[rows[0]] - y[rows[0]]).max()),
            }
    if len(a) != len(b):
        return {"chunk": min(len(a), len(b)), "action": 0, "max_abs": None}
    return None


def start_graph(
    ckpt: Path, init_index: int, image_size: int, log: Path, env: dict[str, str]
) -> subprocess.Popen:
    command = [
        "-m", "svrl.cli", "up", "--profile", "sim",
        "--set", f"policy_server.checkpoint={ckpt}",
        "--set", f"policy_server.init_state_index={init_index}",
        "--set", "policy_server.init_state_split=eval",
        "--set", f"sim_node.image_size={image_size}",
        "--set", "sim_node.timing=lockstep",
    ]  # fmt: skip
    return spawn_python(*command, log=log, env=env)


def stop_graph(proc: subprocess.Popen) -> None:
    stop_process(proc)


def graph_check(
    ckpt: Path, suite: str, init_index: int, out: Path | None, *, max_tasks: int | None = None
) -> dict:
    from svrl_policy.runtime import load_runtime
    from svrl_sim.tasks import tasks_in_suite

    runtime = load_runtime(ckpt, backend="auto")
    image_size = int(runtime.config.image_size)
    tasks = tasks_in_suite(suite)[:max_tasks]
    reference = [in_process_episode(runtime, t.name, init_index, image_size) for t in tasks]

    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(60, 100)))  # a domain of its own by default
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    log = (out or Path(".")) / "graph_check_stack.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = start_graph(ckpt, init_index, image_size, log, env)
    client = None
    try:
        client = GraphClient()
        if not client.wait_for_server(GRAPH_START_LIMIT_S):
            raise RuntimeError(f"the sim graph never served goals; see {log}")
        through_graph = [client.run(t.name, t.instruction) for t in tasks]
    finally:
        if client is not None:
            client.close()
        stop_graph(proc)

    rows = []
    for ref, got in zip(reference, through_graph, strict=True):
        rows.append(
            {
                "task": ref.task,
                "in_process": {"success": ref.success, "steps": ref.steps, "chunks": len(ref.chunks)},
                "graph": {
                    "success": got.success,
                    "steps": got.steps,
                    "chunks": len(got.chunks),
                    "reason": got.reason,
                },
                "verdict": verdict(ref, got),
                "first_difference": first_difference(ref.chunks, got.chunks),
                "first_filter_event": ref.first_filter_event,
            }
        )
        rows[-1]["agree"] = rows[-1]["verdict"] != DIFFERENT
    report = {
        "checkpoint": str(ckpt),
        "runtime": runtime.name,
        "suite": suite,
        "init_state": {"split": "eval", "index": init_index},
        "image_size": image_size,
        "episodes": rows,
        "all_agree": all(r["agree"] for r in rows),
        "stopped_by_safety_filter": sum(r["verdict"] == SAFETY_STOP for r in rows),
        "clipped_by_safety_filter": sum(r["verdict"] == SAFETY_CLIP for r in rows),
    }
    if out is not None:
        from svrl_trainer.atomic import write_text_atomic

        write_text_atomic(out / "graph_check.json", json.dumps(report, indent=2) + "\n")
        write_text_atomic(out / "graph_check.md", markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [
        f"Robot graph (lock-step, `svrl up --profile sim`) vs in process, {report['suite']} suite, "
        f"eval state {report['init_state']['index']}, runtime {report['runtime']}:",
        "",
        "| task | in process | through the graph | same chunks and outcome |",
        "|---|---|---|---|",
    ]
    for r in report["episodes"]:
        a, b = r["in_process"], r["graph"]
        same = {
            SAME: "yes",
            SAFETY_STOP: "yes, until the safety filter stopped it",
            SAFETY_CLIP: "yes, until the safety filter clipped a command",
            DIFFERENT: "**no**",
        }
        if r["verdict"] == SAME:
            why = ""
        elif r["verdict"] == SAFETY_CLIP:
            e = r["first_filter_event"]
            why = f" ({e['what']} at step {e['step']}, chunk {e['chunk']} action {e['action']})"
        else:
            why = f" ({b['reason']})"
            if r["verdict"] == DIFFERENT and r["first_difference"] is not None:
                d = r["first_difference"]
                why += f"; chunks part at chunk {d['chunk']} action {d['action']}"
        lines.append(
            f"| {r['task']} | {'success' if a['success'] else 'fail'}, {a['steps']} steps | "
            f"{'success' if b['success'] else 'fail'}, {b['steps']} steps | {same[r['verdict']]}{why} |"
        )
    lines.append("")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "graph-check",
        help="run a checkpoint in process and through the ROS robot graph (lock-step) on the same states",
    )
    p.add_argument(
        "--ckpt", type=Path, required=True, help="policy checkpoint directory (policy.onnx is used if fresh)"
    )
    p.add_argument("--suite", default="spatial")
    p.add_argument("--init-state", type=int, default=0, help="evaluation initial state used for every task")
    p.add_argument("--out", type=Path, default=None, help="write graph_check.{json,md} here")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="exit 0 when the report was written, even if the two runs disagree (the caller reads it)",
    )
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    report = graph_check(args.ckpt, args.suite, args.init_state, args.out)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(markdown(report))
    if not report["all_agree"]:
        print("the graph and the in-process run disagree: see the table", file=sys.stderr)
        return 0 if args.report_only else 1
    return 0
