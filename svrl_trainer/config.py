"""The GRPO run configuration: typed sections read from a YAML file under version control.

Every SimpleVLA-RL knob is a key here with the paper's value as its default, so each ablation of
the paper (no dynamic sampling, symmetric clip, T = 1.0, a KL term...) is a one-line config change.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class TrainConfigError(ValueError):
    """A config file or value that cannot run; names the key and the rule."""


@dataclass(frozen=True)
class EnvSection:
    backend: str = "sim"
    """'sim' (embedded MuJoCo suites) or 'toy' (PointReach, for tests)"""
    tasks: tuple[str, ...] = ("spatial",)
    """suites and/or task names to train and evaluate on"""
    num_envs: int = 16
    """environments stepped together (one batched policy forward per chunk)"""
    num_workers: int | None = None
    """simulator worker processes; default: one per core"""
    image_size: int = 128


@dataclass(frozen=True)
class RolloutSection:
    backend: str = "local"
    """'local': rollouts in the learner's process; 'ray': Ray actors, each with its own env and policy"""
    num_actors: int = 2
    """Ray only: rollout actors (each steps env.num_envs envs with env.num_workers sim processes)"""
    address: str | None = None
    """Ray only: a running cluster's address; default: start a local one"""


@dataclass(frozen=True)
class LearnerSection:
    strategy: str = "ddp"
    """under torchrun with several processes: 'ddp' (replicated) or 'fsdp' (sharded, large presets)"""


@dataclass(frozen=True)
class GrpoSection:
    group_size: int = 8
    """rollouts per (task, initial state); advantages are normalised within the group (paper: 8)"""
    groups_per_batch: int = 64
    """valid groups per update (paper: 64 -> 512 trajectories)"""
    temperature: float = 1.6
    """sampling temperature, also used for the trained log-probs (paper: 1.6)"""
    dynamic_sampling: bool = True
    """drop groups whose success rate is outside [accuracy_lower, accuracy_upper] (paper: on)"""
    accuracy_lower: float = 0.1
    accuracy_upper: float = 0.9
    max_sampling_rounds: int = 8
    """collection rounds per step before updating with the valid groups found so far"""
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.28
    kl_coef: float = 0.0
    entropy_coef: float = 0.0


@dataclass(frozen=True)
class OptimSection:
    lr: float = 5e-6
    """paper: 5e-6 (7B model); the tiny96 SFT policy: 5e-5 (3e-4 collapsed it, see configs/tiny.yaml)"""
    weight_decay: float = 0.0
    mini_batches: int = 4
    """optimizer steps per batch (paper: 512 / 128 = 4)"""
    ppo_epochs: int = 1
    micro_batch_steps: int = 64
    grad_clip: float = 1.0


@dataclass(frozen=True)
class EvalSection:
    every: int = 4
    """evaluate every N steps (paper: test_freq 4); 0 disables periodic evaluation"""
    episodes_per_task: int = 50
    before_training: bool = True
    videos_per_task: int = 0
    """GIFs of the first N evaluation episodes per task, written beside each evaluation report"""


@dataclass(frozen=True)
class CheckpointSection:
    every: int = 25
    keep_last: int = 3


@dataclass(frozen=True)
class TrainConfig:
    init_checkpoint: str = ""
    """policy to start from (the 1-demo SFT checkpoint); required"""
    out_dir: str = "runs/grpo"
    total_steps: int = 100
    seed: int = 0
    threads: int = 1
    """torch intra-op threads of the learner"""
    time_budget_minutes: float = 0.0
    """stop after the step that spends this much training time (rollouts + updates, not evaluation);
    the run then evaluates and checkpoints as at its last step. 0: no budget, run total_steps"""
    env: EnvSection = field(default_factory=EnvSection)
    rollout: RolloutSection = field(default_factory=RolloutSection)
    learner: LearnerSection = field(default_factory=LearnerSection)
    grpo: GrpoSection = field(default_factory=GrpoSection)
    optim: OptimSection = field(default_factory=OptimSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)

    def __post_init__(self) -> None:
        g = self.grpo
        if g.group_size < 2:
            raise TrainConfigError(
                f"grpo.group_size={g.group_size}: a group needs >= 2 rollouts to normalise"
            )
        if not 0.0 <= g.accuracy_lower <= g.accuracy_upper <= 1.0:
            raise TrainConfigError(
                f"grpo.accuracy_lower={g.accuracy_lower}, accuracy_upper={g.accuracy_upper}: need 0 <= lower <= upper <= 1"
            )
        if g.temperature <= 0:
            raise TrainConfigError(f"grpo.temperature={g.temperature}: sampling needs T > 0 (0 is greedy)")
        if self.rollout.backend not in ("local", "ray"):
            raise TrainConfigError(f"rollout.backend={self.rollout.backend!r}: choose 'local' or 'ray'")
        if self.learner.strategy not in ("ddp", "fsdp"):
            raise TrainConfigError(f"learner.strategy={self.learner.strategy!r}: choose 'ddp' or 'fsdp'")
        if self.env.num_envs < 1 or self.total_steps < 0 or self.optim.mini_batches < 1:
            raise TrainConfigError("env.num_envs and optim.mini_batches must be >= 1, total_steps >= 0")


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read YAML, apply dotted overrides (`{"optim.lr": 1e-4}`), check every key exists."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return _build(TrainConfig, raw, "")


def _build(cls, raw: dict[str, Any], prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(fields)
    if unknown:
        key = sorted(unknown)[0]
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        raise TrainConfigError(f"unknown config key '{prefix}{key}'{hint}")
    kwargs = {}
    for name, value in raw.items():
        f = fields[name]
        if dataclasses.is_dataclass(
            f.default_factory if f.default_factory is not dataclasses.MISSING else None
        ):
            kwargs[name] = _build(f.default_factory, value or {}, f"{prefix}{name}.")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = _coerce(value, str(f.type), f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, annotation: str, key: str) -> Any:
    """Numbers written the way people write them: YAML reads `5e-5` (no dot) as a string, `1` as an int."""
    kinds = {part.strip() for part in annotation.split("|")}
    if value is None and "None" in kinds:
        return None
    if "float" in kinds and not isinstance(value, bool):
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise TrainConfigError(f"{key}: expected a number, got {value!r}")
    if "int" in kinds and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise TrainConfigError(f"{key}: expected an integer, got {value!r}")
    if "bool" in kinds and not isinstance(value, bool):
        raise TrainConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
