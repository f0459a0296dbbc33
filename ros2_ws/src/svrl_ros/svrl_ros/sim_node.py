"""sim_node: the embedded simulator behind the topics a real robot offers (docs/robot_graph.md).

It publishes what a robot's drivers would (joint states, two cameras with their camera_info, `/clock`) and
obeys the commands ros2_control's controllers would take (a JointTrajectory for the arm, a
Float64MultiArray for the gripper), plus the episode topics only a simulator has (`sim/episode_status`,
`sim/reset_episode`, `sim/step`). Nothing on the robot topics knows about policies or `ee_delta` actions: the
sim gets joint-level targets, exactly as a real arm would, through `SimEnv.step_command`. The one exception is
the trainer's `sim/step_chunk` (StepChunk.srv, lock-step only): `RosEnv` sends a whole ee_delta chunk with the
request and gets the resulting observation in the answer, so training over ROS runs `SimEnv.step_chunk`'s
own code path and reproduces the in-process VectorEnv exactly.

Timing (parameter `timing`):
- `lockstep`: the sim advances one control period when the arm command for the current state (stamp ==
  state stamp) and a gripper command are in; with nothing to execute it waits. Deterministic.
- `realtime`: a wall-clock timer steps the sim every control period with the newest targets.

Every SimEnv call (physics and EGL rendering, which is bound to one thread) happens on the executor's one
thread: the node runs in a SingleThreadedExecutor and starts no threads of its own. The pairing rules and
the sim-time arithmetic live in `sim_clock` (ROS-free, unit-tested).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray
from svrl_interfaces.msg import EpisodeStatus
from svrl_interfaces.srv import ResetEpisode, StepChunk, StepSim
from trajectory_msgs.msg import JointTrajectory

from svrl_ros import topics
from svrl_ros.conversions import (
    camera_info_msg,
    float32_sequence,
    image_msg,
    joint_state_msg,
    nanoseconds_to_stamp,
    stamp_to_nanoseconds,
)
from svrl_ros.node_runner import FatalError, run_node
from svrl_ros.sim_clock import (
    ARM_JOINTS,
    FINGER_JOINTS,
    Command,
    CommandRejected,
    LockstepPairing,
    RealtimeTargets,
    ReasonCounter,
    SimClock,
    arm_target,
    gripper_target,
)

TIMINGS = ("lockstep", "realtime")
STATE_QOS_DEPTH = 10  # reliable, volatile: sensor-data (best-effort) subscribers match it too
MAX_STEPS_PER_CALL = 10_000  # sim/step: a bound on one call's work, the executor is busy meanwhile


class SimNodeError(RuntimeError):
    """The node cannot start with these parameters; the message says which and why."""


def _default_task() -> str:
    from svrl_sim.tasks import tasks_in_suite

    return tasks_in_suite("spatial")[0].name


class SimNode(Node):
    """One SimEnv behind robot topics; every callback runs on the executor's one thread and never waits."""

    def __init__(self, env_factory: Callable[..., Any] | None = None, **node_kwargs) -> None:
        """`env_factory(image_size=..., action_space=...)`: the env behind the topics (default: svrl_sim's
        SimEnv). The Isaac Sim bridge passes its own, so both offer one contract from one node."""
        super().__init__("sim_node", **node_kwargs)
        self._declare_parameters()
        p = self.get_parameter
        self._timing = p("timing").value
        if self._timing not in TIMINGS:
            raise SimNodeError(f"parameter timing={self._timing!r} must be one of {TIMINGS}")

        if env_factory is None:
            from svrl_sim.env import SimEnv as env_factory  # heavy (MuJoCo); created on the executor's thread

        self._env = env_factory(image_size=p("image_size").value, action_space="ee_delta")
        rate = p("control_rate_hz").value
        if abs(rate - self._env.control_hz) > 1e-9:
            raise SimNodeError(
                f"control_rate_hz={rate} differs from the simulator's control rate {self._env.control_hz} Hz"
            )
        self._sim_time = SimClock(self._env.control_hz)
        self._pairing = LockstepPairing()
        self._targets = RealtimeTargets()
        self._rejected = ReasonCounter()
        self._state_pending = False  # the env holds a state (after a reset) that is not published yet
        self._last_stamp_ns: int | None = None
        self._last_publish_s = 0.0
        self._reward = 0.0
        self._success = False

        model, index = self._env.model, self._env.index
        self._joint_qpos = np.array([model.joint(j).qposadr[0] for j in (*ARM_JOINTS, *FINGER_JOINTS)])
        self._joint_dof = np.array([model.joint(j).dofadr[0] for j in (*ARM_JOINTS, *FINGER_JOINTS)])
        self._camera_fovy = {cam: float(model.cam_fovy[index.camera_ids[cam]]) for cam in self._env.cameras}

        self._clock_pub = self.create_publisher(ClockMsg, "/clock", 10)
        self._joint_pub = self.create_publisher(JointState, topics.JOINT_STATES, STATE_QOS_DEPTH)
        self._status_pub = self.create_publisher(EpisodeStatus, topics.SIM_STATUS, STATE_QOS_DEPTH)
        self._image_pubs = {
            cam: self.create_publisher(Image, topics.CAMERA_IMAGE_TOPICS[cam], STATE_QOS_DEPTH)
            for cam in self._env.cameras
        }
        self._info_pubs = {
            cam: self.create_publisher(CameraInfo, topics.CAMERA_INFO_TOPICS[cam], STATE_QOS_DEPTH)
            for cam in self._env.cameras
        }
        # Gripper first: when both topics have messages at one wake-up, the executor takes them in the order
        # subscriptions were made, which is then the order arm_controller sends them in.
        self.create_subscription(Float64MultiArray, topics.GRIPPER_COMMANDS, self._on_gripper, 10)
        self.create_subscription(JointTrajectory, topics.ARM_TRAJECTORY, self._on_trajectory, 10)
        self.create_service(ResetEpisode, topics.SIM_RESET, self._on_reset)
        self.create_service(StepSim, topics.SIM_STEP, self._on_step)
        self.create_service(StepChunk, topics.SIM_STEP_CHUNK, self._on_step_chunk)

        error = self._reset(p("task").value or _default_task(), p("split").value, p("init_state_index").value)
        if error is not None:
            raise SimNodeError(f"cannot load the start episode: {error}")
        if self._timing == "lockstep":
            # Publish the start state from the executor, once spinning, like every later state.
            self._publish_trigger = self.create_guard_condition(self._publish_pending_state)
            self._publish_trigger.trigger()
            republish = p("idle_republish_s").value
            if republish > 0:
                steady = Clock(clock_type=ClockType.STEADY_TIME)
                self.create_timer(republish, self._republish_if_idle, clock=steady)
        else:
            # Wall-clock timer: with use_sim_time the node's own clock is the sim time this node makes.
            steady = Clock(clock_type=ClockType.STEADY_TIME)
            self.create_timer(1.0 / self._env.control_hz, self._on_tick, clock=steady)
        self.get_logger().info(
            f"sim_node ready: {self._timing}, {self._env.control_hz:g} Hz, {self._env.image_size} px, "
            f"episode {self._env.task.name}"
        )

    def _declare_parameters(self) -> None:
        def declare(name, default, description, **descriptor) -> None:
            self.declare_parameter(name, default, ParameterDescriptor(description=description, **descriptor))

        declare(
            "timing",
            "lockstep",
            "lockstep: advance one control period per arm+gripper command pair for the current state "
            "(deterministic); realtime: a wall-clock timer steps at control_rate_hz holding the newest targets",
            read_only=True,
            additional_constraints=f"one of {TIMINGS}",
        )
        declare(
            "control_rate_hz",
            10.0,
            "control periods per second of sim time; must equal the simulator's control rate",
            read_only=True,
            floating_point_range=[FloatingPointRange(from_value=1.0, to_value=500.0)],
        )
        declare(
            "image_size",
            128,
            "side of the square camera images in pixels",
            read_only=True,
            integer_range=[IntegerRange(from_value=16, to_value=1024, step=1)],
        )
        declare(
            "task", "", "episode loaded at start (empty: the first task of the spatial suite)", read_only=True
        )
        declare("split", "eval", "init-state split of the start episode: eval or train", read_only=True)
        declare(
            "init_state_index",
            0,
            "init state of the start episode, an index into the split",
            read_only=True,
            integer_range=[IntegerRange(from_value=0, to_value=100_000, step=1)],
        )
        declare(
            "cmd_timeout_s",
            0.5,
            "realtime: an arm target older than this (wall time) expires and the arm holds its measured "
            "position, like ros2_control's cmd_timeout",
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=60.0)],
        )
        declare("publish_images", True, "render and publish both cameras with every state")
        declare(
            "idle_republish_s",
            1.0,
            "lockstep: re-send the current state (same stamp) after this much wall time without a step, so a "
            "late subscriber or a lost message cannot stall the graph; 0 disables",
            read_only=True,
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=60.0)],
        )

    # ---------------------------------------------------------------------------------------- commands
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            arm = arm_target(msg.joint_names, [point.positions for point in msg.points])
        except CommandRejected as error:
            self._reject(topics.ARM_TRAJECTORY, error.reason, str(error))
            return
        if self._timing == "realtime":
            self._targets.set_arm(arm, time.monotonic())
            return
        stamp_ns = stamp_to_nanoseconds(msg.header.stamp)
        if self._state_pending or not self._pairing.add_arm(stamp_ns, self._sim_time.now_ns, arm):
            current = (
                "none yet (a reset is being published)" if self._state_pending else self._sim_time.now_ns
            )
            self._reject(
                topics.ARM_TRAJECTORY,
                "stale_stamp",
                f"trajectory stamped {stamp_ns} ns is not for the current state ({current} ns)",
            )
            return
        self._step_if_paired()

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        try:
            finger = gripper_target(msg.data)
        except CommandRejected as error:
            self._reject(topics.GRIPPER_COMMANDS, error.reason, str(error))
            return
        if self._timing == "realtime":
            self._targets.set_gripper(finger)
            return
        self._pairing.add_gripper(finger)
        self._step_if_paired()

    def _step_if_paired(self) -> None:
        command = self._pairing.take()
        if command is not None:
            self._step(command)
            self._publish_state()

    def _reject(self, topic: str, reason: str, text: str) -> None:
        key = f"{topic}: {reason}"
        if self._rejected.count(key):
            self.get_logger().warning(
                f"ignored a message on {topic} [{reason}, {self._rejected[key]} so far]: {text}"
            )

    # ---------------------------------------------------------------------------------------- stepping
    def _on_tick(self) -> None:
        """realtime: one control period with the newest targets, then publish (a pending reset instead)."""
        if not self._state_pending:
            measured_arm, measured_finger = self._measured()
            timeout_s = self.get_parameter("cmd_timeout_s").value
            timeouts = self._targets.timeouts
            command = self._targets.command(time.monotonic(), timeout_s, measured_arm, measured_finger)
            if self._targets.timeouts > timeouts:
                self.get_logger().info(f"arm target older than {timeout_s} s: holding the measured position")
            self._step(command)
        self._publish_state()

    def _step(self, command: Command) -> None:
        try:
            _obs, reward, _terminated, _truncated, info = self._env.step_command(
                command.arm, command.finger, render=False
            )
        except ValueError as error:  # commands are checked before; this is a guard, not a path
            self.get_logger().error(f"simulator refused a command: {error}")
            return
        self._reward = float(reward)
        self._success = bool(info["success"])

    def _measured(self) -> tuple[np.ndarray, float]:
        q = self._env.data.qpos[self._joint_qpos]
        return q[:7].copy(), float(np.mean(q[7:]))

    # ---------------------------------------------------------------------------------------- publishing
    def _republish_if_idle(self) -> None:
        """Lock-step: re-send the current state (same stamp) when nothing has moved the sim for a while.

        A paused sim publishes nothing, so a node that joins late (a free-text goal in the current scene)
        or a state lost to a full queue would otherwise wait for ever. The stamp does not change, so no
        reader takes it for a new state and arm_controller still executes at most one action for it.
        """
        if self._last_stamp_ns is None or self._state_pending:
            return
        if time.monotonic() - self._last_publish_s >= self.get_parameter("idle_republish_s").value:
            self._publish_state(advance=False)

    def _publish_pending_state(self) -> None:
        if self._state_pending:
            self._publish_state()

    def _publish_state(
        self, images: bool = True, advance: bool = True, answer_images: bool = False
    ) -> dict[str, Image]:
        """Publish the env's current state as the next tick: /clock, status, images, joint_states last.

        Images go out when `images` and the `publish_images` parameter are both true.
        joint_states goes last because it is what arm_controller reacts to: by then everything else about
        this state is out. `advance=False` re-sends the current state under its own stamp (lock-step idle).
        Returns the image messages rendered for this state (also when only `answer_images` asked for them:
        sim/step_chunk answers with the very frames it published).
        """
        if not self.context.ok():  # shutting down (Ctrl-C) while a tick was due
            return {}
        self._state_pending = False
        if advance or self._last_stamp_ns is None:
            self._last_stamp_ns = self._sim_time.advance()
        self._last_publish_s = time.monotonic()
        stamp = nanoseconds_to_stamp(self._last_stamp_ns)
        self._clock_pub.publish(ClockMsg(clock=stamp))
        env = self._env
        status = EpisodeStatus(
            task=env.task.name,
            instruction=env.instruction,
            step=env.step_count,
            max_steps=env.max_steps,
            success=self._success,
            done=not env.episode_running,
            reward=self._reward,
        )
        status.header.stamp = stamp
        self._status_pub.publish(status)
        publish = images and self.get_parameter("publish_images").value
        frames = self._image_msgs(stamp) if publish or answer_images else {}
        if publish:
            self._publish_images(frames, stamp)
        data = env.data
        self._joint_pub.publish(
            joint_state_msg(
                (*ARM_JOINTS, *FINGER_JOINTS), data.qpos[self._joint_qpos], data.qvel[self._joint_dof], stamp
            )
        )
        return frames

    def _image_msgs(self, stamp) -> dict[str, Image]:
        return {
            cam: image_msg(image, stamp, topics.CAMERA_FRAMES[cam])
            for cam, image in self._env.render().items()
        }

    def _publish_images(self, frames: dict[str, Image], stamp) -> None:
        size = self._env.image_size
        for cam, msg in frames.items():
            frame = topics.CAMERA_FRAMES[cam]
            self._image_pubs[cam].publish(msg)
            self._info_pubs[cam].publish(camera_info_msg(size, size, self._camera_fovy[cam], stamp, frame))

    # ---------------------------------------------------------------------------------------- services
    def _reset(self, task: str, split: str, index: int) -> str | None:
        """Load an episode; None on success, else why not (and nothing changed)."""
        from svrl_sim.tasks import InitState

        if not task:
            return "no task given"
        try:
            self._env.reset(task, InitState(split or "eval", int(index)), render=False)
        except (KeyError, IndexError, ValueError, TypeError) as error:
            return str(error)
        self._pairing.forget_targets()
        self._targets.reset()
        self._reward, self._success = 0.0, False
        self._state_pending = True
        return None

    def _on_reset(
        self, request: ResetEpisode.Request, response: ResetEpisode.Response
    ) -> ResetEpisode.Response:
        error = self._reset(request.task.strip(), request.split.strip(), request.init_state_index)
        if error is not None:
            self.get_logger().warning(f"refused sim/reset_episode: {error}")
            response.success, response.message = False, error
            return response
        next_ns = self._sim_time.now_ns + self._sim_time.period_ns
        response.success = True
        response.message = (
            f"reset to {self._env.task.name} {self._env.init_state.split}[{self._env.init_state.index}]; "
            f"its first state is published at sim time {next_ns} ns"
        )
        response.instruction = self._env.instruction
        response.max_steps = self._env.max_steps
        response.sim_time = nanoseconds_to_stamp(next_ns)
        self.get_logger().info(response.message)
        if self._timing == "lockstep":
            self._publish_trigger.trigger()  # after this response is sent: the state follows the answer
        return response

    def _on_step(self, request: StepSim.Request, response: StepSim.Response) -> StepSim.Response:
        if self._timing != "lockstep":
            response.success, response.message = False, "sim/step works in lockstep timing only"
        elif not 1 <= request.num_steps <= MAX_STEPS_PER_CALL:
            response.success = False
            response.message = f"num_steps must be in 1..{MAX_STEPS_PER_CALL}, got {request.num_steps}"
        else:
            if self._state_pending:
                self._publish_state()
            measured_arm, measured_finger = self._measured()
            pairing = self._pairing
            arm = pairing.last_arm if pairing.last_arm is not None else measured_arm
            finger = pairing.last_gripper if pairing.last_gripper is not None else measured_finger
            pairing.drop_queued()  # whatever was queued was for a state that is now past
            for i in range(request.num_steps):  # images only with the last state, if asked (StepSim.srv)
                self._step(Command(arm, finger))
                self._publish_state(images=request.render and i == request.num_steps - 1)
            response.success = True
            response.message = f"advanced {request.num_steps} control periods"
        if not response.success:
            self.get_logger().warning(f"refused sim/step: {response.message}")
        response.sim_time = nanoseconds_to_stamp(self._sim_time.now_ns)
        response.episode_step = self._env.step_count
        response.done = not self._env.episode_running
        return response

    def _on_step_chunk(self, request: StepChunk.Request, response: StepChunk.Response) -> StepChunk.Response:
        """RosEnv's step: run the chunk in the request through `SimEnv.step_chunk`'s code path, one control
        period at a time (each state published, like sim/step), and answer with the resulting observation.

        Everything is checked before anything runs (timing, stamp, shape, finiteness, a running episode): a
        refused request leaves the sim exactly where it was. Stepping stops early at success or the horizon.
        """
        frames: dict[str, Image] = {}
        if self._state_pending:  # a reset's first state gets its stamp before anything is compared with it
            self._publish_state()
        error, actions = self._check_chunk(request)
        if error is not None:
            response.success, response.message = False, error
            self.get_logger().warning(f"refused {topics.SIM_STEP_CHUNK}: {error}")
        else:
            self._pairing.drop_queued()  # commands queued on the topics were for a state that is now past
            reward, terminated, truncated, executed = 0.0, False, False, 0
            for i, action in enumerate(actions):
                _obs, reward, terminated, truncated, info = self._env.step_chunk(action[None], render=False)
                executed += 1
                self._reward, self._success = float(reward), bool(info["success"])
                last = terminated or truncated or i == len(actions) - 1
                frames = self._publish_state(images=last, answer_images=last and request.render)
                if terminated or truncated:
                    break
            if not len(actions) and request.render:
                frames = self._image_msgs(nanoseconds_to_stamp(self._sim_time.now_ns))
            response.success, response.message = True, f"executed {executed} of {len(actions)} actions"
            response.executed_steps = executed
            response.reward, response.terminated, response.truncated = float(reward), terminated, truncated
        env = self._env
        response.sim_time = nanoseconds_to_stamp(self._sim_time.now_ns)
        response.episode_step, response.max_steps = env.step_count, env.max_steps
        response.episode_success, response.done = self._success, not env.episode_running
        response.task, response.split = env.task.name, env.init_state.split
        response.init_state_index = int(env.init_state.index)
        response.proprio = float32_sequence(env.proprio())
        response.cameras = list(frames)
        response.images = list(frames.values())
        return response

    def _check_chunk(self, request: StepChunk.Request) -> tuple[str | None, np.ndarray]:
        """(None, actions[K, D]) for a request that can run as it is, else (why not, empty)."""
        none = np.zeros((0, self._env.action_dim))
        if self._timing != "lockstep":
            return f"{topics.SIM_STEP_CHUNK} works in lockstep timing only", none
        dim = self._env.action_dim
        values = np.asarray(request.actions, dtype=np.float64)
        if request.action_dim != dim or values.size % dim:
            return (
                f"actions must be [K x {dim}] (action_dim {dim}), got {values.size} values, action_dim {request.action_dim}",
                none,
            )
        actions = values.reshape(-1, dim)
        if len(actions) > MAX_STEPS_PER_CALL:
            return f"a chunk holds at most {MAX_STEPS_PER_CALL} actions, got {len(actions)}", none
        if not len(actions):  # executes nothing: answers with the current state, whatever its stamp
            return None, actions
        stamp_ns = stamp_to_nanoseconds(request.state_stamp)
        if stamp_ns != self._sim_time.now_ns:
            return (
                f"stale_stamp: the chunk was computed from the state at {stamp_ns} ns, the current state is "
                f"at {self._sim_time.now_ns} ns (something else moved the sim)"
            ), none
        if not np.isfinite(actions).all():
            where = np.argwhere(~np.isfinite(actions))[0].tolist()
            return (
                f"non_finite: the chunk contains NaN or inf (first at [{where[0]}, {where[1]}]); nothing was executed",
                none,
            )
        if not self._env.episode_running:
            return (
                "episode_ended: the episode has ended (success or horizon); call sim/reset_episode first",
                none,
            )
        return None, actions

    def destroy_node(self) -> None:
        if self._rejected.counts:
            self.get_logger().info(f"ignored messages: {self._rejected.counts}")
        self._env.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    code = run_node(SimNode, "sim_node", args=args, fatal=(FatalError((SimNodeError,)),))
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
