"""numpy <-> ROS message conversions, kept in one place because the fast path is not the obvious one.

Assigning a numpy array to a sequence field costs tens of milliseconds (rclpy converts element by
element); an `array.array` built from the raw bytes takes microseconds.
"""

from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import CameraInfo, Image, JointState


def seconds_to_duration(seconds: float) -> Duration:
    nanoseconds = round(seconds * 1e9)
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def duration_to_seconds(duration: Duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


def float32_sequence(values: np.ndarray) -> array.array:
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    out = array.array("f")
    out.frombytes(flat.tobytes())
    return out


class MessageError(ValueError):
    """A message that cannot be used as it is; the text says what was wrong, for the log and diagnostics."""


RGB8 = "rgb8"


def image_msg(image: np.ndarray, stamp, frame_id: str) -> Image:
    """uint8[H, W, 3] RGB -> sensor_msgs/Image (rgb8), without the slow per-element copy."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise MessageError(f"image must be uint8[H, W, 3], got {image.dtype} {image.shape}")
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = RGB8
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(image).tobytes()
    return msg


def image_from_msg(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8 or bgr8, any row padding) -> uint8[H, W, 3] RGB; anything else is refused."""
    if msg.encoding not in (RGB8, "bgr8"):
        raise MessageError(f"image encoding {msg.encoding!r} is not rgb8 or bgr8")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MessageError(f"image has no pixels ({w}x{h})")
    if step < 3 * w:
        raise MessageError(f"image step {step} is shorter than a row of {w} rgb pixels")
    buffer = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if buffer.size != h * step:
        raise MessageError(f"image data has {buffer.size} bytes, expected height x step = {h * step}")
    image = buffer.reshape(h, step)[:, : 3 * w].reshape(h, w, 3)
    if msg.encoding == "bgr8":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


def camera_info_msg(width: int, height: int, fovy_deg: float, stamp, frame_id: str) -> CameraInfo:
    """Pinhole intrinsics of a square-pixel camera with a vertical field of view, no distortion."""
    fy = 0.5 * height / np.tan(np.deg2rad(fovy_deg) / 2)
    fx, cx, cy = fy, (width - 1) / 2, (height - 1) / 2
    msg = CameraInfo()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def depth_image_msg(depth: np.ndarray, stamp, frame_id: str) -> Image:
    """uint16[H, W] depth (device units, RealSense: mm) -> sensor_msgs/Image 16UC1, as realsense-ros sends it."""
    if depth.dtype != np.uint16 or depth.ndim != 2:
        raise MessageError(f"depth must be uint16[H, W], got {depth.dtype} {depth.shape}")
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(depth.shape[0]), int(depth.shape[1])
    msg.encoding = "16UC1"
    msg.is_bigendian = 0
    msg.step = msg.width * 2
    msg.data = np.ascontiguousarray(depth, dtype="<u2").tobytes()
    return msg


def intrinsics_camera_info_msg(
    width: int,
    height: int,
    k: tuple[float, float, float, float],
    distortion_model: str,
    coeffs,
    stamp,
    frame_id: str,
) -> CameraInfo:
    """CameraInfo from calibrated intrinsics: k = (fx, fy, cx, cy), distortion `coeffs` as the model has them."""
    fx, fy, cx, cy = (float(v) for v in k)
    msg = CameraInfo()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = distortion_model
    msg.d = [float(c) for c in coeffs]
    msg.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def joint_state_msg(names, positions, velocities, stamp) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = [float(v) for v in positions]
    msg.velocity = [float(v) for v in velocities]
    return msg


def joint_positions(msg: JointState, names) -> np.ndarray:
    """Positions of `names`, looked up by name (order on the wire is free); missing or non-finite is refused.

    Extra joints are ignored: a real robot's joint_states often carries more than the arm.
    """
    if len(msg.position) != len(msg.name):
        raise MessageError(f"joint_states has {len(msg.name)} names but {len(msg.position)} positions")
    if len(set(msg.name)) != len(msg.name):
        raise MessageError(f"joint_states names a joint twice: {list(msg.name)}")
    index = {name: i for i, name in enumerate(msg.name)}
    missing = [n for n in names if n not in index]
    if missing:
        raise MessageError(f"joint_states lacks joints {missing} (has {list(msg.name)})")
    values = np.array([msg.position[index[n]] for n in names], dtype=np.float64)
    if not np.isfinite(values).all():
        raise MessageError(f"joint_states has non-finite positions for {list(names)}: {values.tolist()}")
    return values


def chunk_actions(msg) -> np.ndarray:
    """svrl_interfaces/ActionChunk -> float32[K, D], checking the declared shape against the data.

    Non-finite values are not refused here: the safety filter decides what to do with them, and says so.
    """
    k, d = int(msg.chunk_length), int(msg.dims)
    if k * d != len(msg.actions):
        raise MessageError(f"action chunk declares {k} x {d} but carries {len(msg.actions)} values")
    if d and len(msg.dim_names) not in (0, d):
        raise MessageError(f"action chunk has {len(msg.dim_names)} dim_names for {d} dims")
    return np.asarray(msg.actions, dtype=np.float32).reshape(k, d)


def stamp_to_nanoseconds(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def nanoseconds_to_stamp(nanoseconds: int) -> Time:
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)
