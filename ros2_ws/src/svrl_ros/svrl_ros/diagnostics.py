"""One /diagnostics message from a (level, message, values) status, for every node that reports one.

The nodes keep their status logic ROS-free (training_progress.TrainingProgress, checkpoint_follower's
status, ...: levels 0 OK, 1 WARN, 2 ERROR and string values); this is the one place that turns such a status
into a diagnostic_msgs/DiagnosticArray, so every node's report has the same form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

LEVELS = {0: DiagnosticStatus.OK, 1: DiagnosticStatus.WARN, 2: DiagnosticStatus.ERROR}


def diagnostic_array(
    stamp: Any, name: str, hardware_id: str, level: int, message: str, values: Mapping[str, Any]
) -> DiagnosticArray:
    """A DiagnosticArray holding one status; `level` is 0/1/2 (OK/WARN/ERROR), values are str()-ed."""
    status = DiagnosticStatus()
    status.level = LEVELS[level]
    status.name = name
    status.hardware_id = hardware_id
    status.message = message
    status.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = [status]
    return msg
