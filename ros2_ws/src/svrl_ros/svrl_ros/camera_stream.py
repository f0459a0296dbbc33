"""camera_node's worker: open a source, pace and stamp its frames, survive what cameras and files do.

ROS-free (the node passes in its clock, a wait, and a publish function), so every rule below is unit
tested with fake sources and a fake clock.

Stamps (docs/robot_graph.md, "Time"): a frame's stamp is its source time mapped onto the node's clock,
the same rule for every source:

    stamp = anchor_node + (t_frame - t_anchor)

The anchor is the node-clock time when the first frame of a pass was read, paired with that frame's
source time; later frames keep the recording's own spacing. Under `use_sim_time` the node clock is
`/clock`, so playback follows the simulator: frames are published when `/clock` reaches their stamp and
a paused sim pauses the recording. With a fixed `rate_hz` the frame times are replaced by k / rate_hz.
- Playback: a frame is published when the node clock reaches its stamp (never early). A pass that falls
  behind by more than `max_lag_s` (a slow disk, a sim that jumped ahead) is re-anchored at "now"
  instead of bursting to catch up; a loop starts its next pass one frame period after the last stamp
  (reopening a file takes a few tens of ms: those frames go out that late, keeping their stamps).
  Stamps therefore always increase, and a looped recording keeps its spacing across the seam.
- Live: frames are published as they arrive; the mapping is re-anchored when it leaves
  [now - max_lag_s, now] (the device clock drifted, or was reset by a reconnect). Counted in
  diagnostics (`restamps`).

Failures: a frame of the wrong size or that cannot be decoded is refused and counted; the stream goes
on. A live device that stops or disappears is closed and reopened with exponential back-off (never a
tight crash loop), reported as ERROR meanwhile. A recording that cannot be read further ends its pass
with an ERROR (and, when looping, the next pass starts after a back-off).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from svrl_ros.camera_sources import (
    CameraFrame,
    CameraSource,
    CameraSourceError,
    FrameError,
    StreamInfo,
    check_frame,
)

OK, WARN, ERROR = 0, 1, 2
DEFAULT_PERIOD_NS = 33_333_333  # a frame period when the source has not shown one yet (30 fps)

log = logging.getLogger(__name__)


class Backoff:
    """Delays between reconnect attempts: initial, doubled after each failure, capped; reset on success."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 8.0) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"back-off needs 0 < initial_s ({initial_s}) <= max_s ({max_s})")
        self.initial_s, self.max_s = initial_s, max_s
        self._next = initial_s

    def next(self) -> float:
        delay = self._next
        self._next = min(self.max_s, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


class PlaybackSchedule:
    """When (node clock, ns) each frame of a recording is due; also its stamp. See the module docstring."""

    def __init__(self, rate_hz: float = 0.0, max_lag_ns: int = 500_000_000) -> None:
        if rate_hz < 0:
            raise ValueError(f"rate_hz must be >= 0 (0 = recorded timing), got {rate_hz}")
        self.rate_hz, self.max_lag_ns = rate_hz, max_lag_ns
        self._anchor: tuple[int, int] | None = None  # (node ns, source ns)
        self._count = 0  # frames since the anchor (fixed rate)
        self._last_due: int | None = None
        self._last_source: int | None = None
        self._period_ns = round(1e9 / rate_hz) if rate_hz > 0 else DEFAULT_PERIOD_NS
        self.reanchors = 0

    def _anchor_at(self, node_ns: int, source_ns: int) -> None:
        self._anchor, self._count = (node_ns, source_ns), 0

    def due_ns(self, source_ns: int, now_ns: int) -> int:
        if self._anchor is None:
            # A new pass keeps the timeline: one frame period after the last stamp, even if reopening the
            # source took longer (its first frames then go out a little late, still in recorded spacing).
            start = now_ns if self._last_due is None else self._last_due + self._period_ns
            self._anchor_at(start, source_ns)
        elif self._last_source is not None and source_ns <= self._last_source and self.rate_hz == 0:
            # Recording time did not advance (a duplicate or a jump back): keep one period of spacing.
            self._anchor_at(self._last_due + self._period_ns, source_ns)  # type: ignore[operator]
            self.reanchors += 1
        node0, source0 = self._anchor  # type: ignore[misc]
        due = node0 + self._count * self._period_ns if self.rate_hz > 0 else node0 + (source_ns - source0)
        if now_ns - due > self.max_lag_ns:  # far behind: start again from now rather than burst
            self._anchor_at(now_ns, source_ns)
            self.reanchors += 1
            due = now_ns
        if self.rate_hz == 0 and self._last_due is not None and due > self._last_due:
            self._period_ns = due - self._last_due
        self._count += 1
        self._last_due, self._last_source = due, source_ns
        return due

    def new_pass(self) -> None:
        """A loop starts over: the next frame is due one frame period after the last one."""
        self._anchor = None
        self._last_source = None


class LiveStamper:
    """Device time -> node clock for a live camera (see the module docstring)."""

    def __init__(self, max_lag_ns: int = 100_000_000) -> None:
        self.max_lag_ns = max_lag_ns
        self._anchor: tuple[int, int] | None = None
        self._last: int | None = None
        self.reanchors = 0

    def stamp(self, source_ns: int, now_ns: int) -> int:
        if self._anchor is not None:
            stamp = self._anchor[0] + (source_ns - self._anchor[1])
            if now_ns - self.max_lag_ns <= stamp <= now_ns and (self._last is None or stamp > self._last):
                self._last = stamp
                return stamp
            self.reanchors += 1
        self._anchor = (now_ns, source_ns)
        stamp = now_ns if self._last is None else max(now_ns, self._last + 1)
        self._last = stamp
        return stamp

    def forget(self) -> None:
        """A reconnected device may have restarted its clock: the next frame anchors afresh."""
        self._anchor = None


@dataclass
class StreamStatus:
    """What diagnostics show; written by the stream thread, read by the node's diagnostics timer."""

    level: int = WARN
    message: str = "starting"
    source: str = ""
    published: int = 0
    refused: int = 0
    reconnects: int = 0
    passes: int = 0
    restamps: int = 0
    last_error: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, level: int, message: str, error: str | None = None) -> None:
        with self.lock:
            self.level, self.message = level, message
            if error is not None:
                self.last_error = error

    def snapshot(self) -> dict[str, str]:
        with self.lock:
            return {
                "level": str(self.level),
                "message": self.message,
                "source": self.source,
                "frames_published": str(self.published),
                "frames_refused": str(self.refused),
                "reconnects": str(self.reconnects),
                "passes": str(self.passes),
                "restamps": str(self.restamps),
                "last_error": self.last_error,
            }


Publish = Callable[[CameraFrame, int, StreamInfo], None]


class CameraStream:
    """Runs one source until `stop` is set. `run` is the body of camera_node's worker thread.

    `clock()` is the node clock in ns; `wait_until(ns)` blocks until the node clock reaches ns (False:
    stop); `sleep(s)` waits wall time (False: stop). `first_info` is the already-opened source's info when
    the node opened it at start (playback files are checked before the node reports ready).
    """

    def __init__(
        self,
        factory: Callable[[], CameraSource],
        publish: Publish,
        clock: Callable[[], int],
        wait_until: Callable[[int], bool],
        sleep: Callable[[float], bool],
        *,
        loop: bool = False,
        rate_hz: float = 0.0,
        frame_timeout_s: float = 5.0,
        max_lag_s: float = 0.5,
        backoff: Backoff | None = None,
        status: StreamStatus | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._factory, self._publish = factory, publish
        self._clock, self._wait_until, self._sleep = clock, wait_until, sleep
        self.loop, self.frame_timeout_s = loop, frame_timeout_s
        self._schedule = PlaybackSchedule(rate_hz, round(max_lag_s * 1e9))
        self._stamper = LiveStamper(round(min(max_lag_s, 0.1) * 1e9))
        self.backoff = backoff or Backoff()
        self.status = status or StreamStatus()
        self._log = logger or log
        self._warned: set[str] = set()

    def run(
        self, stop: threading.Event, source: CameraSource | None = None, info: StreamInfo | None = None
    ) -> None:
        while not stop.is_set():
            if source is None:
                source = self._factory()
                try:
                    info = source.open()
                except CameraSourceError as error:
                    source = None
                    self._failed(f"cannot open the camera: {error}", str(error))
                    if not self._sleep(self.backoff.next()):
                        return
                    continue
            assert info is not None
            with self.status.lock:
                self.status.source = info.description
                self.status.passes += 1
            self.status.set(OK, "streaming")
            self._log.info(f"streaming from {info.description}")
            ended = self._pass(stop, source, info)
            source.close()
            source = None
            if stop.is_set():
                return
            if ended == "lost" or (ended == "broken" and self.loop):
                with self.status.lock:
                    self.status.reconnects += 1
                self._stamper.forget()
                if not self._sleep(self.backoff.next()):
                    return
                self._schedule.new_pass()
                continue
            if ended == "broken":
                stop.wait()  # the ERROR stays in diagnostics; the node keeps serving
                return
            if not self.loop:
                self.status.set(OK, f"the recording ended after {self.status.published} frames; not looping")
                self._log.info("the recording ended (playback.loop is false): nothing more to publish")
                stop.wait()
                return
            self._schedule.new_pass()

    def _failed(self, message: str, error: str) -> None:
        self.status.set(ERROR, message, error)
        if message not in self._warned:  # once per distinct failure, not once per retry
            self._warned.add(message)
            self._log.error(message)

    def _pass(self, stop: threading.Event, source: CameraSource, info: StreamInfo) -> str:
        """One pass over the source: 'end' (recording over), 'lost' (live device gone), 'broken'
        (recording unreadable from here), or 'stop'."""
        while not stop.is_set():
            try:
                frame = source.read(self.frame_timeout_s)
                if frame is None:
                    return "end"
                check_frame(frame, info)
            except FrameError as error:
                with self.status.lock:
                    self.status.refused += 1
                    count = self.status.refused
                self.status.set(WARN, f"refused {count} frame(s): {error}", str(error))
                if count in (1, 10, 100) or count % 1000 == 0:
                    self._log.warning(f"refused frame #{count}: {error}")
                continue
            except CameraSourceError as error:
                if source.live:
                    self._failed(f"camera lost, reconnecting: {error}", str(error))
                    return "lost"
                self._failed(
                    f"recording unreadable after {self.status.published} frames: {error}", str(error)
                )
                return "broken"
            if not self._emit(stop, frame, info, source.live):
                return "stop"
            self.backoff.reset()
            if self.status.level == ERROR:
                self.status.set(OK, "streaming")
        return "stop"

    def _emit(self, stop: threading.Event, frame: CameraFrame, info: StreamInfo, live: bool) -> bool:
        now = self._clock()
        while now <= 0:  # use_sim_time before the first /clock: no time to stamp with yet
            if not self._sleep(0.01):
                return False
            now = self._clock()
        if live:
            stamp = self._stamper.stamp(frame.time_ns, now)
            restamps = self._stamper.reanchors
        else:
            stamp = self._schedule.due_ns(frame.time_ns, now)
            restamps = self._schedule.reanchors
            if not self._wait_until(stamp):
                return False
        if stop.is_set():
            return False
        self._publish(frame, stamp, info)
        with self.status.lock:
            self.status.published += 1
            self.status.restamps = restamps
        return True
