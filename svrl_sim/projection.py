"""Where a world point lands in a camera image: the pinhole model MuJoCo renders with.

Demos record where the expert's object and target appear in each camera (svrl_sim.demos), so a policy's
image keypoints can be taught to sit on them directly: a per-pixel answer to "where is the red cube",
which behaviour cloning of 5-mm steps teaches only slowly.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

BEHIND_CAMERA = 9.0  # both coordinates of a point behind the camera: outside [-1, 1], finite for datasets


def project_point(
    model: mujoco.MjModel, data: mujoco.MjData, camera_id: int, point: np.ndarray
) -> np.ndarray:
    """(x, y) of `point` in camera `camera_id`'s image, -1 to 1 across its width and height (x to the
    right, y down: the convention of svrl_policy's keypoints). A point outside the image gets coordinates
    beyond ±1 (those of its projection, or BEHIND_CAMERA), so "in view" is |x| <= 1 and |y| <= 1.

    A MuJoCo camera looks along its -z axis with y up; `fovy` is its full vertical field of view, and the
    sim renders square images, so both half-extents at unit depth are tan(fovy / 2).
    """
    rotation = data.cam_xmat[camera_id].reshape(3, 3)  # columns: the camera's axes in world coordinates
    local = rotation.T @ (np.asarray(point, dtype=np.float64) - data.cam_xpos[camera_id])
    depth = -local[2]
    if depth <= 1e-6:
        return np.full(2, BEHIND_CAMERA)
    half_height = math.tan(math.radians(float(model.cam_fovy[camera_id])) / 2.0)
    xy = np.array([local[0], -local[1]]) / (depth * half_height)
    return np.clip(xy, -BEHIND_CAMERA, BEHIND_CAMERA)
