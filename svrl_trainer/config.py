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

INIT_STATE_SCHEDULES = ("uniform", "mixed_first")

# Keys a resumed run may change: they do not change the weights the run produces. Training length and
# budget (extend a run), evaluation (greedy, seedless, never feeds training), checkpoint cadence, where
# the run lives, and where rollouts/learning run (Ray and in-process rollouts, DDP and FSDP learners are
# tested to give the same trajectories and weights). Everything else must match the stored config.
RESUMABLE_KEYS = (
    "total_steps",
    "time_budget_minutes",
    "out_dir",
    "threads",
    "eval.",
    "checkpoint.",
    "env.num_workers",
    "rollout.",
    "learner.",
)


class ResumeConfigError(ValueError):
    """`--resume` with a config that differs from the run's own in keys that change its result."""


class TrainConfigError(ValueError):
    """A config file or value that cannot run; names the key and the rule."""


@dataclass(frozen=True)
class EnvSection:
    backend: str = "sim"
    """'sim' (embedded MuJoCo suites), 'toy' (PointReach, for tests) or a plug-in backend (catalog.py)"""
    tasks: tuple[str, ...] = ("spatial",)
    """suites and/or task names to train and evaluate on"""
    num_envs: int = 16
    """environments stepped together (one batched policy forward per chunk)"""
    num_workers: int | None = None
    """simulator worker processes; default: one per core"""
    image_size: int = 128
    init_state_schedule: str = "uniform"
    """which training initial states GRPO samples: 'uniform' (the paper: any task, any state) or
    'mixed_first' (prefer states whose recent sampled success is neither 0 nor 1; see init_schedule.py)"""
    init_state_explore: float = 0.25
    """mixed_first only: the share of groups still drawn uniformly, so new mixed states are found"""
    train_states_per_task: int = 0
    """GRPO draws from each task's first N training initial states only (0: all of them); a small N is a
    regime where the policy can master its own training states, e.g. a short run that must show learning"""
    options: dict[str, Any] = field(default_factory=dict)
    """the backend's own settings, passed to its make_env as keyword options (e.g. for 'ros':
    namespaces, spawn, timeout_s; see docs/robot_graph.md); the built-in backends take none"""


@dataclass(frozen=True)
class RolloutSection:
    backend: str = "local"
    """'local': rollouts in the learner's process; 'ray': Ray actors, each with its own env and policy"""
    num_actors: int = 2
    """Ray only: rollout actors (each steps env.num_envs envs with env.num_workers sim processes)"""
    address: str | None = None
    """Ray only: a running cluster's address; default: start a local one"""
    runtime: str = "torch"
    """what runs the rollout policy: 'torch' (the learner's module) or 'onnx' (ONNX Runtime on an export
    of the weights, re-exported after every update; local backend only). With 'onnx' the learner
    recomputes the old log-probs in torch before each update, so the PPO ratio stays exact"""
    pipeline: bool = False
    """step one half of a wave's envs in the simulator workers while the policy runs on the other half;
    the trajectories are identical either way (see rollout.collect_wave)"""


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
    oversample: float = 1.0
    """groups rolled out per sampling round, as a multiple of groups_per_batch (paper: 1.0, a full
    batch of prompts every round; valid groups beyond groups_per_batch are discarded)"""
    sample_missing_only: bool = False
    """each round rolls out only the groups still missing (svrl before issue 10; leaves envs idle
    in later waves and needs many more rounds from a low start)"""
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.28
    kl_coef: float = 0.0
    entropy_coef: float = 0.0


@dataclass(frozen=True)
class OptimSection:
    lr: float = 5e-6
    """paper: 5e-6 (7B model); the tiny96 1-demo SFT policy: 1e-4 (configs/tiny.yaml says why)"""
    weight_decay: float = 0.0
    mini_batches: int = 4
    """optimizer steps per full batch (paper: 512 / 128 = 4); mini-batches never split a group"""
    scale_mini_batches: bool = True
    """a batch with fewer valid groups than groups_per_batch takes proportionally fewer optimizer
    steps (the mini-batch keeps its size in groups) instead of `mini_batches` steps on a handful
    of trajectories"""
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
        if self.rollout.runtime not in ("torch", "onnx"):
            raise TrainConfigError(f"rollout.runtime={self.rollout.runtime!r}: choose 'torch' or 'onnx'")
        if self.rollout.runtime != "torch" and self.rollout.backend != "local":
            raise TrainConfigError(
                f"rollout.runtime={self.rollout.runtime!r} needs rollout.backend=local (Ray actors run torch)"
            )
        if self.learner.strategy not in ("ddp", "fsdp"):
            raise TrainConfigError(f"learner.strategy={self.learner.strategy!r}: choose 'ddp' or 'fsdp'")
        if self.env.num_envs < 1 or self.total_steps < 0 or self.optim.mini_batches < 1:
            raise TrainConfigError("env.num_envs and optim.mini_batches must be >= 1, total_steps >= 0")
        if g.max_sampling_rounds < 1 or g.oversample <= 0:
            raise TrainConfigError(
                f"grpo.max_sampling_rounds={g.max_sampling_rounds}, oversample={g.oversample}: "
                "need >= 1 round and oversample > 0"
            )
        if self.env.init_state_schedule not in INIT_STATE_SCHEDULES:
            raise TrainConfigError(
                f"env.init_state_schedule={self.env.init_state_schedule!r}: choose one of {INIT_STATE_SCHEDULES}"
            )
        if not isinstance(self.env.options, dict) or not all(isinstance(k, str) for k in self.env.options):
            raise TrainConfigError(
                f"env.options={self.env.options!r}: need a mapping of option names to values (or leave it out)"
            )
        if self.env.train_states_per_task < 0:
            raise TrainConfigError(
                f"env.train_states_per_task={self.env.train_states_per_task}: need >= 0 (0: all training states)"
            )
        if not 0.0 <= self.env.init_state_explore <= 1.0:
            raise TrainConfigError(
                f"env.init_state_explore={self.env.init_state_explore}: need a share in [0, 1]"
            )


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


def flatten_config(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"grpo": {"temperature": 1.0}} -> {"grpo.temperature": 1.0}; tuples become lists (as in JSON/YAML)."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def resume_config_diff(stored: dict[str, Any], current: TrainConfig) -> list[str]:
    """The keys (outside RESUMABLE_KEYS) whose value differs, one 'key: run X, now Y' line each.

    A key missing from `stored` (a run saved before that key existed) compares as its default.
    """
    before = {**flatten_config(config_to_dict(TrainConfig())), **flatten_config(stored)}
    now = flatten_config(config_to_dict(current))
    lines = []
    for key in sorted(set(before) | set(now)):
        if key.startswith(RESUMABLE_KEYS) or before.get(key) == now.get(key):
            continue
        if key == "init_checkpoint" and _same_path(before.get(key), now.get(key)):
            continue
        lines.append(f"{key}: run {before.get(key, '<absent>')!r}, now {now.get(key, '<absent>')!r}")
    return lines


def check_resume_config(stored: dict[str, Any], current: TrainConfig, out_dir: Path) -> None:
    """Refuse to resume under a changed config: the continued run would match neither config."""
    diff = resume_config_diff(stored, current)
    if diff:
        raise ResumeConfigError(
            f"--resume: {out_dir} was trained with another config; differing keys:\n  "
            + "\n  ".join(diff)
            + "\nResume with the run's own config, or pass --overwrite (or another out_dir) to start a new run. "
            f"Keys a resume may change: {', '.join(RESUMABLE_KEYS)}"
        )


def _same_path(a: Any, b: Any) -> bool:
    return isinstance(a, str) and isinstance(b, str) and bool(a) and Path(a).resolve() == Path(b).resolve()
