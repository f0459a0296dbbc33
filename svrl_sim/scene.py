"""The tabletop scene: the URDF robot plus a fixed library of primitive objects, built with MjSpec.

One compiled model holds every object any task uses. A task switches objects on and off at reset
(`SceneIndex.apply_activation`): an inactive object is parked out of sight under the table, hidden from
the cameras (geom group), excluded from collisions and held against gravity. One model for all tasks means
one MjData per env, one GL context per process and no re-compilation when a worker changes task.

Frames: the world frame IS the robot base frame. The table top is z = 0, the robot stands at the origin and
faces +x; +y is to the robot's left. All sizes are metres.

Render profile (what keeps a software-rendered 128x128 frame at a few ms): primitives only, no textures,
no shadows (light castshadow off, shadowsize 0), no multisampling (offsamples 0), coarse tessellation,
an offscreen buffer exactly the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from svrl_sim import robot
from svrl_sim._mj import mujoco
from svrl_sim.constants import CAMERA_MAIN, CAMERA_WRIST, CAMERAS
from svrl_sim.kinematics import EE_SITE, add_tool_site
from svrl_sim.objects import (
    BUTTON_TRAVEL,
    DRAWER_HANDLE_X,
    DRAWER_HANDLE_Z,
    DRAWER_TRAVEL,
    OBJECTS,
    ObjectSpec,
)

PHYSICS_DT = 0.002  # s
HIDDEN_GROUP = 5  # geom group the cameras never draw
VISIBLE_GROUP = 0

# Collision bit masks. Static things (table, containers, cabinet shell) never collide with each other;
# objects collide with everything; the two fingers collide with objects and static things but not with each
# other. The arm links and the hand do not collide at all (documented simplification: keeps the contact
# count, and so the physics cost, small; the scripted experts never need them).
_STATIC = (1, 0)  # (contype, conaffinity)
_OBJECT = (1, 1)
_FINGER = (2, 1)
_NONE = (0, 0)

_OBJECT_FRICTION = (1.0, 0.01, 0.0001)
_FINGER_FRICTION = (1.5, 0.02, 0.0001)


# Where inactive objects wait: under the table, spread out, never in a camera.
_PARK_Z = -0.6


def park_position(index: int) -> np.ndarray:
    return np.array([-1.5 - 0.3 * index, 0.0, _PARK_Z])


def _add_box(body, pos, half, rgba, col, **kw):
    return body.add_geom(
        type=mujoco.mjtGeom.mjGEOM_BOX,
        pos=list(pos),
        size=list(half),
        rgba=list(rgba),
        contype=col[0],
        conaffinity=col[1],
        **kw,
    )


def _add_cyl(body, pos, radius, half_h, rgba, col, **kw):
    return body.add_geom(
        type=mujoco.mjtGeom.mjGEOM_CYLINDER,
        pos=list(pos),
        size=[radius, half_h, 0],
        rgba=list(rgba),
        contype=col[0],
        conaffinity=col[1],
        **kw,
    )


def _build_object(spec: mujoco.MjSpec, obj: ObjectSpec, index: int) -> None:
    park = park_position(index)
    body = spec.worldbody.add_body(name=obj.name, pos=list(park), mocap=not obj.movable)
    hx, _, hz = obj.half
    dyn = {"friction": list(_OBJECT_FRICTION), "condim": 4}
    if obj.movable:
        body.add_freejoint(name=f"{obj.name}_joint")
        if obj.shape in ("cube", "block", "carton"):
            g = _add_box(body, (0, 0, 0), obj.half, obj.rgba, _OBJECT, **dyn)
        else:  # can, puck
            g = _add_cyl(body, (0, 0, 0), hx, hz, obj.rgba, _OBJECT, **dyn)
        g.mass = obj.mass
        return
    # Fixed (mocap) objects: their body origin is on the table top.
    rgba = obj.rgba
    if obj.shape == "plate":
        _add_cyl(body, (0, 0, 0.005), hx, 0.005, rgba, _STATIC, **dyn)
    elif obj.shape == "box":
        _add_box(body, (0, 0, hz), obj.half, rgba, _STATIC, **dyn)
    elif obj.shape == "pad":
        _add_box(body, (0, 0, 0.001), obj.half, rgba, _NONE)
    elif obj.shape == "bowl":
        _add_cyl(body, (0, 0, 0.004), 0.07, 0.004, rgba, _STATIC, **dyn)
        n = 8
        half_len = 0.07 * math.tan(math.pi / n) + 0.004
        for k in range(n):
            a = 2 * math.pi * k / n
            g = _add_box(
                body,
                (0.07 * math.cos(a), 0.07 * math.sin(a), 0.025),
                (0.006, half_len, 0.025),
                rgba,
                _STATIC,
                **dyn,
            )
            g.quat = [math.cos(a / 2), 0, 0, math.sin(a / 2)]
    elif obj.shape == "basket":
        _add_box(body, (0, 0, 0.004), (0.085, 0.085, 0.004), rgba, _STATIC, **dyn)
        for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            half = (0.005, 0.085, 0.03) if sx else (0.085, 0.005, 0.03)
            _add_box(body, (0.08 * sx, 0.08 * sy, 0.03), half, rgba, _STATIC, **dyn)
    elif obj.shape == "button":
        _add_box(body, (0, 0, 0.015), (0.04, 0.04, 0.015), (0.35, 0.35, 0.38, 1.0), _STATIC, **dyn)
        cap = body.add_body(name="button_cap", pos=[0, 0, 0], gravcomp=1.0)  # stays where it is pushed
        cap.add_joint(
            name="button_joint",
            type=mujoco.mjtJoint.mjJNT_SLIDE,
            axis=[0, 0, 1],
            range=[-BUTTON_TRAVEL, 0.0],
            damping=[5.0, 0, 0],
            frictionloss=2.0,
        )
        g = _add_cyl(cap, (0, 0, 0.04), 0.025, 0.01, rgba, _OBJECT, **dyn)
        g.mass = 0.02
    elif obj.shape == "cabinet":
        wood = rgba
        _add_box(body, (0, 0, 0.132), (0.10, 0.12, 0.008), wood, _STATIC, **dyn)
        for sy in (1, -1):
            _add_box(body, (0, 0.112 * sy, 0.066), (0.10, 0.008, 0.066), wood, _STATIC, **dyn)
        _add_box(body, (0.092, 0, 0.066), (0.008, 0.12, 0.066), wood, _STATIC, **dyn)
        drawer = body.add_body(name="drawer", pos=[0, 0, 0])
        drawer.add_joint(
            name="drawer_joint",
            type=mujoco.mjtJoint.mjJNT_SLIDE,
            axis=[-1, 0, 0],
            range=[0.0, DRAWER_TRAVEL],
            damping=[8.0, 0, 0],
            frictionloss=0.5,
        )
        front = (0.78, 0.72, 0.62, 1.0)
        g = _add_box(drawer, (-0.092, 0, 0.066), (0.008, 0.104, 0.058), front, _OBJECT, **dyn)
        g.mass = 0.3
        _add_box(drawer, (0, 0, 0.012), (0.09, 0.1, 0.004), front, _OBJECT, **dyn)
        for sy in (1, -1):
            _add_box(drawer, (0, 0.1 * sy, 0.045), (0.09, 0.004, 0.035), front, _OBJECT, **dyn)
        _add_box(drawer, (0.088, 0, 0.045), (0.004, 0.1, 0.035), front, _OBJECT, **dyn)
        metal = (0.25, 0.25, 0.28, 1.0)
        _add_box(drawer, (DRAWER_HANDLE_X, 0, DRAWER_HANDLE_Z), (0.006, 0.05, 0.006), metal, _OBJECT, **dyn)
        for sy in (1, -1):
            _add_box(
                drawer, (-0.1225, 0.044 * sy, DRAWER_HANDLE_Z), (0.0225, 0.006, 0.006), metal, _OBJECT, **dyn
            )
    else:  # pragma: no cover - catalogue and builder are edited together
        raise ValueError(f"no builder for shape {obj.shape!r}")


_ARM_COLOURS = {
    "base_link": (0.35, 0.36, 0.38, 1.0),
    "link4": (0.92, 0.92, 0.90, 1.0),
    "link7": (0.35, 0.36, 0.38, 1.0),
    "left_finger": (0.15, 0.15, 0.16, 1.0),
    "right_finger": (0.15, 0.15, 0.16, 1.0),
}

# Position servos on the arm joints (N m / rad and N m s / rad). With gravity compensation on the links
# these track a 2 cm / 0.1 s Cartesian step within the control period; the URDF effort limits clamp them.
_ARM_KP = (2500.0, 2500.0, 2000.0, 2000.0, 600.0, 600.0, 400.0)
_ARM_KV = (160.0, 160.0, 120.0, 120.0, 30.0, 30.0, 20.0)
_ARM_ARMATURE = (0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05)
_GRIPPER_KP = (
    1000.0  # N/m on the mean finger opening; closed on a 4 cm cube this squeezes with ~20 N per finger
)


def build_spec(image_size: int = 128) -> mujoco.MjSpec:
    """The full scene as an MjSpec: the URDF robot, the table, every library object, lights and cameras."""
    spec = mujoco.MjSpec.from_file(str(robot.urdf_path()))
    spec.modelname = "svrl_tabletop"
    # The URDF asks MuJoCo to use its collision elements (identical to the visual ones). After parsing,
    # stop the compiler from discarding geoms that do not collide: the arm links are drawn, not collided.
    spec.compiler.discardvisual = False
    spec.option.timestep = PHYSICS_DT
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 5.0
    spec.option.noslip_iterations = 0

    # Fixed statistics: the camera clip planes scale with the model extent, which the parked objects and
    # the floor would otherwise inflate.
    spec.stat.extent = 2.0
    spec.stat.center = [0.3, 0.0, 0.2]

    vis = spec.visual
    vis.quality.shadowsize = 0
    vis.quality.offsamples = 0
    vis.quality.numslices = 16
    vis.quality.numstacks = 4
    vis.quality.numquads = 1
    vis.global_.offwidth = image_size
    vis.global_.offheight = image_size
    vis.headlight.ambient = [0.45, 0.45, 0.45]
    vis.headlight.diffuse = [0.35, 0.35, 0.35]
    vis.headlight.specular = [0.0, 0.0, 0.0]
    vis.map.znear = 0.005  # x extent (2 m) = 1 cm, so the wrist camera sees a grasped object
    vis.map.zfar = 3.0
    vis.rgba.haze = [0.75, 0.78, 0.82, 1.0]

    # Robot (every body the URDF brought): colours, collision masks, gravity compensation.
    for body in spec.bodies:
        if body.name == "world":
            continue
        body.gravcomp = 1.0
        finger = body.name.endswith("_finger")
        for g in body.geoms:
            g.contype, g.conaffinity = _FINGER if finger else _NONE
            if finger:
                g.friction = list(_FINGER_FRICTION)
                g.condim = 4
                # Stiffer than the default contact (time constant 0.02 s): a soft pad lets a squeezed
                # cylinder sink in and squirt out when the arm changes direction.
                g.solref = [0.01, 1.0]
            g.rgba = list(_ARM_COLOURS.get(body.name, (0.92, 0.92, 0.90, 1.0)))
            g.group = VISIBLE_GROUP
    for name, arm in zip(robot.ARM_JOINTS, _ARM_ARMATURE, strict=True):
        spec.joint(name).armature = arm

    add_tool_site(spec)
    spec.body(robot.WRIST_CAMERA_LINK).add_camera(name=CAMERA_WRIST, fovy=80.0)

    # Actuators: position servos with the URDF effort limits (already imported as actuatorfrcrange).
    lower, upper, _ = robot.arm_limits()
    for i, name in enumerate(robot.ARM_JOINTS):
        act = spec.add_actuator(name=f"{name}_pos", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=_ARM_KP[i], kv=_ARM_KV[i])
        act.ctrlrange = [lower[i], upper[i]]
        act.ctrllimited = 1
    tendon = spec.add_tendon(name="gripper_opening")
    tendon.wrap_joint(robot.FINGER_JOINTS[0], 0.5)
    tendon.wrap_joint(robot.FINGER_JOINTS[1], 0.5)
    grip = spec.add_actuator(name="gripper_pos", target="gripper_opening", trntype=mujoco.mjtTrn.mjTRN_TENDON)
    grip.set_to_position(kp=_GRIPPER_KP, kv=40.0)
    grip.ctrlrange = [0.0, robot.FINGER_OPEN]
    grip.ctrllimited = 1
    grip.forcerange = [-70.0, 70.0]
    grip.forcelimited = 1
    for name in robot.FINGER_JOINTS:
        spec.joint(name).damping = [2.0, 0.0, 0.0]
        spec.joint(name).armature = 0.01

    # Table (top at z = 0) and a floor far below, so dropped objects come to rest.
    world = spec.worldbody
    _add_box(
        world,
        (0.35, 0.0, -0.025),
        (0.75, 0.75, 0.025),
        (0.78, 0.70, 0.60, 1.0),
        _STATIC,
        friction=list(_OBJECT_FRICTION),
    )
    world.add_geom(
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        pos=[0, 0, -0.8],
        size=[3, 3, 0.1],
        rgba=[0.5, 0.5, 0.52, 1],
        contype=_STATIC[0],
        conaffinity=_STATIC[1],
    )
    _add_box(world, (-0.5, 0.0, 0.4), (0.02, 1.2, 1.2), (0.82, 0.84, 0.86, 1.0), _NONE)  # backdrop
    world.add_light(
        name="sun",
        pos=[0.6, 0.0, 1.5],
        dir=[-0.2, 0.0, -1.0],
        castshadow=False,
        diffuse=[0.55, 0.55, 0.55],
        specular=[0.05, 0.05, 0.05],
        type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
    )

    # Main camera: in front of the table looking back at the robot (LIBERO "agentview"-like).
    cam_pos = np.array([1.08, 0.0, 0.72])
    target = np.array([0.42, 0.0, 0.02])
    fwd = (target - cam_pos) / np.linalg.norm(target - cam_pos)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.column_stack([right, up, -fwd]).flatten())
    world.add_camera(name=CAMERA_MAIN, pos=list(cam_pos), quat=list(quat), fovy=48.0)

    for i, obj in enumerate(OBJECTS.values()):
        _build_object(spec, obj, i)
    return spec


@lru_cache(maxsize=4)
def _compiled(image_size: int) -> mujoco.MjModel:
    model = build_spec(image_size).compile()
    # The renderer shares one GL context between envs of a process; that is only valid while the scene
    # uploads nothing model-specific to the GPU.
    assert model.ntex == 0 and model.nmesh == 0 and model.nhfield == 0
    return model


def build_model(image_size: int = 128) -> mujoco.MjModel:
    """A fresh copy of the compiled scene (each env mutates its own copy at reset)."""
    import copy

    return copy.copy(_compiled(int(image_size)))


@dataclass
class ObjectIndex:
    """Where one object lives in the compiled model."""

    spec: ObjectSpec
    body_ids: list[int]  # the object's body and its children (drawer, button cap)
    geom_ids: np.ndarray
    base_contype: np.ndarray
    base_conaffinity: np.ndarray
    base_gravcomp: np.ndarray
    qpos_adr: int = -1  # free joint (movable objects)
    dof_adr: int = -1
    mocap_id: int = -1  # fixed objects
    park: np.ndarray = field(default_factory=lambda: np.zeros(3))


class SceneIndex:
    """Name -> index lookups into a compiled scene model, resolved once per model."""

    def __init__(self, model: mujoco.MjModel) -> None:
        self.arm_qpos = np.array([model.joint(j).qposadr[0] for j in robot.ARM_JOINTS])
        self.arm_dof = np.array([model.joint(j).dofadr[0] for j in robot.ARM_JOINTS])
        self.finger_qpos = np.array([model.joint(j).qposadr[0] for j in robot.FINGER_JOINTS])
        self.finger_dof = np.array([model.joint(j).dofadr[0] for j in robot.FINGER_JOINTS])
        self.arm_act = np.array([model.actuator(f"{j}_pos").id for j in robot.ARM_JOINTS])
        self.grip_act = model.actuator("gripper_pos").id
        self.ee_site = model.site(EE_SITE).id
        self.camera_ids = {c: model.camera(c).id for c in CAMERAS}
        self.finger_geoms = np.array(
            [g for g in range(model.ngeom) if model.body(model.geom_bodyid[g]).name.endswith("_finger")]
        )
        self.drawer_qpos = model.joint("drawer_joint").qposadr[0]
        self.button_qpos = model.joint("button_joint").qposadr[0]
        self.drawer_body = model.body("drawer").id
        self.objects: dict[str, ObjectIndex] = {}
        for i, (name, obj) in enumerate(OBJECTS.items()):
            root = model.body(name).id
            bodies = [b for b in range(model.nbody) if _has_ancestor(model, b, root)]
            geoms = np.array([g for g in range(model.ngeom) if model.geom_bodyid[g] in bodies], dtype=int)
            entry = ObjectIndex(
                spec=obj,
                body_ids=bodies,
                geom_ids=geoms,
                base_contype=model.geom_contype[geoms].copy(),
                base_conaffinity=model.geom_conaffinity[geoms].copy(),
                base_gravcomp=model.body_gravcomp[bodies].copy(),
                park=park_position(i),
            )
            if obj.movable:
                jnt = model.joint(f"{name}_joint")
                entry.qpos_adr = int(jnt.qposadr[0])
                entry.dof_adr = int(jnt.dofadr[0])
            else:
                entry.mocap_id = int(model.body_mocapid[root])
            self.objects[name] = entry

    def apply_activation(self, model: mujoco.MjModel, active: set[str] | frozenset[str]) -> None:
        """Show/collide the active objects, hide/disable/float the rest (mutates this env's model copy)."""
        for name, entry in self.objects.items():
            on = name in active
            model.geom_group[entry.geom_ids] = VISIBLE_GROUP if on else HIDDEN_GROUP
            model.geom_contype[entry.geom_ids] = entry.base_contype if on else 0
            model.geom_conaffinity[entry.geom_ids] = entry.base_conaffinity if on else 0
            model.body_gravcomp[entry.body_ids] = entry.base_gravcomp if on else 1.0


def _has_ancestor(model: mujoco.MjModel, body: int, root: int) -> bool:
    while body > 0:
        if body == root:
            return True
        body = int(model.body_parentid[body])
    return False


def yaw_quat(yaw: float) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation by `yaw` about +z."""
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])
