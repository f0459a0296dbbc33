"""A ROS 2 bag (a rosbag2 folder, or one `.db3` / `.mcap` file) as a camera source, read with `rosbags`.

`rosbags` is a pure-Python reader (PyPI), so a bag recorded on the robot (`ros2 bag record` of
realsense-ros topics) plays on any machine, no ROS install needed. One image topic is played:
`sensor_msgs/Image` (rgb8, bgr8, rgba8, bgra8, mono8) or `sensor_msgs/CompressedImage` (JPEG/PNG, decoded
with OpenCV). Intrinsics come from the `camera_info` next to the image topic when the bag has it, else
from a field of view (`Intrinsics.from_fovy`). A frame's time is its `header.stamp` (when it was taken),
or the bag's receive time for messages without one.

A bag that was cut short (copied while recording, disk full) is refused when opened: rosbags reads an
`.mcap`'s summary from its end and checks a SQLite file whole, so a cut file gives a clear "not a readable
ROS 2 bag" error (camera_node then exits at start with it). Damage further in ends the pass with a
CameraSourceError saying how far it got; one message that cannot be deserialised is a refused frame.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from svrl_ros.camera_sources import (
    DEFAULT_FOVY_DEG,
    CameraFrame,
    CameraSource,
    CameraSourceError,
    FrameError,
    Intrinsics,
    StreamInfo,
)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
INFO_TYPE = "sensor_msgs/msg/CameraInfo"


def _rosbags():
    try:
        from rosbags.rosbag2 import Reader
        from rosbags.typesys import Stores, get_typestore
    except ImportError as error:
        raise CameraSourceError("ROS 2 bags need rosbags: pip install 'svrl[realsense]'") from error
    return Reader, get_typestore(Stores.LATEST)


def image_array(msg, msgtype: str) -> np.ndarray:
    """A deserialised Image / CompressedImage -> uint8 (H, W, 3) RGB, or FrameError saying why not."""
    if msgtype.endswith("CompressedImage"):
        from svrl_ros.camera_sources import _cv2

        cv2 = _cv2()
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FrameError(f"compressed image ({msg.format!r}) cannot be decoded")
        return np.ascontiguousarray(bgr[:, :, ::-1])
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(msg.encoding)
    if channels is None:
        raise FrameError(f"image encoding {msg.encoding!r} is not one of rgb8, bgr8, rgba8, bgra8, mono8")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if h <= 0 or w <= 0 or step < w * channels or data.size != h * step:
        raise FrameError(f"image {w}x{h} step {step} ({msg.encoding}) does not fit its {data.size} bytes")
    pixels = data.reshape(h, step)[:, : w * channels].reshape(h, w, channels)
    if msg.encoding == "mono8":
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if msg.encoding.startswith("bgr"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])


def info_topic_for(image_topic: str) -> str:
    """`.../color/image_raw[/compressed]` -> `.../color/camera_info` (the realsense-ros / image_transport layout)."""
    base = image_topic.removesuffix("/compressed")
    return base.rsplit("/", 1)[0] + "/camera_info" if "/" in base else "camera_info"


class Ros2BagSource(CameraSource):
    def __init__(
        self, path: Path, topic: str = "", default_topic: str = "", fovy_deg: float = DEFAULT_FOVY_DEG
    ) -> None:
        self.path = Path(path)
        self.topic, self.default_topic, self.fovy_deg = topic, default_topic, fovy_deg
        self._reader = None
        self._typestore = None
        self._messages: Iterator | None = None
        self._first: CameraFrame | None = None
        self._read = 0

    def _choose_topic(self, connections) -> object:
        images = {c.topic: c for c in connections if c.msgtype in IMAGE_TYPES}
        wanted = [t for t in (self.topic, self.default_topic) if t]
        for topic in wanted:
            for candidate in (topic, "/" + topic.lstrip("/")):
                if candidate in images:
                    return images[candidate]
        if self.topic:
            raise CameraSourceError(
                f"{self.path}: no image topic {self.topic!r} (image topics: {sorted(images) or 'none'})"
            )
        if len(images) == 1:
            return next(iter(images.values()))
        raise CameraSourceError(
            f"{self.path}: {'no' if not images else 'several'} image topics ({sorted(images)}); "
            "name one with the playback.topic parameter"
        )

    def open(self) -> StreamInfo:
        Reader, typestore = _rosbags()
        self.close()
        try:
            reader = Reader(self.path)
            reader.open()
        except Exception as error:  # rosbags raises its own errors, sqlite3's and OSError alike
            raise CameraSourceError(f"{self.path} is not a readable ROS 2 bag: {error}") from error
        self._reader, self._typestore, self._read = reader, typestore, 0
        connection = self._choose_topic(reader.connections)
        self._connection = connection
        self._messages = iter(reader.messages(connections=[connection]))
        try:
            self._first = self._next_frame()
        except FrameError as error:
            raise CameraSourceError(
                f"{self.path}: the first image on {connection.topic} is unusable: {error}"
            ) from error
        if self._first is None:
            raise CameraSourceError(f"{self.path}: {connection.topic} has no messages")
        height, width = self._first.color.shape[:2]
        intrinsics = self._intrinsics(reader, connection.topic, width, height)
        count = getattr(connection, "msgcount", 0)
        return StreamInfo(
            width,
            height,
            0.0,
            intrinsics,
            f"ROS 2 bag {self.path}, {connection.topic} ({count} images, {width}x{height})",
        )

    def _intrinsics(self, reader, image_topic: str, width: int, height: int) -> Intrinsics:
        info_topic = info_topic_for(image_topic)
        infos = [c for c in reader.connections if c.topic == info_topic and c.msgtype == INFO_TYPE]
        for _conn, _t, raw in reader.messages(connections=infos) if infos else ():
            try:
                msg = self._typestore.deserialize_cdr(raw, INFO_TYPE)
            except Exception:  # a damaged camera_info: fall back to the field of view
                break
            if int(msg.width) == width and int(msg.height) == height:
                k = [float(v) for v in msg.k]
                return Intrinsics(
                    width,
                    height,
                    k[0],
                    k[4],
                    k[2],
                    k[5],
                    str(msg.distortion_model) or "plumb_bob",
                    tuple(float(v) for v in msg.d),
                )
            break
        return Intrinsics.from_fovy(width, height, self.fovy_deg)

    def _next_frame(self) -> CameraFrame | None:
        assert self._messages is not None
        try:
            item = next(self._messages, None)
        except Exception as error:  # a cut or damaged file: the pass ends here
            raise CameraSourceError(
                f"{self.path}: cannot read past image {self._read} of {self._connection.topic}: {error}"
            ) from error
        if item is None:
            return None
        _conn, bag_time_ns, raw = item
        index = self._read
        self._read += 1
        msgtype = self._connection.msgtype
        try:
            msg = self._typestore.deserialize_cdr(raw, msgtype)
        except Exception as error:
            raise FrameError(f"image {index}: cannot be deserialised as {msgtype}: {error}") from error
        stamp_ns = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        color = image_array(msg, msgtype)
        return CameraFrame(color, stamp_ns if stamp_ns > 0 else int(bag_time_ns), index=index)

    def read(self, timeout_s: float) -> CameraFrame | None:
        if self._reader is None:
            raise CameraSourceError("read before open")
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        return self._next_frame()

    def close(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):  # closing a damaged file: nothing more to save
                self._reader.close()
        self._reader, self._messages, self._first = None, None, None
