"""camera_node over real DDS: recordings arrive bit-exact with their stamps and intrinsics, playback follows
/clock under sim time, and bad input (wrong frame sizes, wrong or missing files, no device) gets a clear
error while the node keeps running, or a clear exit at start when nothing can be opened.

Recordings are made in the test (tests/ros/camera_recordings.py): no camera is needed. Time limits are
hang guards only.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.ros.camera_recordings import (
    INTRINSICS,
    SERIAL,
    check_sequence,
    pattern_frame,
    requires_pyrealsense2,
    write_image_folder,
    write_realsense_recording,
    write_ros2_bag,
)
from tests.ros.graph_harness import log_tail, wait_until

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

MS = 1_000_000


class Listener:
    """The test's own node: records one camera's topics and /diagnostics, and can drive /clock."""

    def __init__(self, prefix: str = "camera/camera") -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import CameraInfo, Image

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("camera_listener", context=self.context)
        self.lock = threading.Lock()
        self.images: list = []
        self.infos: list = []
        self.depth: list = []
        self.diagnostics: list = []
        sub = self.node.create_subscription
        sub(Image, f"{prefix}/color/image_raw", self._keep(self.images), 500)
        sub(CameraInfo, f"{prefix}/color/camera_info", self._keep(self.infos), 500)
        sub(Image, f"{prefix}/aligned_depth_to_color/image_raw", self._keep(self.depth), 500)
        sub(DiagnosticArray, "/diagnostics", self._keep(self.diagnostics), 50)
        self.clock_pub = self.node.create_publisher(Clock, "/clock", 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _keep(self, store: list):
        def callback(msg) -> None:
            with self.lock:
                store.append(msg)

        return callback

    def count(self, store: list) -> int:
        with self.lock:
            return len(store)

    def statuses(self) -> list:
        with self.lock:
            return [s for array in self.diagnostics for s in array.status]

    def publish_clock(self, ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        self.clock_pub.publish(Clock(clock=Time(sec=ns // 10**9, nanosec=ns % 10**9)))

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)


@pytest.fixture
def listener(ros_env):
    listener = Listener()
    yield listener
    listener.close()


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _pixels(msg) -> np.ndarray:
    assert msg.encoding == "rgb8" and msg.step == msg.width * 3
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


def _start(processes, log: Path, *params: str) -> subprocess.Popen:
    args = ["-m", "svrl_ros.camera_node", "--ros-args"]
    for param in params:
        args += ["-p", param]
    return processes.start_python(*args, log=log)


def _indices(messages: list, frames: list[np.ndarray]) -> list[int]:
    """Which recorded frame each message carries (bit-exact), or a failed assertion."""
    known = {f.tobytes(): i for i, f in enumerate(frames)}
    indices = [known.get(_pixels(m).tobytes()) for m in messages]
    assert None not in indices, "a frame that is not in the recording, or not bit-exact"
    return indices  # type: ignore[return-value]


@requires_pyrealsense2
def test_a_realsense_recording_arrives_bit_exact_with_its_spacing_intrinsics_and_aligned_depth(
    processes, listener: Listener, tmp_path: Path
) -> None:
    n = 12
    frames = [pattern_frame(i) for i in range(n)]
    depth = [np.full((48, 64), 250 * (i + 1), np.uint16) for i in range(n)]
    recording = write_realsense_recording(tmp_path / "rs.db3", frames, depth=depth)
    log = tmp_path / "camera.log"
    # Looping: DDS discovery may miss the first frames; two full passes are checked after that.
    proc = _start(
        processes, log, f"playback.path:={recording.path}", "align_depth.enable:=true", "playback.loop:=true"
    )
    wait_until(lambda: listener.count(listener.images) >= 3 * n, 60, "two passes of frames", log)
    with listener.lock:
        images, infos, depth_msgs = list(listener.images), list(listener.infos), list(listener.depth)
    indices = _indices(images, frames)
    assert all(m.header.frame_id == "camera_color_optical_frame" for m in images)
    stamps = [_stamp(m) for m in images]
    times = recording.times_ns
    check_sequence(indices, stamps, times, times[-1] - times[-2])
    assert abs(stamps[0] - time.time_ns()) < 120 * 10**9  # on the node's (system) clock
    info = infos[-1]
    assert (info.width, info.height, info.distortion_model) == (64, 48, "plumb_bob")
    assert np.allclose(
        [info.k[0], info.k[4], info.k[2], info.k[5]], [INTRINSICS[k] for k in ("fx", "fy", "ppx", "ppy")]
    )
    assert np.allclose(info.d, INTRINSICS["coeffs"])
    by_stamp = {_stamp(m): m for m in depth_msgs}
    assert by_stamp, "no aligned depth at all"
    for stamp, i in zip(stamps, indices, strict=True):
        if not min(by_stamp) <= stamp <= max(by_stamp):
            # before: the depth topic's subscription matched a little after the colour topic's;
            # after: the newest frame's depth (published just after its colour) was not in yet
            continue
        msg = by_stamp.get(stamp)
        assert msg is not None and msg.encoding == "16UC1", f"no aligned depth for the frame at {stamp}"
        assert int(np.median(np.frombuffer(bytes(msg.data), "<u2"))) == 250 * (i + 1)
    assert proc.poll() is None
    wait_until(listener.statuses, 10, "diagnostics", log)
    status = listener.statuses()[-1]
    assert status.level == b"\x00" and status.name.endswith("camera/camera"), status.message
    proc.send_signal(signal.SIGINT)  # Ctrl-C, as ros2 launch stops it: a clean exit, no crash
    assert proc.wait(timeout=30) == 0, log_tail(log)


@requires_pyrealsense2
def test_under_sim_time_playback_follows_clock(processes, listener: Listener, tmp_path: Path) -> None:
    recording = write_realsense_recording(tmp_path / "rs.db3", [pattern_frame(i) for i in range(30)], fps=30)
    log = tmp_path / "camera.log"
    _start(processes, log, f"playback.path:={recording.path}", "use_sim_time:=true")
    wait_until(lambda: "streaming from" in log.read_text(), 60, "the node to start", log)
    time.sleep(1.0)
    assert listener.count(listener.images) == 0, "published before any /clock"
    start = 7_000 * MS

    def first_frame() -> bool:  # the clock is repeated until the node has heard it (DDS discovery)
        listener.publish_clock(start)
        time.sleep(0.05)
        return listener.count(listener.images) > 0

    wait_until(first_frame, 30, "a frame once /clock runs", log)
    time.sleep(0.5)  # the clock stands still: so does the recording
    assert listener.count(listener.images) == 1
    clock = start
    for _ in range(4):  # 0.4 s more of sim time, in 100 ms ticks
        clock += 100 * MS
        listener.publish_clock(clock)
        time.sleep(0.2)
    wait_until(lambda: listener.count(listener.images) >= 13, 20, "frames up to the clock", log)
    time.sleep(1.0)
    stamps = [_stamp(m) for m in listener.images]
    assert stamps[0] == start, "the first frame is stamped with the /clock time it was published at"
    assert all(s <= clock for s in stamps), "a frame ran ahead of /clock"
    assert len(stamps) == 13  # frames at 0, 33.3 .. 400 ms: 13 of them
    assert np.diff(stamps).tolist() == np.diff(recording.times_ns[:13]).tolist()


def test_a_ros2_bag_frame_of_the_wrong_size_is_refused_and_counted_and_the_rest_plays(
    processes, listener: Listener, tmp_path: Path
) -> None:
    frames = [pattern_frame(i, seed=5) for i in range(10)]
    frames[4] = pattern_frame(4, height=24, width=32, seed=5)  # a camera that changed size mid-stream
    recorded = write_ros2_bag(tmp_path / "run.mcap", frames, fps=20.0)
    bag, bag_times = recorded.path, recorded.times_ns
    log = tmp_path / "camera.log"
    proc = _start(processes, log, f"playback.path:={bag}", "playback.loop:=true")
    wait_until(lambda: listener.count(listener.images) >= 20, 60, "two passes of frames", log)
    good = [f for i, f in enumerate(frames) if i != 4]
    images = list(listener.images)
    times = [t for i, t in enumerate(bag_times) if i != 4]  # the refused frame's slot stays empty
    check_sequence(_indices(images, good), [_stamp(m) for m in images], times, 50 * MS)
    assert "refused frame #1: frame 4: colour is 32x24, the stream is 64x48" in log.read_text()

    def refusals() -> list[dict[str, str]]:
        values = [{kv.key: kv.value for kv in s.values} for s in listener.statuses()]
        return [v for v in values if int(v["frames_refused"]) >= 2]

    wait_until(refusals, 10, "diagnostics counting a refusal per pass", log)
    assert "colour is 32x24" in refusals()[-1]["last_error"]
    assert proc.poll() is None


def test_an_image_folder_plays_at_a_fixed_rate_and_the_node_outlives_its_end(
    processes, listener: Listener, tmp_path: Path
) -> None:
    frames = [pattern_frame(i, seed=6) for i in range(6)]
    folder = write_image_folder(tmp_path / "images", frames).path
    log = tmp_path / "looped.log"
    _start(processes, log, f"playback.path:={folder}", "playback.rate_hz:=20.0", "playback.loop:=true")
    wait_until(lambda: listener.count(listener.images) >= 12, 60, "two passes of images", log)
    images = list(listener.images)
    stamps = [_stamp(m) for m in images]
    check_sequence(_indices(images, frames), stamps, [k * 50 * MS for k in range(6)], 50 * MS)
    assert set(np.diff(stamps).tolist()) <= {k * 50 * MS for k in (1, 2)}  # 20 Hz, across seams too
    processes.stop()
    # Without loop, the end of the recording is reported and the node stays up.
    log = tmp_path / "once.log"
    proc = _start(processes, log, f"playback.path:={folder}", "playback.rate_hz:=20.0")
    wait_until(
        lambda: any("ended" in s.message for s in listener.statuses()), 60, "the end on /diagnostics", log
    )
    status = [s for s in listener.statuses() if "ended" in s.message][-1]
    assert status.level == b"\x00"
    assert {kv.key: kv.value for kv in status.values}["frames_published"] == "6"
    assert proc.poll() is None, "the node stays up after its recording ended"


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (["playback.path:=/nonexistent/run.db3"], "does not exist"),
        (["playback.path:={tmp}/notes.txt"], "unknown recording type '.txt'"),
        (["playback.path:={tmp}/fake.db3"], "not a readable rosbag2 SQLite file"),
        (["playback.path:={tmp}/cut.mcap"], "not a readable ROS 2 bag"),
        (["source:=playback"], "source=playback needs playback.path"),
        (["rgb_camera.color_profile:=640x480"], "rgb_camera.color_profile"),
    ],
)
def test_what_cannot_be_opened_stops_the_node_at_start_with_the_reason(
    processes, tmp_path: Path, params: list[str], reason: str
) -> None:
    (tmp_path / "notes.txt").write_text("not a recording")
    (tmp_path / "fake.db3").write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)
    bag = write_ros2_bag(tmp_path / "whole.mcap", [pattern_frame(i) for i in range(10)]).path
    (tmp_path / "cut.mcap").write_bytes(bag.read_bytes()[: bag.stat().st_size // 2])  # a recording cut short
    log = tmp_path / "camera.log"
    proc = _start(processes, log, *(p.format(tmp=tmp_path) for p in params))
    assert proc.wait(timeout=60) == 2, log_tail(log)
    assert reason in log.read_text(), log_tail(log)


@requires_pyrealsense2
def test_a_missing_device_is_reported_and_waited_for_then_the_node_exits(
    processes, listener: Listener, tmp_path: Path
) -> None:
    log = tmp_path / "camera.log"
    proc = _start(processes, log, "serial_no:=_000000000042", "wait_for_device_timeout:=8.0")
    wait_until(lambda: listener.statuses(), 30, "diagnostics", log)
    status = listener.statuses()[0]
    assert status.level == b"\x02", status.message
    assert "cannot open the camera" in status.message and "000000000042" not in SERIAL
    assert proc.wait(timeout=60) == 2, log_tail(log)
    assert "no RealSense within wait_for_device_timeout=8 s" in log.read_text()
