"""Every package imports, and the command line answers."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from svrl.cli import build_parser


@pytest.mark.parametrize("module", ["svrl_policy", "svrl_sim", "svrl_trainer", "svrl_ros", "svrl.cli"])
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
        [sys.executable, "-m", "svrl.cli", "--help"], capture_output=True, text=True, check=True
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


@pytest.mark.parametrize("package", ["svrl_policy", "svrl_sim", "svrl_trainer"])
def test_learning_core_never_names_ros(package: str) -> None:
    """The layout's one rule: the core packages import no ROS module, not even lazily inside a function.

    Backends and commands that need ROS register from the ROS side (entry points, the `svrl` table)."""
    import ast
    from pathlib import Path

    root = Path(importlib.import_module(package).__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if node.value.split(".")[0] in ("svrl_ros", "rclpy") else []
            offenders += [
                f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in ("svrl_ros", "rclpy")
            ]
    assert offenders == []


def test_env_backends_plug_in_by_name() -> None:
    from svrl_trainer import catalog

    assert {"sim", "toy"} <= set(catalog.backend_names())
    with pytest.raises(ValueError, match="not one of"):
        catalog.get_backend("no_such_backend")
    toy = catalog.get_backend("toy")
    catalog.register_backend(catalog.EnvBackend("toy_alias", toy.resolve_tasks, toy.make_env))
    try:
        assert [t.name for t in catalog.resolve_tasks("toy_alias", ["toy"])] == [
            t.name for t in catalog.resolve_tasks("toy", ["toy"])
        ]
        with pytest.raises(ValueError, match="takes no options"):
            catalog.make_env("toy_alias", 2, image_size=32, colour="red")
    finally:
        catalog._REGISTERED.pop("toy_alias")
