"""The task registry: suites, fixed init states, disjoint splits, a disjoint pretraining pool."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from svrl_sim import tasks as T
from svrl_sim.objects import OBJECTS
from svrl_sim.tasks import InitState, UnknownTaskError


def test_suites_have_enough_tasks() -> None:
    assert T.list_suites() == ("spatial", "object", "goal", "long", "pretrain")
    for suite in T.EVAL_SUITES:
        assert len(T.tasks_in_suite(suite)) >= 5, suite
    assert len(T.tasks_in_suite("pretrain")) >= 20
    for task in T.all_tasks():
        assert task.instruction and task.max_steps > 0 and task.goals
        assert task.name.startswith(task.suite + "/")


def test_long_tasks_have_two_stages() -> None:
    assert all(len(t.goals) == 2 for t in T.tasks_in_suite("long"))


def test_every_task_has_50_eval_and_200_train_states() -> None:
    for task in T.all_tasks():
        assert len(T.init_states(task, "eval")) == 50
        assert len(T.init_states(task, "train")) == 200


def test_train_and_eval_states_are_disjoint() -> None:
    for task in T.all_tasks():
        ev = np.stack([T.scene_init(task, s).vector() for s in T.init_states(task, "eval")])
        tr = np.stack([T.scene_init(task, s).vector() for s in T.init_states(task, "train")])
        # no eval layout equals (or nearly equals) a train layout
        gap = np.abs(ev[:, None, :] - tr[None, :, :]).max(axis=2)
        assert gap.min() > 1e-3, task.name
        # and the states within a split differ from each other
        assert len({v.tobytes() for v in ev}) == 50


def test_pretraining_pool_is_disjoint_from_the_evaluation_suites() -> None:
    evaluation = [t for s in T.EVAL_SUITES for t in T.tasks_in_suite(s)]
    pool = T.tasks_in_suite("pretrain")
    assert not {t.instruction for t in pool} & {t.instruction for t in evaluation}
    assert not {t.goal_key for t in pool} & {t.goal_key for t in evaluation}
    assert not {t.name for t in pool} & {t.name for t in evaluation}


def _looks(task: T.Task) -> frozenset[tuple[str, str | None, str | None]]:
    """A task's goals with objects named by how they look: a copy of the red cube *is* the red cube."""
    label = {n: OBJECTS[n].label for n in OBJECTS}
    return frozenset((g.kind, label.get(g.obj), label.get(g.target)) for g in task.goals)


def test_pool_shares_no_instruction_object_target_combination_with_an_evaluation_task() -> None:
    evaluation = [t for s in T.EVAL_SUITES for t in T.tasks_in_suite(s)]
    asked = {_looks(t) for t in evaluation}
    clashes = [t.name for t in T.tasks_in_suite("pretrain") if _looks(t) in asked]
    assert not clashes, clashes
    # the rule is not vacuous: an evaluation goal with a look-alike copy is caught
    twin = T.Task("pretrain/x", "pretrain", "x", (T.Goal("on", "cube_red_b", "plate"),), (), 1)
    assert _looks(twin) in asked


def test_pool_is_randomised_has_identical_distractors_and_the_suites_verbs() -> None:
    pool = T.tasks_in_suite("pretrain")
    assert len(pool) >= 40
    instructions = [t.instruction for t in pool]
    assert sum(i.startswith("pick up the ") and " and place it " in i for i in instructions) >= 10
    assert sum(i.startswith("put the ") for i in instructions) >= 10
    twins = [t for t in pool if t.pick is not None]
    assert len(twins) >= 6 and {t.pick.relation for t in twins} == {"closest", "farthest", "next_to"}
    # objects go anywhere on the table: a place task's object spans most of the reachable area
    xy = np.array([T.scene_init("pretrain/cube_blue_on_plate", InitState("train", i)).poses["cube_blue"][:2]
                   for i in range(200)])  # fmt: skip
    assert np.ptp(xy[:, 0]) > 0.25 and np.ptp(xy[:, 1]) > 0.4


@pytest.mark.parametrize("name", ["pretrain/cube_blue_closest_on_plate", "pretrain/cube_blue_farthest_in_basket",
                                  "pretrain/cube_yellow_next_to_plate_in_basket"])  # fmt: skip
def test_twin_instructions_single_out_the_manipulated_copy_in_every_state(name: str) -> None:
    task = T.get_task(name)
    obj, twin, landmark = task.pick.obj, task.pick.twin, task.pick.landmark
    assert OBJECTS[obj].label == OBJECTS[twin].label
    for split in ("eval", "train"):
        for ref in T.init_states(task, split):
            p = T.scene_init(task, ref).poses
            if task.pick.relation == "closest":
                assert p[obj][0] + 0.08 <= p[twin][0]
            elif task.pick.relation == "farthest":
                assert p[obj][0] >= p[twin][0] + 0.08
            else:
                d = [np.hypot(*np.subtract(p[o][:2], p[landmark][:2])) for o in (obj, twin)]
                assert d[0] + 0.08 <= d[1]


def test_init_states_are_identical_in_a_fresh_interpreter() -> None:
    names = ["spatial/red_cube_next_to_bowl", "object/can_in_basket", "long/open_drawer_and_press_button"]
    here = [T.scene_init(n, InitState("eval", 7)).vector().tobytes().hex() for n in names]
    code = (
        "from svrl_sim import tasks as T\n"
        f"for n in {names!r}: print(T.scene_init(n, T.InitState('eval', 7)).vector().tobytes().hex())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == here


def test_object_suite_shuffles_objects_over_one_layout() -> None:
    task = T.get_task("object/can_in_basket")
    slots = {(round(p.x, 3), round(p.y, 3)) for p in task.layout if p.shuffle}
    seen = set()
    for s in T.init_states(task, "train")[:20]:
        pos = T.scene_init(task, s).poses["can"]
        seen.add(min(slots, key=lambda q: (q[0] - pos[0]) ** 2 + (q[1] - pos[1]) ** 2))
    assert len(seen) > 1  # the can is not always in the same slot


def test_unknown_names_suggest_close_matches() -> None:
    with pytest.raises(UnknownTaskError, match="did you mean 'goal/open_drawer'"):
        T.get_task("goal/open_drawr")
    with pytest.raises(KeyError):  # UnknownTaskError is a KeyError
        T.get_task("nope")
    with pytest.raises(UnknownTaskError, match="did you mean 'goal/open_drawer'"):
        T.get_task("open_drawer")  # the short name without its suite
    with pytest.raises(UnknownTaskError, match="did you mean 'spatial'"):
        T.tasks_in_suite("spatail")


def test_bad_init_state_references_are_clear_errors() -> None:
    with pytest.raises(IndexError, match=r"valid indices are 0\.\.49"):
        T.scene_init("goal/open_drawer", InitState("eval", 50))
    with pytest.raises(IndexError, match=r"0\.\.199"):
        T.scene_init("goal/open_drawer", ("train", -1))
    with pytest.raises(ValueError, match="split"):
        InitState("test", 0)
    with pytest.raises(TypeError):
        InitState("eval", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        T.as_init_state(3)  # type: ignore[arg-type]
