"""When a policy goal's abort should hand the arm to a person (issue 12's automatic fallback), without ROS.

Every ROS 2 action server publishes its goals' statuses (action_msgs/GoalStatusArray, latched) on
`<action>/_action/status`. `AbortWatch` reads them and reports each goal the first time it is seen
ABORTED; the node then reads that goal's result (`ExecuteInstruction.Result.reason`) and asks
`fallback_wanted`. A policy that gave up (stale observations, a safety stop, the step or time budget,
an error) leaves the task half done: the stack drops to `hold` and the operator's marker is ready. An
abort that a person or a newer goal caused (takeover, preempted, canceled) is not a failure of the
policy and changes nothing. An unknown reason (the result could not be read) counts as a failure:
holding is the safe side.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

STATUS_ABORTED = 6  # action_msgs/GoalStatus.STATUS_ABORTED
NOT_A_POLICY_FAILURE = frozenset({"takeover", "preempted", "canceled", "success"})
_REMEMBERED = 256  # goal ids kept to recognise a status already handled (the array repeats them)


def fallback_wanted(reason: str | None, mode: str | None) -> bool:
    """Whether a goal that aborted with `reason` should put the arm in hold, the arm being in `mode`.

    Only while the policy still owns the arm: if a person already took over or holds it, nothing to do.
    """
    return mode == "policy" and reason not in NOT_A_POLICY_FAILURE


class AbortWatch:
    """Goal ids (bytes) newly seen ABORTED. Goals already ended in the first message are history."""

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._first = True

    def new_aborts(self, statuses: Iterable[tuple[bytes, int]]) -> list[bytes]:
        fresh = []
        for goal_id, status in statuses:
            if status != STATUS_ABORTED or goal_id in self._seen:
                continue
            self._seen[goal_id] = None
            if len(self._seen) > _REMEMBERED:
                self._seen.popitem(last=False)
            if not self._first:
                fresh.append(goal_id)
        self._first = False
        return fresh
