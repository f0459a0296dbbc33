"""Privileged views of the simulator state and the success predicates built on them.

Success is judged on true object poses and contacts, never on images (as LIBERO's BDDL predicates do).
A placed object counts only once the gripper has let go of it, so "hold it above the plate" is not success.

The predicates read the state through a small view: `SceneView` over MuJoCo's (model, data), or `PoseState`,
the same facts as plain data (object poses, drawer travel, button depth, which objects touch the fingers),
which any other simulator (the Isaac Sim bridge) can fill in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from svrl_sim import objects as ob
from svrl_sim.scene_spec import quat_rotate, quat_to_mat
from svrl_sim.tasks import Goal, Task

if TYPE_CHECKING:  # the MuJoCo view is only built where mujoco is loaded (SimEnv)
    from svrl_sim._mj import mujoco
    from svrl_sim.scene import SceneIndex


class SceneView:
    """Read-only accessors over (model, data) in task terms: poses by object name, drawer travel, contacts."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, index: SceneIndex) -> None:
        self.model, self.data, self.index = model, data, index

    # robot
    def tcp_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.index.ee_site].copy()

    def tcp_rot(self) -> np.ndarray:
        return self.data.site_xmat[self.index.ee_site].reshape(3, 3).copy()

    def finger_gap(self) -> float:
        """Distance between the finger pads (m)."""
        return float(self.data.qpos[self.index.finger_qpos].sum())

    # objects
    def pos(self, name: str) -> np.ndarray:
        entry = self.index.objects[name]
        if entry.qpos_adr >= 0:
            return self.data.qpos[entry.qpos_adr : entry.qpos_adr + 3].copy()
        return self.data.mocap_pos[entry.mocap_id].copy()

    def rot(self, name: str) -> np.ndarray:
        body = self.index.objects[name].body_ids[0]
        return self.data.xmat[body].reshape(3, 3).copy()

    def yaw(self, name: str) -> float:
        r = self.rot(name)
        return math.atan2(r[1, 0], r[0, 0])

    def upright(self, name: str) -> bool:
        return bool(self.rot(name)[2, 2] > 0.9)

    def drawer_travel(self) -> float:
        return float(self.data.qpos[self.index.drawer_qpos])

    def button_depth(self) -> float:
        return float(-self.data.qpos[self.index.button_qpos])

    def drawer_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """(origin, rotation) of the drawer body in the world."""
        b = self.index.drawer_body
        return self.data.xpos[b].copy(), self.data.xmat[b].reshape(3, 3).copy()

    def touching_fingers(self, name: str) -> bool:
        """True while either finger pad is in contact with the object."""
        if self.data.ncon == 0:
            return False
        geoms = self.index.objects[name].geom_ids
        fingers = self.index.finger_geoms
        g1, g2 = self.data.contact.geom1, self.data.contact.geom2
        hit = (np.isin(g1, fingers) & np.isin(g2, geoms)) | (np.isin(g2, fingers) & np.isin(g1, geoms))
        return bool(hit.any())


@dataclass(frozen=True)
class PoseState:
    """What the success predicates read, as plain data: a simulator-neutral `SceneView`.

    poses: object name -> (x, y, z, qw, qx, qy, qz) of its body in the world (the robot base frame).
    drawer: drawer travel (m, 0 = closed); button: how far the button cap is pressed in (m);
    touching: names of the objects either finger pad is in contact with.
    """

    poses: Mapping[str, Sequence[float]]
    drawer: float = 0.0
    button: float = 0.0
    touching: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for name, pose in self.poses.items():
            values = np.asarray(pose, dtype=float)
            if values.shape != (7,) or not np.isfinite(values).all():
                raise ValueError(
                    f"pose of {name!r} must be 7 finite numbers (x, y, z, qw, qx, qy, qz), got {pose!r}"
                )
        if not (math.isfinite(self.drawer) and math.isfinite(self.button)):
            raise ValueError(f"drawer ({self.drawer}) and button ({self.button}) must be finite")

    @classmethod
    def from_dict(cls, state: Mapping) -> PoseState:
        """From JSON-like data: {"poses": {name: [7 numbers]}, "drawer": m, "button": m, "touching": [names]}."""
        return cls(
            poses={str(k): tuple(float(v) for v in p) for k, p in state["poses"].items()},
            drawer=float(state.get("drawer", 0.0)),
            button=float(state.get("button", 0.0)),
            touching=frozenset(state.get("touching", ())),
        )

    def _pose(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self.poses[name], dtype=float)
        except KeyError:
            raise KeyError(f"no pose for object {name!r} (have: {', '.join(sorted(self.poses))})") from None

    def pos(self, name: str) -> np.ndarray:
        return self._pose(name)[:3].copy()

    def rot(self, name: str) -> np.ndarray:
        return quat_to_mat(self._pose(name)[3:])

    def upright(self, name: str) -> bool:
        return bool(self.rot(name)[2, 2] > 0.9)

    def drawer_travel(self) -> float:
        return float(self.drawer)

    def button_depth(self) -> float:
        return float(self.button)

    def drawer_frame(self) -> tuple[np.ndarray, np.ndarray]:
        """The drawer slides out of the cabinet along the cabinet's -x axis (scene_spec's drawer joint)."""
        cabinet = self._pose("cabinet")
        origin = cabinet[:3] + quat_rotate(cabinet[3:], np.array([-self.drawer, 0.0, 0.0]))
        return origin, quat_to_mat(cabinet[3:])

    def touching_fingers(self, name: str) -> bool:
        return name in self.touching


def pose_state(view: SceneView, names: Sequence[str]) -> PoseState:
    """Snapshot of a MuJoCo view as plain data, for the objects `names` (what another simulator reports)."""
    poses = {}
    for name in names:
        body = view.index.objects[name].body_ids[0]
        poses[name] = (*view.data.xpos[body], *view.data.xquat[body])
    touching = frozenset(n for n in names if view.touching_fingers(n))
    return PoseState(poses, view.drawer_travel(), view.button_depth(), touching)


def _resting_on_surface(view: SceneView | PoseState, name: str, surface_z: float) -> bool:
    z = view.pos(name)[2]
    return view.upright(name) and abs(z - (surface_z + ob.OBJECTS[name].half[2])) < 0.012


def holds(goal: Goal, view: SceneView | PoseState, start: Mapping[str, np.ndarray] | None = None) -> bool:
    """Whether one goal is satisfied in the current state. `start`: object positions at reset (for `lift`)."""
    kind = goal.kind
    if kind == "drawer_open":
        return view.drawer_travel() >= 0.10
    if kind == "drawer_closed":
        return view.drawer_travel() <= 0.01
    if kind == "button":
        return view.button_depth() >= 0.008
    assert goal.obj is not None
    p = view.pos(goal.obj)
    if kind == "lift":
        rest = ob.OBJECTS[goal.obj].half[2] if start is None else float(start[goal.obj][2])
        return bool(p[2] >= rest + 0.08)
    if kind == "on_pad":
        pad = view.pos("pad")
        on_table = p[2] < ob.OBJECTS[goal.obj].half[2] + 0.01
        return bool(
            on_table
            and abs(p[0] - pad[0]) <= ob.PAD_HALF - 0.005
            and abs(p[1] - pad[1]) <= ob.PAD_HALF - 0.005
        )
    if view.touching_fingers(goal.obj):
        return False
    if kind == "stack":
        assert goal.target is not None
        q = view.pos(goal.target)
        half_top, half_bottom = ob.OBJECTS[goal.obj].half[2], ob.OBJECTS[goal.target].half[2]
        return bool(
            np.linalg.norm(p[:2] - q[:2]) < 0.02
            and abs(p[2] - q[2] - half_top - half_bottom) < 0.012
            and q[2] < half_bottom + 0.01
            and view.upright(goal.obj)
        )
    target = goal.target
    assert target is not None
    shape = ob.OBJECTS[target].shape
    q = view.pos(target)
    if kind == "on":
        if shape == "plate":
            return bool(
                np.linalg.norm(p[:2] - q[:2]) < 0.06 and _resting_on_surface(view, goal.obj, ob.PLATE_TOP_Z)
            )
        if shape == "box":
            ok_xy = (
                abs(p[0] - q[0]) < ob.OBJECTS["box"].half[0] and abs(p[1] - q[1]) < ob.OBJECTS["box"].half[1]
            )
            return bool(ok_xy and _resting_on_surface(view, goal.obj, ob.BOX_TOP_Z))
    if kind == "in":
        if shape == "bowl":
            return bool(
                np.linalg.norm(p[:2] - q[:2]) < ob.BOWL_INNER_RADIUS - 0.01 and p[2] < ob.BOWL_RIM_Z + 0.01
            )
        if shape == "basket":
            lim = ob.BASKET_INNER_HALF - 0.01
            return bool(abs(p[0] - q[0]) < lim and abs(p[1] - q[1]) < lim and p[2] < ob.BASKET_RIM_Z + 0.01)
        if shape == "cabinet":
            origin, rot = view.drawer_frame()
            local = rot.T @ (p - origin)
            x0, x1, y0, y1 = ob.DRAWER_INNER
            return bool(
                x0 + 0.01 < local[0] < x1 - 0.01
                and y0 + 0.01 < local[1] < y1 - 0.01
                and local[2] < ob.DRAWER_RIM_Z
            )
    raise ValueError(f"goal {goal} is not supported (target shape {shape!r})")


def task_success(
    task: Task, view: SceneView | PoseState, start: Mapping[str, np.ndarray] | None = None
) -> bool:
    """All of the task's goals hold at once."""
    return all(holds(g, view, start) for g in task.goals)
