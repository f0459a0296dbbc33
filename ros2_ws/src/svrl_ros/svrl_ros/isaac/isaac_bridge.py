"""isaac_bridge: one simulator instance of the robot graph, with Isaac Sim as its physics and renderer.

Runs in Isaac Sim's Python (Isaac Sim 5.1, Python 3.11):

    /isaac-sim/python.sh -m svrl_ros.isaac.isaac_bridge --ros-args -r __ns:=/env_0 -p image_size:=128

The ROS side IS `sim_node.SimNode`: the same topics (joint states, both cameras with camera_info, `/clock`,
`sim/episode_status`, the arm and gripper command topics) and the same services (`sim/reset_episode`,
`sim/step`, `sim/step_chunk`), the same parameters, lock-step pairing and fault handling, because the node
object is sim_node's own. Only the env behind it differs: `engine.BridgeEnv` over `IsaacEngine` below. That
choice is deliberate. Isaac Sim's own ROS 2 bridge (OmniGraph "ROS2 Camera Helper", "ROS2 Publish Joint
State", "ROS2 Publish Clock") publishes on Isaac's render/physics ticks with Isaac's stamps; the lock-step
contract (a state is published once, after the step that made it, stamped with the sim time the episode
services answer with, joint_states last) could not be kept with them, and a second copy of the contract would
drift from sim_node's. So the bridge publishes through rclpy, as sim_node does (docs/isaac_sim.md).

`--engine mujoco` runs the same program on the embedded MuJoCo simulator (no GPU, no Isaac Sim): what the
tests run, and a way to check a setup before the GPU machine is involved.

Every Isaac Sim import is in this module, inside functions that run after SimulationApp has started (Isaac
Sim's rule: its modules load only once the app exists). Importing this module never needs Isaac Sim.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from svrl_ros.isaac.engine import JOINT_NAMES, BridgeEnv, Engine, MujocoEngine, slide_travel, usd_camera_lens

ISAAC_SIM_VERSION = "5.1.0"  # the release this bridge is written against (docker/Dockerfile.isaac pins it)
EXIT_NO_ISAAC = 2
DOCS = "docs/isaac_sim.md"


class IsaacSimMissingError(RuntimeError):
    """The `isaacsim` package is not importable: this is not Isaac Sim's Python."""


def require_isaacsim() -> None:
    """Fail early with what to do, before anything else starts."""
    if importlib.util.find_spec("isaacsim") is None:
        raise IsaacSimMissingError(
            f"isaac_bridge needs Isaac Sim {ISAAC_SIM_VERSION} (the `isaacsim` package) and this Python "
            f"({sys.executable}) does not have it. Run it with Isaac Sim's Python, e.g. in the svrl Isaac image "
            f"(docker/Dockerfile.isaac): `/isaac-sim/python.sh -m svrl_ros.isaac.isaac_bridge --ros-args ...`, "
            f"or install the `isaac` extra on an RTX GPU machine (Python 3.11). Without a GPU, "
            f"`--engine mujoco` runs the same bridge on the embedded simulator. See {DOCS}."
        )


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The bridge's own options, and the ROS arguments (from `--ros-args` on) that go to the node as they are."""
    argv = list(argv)
    cut = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="isaac_bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("isaac", "mujoco"), default="isaac")
    parser.add_argument(
        "--no-headless", dest="headless", action="store_false", help="open Isaac Sim's window"
    )
    parser.add_argument(
        "--renderer",
        default="RaytracedLighting",
        help="Isaac Sim renderer: RaytracedLighting (real-time RTX, the default) or PathTracing",
    )
    parser.add_argument(
        "--render-frames",
        type=int,
        default=2,
        help="app updates before reading the cameras (RTX needs more than one to settle after a jump)",
    )
    options = parser.parse_args(argv[:cut])
    if options.render_frames < 1:
        parser.error(f"--render-frames must be >= 1, got {options.render_frames}")
    return options, ["--ros-args", *argv[cut + 1 :]] if cut < len(argv) else []


def make_sim_node(env_factory: Callable[..., Any], **node_kwargs):
    """sim_node's SimNode with `env_factory(image_size=..., action_space=...)` in place of SimEnv."""
    from svrl_ros.sim_node import SimNode

    return SimNode(env_factory=env_factory, **node_kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    options, ros_args = parse_args(sys.argv[1:] if argv is None else argv)
    app = None
    if options.engine == "isaac":
        try:
            require_isaacsim()
        except IsaacSimMissingError as error:
            print(f"isaac_bridge: {error}", file=sys.stderr)
            return EXIT_NO_ISAAC
        app = start_app(headless=options.headless, renderer=options.renderer)

    def make_env(image_size: int, action_space: str = "ee_delta", **_kw) -> BridgeEnv:
        engine: Engine
        if app is None:
            engine = MujocoEngine(image_size=image_size)
        else:
            engine = IsaacEngine(app, image_size=image_size, render_frames=options.render_frames)
        return BridgeEnv(engine, image_size=image_size, action_space=action_space)

    from svrl_ros.node_runner import FatalError, run_node
    from svrl_ros.sim_node import SimNodeError

    try:
        return run_node(
            lambda: make_sim_node(make_env),
            "isaac_bridge",
            args=ros_args,
            fatal=(FatalError((SimNodeError,)),),
        )
    finally:
        if app is not None:
            app.close()


# ----------------------------------------------------------------------------------------------------------
# Isaac Sim (everything below runs only in Isaac Sim's Python, after start_app)


def start_app(headless: bool, renderer: str):
    """Isaac Sim's standalone app (isaacsim.SimulationApp): must exist before any other Isaac import."""
    from isaacsim import SimulationApp

    return SimulationApp({"headless": headless, "renderer": renderer, "anti_aliasing": 0, "multi_gpu": False})


_AXES = {(1, 0, 0): ("X", 1.0), (-1, 0, 0): ("X", -1.0), (0, 0, 1): ("Z", 1.0), (0, 0, -1): ("Z", -1.0)}


class IsaacEngine:
    """The scene of `svrl_sim.scene_spec` in Isaac Sim: the URDF arm, primitive objects, two cameras.

    Built once with every library object (as the MuJoCo scene is); `load` moves, shows and hides them per
    episode. Physics: PhysX at the spec's 2 ms step, one control period = `control_dt / physics_dt` steps
    with the arm's position drives holding their targets. Objects are USD primitives with rigid-body and
    collision APIs; fixed ones are kinematic, the drawer and the button cap are prismatic joints on them.
    """

    def __init__(self, app, image_size: int, control_hz: float = 10.0, render_frames: int = 2) -> None:
        from isaacsim.core.api import World
        from isaacsim.core.utils.extensions import enable_extension

        from svrl_sim.scene_spec import scene_spec
        from svrl_sim.tasks import InitState, all_tasks

        enable_extension("isaacsim.asset.importer.urdf")
        app.update()
        self._app = app
        self._render_frames = int(render_frames)
        spec = scene_spec(all_tasks()[0], InitState("eval", 0), image_size=image_size, control_hz=control_hz)
        self._substeps = round(1.0 / (spec.control_hz * spec.physics_dt))
        self._world = World(
            stage_units_in_meters=1.0, physics_dt=spec.physics_dt, rendering_dt=1.0 / control_hz
        )
        self._stage = self._world.stage
        self._body_paths: dict[tuple[str, str], str] = {}  # (object, body) -> prim path
        self._part_paths: dict[str, list[str]] = {}
        self._build_static(spec)
        robot_root = self._import_robot(spec)
        for obj in spec.objects:
            self._build_object(obj)
        self._camera_paths = self._build_cameras(spec, robot_root)
        self._make_handles(spec, robot_root)

    # ------------------------------------------------------------------------------------------ building
    def _build_static(self, spec) -> None:
        from pxr import Gf, UsdLux

        from svrl_sim.scene_spec import FLOOR_Z

        for i, part in enumerate(spec.static_parts):
            self._add_part(f"/World/static/part_{i}", part)
        self._world.scene.add_default_ground_plane(z_position=FLOOR_Z)  # catches dropped objects
        for light in spec.lights:
            sun = UsdLux.DistantLight.Define(self._stage, f"/World/lights/{light.name}")
            sun.CreateIntensityAttr(3000.0)
            sun.CreateColorAttr(Gf.Vec3f(*light.diffuse) / max(light.diffuse))
            direction = np.asarray(light.direction) / np.linalg.norm(light.direction)
            self._orient(sun.GetPrim(), (0.0, 0.0, 0.0), _quat_from_minus_z(direction))
        dome = UsdLux.DomeLight.Define(self._stage, "/World/lights/ambient")  # MuJoCo's headlight ambient
        dome.CreateIntensityAttr(600.0)

    def _add_part(self, path: str, part, dynamic_mass: bool = False) -> None:
        from pxr import Gf, UsdGeom, UsdPhysics

        if part.shape == "box":
            geom = UsdGeom.Cube.Define(self._stage, path)
            geom.CreateSizeAttr(2.0)
            scale = Gf.Vec3f(*part.size)
        else:
            geom = UsdGeom.Cylinder.Define(self._stage, path)
            geom.CreateAxisAttr("Z")
            geom.CreateRadiusAttr(part.size[0])
            geom.CreateHeightAttr(2.0 * part.size[2])
            scale = Gf.Vec3f(1.0, 1.0, 1.0)
        geom.CreateDisplayColorAttr([Gf.Vec3f(*part.rgba[:3])])
        xf = UsdGeom.Xformable(geom)
        xf.AddTranslateOp().Set(Gf.Vec3d(*part.pos))
        w, x, y, z = part.quat
        xf.AddOrientOp().Set(Gf.Quatf(w, x, y, z))
        xf.AddScaleOp().Set(scale)
        if part.collision != "none":
            UsdPhysics.CollisionAPI.Apply(geom.GetPrim())
        if part.mass is not None and dynamic_mass:
            UsdPhysics.MassAPI.Apply(geom.GetPrim()).CreateMassAttr(part.mass)

    def _orient(self, prim, pos, quat) -> None:
        from pxr import Gf, UsdGeom

        xf = UsdGeom.Xformable(prim)
        xf.ClearXformOpOrder()
        xf.AddTranslateOp().Set(Gf.Vec3d(*pos))
        xf.AddOrientOp().Set(Gf.Quatf(*(float(v) for v in quat)))

    def _rigid_body(self, path: str, pos, quat, kinematic: bool, no_gravity: bool):
        from pxr import PhysxSchema, UsdPhysics

        prim = self._stage.DefinePrim(path, "Xform")
        self._orient(prim, pos, quat)
        body = UsdPhysics.RigidBodyAPI.Apply(prim)
        body.CreateKinematicEnabledAttr(kinematic)
        PhysxSchema.PhysxRigidBodyAPI.Apply(prim).CreateDisableGravityAttr(no_gravity)
        return prim

    def _build_object(self, obj) -> None:
        from pxr import Gf, UsdPhysics

        model = obj.model
        root = f"/World/objects/{model.name}"
        self._body_paths[(model.name, "")] = root
        self._rigid_body(root, obj.pos, obj.quat, kinematic=not model.movable, no_gravity=not obj.active)
        for joint in model.joints:
            child = f"{root}_{joint.body}"
            pos, quat = obj.body_pose(joint.body)
            self._rigid_body(
                child, pos, quat, kinematic=False, no_gravity=joint.gravity_compensated or not obj.active
            )
            self._body_paths[(model.name, joint.body)] = child
            axis, sign = _AXES[tuple(int(v) for v in joint.axis)]
            lo, hi = sorted(sign * v for v in joint.range)
            slide = UsdPhysics.PrismaticJoint.Define(self._stage, f"{root}_{joint.name}")
            slide.CreateBody0Rel().SetTargets([root])
            slide.CreateBody1Rel().SetTargets([child])
            slide.CreateAxisAttr(axis)
            slide.CreateLowerLimitAttr(lo)
            slide.CreateUpperLimitAttr(hi)
            slide.CreateLocalPos0Attr(Gf.Vec3f(0.0, 0.0, 0.0))
            slide.CreateLocalPos1Attr(Gf.Vec3f(0.0, 0.0, 0.0))
            drive = UsdPhysics.DriveAPI.Apply(slide.GetPrim(), "linear")
            drive.CreateStiffnessAttr(0.0)
            drive.CreateDampingAttr(joint.damping)  # frictionloss has no PhysX drive equivalent (docs)
        paths = []
        for k, part in enumerate(model.parts):
            body = self._body_paths[(model.name, part.body)]
            path = f"{body}/part_{k}"
            self._add_part(path, part, dynamic_mass=True)
            paths.append(path)
        self._part_paths[model.name] = paths

    def _import_robot(self, spec) -> str:
        import omni.kit.commands
        from pxr import PhysxSchema, Usd, UsdPhysics

        _, config = omni.kit.commands.execute("URDFCreateImportConfig")
        config.merge_fixed_joints = False  # tool0 and wrist_camera_link must stay links
        config.fix_base = True
        config.import_inertia_tensor = True
        config.convex_decomp = False
        config.self_collision = False
        config.distance_scale = 1.0
        config.make_default_prim = False
        config.create_physics_scene = False
        _, root = omni.kit.commands.execute(
            "URDFParseAndImportFile",
            urdf_path=spec.robot.urdf,
            import_config=config,
            get_articulation_root=True,
        )
        # As in the MuJoCo scene: links float (gravity compensation), only the finger pads collide.
        for prim in Usd.PrimRange(self._stage.GetPseudoRoot()):
            if prim.HasAPI(UsdPhysics.RigidBodyAPI) and str(prim.GetPath()).startswith(_robot_prefix(root)):
                PhysxSchema.PhysxRigidBodyAPI.Apply(prim).CreateDisableGravityAttr(True)
            if prim.HasAPI(UsdPhysics.CollisionAPI) and str(prim.GetPath()).startswith(_robot_prefix(root)):
                finger = any(p.GetName().endswith("_finger") for p in _ancestors(prim))
                UsdPhysics.CollisionAPI(prim).CreateCollisionEnabledAttr(finger)
        return str(root)

    def _link_path(self, root: str, link: str) -> str:
        from pxr import Usd

        for prim in Usd.PrimRange(self._stage.GetPrimAtPath(_robot_prefix(root))):
            if prim.GetName() == link:
                return str(prim.GetPath())
        raise RuntimeError(f"the imported robot has no link prim named {link!r} under {_robot_prefix(root)}")

    def _build_cameras(self, spec, robot_root: str) -> dict[str, str]:
        from pxr import Gf, UsdGeom

        paths = {}
        for cam in spec.cameras:
            parent = "/World" if cam.parent == "world" else self._link_path(robot_root, cam.parent)
            path = f"{parent}/svrl_{cam.name}_camera"
            prim = UsdGeom.Camera.Define(self._stage, path)
            focal, horizontal, vertical = usd_camera_lens(cam)
            prim.CreateFocalLengthAttr(focal)
            prim.CreateHorizontalApertureAttr(horizontal)
            prim.CreateVerticalApertureAttr(vertical)
            prim.CreateClippingRangeAttr(Gf.Vec2f(0.005, 3.0))  # the MuJoCo scene's znear / zfar
            self._orient(prim.GetPrim(), cam.pos, cam.quat)  # USD cameras look along -z, +y up: as the spec
            paths[cam.name] = path
        return paths

    def _make_handles(self, spec, robot_root: str) -> None:
        """Handles on the physics views, registered with the World so that one reset initialises them all."""
        from isaacsim.core.prims import RigidPrim, SingleArticulation, SingleRigidPrim
        from isaacsim.sensors.camera import Camera

        scene = self._world.scene
        self._robot = scene.add(SingleArticulation(prim_path=robot_root, name="svrl_arm"))
        self._bodies = {
            key: scene.add(SingleRigidPrim(prim_path=path, name=f"svrl_body_{i}"))
            for i, (key, path) in enumerate(self._body_paths.items())
        }
        self._contact_names = [o.name for o in spec.objects if o.model.movable]
        fingers = [self._link_path(robot_root, link) for link in ("left_finger", "right_finger")]
        self._fingers = scene.add(
            RigidPrim(
                prim_paths_expr=fingers,
                name="svrl_fingers",
                contact_filter_prim_paths_expr=[self._body_paths[(n, "")] for n in self._contact_names],
            )
        )
        self._world.reset()
        self._dof = np.array([self._robot.get_dof_index(name) for name in JOINT_NAMES])
        r = spec.robot
        controller = self._robot.get_articulation_controller()
        kps, kds = (np.array(v, dtype=float) for v in controller.get_gains())
        kps[self._dof] = [*r.arm_kp, r.gripper_kp / 2, r.gripper_kp / 2]  # the tendon servo, split per finger
        kds[self._dof] = [*r.arm_kv, r.gripper_kv / 2, r.gripper_kv / 2]
        controller.set_gains(kps=kps, kds=kds)
        self._cameras = {}
        for name, path in self._camera_paths.items():
            cam = spec.camera(name)
            camera = Camera(prim_path=path, resolution=(cam.width, cam.height))
            camera.initialize()
            self._cameras[name] = camera

    # ------------------------------------------------------------------------------------------ Engine
    def load(self, spec) -> None:
        from isaacsim.core.utils.types import ArticulationAction
        from pxr import PhysxSchema, UsdGeom, UsdPhysics

        for obj in spec.objects:
            for body_name in ("", *(j.body for j in obj.model.joints)):
                body = self._bodies[(obj.name, body_name)]
                pos, quat = obj.body_pose(body_name)
                body.set_world_pose(position=pos, orientation=quat)
                if obj.model.movable or body_name:
                    body.set_linear_velocity(np.zeros(3))
                    body.set_angular_velocity(np.zeros(3))
                prim = self._stage.GetPrimAtPath(self._body_paths[(obj.name, body_name)])
                grav_off = not obj.active or any(
                    j.body == body_name and j.gravity_compensated for j in obj.model.joints
                )
                PhysxSchema.PhysxRigidBodyAPI(prim).GetDisableGravityAttr().Set(grav_off)
            for path in self._part_paths[obj.name]:
                prim = self._stage.GetPrimAtPath(path)
                UsdGeom.Imageable(prim).GetVisibilityAttr().Set("inherited" if obj.active else "invisible")
                if prim.HasAPI(UsdPhysics.CollisionAPI):
                    UsdPhysics.CollisionAPI(prim).GetCollisionEnabledAttr().Set(obj.active)
        q = np.array([*spec.robot.initial_q, spec.robot.initial_fingers, spec.robot.initial_fingers])
        self._robot.set_joint_positions(q, joint_indices=self._dof)
        self._robot.set_joint_velocities(np.zeros(len(q)), joint_indices=self._dof)
        self._robot.apply_action(ArticulationAction(joint_positions=q, joint_indices=self._dof))

    def actuate(self, arm_target: np.ndarray, finger_target: float) -> None:
        from isaacsim.core.utils.types import ArticulationAction

        target = np.array([*arm_target, finger_target, finger_target])
        self._robot.apply_action(ArticulationAction(joint_positions=target, joint_indices=self._dof))
        for _ in range(self._substeps):
            self._world.step(render=False)

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(self._robot.get_joint_positions(joint_indices=self._dof), dtype=np.float64)
        qd = np.asarray(self._robot.get_joint_velocities(joint_indices=self._dof), dtype=np.float64)
        return q, qd

    def pose_state(self, names: Sequence[str]):
        from svrl_sim.goals import PoseState

        poses = {}
        for name in names:
            pos, quat = self._bodies[(name, "")].get_world_pose()
            poses[name] = (*np.asarray(pos, dtype=float), *np.asarray(quat, dtype=float))
        drawer = button = 0.0
        if ("cabinet", "drawer") in self._bodies and "cabinet" in names:
            drawer = slide_travel(
                *self._pose("cabinet", ""), self._pose("cabinet", "drawer")[0], (-1.0, 0.0, 0.0)
            )
        if ("button", "button_cap") in self._bodies and "button" in names:
            button = -slide_travel(
                *self._pose("button", ""), self._pose("button", "button_cap")[0], (0.0, 0.0, 1.0)
            )
        forces = np.asarray(self._fingers.get_contact_force_matrix())  # (fingers, objects, 3)
        pressed = np.linalg.norm(forces, axis=-1).max(axis=0) > 1e-6
        touching = frozenset(
            n for n, hit in zip(self._contact_names, pressed, strict=True) if hit and n in names
        )
        return PoseState(poses, drawer, button, touching)

    def _pose(self, name: str, body: str) -> tuple[np.ndarray, np.ndarray]:
        pos, quat = self._bodies[(name, body)].get_world_pose()
        return np.asarray(pos, dtype=float), np.asarray(quat, dtype=float)

    def render(self, cameras: Sequence[str]) -> dict[str, np.ndarray]:
        for _ in range(self._render_frames):
            self._world.render()
        images = {}
        for name in cameras:
            rgba = self._cameras[name].get_rgba()
            if rgba is None or np.asarray(rgba).size == 0:
                raise RuntimeError(f"Isaac Sim returned no image for camera {name!r}; raise --render-frames")
            images[name] = np.ascontiguousarray(np.asarray(rgba)[..., :3], dtype=np.uint8)
        return images

    def close(self) -> None:
        self._world.stop()


def _robot_prefix(root: str, robot_name: str = "svrl_arm") -> str:
    """The imported robot's own top prim, named after the URDF's <robot name> (URDFParseAndImportFile answers
    the articulation root, which may lie below it). Never a shared parent such as /World: what is below the
    prefix gets the robot's gravity and collision settings."""
    parts = [p for p in str(root).split("/") if p]
    if robot_name in parts:
        return "/" + "/".join(parts[: parts.index(robot_name) + 1])
    if not parts or parts == ["World"]:
        raise RuntimeError(f"URDF import answered {root!r}: cannot tell the robot's prims from the scene's")
    return "/" + "/".join(parts)


def _ancestors(prim):
    while prim and prim.GetPath().pathString != "/":
        yield prim
        prim = prim.GetParent()


def _quat_from_minus_z(direction: np.ndarray) -> tuple[float, float, float, float]:
    """Quaternion turning -z onto `direction` (a USD distant light shines along its -z)."""
    a = np.array([0.0, 0.0, -1.0])
    b = np.asarray(direction, dtype=float)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(np.dot(a, b))
    if s < 1e-12:
        return (1.0, 0.0, 0.0, 0.0) if c > 0 else (0.0, 1.0, 0.0, 0.0)
    angle = math.atan2(s, c)
    axis /= s
    return (math.cos(angle / 2), *(axis * math.sin(angle / 2)))


if __name__ == "__main__":
    raise SystemExit(main())
