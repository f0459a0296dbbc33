"""Fixtures for svrl_policy tests: tiny random policies and synthetic demonstration datasets (all offline)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from svrl_policy.codec import ActionCodec
from svrl_policy.config import PolicyConfig, get_preset
from svrl_policy.dataset import DatasetWriter
from svrl_policy.features import CAMERAS, FOCUS_FEATURES, focus_pixel_features
from svrl_policy.policy import Policy
from svrl_policy.preprocess import ProprioStats


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def make_policy(preset: str = "debug", seed: int = 0, **overrides) -> Policy:
    """A random policy with a codec and proprio stats fitted on random data."""
    torch.manual_seed(seed)
    config: PolicyConfig = get_preset(preset, **overrides)
    rng = np.random.default_rng(seed)
    actions = rng.normal(scale=0.02, size=(500, config.action_dim))
    actions[:, -1] = rng.choice([-1.0, 1.0], size=500)
    codec = ActionCodec.fit(actions, chunk_len=config.chunk_len, gripper_index=config.gripper_index)
    stats = ProprioStats.fit(rng.normal(size=(100, config.proprio_dim))) if config.use_proprio else None
    return Policy(config, codec, proprio_stats=stats).eval()


@pytest.fixture
def policy_factory() -> Callable[..., Policy]:
    return make_policy


def write_reach_dataset(
    root: Path,
    *,
    episodes: int = 6,
    length: int = 16,
    image_size: int = 64,
    seed: int = 0,
    focus: bool = False,
) -> Path:
    """Synthetic 'reach' demonstrations: the action moves the end effector (proprio ee_pos) towards a goal
    chosen by the instruction, and the image shows a bright square at the goal. Learnable from proprio +
    language, so a few dozen SFT steps must lower the loss. `focus`: also the privileged focus.* columns
    (the goal relative to the end effector, as object and as target; where the square appears in each
    camera's image, as object and as target)."""
    rng = np.random.default_rng(seed)
    goals = {"reach left": np.array([0.2, -0.2, 0.1]), "reach right": np.array([-0.2, 0.2, 0.15])}
    columns = (*FOCUS_FEATURES, *focus_pixel_features(CAMERAS))
    extra_features = dict.fromkeys(columns, "float32") if focus else None
    with DatasetWriter(root, image_shape=(image_size, image_size), extra_features=extra_features) as writer:
        for e in range(episodes):
            instruction = list(goals)[e % 2]
            goal = goals[instruction]
            pos = rng.uniform(-0.25, 0.25, 3)
            proprio, actions, frames, offsets = [], [], [], []
            for t in range(length):
                p = np.zeros(15, np.float32)
                p[8:11] = pos
                a = np.zeros(7, np.float32)
                a[:3] = np.clip(goal - pos, -0.04, 0.04)
                a[6] = 1.0 if t >= length // 2 else -1.0
                img = np.zeros((image_size, image_size, 3), np.uint8)
                c = int((goal[0] + 0.25) / 0.5 * (image_size - 8))
                img[c : c + 8, c : c + 8] = 255
                centre = (c + 4) / image_size * 2 - 1  # the square's centre, x = y, in [-1, 1]
                main_xy, wrist_xy = [centre, centre], [centre, -centre]  # the wrist image is flipped
                offsets.append(np.concatenate([goal - pos, goal - pos, main_xy * 2, wrist_xy * 2]))
                pos = pos + a[:3]
                proprio.append(p)
                actions.append(a)
                frames.append(img)
            imgs = np.stack(frames)
            writer.add_episode(
                images={"main": imgs, "wrist": imgs[:, ::-1].copy()},
                proprio=np.stack(proprio),
                actions=np.stack(actions),
                instruction=instruction,
                task_name=f"toy/{instruction.replace(' ', '_')}",
                extra=dict(zip(columns, np.stack(offsets).T, strict=True)) if focus else None,
            )
    return root


@pytest.fixture(scope="session")
def reach_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reach_dataset(tmp_path_factory.mktemp("data") / "reach")
