"""Kinematics of the arm in `urdf/`: forward kinematics, the `ee_delta` -> joint-target mapping, the gripper.

One module, imported by the simulator, by `arm_controller` (svrl_ros) and by teleop, so that an `ee_delta`
action means the same joint targets in training, in the simulated robot graph and on the real arm. MuJoCo
is the kinematics engine: it loads the same URDF the simulator and ros2_control load, so there is no second
description of the chain to drift.

`ArmKinematics` works on any MuJoCo model that contains the arm: the simulator binds it to its full scene
(the measured state is already in `data`), a robot node builds a robot-only model from the URDF and writes
the measured joint positions in with `set_joint_positions`. The arithmetic on the arm chain is the same in
both, so the same joint positions give bit-identical tool poses, Jacobians and joint targets (tested).

Action convention (docs/contracts.md): dx, dy, dz in m per control step and droll, dpitch, dyaw as a
rotation vector in rad per control step, both in the base frame and applied to the *measured* tool pose;
gripper -1 open .. +1 closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svrl_sim import robot
from svrl_sim._mj import mujoco

MAX_LINEAR_SPEED = 0.2  # m/s: ee_delta translation limit (0.02 m per step at 10 Hz)
MAX_ANGULAR_SPEED = 1.0  # rad/s: ee_delta rotation limit (0.1 rad per step at 10 Hz)
IK_DAMPING = 0.02  # lambda of the damped least squares
IK_POSTURE_GAIN = 0.05  # null-space pull towards the home posture, per step
JOINT_LIMIT_MARGIN = 0.01  # rad kept free at each joint limit
EE_SITE = "ee"


def add_tool_site(spec: mujoco.MjSpec) -> None:
    """The tool centre point site every model of the arm carries (the scene and the robot-only model)."""
    spec.body(robot.EE_LINK).add_site(name=EE_SITE, size=[0.005, 0, 0], rgba=[1, 0, 0, 0], group=5)


def robot_only_model() -> mujoco.MjModel:
    """The arm alone, from the URDF, with the tool site: enough for kinematics, nothing to render."""
    spec = mujoco.MjSpec.from_file(str(robot.urdf_path()))
    add_tool_site(spec)
    return spec.compile()


def finger_position(gripper: float) -> float:
    """Gripper command (-1 open .. +1 closed, clipped) -> position of each finger joint in m."""
    g = float(np.clip(gripper, -1.0, 1.0))
    return robot.FINGER_OPEN * (1.0 - g) / 2.0


def gripper_command(finger: float) -> float:
    """Inverse of `finger_position`: a finger joint target (m) -> the gripper command (-1 open .. +1 closed)."""
    return float(np.clip(1.0 - 2.0 * float(finger) / robot.FINGER_OPEN, -1.0, 1.0))


def gripper_opening(finger_positions: np.ndarray) -> float:
    """Measured finger joint positions (m) -> opening in [0 closed, 1 open], as the policy's proprio has it."""
    return float(np.clip(np.sum(finger_positions) / (2 * robot.FINGER_OPEN), 0.0, 1.0))


@dataclass(frozen=True)
class ToolPose:
    position: np.ndarray  # float64[3], m, base frame
    quaternion: np.ndarray  # float64[4], (w, x, y, z) with w >= 0


class ArmKinematics:
    """Forward kinematics and the one-step damped-least-squares IK of `ee_delta` actions.

    >>> kin = ArmKinematics()                       # robot-only model from the URDF
    >>> kin.set_joint_positions(robot.HOME_Q)
    >>> q_target = kin.ee_delta_target(np.array([0.01, 0, 0]), np.zeros(3), control_dt=0.1)
    """

    def __init__(self, model: mujoco.MjModel | None = None, data: mujoco.MjData | None = None) -> None:
        self.model = model if model is not None else robot_only_model()
        self.data = data if data is not None else mujoco.MjData(self.model)
        self._owns_data = data is None
        m = self.model
        self.arm_qpos = np.array([m.joint(j).qposadr[0] for j in robot.ARM_JOINTS])
        self.arm_dof = np.array([m.joint(j).dofadr[0] for j in robot.ARM_JOINTS])
        self.finger_qpos = np.array([m.joint(j).qposadr[0] for j in robot.FINGER_JOINTS])
        self.ee_site = m.site(EE_SITE).id
        lower, upper, self.velocity_limits = robot.arm_limits()
        self.lower, self.upper = lower, upper
        self.q_lo = lower + JOINT_LIMIT_MARGIN
        self.q_hi = upper - JOINT_LIMIT_MARGIN
        self.home = np.asarray(robot.HOME_Q)
        self._jacp = np.zeros((3, m.nv))
        self._jacr = np.zeros((3, m.nv))

    # ------------------------------------------------------------------------------------ state
    def set_joint_positions(self, arm_q: np.ndarray, finger_q: np.ndarray | None = None) -> None:
        """Write measured joint positions into this object's own model state and update the kinematics.

        Only for a robot-only instance: a simulator-bound instance reads the simulator's state as it is.
        """
        if not self._owns_data:
            raise RuntimeError("this ArmKinematics reads a simulator's state; it cannot be set from outside")
        q = np.asarray(arm_q, dtype=np.float64)
        if q.shape != (7,) or not np.isfinite(q).all():
            raise ValueError(f"arm joint positions must be 7 finite numbers, got {q!r}")
        self.data.qpos[self.arm_qpos] = q
        if finger_q is not None:
            self.data.qpos[self.finger_qpos] = np.asarray(finger_q, dtype=np.float64)
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    @property
    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self.arm_qpos].copy()

    # ------------------------------------------------------------------------------------ forward
    def tool_pose(self) -> ToolPose:
        """Pose of the tool centre point in the base frame for the current joint positions."""
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self.ee_site])
        if quat[0] < 0:  # q and -q are the same rotation: report the one with w >= 0
            quat = -quat
        return ToolPose(position=self.data.site_xpos[self.ee_site].copy(), quaternion=quat)

    def jacobian(self) -> np.ndarray:
        """(6, 7) geometric Jacobian of the tool site, linear rows first, for the arm joints."""
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.ee_site)
        return np.vstack([self._jacp[:, self.arm_dof], self._jacr[:, self.arm_dof]])

    # ------------------------------------------------------------------------------------ inverse
    def ee_delta_target(self, dpos: np.ndarray, drot: np.ndarray, control_dt: float) -> np.ndarray:
        """Joint targets that move the tool by (dpos, drot) from its current pose in one control step.

        The delta is clipped per axis to the speed limits x control_dt, solved by damped least squares on
        the Jacobian with a null-space pull towards the home posture, and clipped to the URDF limits less a
        margin. One step only: the next action starts again from the measured pose, so errors never pile up.
        """
        max_lin, max_rot = MAX_LINEAR_SPEED * control_dt, MAX_ANGULAR_SPEED * control_dt
        err = np.concatenate([np.clip(dpos, -max_lin, max_lin), np.clip(drot, -max_rot, max_rot)])
        jac = self.jacobian()
        jjt = jac @ jac.T + (IK_DAMPING**2) * np.eye(6)
        dq = jac.T @ np.linalg.solve(jjt, err)
        q = self.data.qpos[self.arm_qpos]
        null = np.eye(7) - jac.T @ np.linalg.solve(jjt, jac)
        dq += null @ (IK_POSTURE_GAIN * (self.home - q))
        return np.clip(q + dq, self.q_lo, self.q_hi)

    def ee_delta_from_target(self, q_target: np.ndarray, control_dt: float) -> np.ndarray:
        """The (dpos, drot) whose `ee_delta_target` from the current joints is `q_target`: its exact inverse.

        For recording: the joint targets a controller commanded, turned back into the `ee_delta` action
        that produced them. With A = J J^T, the step `ee_delta_target` takes is dq = J^T (A + l^2 I)^-1 err
        + N p (N the damped null-space projector, p the posture pull), so J dq = (A + l^2 I)^-1 (A err +
        l^2 J p), which solves to err = J dq + l^2 A^-1 J (dq - p). Exact while no limit clipped the
        target (a clipped target gives the action of the motion actually commanded), clipped to the same
        speed limits as the forward mapping. Returns float64[6]: dx, dy, dz, droll, dpitch, dyaw.
        """
        q = self.data.qpos[self.arm_qpos]
        dq = np.asarray(q_target, dtype=np.float64) - q
        if dq.shape != (7,) or not np.isfinite(dq).all():
            raise ValueError(f"joint targets must be 7 finite numbers, got {q_target!r}")
        jac = self.jacobian()
        posture = IK_POSTURE_GAIN * (self.home - q)
        err = jac @ dq + IK_DAMPING**2 * np.linalg.solve(jac @ jac.T, jac @ (dq - posture))
        max_lin, max_rot = MAX_LINEAR_SPEED * control_dt, MAX_ANGULAR_SPEED * control_dt
        return np.concatenate([np.clip(err[:3], -max_lin, max_lin), np.clip(err[3:], -max_rot, max_rot)])

    def joint_position_target(self, target: np.ndarray, control_dt: float) -> np.ndarray:
        """A `joint_pos` action's arm targets, limited to one control step of URDF joint speed and the limits."""
        q = self.data.qpos[self.arm_qpos]
        step = self.velocity_limits * control_dt
        return np.clip(np.clip(np.asarray(target[:7]), q - step, q + step), self.q_lo, self.q_hi)

    # ------------------------------------------------------------------------------------ proprio
    def proprio(self) -> np.ndarray:
        """The policy's 15-D proprio: joint_pos[7], gripper opening[1], tool position[3], quaternion[4]."""
        pose = self.tool_pose()
        opening = gripper_opening(self.data.qpos[self.finger_qpos])
        out = np.concatenate([self.data.qpos[self.arm_qpos], [opening], pose.position, pose.quaternion])
        return out.astype(np.float32)
