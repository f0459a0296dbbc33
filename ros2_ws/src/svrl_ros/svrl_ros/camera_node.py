"""camera_node: a RealSense camera, or a recording played as one, on realsense-ros v4 topics.

One node per camera (the wrist camera is a second instance). What it publishes, relative to the launch
namespace, with `prefix = <camera_namespace>/<camera_name>` (realsense-ros defaults: `camera/camera`):

    <prefix>/color/image_raw                       sensor_msgs/Image rgb8
    <prefix>/color/camera_info                     sensor_msgs/CameraInfo (the device's intrinsics)
    <prefix>/aligned_depth_to_color/image_raw      sensor_msgs/Image 16UC1 (align_depth.enable)
    <prefix>/aligned_depth_to_color/camera_info
    /diagnostics                                   one status per camera, every diagnostics_period

Frames are `<frame_id_prefix>_color_optical_frame` (the prefix defaults to camera_name; aligned depth is
in the colour frame, as realsense-ros puts it).

Sources (parameter `playback.path`; empty = a live device):
- a live RealSense, chosen by `serial_no`, colour at `rgb_camera.color_profile` (`WxHxFPS`);
- a RealSense recording (`.db3` of librealsense >= 2.57, or `.bag`), a ROS 2 bag (`.db3`, `.mcap`, or its
  folder), a video, or a folder of images, at the recorded rate or at `playback.rate_hz`, looping with
  `playback.loop`.

Start-up: a recording that cannot be opened (missing, wrong type, damaged) stops the node at once with
exit code 2 and says why: nothing it could do later would fix the file. A live device that is not there
is waited for, with back-off, reported on /diagnostics, for `wait_for_device_timeout` seconds (-1 = for
ever, as realsense-ros does); then exit code 2. After start nothing stops the node: a device that
disappears is reconnected with back-off, frames of the wrong size are refused and counted, a recording
that breaks off is reported; all on /diagnostics. Stamps and pacing: see camera_stream.

    python -m svrl_ros.camera_node --ros-args -p playback.path:=run.db3 -p playback.loop:=true
"""

from __future__ import annotations

import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from svrl_ros import topics
from svrl_ros.camera_sources import (
    DEFAULT_FOVY_DEG,
    FORMATS,
    CameraFrame,
    CameraSourceError,
    SourceConfig,
    StreamInfo,
    open_source,
    parse_profile,
)
from svrl_ros.camera_stream import ERROR, Backoff, CameraStream, StreamStatus
from svrl_ros.conversions import (
    MessageError,
    depth_image_msg,
    image_msg,
    intrinsics_camera_info_msg,
    nanoseconds_to_stamp,
)
from svrl_ros.node_runner import BAD_CONFIGURATION, FatalError, run_node

LEVELS = {0: DiagnosticStatus.OK, 1: DiagnosticStatus.WARN, 2: DiagnosticStatus.ERROR}
SOURCES = ("auto", "live", "playback")
IMAGE_QOS_DEPTH = 10  # reliable, volatile: best-effort (sensor-data) subscribers match it too


class CameraNodeError(RuntimeError):
    """The node cannot start; the message says which parameter or file and why."""


def topic_prefix(camera_namespace: str, camera_name: str) -> str:
    """realsense-ros v4 names topics `/<camera_namespace>/<camera_name>/...`; ours are relative to the launch
    namespace, so the whole graph can be namespaced (topics.MAIN_CAMERA_IMAGE is `camera/camera/...`)."""
    return "/".join(p for p in (camera_namespace.strip("/"), camera_name.strip("/")) if p)


class CameraNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__("camera", **node_kwargs)
        # What destroy_node needs exists before anything can fail (rclpy destroys a half-built node too).
        self._stop = threading.Event()
        self._tick = threading.Condition()
        self._thread: threading.Thread | None = None
        self._source = self._info = None
        self._declare_parameters()
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        self._prefix = topic_prefix(p("camera_namespace"), p("camera_name"))
        frame_prefix = p("frame_id_prefix") or p("camera_name")
        self._color_frame = f"{frame_prefix}_color_optical_frame"
        self._config = self._source_config()
        self._status = StreamStatus()
        self._sim_time = bool(p("use_sim_time"))
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=Duration(nanoseconds=1), min_backward=None, on_clock_change=True),
            post_callback=self._on_time_jump,
        )
        self.fatal: str | None = None

        self._color_pub = self.create_publisher(Image, f"{self._prefix}/color/image_raw", IMAGE_QOS_DEPTH)
        self._color_info_pub = self.create_publisher(
            CameraInfo, f"{self._prefix}/color/camera_info", IMAGE_QOS_DEPTH
        )
        self._depth_pub = self._depth_info_pub = None
        if self._config.depth:
            self._depth_pub = self.create_publisher(
                Image, f"{self._prefix}/aligned_depth_to_color/image_raw", IMAGE_QOS_DEPTH
            )
            self._depth_info_pub = self.create_publisher(
                CameraInfo, f"{self._prefix}/aligned_depth_to_color/camera_info", IMAGE_QOS_DEPTH
            )
        self._diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)

        # A recording is opened here: a wrong path or file stops the node now, with the reason.
        if self._config.path:
            try:
                self._source = open_source(self._config)
                self._info = self._source.open()
            except CameraSourceError as error:
                raise CameraNodeError(f"cannot play {self._config.path}: {error}") from error
        self._stream = CameraStream(
            lambda: open_source(self._config),
            self._publish,
            self._now_ns,
            self._wait_until,
            lambda seconds: not self._stop.wait(seconds),
            loop=p("playback.loop"),
            rate_hz=p("playback.rate_hz"),
            frame_timeout_s=p("frame_timeout_s"),
            max_lag_s=p("max_lag_s"),
            backoff=Backoff(0.5, p("reconnect_backoff_max_s")),
            status=self._status,
            logger=self.get_logger(),
        )
        self._started_s = time.monotonic()
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(p("diagnostics_period"), self._publish_diagnostics, clock=steady)
        self._thread = threading.Thread(target=self._run_stream, name="camera_stream", daemon=True)
        what = (
            self._info.description if self._info else f"a live RealSense {self._config.serial_no or '(any)'}"
        )
        self.get_logger().info(f"camera_node: {what} -> {self._prefix}/color/image_raw")

    def _declare_parameters(self) -> None:
        def declare(name, default, description, **descriptor) -> None:
            self.declare_parameter(name, default, ParameterDescriptor(description=description, **descriptor))

        def positive(high: float) -> list[FloatingPointRange]:
            return [FloatingPointRange(from_value=0.001, to_value=high)]

        declare("camera_name", "camera", "realsense-ros: second part of the topic prefix", read_only=True)
        declare("camera_namespace", "camera", "realsense-ros: first part of the topic prefix", read_only=True)
        declare(
            "frame_id_prefix",
            "",
            "frame ids are <prefix>_color_optical_frame (empty: camera_name)",
            read_only=True,
        )
        declare(
            "serial_no",
            "",
            "live: serial number of the device (empty: the first found); `_123` is read as `123`, and a "
            "serial YAML read as a number is taken as its digits",
            read_only=True,
            dynamic_typing=True,
        )
        declare("rgb_camera.color_profile", "640x480x30", "live: colour WxHxFPS", read_only=True)
        declare(
            "align_depth.enable", False, "publish depth aligned to colour (RealSense sources)", read_only=True
        )
        declare(
            "source",
            "auto",
            f"one of {SOURCES}: auto = playback when playback.path is set, else live; playback with no path is "
            "an error (profiles that must not fall back to a device say so)",
            read_only=True,
        )
        declare(
            "playback.path", "", "recording to play instead of a live device (empty: live)", read_only=True
        )
        declare("playback.format", "auto", f"one of {FORMATS}; auto reads the file to decide", read_only=True)
        declare("playback.loop", False, "start the recording again when it ends", read_only=True)
        declare(
            "playback.rate_hz",
            0.0,
            "frames per second of playback (0: the recorded timing; image folders then play at 30)",
            read_only=True,
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1000.0)],
        )
        declare(
            "playback.topic",
            "",
            "ROS 2 bag: image topic to play (empty: this camera's, or the only one)",
            read_only=True,
        )
        declare(
            "playback.fovy_deg",
            DEFAULT_FOVY_DEG,
            "vertical field of view for camera_info of sources without intrinsics (videos, images, bags "
            "without camera_info); default: RealSense D435 colour",
            read_only=True,
            floating_point_range=[FloatingPointRange(from_value=1.0, to_value=179.0)],
        )
        declare(
            "frame_timeout_s",
            5.0,
            "live: no frame for this long means the device is lost (reconnect)",
            read_only=True,
            floating_point_range=positive(600.0),
        )
        declare(
            "reconnect_backoff_max_s",
            8.0,
            "longest wait between reconnect attempts (they start at 0.5 s and double)",
            read_only=True,
            floating_point_range=[FloatingPointRange(from_value=0.5, to_value=600.0)],
        )
        declare(
            "wait_for_device_timeout",
            -1.0,
            "live: seconds to wait for the device at start before exiting (-1: for ever)",
            read_only=True,
        )
        declare(
            "max_lag_s",
            0.5,
            "a stream further than this behind the node clock is re-anchored (see camera_stream)",
            read_only=True,
            floating_point_range=positive(60.0),
        )
        declare(
            "diagnostics_period",
            1.0,
            "seconds between /diagnostics messages",
            floating_point_range=positive(60.0),
        )

    def _source_config(self) -> SourceConfig:
        p = lambda name: self.get_parameter(name).value  # noqa: E731
        try:
            width, height, fps = parse_profile(p("rgb_camera.color_profile"))
        except ValueError as error:
            raise CameraNodeError(f"parameter rgb_camera.color_profile: {error}") from error
        source, path = p("source"), p("playback.path")
        if source not in SOURCES:
            raise CameraNodeError(f"parameter source={source!r} must be one of {SOURCES}")
        if source == "playback" and not path:
            raise CameraNodeError(
                "source=playback needs playback.path (a recording, a video or an image folder)"
            )
        if source == "live" and path:
            raise CameraNodeError(f"source=live and playback.path={path!r} contradict each other")
        if p("playback.format") not in FORMATS:
            raise CameraNodeError(
                f"parameter playback.format={p('playback.format')!r} must be one of {FORMATS}"
            )
        return SourceConfig(
            path=p("playback.path"),
            format=p("playback.format"),
            serial_no=str(p("serial_no")),
            width=width,
            height=height,
            fps=fps,
            depth=p("align_depth.enable"),
            topic=p("playback.topic"),
            default_topic=f"/{self.get_namespace().strip('/')}/{self._prefix}/color/image_raw".replace(
                "//", "/"
            ),
            rate_hz=p("playback.rate_hz"),
            fovy_deg=p("playback.fovy_deg"),
        )

    # ---------------------------------------------------------------------------------------- clock
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_time_jump(self, _jump) -> None:
        with self._tick:
            self._tick.notify_all()

    def _wait_until(self, due_ns: int) -> bool:
        """Block until the node clock reaches `due_ns` (False if the node stops first). Under sim time
        every `/clock` message wakes it (a jump callback), so playback follows the simulator."""
        while not self._stop.is_set():
            remaining_s = (due_ns - self._now_ns()) / 1e9
            if remaining_s <= 0:
                return True
            if self._sim_time:
                with self._tick:
                    self._tick.wait(min(remaining_s, 0.1))
            else:
                self._stop.wait(min(remaining_s, 0.1))
        return False

    # ---------------------------------------------------------------------------------------- stream
    def start(self) -> None:
        self._thread.start()  # type: ignore[union-attr]

    def _run_stream(self) -> None:
        try:
            self._stream.run(self._stop, self._source, self._info)
        except Exception as error:  # a bug, not a camera fault: say so, loudly, and stay visible
            self._status.set(ERROR, f"camera stream stopped by an unexpected error: {error!r}", repr(error))
            self.get_logger().error(f"camera stream stopped by an unexpected error: {error!r}")
            raise

    def _publish(self, frame: CameraFrame, stamp_ns: int, info: StreamInfo) -> None:
        if not self.context.ok():
            return
        stamp = nanoseconds_to_stamp(stamp_ns)
        i = info.intrinsics
        camera_info = intrinsics_camera_info_msg(
            i.width,
            i.height,
            (i.fx, i.fy, i.ppx, i.ppy),
            i.distortion_model,
            i.coeffs,
            stamp,
            self._color_frame,
        )
        try:
            self._color_pub.publish(image_msg(frame.color, stamp, self._color_frame))
            self._color_info_pub.publish(camera_info)
            if self._depth_pub is not None and frame.depth is not None:
                self._depth_pub.publish(depth_image_msg(frame.depth, stamp, self._color_frame))
                self._depth_info_pub.publish(camera_info)
        except MessageError as error:  # check_frame let it through: a bug, reported, not fatal
            self.get_logger().error(f"cannot publish frame {frame.index}: {error}")
        except Exception:
            if self.context.ok():
                raise  # else: shutting down while a frame was in flight; nothing is lost

    # ---------------------------------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        timeout = self.get_parameter("wait_for_device_timeout").value
        with self._status.lock:
            never_opened = self._status.passes == 0
        if (
            not self._config.path
            and never_opened
            and timeout >= 0
            and time.monotonic() - self._started_s > timeout
        ):
            self.fatal = (
                f"no RealSense within wait_for_device_timeout={timeout:g} s: {self._status.last_error}"
            )
        values = self._status.snapshot()
        status = DiagnosticStatus()
        status.level = LEVELS[int(values.pop("level"))]
        status.name = f"{self.get_name()}: {self._prefix}"
        status.hardware_id = self._config.path or f"realsense {self._config.serial_no or 'any'}"
        status.message = values.pop("message")
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diag_pub.publish(array)

    def destroy_node(self) -> None:
        self._stop.set()
        with self._tick:
            self._tick.notify_all()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5.0)
        if self._source is not None:
            self._source.close()
        super().destroy_node()


def _spin(executor, node: CameraNode) -> int:
    """Start the camera thread, spin until Ctrl-C or until the node gives up waiting for its device."""
    node.start()
    while rclpy.ok() and node.fatal is None:
        executor.spin_once(timeout_sec=0.5)
    if node.fatal is not None:
        node.get_logger().fatal(node.fatal)
        return 2
    return 0


def main(args: list[str] | None = None) -> None:
    code = run_node(
        CameraNode,
        "camera_node",
        args=args,
        fatal=(FatalError((CameraNodeError,)), BAD_CONFIGURATION),
        spin=_spin,
    )
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
