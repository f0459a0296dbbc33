"""Scripted experts: closed-loop state machines on privileged state that solve every registered task.

An expert turns a task's goals into skills (pick-and-place, push, press, open/close drawer, lift) and runs
them in order. Every step it re-reads the true poses, so a cube that slipped or was nudged is simply
re-targeted, and a failed grasp sends the skill back to its approach. Output is an `ee_delta` action in
robot units (the env converts it for the `joint_pos` space).

The gripper always points straight down; only its yaw changes (to align the fingers with an object's faces
or with a drawer handle).
"""

from __future__ import annotations

import math

import numpy as np

from svrl_sim import objects as ob
from svrl_sim._mj import mujoco
from svrl_sim.goals import SceneView, holds
from svrl_sim.tasks import Goal, Task

OPEN, CLOSE = -1.0, 1.0
R_DOWN = np.diag([1.0, -1.0, -1.0])  # hand orientation at yaw 0: fingers close along the base y axis
MAX_SPEED = 0.2  # m/s, the env's ee_delta limit
MAX_TURN_RATE = 1.0  # rad/s


def _up(height: float) -> np.ndarray:
    return np.array([0.0, 0.0, height])


def _rz(psi: float) -> np.ndarray:
    c, s = math.cos(psi), math.sin(psi)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _wrap(angle: float, period: float) -> float:
    """`angle` shifted by multiples of `period` into [-period/2, period/2)."""
    return (angle + period / 2) % period - period / 2


def _rotvec(rot: np.ndarray) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rot.flatten())
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


def hand_yaw(view: SceneView) -> float:
    m = view.tcp_rot() @ R_DOWN
    return math.atan2(m[1, 0], m[0, 0])


def move(
    view: SceneView, target: np.ndarray, yaw: float, grip: float, dt: float, speed: float = MAX_SPEED
) -> np.ndarray:
    """Action that moves the tool centre point towards `target` (at most `speed` m/s over a control period
    `dt`) with the gripper pointing down at `yaw`."""
    dp = np.asarray(target, dtype=np.float64) - view.tcp_pos()
    dist = float(np.linalg.norm(dp))
    if dist > speed * dt:
        dp *= speed * dt / dist
    err = _rotvec(_rz(yaw) @ R_DOWN @ view.tcp_rot().T)
    biggest = float(np.abs(err).max())
    if biggest > MAX_TURN_RATE * dt:
        err *= MAX_TURN_RATE * dt / biggest
    return np.concatenate([dp, err, [grip]]).astype(np.float32)


def _yaw_options(view: SceneView, name: str) -> list[float]:
    """Hand yaws that put the fingers on two parallel faces of the object, least wrist turn first."""
    shape = ob.OBJECTS[name].shape
    theta = view.yaw(name)
    if shape in ("cube", "carton"):
        base = _wrap(theta, math.pi / 2)
        return [base, _wrap(base + math.pi / 2, math.pi)]
    if shape == "block":  # only across its short (local x) side
        return [_wrap(theta + math.pi / 2, math.pi)]
    return [0.0, math.pi / 2, math.pi / 4, -math.pi / 4]  # round: any yaw


def _pad_clearance(view: SceneView, name: str, yaw: float, others: list[str]) -> float:
    """Smallest gap (m) between the open finger pads around `name` and any other object's footprint."""
    p = view.pos(name)[:2]
    axis = np.array([math.sin(yaw), -math.cos(yaw)])  # finger travel direction at this yaw
    reach = 0.04 + 0.012  # open finger: inner face at 4 cm, pad 12 mm thick
    gaps = [
        np.linalg.norm(p + sign * axis * reach - view.pos(o)[:2]) - ob.OBJECTS[o].footprint
        for o in others
        for sign in (1.0, -1.0)
    ]
    return min(gaps, default=1.0)


def grasp_yaw(view: SceneView, name: str, others: list[str] | None = None) -> float:
    """The first yaw option whose open fingers clear the neighbours (else the one with most room)."""
    options = _yaw_options(view, name)
    if not others:
        return options[0]
    room = [_pad_clearance(view, name, y, others) for y in options]
    for yaw, gap in zip(options, room, strict=True):
        if gap > 0.01:
            return yaw
    return options[int(np.argmax(room))]


def _top(name: str, view: SceneView) -> float:
    spec = ob.OBJECTS[name]
    if spec.movable:
        return float(view.pos(name)[2] + spec.half[2])
    return {
        "cabinet": 0.14,
        "box": 0.06,
        "basket": 0.06,
        "bowl": 0.05,
        "button": 0.05,
        "plate": 0.01,
        "pad": 0.0,
    }[spec.shape]


class Skill:
    """One goal's worth of motion. `act` returns None once the skill has finished."""

    def __init__(self, goal: Goal, active: frozenset[str], dt: float) -> None:
        self.goal = goal
        self.active = active
        self.dt = dt
        self.phase = "start"
        self.count = 0  # control steps spent in the current phase

    def _to(self, phase: str) -> None:
        self.phase, self.count = phase, 0

    def after(self, seconds: float) -> bool:
        """True once the current phase has lasted longer than `seconds`."""
        return self.count * self.dt > seconds + 1e-9

    def move(
        self, view: SceneView, target: np.ndarray, yaw: float, grip: float, speed: float = MAX_SPEED
    ) -> np.ndarray:
        return move(view, target, yaw, grip, self.dt, speed)

    def act(self, view: SceneView) -> np.ndarray | None:
        raise NotImplementedError

    def obstacle_top(self, view: SceneView, exclude: str | None) -> float:
        tops = [_top(n, view) for n in self.active if n != exclude]
        return max(tops, default=0.05)


class PickPlace(Skill):
    """Pick `goal.obj` and put it on/in `goal.target` (or stack it), or just lift it (`lift` goals)."""

    def __init__(self, goal: Goal, active: frozenset[str], dt: float) -> None:
        super().__init__(goal, active, dt)
        self.obj = str(goal.obj)
        self.half_z = ob.OBJECTS[self.obj].half[2]
        self.offset = -max(0.0, self.half_z - 0.03)  # object centre minus tool z while held
        self.lift_from = 0.0
        self.yaw = 0.0
        self.retries = 0

    def grasp_z(self, view: SceneView) -> float:
        return float(view.pos(self.obj)[2] + max(0.0, self.half_z - 0.03))

    def travel_z(self, view: SceneView) -> float:
        """Tool height that carries the object's bottom 3 cm over everything else on the table."""
        return self.obstacle_top(view, self.obj) + (self.half_z - self.offset) + 0.03

    def place_xy_z(self, view: SceneView) -> tuple[np.ndarray, float, float | None]:
        """(xy, surface z, yaw or None) of where the object goes."""
        g = self.goal
        if g.kind == "stack":
            q = view.pos(str(g.target))
            return q[:2], float(q[2] + ob.OBJECTS[str(g.target)].half[2]), None
        target = str(g.target)
        shape = ob.OBJECTS[target].shape
        q = view.pos(target)
        if shape == "plate":
            return q[:2], ob.PLATE_TOP_Z, None
        if shape == "box":
            return q[:2], ob.BOX_TOP_Z, None
        if shape == "bowl":
            return q[:2], ob.BOWL_FLOOR_Z, None
        if shape == "basket":
            return q[:2], ob.BASKET_FLOOR_Z, None
        if shape == "cabinet":
            origin, rot = view.drawer_frame()
            travel = view.drawer_travel()
            x_front = ob.DRAWER_FRONT_X + travel  # cabinet front face, in drawer coordinates
            x0 = ob.DRAWER_INNER[0]
            centre = origin + rot @ np.array([(x0 + min(x_front, ob.DRAWER_INNER[1])) / 2, 0.0, 0.0])
            cab_yaw = math.atan2(rot[1, 0], rot[0, 0])
            return centre[:2], float(origin[2] + ob.DRAWER_FLOOR_Z), _wrap(cab_yaw, math.pi)
        raise ValueError(f"cannot place on {target!r}")

    def act(self, view: SceneView) -> np.ndarray | None:
        self.count += 1
        tcp = view.tcp_pos()
        p = view.pos(self.obj)
        if self.phase == "start":
            self.yaw = grasp_yaw(view, self.obj, self._neighbours(view))
            self._to("reach")
        if self.phase == "reach":
            above = np.array(
                [p[0], p[1], max(self.grasp_z(view) + 0.06, self.obstacle_top(view, None) + 0.01)]
            )
            if (
                np.linalg.norm(tcp[:2] - above[:2]) < 0.01
                and abs(tcp[2] - above[2]) < 0.03
                and abs(_wrap(hand_yaw(view) - self.yaw, 2 * math.pi)) < 0.1
            ):
                self._to("descend")
            else:
                self.yaw = grasp_yaw(view, self.obj, self._neighbours(view))
                return self.move(view, above, self.yaw, OPEN)
        if self.phase == "descend":
            target = np.array([p[0], p[1], self.grasp_z(view)])
            if np.linalg.norm(tcp - target) < 0.006 or self.after(1.2):
                self._to("close")
            else:
                return self.move(view, target, self.yaw, OPEN)
        if self.phase == "close":
            if self.after(0.4):
                self.offset = float(p[2] - tcp[2])
                self.lift_from = float(p[2])
                self._to("lift")
            else:
                return self.move(view, np.array([p[0], p[1], self.grasp_z(view)]), self.yaw, CLOSE)
        if self.phase == "lift":
            z = self.travel_z(view) if self.goal.kind != "lift" else self.lift_from + 0.12 - self.offset
            tool_rise = tcp[2] - (self.lift_from - self.offset)
            held = view.finger_gap() > 0.5 * ob.OBJECTS[self.obj].grasp_width and (
                p[2] - self.lift_from > 0.3 * tool_rise - 0.005
            )
            if not held and self.after(0.2):
                return self._regrasp(view)
            if tcp[2] > z - 0.01:
                if self.goal.kind == "lift":
                    return self.move(view, np.array([tcp[0], tcp[1], z]), self.yaw, CLOSE)  # hold it up
                self._to("carry")
            else:
                return self.move(view, np.array([tcp[0], tcp[1], z]), self.yaw, CLOSE)
        xy, surface, place_yaw = self.place_xy_z(view)
        if place_yaw is not None:
            self.yaw = _nearest(place_yaw, hand_yaw(view), math.pi) if self.phase == "carry" else self.yaw
        release_z = surface + self.half_z + 0.008 - self.offset
        if self.phase == "carry":
            if np.linalg.norm(p - (tcp + _up(self.offset))) > 0.04:
                return self._regrasp(view)
            target = np.array([xy[0], xy[1], self.travel_z(view)])
            if (
                np.linalg.norm(tcp[:2] - xy) < 0.008
                and abs(_wrap(hand_yaw(view) - self.yaw, 2 * math.pi)) < 0.1
            ):
                self._to("lower")
            else:
                return self.move(view, target, self.yaw, CLOSE)
        if self.phase == "lower":
            target = np.array([xy[0], xy[1], release_z])
            if abs(tcp[2] - release_z) < 0.006 or self.after(1.5):
                self._to("release")
            else:
                return self.move(view, target, self.yaw, CLOSE, speed=0.15)
        if self.phase == "release":
            if self.after(0.3):
                self._to("retreat")
            else:
                return self.move(view, tcp, self.yaw, OPEN)
        if self.phase == "retreat":
            if self.after(0.3) or tcp[2] > release_z + 0.05:
                if holds(self.goal, view):
                    return None
                return self._regrasp(view)
            return self.move(view, np.array([tcp[0], tcp[1], release_z + 0.06]), self.yaw, OPEN)
        raise AssertionError(self.phase)

    def _neighbours(self, view: SceneView) -> list[str]:
        """Objects tall enough near the grasp height for an open finger to hit."""
        low = self.grasp_z(view) - 0.01
        return [
            n for n in self.active if n != self.obj and _top(n, view) > low and ob.OBJECTS[n].shape != "pad"
        ]

    def _regrasp(self, view: SceneView) -> np.ndarray:
        self.retries += 1
        self._to("reach")
        tcp = view.tcp_pos()
        return self.move(view, tcp + _up(0.02), self.yaw, OPEN)


def _nearest(angle: float, ref: float, period: float) -> float:
    return ref + _wrap(angle - ref, period)


class Push(Skill):
    """Push `goal.obj` along the table onto the blue square with the closed fingers."""

    CONTACT = ob.OBJECTS["cube_red"].half[0] + 0.012  # object centre to tool centre when touching

    def act(self, view: SceneView) -> np.ndarray | None:
        self.count += 1
        obj = str(self.goal.obj)
        p, pad, tcp = view.pos(obj), view.pos("pad"), view.tcp_pos()
        to_goal = pad[:2] - p[:2]
        dist = float(np.linalg.norm(to_goal))
        d = to_goal / max(dist, 1e-6)
        yaw = _wrap(math.atan2(d[1], d[0]), math.pi)  # finger line across the push direction
        low = 0.022
        behind = p[:2] - d * (self.CONTACT + 0.03)
        if self.phase == "start":
            self._to("reach")
        if self.phase == "reach":
            above = np.array([behind[0], behind[1], 0.09])
            if np.linalg.norm(tcp[:2] - above[:2]) < 0.01 and abs(tcp[2] - above[2]) < 0.03:
                self._to("descend")
            else:
                return self.move(view, above, yaw, CLOSE)
        if self.phase == "descend":
            target = np.array([behind[0], behind[1], low])
            if np.linalg.norm(tcp - target) < 0.008 or self.after(1.0):
                self._to("push")
            else:
                return self.move(view, target, yaw, CLOSE)
        if self.phase == "push":
            if holds(self.goal, view) and dist < 0.02:
                self._to("retreat")
            else:
                # Off the line from the tool through the object to the goal: back off and line up again.
                rel = p[:2] - tcp[:2]
                lateral = abs(rel[0] * d[1] - rel[1] * d[0])
                if lateral > 0.015 or float(rel @ d) < 0.0:
                    self._to("reach")
                    return self.move(view, tcp + _up(0.03), yaw, CLOSE)
                goal_tcp = pad[:2] - d * self.CONTACT
                step = goal_tcp - tcp[:2]
                target = np.array([tcp[0] + step[0], tcp[1] + step[1], low])
                return self.move(view, target, yaw, CLOSE, speed=0.15)
        if self.phase == "retreat":
            if tcp[2] > 0.07:
                return None
            return self.move(view, np.array([tcp[0], tcp[1], 0.1]), yaw, CLOSE)
        raise AssertionError(self.phase)


class Press(Skill):
    """Press the button down with the closed fingers."""

    def act(self, view: SceneView) -> np.ndarray | None:
        self.count += 1
        b, tcp = view.pos("button"), view.tcp_pos()
        if self.phase == "start":
            self._to("reach")
        if self.phase == "reach":
            above = np.array([b[0], b[1], ob.BUTTON_TOP_Z + 0.05])
            if np.linalg.norm(tcp[:2] - above[:2]) < 0.008 and abs(tcp[2] - above[2]) < 0.03:
                self._to("press")
            else:
                return self.move(view, above, 0.0, CLOSE)
        if self.phase == "press":
            if view.button_depth() >= 0.010 or self.after(1.5):
                self._to("retreat")
            else:
                return self.move(view, np.array([b[0], b[1], ob.BUTTON_TOP_Z - 0.02]), 0.0, CLOSE, speed=0.15)
        if self.phase == "retreat":
            if tcp[2] > ob.BUTTON_TOP_Z + 0.04:
                if holds(self.goal, view):
                    return None
                self._to("reach")
            return self.move(view, np.array([b[0], b[1], ob.BUTTON_TOP_Z + 0.06]), 0.0, CLOSE)
        raise AssertionError(self.phase)


class Drawer(Skill):
    """Open (hook the fingers behind the handle and pull) or close (push the handle) the drawer."""

    def act(self, view: SceneView) -> np.ndarray | None:
        self.count += 1
        opening = self.goal.kind == "drawer_open"
        cab = view.pos("cabinet")
        rot = view.rot("cabinet")
        cab_yaw = math.atan2(rot[1, 0], rot[0, 0])
        yaw = _wrap(cab_yaw, math.pi)  # fingers along the handle bar (cabinet y axis)
        travel = view.drawer_travel()
        out = rot @ np.array([-1.0, 0.0, 0.0])  # direction the drawer opens
        tcp = view.tcp_pos()
        z = ob.DRAWER_HANDLE_Z - 0.005
        if opening:  # between the handle bar and the drawer front
            local_x = (ob.DRAWER_FRONT_X + ob.DRAWER_HANDLE_X + 0.006) / 2 - travel
        else:  # just outside the handle bar
            local_x = ob.DRAWER_HANDLE_X - 0.006 - 0.012 - 0.008 - travel
        grip_point = cab + rot @ np.array([local_x, 0.0, 0.0])
        grip_point[2] = z
        if self.phase == "start":
            self._to("reach")
        if self.phase == "reach":
            above = grip_point + _up(0.09)
            if (
                np.linalg.norm(tcp[:2] - above[:2]) < 0.006
                and abs(tcp[2] - above[2]) < 0.03
                and abs(_wrap(hand_yaw(view) - yaw, 2 * math.pi)) < 0.08
            ):
                self._to("descend")
            else:
                return self.move(view, above, yaw, CLOSE)
        if self.phase == "descend":
            if abs(tcp[2] - z) < 0.008 or self.after(1.2):
                self._to("pull")
            else:
                return self.move(view, grip_point, yaw, CLOSE)
        if self.phase == "pull":
            done = travel >= 0.125 if opening else travel <= 0.004
            if done or self.after(2.5):
                self._to("retreat")
            else:
                sign = 1.0 if opening else -1.0
                target = grip_point + sign * out * 0.02
                return self.move(view, target, yaw, CLOSE)
        if self.phase == "retreat":
            if tcp[2] > z + 0.07:
                if holds(self.goal, view):
                    return None
                self._to("reach")
                return self.move(view, tcp, yaw, CLOSE)
            return self.move(view, tcp + _up(0.03), yaw, CLOSE)
        raise AssertionError(self.phase)


def make_skill(goal: Goal, active: frozenset[str], dt: float) -> Skill:
    if goal.kind in ("on", "in", "stack", "lift"):
        return PickPlace(goal, active, dt)
    if goal.kind == "on_pad":
        return Push(goal, active, dt)
    if goal.kind == "button":
        return Press(goal, active, dt)
    if goal.kind in ("drawer_open", "drawer_closed"):
        return Drawer(goal, active, dt)
    raise ValueError(f"no scripted skill for goal kind {goal.kind!r}")


class ScriptedExpert:
    """Runs the skills of a task in order; holds still once all are done."""

    def __init__(self, task: Task, dt: float) -> None:
        self.task = task
        self.dt = dt
        self.skills = [make_skill(g, task.objects, dt) for g in task.goals]
        self.current = 0

    def focus_points(self, view: SceneView) -> tuple[np.ndarray, np.ndarray]:
        """World positions (m) of the current skill's object and target. Call after `act`, which moves
        past finished skills."""
        goal = self.task.goals[min(self.current, len(self.skills) - 1)]
        obj = goal.obj or goal.target
        target = "pad" if goal.kind == "on_pad" else (goal.target or goal.obj)
        assert obj is not None and target is not None, f"goal {goal} names no object"
        return view.pos(obj), view.pos(target)

    def focus_offsets(self, view: SceneView) -> np.ndarray:
        """Where the current skill's object and target are, relative to the gripper: (object - tcp, target -
        tcp), 6 floats (m), recorded with demos (svrl_policy.features.FOCUS_FEATURES) as privileged training
        signal. A policy that learns to predict it from pixels has learned to find the named object, which
        behaviour cloning of 5-mm steps alone teaches slowly."""
        obj, target = self.focus_points(view)
        tcp = view.tcp_pos()
        return np.concatenate([obj - tcp, target - tcp])

    def act(self, view: SceneView) -> np.ndarray:
        while self.current < len(self.skills):
            action = self.skills[self.current].act(view)
            if action is not None:
                return action
            self.current += 1
        return move(view, view.tcp_pos(), hand_yaw(view), OPEN, self.dt)
