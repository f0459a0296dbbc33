"""Every package imports, and the command line answers."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from svrl_trainer.cli import build_parser


@pytest.mark.parametrize(
    "module", ["svrl_policy", "svrl_sim", "svrl_trainer", "svrl_ros", "svrl_trainer.cli"]
)
def test_package_imports(module: str) -> None:
    importlib.import_module(module)


def test_interfaces_are_built_into_the_venv() -> None:
    from svrl_interfaces.action import ExecuteInstruction
    from svrl_interfaces.msg import ActionChunk, EpisodeStatus
    from svrl_interfaces.srv import ResetEpisode, SetMode, StepSim

    assert SetMode.Request.MODE_TELEOP == "teleop"
    assert ExecuteInstruction.Result.REASON_CANCELED == "canceled"
    assert {"actions", "dim_names", "control_period"} <= set(ActionChunk.get_fields_and_field_types())
    assert EpisodeStatus and ResetEpisode and StepSim


def test_svrl_help_lists_every_pipeline_step() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "svrl_trainer.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("demos", "pretrain", "sft", "train", "eval", "export", "bench", "up", "demo"):
        assert command in out, command


def test_unbuilt_commands_fail_loudly(capsys) -> None:
    """A step that does not exist yet must exit non-zero, never print a made-up result."""
    from svrl_trainer.commands import _add_planned

    def unbuilt(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if "not built yet" in (choice.help or ""):
                        found.append([*prefix, choice.dest])
                for name, child in action.choices.items():
                    found += unbuilt(child, [*prefix, name])
        return found

    assert unbuilt(build_parser(), []) == []  # every issue has landed its commands
    parser = argparse.ArgumentParser()
    _add_planned(parser.add_subparsers(), {"later": ("a future step", "some issue")}, "")
    assert unbuilt(parser, []) == [["later"]]
    args = parser.parse_args(["later"])
    assert args.handler(args) == 2
    assert "not built yet" in capsys.readouterr().err
