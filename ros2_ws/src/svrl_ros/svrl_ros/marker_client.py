"""The client side of RViz's interactive-marker protocol, for tests and scripted operators.

It does what RViz2's InteractiveMarkerClient does, with nothing drawn: ask `<ns>/get_interactive_markers`
for the full state, then apply the `<ns>/update` stream in sequence; an update with a number other than
the next one is a gap (counted in `gaps`) and the client re-initialises from the service, as RViz does.
Updates that arrive before the snapshot is in are queued and those already covered by it dropped.
Every UPDATE's `seq_num` is kept in `seq_log`, so a test can check the server never skips or repeats one.

It sends feedback the way RViz does when a person drags: MOUSE_DOWN, POSE_UPDATEs, MOUSE_UP, a
BUTTON_CLICK on a control, a MENU_SELECT with the entry's id, all with this client's `client_id`.
Runs on a node spun by the caller's executor (another thread); the blocking calls only wait on it.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import numpy as np
from visualization_msgs.msg import InteractiveMarker, InteractiveMarkerFeedback, InteractiveMarkerUpdate
from visualization_msgs.srv import GetInteractiveMarkers

from svrl_ros import topics
from svrl_ros.teleop_markers import pose_arrays, pose_msg


class MarkerClient:
    def __init__(self, node: Any, namespace: str = topics.TELEOP_MARKERS, client_id: str = "") -> None:
        self.node = node
        self.client_id = client_id or f"{node.get_fully_qualified_name()}/markers"
        self.lock = threading.Lock()
        self.markers: dict[str, InteractiveMarker] = {}
        self.sequence: int | None = None  # number of the last state applied; None until initialised
        self.seq_log: list[int] = []
        self.keep_alives = 0
        self.gaps = 0
        self.initialisations = 0
        self._queue: list[InteractiveMarkerUpdate] = []
        self._feedback_pub = node.create_publisher(InteractiveMarkerFeedback, f"{namespace}/feedback", 10)
        node.create_subscription(InteractiveMarkerUpdate, f"{namespace}/update", self._on_update, 100)
        self._service = node.create_client(GetInteractiveMarkers, f"{namespace}/get_interactive_markers")

    # ------------------------------------------------------------------------------------ state
    def initialise(self, limit_s: float = 60.0) -> None:
        """Fetch the full state from the service and apply the queued updates after it."""
        deadline = time.monotonic() + limit_s
        if not self._service.wait_for_service(timeout_sec=limit_s):
            raise TimeoutError("get_interactive_markers is not served")
        future = self._service.call_async(GetInteractiveMarkers.Request())
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from get_interactive_markers")
            time.sleep(0.01)
        response = future.result()
        with self.lock:
            self.markers = {m.name: m for m in response.markers}
            self.sequence = int(response.sequence_number)
            self.initialisations += 1
            queued, self._queue = self._queue, []
            for update in sorted(queued, key=lambda u: u.seq_num):
                if update.seq_num > self.sequence:
                    self._apply(update)

    def _on_update(self, msg: InteractiveMarkerUpdate) -> None:
        with self.lock:
            if msg.type == InteractiveMarkerUpdate.KEEP_ALIVE:
                self.keep_alives += 1
                return
            self.seq_log.append(int(msg.seq_num))
            if self.sequence is None:
                self._queue.append(msg)
                return
            self._apply(msg)

    def _apply(self, msg: InteractiveMarkerUpdate) -> None:
        """Apply one update in order (lock held); a gap drops the state until `initialise` again."""
        if msg.seq_num <= self.sequence:
            return  # already in the snapshot
        if msg.seq_num != self.sequence + 1:
            self.gaps += 1
            self.sequence = None
            self._queue = [msg]
            return
        for marker in msg.markers:
            self.markers[marker.name] = marker
        for pose in msg.poses:
            if pose.name in self.markers:
                self.markers[pose.name].pose = pose.pose
                self.markers[pose.name].header = pose.header
        for name in msg.erases:
            self.markers.pop(name, None)
        self.sequence = int(msg.seq_num)

    def marker(self, name: str) -> InteractiveMarker | None:
        with self.lock:
            found = self.markers.get(name)
            return copy.deepcopy(found) if found is not None else None

    def pose(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(position, quaternion w x y z) of a marker as the client sees it."""
        marker = self.marker(name)
        return None if marker is None else pose_arrays(marker.pose)

    # ------------------------------------------------------------------------------------ feedback
    def send(
        self,
        marker_name: str,
        event_type: int,
        *,
        control_name: str = "",
        position: np.ndarray | None = None,
        quaternion: np.ndarray | None = None,
        menu_entry_id: int = 0,
    ) -> None:
        fb = InteractiveMarkerFeedback(
            client_id=self.client_id,
            marker_name=marker_name,
            control_name=control_name,
            event_type=event_type,
            menu_entry_id=menu_entry_id,
        )
        current = self.marker(marker_name)
        if current is not None:
            fb.header = current.header
            fb.pose = current.pose
        if position is not None and quaternion is not None:
            fb.pose = pose_msg(position, quaternion)
        self._feedback_pub.publish(fb)

    def mouse_down(self, marker_name: str, control_name: str = "move_x") -> None:
        self.send(marker_name, InteractiveMarkerFeedback.MOUSE_DOWN, control_name=control_name)

    def drag(self, marker_name: str, position: np.ndarray, quaternion: np.ndarray) -> None:
        self.send(
            marker_name,
            InteractiveMarkerFeedback.POSE_UPDATE,
            control_name="move_x",
            position=position,
            quaternion=quaternion,
        )

    def mouse_up(self, marker_name: str, control_name: str = "move_x") -> None:
        self.send(marker_name, InteractiveMarkerFeedback.MOUSE_UP, control_name=control_name)

    def click(self, marker_name: str, control_name: str) -> None:
        self.send(marker_name, InteractiveMarkerFeedback.BUTTON_CLICK, control_name=control_name)

    def menu(self, marker_name: str, entry_id: int) -> None:
        self.send(marker_name, InteractiveMarkerFeedback.MENU_SELECT, menu_entry_id=entry_id)

    def feedback_subscribers(self) -> int:
        return self._feedback_pub.get_subscription_count()
