"""What the policy server runs for one ExecuteInstruction goal.

The action-server plumbing (goal checks, feedback, cancel, limits, deadlines) is the same whether the
chunks come from the learned policy behind the robot graph's topics (`runner: learned`, see
policy_server.LearnedDriver and learned_policy.py) or from a runner that executes its own chunks in an
embedded simulator (`sim_expert`, below). Runners know nothing of ROS, so they are tested without DDS.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from svrl_sim.constants import ACTION_NAMES

LEARNED = "learned"


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
    """A source of action chunks that executes them itself (an in-process simulator), one goal at a time.

    `check_instruction` is called during goal admission, on an executor thread, never on the runner
    thread (admission must not wait behind a running chunk): it must be cheap and thread-safe. Every
    other method runs on the server's runner thread under a deadline.
    """

    name: str

    def check_instruction(self, instruction: str) -> str | None:
        """Return None if the instruction can be run, else the reason it cannot (shown to the operator)."""

    def start(self, instruction: str) -> None: ...

    def run_chunk(self, max_steps: int) -> ChunkResult:
        """Execute at most `max_steps` control steps of the next chunk."""

    def stop(self) -> None: ...


# What ActionChunk.dim_names carries: the one spelling arm_controller's safety filter checks against.
DIM_NAMES = {space: list(names) for space, names in ACTION_NAMES.items()}
EE_DELTA_DIM_NAMES = DIM_NAMES["ee_delta"]


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
        self._by_instruction = tasks_by_instruction()

    def check_instruction(self, instruction: str) -> str | None:
        if instruction.strip().lower() not in self._by_instruction:
            return f"no simulator task has the instruction {clip_text(instruction)!r}"
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


def tasks_by_instruction() -> dict[str, str]:
    """Simulator task name by its instruction, lower-cased and stripped (how goals are matched)."""
    from svrl_sim.tasks import all_tasks

    return {task.instruction.strip().lower(): task.name for task in all_tasks()}


def clip_text(text: str, limit: int = 60) -> str:
    """An instruction as it may appear in a log line: never whole when long (it is operator input)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} chars)"


RUNNERS = {"sim_expert": SimExpertRunner}
RUNNER_NAMES = sorted([*RUNNERS, LEARNED])


def make_runner(name: str, **kwargs) -> EpisodeRunner:
    try:
        runner_class = RUNNERS[name]
    except KeyError:
        raise ValueError(f"unknown runner {name!r}; choose one of {RUNNER_NAMES}") from None
    return runner_class(**kwargs)


class RunnerThread:
    """The one thread every runner call runs on, first come first served.

    Simulators and inference runtimes keep thread-bound state (an EGL context is current in one thread
    only), so calls cannot move between threads. A daemon thread, so a call that never returns cannot
    keep the process alive at shutdown; `busy_for` lets goal admission see a stuck call without waiting.
    """

    def __init__(self, name: str = "runner") -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._busy_since: float | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        self._jobs.put((future, function, args, kwargs))
        return future

    def busy_for(self) -> float | None:
        """Seconds the current call has been running, or None when idle."""
        with self._lock:
            return None if self._busy_since is None else time.monotonic() - self._busy_since

    def shutdown(self) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, function, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._busy_since = time.monotonic()
            try:
                future.set_result(function(*args, **kwargs))
            except BaseException as error:  # handed to the waiting goal, never lost
                future.set_exception(error)
            finally:
                with self._lock:
                    self._busy_since = None
