"""Supervised fine-tuning (behaviour cloning) of a VLA on demonstrations: cross-entropy on action tokens.

Reads top to bottom like a CleanRL script: load data -> build or load the policy -> loop -> save.

    svrl sft --data demos/ --preset tiny --init runs/base --out runs/sft   # 1-demo SFT from the base
    svrl pretrain --data pool/ --out runs/base                             # the base itself, from scratch

Targets. For a frame t the target is the chunk of the K actions a[t], ..., a[t+K-1] (the policy's action
chunk starting at that observation). Past the episode end the chunk is padded with a HOLD action:
  ee_delta  -> zero motion with the episode's last gripper command (the arm stays put, grasp unchanged);
  joint_pos -> the episode's last joint targets, repeated.
Demonstrations end at success, so "stay where the task got done" is the correct continuation.

Codec and proprio statistics come from the data only when training from scratch (pretraining). With
`--init` the base checkpoint's codec and statistics are kept: base and fine-tuned policies share bins.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from svrl_policy.checkpoint import load_components
from svrl_policy.codec import ActionCodec
from svrl_policy.config import PolicyConfig, get_preset
from svrl_policy.dataset import LeRobotDataset
from svrl_policy.features import (
    ACTION_SPACE_EE_DELTA,
    FOCUS_FEATURES,
    OBS_IMAGES,
    OBS_INSTRUCTION,
    OBS_PROPRIO,
    focus_pixel_features,
)
from svrl_policy.grow import grow_policy, parse_growth
from svrl_policy.policy import Policy, build_tokenizer
from svrl_policy.preprocess import ProprioStats, random_shift_offsets, shift_images
from svrl_trainer.sft_state import SFTProgress, prepare_output, restore_generators, write_state

log = logging.getLogger(__name__)

_DECODE_ALL_BYTES = 2 << 30  # datasets whose decoded frames fit in 2 GB are decoded once, up front
AUX_SCALE_M = 0.1  # focus offsets are regressed in units of 10 cm: O(1) numbers across the table
KEYPOINT_SCALE = 0.1  # keypoint positions are regressed in units of a 20th of the image (4.8 px at 96 px)


@dataclass
class SFTConfig:
    data: Sequence[Path]
    out: Path
    preset: str = "tiny"
    preset_overrides: dict[str, Any] = field(default_factory=dict)
    init: Path | None = None  # start from this checkpoint (keeps its codec + stats)
    # With `init`: add identity-initialised modules first, 'keypoint_refine=3' (svrl_policy.grow).
    grow: str | None = None
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_frac: float = 0.1  # cosine decays to lr * min_lr_frac
    grad_clip: float = 1.0
    label_sigma: float = 0.0  # > 0: soft ordinal targets, a Gaussian of this width (in bins) around the label
    aux_weight: float = 0.0  # > 0: also regress the auxiliary head onto the data's `focus.*` columns
    keypoint_weight: float = 0.0  # > 0: also pull the first two text keypoints onto the focus pixels
    augment: bool = True
    seed: int = 0
    threads: int | None = None
    log_every: int = 50
    save_every: int | None = (
        500  # resume state every N steps (svrl_trainer.sft_state); 0/None: only at the end
    )
    device: str = "cpu"
    allow_download: bool = False  # hf presets: let transformers fetch backbones/tokenizer from the hub
    stage: str = "sft"  # recorded in the checkpoint manifest ("sft" or "pretrain")
    progress: bool = True
    # Save a resume state and exit after this step (the schedule still spans `steps`): a run longer than a
    # session is cut into pieces, and a recipe can name the step a stage was taken at.
    stop_after: int | None = None
    resume: bool = False  # continue the run in `out` from its newest complete state
    overwrite: bool = False  # replace whatever `out` holds

    def __post_init__(self) -> None:
        self.data = [Path(d) for d in ([self.data] if isinstance(self.data, (str, Path)) else self.data)]
        self.out = Path(self.out)
        self.init = Path(self.init) if self.init is not None else None
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"SFTConfig.{name} = {getattr(self, name)}: must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"SFTConfig.lr = {self.lr}: must be > 0")
        if self.stop_after is not None and not self.stop_after >= 1:
            raise ValueError(f"SFTConfig.stop_after = {self.stop_after}: must be >= 1")
        if not 0.0 <= self.label_sigma <= 64.0 or not math.isfinite(self.label_sigma):
            raise ValueError(f"SFTConfig.label_sigma = {self.label_sigma}: must be in [0, 64] bins")
        if not self.data:
            raise ValueError("SFTConfig.data: give at least one dataset directory")
        for name in ("aux_weight", "keypoint_weight"):
            weight = getattr(self, name)
            if not 0.0 <= weight <= 100.0 or not math.isfinite(weight):
                raise ValueError(f"SFTConfig.{name} = {weight}: must be in [0, 100]")
        if self.grow is not None:
            if self.init is None:
                raise ValueError("SFTConfig.grow needs init: it grows a trained checkpoint")
            parse_growth(self.grow)  # refuse a bad spec before any data is read


@dataclass
class SFTResult:
    checkpoint: Path
    history: list[dict[str, float]]  # one entry per logged step: step, loss, token_acc, lr
    stopped: bool = False  # --stop-after ended it before `steps`: a resumable state, not a finished run

    @property
    def first_loss(self) -> float:
        return self.history[0]["loss"]

    @property
    def final_loss(self) -> float:
        return self.history[-1]["loss"]


# ---------------------------------------------------------------------------------------------- targets
def chunk_targets(actions: np.ndarray, chunk_len: int, action_space: str) -> np.ndarray:
    """actions[T, D] of one episode -> targets[T, K, D]; row t = a[t : t+K], HOLD-padded past the end."""
    T, D = actions.shape
    if action_space == ACTION_SPACE_EE_DELTA:
        hold = np.zeros(D, dtype=np.float32)
        hold[-1] = actions[-1, -1]  # keep the last gripper command
    else:
        hold = actions[-1].astype(np.float32)
    padded = np.concatenate([actions.astype(np.float32), np.tile(hold, (chunk_len - 1, 1))])  # (T+K-1, D)
    idx = np.arange(T)[:, None] + np.arange(chunk_len)[None, :]  # (T, K)
    return padded[idx]


def ordinal_label_kernel(num_bins: int, sigma: float) -> torch.Tensor:
    """Row t: the soft target for label t, a Gaussian over bin indices (width `sigma` bins), renormalised.

    Why: action bins are ordered, but hard-label cross-entropy scores a prediction one bin (0.16 mm) off
    the expert's exactly as wrong as one at the other end of the range, so the model learns the ordering
    of 256 classes from scratch, one label at a time. Spreading the target over neighbouring bins turns a
    near miss into a near hit and teaches "close to the label" from every sample. Sampling, greedy decoding
    and GRPO's log-probabilities are unchanged: only the behaviour-cloning objective differs.
    """
    bins = torch.arange(num_bins, dtype=torch.float32)
    kernel = torch.exp(-0.5 * ((bins[None, :] - bins[:, None]) / sigma) ** 2)
    return kernel / kernel.sum(dim=1, keepdim=True)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of -sum_b q_b log p_b for target distributions q (same shape as logits)."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


class DemoFrames:
    """All frames of one or more demonstration datasets, addressed by one global index."""

    def __init__(self, datasets: Sequence[LeRobotDataset], chunk_len: int) -> None:
        if not datasets:
            raise ValueError("DemoFrames needs at least one dataset")
        first = datasets[0]
        for ds in datasets[1:]:
            if ds.action_space != first.action_space or ds.camera_names != first.camera_names:
                raise ValueError(
                    f"datasets disagree: {ds.root} has {ds.action_space}/{ds.camera_names}, "
                    f"{first.root} has {first.action_space}/{first.camera_names}"
                )
        self.datasets = list(datasets)
        self.action_space = first.action_space
        self.camera_names = first.camera_names
        self.offsets = np.cumsum([0] + [len(d) for d in datasets])
        self.actions = np.concatenate([d.actions for d in datasets])
        self.proprio = None if first.proprio is None else np.concatenate([d.proprio for d in datasets])
        self.targets = np.concatenate(
            [
                chunk_targets(ds.actions[ep.start : ep.stop], chunk_len, self.action_space)
                for ds in datasets
                for ep in ds.episodes
            ]
        )
        self.instructions = [ds.tasks[int(t)] for ds in datasets for t in ds.task_index]
        # (N, 6) privileged focus offsets (svrl_policy.features.FOCUS_FEATURES), when every dataset has them
        has_focus = all(all(f in ds.extra for f in FOCUS_FEATURES) for ds in datasets)
        self.focus = (
            np.concatenate([np.stack([ds.extra[f] for f in FOCUS_FEATURES], axis=1) for ds in datasets])
            if has_focus
            else None
        )
        pixel_columns = focus_pixel_features(self.camera_names)
        has_pixels = all(all(f in ds.extra for f in pixel_columns) for ds in datasets)
        # (N, cameras, 2 (object, target), 2 (x, y)) in the datasets' camera order
        self._focus_pixels = (
            np.concatenate(
                [np.stack([ds.extra[f] for f in pixel_columns], axis=1) for ds in datasets]
            ).reshape(-1, len(self.camera_names), 2, 2)
            if has_pixels
            else None
        )
        n_bytes = len(self) * len(self.camera_names) * int(np.prod(first.image_shape)) * 3
        self._images: dict[str, np.ndarray] | None = None
        if n_bytes <= _DECODE_ALL_BYTES:
            self._images = {cam: self._decode(cam, np.arange(len(self))) for cam in self.camera_names}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def focus_pixels(self, cameras: Sequence[str]) -> np.ndarray | None:
        """(N, len(cameras), 2, 2): where the focus object and target appear in each camera's image
        (svrl_policy.features.focus_pixel_features), in the order of `cameras`; None if any dataset lacks
        the columns."""
        if self._focus_pixels is None:
            return None
        return self._focus_pixels[:, [self.camera_names.index(c) for c in cameras]]

    @property
    def num_episodes(self) -> int:
        return sum(d.num_episodes for d in self.datasets)

    def _decode(self, cam: str, frames: np.ndarray) -> np.ndarray:
        result: np.ndarray | None = None
        for i, ds in enumerate(self.datasets):
            mask = (frames >= self.offsets[i]) & (frames < self.offsets[i + 1])
            if mask.any():
                imgs = ds.images(cam, frames[mask] - self.offsets[i])
                if result is None:
                    result = np.empty((len(frames), *imgs.shape[1:]), dtype=np.uint8)
                result[mask] = imgs
        assert result is not None, "no frames requested"
        return result

    def observations(self, frames: np.ndarray) -> dict[str, Any]:
        """Batched observation dict (docs/contracts.md) for global frame indices (repeats allowed)."""
        frames = np.asarray(frames)
        if self._images is not None:
            images = {cam: arr[frames] for cam, arr in self._images.items()}
        else:
            images = {cam: self._decode(cam, frames) for cam in self.camera_names}
        obs: dict[str, Any] = {OBS_IMAGES: images, OBS_INSTRUCTION: [self.instructions[i] for i in frames]}
        if self.proprio is not None:
            obs[OBS_PROPRIO] = self.proprio[frames]
        return obs


# ---------------------------------------------------------------------------------------------- policy
def build_policy(cfg: SFTConfig, demos: DemoFrames) -> Policy:
    """Load `cfg.init` (keeping its codec) or build a fresh policy with a codec fitted on the data."""
    if cfg.init is not None:
        if cfg.preset_overrides:
            raise ValueError("--init fixes the architecture; preset overrides cannot be combined with it")
        if cfg.grow:
            policy = grow_policy(cfg.init, parse_growth(cfg.grow), device=cfg.device)
            log.info("grew %s by %s (its outputs checked unchanged)", cfg.init, cfg.grow)
        else:
            policy = Policy.from_pretrained(cfg.init, device=cfg.device)
        log.info("initialised from %s (codec and proprio statistics kept)", cfg.init)
    else:
        config = get_preset(cfg.preset, **cfg.preset_overrides)
        if cfg.aux_weight:
            config = config.replace(aux_dim=len(FOCUS_FEATURES))
        config = _align_config_with_data(config, demos)
        codec = ActionCodec.fit(
            demos.actions,
            num_bins=config.num_bins,
            chunk_len=config.chunk_len,
            gripper_index=config.gripper_index,
        )
        stats = ProprioStats.fit(demos.proprio) if config.use_proprio else None
        tokenizer = build_tokenizer(config, allow_download=cfg.allow_download)
        with torch.device(cfg.device):
            if config.architecture == "hf_vla" and config.vision_pretrained and config.text_pretrained:
                from svrl_policy.models.hf_vla import HFVLA

                model, config = HFVLA.from_pretrained_backbones(config, allow_download=cfg.allow_download)
                model = model.to(cfg.device)
            else:
                model = None
            policy = Policy(config, codec, proprio_stats=stats, tokenizer=tokenizer, model=model)
        log.info(
            "new %s policy (%.2f M params); codec fitted on %d frames",
            config.preset,
            policy.num_parameters() / 1e6,
            len(demos),
        )
    _check_compatible(policy.config, demos)
    _check_aux(cfg, policy.config, demos)
    _check_keypoints(cfg, policy.config, demos)
    return policy


def _check_aux(cfg: SFTConfig, config: PolicyConfig, demos: DemoFrames) -> None:
    if not cfg.aux_weight:
        return
    if demos.focus is None:
        raise ValueError(
            f"aux_weight={cfg.aux_weight} needs the {', '.join(FOCUS_FEATURES)} columns in every dataset "
            "(`svrl demos` records them); these datasets lack them: pass --aux-weight 0"
        )
    if config.aux_dim != len(FOCUS_FEATURES):
        raise ValueError(
            f"aux_weight={cfg.aux_weight} needs a policy with an auxiliary head of {len(FOCUS_FEATURES)} outputs; "
            f"this one has aux_dim={config.aux_dim} (a fresh policy gets one; --init keeps its checkpoint's)"
        )


def _check_keypoints(cfg: SFTConfig, config: PolicyConfig, demos: DemoFrames) -> None:
    if not cfg.keypoint_weight:
        return
    if demos.focus_pixels(config.cameras) is None:
        columns = focus_pixel_features(config.cameras)
        raise ValueError(
            f"keypoint_weight={cfg.keypoint_weight} needs the {columns[0]} ... {columns[-1]} columns in every "
            "dataset (`svrl demos` records them); these datasets lack them: pass --keypoint-weight 0"
        )
    if config.text_keypoints < 2:
        raise ValueError(
            f"keypoint_weight={cfg.keypoint_weight} teaches the first two text keypoints per camera (object, "
            f"target); this policy has text_keypoints={config.text_keypoints} (use a preset with them, "
            "e.g. tiny96tk)"
        )


def preprocess_tracking_shifts(
    policy: Policy, obs: dict[str, Any], pad: int, generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """`policy.preprocess(obs, train=True)` with the random shift drawn here, so that labels drawn on the
    image (the focus pixels) can move with it: (inputs, crop offsets (C, B, 2), or None when pad is 0)."""
    inputs = policy.preprocess(obs, train=False)
    if not pad:
        return inputs, None
    images = inputs["pixel_values"]  # (B, C, 3, S, S)
    batch, cameras = images.shape[:2]
    shifts = torch.stack([random_shift_offsets(batch, pad, generator) for _ in range(cameras)])
    inputs["pixel_values"] = torch.stack(
        [shift_images(images[:, c], pad, shifts[c]) for c in range(cameras)], dim=1
    )
    return inputs, shifts


def keypoint_targets(
    pixels: np.ndarray, center_crop: float, shifts: torch.Tensor | None, pad: int, image_size: int
) -> torch.Tensor:
    """Focus pixels (B, C, 2, 2) as the model sees them: scaled by its centre crop, moved with each
    camera's random shift (`shifts` (C, B, 2) row/column crop offsets of svrl_policy.preprocess.shift_images)."""
    xy = torch.from_numpy(pixels).float() / center_crop
    if shifts is not None:
        moved = (pad - shifts.float()) * 2.0 / image_size  # (C, B, 2) as (row, column)
        xy = xy + moved.flip(-1).permute(1, 0, 2)[:, :, None, :]  # (B, C, 1, 2) as (x, y)
    return xy


def in_view(points: Any) -> Any:
    """(..., 2) image positions -> (...) bool: inside the image (|x|, |y| <= 1; svrl_sim.projection)."""
    return (abs(points) <= 1.0).all(-1)


def keypoint_loss(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 (in KEYPOINT_SCALE units) over the points in view (|x|, |y| <= 1); 0 if none is."""
    seen = in_view(targets)  # (B, C, 2)
    if not bool(seen.any()):
        return predicted.sum() * 0.0
    return F.smooth_l1_loss(predicted[seen] / KEYPOINT_SCALE, targets[seen] / KEYPOINT_SCALE)


def _align_config_with_data(config: PolicyConfig, demos: DemoFrames) -> PolicyConfig:
    if demos.action_space != config.action_space:
        from svrl_policy.features import ACTION_DIMS

        dim = ACTION_DIMS.get(demos.action_space)
        if dim is None:
            raise ValueError(f"dataset action space {demos.action_space!r} is not supported")
        config = config.replace(action_space=demos.action_space, action_dim=dim, gripper_index=dim - 1)
    if demos.proprio is None and config.use_proprio:
        raise ValueError(f"preset {config.preset!r} uses proprio but the dataset has no observation.state")
    return config


def _check_compatible(config: PolicyConfig, demos: DemoFrames) -> None:
    problems = []
    if demos.action_space != config.action_space:
        problems.append(f"action space: data {demos.action_space}, policy {config.action_space}")
    missing = [c for c in config.cameras if c not in demos.camera_names]
    if missing:
        problems.append(f"cameras {missing} missing from the data (has {demos.camera_names})")
    if config.use_proprio and (demos.proprio is None or demos.proprio.shape[1] != config.proprio_dim):
        got = None if demos.proprio is None else demos.proprio.shape[1]
        problems.append(f"proprio dims: data {got}, policy {config.proprio_dim}")
    if problems:
        raise ValueError("dataset and policy are incompatible: " + "; ".join(problems))


def lr_at(step: int, cfg: SFTConfig) -> float:
    """1) linear warmup, 2) cosine decay from lr to lr * min_lr_frac at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (
        cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    )


def make_optimizer(model: torch.nn.Module, cfg: SFTConfig) -> torch.optim.Optimizer:
    """AdamW; matrices (dim >= 2) get weight decay, biases and norm gains do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )


# ---------------------------------------------------------------------------------------------- loop
def train_sft(cfg: SFTConfig) -> SFTResult:
    # 0) the output directory: a fresh run, a resumed one, or one already finished (svrl_trainer.sft_state)
    resume = prepare_output(cfg)
    if isinstance(resume, dict):
        log.info("%s already finished (%d steps): nothing to do", cfg.out, resume["step"])
        return SFTResult(checkpoint=cfg.out.absolute(), history=resume["progress"]["history"])

    # 1) seed and threads
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    # 2) data + policy (+ optimizer moments and generators of a resumed run)
    datasets = [LeRobotDataset(d) for d in cfg.data]
    chunk_len = (
        get_preset(cfg.preset, **cfg.preset_overrides).chunk_len
        if cfg.init is None
        else load_components(cfg.init).config.chunk_len
    )
    demos = DemoFrames(datasets, chunk_len)
    log.info(
        "data: %d episodes, %d frames from %s", demos.num_episodes, len(demos), ", ".join(map(str, cfg.data))
    )
    if resume is None:
        policy = build_policy(cfg, demos)
        progress = SFTProgress()
    else:
        policy = Policy.from_pretrained(cfg.out, device=cfg.device)
        _check_compatible(policy.config, demos)
        _check_aux(cfg, policy.config, demos)
        _check_keypoints(cfg, policy.config, demos)
        progress = resume.progress
    if not cfg.aux_weight:
        policy.freeze_auxiliary_head()  # a fine-tune without the loss leaves a base's aux head as it was
    targets = policy.codec.tokenize(demos.targets).reshape(len(demos), -1)  # (N, K*D) int64
    optimizer = make_optimizer(policy.model, cfg)
    soft_targets = ordinal_label_kernel(policy.config.num_bins, cfg.label_sigma) if cfg.label_sigma else None
    pixels = demos.focus_pixels(policy.config.cameras) if cfg.keypoint_weight else None
    pad = policy.config.augment_shift if cfg.augment else 0
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer_state)
        restore_generators(resume.rng, rng, gen)  # last: building the policy drew from torch's generator
        log.info("resumed %s at step %d/%d", cfg.out, progress.step, cfg.steps)
    metadata = {
        "stage": cfg.stage,
        "data": [str(d) for d in cfg.data],
        "init": str(cfg.init) if cfg.init else None,
        "grow": cfg.grow,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "aux_weight": cfg.aux_weight,
        "keypoint_weight": cfg.keypoint_weight,
    }

    def save(final: bool) -> Path:
        extra = {"final_loss": progress.history[-1]["loss"], "history": progress.history} if final else {}
        return policy.save_pretrained(
            cfg.out,
            metadata={**metadata, "steps": progress.step, **extra},
            extra=lambda tmp: write_state(
                tmp, cfg, progress, optimizer=None if final else optimizer, numpy_rng=rng, augment_gen=gen
            ),
        )

    # 3) loop
    policy.model.train()
    bar = _progress(cfg, progress.step)
    t0 = time.perf_counter()
    start = progress.step
    end = cfg.steps if cfg.stop_after is None else min(cfg.steps, cfg.stop_after)
    if start >= end:
        log.info("%s is at step %d: --stop-after %d leaves nothing to do", cfg.out, start, end)
        return SFTResult(checkpoint=cfg.out.absolute(), history=progress.history, stopped=True)
    for step in range(start, end):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        frames = rng.integers(0, len(demos), cfg.batch_size)
        obs = demos.observations(frames)
        if pixels is None:
            inputs, shifts = policy.preprocess(obs, train=cfg.augment, generator=gen), None
        else:
            inputs, shifts = preprocess_tracking_shifts(policy, obs, pad, gen)
        tokens = torch.from_numpy(targets[frames]).to(policy.device)  # (B, K*D)
        aux_loss = kp_loss = None
        if cfg.aux_weight or pixels is not None:
            logits, focus_out, named = policy.forward_with_aux(inputs)
            if cfg.aux_weight:
                assert focus_out is not None
                focus = torch.from_numpy(demos.focus[frames]).to(focus_out.device)
                aux_loss = F.smooth_l1_loss(focus_out, focus / AUX_SCALE_M)
            if pixels is not None:
                assert named is not None
                goal = keypoint_targets(
                    pixels[frames], policy.config.center_crop, shifts, pad, policy.config.image_size
                )
                kp_loss = keypoint_loss(named[:, :, :2], goal.to(named.device))
        else:
            logits = policy(inputs)  # (B, K*D, num_bins)
        hard_ce = F.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        loss = hard_ce if soft_targets is None else soft_cross_entropy(logits, soft_targets[tokens])
        if aux_loss is not None:
            loss = loss + cfg.aux_weight * aux_loss
        if kp_loss is not None:
            loss = loss + cfg.keypoint_weight * kp_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.model.parameters(), cfg.grad_clip)
        optimizer.step()

        progress.step = step + 1
        progress.run_loss += (
            hard_ce.item()
        )  # logged as hard CE whatever the objective: comparable across runs
        progress.run_acc += (logits.detach().argmax(-1) == tokens).float().mean().item()
        if aux_loss is not None:
            progress.run_aux += aux_loss.item()
        if kp_loss is not None:
            progress.run_kp += kp_loss.item()
        progress.run_n += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % cfg.log_every == 0 or step == 0 or step + 1 == cfg.steps:
            entry = {"step": step + 1, "loss": progress.run_loss / progress.run_n,
                     "token_acc": progress.run_acc / progress.run_n, "lr": lr}  # fmt: skip
            aux_note = ""
            if aux_loss is not None:
                entry["aux"] = progress.run_aux / progress.run_n
                aux_note = f"  loss/aux {entry['aux']:.4f}"
            if kp_loss is not None:
                entry["keypoints"] = progress.run_kp / progress.run_n
                aux_note += f"  loss/keypoints {entry['keypoints']:.4f}"
            progress.history.append(entry)
            log.info(
                "step %d/%d  loss/ce %.4f  loss/token_acc %.3f%s  lr %.2e  perf/steps_per_s %.2f",
                step + 1, cfg.steps, entry["loss"], entry["token_acc"], aux_note, lr, (step + 1 - start) / (time.perf_counter() - t0),
            )  # fmt: skip
            progress.run_loss = progress.run_acc = progress.run_aux = progress.run_kp = 0.0
            progress.run_n = 0
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < end:
            save(final=False)
    if bar is not None:
        bar.close()
    if end < cfg.steps:
        out = save(final=False)
        log.info(
            "stopped at step %d of %d (--stop-after): %s; --resume continues the same run",
            end,
            cfg.steps,
            out,
        )
        return SFTResult(checkpoint=out, history=progress.history, stopped=True)

    # 4) save
    policy.model.eval()
    out = save(final=True)
    log.info(
        "saved %s (%d steps, final loss %.4f, %.0f s)",
        out,
        cfg.steps,
        progress.history[-1]["loss"],
        time.perf_counter() - t0,
    )
    return SFTResult(checkpoint=out, history=progress.history)


def _progress(cfg: SFTConfig, done: int) -> Any:
    if not cfg.progress:
        return None
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (log files get the periodic log lines instead)
    return tqdm(total=cfg.steps, initial=done, desc=cfg.stage, unit="step", dynamic_ncols=True, disable=None)


def config_from_args(args: Any, **extra: Any) -> SFTConfig:
    """Map parsed CLI arguments onto SFTConfig (unknown names are simply not SFTConfig fields)."""
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return SFTConfig(**{**values, **extra})
