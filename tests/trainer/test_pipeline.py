"""Pipeline stages are reused only when they ran with the same arguments (svrl_trainer.pipeline)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from svrl_trainer.pipeline import StageMismatchError, run_stage, stage_record

# A stand-in stage: appends a line to a log (how often it ran) and writes its output file.
_STAGE = "import sys; open(sys.argv[1], 'a').write('ran\\n'); open(sys.argv[2], 'w').write(sys.argv[3])"


def _command(log: Path, done: Path, value: str, *extra: str) -> list[str]:
    return [sys.executable, "-c", _STAGE, str(log), str(done), value, *extra]


def _runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_stage_is_reused_only_with_the_recorded_arguments(tmp_path: Path) -> None:
    log, done = tmp_path / "log", tmp_path / "out.txt"
    assert run_stage("make", _command(log, done, "a"), done) is not None
    record = json.loads(stage_record(done).read_text())
    assert record["arguments"] == _command(log, done, "a")[1:] and _runs(log) == 1
    assert run_stage("make", _command(log, done, "a"), done) is None  # same arguments: reused
    assert _runs(log) == 1
    with pytest.raises(StageMismatchError, match="other arguments"):
        run_stage("make", _command(log, done, "b"), done)  # e.g. another learning rate
    assert _runs(log) == 1 and done.read_text() == "a"  # neither rerun nor overwritten


def test_output_without_a_record_is_refused_unless_the_command_resumes(tmp_path: Path) -> None:
    log, done = tmp_path / "log", tmp_path / "out.txt"
    done.write_text("made by hand")
    with pytest.raises(StageMismatchError, match="no record"):
        run_stage("make", _command(log, done, "a"), done)
    assert _runs(log) == 0
    # an interrupted resumable stage (output there, no record yet) is rerun and then recorded
    assert run_stage("make", _command(log, done, "a", "--resume"), done) is not None
    assert _runs(log) == 1 and stage_record(done).is_file()


def test_a_recorded_stage_whose_output_vanished_runs_again(tmp_path: Path) -> None:
    log, done = tmp_path / "log", tmp_path / "out.txt"
    run_stage("make", _command(log, done, "a"), done)
    done.unlink()
    assert run_stage("make", _command(log, done, "a"), done) is not None and _runs(log) == 2


def _base_args(*argv: str):
    import argparse

    from svrl_trainer.pipeline import add_base_args

    parser = argparse.ArgumentParser()
    add_base_args(parser, pretrain_steps=10, pretrain_demos_per_task=2)
    return parser.parse_args(list(argv))


def test_a_chain_starts_from_the_shipped_base_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from svrl_policy.shipped import SHIPPED_BASE, models_dir
    from svrl_trainer.pipeline import chosen_base

    assert chosen_base(_base_args("--base", str(tmp_path / "mine"))) == tmp_path / "mine"
    assert chosen_base(_base_args("--pretrain")) is None
    with pytest.raises(SystemExit):
        _base_args("--pretrain", "--base", "x")  # one or the other
    assert chosen_base(_base_args()) == models_dir() / SHIPPED_BASE
    monkeypatch.setenv("SVRL_MODELS_DIR", str(tmp_path))  # a folder without the base: say where it looked
    with pytest.raises(SystemExit, match="--pretrain"):
        chosen_base(_base_args())
