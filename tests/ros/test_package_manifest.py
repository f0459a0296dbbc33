"""svrl_ros's package.xml declares everything its nodes import and its launch file starts.

`rosdep install --from-paths ros2_ws/src` + `colcon build` on a full ROS 2 install only work when
package.xml names every ROS package the code needs; a missing one shows up there as an ImportError at
run time, on the robot. No rosdep here, so the check is done on the sources: every import of the nodes and
the launch file, every package a stack profile starts, every controller type and hardware plugin.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from svrl_ros.stack import CAMERA_DRIVERS, load_profile

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "ros2_ws" / "src" / "svrl_ros"
SVRL_OWN = {"svrl_policy", "svrl_sim", "svrl_trainer", "svrl_ros"}  # `pip install -e <repo>` provides these
# pip distributions that rosdep also knows: package.xml names the rosdep key so a ROS install gets them
ROSDEP_KEYS = {"numpy": "python3-numpy", "yaml": "python3-yaml", "cv2": "python3-opencv"}
# the ros2_control hardware plugins' packages (pluginlib prefix -> package)
PLUGIN_PACKAGES = {"mock_components": "hardware_interface"}


def declared_dependencies(package_xml: Path = PACKAGE / "package.xml") -> set[str]:
    """Names a full install gets at run time: <depend> and <exec_depend> (build-only ones do not count)."""
    root = ET.parse(package_xml).getroot()
    return {e.text.strip() for tag in ("depend", "exec_depend") for e in root.findall(tag)}


def imported_modules(files: list[Path]) -> dict[str, set[str]]:
    """Top-level module -> files importing it (lazy imports inside functions included)."""
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for name in imported_names(node):
                found.setdefault(name.split(".")[0], set()).add(path.name)
    return found


def imported_names(node: ast.AST) -> list[str]:
    """The absolute module names an `import` / `from ... import` node imports (none for any other node)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def _pyproject_distributions() -> set[str]:
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {_normalise(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _ros_index() -> set[str]:
    """ROS packages installed in this environment (the venv is the ament prefix of the pip ROS wheels)."""
    index = Path(sys.prefix) / "share" / "ament_index" / "resource_index" / "packages"
    return {p.name for p in index.iterdir()} if index.is_dir() else set()


def missing_declarations(files: list[Path], declared: set[str]) -> list[str]:
    """Why each import would fail on a full install set up with rosdep + `pip install svrl`."""
    ros_index = _ros_index()
    distributions = importlib.metadata.packages_distributions()
    from_pyproject = _pyproject_distributions()
    problems = []
    for module, users in sorted(imported_modules(files).items()):
        if module in sys.stdlib_module_names or module in SVRL_OWN:
            continue
        dists = [_normalise(d) for d in distributions.get(module, [])]
        is_ros = module in ros_index or any(d.startswith("ros-") for d in dists) or not dists
        where = ", ".join(sorted(users))
        if is_ros:
            # a ROS package (or nothing pip installs here, i.e. one only a full ROS install has)
            if module not in declared:
                problems.append(f"{module} (imported by {where}) is not declared in package.xml")
            continue
        if not set(dists) & from_pyproject:
            problems.append(
                f"{module} (imported by {where}) comes from {dists}, which pyproject.toml does not list"
            )
        key = ROSDEP_KEYS.get(module)
        if key and key not in declared:
            problems.append(f"{module} (imported by {where}) needs <exec_depend>{key}</exec_depend>")
    return problems


def _node_and_launch_files() -> list[Path]:
    return sorted((PACKAGE / "svrl_ros").glob("*.py")) + sorted((REPO_ROOT / "launch").glob("*.launch.py"))


def test_every_import_of_the_nodes_and_launch_file_is_declared() -> None:
    assert _node_and_launch_files(), "no sources found"
    assert missing_declarations(_node_and_launch_files(), declared_dependencies()) == []


def test_a_missing_declaration_fails(tmp_path: Path) -> None:
    """The check above can fail: a new node importing an undeclared ROS package is reported."""
    node = tmp_path / "new_node.py"
    node.write_text("import rclpy\nfrom tf2_msgs.msg import TFMessage\nfrom nav_msgs.msg import Odometry\n")
    declared = declared_dependencies()
    assert missing_declarations([node], declared) == [
        "nav_msgs (imported by new_node.py) is not declared in package.xml"
    ]
    assert missing_declarations([node], declared - {"rclpy"}) == [
        "nav_msgs (imported by new_node.py) is not declared in package.xml",
        "rclpy (imported by new_node.py) is not declared in package.xml",
    ]
    node.write_text("import numpy\n")
    assert missing_declarations([node], declared - {"python3-numpy"}) == [
        "numpy (imported by new_node.py) needs <exec_depend>python3-numpy</exec_depend>"
    ]


@pytest.mark.parametrize("profile_path", sorted((REPO_ROOT / "launch" / "profiles").glob("*.yaml")), ids=str)
def test_every_package_a_profile_starts_is_declared(profile_path: Path) -> None:
    declared = declared_dependencies() | {"svrl_ros"}
    profile = load_profile(str(profile_path))
    packages = {n.package for n in profile.nodes}
    if any(n.group == "cameras" for n in profile.nodes):  # camera_driver:=realsense2_camera starts it
        packages |= {package for package, _ in CAMERA_DRIVERS.values()}
    assert packages <= declared, sorted(packages - declared)


def test_controller_types_and_hardware_plugin_packages_are_declared() -> None:
    declared = declared_dependencies()
    raw = yaml.safe_load((PACKAGE / "config" / "controllers.yaml").read_text())
    manager = raw["/**/controller_manager"]["ros__parameters"]
    types = [v["type"] for v in manager.values() if isinstance(v, dict) and "type" in v]
    assert len(types) == 3
    needed = {t.split("/")[0] for t in types}
    plugin = (
        ET.parse(REPO_ROOT / "urdf" / "svrl_arm.urdf").getroot().find("ros2_control/hardware/plugin").text
    )
    needed.add(PLUGIN_PACKAGES[plugin.split("/")[0]])
    assert needed <= declared, sorted(needed - declared)
