"""Stack profiles: the node graph as data, shared by `ros2 launch` and `svrl up`.

A full ROS 2 install starts nodes with launch_ros; a pip-only machine has no launch package. Both
read the same profile through this module, so "which nodes, which parameters" cannot drift apart.
No rclpy import here: the launch file and the CLI both use it before any node exists.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

# In the source tree ros2_ws/src/svrl_ros/launch links to the repository's launch/ folder.
_SOURCE_PROFILE_DIR = Path(__file__).resolve().parents[1] / "launch" / "profiles"
_NODE_KEYS = {
    "name",
    "package",
    "executable",
    "namespace",
    "parameters",
    "remappings",
    "arguments",
    "full_ros_only",
}


class ProfileError(ValueError):
    """A stack profile that cannot be started; the message names the file and the field."""


@dataclass(frozen=True)
class NodeSpec:
    """One node of a profile. `key` is its unique id in the profile (what `--set key.param=v` names);
    `name` is the ROS node name (defaults to the key; two keys may run one executable under two names)."""

    key: str
    name: str
    package: str
    executable: str
    namespace: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: dict[str, str] = field(default_factory=dict)
    arguments: tuple[str, ...] = ()
    full_ros_only: bool = (
        False  # needs a full ROS 2 install (robot_state_publisher, rviz2): `svrl up` skips it
    )

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


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses duplicate mapping keys (plain YAML keeps the last one silently)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_profile(profile: str, overrides: list[str] | tuple[str, ...] = ()) -> StackProfile:
    """Parse a profile; `overrides` are `node_key.param=value` strings (values typed like YAML)."""
    path = resolve_profile_path(profile)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as error:
        raise ProfileError(f"{path}: not valid YAML: {error}") from error
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, dict) or not nodes_raw:
        raise ProfileError(f"{path}: 'nodes' must map node names to their settings")
    nodes = [_node_spec(path, key, settings) for key, settings in nodes_raw.items()]
    names = [(n.namespace.strip("/"), n.name) for n in nodes]
    clashes = sorted({f"{ns}/{name}".lstrip("/") for ns, name in names if names.count((ns, name)) > 1})
    if clashes:
        raise ProfileError(
            f"{path}: two nodes would share the ROS name(s) {clashes}; give each a unique 'name'"
        )
    nodes = apply_overrides(path, nodes, overrides)
    return StackProfile(
        name=path.stem,
        path=path,
        description=str(raw.get("description", "")).strip(),
        use_sim_time=bool(raw.get("use_sim_time", False)),
        nodes=tuple(nodes),
    )


def _node_spec(path: Path, key: Any, settings: Any) -> NodeSpec:
    settings = settings or {}
    if not isinstance(settings, dict):
        raise ProfileError(f"{path}: node {key!r} must map settings, got {type(settings).__name__}")
    unknown = set(settings) - _NODE_KEYS
    if unknown:
        raise ProfileError(
            f"{path}: node {key!r} has unknown keys {sorted(unknown)}; allowed: {sorted(_NODE_KEYS)}"
        )
    for field_name in ("package", "executable"):
        if not isinstance(settings.get(field_name), str) or not settings[field_name]:
            raise ProfileError(f"{path}: node {key!r} needs a '{field_name}' string")
    name = settings.get("name", key)
    if not isinstance(name, str) or not name.replace("_", "").isalnum() or name[0].isdigit():
        raise ProfileError(f"{path}: node {key!r} has an invalid ROS node name {name!r}")
    arguments = settings.get("arguments") or []
    if not isinstance(arguments, list):
        raise ProfileError(f"{path}: node {key!r}: 'arguments' must be a list of strings")
    parameters = settings.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProfileError(f"{path}: node {key!r}: 'parameters' must map names to values")
    full_ros_only = settings.get("full_ros_only", False)
    if not isinstance(full_ros_only, bool):
        raise ProfileError(f"{path}: node {key!r}: 'full_ros_only' must be true or false")
    return NodeSpec(
        key=str(key),
        name=name,
        package=settings["package"],
        executable=settings["executable"],
        namespace=settings.get("namespace", "") or "",
        parameters=dict(parameters),
        remappings={str(k): str(v) for k, v in (settings.get("remappings") or {}).items()},
        arguments=tuple(str(a) for a in arguments),
        full_ros_only=full_ros_only,
    )


def parse_override(text: str) -> tuple[str, str, Any]:
    """`node.param=value` -> (node key, parameter, value typed like YAML: 3 -> int, true -> bool, 5e-5 -> float)."""
    target, sep, value_text = text.partition("=")
    node_key, dot, param = target.strip().partition(".")
    if not sep or not dot or not node_key or not param:
        raise ProfileError(f"--set {text!r}: expected node.param=value, e.g. policy_server.temperature=0")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as error:
        raise ProfileError(f"--set {text!r}: the value is not valid YAML: {error}") from error
    if isinstance(value, str) and value_text.strip() and _looks_like_float(value_text.strip()):
        value = float(value_text)  # YAML 1.1 reads 5e-5 as a string; people mean a number
    return node_key, param, value


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def apply_overrides(
    path: Path, nodes: list[NodeSpec], overrides: list[str] | tuple[str, ...]
) -> list[NodeSpec]:
    by_key = {n.key: n for n in nodes}
    for text in overrides:
        node_key, param, value = parse_override(text)
        if node_key not in by_key:
            raise ProfileError(
                f"--set {text!r}: profile {path.stem} has no node {node_key!r} (has {sorted(by_key)})"
            )
        node = by_key[node_key]
        by_key[node_key] = replace(node, parameters={**node.parameters, param: value})
    return [by_key[n.key] for n in nodes]


def node_parameters(profile: StackProfile, node: NodeSpec) -> dict[str, Any]:
    """The parameters a node starts with: its own, plus the profile-wide `use_sim_time`."""
    return {**node.parameters, "use_sim_time": profile.use_sim_time}


def params_file_content(profile: StackProfile, node: NodeSpec) -> str:
    """A ROS 2 parameters YAML for one node, in the `<node>: ros__parameters:` layout."""
    qualified = f"/{node.namespace.strip('/')}/{node.name}" if node.namespace else node.name
    return yaml.safe_dump({qualified: {"ros__parameters": node_parameters(profile, node)}}, sort_keys=True)


def node_command(node: NodeSpec, params_file: Path) -> list[str]:
    """How `svrl up` starts a node from a pip install: the module, plus standard --ros-args."""
    command = [sys.executable, "-m", node.python_module, *node.arguments]
    command += ["--ros-args", "-r", f"__node:={node.name}"]
    if node.namespace:
        command += ["-r", f"__ns:=/{node.namespace.strip('/')}"]
    for source, target in node.remappings.items():
        command += ["-r", f"{source}:={target}"]
    return [*command, "--params-file", str(params_file)]
