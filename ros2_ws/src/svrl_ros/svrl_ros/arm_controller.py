"""arm_controller: the only node that commands the arm (docs/robot_graph.md, "Time" and "Safety filter").

Takes action chunks from the policy (`svrl/action_chunk`) or teleop (`svrl/teleop/action_chunk`), whichever
owns the arm (`svrl/set_mode`), turns each action into joint targets from the measured joints with
`svrl_sim.kinematics`, passes them through the safety filter and publishes the gripper command, then the
trajectory. Who owns the arm is published on `svrl/arm_mode` (latched) at start and on every change.
ROS plumbing only: every decision is `chunk_executor.ControlCore` and `safety_filter`.

    python -m svrl_ros.arm_controller --ros-args -p trigger:=joint_states -p start_mode:=policy
"""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from svrl_interfaces.msg import ActionChunk
from svrl_interfaces.srv import SetMode
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from svrl_ros import topics
from svrl_ros.chunk_blending import ACT_DECAY, BLEND_NONE, BLENDINGS, BlendConfig
from svrl_ros.chunk_executor import MODE_HOLD, MODE_POLICY, MODE_TELEOP, MODES, Command, ControlCore
from svrl_ros.conversions import (
    MessageError,
    chunk_actions,
    joint_positions,
    nanoseconds_to_stamp,
    seconds_to_duration,
    stamp_to_nanoseconds,
)
from svrl_ros.node_runner import FatalError, run_node
from svrl_ros.safety_filter import (
    DEFAULT_MAX_ACCELERATION,
    DEFAULT_VELOCITY_SCALE,
    DEFAULT_WORKSPACE_MAX,
    DEFAULT_WORKSPACE_MIN,
    SafetyFilter,
    SafetyLimits,
    SafetyViolation,
)
from svrl_sim import robot

TRIGGERS = ("timer", "joint_states")
LIMIT_PARAMETERS = (
    "velocity_scale",
    "max_acceleration",
    "workspace_min",
    "workspace_max",
    "joint_state_timeout_s",
    "command_timeout_s",
)
LEVEL_BYTES = {0: DiagnosticStatus.OK, 1: DiagnosticStatus.WARN, 2: DiagnosticStatus.ERROR}


def _range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=low, to_value=high, step=0.0)]


class ArmController(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__("arm_controller", **node_kwargs)
        self._declare_parameters()
        trigger = self.get_parameter("trigger").value
        if trigger not in TRIGGERS:
            raise ValueError(f"trigger must be one of {TRIGGERS}, got {trigger!r}")
        start_mode = self.get_parameter("start_mode").value
        if start_mode not in MODES:
            raise ValueError(f"start_mode must be one of {MODES}, got {start_mode!r}")
        self._lockstep = trigger == "joint_states"
        self._period_s = 1.0 / self.get_parameter("control_rate_hz").value
        limits = self._limits({})
        self._core = ControlCore(
            SafetyFilter(limits),
            lockstep=self._lockstep,
            command_timeout_s=self.get_parameter("command_timeout_s").value,
            start_mode=start_mode,
            blending=BlendConfig(
                self.get_parameter("blending").value, self.get_parameter("ensemble_decay").value
            ),
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._gripper_pub = self.create_publisher(Float64MultiArray, topics.GRIPPER_COMMANDS, 10)
        self._arm_pub = self.create_publisher(JointTrajectory, topics.ARM_TRAJECTORY, 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        # Latched (transient-local, depth 1): a reader that starts later (policy_server, teleop, a recorder)
        # still learns who owns the arm now, without waiting for the next switch.
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self._mode_pub = self.create_publisher(String, topics.ARM_MODE, latched)
        self._published_mode: str | None = None
        self.create_subscription(JointState, topics.JOINT_STATES, self._on_joint_states, 10)
        self.create_subscription(ActionChunk, topics.ACTION_CHUNK, self._chunk_callback(MODE_POLICY), 10)
        self.create_subscription(ActionChunk, topics.TELEOP_CHUNK, self._chunk_callback(MODE_TELEOP), 10)
        topics.subscribe_estop(self, self._on_estop)
        self.create_service(SetMode, topics.SET_MODE, self._on_set_mode)
        self.create_service(Trigger, topics.RESET_ESTOP, self._on_reset_estop)

        # Wall-clock watchdogs and the control timer run on the steady clock, whatever /clock says.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if not self._lockstep:
            self.create_timer(self._period_s, self._run_cycle, clock=steady)
        self.create_timer(
            self.get_parameter("diagnostics_period_s").value, self._publish_diagnostics, clock=steady
        )
        self._published_status: tuple[int, str] | None = None
        self._publish_mode()
        self.get_logger().info(
            f"arm_controller ready: trigger {trigger}, {1 / self._period_s:g} Hz, mode {start_mode}, "
            f"blending {self._core.schedule.blending.mode}, "
            f"velocity_scale {limits.velocity_scale}, max_acceleration {limits.max_acceleration} rad/s^2, "
            f"workspace {list(limits.workspace_min)} .. {list(limits.workspace_max)} m"
        )

    # ------------------------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> None:
        def declare(name, default, description, ranges=None, read_only=False, kind=None):
            descriptor = ParameterDescriptor(description=description, read_only=read_only)
            if ranges is not None:
                descriptor.floating_point_range = ranges
            if kind is not None:
                descriptor.type = kind
            self.declare_parameter(name, default, descriptor)

        declare(
            "trigger",
            "timer",
            "'timer': one cycle per period on a steady clock (real arms); 'joint_states': one cycle per "
            "joint_states message and per new chunk (lock-step sims)",
            read_only=True,
        )
        declare(
            "control_rate_hz", 10.0, "control rate; must match the policy's chunks", _range(1.0, 1000.0), True
        )
        declare("start_mode", MODE_HOLD, f"who owns the arm at start: one of {list(MODES)}", read_only=True)
        declare(
            "blending",
            BLEND_NONE,
            f"overlapping chunks (asynchronous inference): one of {list(BLENDINGS)}; none = the newest chunk "
            "decides, ensemble = ACT's exponential weights, crossfade = linear over the overlap. The gripper "
            "is never averaged: the newest chunk decides it (chunk_blending)",
            read_only=True,
        )
        declare(
            "ensemble_decay",
            ACT_DECAY,
            "blending ensemble: the k-th oldest chunk covering a period weighs exp(-decay * k); 0 = mean, < 0 "
            "favours the newest",
            _range(-10.0, 10.0),
            True,
        )
        declare(
            "command_timeout_s",
            0.5,
            "timer trigger: hold the measured position once the last command is older than this (wall s)",
            _range(0.001, 60.0),
        )
        declare(
            "joint_state_timeout_s",
            0.5,
            "timer trigger: hold when the newest joint state arrived longer ago than this (wall s); "
            "lock-step skips it, a paused sim's state stays exact",
            _range(0.001, 60.0),
        )
        declare(
            "velocity_scale",
            DEFAULT_VELOCITY_SCALE,
            "joint steps are clipped to velocity_scale x URDF velocity x period",
            _range(0.01, 1.0),
        )
        declare(
            "max_acceleration",
            DEFAULT_MAX_ACCELERATION,
            "rad/s^2: a step may differ from the previous command's step by this x period^2",
            _range(0.1, 10000.0),
        )
        declare(
            "workspace_min",
            list(DEFAULT_WORKSPACE_MIN),
            "m, base frame: lower corner of the box the tool target must stay in (else refuse and hold)",
            kind=ParameterType.PARAMETER_DOUBLE_ARRAY,
        )
        declare(
            "workspace_max",
            list(DEFAULT_WORKSPACE_MAX),
            "m, base frame: upper corner of the box the tool target must stay in",
            kind=ParameterType.PARAMETER_DOUBLE_ARRAY,
        )
        declare(
            "diagnostics_period_s",
            1.0,
            "/diagnostics is published on change and at this period",
            _range(0.05, 60.0),
            True,
        )

    def _limits(self, changed: dict[str, object]) -> SafetyLimits:
        """SafetyLimits from the parameters, with `changed` overriding; raises ValueError if invalid."""

        def value(name: str):
            return changed[name] if name in changed else self.get_parameter(name).value

        return SafetyLimits(
            period_s=self._period_s,
            velocity_scale=float(value("velocity_scale")),
            max_acceleration=float(value("max_acceleration")),
            workspace_min=tuple(float(v) for v in value("workspace_min")),
            workspace_max=tuple(float(v) for v in value("workspace_max")),
            joint_state_timeout_s=float(value("joint_state_timeout_s")),
        )

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changed = {p.name: p.value for p in params if p.name in LIMIT_PARAMETERS}
        if not changed:
            return SetParametersResult(successful=True)
        try:
            limits = self._limits(changed)
        except (ValueError, TypeError) as error:
            return SetParametersResult(successful=False, reason=str(error))
        self._core.safety.limits = limits
        if "command_timeout_s" in changed:
            self._core.command_timeout_s = float(changed["command_timeout_s"])
        self.get_logger().info(f"safety limits changed: {changed}")
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------------ inputs
    def _on_joint_states(self, msg: JointState) -> None:
        try:
            arm_q = joint_positions(msg, robot.ARM_JOINTS)
            finger_q = joint_positions(msg, robot.FINGER_JOINTS)
        except MessageError as error:
            self.get_logger().warning(f"ignored joint_states: {error}", throttle_duration_sec=1.0)
            self._core.bad_joint_state(str(error))
            self._maybe_publish_diagnostics()
            return
        fresh = self._core.on_joint_state(
            stamp_to_nanoseconds(msg.header.stamp), arm_q, finger_q, time.monotonic()
        )
        if fresh and self._lockstep:
            self._run_cycle()
        else:
            self._maybe_publish_diagnostics()

    def _chunk_callback(self, source: str):
        def callback(msg: ActionChunk) -> None:
            try:
                actions = chunk_actions(msg)
            except (MessageError, ValueError) as error:
                self.get_logger().warning(f"refused a {source} chunk: {error}")
                if source == self._core.mode and not self._core.estop_latched:
                    self._core.refuse_chunk(source, str(error))
                self._maybe_publish_diagnostics()
                return
            before = self._core.counters["chunks_refused"] + self._core.counters["chunks_ignored"]
            changed = self._core.on_chunk(
                source,
                stamp_to_nanoseconds(msg.header.stamp),
                actions,
                msg.action_space,
                list(msg.dim_names),
                stamp_to_nanoseconds(msg.control_period),
            )
            if self._core.counters["chunks_refused"] + self._core.counters["chunks_ignored"] != before:
                self.get_logger().warning(self._core.message, throttle_duration_sec=1.0)
            if changed and self._lockstep:
                self._run_cycle()
            else:
                self._maybe_publish_diagnostics()

        return callback

    def _on_estop(self, msg: Bool) -> None:
        was = self._core.estop_latched
        self._core.on_estop(bool(msg.data))
        if self._core.estop_latched and not was:
            self.get_logger().error("e-stop latched: holding; only svrl/reset_estop clears it")
        self._maybe_publish_diagnostics()

    def _on_set_mode(self, request: SetMode.Request, response: SetMode.Response) -> SetMode.Response:
        response.previous_mode = self._core.mode
        response.success, response.message = self._core.set_mode(request.mode.strip())
        response.current_mode = self._core.mode
        self._log_answer(response.success, f"set_mode {request.mode!r}: {response.message}")
        self._publish_mode()
        self._maybe_publish_diagnostics()
        return response

    def _on_reset_estop(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self._core.reset_estop()
        self._log_answer(response.success, f"reset_estop: {response.message}")
        self._publish_mode()
        self._maybe_publish_diagnostics()
        return response

    def _log_answer(self, success: bool, text: str) -> None:
        # rclpy pins one severity per call site: two separate calls, not one with a chosen method.
        if success:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)

    # ------------------------------------------------------------------------------------ output
    def _run_cycle(self) -> None:
        command = self._core.cycle(time.monotonic())
        if command is not None:
            try:
                self._publish(command)
            except SafetyViolation as error:  # unreachable unless the core is wrong: never publish it
                self._core.counters["safety_violations"] += 1
                self.get_logger().error(f"not published: {error}")
        self._maybe_publish_diagnostics()

    def _publish(self, command: Command) -> None:
        """Gripper first, then the trajectory: lock-step sims pair them in this order."""
        self._core.safety.publishable(command.arm, command.finger)
        gripper = Float64MultiArray()
        gripper.data = [float(command.finger)]
        self._gripper_pub.publish(gripper)
        trajectory = JointTrajectory()
        trajectory.header.stamp = nanoseconds_to_stamp(command.stamp_ns)
        trajectory.joint_names = list(robot.ARM_JOINTS)
        point = JointTrajectoryPoint()
        point.positions = [float(v) for v in command.arm]
        point.time_from_start = seconds_to_duration(self._period_s)
        trajectory.points = [point]
        self._arm_pub.publish(trajectory)

    def _publish_mode(self) -> None:
        """svrl/arm_mode on start and on every change (a switch to the same mode re-syncs but is no change)."""
        if self._core.mode != self._published_mode:
            self._mode_pub.publish(String(data=self._core.mode))
            self._published_mode = self._core.mode

    def _maybe_publish_diagnostics(self) -> None:
        if (self._core.level, self._core.message) != self._published_status:
            self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        core = self._core
        status = DiagnosticStatus()
        status.level = LEVEL_BYTES[core.level]
        status.name = f"{self.get_name()}: safety filter"
        status.hardware_id = "svrl_arm"
        status.message = core.message
        values = {"mode": core.mode, "estop_latched": str(core.estop_latched).lower(), **core.counters}
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diag_pub.publish(array)
        self._published_status = (core.level, core.message)


def main(args: list[str] | None = None) -> None:
    fatal = (FatalError((ValueError, ParameterException), 2, "bad configuration: ", while_building=True),)
    code = run_node(ArmController, "arm_controller", args=args, fatal=fatal)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
