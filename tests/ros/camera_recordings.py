"""Recordings for camera_node's tests, made here with no camera attached.

- `write_realsense_recording`: pyrealsense2's software device (a device whose frames we hand it) under
  `rs.recorder`, which writes exactly the file a real RealSense recording is (librealsense >= 2.57:
  a rosbag2 SQLite `.db3` with `/device_0/...` topics), including the colour stream's intrinsics.
- `write_ros2_bag`: a ROS 2 bag of sensor_msgs/Image (+ CameraInfo) with rosbags' writer (.db3 or .mcap).
- `write_image_folder`: PNG files (lossless, so frames compare bit for bit).

Frames are deterministic functions of their index (`pattern_frame`) so a receiver can check each one.
"""

from __future__ import annotations

import importlib.util
import itertools
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

INTRINSICS = {
    "fx": 61.5,
    "fy": 62.25,
    "ppx": 31.75,
    "ppy": 23.5,
    "coeffs": [0.11, -0.02, 0.001, 0.0005, 0.003],
}
SERIAL = "012345678901"
# PyPI has pyrealsense2 for x86_64 only (pyproject's `realsense` extra skips it elsewhere).
requires_pyrealsense2 = pytest.mark.skipif(
    importlib.util.find_spec("pyrealsense2") is None, reason="pyrealsense2 is not installed (no wheel here)"
)


@dataclass(frozen=True)
class Recording:
    path: Path
    frames: list[np.ndarray]  # uint8 (H, W, 3) RGB, in order
    times_ns: list[int]  # the source time of each frame


def pattern_frame(index: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng((seed, index)).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_realsense_recording(
    path: Path,
    frames: list[np.ndarray],
    fps: int = 30,
    start_ms: float = 5000.0,
    depth: list[np.ndarray] | None = None,
    period_ms: float | None = None,
) -> Recording:
    """A RealSense recording (.db3) of `frames` (uint8 RGB, one size), timestamps start_ms + i * period_ms
    (default 1000 / fps; a real camera's period is rarely a whole fraction of a second).

    Written by a child process that never loads rclpy: pyrealsense2 imported before rclpy in one process
    makes it crash at exit (svrl_ros.realsense_source imports them in the safe order; a test process
    imports rclpy whenever it likes), and a crash at exit would fail a pytest run that passed.
    """
    period = period_ms or 1000.0 / fps
    inputs = path.with_name(path.name + ".frames.npz")
    arrays = {"color": np.stack(frames)}
    if depth is not None:
        arrays["depth"] = np.stack(depth)
    np.savez(inputs, **arrays)
    command = [
        sys.executable,
        "-m",
        "tests.ros.camera_recordings",
        str(inputs),
        str(path),
        str(fps),
        repr(start_ms),
        repr(period),
    ]
    done = subprocess.run(
        command, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120
    )
    inputs.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"writing {path} failed ({done.returncode}): {done.stderr[-2000:]}")
    times = [round((start_ms + i * period) * 1e6) for i in range(len(frames))]
    return Recording(path, [f.copy() for f in frames], times)


def _write_realsense_recording_here(
    path: Path, frames: np.ndarray, fps: int, start_ms: float, period_ms: float, depth: np.ndarray | None
) -> None:
    import pyrealsense2 as rs

    height, width = frames[0].shape[:2]
    device = rs.software_device()
    device.register_info(rs.camera_info.serial_number, SERIAL)
    device.register_info(rs.camera_info.name, "svrl test camera")
    color_sensor = device.add_sensor("RGB Camera")
    color_profile = color_sensor.add_video_stream(
        _video_stream(rs, rs.stream.color, rs.format.rgb8, 3, width, height, fps, 0)
    )
    depth_sensor = depth_profile = None
    if depth is not None:
        depth_sensor = device.add_sensor("Stereo Module")
        depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
        depth_profile = depth_sensor.add_video_stream(
            _video_stream(rs, rs.stream.depth, rs.format.z16, 2, width, height, fps, 1)
        )
        device.create_matcher(rs.matchers.default)
    recorder = rs.recorder(str(path), device)
    queue = rs.frame_queue(len(frames) * 2 + 4, keep_frames=True)
    color_sensor.open(color_profile)
    color_sensor.start(queue)
    if depth_sensor is not None:
        depth_sensor.open(depth_profile)
        depth_sensor.start(queue)
    for i, image in enumerate(frames):
        t = start_ms + i * period_ms
        color_sensor.on_video_frame(_software_frame(rs, image, 3, t, i, color_profile))
        if depth_sensor is not None:
            depth_sensor.on_video_frame(_software_frame(rs, depth[i], 2, t, i, depth_profile))
    for sensor in (color_sensor, depth_sensor):
        if sensor is not None:
            sensor.stop()
            sensor.close()
    del recorder  # the recorder writes and closes the file when it goes away


def _video_stream(rs, stream, fmt, bpp: int, width: int, height: int, fps: int, uid: int):
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = width, height
    intrinsics.fx, intrinsics.fy = INTRINSICS["fx"], INTRINSICS["fy"]
    intrinsics.ppx, intrinsics.ppy = INTRINSICS["ppx"], INTRINSICS["ppy"]
    intrinsics.model = rs.distortion.brown_conrady
    intrinsics.coeffs = list(INTRINSICS["coeffs"])
    video = rs.video_stream()
    video.type, video.index, video.uid = stream, 0, uid
    video.width, video.height, video.fps, video.bpp, video.fmt = width, height, fps, bpp, fmt
    video.intrinsics = intrinsics
    return video


def _software_frame(rs, pixels: np.ndarray, bpp: int, t_ms: float, number: int, profile):
    frame = rs.software_video_frame()
    frame.pixels = np.ascontiguousarray(pixels).tobytes()
    frame.bpp = bpp
    frame.stride = pixels.shape[1] * bpp
    frame.timestamp = t_ms
    frame.domain = rs.timestamp_domain.hardware_clock
    frame.frame_number = number
    frame.profile = profile.as_video_stream_profile()
    return frame


def write_ros2_bag(
    path: Path,
    frames: list[np.ndarray],
    topic: str = "/camera/camera/color/image_raw",
    fps: float = 30.0,
    start_ns: int = 1_700_000_000_000_000_000,
    with_info: bool = True,
    encoding: str = "rgb8",
) -> Recording:
    """A ROS 2 bag (one .db3 or .mcap file, by `path`'s suffix) of Image messages stamped start + i/fps."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    Image = store.types["sensor_msgs/msg/Image"]
    CameraInfo = store.types["sensor_msgs/msg/CameraInfo"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    RegionOfInterest = store.types["sensor_msgs/msg/RegionOfInterest"]
    plugin = StoragePlugin.MCAP if path.suffix == ".mcap" else StoragePlugin.SQLITE3
    times = []
    # rosbags writes a bag folder; a single-file bag is that folder's one storage file, moved out.
    folder = path.with_name(path.stem + "_bag")
    with Writer(folder, version=9, storage_plugin=plugin) as writer:
        image_conn = writer.add_connection(topic, Image.__msgtype__, typestore=store)
        info_topic = topic.rsplit("/", 1)[0] + "/camera_info"
        info_conn = (
            writer.add_connection(info_topic, CameraInfo.__msgtype__, typestore=store) if with_info else None
        )
        for i, image in enumerate(frames):
            stamp_ns = start_ns + round(i * 1e9 / fps)
            times.append(stamp_ns)
            header = Header(
                stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                frame_id="camera_color_optical_frame",
            )
            h, w = image.shape[:2]
            pixels = image[:, :, ::-1] if encoding == "bgr8" else image
            msg = Image(
                header=header,
                height=h,
                width=w,
                encoding=encoding,
                is_bigendian=0,
                step=w * 3,
                data=np.ascontiguousarray(pixels).reshape(-1),
            )
            writer.write(image_conn, stamp_ns + 1000, store.serialize_cdr(msg, Image.__msgtype__))
            if info_conn is not None:
                info = CameraInfo(
                    header=header,
                    height=h,
                    width=w,
                    distortion_model="plumb_bob",
                    d=np.array(INTRINSICS["coeffs"], dtype=np.float64),
                    k=np.array(
                        [
                            INTRINSICS["fx"],
                            0,
                            INTRINSICS["ppx"],
                            0,
                            INTRINSICS["fy"],
                            INTRINSICS["ppy"],
                            0,
                            0,
                            1,
                        ],
                        dtype=np.float64,
                    ),
                    r=np.eye(3).reshape(-1),
                    p=np.zeros(12),
                    binning_x=0,
                    binning_y=0,
                    roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
                )
                writer.write(info_conn, stamp_ns + 1000, store.serialize_cdr(info, CameraInfo.__msgtype__))
    (storage,) = [p for p in folder.iterdir() if p.suffix in (".db3", ".mcap")]
    storage.rename(path)
    for leftover in folder.iterdir():
        leftover.unlink()
    folder.rmdir()
    return Recording(path, [f.copy() for f in frames], times)


def write_image_folder(folder: Path, frames: list[np.ndarray]) -> Recording:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(frames):
        assert cv2.imwrite(str(folder / f"frame_{i:05d}.png"), np.ascontiguousarray(image[:, :, ::-1]))
    return Recording(folder, [f.copy() for f in frames], [round(i * 1e9 / 30) for i in range(len(frames))])


def check_sequence(indices: list[int], stamps: list[int], times: list[int], period_ns: int) -> None:
    """Recorded frames `indices` (a looping playback) arrived in order with stamps in the recorded spacing.

    Reliable KEEP_LAST(10) may still drop a message when this (loaded) test process stalls, so the check
    holds for whatever pairs arrived: within a pass, stamps differ exactly by the recorded times between
    the two frames; across a loop's seam by at least one period (camera_stream). At most 10% lost.
    """
    n, skipped = len(times), 0
    for k, (a, b) in enumerate(itertools.pairwise(stamps)):
        i, j = indices[k], indices[k + 1]
        skipped += (j - i - 1) % n
        if j > i:
            assert b - a == times[j] - times[i], (k, i, j, b - a)
        else:
            assert b - a >= period_ns, (k, i, j, b - a)
    assert skipped <= len(stamps) // 10, f"{skipped} frames lost of {len(stamps) + skipped}: {indices}"


if __name__ == "__main__":  # the child process of write_realsense_recording
    _inputs, _out, _fps, _start, _period = sys.argv[1:6]
    with np.load(_inputs) as _arrays:
        _write_realsense_recording_here(
            Path(_out),
            _arrays["color"],
            int(_fps),
            float(_start),
            float(_period),
            _arrays.get("depth", None),
        )
