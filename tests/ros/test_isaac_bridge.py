"""The Isaac Sim bridge, checked without Isaac Sim (which needs an RTX GPU this machine does not have).

What runs here is everything but `isaac_bridge.IsaacEngine`: the program's start-up path without Isaac Sim,
where Isaac imports may live, `BridgeEnv` (svrl_sim's episode rules on any engine) against SimEnv step for
step and against bad input, the pose geometry the Isaac engine reads joints with, and (over real DDS) the
bridge program serving sim_node's exact contract under its namespace, on the embedded engine.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from svrl_ros.isaac import engine as bridge_engine
from svrl_ros.isaac.engine import JOINT_NAMES, BridgeEnv, EpisodeNotRunningError, MujocoEngine

from svrl_sim.goals import PoseState
from svrl_sim.tasks import UnknownTaskError
from tests.ros.test_package_manifest import imported_names

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 48
ISAAC_ROOTS = {"isaacsim", "omni", "pxr", "carb", "omni_isaac"}


# ------------------------------------------------------------------------------------------ without Isaac Sim
@pytest.mark.skipif(importlib.util.find_spec("isaacsim") is not None, reason="Isaac Sim is installed here")
def test_bridge_imports_without_isaac_sim_and_refuses_to_start_with_a_clear_message() -> None:
    probe = (
        "import sys, svrl_ros.isaac.isaac_bridge\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(ISAAC_ROOTS)!r})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO_ROOT, timeout=120)
    run = subprocess.run(
        [sys.executable, "-m", "svrl_ros.isaac.isaac_bridge", "--ros-args", "-r", "__ns:=/env_0"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "isaacsim" in run.stderr and "docs/isaac_sim.md" in run.stderr and "--engine mujoco" in run.stderr


def test_isaac_imports_live_only_inside_the_bridge_modules_functions() -> None:
    """Import-time safety by construction: no package module imports Isaac Sim, and the bridge only inside
    functions (which Isaac Sim also requires: its modules load once SimulationApp exists)."""
    bridge = REPO_ROOT / "ros2_ws/src/svrl_ros/svrl_ros/isaac/isaac_bridge.py"
    roots = [
        REPO_ROOT / p for p in ("svrl", "svrl_sim", "svrl_policy", "svrl_trainer", "ros2_ws/src/svrl_ros")
    ]
    found_in_bridge = 0
    for path in (f for root in roots for f in root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            names = imported_names(node)
            if not any(n.split(".")[0] in ISAAC_ROOTS for n in names):
                continue
            assert path == bridge, f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {names}"
            assert id(node) not in top_level, f"isaac_bridge.py:{node.lineno} imports {names} at module level"
            found_in_bridge += 1
    assert (
        found_in_bridge >= 5
    )  # the scan sees the bridge's Isaac imports (it would pass vacuously otherwise)


def test_bridge_options_and_ros_arguments_are_split_at_ros_args() -> None:
    from svrl_ros.isaac.isaac_bridge import parse_args

    options, ros = parse_args(
        ["--engine", "mujoco", "--ros-args", "-r", "__ns:=/env_3", "-p", "image_size:=64"]
    )
    assert options.engine == "mujoco" and options.headless and options.render_frames == 2
    assert ros == ["--ros-args", "-r", "__ns:=/env_3", "-p", "image_size:=64"]
    assert parse_args([])[1] == []
    with pytest.raises(SystemExit):
        parse_args(["--render-frames", "0"])


def test_bridge_geometry_helpers() -> None:
    """The small pure pieces IsaacEngine relies on: which prims are the robot's, and light directions."""
    from svrl_ros.isaac.isaac_bridge import _quat_from_minus_z, _robot_prefix

    from svrl_sim.scene_spec import quat_rotate

    assert _robot_prefix("/svrl_arm/base_link") == "/svrl_arm"
    assert _robot_prefix("/World/svrl_arm/base_link") == "/World/svrl_arm"
    with pytest.raises(RuntimeError, match="cannot tell"):
        _robot_prefix("/World")  # never give the robot's settings to the whole scene
    for direction in ([-0.2, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [1.0, 2.0, 0.5]):
        d = np.asarray(direction) / np.linalg.norm(direction)
        np.testing.assert_allclose(quat_rotate(np.array(_quat_from_minus_z(d)), [0, 0, -1]), d, atol=1e-12)


# ------------------------------------------------------------------------------------------ BridgeEnv
def test_bridge_env_reproduces_sim_env_step_for_step() -> None:
    """BridgeEnv on the MuJoCo engine == SimEnv: images at reset, then proprio, reward and ends of every
    chunk of a scripted-expert episode, bit for bit. What BridgeEnv adds (IK from measured joints on the
    robot-only model, success from plain poses, the horizon) is then exactly svrl_sim's."""
    from svrl_sim.env import SimEnv

    ref = SimEnv(image_size=IMAGE_SIZE)
    bridge = BridgeEnv(MujocoEngine(image_size=IMAGE_SIZE), image_size=IMAGE_SIZE)
    try:
        for task in ("goal/open_drawer", "object/puck_in_basket"):
            obs_ref, _ = ref.reset(task, ("eval", 4))
            obs, info = bridge.reset(task, ("eval", 4))
            assert info["task"] == task and bridge.max_steps == ref.max_steps
            np.testing.assert_array_equal(obs["proprio"], obs_ref["proprio"])
            for cam in obs_ref["images"]:
                np.testing.assert_array_equal(obs["images"][cam], obs_ref["images"][cam])
            done = False
            while not done:
                action = ref.expert_action()
                chunk = action[None]  # one expert action per chunk: the expert is a closed-loop state machine
                *out_ref, info_ref = ref.step_chunk(chunk, render=False)
                *out, info = bridge.step_chunk(chunk, render=False)
                np.testing.assert_array_equal(out[0]["proprio"], out_ref[0]["proprio"])
                assert out[1:] == out_ref[1:] and info["executed_steps"] == info_ref["executed_steps"]
                assert bridge.step_count == ref.step_count
                np.testing.assert_array_equal(
                    bridge.data.qpos, ref.data.qpos[[ref.model.joint(j).qposadr[0] for j in JOINT_NAMES]]
                )
                done = out[2] or out[3]
            assert out[2], f"the expert should finish {task}"
            assert bridge.success() and not bridge.episode_running
    finally:
        ref.close()
        bridge.close()


def test_bridge_env_offers_everything_sim_node_uses_of_its_env() -> None:
    """sim_node grows (sim/step_chunk came late): every attribute it reads from its env must exist on
    BridgeEnv too, or the bridge would fail only on a GPU machine."""
    source = (REPO_ROOT / "ros2_ws/src/svrl_ros/svrl_ros/sim_node.py").read_text()
    used = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        base = node.value
        if (isinstance(base, ast.Attribute) and base.attr == "_env") or (
            isinstance(base, ast.Name) and base.id == "env"
        ):
            used.add(node.attr)
    assert {"reset", "step_command", "render", "data", "model", "index"} <= used  # the scan sees them
    env = BridgeEnv(FakeEngine(), image_size=IMAGE_SIZE)
    env.reset("goal/press_button", ("eval", 0), render=False)
    missing = sorted(name for name in used if not hasattr(env, name))
    assert not missing, f"BridgeEnv lacks what sim_node uses: {missing}"


class FakeEngine:
    """Perfect servos (joints jump to their targets), objects where the spec put them, black images; records
    what reaches it. `succeed_after`: report the button pressed from that many actuations on."""

    def __init__(self, succeed_after: int | None = None, image_size: int = IMAGE_SIZE) -> None:
        self.loads, self.actuations = [], []
        self.succeed_after = succeed_after
        self.image_size = image_size
        self.q = np.zeros(len(JOINT_NAMES))
        self.bad_joints = False
        self.spec = None

    def load(self, spec) -> None:
        self.loads.append(spec.task)
        self.spec = spec
        self.q = np.array([*spec.robot.initial_q, spec.robot.initial_fingers, spec.robot.initial_fingers])

    def actuate(self, arm_target, finger_target) -> None:
        self.actuations.append((np.array(arm_target), finger_target))
        self.q = np.array([*arm_target, finger_target, finger_target])

    def joint_state(self):
        q = self.q.copy()
        if self.bad_joints:
            q[0] = np.nan
        return q, np.zeros_like(q)

    def pose_state(self, names) -> PoseState:
        poses = {n: (*self.spec.object(n).pos, *self.spec.object(n).quat) for n in names}
        pressed = self.succeed_after is not None and len(self.actuations) >= self.succeed_after
        return PoseState(poses, button=0.01 if pressed else 0.0)

    def render(self, cameras):
        return {c: np.zeros((self.image_size, self.image_size, 3), np.uint8) for c in cameras}

    def close(self) -> None:
        pass


def test_bridge_env_refuses_bad_input_before_the_engine_sees_it() -> None:
    engine = FakeEngine()
    env = BridgeEnv(engine, image_size=IMAGE_SIZE)
    with pytest.raises(EpisodeNotRunningError):
        env.step_chunk(np.zeros((2, 7)))
    with pytest.raises(UnknownTaskError, match="did you mean"):
        env.reset("goal/press_buton", ("eval", 0))
    with pytest.raises(IndexError):
        env.reset("goal/press_button", ("eval", 50))
    assert engine.loads == []  # nothing was loaded for a refused reset

    env.reset("goal/press_button", ("eval", 0))
    bad = np.zeros((3, 7))
    bad[1, 2] = np.nan
    for chunk, error in ((bad, "NaN or inf"), (np.zeros((3, 8)), "shape"), (np.zeros((0, 7)), "shape")):
        with pytest.raises(ValueError, match=error):
            env.step_chunk(chunk)
    with pytest.raises(ValueError, match="7 finite"):
        env.step_command(np.full(7, np.inf), 0.02)
    with pytest.raises(ValueError, match="finite"):
        env.step_command(np.zeros(7), float("nan"))
    assert engine.actuations == [] and env.step_count == 0

    # Joint targets are clipped to the URDF limits and the finger stroke before they reach the engine.
    env.step_command(np.full(7, 100.0), 5.0)
    target, finger = engine.actuations[-1]
    np.testing.assert_array_equal(target, env.kinematics.upper)
    assert finger == pytest.approx(0.04)

    engine.bad_joints = True  # an engine that reports garbage stops the episode loudly, not silently
    with pytest.raises(RuntimeError, match="finite"):
        env.step_command(np.zeros(7), 0.0)


def test_bridge_env_rewards_the_first_success_and_ends_at_the_horizon() -> None:
    engine = FakeEngine(succeed_after=3)
    env = BridgeEnv(engine, image_size=IMAGE_SIZE)
    env.reset("goal/press_button", ("eval", 0))
    obs, reward, terminated, truncated, info = env.step_chunk(np.zeros((5, 7)))
    assert (reward, terminated, truncated, info["executed_steps"]) == (1.0, True, False, 3)
    assert info["success"] and not env.episode_running and obs["images"]["main"].shape == (48, 48, 3)
    with pytest.raises(EpisodeNotRunningError):
        env.step_chunk(np.zeros((1, 7)))
    # a robot does not vanish at success: joint commands still run, with the bookkeeping frozen
    _, reward, terminated, _, info = env.step_command(np.zeros(7), 0.0)
    assert (reward, terminated, env.step_count, len(engine.actuations)) == (0.0, False, 3, 4)

    never = FakeEngine()
    env = BridgeEnv(never, image_size=IMAGE_SIZE)
    env.reset("goal/press_button", ("train", 2))
    steps = 0
    truncated = False
    while not truncated:
        _, reward, terminated, truncated, info = env.step_chunk(np.zeros((8, 7)), render=False)
        steps += info["executed_steps"]
        assert reward == 0.0 and not terminated
    assert steps == env.max_steps == env.step_count


def test_engine_geometry_matches_mujoco_joints_and_camera_fov() -> None:
    """slide_travel recovers the drawer's and the button's joint positions from body poses (how the Isaac
    engine reads them); usd_camera_lens gives a USD camera the spec's field of view."""
    import math

    from svrl_sim.env import SimEnv
    from svrl_sim.scene_spec import cameras

    env = SimEnv(image_size=IMAGE_SIZE)
    try:
        env.reset("pretrain/close_drawer", ("eval", 5), render=False)
        m, d = env.model, env.data
        cab, drawer = m.body("cabinet").id, m.body("drawer").id
        travel = bridge_engine.slide_travel(d.xpos[cab], d.xquat[cab], d.xpos[drawer], (-1.0, 0.0, 0.0))
        assert travel > 0.1 and travel == pytest.approx(d.qpos[env.index.drawer_qpos], abs=1e-12)
        env.reset("goal/press_button", ("eval", 0), render=False)
        d.qpos[env.index.button_qpos] = -0.009
        import mujoco

        mujoco.mj_forward(m, d)
        base, cap = m.body("button").id, m.body("button_cap").id
        depth = -bridge_engine.slide_travel(d.xpos[base], d.xquat[base], d.xpos[cap], (0.0, 0.0, 1.0))
        assert depth == pytest.approx(0.009, abs=1e-12) and env.view.button_depth() == pytest.approx(depth)
    finally:
        env.close()
    for cam in cameras(IMAGE_SIZE):
        focal, horizontal, vertical = bridge_engine.usd_camera_lens(cam)
        assert horizontal == vertical  # square images, square pixels
        assert math.degrees(2 * math.atan(vertical / (2 * focal))) == pytest.approx(cam.fovy_deg)


# ------------------------------------------------------------------------------------------ over DDS
@pytest.mark.ros
@pytest.mark.timeout(240)
def test_bridge_serves_sim_nodes_contract_under_its_namespace(processes, tmp_path) -> None:
    """sim_node under /env_0 and the bridge (embedded engine) under /env_1 in one domain: the same topics and
    services with the same types, and the same answers to the same episode requests."""
    import rclpy
    from builtin_interfaces.msg import Time
    from svrl_interfaces.srv import ResetEpisode, StepChunk

    common = ["--ros-args", "-p", f"image_size:={IMAGE_SIZE}", "-p", "idle_republish_s:=0.0"]
    sim = processes.start_python(
        "-m", "svrl_ros.sim_node", *common, "-r", "__ns:=/env_0", log=tmp_path / "sim_node.log"
    )
    bridge = processes.start_python(
        "-m",
        "svrl_ros.isaac.isaac_bridge",
        "--engine",
        "mujoco",
        *common,
        "-r",
        "__ns:=/env_1",
        log=tmp_path / "bridge.log",
    )
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("isaac_bridge_test", context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        clients = {
            ns: (
                node.create_client(ResetEpisode, f"{ns}/sim/reset_episode"),
                node.create_client(StepChunk, f"{ns}/sim/step_chunk"),
            )
            for ns in ("/env_0", "/env_1")
        }
        for ns, (reset, step) in clients.items():
            for client in (reset, step):
                deadline = time.monotonic() + 90
                while not client.service_is_ready():
                    proc = sim if ns == "/env_0" else bridge
                    assert proc.poll() is None, f"{ns} exited:\n{proc.log_path.read_text()}"
                    assert time.monotonic() < deadline, f"{client.srv_name} never came up"
                    executor.spin_once(timeout_sec=0.1)

        def graph(ns: str) -> tuple[set, set]:
            topics = {
                (n[len(ns) :], tuple(t))
                for n, t in node.get_topic_names_and_types()
                if n.startswith(ns + "/")
            }
            services = {
                (n[len(ns) :], tuple(t))
                for n, t in node.get_service_names_and_types()
                if n.startswith(ns + "/")
            }
            return topics, services

        deadline = time.monotonic() + 30
        while graph("/env_0") != graph("/env_1") and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.2)  # discovery of every endpoint takes a moment
        topics, services = graph("/env_1")
        assert graph("/env_0") == (topics, services)
        assert {"/sim/reset_episode", "/sim/step", "/sim/step_chunk"} <= {n for n, _ in services}
        assert {"/joint_states", "/camera/camera/color/image_raw", "/sim/episode_status"} <= {
            n for n, _ in topics
        }

        def call(client, request):
            future = client.call_async(request)
            deadline = time.monotonic() + 60
            while not future.done():
                assert time.monotonic() < deadline, f"no answer from {client.srv_name}"
                executor.spin_once(timeout_sec=0.05)
            return future.result()

        answers = {}
        for ns, (reset, step) in clients.items():
            refused = call(
                reset, ResetEpisode.Request(task="goal/no_such_task", split="eval", init_state_index=0)
            )
            assert not refused.success and "unknown task" in refused.message
            ok = call(reset, ResetEpisode.Request(task="goal/open_drawer", split="eval", init_state_index=3))
            assert ok.success, ok.message
            nan = StepChunk.Request(state_stamp=ok.sim_time, action_dim=7, actions=[float("nan")] * 7)
            answer = call(step, nan)
            assert not answer.success and "non_finite" in answer.message
            chunk = [0.01, 0.0, -0.01, 0.0, 0.0, 0.0, -1.0] * 4
            answer = call(
                step, StepChunk.Request(state_stamp=ok.sim_time, action_dim=7, actions=chunk, render=True)
            )
            assert answer.success and answer.executed_steps == 4, answer.message
            stamp = Time(sec=answer.sim_time.sec, nanosec=answer.sim_time.nanosec)
            answers[ns] = (
                ok.instruction,
                ok.max_steps,
                list(answer.proprio),
                answer.episode_step,
                stamp.sec,
                stamp.nanosec,
                [bytes(i.data) for i in answer.images],
            )
        assert answers["/env_0"] == answers["/env_1"]
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
