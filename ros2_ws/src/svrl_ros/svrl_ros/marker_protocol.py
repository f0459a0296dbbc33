"""The server side of RViz's interactive-marker protocol over plain visualization_msgs, without a node.

The interactive_markers library (which RViz's own servers use) is not on PyPI, so svrl speaks its
protocol directly. What a client (RViz2's InteractiveMarkerClient) relies on, and this class keeps:

- the full state is fetched through `<ns>/get_interactive_markers`, whose response carries the server's
  current `sequence_number`;
- every change goes out on `<ns>/update` as one `UPDATE` message whose `seq_num` is exactly one more than
  the previous one: changes are collected (`insert` / `set_pose` / `erase`) and sent together by
  `apply_changes`. A client drops queued updates with `seq_num` <= the snapshot's number and resets (asks
  for the snapshot again) on any gap, so a number must never be skipped or reused;
- a pose-only change travels as an `InteractiveMarkerPose`, a new or changed marker as the whole marker,
  a removal as its name;
- `KEEP_ALIVE` carries the current `seq_num` without advancing it. RViz2 ignores keep-alives (it warns
  once that servers no longer send them) and watches the service instead, so they are off unless asked
  for (`keep_alive`), for older clients;
- feedback for an unknown marker is ignored; while one client drags a marker, feedback from another
  client is refused for `CONFLICT_S` (1 s), so two operators cannot fight over one marker;
- a POSE_UPDATE feedback moves the stored marker (keeping the stored header when the marker's stamp is
  zero, i.e. "latest transform"), so every other client sees the drag after the next `apply_changes`.

Not thread-safe: call it from one executor thread.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from geometry_msgs.msg import Pose
from std_msgs.msg import Header
from visualization_msgs.msg import (
    InteractiveMarker,
    InteractiveMarkerFeedback,
    InteractiveMarkerPose,
    InteractiveMarkerUpdate,
)

CONFLICT_S = 1.0  # s during which feedback from a second client is refused (the library's rule)

_FULL, _POSE, _ERASE = "full", "pose", "erase"


@dataclass
class _Pending:
    kind: str
    marker: InteractiveMarker | None = None  # _FULL
    pose: Pose | None = None  # _POSE
    header: Header | None = None  # _POSE


@dataclass
class _Owner:
    client_id: str = ""
    last_feedback_s: float = float("-inf")


@dataclass
class MarkerServerState:
    """Markers, pending changes and the sequence number of one interactive-marker server."""

    server_id: str
    seq_num: int = 0
    markers: dict[str, InteractiveMarker] = field(default_factory=dict)
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _owners: dict[str, _Owner] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------ changes
    def insert(self, marker: InteractiveMarker) -> None:
        """Add or replace a whole marker (sent in full at the next `apply_changes`)."""
        if not marker.name:
            raise ValueError("an interactive marker needs a name")
        self._pending[marker.name] = _Pending(_FULL, marker=copy.deepcopy(marker))

    def set_pose(self, name: str, pose: Pose, header: Header | None = None) -> bool:
        """Move a marker; `header` None keeps its header. False when no such marker exists or is pending."""
        pending = self._pending.get(name)
        if name not in self.markers and (pending is None or pending.kind != _FULL):
            return False
        if pending is not None and pending.kind == _FULL:
            assert pending.marker is not None
            pending.marker.pose = copy.deepcopy(pose)
            if header is not None:
                pending.marker.header = copy.deepcopy(header)
            return True
        old_header = self.markers[name].header
        self._pending[name] = _Pending(
            _POSE,
            pose=copy.deepcopy(pose),
            header=copy.deepcopy(header if header is not None else old_header),
        )
        return True

    def erase(self, name: str) -> bool:
        if name not in self.markers and name not in self._pending:
            return False
        self._pending[name] = _Pending(_ERASE)
        return True

    def get(self, name: str) -> InteractiveMarker | None:
        """The marker as clients will see it after the next `apply_changes`."""
        pending = self._pending.get(name)
        if pending is None:
            return self.markers.get(name)
        if pending.kind == _ERASE:
            return None
        if pending.kind == _FULL:
            return pending.marker
        marker = copy.deepcopy(self.markers[name])
        marker.pose, marker.header = pending.pose, pending.header
        return marker

    @property
    def has_changes(self) -> bool:
        return bool(self._pending)

    def apply_changes(self) -> InteractiveMarkerUpdate | None:
        """All pending changes as one UPDATE with the next sequence number; None when nothing changed."""
        if not self._pending:
            return None
        update = InteractiveMarkerUpdate(server_id=self.server_id, type=InteractiveMarkerUpdate.UPDATE)
        for name, change in self._pending.items():
            if change.kind == _FULL:
                assert change.marker is not None
                self.markers[name] = change.marker
                update.markers.append(copy.deepcopy(change.marker))
            elif change.kind == _POSE and name in self.markers:
                marker = self.markers[name]
                marker.pose, marker.header = change.pose, change.header
                update.poses.append(InteractiveMarkerPose(header=marker.header, pose=marker.pose, name=name))
            elif change.kind == _ERASE and name in self.markers:
                del self.markers[name]
                self._owners.pop(name, None)
                update.erases.append(name)
        self._pending.clear()
        self.seq_num += 1
        update.seq_num = self.seq_num
        return update

    def keep_alive(self) -> InteractiveMarkerUpdate:
        """A KEEP_ALIVE for older clients: the current sequence number, not advanced."""
        return InteractiveMarkerUpdate(
            server_id=self.server_id, seq_num=self.seq_num, type=InteractiveMarkerUpdate.KEEP_ALIVE
        )

    def snapshot(self) -> tuple[int, list[InteractiveMarker]]:
        """(sequence_number, markers) for a GetInteractiveMarkers response: the state as of `seq_num`.

        Pending changes are not in it: they go out with the next number, which the client then applies.
        """
        return self.seq_num, [copy.deepcopy(m) for m in self.markers.values()]

    # ------------------------------------------------------------------------------------ feedback
    def accept_feedback(self, feedback: InteractiveMarkerFeedback, now_s: float) -> bool:
        """Whether this feedback is to be acted on (see the module docstring); a POSE_UPDATE moves the
        stored marker. `now_s`: any monotonic clock, used only for the two-client rule."""
        marker = self.markers.get(feedback.marker_name)
        if marker is None:
            return False
        owner = self._owners.setdefault(feedback.marker_name, _Owner())
        if owner.client_id != feedback.client_id and now_s - owner.last_feedback_s < CONFLICT_S:
            return False
        owner.client_id, owner.last_feedback_s = feedback.client_id, now_s
        if feedback.event_type == InteractiveMarkerFeedback.POSE_UPDATE:
            zero_stamp = marker.header.stamp.sec == 0 and marker.header.stamp.nanosec == 0
            self.set_pose(feedback.marker_name, feedback.pose, None if zero_stamp else feedback.header)
        return True
