"""Which training initial states GRPO rolls out: uniformly (the paper), or states with mixed outcomes first.

Why: from a low start (a 1-demo SFT policy) almost every state gives an all-fail group, and GRPO learns
nothing from it. The few states where the policy sometimes succeeds are exactly the ones whose groups
carry an advantage; under uniform sampling among 200 states per task they are rarely revisited.
`mixed_first` keeps a per-state estimate of the recent sampled success and, for a share
`1 - explore` of the groups, draws among states whose estimate is strictly between 0 and 1, weighted by
p (1 - p) (the spread of a 0/1 outcome, largest at p = 1/2). The other groups are drawn uniformly, so
new mixed states keep being found and a state that became all-success or all-fail drops out.

The schedule draws only from the run's numpy generator and its statistics are saved in every
checkpoint (`state_dict`), so a resumed run draws the same states as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

EMA = 0.5
"""weight of the newest group in a state's success estimate: recent outcomes matter, one group is noisy"""
MIXED_MARGIN = 0.05
"""a state counts as mixed while its estimate is within (margin, 1 - margin): after a mixed group, four
all-fail (or all-success) groups in a row drop it (0.5 -> 0.03)"""


@dataclass
class StateStats:
    success: float
    """exponential moving average of the state's group success rates"""
    visits: int


class InitStateSchedule:
    """Draws (task index, state index) pairs; `observe` feeds back each rolled-out group's success rate."""

    def __init__(self, states_per_task: Sequence[int], mode: str = "uniform", explore: float = 0.25) -> None:
        if mode not in ("uniform", "mixed_first"):
            raise ValueError(f"init state schedule {mode!r}: choose 'uniform' or 'mixed_first'")
        self.states_per_task = list(states_per_task)
        self.mode = mode
        self.explore = explore
        self.stats: dict[tuple[int, int], StateStats] = {}

    def draw(self, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """`count` states for one sampling round; mixed states are not repeated within a round."""
        if self.mode == "uniform":
            return [self._uniform(rng) for _ in range(count)]
        pool = self.mixed_states()
        chosen: list[tuple[int, int]] = []
        for _ in range(count):
            if pool and rng.random() >= self.explore:
                weights = np.array([self.stats[s].success * (1.0 - self.stats[s].success) for s in pool])
                chosen.append(pool.pop(int(rng.choice(len(pool), p=weights / weights.sum()))))
            else:
                chosen.append(self._uniform(rng))
        return chosen

    def _uniform(self, rng: np.random.Generator) -> tuple[int, int]:
        """As the paper's shuffled task list: a task, then one of its states (the draws svrl always made)."""
        task = int(rng.integers(len(self.states_per_task)))
        return task, int(rng.integers(self.states_per_task[task]))

    def mixed_states(self) -> list[tuple[int, int]]:
        """States whose recent success is neither 0 nor 1, in a fixed (sorted) order for determinism."""
        return sorted(s for s, st in self.stats.items() if MIXED_MARGIN < st.success < 1.0 - MIXED_MARGIN)

    def observe(self, state: tuple[int, int], success_rate: float) -> None:
        """Fold one group's success rate (completed episodes only) into the state's estimate."""
        old = self.stats.get(state)
        if old is None:
            self.stats[state] = StateStats(float(success_rate), 1)
        else:
            old.success = (1.0 - EMA) * old.success + EMA * float(success_rate)
            old.visits += 1

    def summary(self) -> dict[str, float]:
        """Metrics: states seen so far and how many of them currently have mixed outcomes."""
        return {
            "rollout/init_states_seen": len(self.stats),
            "rollout/init_states_mixed": len(self.mixed_states()),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "stats": [[t, i, st.success, st.visits] for (t, i), st in sorted(self.stats.items())],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stats = {(int(t), int(i)): StateStats(float(p), int(n)) for t, i, p, n in state["stats"]}
