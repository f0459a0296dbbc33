"""Stack profiles: the node graph as data, shared by `ros2 launch` and `svrl up`.

A full ROS 2 install starts nodes with launch_ros; a pip-only machine has no launch package. Both
read the same profile through this module, so "which nodes, which parameters" cannot drift apart.
No rclpy import here: the launch file and the CLI both use it before any node exists.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# In the source tree ros2_ws/src/svrl_ros/launch links to the repository's launch/ folder.
_SOURCE_PROFILE_DIR = Path(__file__).resolve().parents[1] / "launch" / "profiles"
_NODE_KEYS = {"package", "executable", "namespace", "parameters", "remappings"}


class ProfileError(ValueError):
    """A stack profile that cannot be started; the message names the file and the field."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    package: str
    executable: str
    namespace: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: dict[str, str] = field(default_factory=dict)

    @property
    def python_module(self) -> str:
        """The module a pip install runs for this executable (console scripts map 1:1 to modules)."""
        return f"{self.package}.{self.executable}"


@dataclass(frozen=True)
class StackProfile:
    name: str
    path: Path
    description: str
    use_sim_time: bool
    nodes: tuple[NodeSpec, ...]


def profile_dir() -> Path:
    """launch/profiles of the source tree (pip installs), else of the colcon install's share folder."""
    if _SOURCE_PROFILE_DIR.is_dir():
        return _SOURCE_PROFILE_DIR
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("svrl_ros")) / "launch" / "profiles"
    except (ImportError, LookupError) as error:
        raise ProfileError(f"cannot find the svrl_ros stack profiles: {error}") from error


def resolve_profile_path(profile: str) -> Path:
    """Accept a profile name from launch/profiles/ or a path to a YAML file."""
    candidate = Path(profile)
    if candidate.suffix in {".yaml", ".yml"} and candidate.is_file():
        return candidate
    named = profile_dir() / f"{profile}.yaml"
    if named.is_file():
        return named
    available = sorted(p.stem for p in profile_dir().glob("*.yaml"))
    raise ProfileError(f"no stack profile {profile!r}: not a YAML file, and not one of {available}")


def load_profile(profile: str) -> StackProfile:
    path = resolve_profile_path(profile)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ProfileError(f"{path}: not valid YAML: {error}") from error
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, dict) or not nodes_raw:
        raise ProfileError(f"{path}: 'nodes' must map node names to their settings")
    nodes = []
    for name, settings in nodes_raw.items():
        settings = settings or {}
        unknown = set(settings) - _NODE_KEYS
        if unknown:
            raise ProfileError(
                f"{path}: node {name!r} has unknown keys {sorted(unknown)}; allowed: {sorted(_NODE_KEYS)}"
            )
        for key in ("package", "executable"):
            if not isinstance(settings.get(key), str) or not settings[key]:
                raise ProfileError(f"{path}: node {name!r} needs a '{key}' string")
        nodes.append(
            NodeSpec(
                name=name,
                package=settings["package"],
                executable=settings["executable"],
                namespace=settings.get("namespace", "") or "",
                parameters=dict(settings.get("parameters") or {}),
                remappings={str(k): str(v) for k, v in (settings.get("remappings") or {}).items()},
            )
        )
    return StackProfile(
        name=path.stem,
        path=path,
        description=str(raw.get("description", "")).strip(),
        use_sim_time=bool(raw.get("use_sim_time", False)),
        nodes=tuple(nodes),
    )


def node_parameters(profile: StackProfile, node: NodeSpec) -> dict[str, Any]:
    """The parameters a node starts with: its own, plus the profile-wide `use_sim_time`."""
    return {**node.parameters, "use_sim_time": profile.use_sim_time}


def params_file_content(profile: StackProfile, node: NodeSpec) -> str:
    """A ROS 2 parameters YAML for one node, in the `<node>: ros__parameters:` layout."""
    qualified = f"/{node.namespace.strip('/')}/{node.name}" if node.namespace else node.name
    return yaml.safe_dump({qualified: {"ros__parameters": node_parameters(profile, node)}}, sort_keys=True)


def node_command(node: NodeSpec, params_file: Path) -> list[str]:
    """How `svrl up` starts a node from a pip install: the module, plus standard --ros-args."""
    command = [sys.executable, "-m", node.python_module, "--ros-args", "-r", f"__node:={node.name}"]
    if node.namespace:
        command += ["-r", f"__ns:=/{node.namespace.strip('/')}"]
    for source, target in node.remappings.items():
        command += ["-r", f"{source}:={target}"]
    return [*command, "--params-file", str(params_file)]
