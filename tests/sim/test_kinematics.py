"""The one kinematics module: the simulator, arm_controller and teleop must map an action identically.

Two properties carry "the same policy node drives the real robot": (1) SimEnv still steps exactly as it did
before the mapping moved into `svrl_sim.kinematics` (checked against the pre-move code, kept here as the
reference), and (2) a robot-only model built from the URDF, fed only the measured joint positions (what a
ROS node has), gives the simulator's proprio, Jacobian and joint targets bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from svrl_sim import robot
from svrl_sim._mj import mujoco
from svrl_sim.env import SimEnv
from svrl_sim.kinematics import ArmKinematics, finger_position, gripper_command, gripper_opening
from svrl_sim.tasks import InitState, tasks_in_suite

# The pre-move constants, written out: a change to the module's values must fail here too.
MAX_LINEAR_SPEED, MAX_ANGULAR_SPEED, IK_DAMPING, IK_POSTURE_GAIN, JOINT_LIMIT_MARGIN = (
    0.2,
    1.0,
    0.02,
    0.05,
    0.01,
)


def _pre_move_step(env: SimEnv, a: np.ndarray) -> None:
    """SimEnv._apply for ee_delta as it was written before svrl_sim.kinematics existed."""
    m, d, idx = env.model, env.data, env.index
    lower, upper, _ = robot.arm_limits()
    max_lin, max_rot = MAX_LINEAR_SPEED * env.control_dt, MAX_ANGULAR_SPEED * env.control_dt
    err = np.concatenate([np.clip(a[:3], -max_lin, max_lin), np.clip(a[3:6], -max_rot, max_rot)])
    jacp, jacr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
    mujoco.mj_jacSite(m, d, jacp, jacr, idx.ee_site)
    jac = np.vstack([jacp[:, idx.arm_dof], jacr[:, idx.arm_dof]])
    jjt = jac @ jac.T + (IK_DAMPING**2) * np.eye(6)
    dq = jac.T @ np.linalg.solve(jjt, err)
    q = d.qpos[idx.arm_qpos]
    null = np.eye(7) - jac.T @ np.linalg.solve(jjt, jac)
    dq += null @ (IK_POSTURE_GAIN * (np.asarray(robot.HOME_Q) - q))
    q_target = np.clip(q + dq, lower + JOINT_LIMIT_MARGIN, upper - JOINT_LIMIT_MARGIN)
    grip = float(np.clip(a[-1], -1.0, 1.0))
    d.ctrl[idx.arm_act] = q_target
    d.ctrl[idx.grip_act] = robot.FINGER_OPEN * (1.0 - grip) / 2.0
    for _ in range(env.n_substeps):
        mujoco.mj_step(m, d)
    mujoco.mj_forward(m, d)


def _pre_move_proprio(env: SimEnv) -> np.ndarray:
    d, idx = env.data, env.index
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, d.site_xmat[idx.ee_site])
    if quat[0] < 0:
        quat = -quat
    opening = np.clip(d.qpos[idx.finger_qpos].sum() / (2 * robot.FINGER_OPEN), 0.0, 1.0)
    return np.concatenate([d.qpos[idx.arm_qpos], [opening], d.site_xpos[idx.ee_site], quat]).astype(
        np.float32
    )


@pytest.mark.parametrize("task_index", [0, 3])
def test_simenv_steps_as_before_the_move(task_index: int) -> None:
    task = tasks_in_suite("spatial")[task_index].name
    new, old = SimEnv(image_size=32), SimEnv(image_size=32)
    new.reset(task, InitState("eval", 2), render=False)
    old.reset(task, InitState("eval", 2), render=False)
    rng = np.random.default_rng(task_index)
    for _ in range(40):
        a = new.expert_action() + rng.normal(0, 0.005, 7).astype(np.float32)
        new.step(a, render=False)
        _pre_move_step(old, a.astype(np.float64))
        assert np.array_equal(new.data.qpos, old.data.qpos)
        assert np.array_equal(new.proprio(), _pre_move_proprio(old))


def test_robot_only_model_matches_the_scene_bit_for_bit() -> None:
    env = SimEnv(image_size=32)
    env.reset(tasks_in_suite("long")[0].name, InitState("train", 5), render=False)
    kin = ArmKinematics()
    for _ in range(30):
        a = env.expert_action().astype(np.float64)
        kin.set_joint_positions(env.data.qpos[env.index.arm_qpos], env.data.qpos[env.index.finger_qpos])
        assert np.array_equal(kin.proprio(), env.proprio())
        assert np.array_equal(kin.jacobian(), env.kinematics.jacobian())
        want = env.kinematics.ee_delta_target(a[:3], a[3:6], env.control_dt)
        assert np.array_equal(kin.ee_delta_target(a[:3], a[3:6], env.control_dt), want)
        env.step(a.astype(np.float32), render=False)


def test_step_command_reproduces_step() -> None:
    """sim_node drives SimEnv with joint targets; with the kinematics' targets it must equal step()."""
    task = tasks_in_suite("spatial")[1].name
    by_action, by_command = SimEnv(image_size=32), SimEnv(image_size=32)
    by_action.reset(task, InitState("eval", 0), render=False)
    by_command.reset(task, InitState("eval", 0), render=False)
    kin = ArmKinematics()
    for _ in range(60):
        a = by_action.expert_action()
        kin.set_joint_positions(
            by_command.data.qpos[by_command.index.arm_qpos],
            by_command.data.qpos[by_command.index.finger_qpos],
        )
        target = kin.ee_delta_target(a[:3].astype(np.float64), a[3:6].astype(np.float64), 0.1)
        _, r1, t1, u1, _ = by_action.step(a, render=False)
        _, r2, t2, u2, _ = by_command.step_command(target, finger_position(a[-1]), render=False)
        assert np.array_equal(by_action.data.qpos, by_command.data.qpos)
        assert (r1, t1, u1) == (r2, t2, u2)
        if t1 or u1:
            break


def test_step_command_refuses_bad_targets_and_runs_after_the_episode() -> None:
    env = SimEnv(image_size=32)
    env.reset(tasks_in_suite("spatial")[0].name, InitState("eval", 0), render=False)
    before = env.data.qpos.copy()
    with pytest.raises(ValueError, match="7 finite"):
        env.step_command(np.full(7, np.nan), 0.02, render=False)
    with pytest.raises(ValueError, match="finite"):
        env.step_command(np.asarray(robot.HOME_Q), float("inf"), render=False)
    assert np.array_equal(env.data.qpos, before)
    env._running = False  # as after success or the time limit
    _, reward, terminated, truncated, info = env.step_command(np.asarray(robot.HOME_Q), 0.0, render=False)
    assert (reward, terminated, truncated, info["step"]) == (0.0, False, False, 0)


def test_gripper_mapping_round_trip_and_input_checks() -> None:
    assert finger_position(-1.0) == robot.FINGER_OPEN
    assert finger_position(1.0) == 0.0
    assert finger_position(7.0) == 0.0  # clipped, never a negative position
    assert gripper_opening(np.array([robot.FINGER_OPEN, robot.FINGER_OPEN])) == 1.0
    kin = ArmKinematics()
    with pytest.raises(ValueError):
        kin.set_joint_positions(np.array([0.0, np.nan, 0, -2, 0, 2, 0]))
    with pytest.raises(RuntimeError, match="simulator"):
        SimEnv(image_size=32).kinematics.set_joint_positions(np.asarray(robot.HOME_Q))


def test_ee_delta_from_target_inverts_the_ik_step() -> None:
    """Recording turns commanded joint targets back into the action: exact wherever no limit clipped."""
    kin = ArmKinematics()
    rng = np.random.default_rng(7)
    for _ in range(50):
        q = np.clip(np.asarray(robot.HOME_Q) + rng.normal(scale=0.3, size=7), kin.q_lo + 0.2, kin.q_hi - 0.2)
        kin.set_joint_positions(q)
        action = rng.uniform(-1, 1, size=6) * np.r_[[0.02] * 3, [0.1] * 3]  # inside the speed limits
        target = kin.ee_delta_target(action[:3], action[3:], control_dt=0.1)
        np.testing.assert_allclose(kin.ee_delta_from_target(target, control_dt=0.1), action, atol=1e-12)
    for g in (-1.0, -0.25, 0.0, 0.6, 1.0):
        assert gripper_command(finger_position(g)) == pytest.approx(g, abs=1e-12)
    with pytest.raises(ValueError, match="7 finite"):
        kin.ee_delta_from_target(np.full(7, np.nan), control_dt=0.1)
