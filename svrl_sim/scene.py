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
from svrl_sim.objects import OBJECTS, ObjectSpec
from svrl_sim.scene_spec import (
    ARM_KP,
    ARM_KV,
    FLOOR_Z,
    GRIPPER_FORCE,
    GRIPPER_KP,
    GRIPPER_KV,
    IDENTITY_QUAT,
    LIGHTS,
    MAIN_CAMERA_EYE,
    MAIN_CAMERA_FOVY,
    MAIN_CAMERA_TARGET,
    PHYSICS_DT,
    STATIC_PARTS,
    WRIST_CAMERA_FOVY,
    ObjectModel,
    Part,
    library,
    look_at_matrix,
    park_position,
)

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


_COLLISION_BITS = {"static": _STATIC, "object": _OBJECT, "none": _NONE}


def _add_part(body, part: Part):
    """One primitive of `svrl_sim.scene_spec` as a geom (colliding parts get the object friction)."""
    kw = {} if part.collision == "none" else {"friction": list(_OBJECT_FRICTION), "condim": 4}
    bits = _COLLISION_BITS[part.collision]
    if part.shape == "box":
        kind, size = mujoco.mjtGeom.mjGEOM_BOX, list(part.size)
    else:
        kind, size = mujoco.mjtGeom.mjGEOM_CYLINDER, [part.size[0], part.size[2], 0]
    g = body.add_geom(
        type=kind,
        pos=list(part.pos),
        size=size,
        rgba=list(part.rgba),
        contype=bits[0],
        conaffinity=bits[1],
        **kw,
    )
    if part.quat != IDENTITY_QUAT:
        g.quat = list(part.quat)
    if part.mass is not None:
        g.mass = part.mass
    return g


def _build_object(spec: mujoco.MjSpec, obj: ObjectModel, index: int) -> None:
    """A library object from its scene_spec geometry, parked until a task activates it."""
    park = park_position(index)
    body = spec.worldbody.add_body(name=obj.name, pos=list(park), mocap=not obj.movable)
    if obj.movable:
        body.add_freejoint(name=f"{obj.name}_joint")
    children = {}
    joints = {j.body: j for j in obj.joints}
    for part in obj.parts:
        target = body
        if part.body:
            if part.body not in children:  # a jointed child body, created with its first part
                joint = joints[part.body]
                child = body.add_body(name=part.body, pos=[0, 0, 0])
                if joint.gravity_compensated:
                    child.gravcomp = 1.0
                child.add_joint(
                    name=joint.name,
                    type=mujoco.mjtJoint.mjJNT_SLIDE,
                    axis=list(joint.axis),
                    range=list(joint.range),
                    damping=[joint.damping, 0, 0],
                    frictionloss=joint.frictionloss,
                )
                children[part.body] = child
            target = children[part.body]
        _add_part(target, part)


_ARM_COLOURS = {
    "base_link": (0.35, 0.36, 0.38, 1.0),
    "link4": (0.92, 0.92, 0.90, 1.0),
    "link7": (0.35, 0.36, 0.38, 1.0),
    "left_finger": (0.15, 0.15, 0.16, 1.0),
    "right_finger": (0.15, 0.15, 0.16, 1.0),
}

# Position servos on the arm joints: gains in scene_spec (ARM_KP / ARM_KV, shared with other simulators). With
# gravity compensation on the links they track a 2 cm / 0.1 s Cartesian step within the control period.
_ARM_ARMATURE = (0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05)


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
    spec.body(robot.WRIST_CAMERA_LINK).add_camera(name=CAMERA_WRIST, fovy=WRIST_CAMERA_FOVY)

    # Actuators: position servos with the URDF effort limits (already imported as actuatorfrcrange).
    lower, upper, _ = robot.arm_limits()
    for i, name in enumerate(robot.ARM_JOINTS):
        act = spec.add_actuator(name=f"{name}_pos", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=ARM_KP[i], kv=ARM_KV[i])
        act.ctrlrange = [lower[i], upper[i]]
        act.ctrllimited = 1
    tendon = spec.add_tendon(name="gripper_opening")
    tendon.wrap_joint(robot.FINGER_JOINTS[0], 0.5)
    tendon.wrap_joint(robot.FINGER_JOINTS[1], 0.5)
    grip = spec.add_actuator(name="gripper_pos", target="gripper_opening", trntype=mujoco.mjtTrn.mjTRN_TENDON)
    grip.set_to_position(kp=GRIPPER_KP, kv=GRIPPER_KV)
    grip.ctrlrange = [0.0, robot.FINGER_OPEN]
    grip.ctrllimited = 1
    grip.forcerange = [-GRIPPER_FORCE, GRIPPER_FORCE]
    grip.forcelimited = 1
    for name in robot.FINGER_JOINTS:
        spec.joint(name).damping = [2.0, 0.0, 0.0]
        spec.joint(name).armature = 0.01

    # Table (top at z = 0; MuJoCo's default condim), the backdrop, and a floor far below for dropped objects.
    world = spec.worldbody
    table, *others = STATIC_PARTS
    _add_box(world, table.pos, table.size, table.rgba, _STATIC, friction=list(_OBJECT_FRICTION))
    world.add_geom(
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        pos=[0, 0, FLOOR_Z],
        size=[3, 3, 0.1],
        rgba=[0.5, 0.5, 0.52, 1],
        contype=_STATIC[0],
        conaffinity=_STATIC[1],
    )
    for part in others:
        _add_part(world, part)
    for light in LIGHTS:
        world.add_light(
            name=light.name,
            pos=list(light.pos),
            dir=list(light.direction),
            castshadow=False,
            diffuse=list(light.diffuse),
            specular=[0.05, 0.05, 0.05],
            type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
        )

    # Main camera: in front of the table looking back at the robot (LIBERO "agentview"-like).
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, look_at_matrix(MAIN_CAMERA_EYE, MAIN_CAMERA_TARGET).flatten())
    world.add_camera(name=CAMERA_MAIN, pos=list(MAIN_CAMERA_EYE), quat=list(quat), fovy=MAIN_CAMERA_FOVY)

    for i, obj in enumerate(library()):
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
