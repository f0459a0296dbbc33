"""episode_recorder: records demonstrations from the robot graph's topics into a LeRobotDataset v3 folder.

ROS plumbing only: messages are converted (`conversions`) and handed to a `recording.RecordingSession`,
which pairs them into frames (`episode_assembler`), splits episodes and writes the dataset. It listens to
both cameras, `joint_states`, arm_controller's two command topics, `svrl/arm_mode` and (split `goals`) the
ExecuteInstruction goal statuses; it commands nothing. Started by `svrl record`, or on its own:

    python -m svrl_ros.episode_recorder --ros-args -p out:=demos/pick -p instruction:="pick up the cube" \\
        -p split:=goals -p keep:=interventions

On shutdown (Ctrl-C, SIGTERM) the open episode is closed and the dataset finalised: nothing recorded is lost.
"""

from __future__ import annotations

import math
import time

import rclpy
from action_msgs.msg import GoalStatusArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from svrl_ros import topics
from svrl_ros.conversions import MessageError, image_from_msg, joint_positions, stamp_to_nanoseconds
from svrl_ros.node_runner import run_node
from svrl_ros.recording import KEEPS, SPLITS, RecordingSession
from svrl_sim import robot

IMAGE_QUEUE = 20  # sensor-data QoS (best effort) matches any camera; a deeper queue rides out a slow write
COMMAND_QUEUE = 50
GOAL_STATUS_QUEUE = 10
WARN_PERIOD_S = 2.0


class EpisodeRecorder(Node):
    def __init__(self, session: RecordingSession | None = None, **node_kwargs) -> None:
        super().__init__("episode_recorder", **node_kwargs)
        self._declare_parameters()
        self.session = session if session is not None else self._session_from_parameters()
        sensor = QoSProfile(
            depth=IMAGE_QUEUE,
            reliability=qos_profile_sensor_data.reliability,
            durability=qos_profile_sensor_data.durability,
        )
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        for camera in self.session.assembler.cameras:
            self.create_subscription(
                Image, topics.CAMERA_IMAGE_TOPICS[camera], self._image_callback(camera), sensor
            )
        self.create_subscription(JointState, topics.JOINT_STATES, self._on_joint_states, COMMAND_QUEUE)
        self.create_subscription(Float64MultiArray, topics.GRIPPER_COMMANDS, self._on_gripper, COMMAND_QUEUE)
        self.create_subscription(JointTrajectory, topics.ARM_TRAJECTORY, self._on_trajectory, COMMAND_QUEUE)
        self.create_subscription(String, topics.ARM_MODE, self._on_mode, latched)
        self._goal_statuses = None
        if self.session.split == "goals":
            # Latched like the action server's status publisher, but queueing a few: a short goal's EXECUTING
            # array must not be overwritten by its terminal one while the executor is busy with images.
            statuses = QoSProfile(
                depth=GOAL_STATUS_QUEUE,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL,
            )
            self._goal_statuses = self.create_subscription(
                GoalStatusArray, topics.EXECUTE_INSTRUCTION_STATUS, self._on_goal_statuses, statuses
            )
        self.create_service(Trigger, topics.RECORD_START, self._on_start)
        self.create_service(Trigger, topics.RECORD_STOP, self._on_stop)
        self.create_service(Trigger, topics.RECORD_DISCARD, self._on_discard)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(0.1, self._on_tick, clock=steady)
        self._progress_period_s = float(self.get_parameter("progress_period_s").value)
        self._last_progress = time.monotonic()
        self._last_warning: dict[str, float] = {}
        s = self.session
        self.get_logger().info(
            f"recording {s.instruction!r} into {s.out}: split {s.split}, keep {s.keep}, {s.fps} Hz, cameras "
            f"{list(s.assembler.cameras)}, image tolerance {s.assembler.tolerance_ns * 1e-6:.1f} ms"
            + (f"; call {topics.RECORD_START} to start an episode" if s.split == "service" else "")
        )

    # ------------------------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> None:
        def declare(name, default, description, **extra):
            self.declare_parameter(
                name, default, ParameterDescriptor(description=description, read_only=True, **extra)
            )

        declare("out", "", "dataset folder to create (LeRobotDataset v3)")
        declare("instruction", "", "the task instruction every recorded episode shows")
        declare("task_name", "", "name of the task in meta/svrl.json (default: the instruction)")
        declare("split", "service", f"how episodes are split: one of {list(SPLITS)}")
        declare("keep", "all", f"which episodes are written: one of {list(KEEPS)}")
        declare(
            "control_rate_hz",
            10.0,
            "arm_controller's control rate: the dataset's fps",
            floating_point_range=[FloatingPointRange(from_value=1.0, to_value=1000.0, step=0.0)],
        )
        declare("image_tolerance_s", -1.0, "max |image stamp - state stamp| (s); < 0: half a control period")
        declare(
            "default_mode",
            "",
            "who controls the arm until svrl/arm_mode is heard ('' = nobody: not recorded)",
        )
        declare("overwrite", False, "replace an existing dataset in `out`")
        declare("image_size", [0, 0], "[H, W]: resize every camera's images to this; [0, 0]: keep as sent")
        declare(
            "min_frames",
            1,
            "episodes with fewer frames are not written",
            integer_range=[IntegerRange(from_value=1, to_value=1_000_000, step=1)],
        )
        declare("progress_period_s", 5.0, "log a progress line this often while recording (s)")

    def _session_from_parameters(self) -> RecordingSession:
        names = ("out", "instruction", "task_name", "split", "keep", "control_rate_hz", "image_tolerance_s")
        names += ("default_mode", "overwrite", "min_frames", "image_size")
        p = {name: self.get_parameter(name).value for name in names}
        if not p["out"] or not p["instruction"]:
            raise ValueError("parameters `out` and `instruction` are required")
        return RecordingSession(
            p["out"],
            p["instruction"],
            split=p["split"],
            keep=p["keep"],
            fps=round(p["control_rate_hz"]),
            image_tolerance_s=None if p["image_tolerance_s"] < 0 else p["image_tolerance_s"],
            default_mode=p["default_mode"] or None,
            task_name=p["task_name"] or None,
            overwrite=p["overwrite"],
            min_frames=p["min_frames"],
            image_size=tuple(p["image_size"]) if all(v > 0 for v in p["image_size"]) else None,
        )

    # ------------------------------------------------------------------------------------ inputs
    def _warn(self, stream: str, message: str | None) -> None:
        """Log a refusal, at most every WARN_PERIOD_S per input (rclpy would throttle all of them as one)."""
        now = time.monotonic()
        if message and now - self._last_warning.get(stream, -math.inf) >= WARN_PERIOD_S:
            self._last_warning[stream] = now
            self.get_logger().warning(f"{stream}: {message} (dropped and counted)")

    def _image_callback(self, camera: str):
        def callback(msg: Image) -> None:
            try:
                image = image_from_msg(msg)
            except MessageError as error:
                self._warn(camera, self.session.assembler.refuse("image_bad", str(error)))
                return
            self._warn(
                camera,
                self.session.assembler.add_image(camera, stamp_to_nanoseconds(msg.header.stamp), image),
            )

        return callback

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            arm = joint_positions(msg, robot.ARM_JOINTS)
            fingers = joint_positions(msg, robot.FINGER_JOINTS)
        except MessageError as error:
            self._warn("joint_states", self.session.assembler.refuse("joint_states_bad", str(error)))
            return
        self.session.assembler.add_joint_state(stamp_to_nanoseconds(msg.header.stamp), arm, fingers)

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        if len(msg.data) < 1:
            self._warn(
                "gripper", self.session.assembler.refuse("command_bad", "gripper command carries no value")
            )
            return
        self._warn("gripper", self.session.assembler.add_gripper_command(float(msg.data[0])))

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        names = list(msg.joint_names)
        missing = [j for j in robot.ARM_JOINTS if j not in names]
        if missing or not msg.points or len(msg.points[0].positions) != len(names):
            reason = f"arm command lacks joints {missing}" if missing else "arm command has no usable point"
            self._warn("arm command", self.session.assembler.refuse("command_bad", reason))
            return
        point = msg.points[0]  # arm_controller sends one point: the target for this control period
        targets = [point.positions[names.index(j)] for j in robot.ARM_JOINTS]
        self._warn(
            "arm command",
            self.session.assembler.add_arm_command(stamp_to_nanoseconds(msg.header.stamp), targets),
        )

    def _on_mode(self, msg: String) -> None:
        if msg.data != self.session.assembler.mode:
            self.get_logger().info(f"arm mode: {msg.data}")
        self.session.assembler.set_mode(msg.data)

    def _on_goal_statuses(self, msg: GoalStatusArray) -> None:
        statuses = [(bytes(s.goal_info.goal_id.uuid).hex(), int(s.status)) for s in msg.status_list]
        for event in self.session.on_goal_statuses(statuses, time.monotonic()):
            self.get_logger().info(event)

    # ------------------------------------------------------------------------------------ services, progress
    def _answer(self, response: Trigger.Response, result: tuple[bool, str]) -> Trigger.Response:
        response.success, response.message = result
        self.get_logger().info(response.message)
        return response

    def _on_start(self, _request, response: Trigger.Response) -> Trigger.Response:
        return self._answer(response, self.session.start_episode())

    def _on_stop(self, _request, response: Trigger.Response) -> Trigger.Response:
        return self._answer(response, self.session.stop_episode())

    def _on_discard(self, _request, response: Trigger.Response) -> Trigger.Response:
        return self._answer(response, self.session.stop_episode(discard=True))

    def _on_tick(self) -> None:
        now = time.monotonic()
        for event in self.session.tick(now):
            self.get_logger().info(event)
        if now - self._last_progress >= self._progress_period_s:
            self._last_progress = now
            asm = self.session.assembler
            if asm.recording:
                teleop = sum(f.control == "teleop" for f in asm.frames)
                drops = ", ".join(f"{k} {v}" for k, v in sorted(asm.dropped.items())) or "none"
                current = f"episode open: {len(asm.frames)} frames ({teleop} teleop), dropped: {drops}"
            else:
                current = "no episode open"
            missing = asm.missing_inputs() + self._unmatched_goal_statuses()
            if missing:
                current += f" (nothing heard yet from {', '.join(missing)})"
            self.get_logger().info(f"{current}; kept so far: {self.session.summary.line()}")

    def _unmatched_goal_statuses(self) -> list[str]:
        """Goal statuses come only when a goal changes state, so "heard" cannot tell a recorder that will see
        the next goal start from one whose subscription DDS has not matched yet: that one would miss the
        goal's EXECUTING status and record nothing. A matched publisher is the signal."""
        if self._goal_statuses is None or self._goal_statuses.get_publisher_count() > 0:
            return []
        return [f"{topics.EXECUTE_INSTRUCTION_STATUS} (no action server matched)"]


def run(
    session: RecordingSession | None = None,
    args: list[str] | None = None,
    progress_period_s: float | None = None,
) -> int:
    """Spin the recorder until Ctrl-C / SIGTERM, then keep what was recorded (finalise the dataset)."""
    from rclpy.parameter import Parameter

    overrides = (
        [] if progress_period_s is None else [Parameter("progress_period_s", value=float(progress_period_s))]
    )
    return run_node(
        lambda: EpisodeRecorder(session, parameter_overrides=overrides),
        "episode_recorder",
        args=args,
        before_destroy=_finish,
    )


def _finish(node: EpisodeRecorder) -> None:
    log = rclpy.logging.get_logger("episode_recorder")
    try:
        path = node.session.close()
    except Exception as error:  # the dataset could not be written: say so loudly, leave the stage to inspect
        log.fatal(f"could not finalise the dataset in {node.session.out}: {error}")
        raise
    summary = node.session.summary.line()
    log.info(
        f"dataset written to {path}: {summary}" if path else f"nothing kept, no dataset written: {summary}"
    )


def main(args: list[str] | None = None) -> None:
    raise SystemExit(run(args=args))


if __name__ == "__main__":
    main()
