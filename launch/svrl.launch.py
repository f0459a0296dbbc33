"""Start the svrl node graph described by a stack profile (launch/profiles/<name>.yaml).

    ros2 launch svrl_ros svrl.launch.py profile:=sim_expert
    ros2 launch svrl_ros svrl.launch.py profile:=sim checkpoint:=runs/demo/grpo/checkpoints/step_000010/policy

The profile is parsed by svrl_ros.stack, the same code `svrl up` uses on pip-only machines, so both
ways of starting the stack run the same nodes with the same parameters.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from svrl_ros.stack import load_profile, node_parameters

from launch import LaunchDescription

POLICY_SERVER_KEY = "policy_server"  # the node key the checkpoint argument sets, as `svrl up --checkpoint`


def _nodes_from_profile(context, *args, **kwargs):
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    overrides = [f"{POLICY_SERVER_KEY}.checkpoint={checkpoint}"] if checkpoint else []
    profile = load_profile(LaunchConfiguration("profile").perform(context), overrides)
    use_sim_time_override = LaunchConfiguration("use_sim_time").perform(context)
    nodes = []
    for spec in profile.nodes:  # full_ros_only nodes too: this is the full ROS 2 install
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
                arguments=list(spec.arguments),
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
                "checkpoint",
                default_value="",
                description="policy checkpoint directory for the profile's policy_server (empty: its default)",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="",
                description="override the profile's use_sim_time (true/false)",
            ),
            OpaqueFunction(function=_nodes_from_profile),
        ]
    )
