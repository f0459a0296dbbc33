"""RealSense sources over pyrealsense2: a live device chosen by serial number, and a recording played back.

Both run librealsense's pipeline: colour as RGB8 at the requested `WxHxFPS`, and with `depth` the depth
stream aligned to colour (`rs.align`), so one depth pixel belongs to the colour pixel at the same place.
Intrinsics come from the colour stream's profile, i.e. from the device's calibration (or the one the
recording stored). Frame times are the frames' own timestamps (device hardware clock or, with global
time on, the host's), in ms from librealsense, kept here in ns.

Recordings: librealsense >= 2.57 records rosbag2 SQLite files (`.db3`, with `/device_0/...` topics);
older recordings are ROS 1 `.bag` files, which librealsense still plays. Playback is not real time
(`set_real_time(False)`): librealsense hands over every frame in order and waits for us, and camera_node
paces them (camera_stream), so a slow consumer never loses frames and pacing can follow `/clock`.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from svrl_ros.camera_sources import (
    CameraFrame,
    CameraSource,
    CameraSourceError,
    FrameError,
    Intrinsics,
    StreamInfo,
)

# librealsense distortion models -> the names CameraInfo uses (realsense-ros does the same mapping).
_DISTORTION = {
    "none": "plumb_bob",
    "brown_conrady": "plumb_bob",
    "modified_brown_conrady": "plumb_bob",
    "inverse_brown_conrady": "plumb_bob",
    "kannala_brandt4": "equidistant",
    "ftheta": "equidistant",
}
_END_POLL_S = 0.05  # playback: how often to look whether the recording has ended while waiting


def _rs():
    # rclpy before pyrealsense2: the pyrealsense2 wheel carries its own copies of ROS 2 and Fast DDS
    # libraries and exports their symbols; loaded first, they stand in for the ROS wheels' ones and the
    # process crashes when it exits (seen with pyrealsense2 2.59 and the Kilted wheels). Loaded after
    # rclpy's, they stay private to librealsense.
    with contextlib.suppress(ImportError):
        import rclpy  # noqa: F401
    try:
        import pyrealsense2 as rs
    except ImportError as error:
        raise CameraSourceError(
            "RealSense devices and recordings need pyrealsense2: pip install 'svrl[realsense]' (x86_64; on "
            "aarch64 build librealsense with BUILD_PYTHON_BINDINGS)"
        ) from error
    return rs


def intrinsics_from_profile(profile) -> Intrinsics:
    """pyrealsense2 video stream profile -> Intrinsics (the device's calibration of that stream)."""
    i = profile.as_video_stream_profile().get_intrinsics()
    model = str(i.model).split(".")[-1]
    return Intrinsics(
        int(i.width),
        int(i.height),
        float(i.fx),
        float(i.fy),
        float(i.ppx),
        float(i.ppy),
        _DISTORTION.get(model, "plumb_bob"),
        tuple(float(c) for c in i.coeffs),
    )


def color_array(frame) -> np.ndarray:
    """A colour frame as uint8 (H, W, 3) RGB (a copy: librealsense reuses its buffers)."""
    rs = _rs()
    fmt = frame.get_profile().format()
    data = np.asanyarray(frame.get_data())
    if fmt == rs.format.rgb8:
        return np.array(data, dtype=np.uint8, copy=True)
    if fmt == rs.format.bgr8:
        return np.ascontiguousarray(data[:, :, ::-1])
    if fmt == rs.format.rgba8:
        return np.ascontiguousarray(data[:, :, :3])
    if fmt == rs.format.bgra8:
        return np.ascontiguousarray(data[:, :, 2::-1])
    raise FrameError(f"colour format {fmt} is not supported (record rgb8, bgr8, rgba8 or bgra8)")


class _PipelineSource(CameraSource):
    """What live and playback share: a started pipeline, optional alignment, frame conversion."""

    def __init__(self, depth: bool) -> None:
        self.depth = depth
        self._pipeline = None
        self._align = None
        self._info: StreamInfo | None = None
        self._held = self._later = None  # framesets waiting for their depth / their turn (see _take)
        self._emitted = -1

    def _start(self, config, description: str, live: bool):
        rs = _rs()
        pipeline = rs.pipeline()
        try:
            if not live:
                # Not real time *before* the pipeline starts: set afterwards, the first frames are already
                # played (and dropped) in real time. The pipeline starts the device the config resolved.
                resolved = config.resolve(rs.pipeline_wrapper(pipeline))
                resolved.get_device().as_playback().set_real_time(False)
            profile = pipeline.start(config)
        except RuntimeError as error:
            raise CameraSourceError(f"{description}: {error}") from error
        self._pipeline = pipeline
        color = profile.get_stream(rs.stream.color)
        intrinsics = intrinsics_from_profile(color)
        has_depth = False
        depth_scale = 0.001
        if self.depth:
            streams = {s.stream_type() for s in profile.get_streams()}
            has_depth = rs.stream.depth in streams
            if has_depth:
                self._align = rs.align(rs.stream.color)
                for sensor in profile.get_device().query_sensors():
                    if sensor.is_depth_sensor():
                        depth_scale = float(sensor.as_depth_sensor().get_depth_scale())
        self._info = StreamInfo(
            intrinsics.width,
            intrinsics.height,
            float(color.fps()),
            intrinsics,
            description,
            live=live,
            has_depth=has_depth,
            depth_scale_m=depth_scale,
        )
        return profile

    def _frame(self, frames, with_depth: bool = True) -> CameraFrame:
        if self._align is not None and with_depth:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            raise FrameError("a frameset without a colour frame")
        depth = None
        if self._align is not None and with_depth:
            depth_frame = frames.get_depth_frame()
            if depth_frame:
                depth = np.array(np.asanyarray(depth_frame.get_data()), dtype=np.uint16, copy=True)
        return CameraFrame(
            color_array(color),
            round(color.get_timestamp() * 1e6),
            depth=depth,
            index=int(color.get_frame_number()),
            extras={"domain": str(color.get_frame_timestamp_domain()).split(".")[-1]},
        )

    def _take(self, frames) -> CameraFrame | None:
        """One frame per colour frame, with the depth taken at the same time (None: wait for more).

        librealsense's syncer may hand the same colour frame out twice, first with the previous depth
        frame, then with its own (seen in playback). A colour frame is held until its own depth arrives
        (timestamps within half a frame period); if the next colour frame comes first, the held one
        goes out without depth rather than with the wrong one.
        """
        if self._align is None:
            return self._frame(frames)
        color, depth = frames.get_color_frame(), frames.get_depth_frame()
        if not color:
            return None  # a depth frame on its own (the syncer's output when colour lags): wait for colour
        number = int(color.get_frame_number())
        if number == self._emitted:
            return None
        half_period_ms = 500.0 / max(self._info.fps, 1.0)  # type: ignore[union-attr]
        if depth and abs(depth.get_timestamp() - color.get_timestamp()) <= half_period_ms:
            held, self._held = self._held, None
            self._emitted = number
            if held is not None and int(held.get_color_frame().get_frame_number()) != number:
                self._later = frames  # the older held frame goes first, without depth
                self._later.keep()
                return self._frame(held, with_depth=False)
            return self._frame(frames)
        frames.keep()
        if self._held is not None and int(self._held.get_color_frame().get_frame_number()) != number:
            out, self._held = self._held, frames
            return self._frame(out, with_depth=False)
        self._held = frames
        return None

    def _pending(self) -> CameraFrame | None:
        """A frame `_take` decided on but has not returned yet, or (at the end) the one it still holds."""
        if self._later is not None:
            later, self._later = self._later, None
            return self._frame(later)
        return None

    def _flush(self) -> CameraFrame | None:
        held, self._held = self._held, None
        if held is not None:
            self._emitted = int(held.get_color_frame().get_frame_number())
            return self._frame(held, with_depth=False)
        return None

    def close(self) -> None:
        if self._pipeline is not None:
            with contextlib.suppress(RuntimeError):  # already stopped (device gone)
                self._pipeline.stop()
            self._pipeline = None
        self._align = self._held = self._later = None
        self._emitted = -1


class RealSenseLive(_PipelineSource):
    """A connected RealSense, chosen by serial number (empty: the first one found)."""

    live = True

    def __init__(self, serial_no: str, width: int, height: int, fps: float, depth: bool = False) -> None:
        super().__init__(depth)
        # realsense-ros accepts `_<digits>` so that YAML does not turn the serial into an integer.
        self.serial_no = serial_no.lstrip("_")
        self.width, self.height, self.fps = width, height, int(fps)

    def open(self) -> StreamInfo:
        rs = _rs()
        serials = [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]
        if not serials:
            raise CameraSourceError("no RealSense device is connected")
        if self.serial_no and self.serial_no not in serials:
            raise CameraSourceError(
                f"no RealSense with serial number {self.serial_no} (connected: {serials})"
            )
        config = rs.config()
        if self.serial_no:
            config.enable_device(self.serial_no)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        if self.depth:
            config.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
        serial = self.serial_no or serials[0]
        self._start(config, f"RealSense {serial} ({self.width}x{self.height}x{self.fps})", live=True)
        return self._info  # type: ignore[return-value]

    def read(self, timeout_s: float) -> CameraFrame:
        if self._pipeline is None:
            raise CameraSourceError("read before open")
        deadline = time.monotonic() + timeout_s
        while True:
            pending = self._pending()
            if pending is not None:
                return pending
            remaining_ms = max(1, round((deadline - time.monotonic()) * 1000))
            try:
                ok, frames = self._pipeline.try_wait_for_frames(remaining_ms)
            except RuntimeError as error:  # device disconnected while waiting
                raise CameraSourceError(f"{self._info.description}: {error}") from error
            if not ok:
                raise CameraSourceError(f"{self._info.description}: no frame within {timeout_s:g} s")
            frame = self._take(frames)
            if frame is not None:
                return frame


class RealSensePlayback(_PipelineSource):
    """A RealSense recording (.db3 from librealsense >= 2.57, or an older .bag), every frame in order."""

    def __init__(self, path: Path, depth: bool = False) -> None:
        super().__init__(depth)
        self.path = Path(path)
        self._playback = None

    def open(self) -> StreamInfo:
        rs = _rs()
        if not self.path.is_file():
            raise CameraSourceError(f"RealSense recording {self.path} does not exist")
        config = rs.config()
        config.enable_device_from_file(str(self.path), repeat_playback=False)
        config.enable_stream(rs.stream.color)
        if self.depth and rs.stream.depth in self._recorded_streams():
            config.enable_stream(rs.stream.depth)  # not every recording has depth: ask only when it has
        profile = self._start(config, f"RealSense recording {self.path}", live=False)
        self._playback = profile.get_device().as_playback()
        return self._info  # type: ignore[return-value]

    def _recorded_streams(self) -> set:
        rs = _rs()
        context = rs.context()
        try:
            device = context.load_device(str(self.path))
        except RuntimeError as error:
            raise CameraSourceError(f"RealSense recording {self.path}: {error}") from error
        try:
            return {p.stream_type() for s in device.query_sensors() for p in s.get_stream_profiles()}
        finally:
            context.unload_device(str(self.path))

    def read(self, timeout_s: float) -> CameraFrame | None:
        """The next frame, or None once librealsense says the recording has stopped."""
        rs = _rs()
        if self._pipeline is None:
            raise CameraSourceError("read before open")
        deadline = time.monotonic() + timeout_s
        while True:
            pending = self._pending()
            if pending is not None:
                return pending
            ok, frames = self._pipeline.try_wait_for_frames(round(_END_POLL_S * 1000))
            if ok:
                frame = self._take(frames)
                if frame is not None:
                    return frame
                continue
            if self._playback.current_status() == rs.playback_status.stopped:
                return self._flush()
            if time.monotonic() > deadline:
                raise CameraSourceError(f"{self._info.description}: no frame within {timeout_s:g} s")
