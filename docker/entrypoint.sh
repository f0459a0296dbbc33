#!/usr/bin/env bash
# Source ROS 2 and svrl's colcon install, then run the command (default: the `real` stack).
set -e
# shellcheck source=/dev/null
source "/opt/ros/${ROS_DISTRO}/setup.bash"
# shellcheck source=/dev/null
source /opt/svrl/install/setup.bash
exec "$@"
