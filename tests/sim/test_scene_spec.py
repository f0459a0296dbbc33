"""The simulator-neutral scene description is what MuJoCo builds, and the predicates work from plain poses.

`svrl_sim.scene_spec` is what the Isaac Sim bridge builds its scenes from, and `goals.PoseState` is how it
judges success. Isaac Sim cannot run on this machine, so both are checked against the embedded simulator:
every task's spec against the scene MuJoCo actually holds after reset, and every goal kind's predicate on
recorded expert rollouts, evaluated once on MuJoCo's state and once on plain pose dicts sent through JSON.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from svrl_sim.goals import PoseState, holds, pose_state, task_success
from svrl_sim.scene_spec import quat_to_mat, scene_spec
from svrl_sim.tasks import InitState, UnknownTaskError, all_tasks, get_task

from .conftest import IMAGE_SIZE

ALL_TASKS = [t.name for t in all_tasks()]


def _same_rotation(q_mujoco: np.ndarray, q_spec) -> bool:
    return bool(abs(abs(float(np.dot(q_mujoco, np.asarray(q_spec)))) - 1.0) < 1e-9)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_spec_is_what_mujoco_builds_after_reset(env, task: str) -> None:
    import mujoco

    from svrl_sim import robot
    from svrl_sim.scene import HIDDEN_GROUP, VISIBLE_GROUP

    init = InitState("eval", 7)
    env.reset(task, init, render=False)
    spec = scene_spec(task, init, image_size=IMAGE_SIZE, control_hz=env.control_hz)
    m, d, idx = env.model, env.data, env.index
    assert (spec.task, spec.instruction, spec.max_steps) == (task, env.instruction, env.max_steps)
    assert spec.physics_dt == m.opt.timestep and spec.control_hz == env.control_hz
    assert {o.name for o in spec.active_objects} == get_task(task).objects
    np.testing.assert_array_equal(d.qpos[idx.arm_qpos], spec.robot.initial_q)
    np.testing.assert_array_equal(d.qpos[idx.finger_qpos], spec.robot.initial_fingers)
    assert spec.robot.arm_joints == robot.ARM_JOINTS and spec.robot.finger_joints == robot.FINGER_JOINTS

    assert [o.name for o in spec.objects] == list(idx.objects)
    for obj in spec.objects:
        entry = idx.objects[obj.name]
        root = entry.body_ids[0]
        np.testing.assert_allclose(d.xpos[root], obj.pos, atol=1e-12, err_msg=obj.name)
        assert _same_rotation(d.xquat[root], obj.quat), obj.name
        assert set(m.geom_group[entry.geom_ids]) == {VISIBLE_GROUP if obj.active else HIDDEN_GROUP}
        for joint, q in obj.joint_positions.items():
            assert d.qpos[m.joint(joint).qposadr[0]] == q, (obj.name, joint)
        # every part, in the order it was built: kind, size, colour, world pose, collision class, mass
        parts = obj.world_parts()
        assert len(parts) == len(entry.geom_ids), obj.name
        for k, (g, (part, pos, quat)) in enumerate(zip(sorted(entry.geom_ids), parts, strict=True)):
            where = f"{obj.name} part {k}"
            if part.shape == "box":
                assert m.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX, where
                np.testing.assert_allclose(m.geom_size[g], part.size, err_msg=where)
            else:
                assert m.geom_type[g] == mujoco.mjtGeom.mjGEOM_CYLINDER, where
                np.testing.assert_allclose(m.geom_size[g][:2], (part.size[0], part.size[2]), err_msg=where)
                assert part.size[0] == part.size[1], where
            np.testing.assert_allclose(m.geom_rgba[g], part.rgba, err_msg=where)
            np.testing.assert_allclose(d.geom_xpos[g], pos, atol=1e-9, err_msg=where)
            np.testing.assert_allclose(
                d.geom_xmat[g].reshape(3, 3), quat_to_mat(quat), atol=1e-9, err_msg=where
            )
            base = list(entry.geom_ids).index(g)
            bits = (int(entry.base_contype[base]), int(entry.base_conaffinity[base]))
            assert bits == {"static": (1, 0), "object": (1, 1), "none": (0, 0)}[part.collision], where
            if part.mass is not None and obj.model.movable:
                assert m.body_mass[root] == pytest.approx(part.mass), where

    # Static scenery on the world body, in order: table, (floor plane), backdrop.
    world_boxes = [
        g for g in range(m.ngeom) if m.geom_bodyid[g] == 0 and m.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX
    ]
    assert len(world_boxes) == len(spec.static_parts)
    for g, part in zip(world_boxes, spec.static_parts, strict=True):
        np.testing.assert_allclose(m.geom_pos[g], part.pos)
        np.testing.assert_allclose(m.geom_size[g], part.size)

    for cam in spec.cameras:
        c = idx.camera_ids[cam.name]
        assert m.cam_fovy[c] == pytest.approx(cam.fovy_deg)
        body = m.body(int(m.cam_bodyid[c])).name
        assert body == cam.parent or (cam.parent == "world" and body == "world")
        np.testing.assert_allclose(m.cam_pos[c], cam.pos, atol=1e-12)
        assert _same_rotation(m.cam_quat[c], cam.quat), cam.name
        assert (cam.width, cam.height) == (env.image_size, env.image_size)


def test_main_camera_spec_projects_objects_where_mujoco_renders_them(env) -> None:
    """Pose + intrinsics + axis convention: the red cube's centre projects onto red pixels, the table
    beside it does not (what Isaac Sim's camera must reproduce from the same spec)."""
    task, init = "goal/put_red_cube_on_plate", InitState("eval", 0)
    obs, _ = env.reset(task, init)
    image = obs["images"]["main"].astype(int)
    spec = scene_spec(task, init, image_size=IMAGE_SIZE)
    cam = spec.camera("main")
    fx, fy, cx, cy = cam.intrinsics()

    def pixel(world) -> tuple[int, int]:
        local = quat_to_mat(cam.quat).T @ (np.asarray(world) - np.asarray(cam.pos))
        assert local[2] < 0  # in front of the camera: it looks along its -z
        u = cx + fx * local[0] / -local[2]
        v = cy - fy * local[1] / -local[2]  # image rows grow downwards, the camera's +y is up
        return round(v), round(u)

    def red(rgb) -> bool:
        return rgb[0] > 120 and rgb[0] > 2 * rgb[1] and rgb[0] > 2 * rgb[2]

    cube = spec.object("cube_red")
    assert red(image[pixel(cube.pos)])
    beside = np.asarray(cube.pos) + np.array([0.0, 0.08, -0.02])  # the table top next to it
    assert not red(image[pixel(beside)])


def test_spec_is_plain_data_and_bad_requests_fail_clearly() -> None:
    spec = scene_spec("goal/open_drawer", ("eval", 3))
    text = json.dumps(spec.to_dict())  # only numbers, strings, lists and dicts
    assert '"drawer_joint"' in text and spec.robot.urdf.endswith("svrl_arm.urdf")
    assert spec.object("cabinet").active and not spec.object("can").active
    with pytest.raises(UnknownTaskError, match="did you mean"):
        scene_spec("goal/open_drawr", ("eval", 0))
    with pytest.raises(IndexError, match=r"valid indices are 0\.\.49"):
        scene_spec("goal/open_drawer", ("eval", 50))
    with pytest.raises(KeyError, match="no object 'sofa'"):
        spec.object("sofa")


def test_pose_state_rejects_bad_data_and_names_missing_objects() -> None:
    with pytest.raises(ValueError, match="7 finite numbers"):
        PoseState({"cube_red": (0.5, 0.0, float("nan"), 1, 0, 0, 0)})
    with pytest.raises(ValueError, match="7 finite numbers"):
        PoseState({"cube_red": (0.5, 0.0, 0.02)})
    state = PoseState.from_dict({"poses": {"cube_red": [0.5, 0.0, 0.02, 1, 0, 0, 0]}})
    with pytest.raises(KeyError, match="no pose for object 'plate'"):
        state.pos("plate")


def _task_with(kind: str, target: str | None = None) -> str:
    for t in all_tasks():
        if len(t.goals) == 1 and t.goals[0].kind == kind and (target is None or t.goals[0].target == target):
            return t.name
    raise AssertionError(f"no single-goal task of kind {kind!r} (target {target!r})")


# One expert rollout per goal kind and target shape (and both drawer tasks' states): every kind of predicate.
PARITY_TASKS = [
    _task_with("on", "plate"),
    _task_with("on", "box"),
    _task_with("in", "bowl"),
    _task_with("in", "basket"),
    "long/open_drawer_and_put_red_cube_in_it",  # drawer_open, then in the drawer (cabinet)
    _task_with("stack"),
    _task_with("on_pad"),
    _task_with("lift"),
    _task_with("button"),
    _task_with("drawer_closed"),
]


def test_predicates_give_the_same_answers_on_plain_poses_as_on_mujoco_state(env) -> None:
    """Recorded expert rollouts: each goal's predicate on MuJoCo's state == on the JSON'd pose snapshot."""
    seen: dict[str, set[bool]] = {}
    for task in PARITY_TASKS:
        t = get_task(task)
        env.reset(task, InitState("eval", 1), render=False)
        names = sorted(t.objects)
        start = {
            n: np.asarray(p)
            for n, p in json.loads(json.dumps({n: env.view.pos(n).tolist() for n in names})).items()
        }

        _check_parity(env, t, names, start, seen)
        terminated = truncated = False
        while not (terminated or truncated):
            _, _, terminated, truncated, _ = env.step(env.expert_action(), render=False)
            _check_parity(env, t, names, start, seen)
        assert terminated, (
            f"the scripted expert did not finish {task}: the rollout proves less than it should"
        )
    kinds = {"on", "in", "stack", "on_pad", "lift", "drawer_open", "drawer_closed", "button"}
    assert kinds <= set(seen) and all(seen[k] == {True, False} for k in kinds), seen


def _check_parity(env, t, names: list[str], start: dict, seen: dict[str, set[bool]]) -> None:
    wire = json.loads(json.dumps(_as_dict(pose_state(env.view, names))))  # what another process sends
    plain = PoseState.from_dict(wire)
    for goal in t.goals:
        truth = holds(goal, env.view, env._start)
        assert holds(goal, plain, start) == truth, (t.name, goal, env.step_count)
        seen.setdefault(goal.kind, set()).add(truth)
    assert task_success(t, plain, start) == env.success()
    if "cabinet" in t.objects:
        for a, b in zip(plain.drawer_frame(), env.view.drawer_frame(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-9)


def _as_dict(state: PoseState) -> dict:
    return {
        "poses": {n: [float(v) for v in p] for n, p in state.poses.items()},
        "drawer": state.drawer,
        "button": state.button,
        "touching": sorted(state.touching),
    }
