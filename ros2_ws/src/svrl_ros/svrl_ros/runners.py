"""What the policy server runs for one ExecuteInstruction goal.

The action-server plumbing (goal checks, feedback, cancel, limits) is the same whether the chunks come
from the learned policy on a real arm, the learned policy in the embedded simulator, or the scripted
expert; only the runner differs. Runners know nothing of ROS, so they are tested without DDS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class ChunkResult:
    """One executed action chunk, as the server reports it."""

    actions: np.ndarray  # float32 [K, D] in robot units, the actions actually sent
    executed_steps: int
    success: bool
    done: bool  # the episode cannot continue (success, or the environment's own horizon)
    action_space: str
    dim_names: list[str] = field(default_factory=list)
    control_period_s: float = 0.1


class EpisodeRunner(Protocol):
    """A source of action chunks for one instruction at a time."""

    name: str

    def check_instruction(self, instruction: str) -> str | None:
        """Return None if the instruction can be run, else the reason it cannot (shown to the operator)."""

    def start(self, instruction: str) -> None: ...

    def run_chunk(self, max_steps: int) -> ChunkResult:
        """Execute at most `max_steps` control steps of the next chunk."""

    def stop(self) -> None: ...


EE_DELTA_DIM_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]


class SimExpertRunner:
    """The scripted expert of the embedded simulator, driven by instruction text.

    Useful to check a whole graph (goal -> chunks -> result) before any policy is trained, and as
    the reference an operator can compare a policy against on the same initial state.
    """

    name = "sim_expert"

    def __init__(self, chunk_length: int = 8, init_state_index: int = 0, split: str = "eval") -> None:
        from svrl_sim.env import SimEnv  # heavy: mujoco + renderer

        self._env = SimEnv(action_space="ee_delta")
        self._chunk_length = chunk_length
        self._init_state_index = init_state_index
        self._split = split
        self._by_instruction = _tasks_by_instruction()

    def check_instruction(self, instruction: str) -> str | None:
        if instruction.strip().lower() not in self._by_instruction:
            return f"no simulator task has the instruction {instruction!r}"
        return None

    def start(self, instruction: str) -> None:
        from svrl_sim.tasks import InitState

        task = self._by_instruction[instruction.strip().lower()]
        self._env.reset(task, InitState(split=self._split, index=self._init_state_index), render=False)

    def run_chunk(self, max_steps: int) -> ChunkResult:
        actions: list[np.ndarray] = []
        success = done = False
        for _ in range(min(self._chunk_length, max_steps)):
            action = np.asarray(self._env.expert_action(), dtype=np.float32)
            _obs, reward, terminated, truncated, _info = self._env.step(action, render=False)
            actions.append(action)
            success = success or reward > 0.0 or terminated
            done = terminated or truncated
            if done:
                break
        return ChunkResult(
            actions=np.stack(actions),
            executed_steps=len(actions),
            success=success,
            done=done,
            action_space="ee_delta",
            dim_names=EE_DELTA_DIM_NAMES,
            control_period_s=1.0 / self._env.control_hz,
        )

    def stop(self) -> None:
        """Episodes end with the goal; the environment stays loaded for the next one."""


def _tasks_by_instruction() -> dict[str, str]:
    from svrl_sim.tasks import all_tasks

    return {task.instruction.strip().lower(): task.name for task in all_tasks()}


RUNNERS = {"sim_expert": SimExpertRunner}


def make_runner(name: str, **kwargs) -> EpisodeRunner:
    try:
        runner_class = RUNNERS[name]
    except KeyError:
        raise ValueError(f"unknown runner {name!r}; choose one of {sorted(RUNNERS)}") from None
    return runner_class(**kwargs)
