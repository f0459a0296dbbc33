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

# In the source tree ros2_ws/src/svrl_ros/launch links to the repository's launch/ folder (and urdf/ to
# urdf/); config/ lives in the package. A colcon install has the same three under share/svrl_ros.
_SOURCE_SHARE_DIR = Path(__file__).resolve().parents[1]
_SOURCE_PROFILE_DIR = _SOURCE_SHARE_DIR / "launch" / "profiles"
_NODE_KEYS = {
    "name",
    "package",
    "executable",
    "namespace",
    "parameters",
    "parameter_files",
    "remappings",
    "arguments",
    "full_ros_only",
    "group",
}
_PROFILE_KEYS = {"description", "use_sim_time", "nodes", "robot_description", "svrl_up_note"}
# A parameter whose value is exactly this string gets the profile's robot description (URDF text).
ROBOT_DESCRIPTION_PARAM = "$(robot_description)"
# In a node's arguments, this stands for the svrl_ros share folder: `-d $(share)/rviz/teleop.rviz`.
SHARE_ARGUMENT = "$(share)"
# Nodes of this group are cameras: `camera_driver` chooses svrl's camera_node or realsense-ros for them.
CAMERA_GROUP = "cameras"
CAMERA_DRIVERS = {
    "svrl": ("svrl_ros", "camera_node"),
    "realsense2_camera": ("realsense2_camera", "realsense2_camera_node"),
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
    # ROS parameter files loaded before `parameters` (which win): paths relative to the svrl_ros share
    # folder (config/controllers.yaml) or absolute; resolved by `parameter_file_paths`.
    parameter_files: tuple[str, ...] = ()
    group: str = ""  # what the launch file switches together: `arm_bringup`, `cameras`

    @property
    def python_module(self) -> str:
        """The module a pip install runs for this executable (console scripts map 1:1 to modules)."""
        return f"{self.package}.{self.executable}"


@dataclass(frozen=True)
class RobotDescriptionSpec:
    """Which URDF robot_state_publisher publishes, and the ros2_control hardware it names.

    `urdf` is a file in the package's urdf/ folder or a path; an empty `hardware_plugin` keeps the URDF's
    own (mock hardware), else it and `hardware_parameters` replace the URDF's `<hardware>` element.
    """

    urdf: str = "svrl_arm.urdf"
    hardware_plugin: str = ""
    hardware_parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StackProfile:
    name: str
    path: Path
    description: str
    use_sim_time: bool
    nodes: tuple[NodeSpec, ...]
    robot_description: RobotDescriptionSpec | None = None
    svrl_up_note: str = ""  # printed by `svrl up` when it skips full-ROS-only nodes (what must run instead)


def share_dir() -> Path:
    """The svrl_ros share folder: the source package (pip installs), else the colcon install's."""
    if _SOURCE_PROFILE_DIR.is_dir():
        return _SOURCE_SHARE_DIR
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("svrl_ros"))
    except (ImportError, LookupError) as error:
        raise ProfileError(
            f"cannot find the svrl_ros share folder (profiles, config, urdf): {error}"
        ) from error


def profile_dir() -> Path:
    """launch/profiles of the source tree (pip installs), else of the colcon install's share folder."""
    return share_dir() / "launch" / "profiles"


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
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile is a mapping with {sorted(_PROFILE_KEYS)}")
    unknown = set(raw) - _PROFILE_KEYS
    if unknown:
        raise ProfileError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(_PROFILE_KEYS)}")
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, dict) or not nodes_raw:
        raise ProfileError(f"{path}: 'nodes' must map node names to their settings")
    description_overrides = [o for o in overrides if o.strip().startswith("robot_description.")]
    overrides = [o for o in overrides if o not in description_overrides]
    robot_description = _robot_description_spec(path, raw.get("robot_description"), description_overrides)
    nodes = [_node_spec(path, key, settings) for key, settings in nodes_raw.items()]
    names = [(n.namespace.strip("/"), n.name) for n in nodes]
    clashes = sorted({f"{ns}/{name}".lstrip("/") for ns, name in names if names.count((ns, name)) > 1})
    if clashes:
        raise ProfileError(
            f"{path}: two nodes would share the ROS name(s) {clashes}; give each a unique 'name'"
        )
    nodes = apply_overrides(path, nodes, overrides)
    wants_description = [n.key for n in nodes if ROBOT_DESCRIPTION_PARAM in n.parameters.values()]
    if wants_description and robot_description is None:
        raise ProfileError(
            f"{path}: node(s) {wants_description} take {ROBOT_DESCRIPTION_PARAM} but the profile has no "
            "'robot_description' section"
        )
    return StackProfile(
        name=path.stem,
        path=path,
        description=str(raw.get("description", "")).strip(),
        use_sim_time=bool(raw.get("use_sim_time", False)),
        nodes=tuple(nodes),
        robot_description=robot_description,
        svrl_up_note=str(raw.get("svrl_up_note", "") or "").strip(),
    )


def _robot_description_spec(
    path: Path, raw: Any, overrides: list[str] | tuple[str, ...]
) -> RobotDescriptionSpec | None:
    if raw is None and not overrides:
        return None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ProfileError(
            f"{path}: 'robot_description' must map urdf / hardware_plugin / hardware_parameters"
        )
    allowed = {"urdf", "hardware_plugin", "hardware_parameters"}
    unknown = set(raw) - allowed
    if unknown:
        raise ProfileError(
            f"{path}: robot_description has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}"
        )
    parameters = raw.get("hardware_parameters") or {}
    if not isinstance(parameters, dict):
        raise ProfileError(f"{path}: robot_description.hardware_parameters must map names to values")
    spec = RobotDescriptionSpec(
        urdf=str(raw.get("urdf") or RobotDescriptionSpec.urdf),
        hardware_plugin=str(raw.get("hardware_plugin") or ""),
        hardware_parameters=dict(parameters),
    )
    for text in overrides:
        _, field_name, value = parse_override(text)
        if field_name.startswith("hardware_parameters."):
            name = field_name.partition(".")[2]
            spec = replace(spec, hardware_parameters={**spec.hardware_parameters, name: value})
        elif field_name in {"urdf", "hardware_plugin"}:
            spec = replace(spec, **{field_name: "" if value is None else str(value)})
        else:
            raise ProfileError(
                f"--set {text!r}: robot_description has urdf, hardware_plugin and hardware_parameters.<name>"
            )
    return spec


def robot_description_xml(spec: RobotDescriptionSpec) -> str:
    """The URDF text robot_state_publisher publishes for `spec` (errors as ProfileError)."""
    from svrl_ros.robot_description import RobotDescriptionError, load_robot_description

    urdf = Path(spec.urdf)
    if not urdf.is_absolute():
        urdf = share_dir() / "urdf" / urdf
    try:
        return load_robot_description(urdf, spec.hardware_plugin or None, spec.hardware_parameters)
    except RobotDescriptionError as error:
        raise ProfileError(f"robot_description: {error}") from error


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
    parameter_files = settings.get("parameter_files") or []
    if not isinstance(parameter_files, list) or not all(isinstance(f, str) and f for f in parameter_files):
        raise ProfileError(f"{path}: node {key!r}: 'parameter_files' must be a list of paths")
    group = settings.get("group", "") or ""
    if not isinstance(group, str):
        raise ProfileError(f"{path}: node {key!r}: 'group' must be a string")
    return NodeSpec(
        key=str(key),
        name=name,
        package=settings["package"],
        executable=settings["executable"],
        namespace=settings.get("namespace", "") or "",
        parameters=dict(parameters),
        remappings={str(k): str(v) for k, v in (settings.get("remappings") or {}).items()},
        arguments=tuple(_resolve_share(str(a)) for a in arguments),
        full_ros_only=full_ros_only,
        parameter_files=tuple(parameter_files),
        group=group,
    )


def _resolve_share(argument: str) -> str:
    """`$(share)/rviz/x.rviz` -> an absolute path in the svrl_ros share folder (source tree or install)."""
    return argument.replace(SHARE_ARGUMENT, str(share_dir())) if SHARE_ARGUMENT in argument else argument


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


def apply_remaps(profile: StackProfile, remaps: list[str] | tuple[str, ...]) -> StackProfile:
    """`node_key.from:=to` strings -> the profile with those topic remappings added or replaced."""
    by_key = {n.key: n for n in profile.nodes}
    for text in remaps:
        target, sep, to = text.partition(":=")
        node_key, dot, source = target.strip().partition(".")
        if not sep or not dot or not node_key or not source or not to.strip():
            raise ProfileError(
                f"--remap {text!r}: expected node.from:=to, e.g. "
                "arm_controller.arm_controller/joint_trajectory:=/scaled_joint_trajectory_controller/joint_trajectory"
            )
        if node_key not in by_key:
            raise ProfileError(
                f"--remap {text!r}: profile {profile.name} has no node {node_key!r} (has {sorted(by_key)})"
            )
        node = by_key[node_key]
        by_key[node_key] = replace(node, remappings={**node.remappings, source: to.strip()})
    return replace(profile, nodes=tuple(by_key[n.key] for n in profile.nodes))


def with_camera_driver(profile: StackProfile, driver: str) -> StackProfile:
    """Run the profile's `cameras` group on svrl's camera_node or on realsense-ros's node.

    Both take realsense-ros v4 parameter names and publish the same topics,
    `<camera_namespace>/<camera_name>/color/...`. svrl's node builds them from those two parameters;
    realsense-ros's node publishes `~/color/...`, so its node is named `<camera_name>` in namespace
    `<camera_namespace>` (as its rs_launch.py does). realsense2_camera is a C++ package of a full ROS 2
    install, which `svrl up` cannot start.
    """
    if driver not in CAMERA_DRIVERS:
        raise ProfileError(f"camera_driver {driver!r} is not one of {sorted(CAMERA_DRIVERS)}")
    if driver == "svrl":
        return profile
    package, executable = CAMERA_DRIVERS[driver]
    nodes = tuple(
        replace(
            n,
            package=package,
            executable=executable,
            full_ros_only=True,
            name=str(n.parameters.get("camera_name", "camera")),
            namespace="/".join(
                part
                for part in (n.namespace.strip("/"), str(n.parameters.get("camera_namespace", "camera")))
                if part
            ),
        )
        if n.group == CAMERA_GROUP
        else n
        for n in profile.nodes
    )
    return replace(profile, nodes=nodes)


def with_namespace(profile: StackProfile, namespace: str) -> StackProfile:
    """Every node under `namespace` (the launch file's `namespace` argument; svrl topics are relative)."""
    namespace = namespace.strip("/")
    if not namespace:
        return profile
    nodes = tuple(
        replace(n, namespace="/".join(p for p in (namespace, n.namespace.strip("/")) if p))
        for n in profile.nodes
    )
    return replace(profile, nodes=nodes)


def without_group(profile: StackProfile, group: str) -> StackProfile:
    """The profile less one group's nodes (`arm_bringup` when the arm's own driver is running)."""
    return replace(profile, nodes=tuple(n for n in profile.nodes if n.group != group))


def parameter_file_paths(node: NodeSpec) -> list[Path]:
    """The node's parameter files as absolute paths; a missing file is an error, not a silent skip."""
    paths = []
    for name in node.parameter_files:
        path = Path(name) if Path(name).is_absolute() else share_dir() / name
        if not path.is_file():
            raise ProfileError(f"node {node.key!r}: parameter file {name} not found (looked at {path})")
        paths.append(path)
    return paths


def node_parameters(profile: StackProfile, node: NodeSpec) -> dict[str, Any]:
    """The parameters a node starts with: its own, plus the profile-wide `use_sim_time`, with
    `$(robot_description)` replaced by the profile's URDF text."""
    parameters = {**node.parameters, "use_sim_time": profile.use_sim_time}
    for name, value in parameters.items():
        if value == ROBOT_DESCRIPTION_PARAM:
            if profile.robot_description is None:
                raise ProfileError(f"node {node.key!r}: {name} needs the profile's robot_description section")
            parameters[name] = robot_description_xml(profile.robot_description)
    return parameters


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
    for path in parameter_file_paths(node):
        command += ["--params-file", str(path)]
    return [*command, "--params-file", str(params_file)]
