"""ROS 2 adapter of svrl. Imports rclpy lazily in the node modules, never here."""
