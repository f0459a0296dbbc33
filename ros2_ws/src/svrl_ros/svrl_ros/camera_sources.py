"""Where camera_node's frames come from: one small interface, one class per kind of source.

camera_node publishes the same topics whether the frames come from a live RealSense, a RealSense
recording, a ROS 2 bag, a video or a folder of images, so a policy can be tried on recorded data with no
hardware. Each source yields `CameraFrame`s (RGB colour, optional depth aligned to colour, and the time
the source gave the frame, on the source's own clock); pacing and stamping are the caller's job
(`camera_stream`). No ROS in this module: it is tested on its own.

Errors are of two kinds, because the caller reacts differently:
- `CameraSourceError`: the source cannot be opened or is lost (device unplugged, file unreadable).
  Reconnect (live) or report (recordings).
- `FrameError`: one frame is unusable (wrong size, undecodable); skip it, count it, keep going.

The RealSense and ROS 2 bag sources live in `realsense_source` and `rosbag_source` (their libraries
are optional extras); `open_source` picks one from a `SourceConfig`.
"""

from __future__ import annotations

import abc
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
FORMATS = ("auto", "realsense", "rosbag2", "images", "video")
# Colour field of view of a RealSense D435 (vertical, degrees): camera_info for sources without intrinsics.
DEFAULT_FOVY_DEG = 42.5


class CameraSourceError(RuntimeError):
    """The source cannot be opened, or was lost; the message says which source and why."""


class FrameError(ValueError):
    """One frame cannot be used (wrong size, cannot be decoded); the stream itself goes on."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the colour image, in the form CameraInfo carries them."""

    width: int
    height: int
    fx: float
    fy: float
    ppx: float
    ppy: float
    distortion_model: str = "plumb_bob"
    coeffs: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @classmethod
    def from_fovy(cls, width: int, height: int, fovy_deg: float) -> Intrinsics:
        """Square pixels, principal point at the centre, no distortion: what a source without calibration
        (a video, a folder of images) can honestly claim. The field of view is a parameter."""
        fy = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
        return cls(width, height, fy, fy, (width - 1) / 2, (height - 1) / 2)


@dataclass(frozen=True)
class StreamInfo:
    """What an opened source delivers. `fps` is nominal (0 when the source does not say)."""

    width: int
    height: int
    fps: float
    intrinsics: Intrinsics
    description: str
    live: bool = False
    has_depth: bool = False
    depth_scale_m: float = 0.001  # metres per depth unit (RealSense default: 1 mm)


@dataclass(frozen=True)
class CameraFrame:
    """One frame. `time_ns`: when the source says it was taken, on the source's clock (device clock or
    recording time); only differences between frames of one pass matter."""

    color: np.ndarray  # uint8 (H, W, 3) RGB
    time_ns: int
    depth: np.ndarray | None = None  # uint16 (H, W), aligned to colour
    index: int = 0  # position in the source (frame number of a recording)
    extras: dict = field(default_factory=dict)


class CameraSource(abc.ABC):
    """A source of colour frames. `open` before `read`; `close` always (also a context manager).

    `read` returns the next frame, or None at the end of a recording (a live source never ends: it
    raises CameraSourceError when no frame comes within `timeout_s`).
    """

    live: bool = False

    @abc.abstractmethod
    def open(self) -> StreamInfo: ...

    @abc.abstractmethod
    def read(self, timeout_s: float) -> CameraFrame | None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> CameraSource:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_frame(frame: CameraFrame, info: StreamInfo) -> CameraFrame:
    """The frame, if it has the stream's size and types; else FrameError saying what differs.

    A camera_info describes one size: a frame of another size would be published with the wrong
    intrinsics, so it is refused instead.
    """
    color = frame.color
    if color.dtype != np.uint8 or color.ndim != 3 or color.shape[2] != 3:
        raise FrameError(
            f"frame {frame.index}: colour must be uint8 (H, W, 3), got {color.dtype} {color.shape}"
        )
    if color.shape[:2] != (info.height, info.width):
        raise FrameError(
            f"frame {frame.index}: colour is {color.shape[1]}x{color.shape[0]}, "
            f"the stream is {info.width}x{info.height}"
        )
    if frame.depth is not None and (frame.depth.dtype != np.uint16 or frame.depth.shape != color.shape[:2]):
        raise FrameError(
            f"frame {frame.index}: depth must be uint16 {color.shape[:2]}, got {frame.depth.dtype} {frame.depth.shape}"
        )
    return frame


# ---------------------------------------------------------------------------------------------- choosing
@dataclass(frozen=True)
class SourceConfig:
    """What camera_node's parameters say about the source (see camera_node for the parameter names)."""

    path: str = ""  # empty: a live RealSense
    format: str = "auto"
    serial_no: str = ""
    width: int = 640
    height: int = 480
    fps: float = 30.0
    depth: bool = False
    topic: str = ""  # ROS 2 bag: the image topic ("" = the only one, or the camera's own)
    default_topic: str = ""
    rate_hz: float = 0.0  # images: frames per second (0 = 30); others: only pacing, see camera_stream
    fovy_deg: float = DEFAULT_FOVY_DEG


def parse_profile(text: str) -> tuple[int, int, int]:
    """realsense-ros `WxHxFPS` (also `W,H,FPS`) -> (width, height, fps); 0,0,0 is refused (we need a size)."""
    parts = text.replace(",", "x").lower().split("x")
    try:
        width, height, fps = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"profile {text!r} is not WxHxFPS, e.g. 640x480x30") from None
    if width <= 0 or height <= 0 or fps <= 0:
        raise ValueError(f"profile {text!r}: width, height and fps must be positive")
    return width, height, fps


def detect_format(path: Path) -> str:
    """The kind of recording at `path`, from what it contains (not only its name), or CameraSourceError.

    A `.db3` is either a RealSense recording (librealsense >= 2.57 writes rosbag2 SQLite files with
    `/file_version` and `/device_0/...` topics) or an ordinary ROS 2 bag; the topics table tells them apart.
    """
    if not path.exists():
        raise CameraSourceError(f"{path} does not exist")
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return "rosbag2"
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            return "images"
        raise CameraSourceError(f"{path} is a folder with neither a rosbag2 metadata.yaml nor images")
    suffix = path.suffix.lower()
    if suffix == ".bag":
        return "realsense"  # RealSense recordings before librealsense 2.57 (ROS 1 bag format)
    if suffix == ".mcap":
        return "rosbag2"
    if suffix == ".db3":
        return "realsense" if _is_realsense_db3(path) else "rosbag2"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        raise CameraSourceError(f"{path} is one image; give the folder that holds the image sequence")
    raise CameraSourceError(
        f"{path}: unknown recording type {suffix!r} (RealSense .bag/.db3, ROS 2 bag .db3/.mcap or folder, "
        f"video {'/'.join(VIDEO_SUFFIXES)}, or a folder of images)"
    )


def _is_realsense_db3(path: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            names = [row[0] for row in db.execute("SELECT name FROM topics")]
    except sqlite3.Error as error:
        raise CameraSourceError(f"{path} is not a readable rosbag2 SQLite file: {error}") from error
    return "/file_version" in names and any(n.startswith("/device_") for n in names)


def open_source(config: SourceConfig) -> CameraSource:
    """The source `config` names (not opened yet). Libraries are imported here, on first use."""
    if not config.path:
        from svrl_ros.realsense_source import RealSenseLive

        return RealSenseLive(config.serial_no, config.width, config.height, config.fps, config.depth)
    path = Path(config.path).expanduser()
    kind = config.format if config.format != "auto" else detect_format(path)
    if kind not in FORMATS:
        raise CameraSourceError(f"playback format {kind!r} is not one of {FORMATS}")
    if kind == "realsense":
        from svrl_ros.realsense_source import RealSensePlayback

        return RealSensePlayback(path, config.depth)
    if kind == "rosbag2":
        from svrl_ros.rosbag_source import Ros2BagSource

        return Ros2BagSource(path, config.topic, config.default_topic, config.fovy_deg)
    if kind == "video":
        return VideoSource(path, config.fovy_deg)
    return ImageFolderSource(path, config.rate_hz or 30.0, config.fovy_deg)


# ---------------------------------------------------------------------------------------------- opencv
def _cv2():
    try:
        import cv2
    except ImportError as error:
        raise CameraSourceError(
            "videos and image folders need OpenCV: pip install 'svrl[realsense]' (opencv-python-headless)"
        ) from error
    return cv2


class ImageFolderSource(CameraSource):
    """The images of a folder in name order, one every 1/fps seconds of recording time.

    The first image fixes the stream's size; an image of another size, or one OpenCV cannot decode, is a
    FrameError (skipped by the caller), never a crash.
    """

    def __init__(self, folder: Path, fps: float, fovy_deg: float = DEFAULT_FOVY_DEG) -> None:
        if fps <= 0:
            raise CameraSourceError(f"image folder {folder}: fps must be positive, got {fps}")
        self.folder, self.fps, self.fovy_deg = Path(folder), fps, fovy_deg
        self._files: list[Path] = []
        self._next = 0

    def open(self) -> StreamInfo:
        cv2 = _cv2()
        if not self.folder.is_dir():
            raise CameraSourceError(f"{self.folder} is not a folder")
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self._next = 0
        first = None
        for candidate in self._files:
            first = cv2.imread(str(candidate), cv2.IMREAD_COLOR)
            if first is not None:
                break
        if first is None:
            raise CameraSourceError(
                f"{self.folder} holds no image OpenCV can read ({len(self._files)} files)"
            )
        height, width = first.shape[:2]
        return StreamInfo(
            width,
            height,
            self.fps,
            Intrinsics.from_fovy(width, height, self.fovy_deg),
            f"image folder {self.folder} ({len(self._files)} images)",
        )

    def read(self, timeout_s: float) -> CameraFrame | None:
        if self._next >= len(self._files):
            return None
        index, path = self._next, self._files[self._next]
        self._next += 1
        bgr = _cv2().imread(str(path), _cv2().IMREAD_COLOR)
        if bgr is None:
            raise FrameError(f"{path.name}: not an image OpenCV can decode")
        color = np.ascontiguousarray(bgr[:, :, ::-1])
        return CameraFrame(color, round(index * 1e9 / self.fps), index=index, extras={"file": path.name})

    def close(self) -> None:
        self._files = []


class VideoSource(CameraSource):
    """A video file through OpenCV; frame times are the container's presentation times."""

    def __init__(self, path: Path, fovy_deg: float = DEFAULT_FOVY_DEG) -> None:
        self.path, self.fovy_deg = Path(path), fovy_deg
        self._capture = None
        self._index = 0
        self._fps = 0.0

    def open(self) -> StreamInfo:
        cv2 = _cv2()
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise CameraSourceError(f"{self.path}: OpenCV cannot open it as a video")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width <= 0 or height <= 0:
            capture.release()
            raise CameraSourceError(f"{self.path}: the video has no frame size")
        self._capture, self._index = capture, 0
        self._fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        return StreamInfo(
            width,
            height,
            self._fps,
            Intrinsics.from_fovy(width, height, self.fovy_deg),
            f"video {self.path} ({width}x{height} at {self._fps:g} fps)",
        )

    def read(self, timeout_s: float) -> CameraFrame | None:
        cv2 = _cv2()
        if self._capture is None:
            raise CameraSourceError(f"{self.path}: read before open")
        ok, bgr = self._capture.read()
        if not ok or bgr is None:
            return None
        index = self._index
        self._index += 1
        msec = float(self._capture.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
        if msec <= 0 and index > 0 and self._fps > 0:
            msec = index * 1000.0 / self._fps  # containers without presentation times
        return CameraFrame(np.ascontiguousarray(bgr[:, :, ::-1]), round(msec * 1e6), index=index)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


SourceFactory = Callable[[], CameraSource]
