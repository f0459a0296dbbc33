"""GRPO that finds signal from a low start, within SimpleVLA-RL's algorithm: sampling rounds until the batch
holds `groups_per_batch` mixed-outcome groups (bounded, reported), updates scaled to the groups kept with
mini-batches of whole groups, and the `mixed_first` initial-state schedule (deterministic, resumable)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from svrl_trainer.config import load_train_config
from svrl_trainer.init_schedule import InitStateSchedule
from svrl_trainer.train import GrpoTrainer
from svrl_trainer.update import group_mini_batches, num_mini_batches

from .test_grpo_trainer import _config


# ------------------------------------------------------------------ mini-batches
def test_mini_batches_hold_whole_groups() -> None:
    group_ids = np.repeat(np.arange(6), 8)[np.random.default_rng(0).permutation(48)]
    minis = group_mini_batches(group_ids, 4, np.random.default_rng(1))
    assert len(minis) == 4 and sorted(np.concatenate(minis).tolist()) == list(range(48))
    for mini in minis:
        for gid in set(group_ids[mini].tolist()):
            assert (group_ids[mini] == gid).sum() == 8  # every member of the group, in one mini-batch


@pytest.mark.parametrize(
    ("groups", "full", "expected"),
    [(64, 64, 4), (40, 64, 2), (20, 64, 1), (2, 64, 1), (64, None, 4), (2, None, 2), (1, None, 1)],
)
def test_optimizer_steps_scale_with_the_groups_kept(groups: int, full: int | None, expected: int) -> None:
    assert num_mini_batches(groups, 4, full) == expected


# ------------------------------------------------------------------ dynamic sampling until full
def _with_outcomes(trainer: GrpoTrainer, mixed: Callable[[int], bool]) -> None:
    """Rewrite the toy rollouts' outcomes: group g has 3 successes of 8 if mixed(g), else none."""
    collect = trainer.rollout.collect

    def scripted(specs, **kwargs):
        batch = collect(specs, **kwargs)
        position = np.arange(batch.size) % 8  # specs come group by group
        batch.success = np.array([mixed(int(g)) for g in batch.group_ids]) & (position < 3)
        return batch

    trainer.rollout.collect = scripted


def _collect(tmp_path: Path, init: Path, mixed: Callable[[int], bool], **overrides):
    trainer = GrpoTrainer(load_train_config(_config(tmp_path, init), overrides))
    try:
        _with_outcomes(trainer, mixed)
        return trainer._collect_batch()
    finally:
        trainer.close()


def test_rounds_continue_until_the_batch_is_full(tmp_path, init_checkpoint) -> None:
    # 4 groups per round, one in four mixed: four rounds to fill the 4-group batch
    batch, metrics, _ = _collect(
        tmp_path, init_checkpoint, lambda g: g % 4 == 0, **{"grpo.max_sampling_rounds": 8}
    )
    assert sorted(set(batch.group_ids.tolist())) == [0, 4, 8, 12]
    assert (
        metrics["rollout/sampling_rounds"],
        metrics["rollout/kept_groups"],
        metrics["rollout/batch_full"],
    ) == (
        4,
        4,
        1,
    )
    assert metrics["rollout/sampled_groups"] == 16 and metrics["rollout/kept_group_fraction"] == 0.25


def test_rounds_are_bounded_and_a_partial_batch_is_reported(tmp_path, init_checkpoint) -> None:
    batch, metrics, _ = _collect(
        tmp_path, init_checkpoint, lambda g: g % 4 == 0, **{"grpo.max_sampling_rounds": 2}
    )
    assert (
        metrics["rollout/sampling_rounds"],
        metrics["rollout/kept_groups"],
        metrics["rollout/batch_full"],
    ) == (
        2,
        2,
        0,
    )
    assert batch.size == 16


def test_surplus_valid_groups_are_discarded(tmp_path, init_checkpoint) -> None:
    """Oversampling 2x: 8 groups per round, all mixed; the batch keeps the first 4, as SimpleVLA-RL does."""
    batch, metrics, _ = _collect(tmp_path, init_checkpoint, lambda g: True, **{"grpo.oversample": 2.0})
    assert sorted(set(batch.group_ids.tolist())) == [0, 1, 2, 3]
    assert (
        metrics["rollout/valid_groups"],
        metrics["rollout/kept_groups"],
        metrics["rollout/sampling_rounds"],
    ) == (
        8,
        4,
        1,
    )


def test_sampling_only_the_missing_groups_needs_more_rounds(tmp_path, init_checkpoint) -> None:
    """svrl's earlier rule (re-sample just the missing groups) on the same outcomes: 7 rounds, not 4."""
    _, metrics, _ = _collect(
        tmp_path,
        init_checkpoint,
        lambda g: g % 4 == 0,
        **{"grpo.max_sampling_rounds": 8, "grpo.sample_missing_only": True},
    )
    # rounds sample 4, 3, 2, 1, 1, 1, 1 groups (ids 0-12): mixed ones are 0, 4, 8, 12
    assert (metrics["rollout/sampling_rounds"], metrics["rollout/sampled_groups"]) == (7, 13)


def test_a_partial_batch_takes_fewer_optimizer_steps(tmp_path, init_checkpoint) -> None:
    overrides = {
        "grpo.max_sampling_rounds": 1,
        "optim.mini_batches": 2,
        "eval.every": 0,
        "checkpoint.every": 0,
    }
    steps = {}
    for scale in (True, False):
        trainer = GrpoTrainer(
            load_train_config(
                _config(tmp_path / str(scale), init_checkpoint),
                {**overrides, "optim.scale_mini_batches": scale},
            )
        )
        try:
            _with_outcomes(trainer, lambda g: g < 2)  # two mixed groups of the four sampled
            metrics = trainer.train_step()
        finally:
            trainer.close()
        assert metrics["rollout/kept_groups"] == 2 and metrics["train/trajectories"] == 16
        steps[scale] = metrics["train/optimizer_steps"]
    # a full batch (4 groups) takes 2 steps of 2 groups: half a batch takes one such step when scaled,
    # and two steps of one group each when not
    assert steps == {True: 1, False: 2}


# ------------------------------------------------------------------ the initial-state schedule
def test_mixed_first_prefers_states_with_mixed_outcomes() -> None:
    schedule = InitStateSchedule([200, 200], "mixed_first", explore=0.25)
    for state, rate in [((0, 3), 0.5), ((1, 7), 0.25), ((0, 9), 0.0), ((1, 1), 1.0)]:
        schedule.observe(state, rate)
    assert schedule.mixed_states() == [(0, 3), (1, 7)]
    rng = np.random.default_rng(0)
    drawn = [schedule.draw(4, rng) for _ in range(200)]
    mixed_per_round = [sum(s in {(0, 3), (1, 7)} for s in round_) for round_ in drawn]
    # both mixed states, once each, in most rounds (a pool draw takes 3 slots in 4 on average: explore 0.25)
    assert np.mean(mixed_per_round) > 1.5
    uniform = InitStateSchedule([200, 200], "uniform")
    uniform.stats = dict(schedule.stats)
    hits = sum(s in {(0, 3), (1, 7)} for _ in range(200) for s in uniform.draw(4, rng))
    assert hits < 10  # 2 of 400 states: uniform sampling almost never revisits them


def test_a_state_stops_being_mixed_after_repeated_all_fail_groups() -> None:
    schedule = InitStateSchedule([10], "mixed_first")
    schedule.observe((0, 1), 0.5)
    for expected in (True, True, True, False):
        schedule.observe((0, 1), 0.0)
        assert ((0, 1) in schedule.mixed_states()) is expected


def test_the_schedule_is_deterministic_and_round_trips_its_state() -> None:
    a = InitStateSchedule([50, 50, 50], "mixed_first", explore=0.3)
    for k in range(30):
        a.observe((k % 3, k), (k % 5) / 4)
    b = InitStateSchedule([50, 50, 50], "mixed_first", explore=0.3)
    b.load_state_dict(a.state_dict())
    assert a.draw(20, np.random.default_rng(5)) == b.draw(20, np.random.default_rng(5))


def test_a_resumed_mixed_first_run_reproduces_the_uninterrupted_one(tmp_path, init_checkpoint) -> None:
    settings = {"env.init_state_schedule": "mixed_first", "eval.every": 0}

    def run(name: str, resume: bool = False, **extra) -> dict[int, dict]:
        trainer = GrpoTrainer(
            load_train_config(_config(tmp_path / name, init_checkpoint), {**settings, **extra}), resume=resume
        )
        try:
            return {m["step"]: m for m in trainer.train() if "train/updated" in m}
        finally:
            trainer.close()

    straight = run("a")
    run("b", total_steps=2)
    resumed = run("b", resume=True)
    assert straight[3]["rollout/init_states_seen"] > 0
    for key in ("rollout/sampled_success", "rollout/init_states_mixed", "train/loss", "train/clip_fraction"):
        assert resumed[3][key] == straight[3][key], key
