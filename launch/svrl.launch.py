"""Start the svrl node graph described by a stack profile (launch/profiles/<name>.yaml).

    ros2 launch svrl_ros svrl.launch.py profile:=sim_expert
    ros2 launch svrl_ros svrl.launch.py profile:=sim checkpoint:=runs/demo/grpo/checkpoints/step_000010/policy
    ros2 launch svrl_ros svrl.launch.py profile:=real checkpoint:=/opt/policy namespace:=robot1 log_level:=info

The profile is parsed by svrl_ros.stack, the same code `svrl up` uses on pip-only machines, so both
ways of starting the stack run the same nodes with the same parameters. The arguments below only
select among what the profile says (which camera driver, whether svrl brings up the arm, which
hardware plugin, where arm commands go); `ros2 launch ... --show-args` lists them.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, GroupAction, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, PushRosNamespace
from svrl_ros.stack import (
    CAMERA_DRIVERS,
    apply_remaps,
    load_profile,
    node_parameters,
    parameter_file_paths,
    with_camera_driver,
    without_group,
)
from svrl_ros.topics import ARM_TRAJECTORY

from launch import LaunchDescription

POLICY_SERVER_KEY = "policy_server"  # the node key the checkpoint argument sets, as `svrl up --checkpoint`
ARM_CONTROLLER_KEY = "arm_controller"  # svrl's safety node, whose output `arm_command_topic` redirects
ARM_BRINGUP_GROUP = "arm_bringup"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


def _arg(context, name: str) -> str:
    return LaunchConfiguration(name).perform(context).strip()


def _nodes_from_profile(context, *args, **kwargs):
    overrides = []
    if checkpoint := _arg(context, "checkpoint"):
        overrides.append(f"{POLICY_SERVER_KEY}.checkpoint={checkpoint}")
    if hardware_plugin := _arg(context, "hardware_plugin"):
        overrides.append(f"robot_description.hardware_plugin={hardware_plugin}")
    profile = load_profile(_arg(context, "profile"), overrides)
    profile = with_camera_driver(profile, _arg(context, "camera_driver"))
    if _arg(context, "arm_bringup").lower() in {"0", "false", "no"}:
        profile = without_group(profile, ARM_BRINGUP_GROUP)
    if (topic := _arg(context, "arm_command_topic")) and any(
        n.key == ARM_CONTROLLER_KEY for n in profile.nodes
    ):
        profile = apply_remaps(profile, [f"{ARM_CONTROLLER_KEY}.{ARM_TRAJECTORY}:={topic}"])
    log_level = _arg(context, "log_level").lower()
    if log_level not in LOG_LEVELS:
        raise ValueError(f"log_level {log_level!r} is not one of {LOG_LEVELS}")
    use_sim_time_override = _arg(context, "use_sim_time")
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
                parameters=[*(str(p) for p in parameter_file_paths(spec)), parameters],
                remappings=list(spec.remappings.items()),
                arguments=list(spec.arguments),
                ros_arguments=["--log-level", log_level],
                output="screen",
                emulate_tty=True,
            )
        )
    # One namespace for the whole graph: every svrl topic is relative (svrl_ros/topics.py).
    namespace = _arg(context, "namespace").strip("/")
    return [GroupAction([PushRosNamespace(namespace), *nodes])] if namespace else nodes


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
            DeclareLaunchArgument(
                "namespace",
                default_value="",
                description="ROS namespace for every node and topic of the graph (e.g. robot1)",
            ),
            DeclareLaunchArgument(
                "log_level",
                default_value="info",
                choices=list(LOG_LEVELS),
                description="log level of every node",
            ),
            DeclareLaunchArgument(
                "camera_driver",
                default_value="svrl",
                choices=sorted(CAMERA_DRIVERS),
                description="the profile's cameras: svrl's camera_node, or realsense2_camera where installed",
            ),
            DeclareLaunchArgument(
                "arm_bringup",
                default_value="true",
                choices=["true", "false"],
                description="start robot_state_publisher + ros2_control (false: the arm's own driver is running)",
            ),
            DeclareLaunchArgument(
                "hardware_plugin",
                default_value="",
                description="ros2_control hardware plugin replacing the URDF's mock hardware (e.g. my_arm/MySystem)",
            ),
            DeclareLaunchArgument(
                "arm_command_topic",
                default_value="",
                description="where arm_controller's JointTrajectory goes (a vendor driver's controller, e.g. "
                "/scaled_joint_trajectory_controller/joint_trajectory); empty: the profile's",
            ),
            OpaqueFunction(function=_nodes_from_profile),
        ]
    )
