"""The policy server's view of the robot: camera frames, joint states and episode status, keyed by stamp.

docs/robot_graph.md pairs everything by stamp: an observation is both images and the joint state at one
stamp, and a chunk's progress is read from the stamps of the states that follow it. `ObservationStore`
holds the last few stamps of each stream and lets the goal thread wait on arrivals (without polling
the executor). It has no ROS in it and is unit-tested on its own; `attach_subscriptions` feeds it from
the topics and refuses unusable messages per message (counted and logged, never raised).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from svrl_ros.learned_policy import JointReading

T = TypeVar("T")
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))  # svrl_sim.robot.ARM_JOINTS
FINGER_JOINTS = ("finger_joint1", "finger_joint2")  # svrl_sim.robot.FINGER_JOINTS
JOINT_STATES_KEY = "joint_states"


@dataclass(frozen=True)
class Observation:
    stamp_ns: int
    images: dict[str, np.ndarray]
    joints: JointReading


@dataclass(frozen=True)
class StatusSample:
    """The fields of svrl_interfaces/EpisodeStatus the server acts on."""

    stamp_ns: int
    step: int
    success: bool
    done: bool
    task: str = ""


class ObservationStore:
    """Thread-safe, bounded per-stamp storage of the three streams, with waits on arrival.

    An observation is keyed by its joint state's stamp. `image_tolerance_ns` = 0 (simulators: every state
    carries one stamp) pairs it only with images of exactly that stamp; above 0 (cameras with their own
    clocks: a real robot, recorded cameras) each camera's image nearest in stamp within the tolerance is
    taken (the earlier on a tie), among the images received so far.
    """

    def __init__(
        self, cameras: tuple[str, ...] = ("main", "wrist"), keep: int = 64, image_tolerance_ns: int = 0
    ) -> None:
        if image_tolerance_ns < 0:
            raise ValueError(f"image_tolerance_ns must be >= 0, got {image_tolerance_ns}")
        self.cameras = tuple(cameras)
        self._keep = keep
        self.image_tolerance_ns = int(image_tolerance_ns)
        self._cond = threading.Condition()
        self._images: dict[str, OrderedDict[int, np.ndarray]] = {c: OrderedDict() for c in self.cameras}
        self._joints: OrderedDict[int, JointReading] = OrderedDict()
        self._status: OrderedDict[int, StatusSample] = OrderedDict()
        # Monotonic arrival time (ns) of each stream's message per stamp: instrumentation for
        # `svrl bench serve` (latency from the message that completed an observation to the chunk).
        self._arrived: dict[str, OrderedDict[int, int]] = {}
        self.refused: Counter[str] = Counter()

    # ---------------------------------------------------------------------------------------- input
    def set_cameras(self, cameras: tuple[str, ...]) -> None:
        """A newly loaded policy may use other cameras; frames of unused cameras are simply not needed."""
        with self._cond:
            for cam in cameras:
                self._images.setdefault(cam, OrderedDict())
            self.cameras = tuple(cameras)

    def add_image(self, camera: str, stamp_ns: int, image: np.ndarray, arrived_ns: int | None = None) -> None:
        """`arrived_ns`: monotonic time the message reached this process (default: now)."""
        with self._cond:
            self._note_arrival(camera, stamp_ns, arrived_ns)
            self._put(self._images.setdefault(camera, OrderedDict()), stamp_ns, image)

    def add_joints(self, stamp_ns: int, joints: JointReading, arrived_ns: int | None = None) -> None:
        with self._cond:
            self._note_arrival(JOINT_STATES_KEY, stamp_ns, arrived_ns)
            self._put(self._joints, stamp_ns, joints)

    def add_status(self, status: StatusSample) -> None:
        with self._cond:
            self._put(self._status, status.stamp_ns, status)

    def refuse(self, stream: str) -> int:
        """Count one refused message of `stream`; returns the running count (callers log 1, 10, 100...)."""
        with self._cond:
            self.refused[stream] += 1
            return self.refused[stream]

    def _note_arrival(self, stream: str, stamp_ns: int, arrived_ns: int | None) -> None:
        arrived = self._arrived.setdefault(stream, OrderedDict())
        arrived[stamp_ns] = time.monotonic_ns() if arrived_ns is None else arrived_ns
        arrived.move_to_end(stamp_ns)
        while len(arrived) > self._keep:
            arrived.popitem(last=False)

    def _put(self, store: OrderedDict, stamp_ns: int, value: Any) -> None:
        store[stamp_ns] = value
        store.move_to_end(stamp_ns)
        while len(store) > self._keep:
            store.popitem(last=False)
        self._cond.notify_all()

    # ---------------------------------------------------------------------------------------- queries
    def _image_stamp(self, camera: str, stamp_ns: int) -> int | None:
        """Stamp of `camera`'s image paired with the joint state at `stamp_ns` (see the class docstring)."""
        images = self._images[camera]
        if stamp_ns in images:
            return stamp_ns
        tolerance = self.image_tolerance_ns
        if tolerance <= 0:
            return None
        near = [s for s in images if abs(s - stamp_ns) <= tolerance]
        return min(near, key=lambda s: (abs(s - stamp_ns), s)) if near else None

    def observation_at(self, stamp_ns: int) -> Observation | None:
        """Both images and the joint state at this stamp (images within the tolerance), or None."""
        with self._cond:
            joints = self._joints.get(stamp_ns)
            if joints is None:
                return None
            stamps = {c: self._image_stamp(c, stamp_ns) for c in self.cameras}
            if any(s is None for s in stamps.values()):
                return None
            images = {c: self._images[c][s] for c, s in stamps.items()}
            return Observation(stamp_ns, images, joints)

    def newest_observation(self, min_stamp_ns: int = -1) -> Observation | None:
        """The newest complete observation with stamp >= min_stamp_ns."""
        with self._cond:
            for stamp in sorted(self._joints, reverse=True):  # by stamp: a late state arrives last
                if stamp < min_stamp_ns:
                    break
                obs = self.observation_at(stamp)
                if obs is not None:
                    return obs
            return None

    def completed_ns(self, stamp_ns: int) -> int | None:
        """Monotonic arrival time of the message that completed the observation at this stamp, or None.

        The newest arrival among both images and the joint state: what a chunk's serving latency is
        measured from (`svrl bench serve`).
        """
        with self._cond:
            stamps = {c: self._image_stamp(c, stamp_ns) for c in self.cameras}
            stamps[JOINT_STATES_KEY] = stamp_ns
            times = [self._arrived.get(k, {}).get(s) for k, s in stamps.items() if s is not None]
            if len(times) < len(stamps) or any(t is None for t in times):
                return None
            return max(times)  # type: ignore[type-var]

    def missing_at(self, stamp_ns: int) -> list[str]:
        """What an observation at this stamp still lacks, named by stream (for the abort reason)."""
        with self._cond:
            missing = [f"{c} image" for c in self.cameras if self._image_stamp(c, stamp_ns) is None]
            if stamp_ns not in self._joints:
                missing.append(JOINT_STATES_KEY)
            return missing

    def newest_state_ns(self) -> int | None:
        """Stamp of the newest state heard of (a joint state or an episode status)."""
        with self._cond:
            stamps = [max(s) for s in (self._joints, self._status) if s]  # by stamp, not arrival
            return max(stamps) if stamps else None

    def statuses_after(self, stamp_ns: int) -> list[StatusSample]:
        with self._cond:
            return [s for t, s in self._status.items() if t > stamp_ns]

    def newest_status(self) -> StatusSample | None:
        with self._cond:
            return self._status[max(self._status)] if self._status else None

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout_s: float,
        should_stop: Callable[[], bool] = lambda: False,
        poll_s: float = 0.05,
    ) -> T | None:
        """Wait until `predicate()` returns something, `should_stop()` is true, or `timeout_s` passes.

        Wakes on every arrival and at least every `poll_s` (a control period or less), so a cancel is
        seen within one control period. Sleeps on a condition: other callbacks keep running.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                result = predicate()
                if result is not None:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0 or should_stop():
                    return None
                self._cond.wait(min(poll_s, remaining))


def _log_refusal(node, store: ObservationStore, stream: str, error: Exception) -> None:
    count = store.refuse(stream)
    if count in (1, 10, 100, 1000) or count % 10000 == 0:
        node.get_logger().warning(f"refused {stream} message #{count}: {error}")


def arrival_ns(info: Any) -> int:
    """Monotonic time (ns) a message reached this process: the middleware's reception stamp when it gives
    one (system clock, moved onto the monotonic clock), else now. Includes the wait in the executor's
    queue, which is part of what serving a chunk costs."""
    now = time.monotonic_ns()
    received = int(info.get("received_timestamp", 0) or 0) if isinstance(info, dict) else 0
    if received <= 0:
        return now
    return now - max(0, time.time_ns() - received)


def attach_subscriptions(node, store: ObservationStore, callback_group=None) -> list:
    """Subscribe `node` to both cameras, joint_states and sim/episode_status, feeding `store`."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from svrl_interfaces.msg import EpisodeStatus

    from svrl_ros import topics
    from svrl_ros.conversions import MessageError, image_from_msg, joint_positions, stamp_to_nanoseconds

    def on_image(camera: str) -> Callable[[Image, Any], None]:
        def callback(msg: Image, info: Any = None) -> None:
            arrived = arrival_ns(info)
            try:
                image = image_from_msg(msg)
            except (MessageError, ValueError) as error:
                _log_refusal(node, store, f"{camera} image", error)
                return
            store.add_image(camera, stamp_to_nanoseconds(msg.header.stamp), image, arrived)

        return callback

    def on_joints(msg: JointState, info: Any = None) -> None:
        arrived = arrival_ns(info)
        try:
            q = joint_positions(msg, ARM_JOINTS + FINGER_JOINTS)
        except (MessageError, ValueError) as error:
            _log_refusal(node, store, JOINT_STATES_KEY, error)
            return
        store.add_joints(
            stamp_to_nanoseconds(msg.header.stamp), JointReading(q[:7].copy(), q[7:].copy()), arrived
        )

    def on_status(msg: EpisodeStatus) -> None:
        store.add_status(
            StatusSample(
                stamp_ns=stamp_to_nanoseconds(msg.header.stamp),
                step=int(msg.step),
                success=bool(msg.success),
                done=bool(msg.done),
                task=str(msg.task),
            )
        )

    subs = [
        node.create_subscription(
            Image, topic, on_image(cam), qos_profile_sensor_data, callback_group=callback_group
        )
        for cam, topic in topics.CAMERA_IMAGE_TOPICS.items()
    ]
    subs.append(
        node.create_subscription(
            JointState, topics.JOINT_STATES, on_joints, 50, callback_group=callback_group
        )
    )
    subs.append(
        node.create_subscription(
            EpisodeStatus, topics.SIM_STATUS, on_status, 50, callback_group=callback_group
        )
    )
    return subs
