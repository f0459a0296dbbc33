"""The test process's side of a running trainer_node: `TrainerProbe` records its /diagnostics reports and
its checkpoint announcements, from its own rclpy context and executor thread (shared by the trainer_node and
sim_training tests)."""

from __future__ import annotations

import threading
from typing import Any

TRAINING_STATUS = "trainer_node: training"


class TrainerProbe:
    """Records trainer_node's `training` statuses as (level, message, values) and every announcement heard on
    svrl/checkpoint (with trainer_node's latched QoS, so a probe started late still hears the newest)."""

    def __init__(self, name: str) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from svrl_interfaces.msg import PolicyCheckpoint
        from svrl_ros import topics
        from svrl_ros.trainer_node import ANNOUNCE_QOS

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.lock = threading.Lock()
        self.statuses: list[tuple[int, str, dict[str, str]]] = []
        self.announcements: list[Any] = []
        self.node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diagnostics, 50)
        self.node.create_subscription(
            PolicyCheckpoint, topics.POLICY_CHECKPOINT, self._on_checkpoint, ANNOUNCE_QOS
        )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _on_diagnostics(self, msg: Any) -> None:
        with self.lock:
            for status in msg.status:
                if status.name == TRAINING_STATUS:
                    level = status.level[0] if isinstance(status.level, bytes) else int(status.level)
                    self.statuses.append((level, status.message, {kv.key: kv.value for kv in status.values}))

    def _on_checkpoint(self, msg: Any) -> None:
        with self.lock:
            self.announcements.append(msg)

    def in_state(self, *states: str) -> list[tuple[int, str, dict[str, str]]]:
        """The statuses recorded so far whose `state` value is one of `states`."""
        with self.lock:
            return [s for s in self.statuses if s[2].get("state") in states]

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)
