"""teleop_marker: take the arm from RViz with an interactive marker (docs/robot_graph.md, "Teleoperation").

Serves RViz's interactive-marker protocol directly over visualization_msgs (`svrl/teleop/update`,
`svrl/teleop/feedback`, `svrl/teleop/get_interactive_markers`; marker_protocol.py) with a 6-DoF handle at
the measured tool pose (forward kinematics of `joint_states` with svrl_sim.kinematics), a gripper button
and a menu (take over, hand back to the policy, hold) that calls arm_controller's `svrl/set_mode`.

While the arm is in `teleop` mode and the operator drags, the drag becomes `ee_delta` action chunks on
`svrl/teleop/action_chunk` (teleop_motion.py), which arm_controller executes through the same kinematics
and safety filter as the policy's. On release, or when feedback stops, a stop chunk holds the arm and
the handle snaps back to the measured pose; it also re-syncs to the measured pose on every mode switch
(`svrl/arm_mode`). When a policy goal aborts on its own (stale observations, a safety stop, its budget)
the node puts the arm in `hold` (goal_fallback.py), so the operator can finish the task.

Without tf2_msgs (pip-only ROS) nothing is published on /tf and the node says so: the markers live in the
arm's base frame, which robot_state_publisher provides on a full install.

    python -m svrl_ros.teleop_marker --ros-args -p chunk_length:=1
"""

from __future__ import annotations

import math
import time

import numpy as np
from action_msgs.msg import GoalStatusArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from svrl_interfaces.action import ExecuteInstruction
from svrl_interfaces.msg import ActionChunk
from svrl_interfaces.srv import SetMode
from visualization_msgs.msg import InteractiveMarkerFeedback, InteractiveMarkerUpdate
from visualization_msgs.srv import GetInteractiveMarkers

from svrl_ros import topics
from svrl_ros.conversions import (
    MessageError,
    float32_sequence,
    joint_positions,
    nanoseconds_to_stamp,
    seconds_to_duration,
    stamp_to_nanoseconds,
)
from svrl_ros.goal_fallback import AbortWatch, fallback_wanted
from svrl_ros.marker_protocol import MarkerServerState
from svrl_ros.node_runner import run_node
from svrl_ros.safety_filter import DEFAULT_WORKSPACE_MAX, DEFAULT_WORKSPACE_MIN
from svrl_ros.teleop_markers import (
    BASE_FRAME,
    GRIPPER_CONTROL,
    MENU_CLOSE_GRIPPER,
    MENU_HAND_BACK,
    MENU_HOLD,
    MENU_OPEN_GRIPPER,
    MENU_TAKE_OVER,
    TOOL_MEASURED,
    TOOL_TARGET,
    measured_marker,
    pose_arrays,
    pose_msg,
)
from svrl_ros.teleop_markers import target_marker as build_target_marker
from svrl_ros.teleop_motion import (
    GRIPPER_CLOSED,
    TeleopLimits,
    TeleopMotion,
    gripper_from_finger_target,
    rotation_vector,
)
from svrl_sim import robot
from svrl_sim.constants import ACTION_NAMES
from svrl_sim.kinematics import ArmKinematics, gripper_opening

MENU_MODES = {MENU_TAKE_OVER: "teleop", MENU_HAND_BACK: "policy", MENU_HOLD: "hold"}
FOLLOW_POSITION_M = 0.001  # the handle follows the measured tool once it moved this much ...
FOLLOW_ANGLE_RAD = 0.01  # ... or turned this much (fewer updates for a still arm)
CHECKS_PER_PERIOD = 4  # the drag is checked this often per control period (chunks go out once per period)
FEEDBACK_QOS_DEPTH = 10  # a MOUSE_UP must not be lost behind a burst of POSE_UPDATEs
UPDATE_QOS_DEPTH = 100  # as interactive_markers' servers
RESEND_PERIODS = 3  # lock-step: a chunk whose state has not advanced after this many periods is sent again
RESULT_WAIT_S = 2.0  # how long the fallback waits for an aborted goal's result before holding anyway


class TeleopMarker(Node):
    """ROS plumbing only: protocol state is MarkerServerState, motion is TeleopMotion."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__("teleop_marker", **node_kwargs)
        self._declare_parameters()
        p = self.get_parameter
        self._period_s = 1.0 / p("control_rate_hz").value
        self._motion = TeleopMotion(
            TeleopLimits(
                period_s=self._period_s,
                max_linear_speed=p("max_linear_speed").value,
                max_angular_speed=p("max_angular_speed").value,
                workspace_min=tuple(p("workspace_min").value),
                workspace_max=tuple(p("workspace_max").value),
                feedback_timeout_s=p("feedback_timeout_s").value,
                chunk_length=p("chunk_length").value,
                gripper_steps=p("gripper_steps").value,
            )
        )
        self._kin = ArmKinematics()
        self._server = MarkerServerState(server_id=self.get_fully_qualified_name())
        self._mode: str | None = None  # unknown until svrl/arm_mode or a set_mode answer says
        self._mode_requests = 0  # set_mode calls in flight: an abort seen meanwhile is ours, not a failure
        self._measured: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = (
            None  # stamp, pos, quat, fingers
        )
        self._finger_command: float | None = None  # the newest gripper command arm_controller sent (m)
        self._moving = False  # chunks went out since the last stop
        self._last_chunk_stamp_ns = -1
        self._last_chunk_s = -math.inf
        self._shown: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._aborts = AbortWatch()
        self._chunk_index = 0

        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self._update_pub = self.create_publisher(
            InteractiveMarkerUpdate, topics.TELEOP_UPDATE, UPDATE_QOS_DEPTH
        )
        self._chunk_pub = self.create_publisher(ActionChunk, topics.TELEOP_CHUNK, 10)
        self.create_subscription(
            InteractiveMarkerFeedback, topics.TELEOP_FEEDBACK, self._on_feedback, FEEDBACK_QOS_DEPTH
        )
        self.create_service(GetInteractiveMarkers, topics.TELEOP_GET_MARKERS, self._on_get_markers)
        self.create_subscription(JointState, topics.JOINT_STATES, self._on_joint_states, 10)
        self.create_subscription(Float64MultiArray, topics.GRIPPER_COMMANDS, self._on_gripper_command, 10)
        self.create_subscription(String, topics.ARM_MODE, self._on_arm_mode, latched)
        self.create_subscription(
            GoalStatusArray, topics.EXECUTE_INSTRUCTION_STATUS, self._on_goal_statuses, latched
        )
        self._set_mode_client = self.create_client(SetMode, topics.SET_MODE)
        self._result_client = self.create_client(
            ExecuteInstruction.Impl.GetResultService, topics.EXECUTE_INSTRUCTION_RESULT
        )
        self._tf_pub = self._make_tf_publisher()

        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(self._period_s / CHECKS_PER_PERIOD, self._control_tick, clock=steady)
        self.create_timer(1.0 / p("marker_rate_hz").value, self._marker_tick, clock=steady)
        keep_alive = p("keep_alive_period_s").value
        if keep_alive > 0:
            self.create_timer(keep_alive, self._keep_alive, clock=steady)

        # The handle exists from the start (at the home pose) so a client connecting early sees it.
        self._kin.set_joint_positions(np.asarray(robot.HOME_Q))
        home = self._kin.tool_pose()
        self._server.insert(build_target_marker(pose_msg(home.position, home.quaternion), "unknown", False))
        self._server.insert(measured_marker(pose_msg(home.position, home.quaternion)))
        self._apply()
        self.get_logger().info(
            f"teleop_marker ready: markers on {topics.TELEOP_MARKERS}/*, chunks on {topics.TELEOP_CHUNK} "
            f"(K={self._motion.limits.chunk_length}, {self._motion.limits.max_linear_speed} m/s, "
            f"{self._motion.limits.max_angular_speed} rad/s), feedback timeout "
            f"{self._motion.limits.feedback_timeout_s} s"
        )

    # ------------------------------------------------------------------------------------ parameters
    def _declare_parameters(self) -> None:
        def declare(name, default, description, read_only=True, **descriptor) -> None:
            self.declare_parameter(
                name, default, ParameterDescriptor(description=description, read_only=read_only, **descriptor)
            )

        def fr(low: float, high: float) -> list[FloatingPointRange]:
            return [FloatingPointRange(from_value=low, to_value=high)]

        declare(
            "control_rate_hz",
            10.0,
            "arm_controller's control rate (one chunk per period)",
            floating_point_range=fr(1.0, 1000.0),
        )
        declare(
            "chunk_length",
            1,
            "actions per teleop chunk: 1 paces a lock-step sim at one period per chunk; 2-3 bridge the "
            "phase between joint states and a timer-triggered arm_controller",
            integer_range=[IntegerRange(from_value=1, to_value=50, step=1)],
        )
        declare(
            "max_linear_speed",
            0.15,
            "m/s the tool may approach the dragged target at",
            floating_point_range=fr(0.001, 0.2),
        )
        declare(
            "max_angular_speed",
            0.8,
            "rad/s the tool may turn towards the target at",
            floating_point_range=fr(0.001, 1.0),
        )
        declare(
            "feedback_timeout_s",
            1.0,
            "a drag with no feedback for this long (wall s) ends: the arm holds (a dead man's switch)",
            floating_point_range=fr(0.05, 60.0),
        )
        declare(
            "gripper_steps",
            8,
            "control periods a gripper toggle runs for outside a drag",
            integer_range=[IntegerRange(from_value=1, to_value=1000, step=1)],
        )
        declare(
            "marker_rate_hz",
            10.0,
            "how often the markers follow the measured tool",
            floating_point_range=fr(0.5, 100.0),
        )
        declare(
            "keep_alive_period_s",
            0.0,
            "s between KEEP_ALIVE updates for older clients; 0 = none (RViz2 ignores them, with a warning)",
            floating_point_range=fr(0.0, 60.0),
        )
        declare(
            "workspace_min",
            list(DEFAULT_WORKSPACE_MIN),
            "m, base frame: the dragged target is kept inside this box (arm_controller's workspace)",
            type=ParameterType.PARAMETER_DOUBLE_ARRAY,
        )
        declare(
            "workspace_max",
            list(DEFAULT_WORKSPACE_MAX),
            "m, base frame: upper corner of the target's box",
            type=ParameterType.PARAMETER_DOUBLE_ARRAY,
        )
        declare(
            "fallback_on_abort",
            True,
            "put the arm in hold when a policy goal aborts on its own (stale observations, safety stop, budget)",
        )

    def _make_tf_publisher(self):
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            self.get_logger().warning(
                "tf2_msgs is not installed (pip-only ROS 2): nothing on /tf from teleop_marker. The markers "
                f"need only the frame {BASE_FRAME!r}; RViz's robot model and frames need robot_state_publisher "
                "(full ROS 2 install, the teleop profile starts it there)."
            )
            return None
        self._tf_type = TFMessage
        return self.create_publisher(TFMessage, "/tf", 10)

    # ------------------------------------------------------------------------------------ inputs
    def _on_joint_states(self, msg: JointState) -> None:
        try:
            arm_q = joint_positions(msg, robot.ARM_JOINTS)
            fingers = joint_positions(msg, robot.FINGER_JOINTS)
            self._kin.set_joint_positions(arm_q, fingers)
        except (MessageError, ValueError) as error:
            self.get_logger().warning(f"ignored joint_states: {error}", throttle_duration_sec=2.0)
            return
        stamp_ns = stamp_to_nanoseconds(msg.header.stamp)
        if self._measured is not None and stamp_ns < self._measured[0]:
            return
        pose = self._kin.tool_pose()
        self._measured = (stamp_ns, pose.position, pose.quaternion, fingers)

    def _on_gripper_command(self, msg: Float64MultiArray) -> None:
        if len(msg.data) == 1 and math.isfinite(msg.data[0]):
            self._finger_command = float(msg.data[0])

    def _on_arm_mode(self, msg: String) -> None:
        self._change_mode(msg.data)

    def _change_mode(self, mode: str) -> None:
        if mode == self._mode:
            return
        previous, self._mode = self._mode, mode
        self._motion.reset(self._gripper_to_keep())
        self._moving = False  # arm_controller dropped every chunk and re-synced on the switch
        self.get_logger().info(f"arm mode {previous} -> {mode}: marker re-synced to the measured tool")
        self._snap_back(full=True)

    def _gripper_to_keep(self) -> float:
        """The gripper value that continues what the arm was last told (a grasp is not let go)."""
        if self._finger_command is not None:
            return gripper_from_finger_target(self._finger_command)
        if self._measured is not None:
            return 1.0 - 2.0 * gripper_opening(self._measured[3])
        return -1.0

    def _on_feedback(self, fb: InteractiveMarkerFeedback) -> None:
        now = time.monotonic()
        if not self._server.accept_feedback(fb, now) or fb.marker_name != TOOL_TARGET:
            return
        teleop = self._mode == "teleop"
        event = fb.event_type
        if event == InteractiveMarkerFeedback.MENU_SELECT:
            self._on_menu(fb.menu_entry_id)
        elif event == InteractiveMarkerFeedback.BUTTON_CLICK and fb.control_name == GRIPPER_CONTROL:
            self._toggle_gripper(self._motion.gripper < 0)
        elif event == InteractiveMarkerFeedback.MOUSE_DOWN and teleop:
            self._motion.start_drag(now)
        elif event == InteractiveMarkerFeedback.POSE_UPDATE and teleop:
            if fb.header.frame_id not in ("", BASE_FRAME):  # no tf2 here to transform it: refuse, hold
                self.get_logger().warning(
                    f"ignored a drag in frame {fb.header.frame_id!r} (the handle lives in {BASE_FRAME!r}); the "
                    "arm holds",
                    throttle_duration_sec=2.0,
                )
                self._end_drag()
                return
            position, quaternion = pose_arrays(fb.pose)
            try:
                self._motion.drag_to(position, quaternion, now)
            except ValueError as error:
                self.get_logger().warning(f"ignored a drag: {error}; the arm holds")
                self._end_drag()
        elif event == InteractiveMarkerFeedback.MOUSE_UP:
            self._end_drag()
        else:
            self._motion.touch(now)

    def _on_menu(self, entry: int) -> None:
        if entry in MENU_MODES:
            self._request_mode(MENU_MODES[entry], "operator menu")
        elif entry in (MENU_OPEN_GRIPPER, MENU_CLOSE_GRIPPER):
            self._toggle_gripper(entry == MENU_CLOSE_GRIPPER)
        else:
            self.get_logger().warning(f"unknown menu entry {entry}")

    def _toggle_gripper(self, closed: bool) -> None:
        if self._mode != "teleop":
            self.get_logger().warning(f"gripper ignored: the arm is in {self._mode} mode (take over first)")
            return
        self._motion.set_gripper(closed)
        self._snap_back(full=True)  # the button's box shows the opening asked for

    # ------------------------------------------------------------------------------------ modes
    def _request_mode(self, mode: str, why: str) -> None:
        if not self._set_mode_client.service_is_ready():
            self.get_logger().error(f"cannot switch to {mode} ({why}): {topics.SET_MODE} is not served")
            return
        self._mode_requests += 1
        future = self._set_mode_client.call_async(SetMode.Request(mode=mode))

        def done(fut) -> None:
            self._mode_requests -= 1
            response = fut.result()
            if response is None or not response.success:
                text = response.message if response is not None else "no answer"
                self.get_logger().error(f"set_mode {mode} ({why}) refused: {text}")
                return
            self.get_logger().info(f"set_mode {mode} ({why}): {response.message}")
            self._change_mode(response.current_mode)

        future.add_done_callback(done)

    def _on_goal_statuses(self, msg: GoalStatusArray) -> None:
        fresh = self._aborts.new_aborts((bytes(s.goal_info.goal_id.uuid), s.status) for s in msg.status_list)
        if not fresh or not self.get_parameter("fallback_on_abort").value:
            return
        for goal_id in fresh:
            self._read_abort_reason(goal_id)

    def _read_abort_reason(self, goal_id: bytes) -> None:
        request = ExecuteInstruction.Impl.GetResultService.Request()
        request.goal_id.uuid = list(goal_id)
        if not self._result_client.service_is_ready():
            self._maybe_fall_back(None, "its result is not served")
            return
        future = self._result_client.call_async(request)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        timer = None

        def give_up() -> None:
            timer.cancel()
            if not future.done():
                future.cancel()
                self._maybe_fall_back(None, "its result did not come")

        def done(fut) -> None:
            timer.cancel()
            if fut.cancelled():
                return
            result = fut.result().result
            self._maybe_fall_back(result.reason, result.message)

        timer = self.create_timer(RESULT_WAIT_S, give_up, clock=steady)
        future.add_done_callback(done)

    def _maybe_fall_back(self, reason: str | None, detail: str) -> None:
        if self._mode_requests or not fallback_wanted(reason, self._mode):
            return
        self.get_logger().warning(
            f"a policy goal aborted ({reason or 'unknown reason'}: {detail}): holding the arm; "
            "take over from the marker's menu to finish the task"
        )
        self._request_mode("hold", "automatic fallback")

    # ------------------------------------------------------------------------------------ output
    def _control_tick(self) -> None:
        now = time.monotonic()
        if self._motion.timed_out(now):
            self.get_logger().warning(
                f"no marker feedback for {self._motion.limits.feedback_timeout_s} s: the drag ends, the arm holds"
            )
            self._end_drag()
            return
        if self._mode != "teleop" or self._measured is None:
            return
        if not self._motion.active(now):
            if self._moving:
                self._publish_stop()
            return
        if self._chunk_pub.get_subscription_count() == 0:
            self.get_logger().warning(
                f"nobody subscribes to {topics.TELEOP_CHUNK} yet (arm_controller not running or not "
                "discovered): the arm holds",
                throttle_duration_sec=2.0,
            )
            return
        stamp_ns, position, quaternion, _ = self._measured
        if now - self._last_chunk_s < 0.9 * self._period_s:
            return  # at most one chunk per period: a lock-step sim is paced to real time
        if stamp_ns < self._last_chunk_stamp_ns:
            return
        if (
            stamp_ns == self._last_chunk_stamp_ns
            and now - self._last_chunk_s < RESEND_PERIODS * self._period_s
        ):
            return  # one chunk per new state ...
        # ... unless the state has not moved on for a while: in lock-step the chunk was lost (a subscription
        # matched on our side before arm_controller's), and the sim waits for it. Sending it again for the
        # same state is harmless: arm_controller replaces a chunk of the same stamp and runs one action per
        # state at most.
        actions = self._motion.chunk(position, quaternion, now)
        if actions is None:
            return
        self._publish_chunk(stamp_ns, actions)
        self._last_chunk_stamp_ns, self._last_chunk_s, self._moving = stamp_ns, now, True

    def _end_drag(self) -> None:
        self._motion.release()
        if self._moving:
            self._publish_stop()
        self._snap_back()

    def _publish_chunk(self, stamp_ns: int, actions: np.ndarray) -> None:
        msg = ActionChunk()
        msg.header.stamp = nanoseconds_to_stamp(stamp_ns)
        msg.header.frame_id = BASE_FRAME
        msg.action_space = "ee_delta"
        msg.dim_names = list(ACTION_NAMES["ee_delta"])
        msg.chunk_length, msg.dims = (int(n) for n in actions.shape)
        msg.control_period = seconds_to_duration(self._period_s)
        msg.actions = float32_sequence(actions)
        msg.chunk_index = self._chunk_index
        msg.checkpoint_id = "teleop"
        self._chunk_index += 1
        self._chunk_pub.publish(msg)

    def _publish_stop(self) -> None:
        """chunk_length 0: arm_controller drops what is left and holds (docs/robot_graph.md)."""
        msg = ActionChunk()
        stamp_ns = self._measured[0] if self._measured is not None else 0
        msg.header.stamp = nanoseconds_to_stamp(stamp_ns)
        msg.header.frame_id = BASE_FRAME
        msg.action_space = "ee_delta"
        msg.control_period = seconds_to_duration(self._period_s)
        msg.checkpoint_id = "teleop"
        self._chunk_pub.publish(msg)
        self._moving = False

    def _snap_back(self, full: bool = False) -> None:
        """The handle to the measured tool pose now (a full update also refreshes its look and menu)."""
        if self._measured is None:
            pose = self._server.get(TOOL_TARGET).pose
        else:
            pose = pose_msg(self._measured[1], self._measured[2])
        if full:
            closed = self._motion.gripper >= GRIPPER_CLOSED - 1e-6
            self._server.insert(build_target_marker(pose, self._mode or "unknown", closed))
        else:
            self._server.set_pose(TOOL_TARGET, pose)
        if self._measured is not None:
            self._shown[TOOL_TARGET] = (self._measured[1], self._measured[2])
        self._apply()

    def _marker_tick(self) -> None:
        if self._measured is None:
            return
        _, position, quaternion, _ = self._measured
        names = [TOOL_MEASURED] if self._motion.dragging else [TOOL_MEASURED, TOOL_TARGET]
        for name in names:
            shown = self._shown.get(name)
            if shown is None or _moved(shown, position, quaternion):
                self._server.set_pose(name, pose_msg(position, quaternion))
                self._shown[name] = (position, quaternion)
        self._apply()
        self._publish_tf()

    def _apply(self) -> None:
        update = self._server.apply_changes()
        if update is not None:
            self._update_pub.publish(update)

    def _keep_alive(self) -> None:
        self._update_pub.publish(self._server.keep_alive())

    def _on_get_markers(
        self, _request: GetInteractiveMarkers.Request, response: GetInteractiveMarkers.Response
    ) -> GetInteractiveMarkers.Response:
        response.sequence_number, response.markers = self._server.snapshot()
        return response

    def _publish_tf(self) -> None:
        """Full install only: the dragged target as a TF frame next to robot_state_publisher's."""
        if self._tf_pub is None:
            return
        from geometry_msgs.msg import TransformStamped

        marker = self._server.get(TOOL_TARGET)
        t = TransformStamped()
        t.header.stamp = self.get_clock().now().to_msg()
        t.header.frame_id = BASE_FRAME
        t.child_frame_id = TOOL_TARGET
        t.transform.translation.x = marker.pose.position.x
        t.transform.translation.y = marker.pose.position.y
        t.transform.translation.z = marker.pose.position.z
        t.transform.rotation = marker.pose.orientation
        self._tf_pub.publish(self._tf_type(transforms=[t]))


def _moved(shown: tuple[np.ndarray, np.ndarray], position: np.ndarray, quaternion: np.ndarray) -> bool:
    far = float(np.linalg.norm(position - shown[0])) > FOLLOW_POSITION_M
    return far or float(np.linalg.norm(rotation_vector(quaternion, shown[1]))) > FOLLOW_ANGLE_RAD


def main(args: list[str] | None = None) -> None:
    code = run_node(TeleopMarker, "teleop_marker", args=args)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
