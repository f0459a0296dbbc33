"""Task registry: instructions, goals, layouts and the fixed initial states of every task.

Four evaluation suites mirror LIBERO's axes of generalisation, plus a disjoint pretraining pool:

- `spatial`: the same objects (two identical red cubes, a bowl, a plate, a wooden box) in a different layout
  per task; the instruction names the cube to move by where it is.
- `object`: one layout, five different objects shuffled over its slots; the instruction names the object.
- `goal`: one scene, different goals (place, stack, push, open a drawer, press a button).
- `long`: two-stage tasks.
- `pretrain`: other object/target/verb combinations, for bulk scripted demonstrations (the "perception prior"
  a real VLA brings from web-scale pretraining). Never the same task as an evaluation one.

Initial states are fixed, not sampled at run time: each (task, split) has its own seed, derived from the task
name with SHA-256, feeding numpy's PCG64 (a stream numpy keeps stable across versions). The `eval` split has
50 states; the `train` split has 200 others (SimpleVLA-RL trains on its evaluation states; svrl does not).

This module imports no mujoco: a trainer process can list tasks and init states without a renderer.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from svrl_sim import robot
from svrl_sim.objects import OBJECTS

SUITES: tuple[str, ...] = ("spatial", "object", "goal", "long", "pretrain")
EVAL_SUITES: tuple[str, ...] = ("spatial", "object", "goal", "long")
SPLITS: dict[str, int] = {"eval": 50, "train": 200}

# Robot start: the home pose plus this much uniform noise per joint (rad), so proprio varies between states.
ROBOT_JITTER = 0.04


class UnknownTaskError(KeyError):
    """A task or suite name that is not registered. The message lists the closest names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class InitState:
    """A reference to one fixed initial state: cheap to pickle, identical in every process."""

    split: str  # "eval" | "train"
    index: int

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"init state split {self.split!r} is not one of {sorted(SPLITS)}")
        if isinstance(self.index, bool) or not isinstance(self.index, (int, np.integer)):
            raise TypeError(f"init state index must be an int, got {type(self.index).__name__}")


@dataclass(frozen=True)
class Place:
    """Nominal placement of one object; each init state draws x, y (and yaw) around it."""

    obj: str
    x: float
    y: float
    jitter: float = 0.02  # uniform +- in x and y (m)
    yaw: float = 0.0
    yaw_jitter: float = 0.0  # uniform +- (rad)
    on: str | None = None  # resting on top of this (fixed) object instead of the table
    shuffle: bool = False  # objects marked `shuffle` exchange their nominal (x, y) per init state
    jitter_y: float | None = None  # uniform +- in y when it differs from x (a region, not a spot)


@dataclass(frozen=True)
class Goal:
    """One success condition. kind: on | in | stack | on_pad | lift | drawer_open | drawer_closed | button."""

    kind: str
    obj: str | None = None
    target: str | None = None


@dataclass(frozen=True)
class Pick:
    """Which of two identical objects an instruction means ("the blue cube closest to the robot").

    Every init state satisfies `relation` for `obj` against `twin` by a clear margin: sampling swaps the
    two copies when only the swapped pair does, and redraws when neither does.
    relation: closest (to the robot) | farthest (from the robot) | next_to (`landmark`).
    """

    obj: str
    twin: str
    relation: str
    landmark: str | None = None


@dataclass(frozen=True)
class Task:
    name: str  # "<suite>/<short name>"
    suite: str
    instruction: str
    goals: tuple[Goal, ...]  # all must hold at once; the expert achieves them in this order
    layout: tuple[Place, ...]
    max_steps: int
    drawer_open: tuple[float, float] = (0.0, 0.0)  # initial drawer travel range (m)
    pick: Pick | None = None  # the instruction singles out one of two identical objects

    @property
    def objects(self) -> frozenset[str]:
        return frozenset(p.obj for p in self.layout)

    @property
    def goal_key(self) -> tuple[tuple[str, str | None, str | None], ...]:
        """What the task asks for, independent of wording (used to prove the pool is disjoint)."""
        return tuple(sorted((g.kind, g.obj, g.target) for g in self.goals))


@dataclass(frozen=True)
class SceneInit:
    """Everything `reset` writes into the simulator for one init state."""

    robot_q: np.ndarray  # (7,) rad
    poses: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)  # name -> x, y, z, yaw
    drawer: float = 0.0  # drawer travel (m)

    def vector(self) -> np.ndarray:
        """Flat, comparable form (used to prove eval and train states differ)."""
        parts = [self.robot_q, [self.drawer]]
        for name in sorted(self.poses):
            parts.append(self.poses[name])
        return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])


# ----------------------------------------------------------------------------------------------------------
# Registry construction helpers


_REGISTRY: dict[str, Task] = {}
_YAW_ANY = math.pi / 4  # cubes are symmetric under 90 degree turns: +-45 degrees covers every pose


def _register(task: Task) -> None:
    if task.name in _REGISTRY:
        raise ValueError(f"duplicate task name {task.name!r}")
    if task.suite not in SUITES or not task.name.startswith(task.suite + "/"):
        raise ValueError(
            f"task {task.name!r}: suite {task.suite!r} must be one of {SUITES} and prefix the name"
        )
    for p in task.layout:
        if p.obj not in OBJECTS:
            raise ValueError(f"task {task.name!r}: unknown object {p.obj!r}")
    for g in task.goals:
        for name in (g.obj, g.target):
            if name is not None and name not in task.objects:
                raise ValueError(f"task {task.name!r}: goal {g} uses {name!r}, which is not in its layout")
    if task.pick is not None:
        pk = task.pick
        for name in (pk.obj, pk.twin, pk.landmark):
            if name is not None and name not in task.objects:
                raise ValueError(f"task {task.name!r}: pick {pk} uses {name!r}, which is not in its layout")
        if OBJECTS[pk.obj].label != OBJECTS[pk.twin].label:
            raise ValueError(f"task {task.name!r}: {pk.obj!r} and {pk.twin!r} are not identical objects")
    _REGISTRY[task.name] = task


def _p(obj: str, x: float, y: float, **kw) -> Place:
    spec = OBJECTS[obj]
    if spec.movable and "yaw_jitter" not in kw and spec.shape in ("cube", "block", "carton"):
        kw["yaw_jitter"] = _YAW_ANY
    return Place(obj, x, y, **kw)


def _budget(goals: tuple[Goal, ...]) -> int:
    """max_steps: about twice what the scripted expert needs (10 Hz control)."""
    per = {
        "on": 110,
        "in": 110,
        "stack": 110,
        "on_pad": 90,
        "lift": 60,
        "drawer_open": 80,
        "drawer_closed": 80,
        "button": 50,
    }
    return sum(per[g.kind] for g in goals)


def _task(
    suite: str, short: str, instruction: str, goals: tuple[Goal, ...], layout: tuple[Place, ...], **kw
) -> None:
    _register(
        Task(f"{suite}/{short}", suite, instruction, goals, layout, kw.pop("max_steps", _budget(goals)), **kw)
    )


def _label(obj: str) -> str:
    return OBJECTS[obj].label


CABINET_FACING_Y = -math.pi / 2  # cabinet yaw that turns its front (local -x) towards +y


# ---------------------------------- spatial: same objects, different layouts ---------------------------------
_SPATIAL = {
    # short name: (phrase, {object: (x, y)}, cube_red_on)
    "red_cube_next_to_bowl": (
        "next to the bowl",
        {
            "bowl": (0.62, -0.16),
            "cube_red": (0.62, -0.035),
            "cube_red_b": (0.42, 0.17),
            "box": (0.44, -0.20),
            "plate": (0.62, 0.19),
        },
        None,
    ),
    "red_cube_next_to_box": (
        "next to the wooden box",
        {
            "box": (0.63, 0.16),
            "cube_red": (0.50, 0.16),
            "cube_red_b": (0.62, -0.06),
            "bowl": (0.40, -0.06),
            "plate": (0.46, -0.24),
        },
        None,
    ),
    "red_cube_on_box": (
        "on the wooden box",
        {
            "box": (0.56, -0.18),
            "cube_red": (0.56, -0.18),
            "cube_red_b": (0.62, 0.06),
            "bowl": (0.42, 0.12),
            "plate": (0.64, 0.24),
        },
        "box",
    ),
    "red_cube_between_bowl_and_box": (
        "between the bowl and the wooden box",
        {
            "bowl": (0.64, 0.19),
            "box": (0.64, -0.17),
            "cube_red": (0.64, 0.01),
            "cube_red_b": (0.40, -0.12),
            "plate": (0.42, 0.14),
        },
        None,
    ),
    "red_cube_closest_to_robot": (
        "closest to the robot",
        {
            "cube_red": (0.38, 0.02),
            "cube_red_b": (0.68, -0.02),
            "bowl": (0.56, -0.22),
            "box": (0.55, 0.22),
            "plate": (0.48, -0.04),
        },
        None,
    ),
    "red_cube_farthest_from_robot": (
        "farthest from the robot",
        {
            "cube_red": (0.68, -0.06),
            "cube_red_b": (0.40, 0.06),
            "bowl": (0.48, -0.22),
            "box": (0.62, 0.18),
            "plate": (0.44, 0.25),
        },
        None,
    ),
}
for _short, (_phrase, _pos, _on) in _SPATIAL.items():
    _layout = tuple(
        _p(o, x, y, jitter=0.0 if (o == "cube_red" and _on) else 0.02, on=_on if o == "cube_red" else None)
        for o, (x, y) in _pos.items()
    )
    _task(
        "spatial",
        _short,
        f"pick up the red cube {_phrase} and place it on the plate",
        (Goal("on", "cube_red", "plate"),),
        _layout,
    )

# ---------------------------------- object: different objects, same layout ----------------------------------
_OBJECT_SLOTS = ((0.40, -0.24), (0.40, -0.04), (0.43, 0.16), (0.58, -0.22), (0.59, -0.02))
_OBJECT_ITEMS = ("cube_red", "can", "block", "carton", "puck")


def _object_layout() -> tuple[Place, ...]:
    items = tuple(
        _p(o, x, y, jitter=0.015, shuffle=True)
        for o, (x, y) in zip(_OBJECT_ITEMS, _OBJECT_SLOTS, strict=True)
    )
    return (*items, _p("basket", 0.64, 0.19, jitter=0.015))


for _obj in _OBJECT_ITEMS:
    _task(
        "object",
        f"{_obj}_in_basket",
        f"pick up the {_label(_obj)} and place it in the basket",
        (Goal("in", _obj, "basket"),),
        _object_layout(),
    )

# ---------------------------------- goal: one scene, different goals ----------------------------------------
_GOAL_SCENE = (
    _p("cube_red", 0.50, 0.0),
    _p("cube_green", 0.58, 0.12),
    _p("bowl", 0.68, 0.26, jitter=0.015),
    _p("plate", 0.44, 0.21, jitter=0.015),
    _p("cabinet", 0.64, -0.30, jitter=0.015, yaw=CABINET_FACING_Y),
    _p("button", 0.37, -0.27, jitter=0.015),
    _p("pad", 0.35, 0.03, jitter=0.015),
)
_GOALS = {
    "put_red_cube_on_plate": ("put the red cube on the plate", (Goal("on", "cube_red", "plate"),)),
    "put_red_cube_in_bowl": ("put the red cube in the bowl", (Goal("in", "cube_red", "bowl"),)),
    "stack_red_cube_on_green_cube": (
        "stack the red cube on the green cube",
        (Goal("stack", "cube_red", "cube_green"),),
    ),
    "push_red_cube_onto_blue_square": (
        "push the red cube onto the blue square",
        (Goal("on_pad", "cube_red"),),
    ),
    "open_drawer": ("open the drawer", (Goal("drawer_open", None, "cabinet"),)),
    "press_button": ("press the button", (Goal("button", None, "button"),)),
}
for _short, (_instr, _goals) in _GOALS.items():
    _task("goal", _short, _instr, _goals, _GOAL_SCENE)

# ---------------------------------- long: two stages ---------------------------------------------------------
_task(
    "long",
    "red_cube_in_bowl_and_green_cube_on_plate",
    "put the red cube in the bowl and put the green cube on the plate",
    (Goal("in", "cube_red", "bowl"), Goal("on", "cube_green", "plate")),
    (
        _p("cube_red", 0.45, -0.12),
        _p("cube_green", 0.58, 0.02),
        _p("cube_blue", 0.40, 0.10),
        _p("bowl", 0.64, -0.20, jitter=0.015),
        _p("plate", 0.60, 0.22, jitter=0.015),
    ),
)
_task(
    "long",
    "open_drawer_and_press_button",
    "open the drawer and press the button",
    (Goal("drawer_open", None, "cabinet"), Goal("button", None, "button")),
    (
        _p("cabinet", 0.62, 0.26, jitter=0.015, yaw=math.pi / 2),
        _p("button", 0.40, -0.18, jitter=0.015),
        _p("cube_yellow", 0.56, -0.10),
    ),
)
_task(
    "long",
    "stack_blue_cube_on_red_cube_and_press_button",
    "stack the blue cube on the red cube and press the button",
    (Goal("stack", "cube_blue", "cube_red"), Goal("button", None, "button")),
    (
        _p("cube_blue", 0.42, 0.14),
        _p("cube_red", 0.60, 0.02),
        _p("button", 0.44, -0.20, jitter=0.015),
        _p("plate", 0.64, -0.22, jitter=0.015),
    ),
)
_task(
    "long",
    "red_and_yellow_cubes_in_basket",
    "put both the red cube and the yellow cube in the basket",
    (Goal("in", "cube_red", "basket"), Goal("in", "cube_yellow", "basket")),
    (
        _p("cube_red", 0.42, -0.18),
        _p("cube_yellow", 0.58, -0.08),
        _p("cube_green", 0.40, 0.04),
        _p("basket", 0.60, 0.18, jitter=0.015),
    ),
)
_task(
    "long",
    "push_green_cube_and_can_on_plate",
    "push the green cube onto the blue square and put the tin can on the plate",
    (Goal("on_pad", "cube_green"), Goal("on", "can", "plate")),
    (
        _p("cube_green", 0.52, -0.06),
        _p("pad", 0.38, -0.16, jitter=0.015),
        _p("can", 0.44, 0.14),
        _p("plate", 0.64, 0.18, jitter=0.015),
        _p("cube_red", 0.66, -0.14),
    ),
)
_task(
    "long",
    "open_drawer_and_put_red_cube_in_it",
    "open the drawer and put the red cube in it",
    (Goal("drawer_open", None, "cabinet"), Goal("in", "cube_red", "cabinet")),
    (
        _p("cabinet", 0.64, -0.26, jitter=0.015, yaw=CABINET_FACING_Y),
        _p("cube_red", 0.44, 0.06),
        _p("cube_blue", 0.60, 0.18),
    ),
)

# ---------------------------------- pretraining pool --------------------------------------------------------
# What a base policy needs before a 1-demo fine-tune: grasp and place *any* object anywhere on the table, read
# the suites' verbs and sentence structure, and tell identical objects apart by where they are. So every
# object is drawn anywhere in the reachable area per init state (not around a fixed layout), each task has
# distractors, some of them identical copies of the manipulated cube, and instructions use the suites'
# wording ("pick up the X and place it on the Y", "put the X in the Y", "stack", "push", "lift").
# No task repeats an evaluation task: no shared instruction, and no single-goal (verb, object, target) that
# an evaluation task asks for, compared by what the objects look like (tests/sim/test_tasks.py).
_MOVABLE_AREA = dict(x=0.53, y=0.0, jitter=0.15, jitter_y=0.24)  # x 0.38..0.68, y -0.24..0.24
_FIXED_AREA = dict(x=0.54, y=0.0, jitter=0.10, jitter_y=0.19)  # receptacles: their rims stay reachable
_POOL_MOVABLES = ("cube_red", "cube_green", "cube_blue", "cube_yellow", "can", "block", "carton", "puck")
_POOL_TARGETS = {"plate": "on", "bowl": "in", "basket": "in", "box": "on"}
_TWINS = {"cube_red": "cube_red_b", "cube_blue": "cube_blue_b", "cube_yellow": "cube_yellow_b"}


def _pre(short: str, instruction: str, goals: tuple[Goal, ...], layout: tuple[Place, ...], **kw) -> None:
    _task("pretrain", short, instruction, goals, layout, **kw)


def _pp(obj: str, x: float, y: float, **kw) -> Place:
    kw.setdefault("jitter", 0.04 if OBJECTS[obj].movable else 0.025)
    return _p(obj, x, y, **kw)


def _anywhere(obj: str) -> Place:
    """A placement drawn over the whole reachable area of the table, per init state."""
    return _p(obj, **(_MOVABLE_AREA if OBJECTS[obj].movable else _FIXED_AREA))


def _eval_goals_by_look() -> set[tuple[str, str | None, str | None]]:
    """Single goals of evaluation tasks, objects named by label (a copy of the red cube is the red cube)."""
    return {
        (g.kind, _label(g.obj) if g.obj else None, _label(g.target) if g.target else None)
        for t in _REGISTRY.values()
        if t.suite in EVAL_SUITES and len(t.goals) == 1
        for g in t.goals
    }


def _distractors(short: str, keep: tuple[str, ...], movables: int, fixed: int) -> tuple[str, ...]:
    """A fixed, per-task choice of other objects (deterministic: seeded by the task's name)."""
    digest = hashlib.sha256(f"svrl_sim/pretrain/{short}/distractors".encode()).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest[:8], "little")))
    taken = set(keep) | {_TWINS.get(k) for k in keep}
    free_m = [o for o in _POOL_MOVABLES if o not in taken]
    free_f = [o for o in ("plate", "box") if o not in taken]  # small receptacles: the table stays passable
    pick_m = [free_m[int(i)] for i in rng.choice(len(free_m), movables, replace=False)]
    pick_f = [free_f[int(i)] for i in rng.choice(len(free_f), fixed, replace=False)]
    return (*pick_m, *pick_f)


def _pool_place_tasks() -> None:
    """Pick-and-place of every movable object into or onto every receptacle the suites do not ask for."""
    taken = _eval_goals_by_look()
    k = 0
    for obj in _POOL_MOVABLES:
        for target, verb in _POOL_TARGETS.items():
            if (verb, _label(obj), _label(target)) in taken:
                continue
            short = f"{obj}_{verb}_{target}"
            instruction = (
                f"pick up the {_label(obj)} and place it {verb} the {_label(target)}"
                if k % 2 == 0
                else f"put the {_label(obj)} {verb} the {_label(target)}"
            )
            k += 1
            big = OBJECTS[target].footprint > 0.075  # bowl, basket: room for fewer distractors
            others = _distractors(short, (obj, target), movables=1 if big else 2, fixed=0 if big else 1)
            layout = tuple(_anywhere(o) for o in (obj, target, *others))
            _pre(short, instruction, (Goal(verb, obj, target),), layout)


def _pool_twin_tasks() -> None:
    """One of two identical cubes, singled out by where it is (the spatial suite's question, other goals)."""
    phrase = {"closest": "closest to the robot", "farthest": "farthest from the robot"}
    taken = _eval_goals_by_look()
    for obj, relation, landmark, target, style in (
        ("cube_blue", "closest", None, "plate", "pick"),
        ("cube_blue", "farthest", None, "basket", "pick"),
        ("cube_blue", "next_to", "bowl", "box", "pick"),
        ("cube_blue", "next_to", "box", "plate", "put"),
        ("cube_yellow", "farthest", None, "bowl", "pick"),
        ("cube_yellow", "next_to", "plate", "basket", "pick"),
        ("cube_yellow", "closest", None, "box", "put"),
        ("cube_yellow", "next_to", "box", "bowl", "put"),
        ("cube_red", "next_to", "bowl", "box", "pick"),
        ("cube_red", "closest", None, "box", "pick"),
        ("cube_red", "farthest", None, "box", "put"),
    ):
        verb = _POOL_TARGETS[target]
        assert (verb, _label(obj), _label(target)) not in taken, (obj, target)
        where = phrase.get(relation) or f"next to the {_label(str(landmark))}"
        instruction = (
            f"pick up the {_label(obj)} {where} and place it {verb} the {_label(target)}"
            if style == "pick"
            else f"put the {_label(obj)} {where} {verb} the {_label(target)}"
        )
        short = f"{obj}_{relation}{'_' + str(landmark) if landmark else ''}_{verb}_{target}"
        keep = (obj, _TWINS[obj], target) + ((landmark,) if landmark else ())
        big = any(OBJECTS[o].footprint > 0.075 for o in keep)  # bowl, basket: fewer distractors fit
        others = _distractors(short, keep, movables=0 if big else 1, fixed=0 if (big or landmark) else 1)
        layout = tuple(_anywhere(o) for o in (*keep, *others))
        _pre(
            short,
            instruction,
            (Goal(verb, obj, target),),
            layout,
            pick=Pick(obj, _TWINS[obj], relation, landmark),
        )


def _pool_stack_and_lift_tasks() -> None:
    for top, bottom in (
        ("cube_yellow", "cube_blue"),
        ("cube_blue", "cube_yellow"),
        ("cube_green", "cube_yellow"),
        ("cube_blue", "cube_green"),
    ):
        short = f"stack_{top}_on_{bottom}"
        others = _distractors(short, (top, bottom), movables=1, fixed=1)
        layout = tuple(_anywhere(o) for o in (top, bottom, *others))
        _pre(short, f"stack the {_label(top)} on the {_label(bottom)}", (Goal("stack", top, bottom),), layout)
    for obj in ("cube_red", "can", "block", "puck", "carton"):
        short = f"lift_{obj}"
        others = _distractors(short, (obj,), movables=1, fixed=1)
        layout = tuple(_anywhere(o) for o in (obj, *others))
        _pre(short, f"pick up the {_label(obj)} and lift it", (Goal("lift", obj),), layout)


_pool_place_tasks()
_pool_twin_tasks()
_pool_stack_and_lift_tasks()

# Pushing and drawers need room in front of the object or cabinet: nominal layouts with jitter.
for _obj, _pos in (
    ("cube_yellow", ((0.56, 0.10), (0.38, -0.08))),
    ("cube_blue", ((0.58, -0.12), (0.40, 0.10))),
):
    (ox, oy), (px, py) = _pos
    _pre(
        f"push_{_obj}_onto_blue_square",
        f"push the {_label(_obj)} onto the blue square",
        (Goal("on_pad", _obj),),
        (
            _pp(_obj, ox, oy, jitter=0.03),
            _pp("pad", px, py, jitter=0.02),
            _pp("bowl", 0.66, -0.24 * np.sign(oy)),
        ),
    )

_pre(
    "close_drawer",
    "close the drawer",
    (Goal("drawer_closed", None, "cabinet"),),
    (_pp("cabinet", 0.64, 0.24, yaw=math.pi / 2), _pp("cube_red", 0.46, -0.12)),
    drawer_open=(0.12, 0.15),
)
_pre(
    "cube_green_in_open_drawer",
    "put the green cube in the open drawer",
    (Goal("in", "cube_green", "cabinet"),),
    (_pp("cabinet", 0.64, -0.26, yaw=CABINET_FACING_Y), _pp("cube_green", 0.44, 0.10)),
    drawer_open=(0.13, 0.15),
)


# ----------------------------------------------------------------------------------------------------------
# Public lookups


def list_suites() -> tuple[str, ...]:
    return SUITES


def all_tasks() -> list[Task]:
    return list(_REGISTRY.values())


def tasks_in_suite(suite: str) -> list[Task]:
    """Tasks of one suite, in registration order. Unknown suite -> UnknownTaskError with suggestions."""
    if suite not in SUITES:
        close = difflib.get_close_matches(suite, SUITES, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownTaskError(f"unknown suite {suite!r}{hint} (suites: {', '.join(SUITES)})")
    return [t for t in _REGISTRY.values() if t.suite == suite]


def get_task(name: str | Task) -> Task:
    """Look a task up by its full name ("goal/open_drawer"). Unknown name -> UnknownTaskError with suggestions."""
    if isinstance(name, Task):
        return name
    task = _REGISTRY.get(name)
    if task is not None:
        return task
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
    if not close and isinstance(name, str) and "/" not in name:  # a short name without its suite
        close = [n for n in _REGISTRY if n.split("/", 1)[1] == name][:3]
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownTaskError(f"unknown task {name!r}{hint} (list them with svrl_sim.tasks.all_tasks())")


# ----------------------------------------------------------------------------------------------------------
# Initial states


def _seed(task_name: str, split: str) -> int:
    digest = hashlib.sha256(f"svrl_sim/{task_name}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _resting_z(obj: str, on: str | None) -> float:
    base = 0.0
    if on is not None:
        base = {"box": 0.06, "plate": 0.01}[OBJECTS[on].shape]
    spec = OBJECTS[obj]
    return base + spec.half[2] if spec.movable else base


def _overlaps(task: Task, poses: dict[str, tuple[float, float, float, float]]) -> bool:
    names = [p.obj for p in task.layout if p.on is None]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ra, rb = OBJECTS[a].footprint, OBJECTS[b].footprint
            if OBJECTS[a].shape == "pad" or OBJECTS[b].shape == "pad":
                ra, rb = ra * 0.8, rb * 0.8  # flat marker: only keep its middle clear
            if math.dist(poses[a][:2], poses[b][:2]) < ra + rb + 0.01:
                return True
    return False


_PICK_MARGIN = 0.08  # m: how much closer / farther the meant copy is than its twin


def _pick_holds(pick: Pick, poses: dict[str, tuple[float, float, float, float]], a: str, b: str) -> bool:
    """Does copy `a` satisfy the relation against copy `b` by a clear margin?"""
    if pick.relation == "closest":
        return poses[a][0] + _PICK_MARGIN <= poses[b][0]
    if pick.relation == "farthest":
        return poses[a][0] >= poses[b][0] + _PICK_MARGIN
    if pick.relation == "next_to":
        da = math.dist(poses[a][:2], poses[str(pick.landmark)][:2])
        db = math.dist(poses[b][:2], poses[str(pick.landmark)][:2])
        near = OBJECTS[str(pick.landmark)].footprint + OBJECTS[a].footprint + 0.06  # a few cm of gap at most
        return da <= near and db >= da + _PICK_MARGIN
    raise ValueError(f"unknown pick relation {pick.relation!r}")


def _arrange_pick(pick: Pick, poses: dict[str, tuple[float, float, float, float]]) -> bool:
    """Make `pick.obj` the copy the instruction describes (swapping the twins if needed); False: neither is."""
    if _pick_holds(pick, poses, pick.obj, pick.twin):
        return True
    if _pick_holds(pick, poses, pick.twin, pick.obj):
        poses[pick.obj], poses[pick.twin] = poses[pick.twin], poses[pick.obj]
        return True
    return False


def _sample_one(task: Task, rng: np.random.Generator) -> SceneInit:
    for _ in range(1000 if task.pick is None else 20000):  # a pick relation rejects most draws
        nominal = {p.obj: (p.x, p.y) for p in task.layout}
        shuffled = [p.obj for p in task.layout if p.shuffle]
        if shuffled:
            order = rng.permutation(len(shuffled))
            slots = [nominal[o] for o in shuffled]
            for o, k in zip(shuffled, order, strict=True):
                nominal[o] = slots[int(k)]
        poses: dict[str, tuple[float, float, float, float]] = {}
        for p in task.layout:
            x0, y0 = nominal[p.obj]
            if p.jitter_y is None:
                dx, dy = rng.uniform(-p.jitter, p.jitter, size=2) if p.jitter else (0.0, 0.0)
            else:
                dx, dy = rng.uniform(-p.jitter, p.jitter), rng.uniform(-p.jitter_y, p.jitter_y)
            yaw = p.yaw + (rng.uniform(-p.yaw_jitter, p.yaw_jitter) if p.yaw_jitter else 0.0)
            poses[p.obj] = (float(x0 + dx), float(y0 + dy), _resting_z(p.obj, p.on), float(yaw))
        for p in task.layout:  # something resting on a fixed object shares its x, y
            if p.on is not None:
                bx, by = poses[p.on][:2]
                x, y, z, yaw = poses[p.obj]
                poses[p.obj] = (bx + (x - nominal[p.obj][0]), by + (y - nominal[p.obj][1]), z, yaw)
        if _overlaps(task, poses) or (task.pick is not None and not _arrange_pick(task.pick, poses)):
            continue
        robot_q = np.asarray(robot.HOME_Q) + rng.uniform(-ROBOT_JITTER, ROBOT_JITTER, size=7)
        lo, hi = task.drawer_open
        drawer = float(rng.uniform(lo, hi)) if hi > 0 else 0.0
        return SceneInit(robot_q=robot_q, poses=poses, drawer=drawer)
    raise RuntimeError(f"task {task.name!r}: could not place its objects without overlap; widen the layout")


@cache
def _split_states(task_name: str, split: str) -> tuple[SceneInit, ...]:
    task = get_task(task_name)
    rng = np.random.Generator(np.random.PCG64(_seed(task_name, split)))
    return tuple(_sample_one(task, rng) for _ in range(SPLITS[split]))


def num_init_states(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"init state split {split!r} is not one of {sorted(SPLITS)}")
    return SPLITS[split]


def init_states(task: str | Task, split: str) -> list[InitState]:
    """All init-state references of one split of a task, in order."""
    get_task(task)
    return [InitState(split, i) for i in range(num_init_states(split))]


def scene_init(task: str | Task, init_state: InitState | tuple[str, int]) -> SceneInit:
    """The concrete initial state behind a reference. Out-of-range index -> IndexError naming the range."""
    t = get_task(task)
    ref = as_init_state(init_state)
    n = num_init_states(ref.split)
    if not 0 <= int(ref.index) < n:
        raise IndexError(
            f"init state index {ref.index} out of range for split {ref.split!r} of {t.name!r}: "
            f"valid indices are 0..{n - 1}"
        )
    return _split_states(t.name, ref.split)[int(ref.index)]


def as_init_state(value: InitState | tuple[str, int]) -> InitState:
    if isinstance(value, InitState):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return InitState(value[0], value[1])
    raise TypeError(f"expected an InitState (or a (split, index) tuple), got {value!r}")
