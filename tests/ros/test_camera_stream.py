"""camera_node's sources and worker without DDS: every recording kind read back bit for bit, stamps mapped
as camera_stream documents, and the faults (device lost, wrong sizes, broken or wrong files) handled.

The worker runs on a fake clock that advances only when it waits, so these tests take no wall time
beyond the back-off sleeps they record (which are recorded, not slept).
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from svrl_ros.camera_sources import (
    CameraFrame,
    CameraSource,
    CameraSourceError,
    FrameError,
    Intrinsics,
    SourceConfig,
    StreamInfo,
    detect_format,
    open_source,
    parse_profile,
)
from svrl_ros.camera_stream import ERROR, OK, WARN, Backoff, CameraStream, LiveStamper, PlaybackSchedule

from tests.ros.camera_recordings import (
    INTRINSICS,
    pattern_frame,
    requires_pyrealsense2,
    write_image_folder,
    write_realsense_recording,
    write_ros2_bag,
)

MS = 1_000_000


def _read_all(config: SourceConfig) -> tuple[StreamInfo, list[CameraFrame]]:
    source = open_source(config)
    info = source.open()
    frames = []
    try:
        while (frame := source.read(5.0)) is not None:
            frames.append(frame)
    finally:
        source.close()
    return info, frames


# ---------------------------------------------------------------------------------------------- sources
@requires_pyrealsense2
def test_a_realsense_recording_plays_back_every_frame_bit_exact_with_its_times_and_intrinsics(
    tmp_path: Path,
) -> None:
    frames = [pattern_frame(i) for i in range(12)]
    recording = write_realsense_recording(tmp_path / "rs.db3", frames, fps=30, start_ms=5000.0)
    assert detect_format(recording.path) == "realsense"
    info, played = _read_all(SourceConfig(path=str(recording.path)))
    assert [f.index for f in played] == list(range(12))
    for frame, original in zip(played, frames, strict=True):
        assert np.array_equal(frame.color, original)
    assert [f.time_ns for f in played] == recording.times_ns
    i = info.intrinsics
    assert (i.width, i.height, info.fps) == (64, 48, 30.0)
    assert np.allclose([i.fx, i.fy, i.ppx, i.ppy], [INTRINSICS[k] for k in ("fx", "fy", "ppx", "ppy")])
    assert np.allclose(i.coeffs, INTRINSICS["coeffs"])
    assert i.distortion_model == "plumb_bob"


@requires_pyrealsense2
def test_depth_recorded_with_colour_comes_aligned_with_each_colour_frame(tmp_path: Path) -> None:
    frames = [pattern_frame(i) for i in range(6)]
    depth = [np.full((48, 64), 100 * (i + 1), np.uint16) for i in range(6)]
    recording = write_realsense_recording(tmp_path / "rgbd.db3", frames, depth=depth)
    info, played = _read_all(SourceConfig(path=str(recording.path), depth=True))
    assert info.has_depth
    assert [f.index for f in played] == list(range(6))  # one frame per colour frame, none twice
    for i, frame in enumerate(played):
        assert np.array_equal(frame.color, frames[i])
        assert frame.depth is not None and frame.depth.dtype == np.uint16
        assert int(np.median(frame.depth)) == 100 * (i + 1), (
            "a colour frame paired with another frame's depth"
        )


@pytest.mark.parametrize("suffix", [".mcap", ".db3"])
def test_a_ros2_bag_plays_its_image_topic_with_header_stamps_and_camera_info(
    tmp_path: Path, suffix: str
) -> None:
    frames = [pattern_frame(i, seed=3) for i in range(8)]
    recording = write_ros2_bag(tmp_path / f"bag{suffix}", frames, encoding="bgr8")
    assert detect_format(recording.path) == "rosbag2"
    info, played = _read_all(SourceConfig(path=str(recording.path)))
    assert all(np.array_equal(f.color, o) for f, o in zip(played, frames, strict=True))
    assert [f.time_ns for f in played] == recording.times_ns
    assert np.allclose([info.intrinsics.fx, info.intrinsics.ppy], [INTRINSICS["fx"], INTRINSICS["ppy"]])


def test_a_ros2_bag_with_several_image_topics_needs_one_named(tmp_path: Path) -> None:
    bag = write_ros2_bag(tmp_path / "other.mcap", [pattern_frame(0)], topic="/some/other/image_raw").path
    info, played = _read_all(SourceConfig(path=str(bag)))  # the only image topic: taken
    assert len(played) == 1 and info.width == 64
    with pytest.raises(CameraSourceError, match="no image topic '/camera/x'"):
        open_source(SourceConfig(path=str(bag), topic="/camera/x")).open()


def test_an_image_folder_plays_in_name_order_at_its_rate(tmp_path: Path) -> None:
    frames = [pattern_frame(i, seed=4) for i in range(5)]
    write_image_folder(tmp_path / "images", frames)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    info, played = _read_all(SourceConfig(path=str(tmp_path / "images"), rate_hz=10.0))
    assert all(np.array_equal(f.color, o) for f, o in zip(played, frames, strict=True))
    assert [f.time_ns for f in played] == [i * 100 * MS for i in range(5)]
    assert info.fps == 10.0 and info.intrinsics.width == 64


def test_a_video_plays_its_frames_at_their_presentation_times(tmp_path: Path) -> None:
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    flat = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(5)]  # flat colours survive JPEG
    for image in flat:
        writer.write(image)
    writer.release()
    assert detect_format(path) == "video"
    info, played = _read_all(SourceConfig(path=str(path)))
    assert (info.width, info.height, info.fps) == (64, 48, 20.0)
    assert len(played) == 5
    assert all(abs(int(f.color.mean()) - 40 * i) <= 2 for i, f in enumerate(played))
    assert [f.time_ns for f in played] == [i * 50 * MS for i in range(5)]


@requires_pyrealsense2
def test_wrong_files_are_refused_at_open_with_the_reason(tmp_path: Path) -> None:
    good = write_realsense_recording(tmp_path / "good.db3", [pattern_frame(i) for i in range(20)]).path
    cut = tmp_path / "cut.db3"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    text = tmp_path / "notes.db3"
    text.write_text("hello")
    fake_bag = tmp_path / "old.bag"
    fake_bag.write_bytes(b"\x00" * 1000)
    cases = {
        tmp_path / "missing.db3": "does not exist",
        cut: "malformed",
        text: "not a",
        fake_bag: "RealSense recording",
        tmp_path / "table.csv": "does not exist",
    }
    (tmp_path / "data.csv").write_text("1,2,3")
    cases[tmp_path / "data.csv"] = "unknown recording type '.csv'"
    for path, reason in cases.items():
        with pytest.raises(CameraSourceError, match=reason):
            open_source(SourceConfig(path=str(path))).open()


@pytest.mark.parametrize("suffix", [".mcap", ".db3"])
def test_a_cut_ros2_bag_is_refused_at_open_with_the_reason(tmp_path: Path, suffix: str) -> None:
    bag = write_ros2_bag(
        tmp_path / f"full{suffix}", [pattern_frame(i) for i in range(30)], with_info=False
    ).path
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(bag.read_bytes()[: bag.stat().st_size * 2 // 3])
    with pytest.raises(CameraSourceError, match=r"cut\.(mcap|db3) is not a readable") as error:
        open_source(SourceConfig(path=str(cut))).open()
    assert "magic" in str(error.value) or "malformed" in str(error.value)


def test_the_profile_parameter_is_realsense_ros_wxhxfps() -> None:
    assert parse_profile("640x480x30") == (640, 480, 30)
    assert parse_profile("1280,720,15") == (1280, 720, 15)
    for bad in ("640x480", "0x0x0", "axbxc"):
        with pytest.raises(ValueError, match="profile"):
            parse_profile(bad)


# ---------------------------------------------------------------------------------------------- timing
def test_playback_stamps_keep_the_recorded_spacing_from_the_first_frames_node_time() -> None:
    schedule = PlaybackSchedule()
    source_times = [5000 * MS + round(i * 1e9 / 30) for i in range(4)]
    stamps = [schedule.due_ns(t, now_ns=10_000 * MS) for t in source_times]
    assert stamps[0] == 10_000 * MS
    assert [b - a for a, b in itertools.pairwise(stamps)] == list(np.diff(source_times))
    schedule.new_pass()  # a loop: the next pass starts one frame period after the last stamp
    again = schedule.due_ns(source_times[0], now_ns=10_000 * MS)
    assert again == stamps[-1] + (stamps[-1] - stamps[-2])


def test_fixed_rate_playback_ignores_the_recorded_times() -> None:
    schedule = PlaybackSchedule(rate_hz=10.0)
    stamps = [schedule.due_ns(t, now_ns=1_000 * MS) for t in (0, 7 * MS, 500 * MS)]
    assert stamps == [1_000 * MS, 1_100 * MS, 1_200 * MS]


def test_playback_far_behind_the_clock_restarts_from_now_instead_of_bursting() -> None:
    schedule = PlaybackSchedule(max_lag_ns=500 * MS)
    schedule.due_ns(0, now_ns=1_000 * MS)
    assert schedule.due_ns(33 * MS, now_ns=1_020 * MS) == 1_033 * MS
    assert schedule.due_ns(66 * MS, now_ns=3_000 * MS) == 3_000 * MS  # the node was stalled for 2 s
    assert schedule.reanchors == 1
    assert schedule.due_ns(99 * MS, now_ns=3_001 * MS) == 3_033 * MS


def test_live_stamps_follow_the_device_clock_and_reanchor_when_it_drifts() -> None:
    stamper = LiveStamper(max_lag_ns=100 * MS)
    assert stamper.stamp(7 * MS, now_ns=1_000 * MS) == 1_000 * MS
    assert stamper.stamp(40 * MS, now_ns=1_045 * MS) == 1_033 * MS  # device spacing, 12 ms of transport
    assert stamper.reanchors == 0
    assert stamper.stamp(73 * MS, now_ns=1_300 * MS) == 1_300 * MS  # mapping fell behind by 234 ms
    assert stamper.reanchors == 1
    stamper.forget()  # a reconnected device restarts its clock
    assert stamper.stamp(0, now_ns=2_000 * MS) == 2_000 * MS


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


# ---------------------------------------------------------------------------------------------- the worker
INFO = StreamInfo(4, 2, 30.0, Intrinsics.from_fovy(4, 2, 40.0), "fake")


class FakeClock:
    """Node time that jumps to whatever the worker waits for."""

    def __init__(self, start_ns: int = 1_000 * MS) -> None:
        self.now = start_ns
        self.sleeps: list[float] = []

    def wait_until(self, ns: int) -> bool:
        self.now = max(self.now, ns)
        return True

    def sleep(self, seconds: float) -> bool:
        self.sleeps.append(seconds)
        return True


def _frame(i: int, height: int = 2, width: int = 4) -> CameraFrame:
    return CameraFrame(np.full((height, width, 3), i, np.uint8), i * 33 * MS, index=i)


class ScriptedSource(CameraSource):
    """Plays a script: frames, FrameErrors, CameraSourceErrors, or None (the end)."""

    def __init__(self, script: list, live: bool = False, open_error: str | None = None) -> None:
        self.script, self.live, self.open_error = list(script), live, open_error
        self.closed = False

    def open(self) -> StreamInfo:
        if self.open_error:
            raise CameraSourceError(self.open_error)
        return INFO

    def read(self, timeout_s: float):
        item = self.script.pop(0) if self.script else None
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.closed = True


def _run(sources: list[CameraSource], stop_after: int, **kwargs) -> tuple[list, CameraStream, FakeClock]:
    """Run a CameraStream over `sources` (one per open) until `stop_after` frames were published."""
    clock, stop, published = FakeClock(), threading.Event(), []
    pending = list(sources)

    def factory() -> CameraSource:
        if not pending:
            stop.set()
            return ScriptedSource([], open_error="no more sources in this test")
        return pending.pop(0)

    def publish(frame, stamp, info) -> None:
        published.append((frame.index, stamp))
        if len(published) >= stop_after:
            stop.set()

    def sleep(seconds: float) -> bool:
        clock.sleep(seconds)
        return not stop.is_set()

    stream = CameraStream(factory, publish, lambda: clock.now, clock.wait_until, sleep, **kwargs)
    thread = threading.Thread(target=stream.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30  # a hang guard; a stream that ended idles until stopped
    while thread.is_alive() and time.monotonic() < deadline and not stop.is_set():
        if any(word in stream.status.message for word in ("ended", "unreadable")):
            break
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the camera worker did not stop"
    return published, stream, clock


def test_a_lost_live_camera_is_reopened_with_growing_backoff_and_stamps_go_on() -> None:
    first = ScriptedSource([_frame(0), _frame(1), CameraSourceError("USB gone")], live=True)
    missing = [ScriptedSource([], live=True, open_error="no RealSense device is connected") for _ in range(3)]
    back = ScriptedSource([_frame(0), _frame(1)], live=True)
    published, stream, clock = _run([first, *missing, back], stop_after=4)
    assert [i for i, _ in published] == [0, 1, 0, 1]
    assert clock.sleeps[:4] == [0.5, 1.0, 2.0, 4.0]  # lost, then three failed opens, then back
    assert first.closed
    stamps = [s for _, s in published]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert stream.status.reconnects == 1 and stream.status.level == OK
    assert "no RealSense device" in stream.status.last_error


def test_frames_of_the_wrong_size_are_refused_and_counted_and_the_stream_goes_on() -> None:
    script = [_frame(0), _frame(1, height=3), FrameError("cannot decode"), _frame(3), None]
    published, stream, _ = _run([ScriptedSource(script)], stop_after=2)
    assert [i for i, _ in published] == [0, 3]
    assert stream.status.refused == 2
    assert stream.status.level == WARN and "refused 2 frame(s)" in stream.status.message


def test_a_recording_that_breaks_off_reports_an_error_and_stays_up() -> None:
    script = [_frame(0), _frame(1), CameraSourceError("cannot read past image 2: malformed")]
    published, stream, _ = _run([ScriptedSource(script)], stop_after=99)
    assert [i for i, _ in published] == [0, 1]
    assert stream.status.level == ERROR
    assert "recording unreadable after 2 frames" in stream.status.message


def test_a_looping_recording_starts_over_with_stamps_that_keep_increasing() -> None:
    passes = [ScriptedSource([_frame(0), _frame(1), _frame(2), None]) for _ in range(2)]
    published, stream, _ = _run(passes, stop_after=6, loop=True)
    assert [i for i, _ in published] == [0, 1, 2, 0, 1, 2]
    stamps = [s for _, s in published]
    assert np.diff(stamps).tolist() == [33 * MS] * 5  # the recorded spacing, across the loop too
    assert stream.status.passes == 2


def test_a_recording_without_loop_ends_and_says_so() -> None:
    published, stream, _ = _run([ScriptedSource([_frame(0), None])], stop_after=99)
    assert len(published) == 1
    assert stream.status.level == OK and "ended after 1 frames" in stream.status.message
