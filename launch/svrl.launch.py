"""Start the svrl node graph described by a stack profile (launch/profiles/<name>.yaml).

    ros2 launch svrl_ros svrl.launch.py profile:=sim_expert

The profile is parsed by svrl_ros.stack, the same code `svrl up` uses on pip-only machines, so both
ways of starting the stack run the same nodes with the same parameters.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from svrl_ros.stack import load_profile, node_parameters

from launch import LaunchDescription


def _nodes_from_profile(context, *args, **kwargs):
    profile = load_profile(LaunchConfiguration("profile").perform(context))
    use_sim_time_override = LaunchConfiguration("use_sim_time").perform(context)
    nodes = []
    for spec in profile.nodes:
        parameters = node_parameters(profile, spec)
        if use_sim_time_override:
            parameters["use_sim_time"] = use_sim_time_override.lower() in {"1", "true", "yes"}
        nodes.append(
            Node(
                package=spec.package,
                executable=spec.executable,
                name=spec.name,
                namespace=spec.namespace,
                parameters=[parameters],
                remappings=list(spec.remappings.items()),
                output="screen",
                emulate_tty=True,
            )
        )
    return nodes


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "profile",
                default_value="sim_expert",
                description="profile name in launch/profiles/ or a YAML path",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="",
                description="override the profile's use_sim_time (true/false)",
            ),
            OpaqueFunction(function=_nodes_from_profile),
        ]
    )
