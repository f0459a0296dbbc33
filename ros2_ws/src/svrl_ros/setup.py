"""ament_python build of svrl_ros for colcon on a full ROS 2 install.

`launch/` and `urdf/` are symlinks to the repository's top-level folders, so the launch files,
stack profiles and robot description installed here are the very ones the pip path reads.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "svrl_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/launch/profiles", glob("launch/profiles/*.yaml")),
        (f"share/{PACKAGE}/urdf", glob("urdf/*.urdf") + glob("urdf/*.xacro")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="svrl maintainers",
    maintainer_email="maintainers@svrl.dev",
    description="ROS 2 nodes of svrl (thin wrappers over svrl_policy / svrl_sim / svrl_trainer)",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "policy_server = svrl_ros.policy_server:main",
            "sim_node = svrl_ros.sim_node:main",
            "arm_controller = svrl_ros.arm_controller:main",
            "teleop_marker = svrl_ros.teleop_marker:main",
            "camera_node = svrl_ros.camera_node:main",
            "episode_recorder = svrl_ros.episode_recorder:main",
            "trainer_node = svrl_ros.trainer_node:main",
        ],
    },
)
