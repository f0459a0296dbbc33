"""The tabletop scene as plain data: what any simulator must build for one task and init state.

The embedded MuJoCo scene (`svrl_sim.scene`) is built from these definitions, and so is the Isaac Sim bridge
(`svrl_ros.isaac`): the geometry of every library object, the table, the cameras, the robot's initial joints
and the object poses of an init state are written here once. Nothing here imports mujoco, ROS or Isaac Sim.

Conventions (the same as `svrl_sim.scene`): metres, radians, quaternions (w, x, y, z). The world frame is
the robot base frame; the table top is z = 0; the robot faces +x. A camera looks along its own -z axis with
+y up in the image (MuJoCo's and USD's camera convention). Box sizes are half extents; a cylinder's size is
(radius, radius, half height).

    spec = scene_spec("goal/open_drawer", InitState("eval", 0))
    for obj in spec.objects:            # every library object; `active` ones are in the task
        for part, pos, quat in obj.world_parts(): ...
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from svrl_sim import robot
from svrl_sim.constants import CAMERA_MAIN, CAMERA_WRIST, DEFAULT_CONTROL_HZ, DEFAULT_IMAGE_SIZE
from svrl_sim.objects import (
    BUTTON_TRAVEL,
    DRAWER_HANDLE_X,
    DRAWER_HANDLE_Z,
    DRAWER_TRAVEL,
    OBJECTS,
    ObjectSpec,
)
from svrl_sim.tasks import InitState, Task, as_init_state, get_task, scene_init

PHYSICS_DT = 0.002  # s
IDENTITY_QUAT = (1.0, 0.0, 0.0, 0.0)

# Collision classes of a part. static: never collides with other static parts (table, receptacles, cabinet
# shell); object: collides with everything (free objects, the drawer, the button cap); none: drawn only.
COLLISIONS = ("static", "object", "none")

Vec3 = tuple[float, float, float]
Quat = tuple[float, float, float, float]


@dataclass(frozen=True)
class Part:
    """One primitive of a body, in that body's frame."""

    shape: str  # "box" | "cylinder"
    pos: Vec3
    size: Vec3  # box: half extents; cylinder: (radius, radius, half height)
    rgba: tuple[float, float, float, float]
    collision: str = "static"
    quat: Quat = IDENTITY_QUAT
    mass: float | None = None  # None: the simulator's default density
    body: str = ""  # "" = the object's own body; else a jointed child body (see `Joint`)

    def __post_init__(self) -> None:
        if self.shape not in ("box", "cylinder"):
            raise ValueError(f"part shape {self.shape!r} must be 'box' or 'cylinder'")
        if self.collision not in COLLISIONS:
            raise ValueError(f"part collision {self.collision!r} must be one of {COLLISIONS}")


@dataclass(frozen=True)
class Joint:
    """A slide joint between an object's body and a child body that starts at the parent's origin."""

    name: str
    body: str  # the child body it moves
    axis: Vec3  # in the parent (object) frame
    range: tuple[float, float]  # m
    damping: float  # N s / m
    frictionloss: float  # N
    gravity_compensated: bool = False  # the child stays where it is pushed (the button cap)


@dataclass(frozen=True)
class ObjectModel:
    """A library object's geometry: what a simulator builds once, whatever the task."""

    name: str
    label: str
    shape: str
    movable: bool  # free body (picked, pushed) vs. fixed in place by the init state (kinematic)
    half: Vec3  # bounding-box half extents, as the success predicates use them
    mass: float
    parts: tuple[Part, ...]
    joints: tuple[Joint, ...] = ()


@dataclass(frozen=True)
class SceneObject:
    """One library object in one episode: where it starts and whether the task uses it."""

    model: ObjectModel
    active: bool  # inactive objects are parked out of sight, without collisions
    pos: Vec3  # body origin: a movable object's centre, a fixed object's base on the table top
    quat: Quat
    joint_positions: dict[str, float] = field(default_factory=dict)  # by Joint.name (m)

    @property
    def name(self) -> str:
        return self.model.name

    def body_pose(self, body: str = "") -> tuple[np.ndarray, np.ndarray]:
        """World (position, quaternion) of the object's body or of one of its jointed child bodies."""
        pos, quat = np.asarray(self.pos, dtype=float), np.asarray(self.quat, dtype=float)
        if not body:
            return pos, quat
        for joint in self.model.joints:
            if joint.body == body:
                offset = np.asarray(joint.axis) * self.joint_positions.get(joint.name, 0.0)
                return pos + quat_rotate(quat, offset), quat
        raise KeyError(f"object {self.name!r} has no child body {body!r}")

    def world_parts(self) -> list[tuple[Part, np.ndarray, np.ndarray]]:
        """(part, world position, world quaternion) of every part at this object's pose and joint positions."""
        out = []
        for part in self.model.parts:
            body_pos, body_quat = self.body_pose(part.body)
            out.append(
                (
                    part,
                    body_pos + quat_rotate(body_quat, np.asarray(part.pos)),
                    quat_mul(body_quat, np.asarray(part.quat)),
                )
            )
        return out


@dataclass(frozen=True)
class CameraSpec:
    """A pinhole camera with square pixels and no distortion, mounted on the world or on a robot link."""

    name: str  # policy camera name ("main" / "wrist")
    parent: str  # "world" or a URDF link name
    pos: Vec3  # in the parent frame
    quat: Quat  # in the parent frame; the camera looks along its -z, image up is +y
    fovy_deg: float
    width: int
    height: int

    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels, the numbers sensor_msgs/CameraInfo carries for this camera."""
        fy = 0.5 * self.height / math.tan(math.radians(self.fovy_deg) / 2)
        return fy, fy, (self.width - 1) / 2, (self.height - 1) / 2


@dataclass(frozen=True)
class Light:
    name: str
    kind: str  # "directional"
    pos: Vec3
    direction: Vec3
    diffuse: Vec3


@dataclass(frozen=True)
class RobotSpec:
    """The arm as the scene uses it: the URDF, its joint names and how its position servos are tuned."""

    urdf: str
    arm_joints: tuple[str, ...]
    finger_joints: tuple[str, ...]
    initial_q: tuple[float, ...]  # arm, rad (the init state's)
    initial_fingers: float  # m per finger
    finger_open: float  # m per finger (upper limit)
    arm_kp: tuple[float, ...]  # N m / rad
    arm_kv: tuple[float, ...]  # N m s / rad
    gripper_kp: float  # N / m on the mean finger opening
    gripper_kv: float
    gripper_force_limit: float  # N


@dataclass(frozen=True)
class SceneSpec:
    """Everything a simulator needs to start one episode of a task, and to run it at the same rate."""

    task: str
    instruction: str
    split: str
    init_state_index: int
    max_steps: int  # time limit in control steps at `control_hz`
    control_hz: float
    physics_dt: float
    robot: RobotSpec
    static_parts: tuple[Part, ...]  # table, floor, backdrop (world frame)
    objects: tuple[SceneObject, ...]  # the whole library, `active` ones in the task
    cameras: tuple[CameraSpec, ...]
    lights: tuple[Light, ...]

    @property
    def active_objects(self) -> tuple[SceneObject, ...]:
        return tuple(o for o in self.objects if o.active)

    def object(self, name: str) -> SceneObject:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(
            f"no object {name!r} in the scene (objects: {', '.join(o.name for o in self.objects)})"
        )

    def camera(self, name: str) -> CameraSpec:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(f"no camera {name!r} (cameras: {', '.join(c.name for c in self.cameras)})")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (for another process, or to diff two simulators' scenes)."""
        return asdict(self)


# ----------------------------------------------------------------------------------------------------------
# Geometry of the library (the MuJoCo builder and the Isaac bridge both read these)

_BUTTON_BASE_RGBA = (0.35, 0.35, 0.38, 1.0)
_DRAWER_FRONT_RGBA = (0.78, 0.72, 0.62, 1.0)
_METAL_RGBA = (0.25, 0.25, 0.28, 1.0)


def park_position(index: int) -> np.ndarray:
    """Where inactive library object number `index` waits: under the table, spread out, never in a camera."""
    return np.array([-1.5 - 0.3 * index, 0.0, -0.6])


def _z_quat(angle: float) -> Quat:
    return (math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2))


def _fixed_parts(obj: ObjectSpec) -> tuple[tuple[Part, ...], tuple[Joint, ...]]:
    """Parts of a fixed object, whose body origin is on the table top."""
    hx, _, hz = obj.half
    rgba = obj.rgba
    if obj.shape == "plate":
        return (Part("cylinder", (0, 0, 0.005), (hx, hx, 0.005), rgba),), ()
    if obj.shape == "box":
        return (Part("box", (0, 0, hz), obj.half, rgba),), ()
    if obj.shape == "pad":
        return (Part("box", (0, 0, 0.001), obj.half, rgba, collision="none"),), ()
    if obj.shape == "bowl":
        n = 8
        half_len = 0.07 * math.tan(math.pi / n) + 0.004
        parts = [Part("cylinder", (0, 0, 0.004), (0.07, 0.07, 0.004), rgba)]
        for k in range(n):
            a = 2 * math.pi * k / n
            pos = (0.07 * math.cos(a), 0.07 * math.sin(a), 0.025)
            parts.append(Part("box", pos, (0.006, half_len, 0.025), rgba, quat=_z_quat(a)))
        return tuple(parts), ()
    if obj.shape == "basket":
        parts = [Part("box", (0, 0, 0.004), (0.085, 0.085, 0.004), rgba)]
        for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            half = (0.005, 0.085, 0.03) if sx else (0.085, 0.005, 0.03)
            parts.append(Part("box", (0.08 * sx, 0.08 * sy, 0.03), half, rgba))
        return tuple(parts), ()
    if obj.shape == "button":
        parts = (
            Part("box", (0, 0, 0.015), (0.04, 0.04, 0.015), _BUTTON_BASE_RGBA),
            Part(
                "cylinder", (0, 0, 0.04), (0.025, 0.025, 0.01), rgba, "object", mass=0.02, body="button_cap"
            ),
        )
        joint = Joint("button_joint", "button_cap", (0.0, 0.0, 1.0), (-BUTTON_TRAVEL, 0.0), 5.0, 2.0, True)
        return parts, (joint,)
    if obj.shape == "cabinet":
        shell = [Part("box", (0, 0, 0.132), (0.10, 0.12, 0.008), rgba)]
        shell += [Part("box", (0, 0.112 * sy, 0.066), (0.10, 0.008, 0.066), rgba) for sy in (1, -1)]
        shell.append(Part("box", (0.092, 0, 0.066), (0.008, 0.12, 0.066), rgba))

        def drawer(pos: Vec3, half: Vec3, colour=_DRAWER_FRONT_RGBA, mass: float | None = None) -> Part:
            return Part("box", pos, half, colour, "object", mass=mass, body="drawer")

        inner = [drawer((-0.092, 0, 0.066), (0.008, 0.104, 0.058), mass=0.3)]
        inner.append(drawer((0, 0, 0.012), (0.09, 0.1, 0.004)))
        inner += [drawer((0, 0.1 * sy, 0.045), (0.09, 0.004, 0.035)) for sy in (1, -1)]
        inner.append(drawer((0.088, 0, 0.045), (0.004, 0.1, 0.035)))
        inner.append(drawer((DRAWER_HANDLE_X, 0, DRAWER_HANDLE_Z), (0.006, 0.05, 0.006), _METAL_RGBA))
        inner += [
            drawer((-0.1225, 0.044 * sy, DRAWER_HANDLE_Z), (0.0225, 0.006, 0.006), _METAL_RGBA)
            for sy in (1, -1)
        ]
        joint = Joint("drawer_joint", "drawer", (-1.0, 0.0, 0.0), (0.0, DRAWER_TRAVEL), 8.0, 0.5)
        return (*shell, *inner), (joint,)
    raise ValueError(f"no geometry for shape {obj.shape!r} (object {obj.name!r})")


def object_model(obj: ObjectSpec) -> ObjectModel:
    """The geometry of one library object."""
    if obj.movable:
        kind = "box" if obj.shape in ("cube", "block", "carton") else "cylinder"  # can, puck
        size = obj.half if kind == "box" else (obj.half[0], obj.half[0], obj.half[2])
        parts: tuple[Part, ...] = (Part(kind, (0.0, 0.0, 0.0), size, obj.rgba, "object", mass=obj.mass),)
        joints: tuple[Joint, ...] = ()
    else:
        parts, joints = _fixed_parts(obj)
    return ObjectModel(obj.name, obj.label, obj.shape, obj.movable, obj.half, obj.mass, parts, joints)


def library() -> tuple[ObjectModel, ...]:
    """Every library object, in the fixed order the scene builds (and parks) them."""
    return tuple(object_model(o) for o in OBJECTS.values())


TABLE_RGBA = (0.78, 0.70, 0.60, 1.0)
STATIC_PARTS: tuple[Part, ...] = (
    Part("box", (0.35, 0.0, -0.025), (0.75, 0.75, 0.025), TABLE_RGBA),  # table, top at z = 0
    Part("box", (-0.5, 0.0, 0.4), (0.02, 1.2, 1.2), (0.82, 0.84, 0.86, 1.0), collision="none"),  # backdrop
)
FLOOR_Z = -0.8  # a plane far below the table, so dropped objects come to rest
LIGHTS: tuple[Light, ...] = (
    Light("sun", "directional", (0.6, 0.0, 1.5), (-0.2, 0.0, -1.0), (0.55, 0.55, 0.55)),
)

# Position servos on the arm joints (N m / rad and N m s / rad); the URDF effort limits clamp them.
ARM_KP = (2500.0, 2500.0, 2000.0, 2000.0, 600.0, 600.0, 400.0)
ARM_KV = (160.0, 160.0, 120.0, 120.0, 30.0, 30.0, 20.0)
GRIPPER_KP = (
    1000.0  # N/m on the mean finger opening; closed on a 4 cm cube this squeezes with ~20 N per finger
)
GRIPPER_KV = 40.0
GRIPPER_FORCE = 70.0

MAIN_CAMERA_EYE = (1.08, 0.0, 0.72)  # in front of the table looking back at the robot ("agentview"-like)
MAIN_CAMERA_TARGET = (0.42, 0.0, 0.02)
MAIN_CAMERA_FOVY = 48.0
WRIST_CAMERA_FOVY = 80.0


def look_at_matrix(eye: Vec3, target: Vec3) -> np.ndarray:
    """Rotation (columns: camera x, y, z in the world) of a camera at `eye` looking at `target`.

    The camera looks along its -z with +y up in the image; the world's +z is up.
    """
    e, t = np.asarray(eye, dtype=float), np.asarray(target, dtype=float)
    fwd = (t - e) / np.linalg.norm(t - e)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    return np.column_stack([right, up, -fwd])


def cameras(image_size: int = DEFAULT_IMAGE_SIZE) -> tuple[CameraSpec, ...]:
    quat = tuple(float(v) for v in mat_to_quat(look_at_matrix(MAIN_CAMERA_EYE, MAIN_CAMERA_TARGET)))
    return (
        CameraSpec(CAMERA_MAIN, "world", MAIN_CAMERA_EYE, quat, MAIN_CAMERA_FOVY, image_size, image_size),  # type: ignore[arg-type]
        CameraSpec(
            CAMERA_WRIST,
            robot.WRIST_CAMERA_LINK,
            (0.0, 0.0, 0.0),
            IDENTITY_QUAT,
            WRIST_CAMERA_FOVY,
            image_size,
            image_size,
        ),
    )


def scene_spec(
    task: str | Task,
    init_state: InitState | tuple[str, int],
    image_size: int = DEFAULT_IMAGE_SIZE,
    control_hz: float = DEFAULT_CONTROL_HZ,
) -> SceneSpec:
    """The scene of one episode: the same numbers `SimEnv.reset(task, init_state)` writes into MuJoCo.

    Unknown task -> UnknownTaskError, bad init state -> IndexError / ValueError (from `svrl_sim.tasks`).
    """
    t = get_task(task)
    ref = as_init_state(init_state)
    init = scene_init(t, ref)
    objects = []
    for i, model in enumerate(library()):
        if model.name in init.poses:
            x, y, z, yaw = init.poses[model.name]
            pos, quat, active = (x, y, z), _z_quat(yaw), True
        else:
            pos, quat, active = tuple(float(v) for v in park_position(i)), IDENTITY_QUAT, False
        joints = {j.name: 0.0 for j in model.joints}
        if "drawer_joint" in joints:
            joints["drawer_joint"] = float(init.drawer)
        objects.append(SceneObject(model, active, pos, quat, joints))  # type: ignore[arg-type]
    robot_spec = RobotSpec(
        urdf=str(robot.urdf_path()),
        arm_joints=robot.ARM_JOINTS,
        finger_joints=robot.FINGER_JOINTS,
        initial_q=tuple(float(q) for q in init.robot_q),
        initial_fingers=robot.FINGER_OPEN,
        finger_open=robot.FINGER_OPEN,
        arm_kp=ARM_KP,
        arm_kv=ARM_KV,
        gripper_kp=GRIPPER_KP,
        gripper_kv=GRIPPER_KV,
        gripper_force_limit=GRIPPER_FORCE,
    )
    return SceneSpec(
        task=t.name,
        instruction=t.instruction,
        split=ref.split,
        init_state_index=int(ref.index),
        # Task.max_steps is counted at 10 Hz; at another control rate the limit in seconds stays the same.
        max_steps=math.ceil(t.max_steps * float(control_hz) / DEFAULT_CONTROL_HZ - 1e-9),
        control_hz=float(control_hz),
        physics_dt=PHYSICS_DT,
        robot=robot_spec,
        static_parts=STATIC_PARTS,
        objects=tuple(objects),
        cameras=cameras(image_size),
        lights=LIGHTS,
    )


# ----------------------------------------------------------------------------------------------------------
# Quaternion helpers (w, x, y, z), numpy only


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of (w, x, y, z) quaternions (also teleop's, svrl_ros.teleop_motion)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=float) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    return quat_to_mat(q) @ np.asarray(v, dtype=float)


def mat_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (w, x, y, z) with w >= 0."""
    m = np.asarray(m, dtype=float)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    out = np.array(q) / np.linalg.norm(q)
    return out if out[0] >= 0 else -out
