"""A scripted operator finishes a sim task by dragging the RViz handle, and the sim's cameras film it.

    .venv/bin/python scripts/teleop_drag_demo.py --out docs/figures/teleop_drag.gif

It starts the teleop profile's graph (sim_node in lock-step on `pretrain/lift_cube_red`, arm_controller,
teleop_marker; no policy, no RViz) and then acts only through the interactive-marker protocol, as a
person in RViz would: Take over from the menu, drag the handle above the cube (turned to the cube's
faces), down to it, click the gripper box, drag up. Only its eyes are privileged: where the cube is comes
from the task's initial state, as a person would see it in the camera. It watches `sim/episode_status`
for the verdict and writes both cameras, side by side and captioned, into a GIF.

Exit status 0 when the sim reports the task's success, 1 otherwise (the GIF is written either way).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TASK = "pretrain/lift_cube_red"
DRAG_SPEED = 0.14  # m/s the scripted hand moves the handle at (the arm may follow at 0.15)
FEEDBACK_PERIOD_S = 0.05  # RViz sends feedback at about this rate while the mouse moves
ARRIVED_M, ARRIVED_RAD = 0.004, 0.03
HANG_GUARD_S = 60.0


def _graph(folder: Path, image_size: int, init_state: int, env: dict[str, str]) -> list:
    """The teleop profile's sim_node, arm_controller and teleop_marker, started as `svrl up` starts them."""
    import subprocess

    from svrl_ros.stack import load_profile, node_command, params_file_content

    overrides = [
        f"sim_node.task={TASK}",
        f"sim_node.init_state_index={init_state}",
        f"sim_node.image_size={image_size}",
    ]
    profile = load_profile("teleop", overrides)
    procs = []
    for node in profile.nodes:
        if node.key not in {"sim_node", "arm_controller", "teleop_marker"}:
            continue
        params = folder / f"{node.key}.params.yaml"
        params.write_text(params_file_content(profile, node))
        log = open(folder / f"{node.key}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append((subprocess.Popen(node_command(node, params), env=env, stdout=log, stderr=log), log))
    return procs


class ScriptedOperator:
    """A marker-protocol client with hands (feedback) and eyes (cameras, episode status)."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from svrl_interfaces.msg import EpisodeStatus
        from svrl_ros import topics
        from svrl_ros.marker_client import MarkerClient

        rclpy.init()
        self.node = rclpy.create_node("scripted_operator")
        self.client = MarkerClient(self.node, client_id="scripted_operator")
        self.lock = threading.Lock()
        self.frames: dict[int, dict[str, np.ndarray]] = {}  # stamp -> camera -> image
        self.captions: dict[int, str] = {}
        self.caption = ""
        self.success = False
        self.steps = 0
        for cam, topic in topics.CAMERA_IMAGE_TOPICS.items():
            self.node.create_subscription(Image, topic, self._image(cam), qos_profile_sensor_data)
        self.node.create_subscription(EpisodeStatus, topics.SIM_STATUS, self._on_status, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()

    def _image(self, cam: str):
        from svrl_ros.conversions import image_from_msg, stamp_to_nanoseconds

        def callback(msg) -> None:
            stamp = stamp_to_nanoseconds(msg.header.stamp)
            with self.lock:
                self.frames.setdefault(stamp, {})[cam] = image_from_msg(msg)
                self.captions.setdefault(stamp, self.caption)

        return callback

    def _on_status(self, msg) -> None:
        with self.lock:
            self.success = self.success or bool(msg.success)
            self.steps = int(msg.step)

    def say(self, text: str) -> None:
        print(f"operator: {text}", flush=True)
        with self.lock:
            self.caption = text

    # ------------------------------------------------------------------------------------ hands
    def menu(self, entry: int, mode: str) -> None:
        from svrl_ros.teleop_markers import TOOL_TARGET

        self.client.menu(TOOL_TARGET, entry)
        self._wait(lambda: f"[{mode}]" in (self.client.marker(TOOL_TARGET).description or ""), f"mode {mode}")

    def drag(self, goal: np.ndarray, goal_quat: np.ndarray) -> None:
        """Press, move the handle to `goal` at DRAG_SPEED, hold it there until the arm arrives, release."""
        from svrl_ros.teleop_markers import TOOL_MEASURED, TOOL_TARGET
        from svrl_ros.teleop_motion import rotation_vector

        start, start_quat = self.client.pose(TOOL_TARGET)
        duration = float(np.linalg.norm(goal - start)) / DRAG_SPEED
        turn = rotation_vector(goal_quat, start_quat)
        self.client.mouse_down(TOOL_TARGET)
        began = time.monotonic()
        while True:
            s = min(1.0, (time.monotonic() - began) / max(duration, 1e-6))
            position = start + s * (goal - start)
            quat = _rotate(start_quat, s * turn)
            self.client.drag(TOOL_TARGET, position, quat)
            measured = self.client.pose(TOOL_MEASURED)
            if s >= 1.0 and measured is not None:
                near = np.linalg.norm(measured[0] - goal) < ARRIVED_M
                if near and np.linalg.norm(rotation_vector(goal_quat, measured[1])) < ARRIVED_RAD:
                    break
            if time.monotonic() - began > duration + HANG_GUARD_S:
                raise TimeoutError(f"the arm did not reach {np.round(goal, 3).tolist()}")
            time.sleep(FEEDBACK_PERIOD_S)
        self.client.mouse_up(TOOL_TARGET)

    def click_gripper(self, settle_s: float) -> None:
        from svrl_ros.teleop_markers import GRIPPER_CONTROL, TOOL_TARGET

        self.client.click(TOOL_TARGET, GRIPPER_CONTROL)
        time.sleep(settle_s)  # teleop_marker runs the gripper for gripper_steps periods

    def _wait(self, predicate, what: str) -> None:
        deadline = time.monotonic() + HANG_GUARD_S
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"hang guard: {what}")
            time.sleep(0.02)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def _rotate(quat: np.ndarray, rotvec: np.ndarray) -> np.ndarray:
    """exp(rotvec) * quat: turn an orientation by a base-frame rotation vector."""
    from svrl_ros.teleop_motion import quaternion_multiply

    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return quat
    axis = rotvec / angle
    turn = np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])
    return quaternion_multiply(turn, quat)


def _about_z(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def lift_the_cube(op: ScriptedOperator, init_state: int) -> None:
    """What the person does, through the marker only."""
    from svrl_ros.teleop_markers import MENU_TAKE_OVER, TOOL_TARGET
    from svrl_ros.teleop_motion import quaternion_multiply

    from svrl_sim.objects import OBJECTS
    from svrl_sim.tasks import InitState, scene_init

    x, y, z, yaw = scene_init(TASK, InitState("eval", init_state)).poses["cube_red"]
    cube = np.array([x, y, z])
    grasp_z = z + max(0.0, OBJECTS["cube_red"].half[2] - 0.03)  # the tool's centre at the cube's
    _, handle_quat = op.client.pose(TOOL_TARGET)
    # The fingers close along the hand's y axis: turn it onto the cube's faces, the short way (90° symmetry).
    turn = (yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4
    down = quaternion_multiply(_about_z(turn), handle_quat)

    op.say("Take over (menu)")
    op.menu(MENU_TAKE_OVER, "teleop")
    op.say("drag above the cube")
    op.drag(np.array([cube[0], cube[1], grasp_z + 0.08]), down)
    op.say("drag down to it")
    op.drag(np.array([cube[0], cube[1], grasp_z]), down)
    op.say("click: close the gripper")
    op.click_gripper(settle_s=1.5)
    op.say("drag up: lift")
    op.drag(np.array([cube[0], cube[1], grasp_z + 0.12]), down)
    time.sleep(0.5)


def write_gif(op: ScriptedOperator, out: Path, success: bool) -> int:
    """Both cameras side by side per sim state, captioned; written atomically. Returns the frame count."""
    from PIL import Image, ImageDraw

    with op.lock:
        stamps = sorted(s for s, cams in op.frames.items() if {"main", "wrist"} <= set(cams))
        rows = [(op.frames[s]["main"], op.frames[s]["wrist"], op.captions[s]) for s in stamps]
    if not rows:
        raise RuntimeError("no camera frames were received")
    frames = []
    for i, (main, wrist, caption) in enumerate(rows):
        h = main.shape[0]
        canvas = Image.new("RGB", (main.shape[1] + wrist.shape[1], h + 22), (24, 24, 24))
        canvas.paste(Image.fromarray(main), (0, 22))
        canvas.paste(Image.fromarray(wrist), (main.shape[1], 22))
        text = f"step {i:2d}  {caption}"
        if success and i == len(rows) - 1:
            text += "  -> success"
        ImageDraw.Draw(canvas).text((6, 5), text, fill=(240, 240, 240))
        frames.append(canvas.convert("P", palette=Image.ADAPTIVE, colors=128))
    frames += [frames[-1]] * 10  # linger on the result
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.gif")
    frames[0].save(tmp, save_all=True, append_images=frames[1:], duration=120, loop=0, optimize=True)
    os.replace(tmp, out)
    return len(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "figures" / "teleop_drag.gif")
    parser.add_argument("--init-state", type=int, default=3, help="eval init state of the lift task")
    parser.add_argument("--image-size", type=int, default=200)
    parser.add_argument("--domain", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "77")))
    args = parser.parse_args()

    os.environ["ROS_DOMAIN_ID"] = str(args.domain)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env = dict(os.environ)
    import signal

    with tempfile.TemporaryDirectory(prefix="teleop_demo_") as tmp:
        procs = _graph(Path(tmp), args.image_size, args.init_state, env)
        op = None
        try:
            op = ScriptedOperator()
            op.client.initialise(HANG_GUARD_S)
            op._wait(lambda: op.client.pose("svrl_tool_measured") is not None, "the markers")
            op._wait(lambda: "[policy]" in op.client.marker("svrl_tool_target").description, "arm mode")
            lift_the_cube(op, args.init_state)
            success = op.success
            frames = write_gif(op, args.out, success)
            size = args.out.stat().st_size
            print(
                f"{'success' if success else 'NO success'} after {op.steps} sim steps; {frames} frames -> "
                f"{args.out} ({size / 1e6:.2f} MB); marker updates {op.client.seq_log[0]}..{op.client.seq_log[-1]}"
                f" in sequence: {op.client.seq_log == list(range(op.client.seq_log[0], op.client.seq_log[-1] + 1))}"
            )
            return 0 if success else 1
        except Exception:
            for log in sorted(Path(tmp).glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise
        finally:
            if op is not None:
                op.close()
            for proc, _log in procs:
                proc.send_signal(signal.SIGINT)
            for proc, log in procs:
                try:
                    proc.wait(timeout=10)
                except Exception:
                    proc.kill()
                log.close()


if __name__ == "__main__":
    sys.exit(main())
