"""Text keypoints taught to sit on the named object and target (`--keypoint-weight`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from svrl_policy.dataset import LeRobotDataset
from svrl_policy.features import CAMERAS, focus_pixel_features
from svrl_policy.policy import Policy
from svrl_policy.preprocess import shift_images
from svrl_trainer.sft import (
    DemoFrames,
    SFTConfig,
    keypoint_loss,
    keypoint_targets,
    preprocess_tracking_shifts,
    train_sft,
)
from tests.policy.conftest import make_policy, write_reach_dataset

TK = dict(tokenizer="word", max_text_len=16, text_keypoints=2)


@pytest.fixture(scope="module")
def focus_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reach_dataset(tmp_path_factory.mktemp("data") / "reach_focus", focus=True)


def test_focus_pixels_follow_the_policy_camera_order(focus_dataset: Path) -> None:
    ds = LeRobotDataset(focus_dataset)
    frames = DemoFrames([ds], chunk_len=4)
    main_first = frames.focus_pixels(CAMERAS)
    wrist_first = frames.focus_pixels(CAMERAS[::-1])
    assert main_first is not None and main_first.shape == (len(ds), 2, 2, 2)
    np.testing.assert_array_equal(main_first[:, 0, 0, 1], ds.extra["focus.object_px_main_y"])
    np.testing.assert_array_equal(wrist_first[:, 0], main_first[:, 1])
    assert len(focus_pixel_features(CAMERAS)) == 8


def test_shifted_targets_stay_on_the_drawn_point() -> None:
    """A dot drawn at a target pixel is still under the moved target after shift_images."""
    size, pad = 32, 3
    gen = torch.Generator().manual_seed(0)
    rows, cols = torch.tensor([5, 20, 30]), torch.tensor([9, 2, 27])
    images = torch.zeros(3, 1, size, size)
    images[torch.arange(3), 0, rows, cols] = 1.0
    xy = torch.stack([(cols + 0.5) / size * 2 - 1, (rows + 0.5) / size * 2 - 1], dim=1)  # (3, 2)
    pixels = xy[:, None, None, :].expand(3, 1, 2, 2).numpy()  # (B, C=1, object/target, xy)
    shifts = torch.randint(0, 2 * pad + 1, (1, 3, 2), generator=gen)
    moved = keypoint_targets(pixels, 1.0, shifts, pad, size)[:, 0, 0]  # (3, 2)
    shifted = shift_images(images, pad, shifts[0])
    for i in range(3):
        col, row = ((moved[i] + 1) / 2 * size - 0.5).round().long().tolist()
        if 0 <= row < size and 0 <= col < size:
            assert shifted[i, 0, row, col] == 1.0, (i, row, col)
    # a centre crop of 0.5 doubles the distance from the centre
    np.testing.assert_allclose(keypoint_targets(pixels, 0.5, None, 0, size).numpy(), pixels * 2)


def test_tracking_the_shifts_changes_nothing_else() -> None:
    """Same generator state, same images as the preprocessor's own training-time shift, to the bit."""
    policy = make_policy("debug", **TK)
    obs = policy.preprocessor.example_observation(batch=4, seed=3)
    own = policy.preprocess(obs, train=True, generator=torch.Generator().manual_seed(7))
    tracked, shifts = preprocess_tracking_shifts(
        policy, obs, policy.config.augment_shift, torch.Generator().manual_seed(7)
    )
    assert shifts is not None and shifts.shape == (len(policy.config.cameras), 4, 2)
    assert torch.equal(own["pixel_values"], tracked["pixel_values"])
    assert preprocess_tracking_shifts(policy, obs, 0, torch.Generator())[1] is None


def test_keypoint_loss_ignores_points_out_of_view() -> None:
    predicted = torch.zeros(1, 2, 2, 2, requires_grad=True)
    targets = torch.tensor([[[[0.1, 0.1], [9.0, 9.0]], [[1.5, 0.0], [-0.1, 0.0]]]])
    loss = keypoint_loss(predicted, targets)
    loss.backward()
    assert predicted.grad is not None
    assert predicted.grad[0, 0, 1].abs().sum() == 0 and predicted.grad[0, 1, 0].abs().sum() == 0
    assert predicted.grad[0, 0, 0].abs().sum() > 0
    nothing = keypoint_loss(predicted, torch.full((1, 2, 2, 2), 9.0))
    assert nothing.item() == 0.0


def test_the_training_forward_returns_the_text_keypoints_and_acting_is_unchanged() -> None:
    policy = make_policy("debug", **TK)
    inputs = policy.preprocessor(policy.preprocessor.example_observation(batch=3, seed=1))
    with torch.no_grad():
        out = policy.forward_with_aux(inputs)
        plain = policy(inputs)
    assert out.focus is None and out.text_keypoints is not None
    assert out.text_keypoints.shape == (3, len(policy.config.cameras), 2, 2)
    assert float(out.text_keypoints.abs().max()) <= 1.0
    torch.testing.assert_close(out.logits, plain)
    with pytest.raises(ValueError, match="no auxiliary head"):
        make_policy("debug", tokenizer="word", max_text_len=16).model(**inputs, with_aux=True)


def test_sft_with_keypoint_weight_puts_the_keypoints_on_the_target(
    focus_dataset: Path, tmp_path: Path
) -> None:
    common = dict(data=[focus_dataset], preset="debug", preset_overrides=TK, steps=150, batch_size=32,
                  lr=3e-3, warmup_steps=5, log_every=25, progress=False, seed=1)  # fmt: skip
    result = train_sft(SFTConfig(out=tmp_path / "kp", keypoint_weight=1.0, **common))
    policy = Policy.from_pretrained(result.checkpoint).eval()
    demos = DemoFrames([LeRobotDataset(focus_dataset)], chunk_len=policy.config.chunk_len)
    frames = np.arange(0, len(demos), 3)
    truth = torch.from_numpy(demos.focus_pixels(policy.config.cameras)[frames])  # (N, C, 2, 2)
    with torch.no_grad():
        found = policy.forward_with_aux(policy.preprocess(demos.observations(frames))).text_keypoints[
            :, :, :2
        ]
    error = (found - truth).norm(dim=-1).mean().item()
    constant = (truth - truth.median(dim=0).values).norm(dim=-1).mean().item()
    history = [h["keypoints"] for h in result.history]
    assert history[-1] < 0.5 * history[0], history
    assert error < 0.5 * constant, (error, constant)  # it follows the square, which moves with the task


def test_keypoint_weight_refusals(reach_dataset: Path, focus_dataset: Path, tmp_path: Path, capsys) -> None:
    from svrl.cli import main as svrl_main

    with pytest.raises(ValueError, match=r"focus\.object_px_main_x"):
        train_sft(SFTConfig(data=[reach_dataset], out=tmp_path / "a", preset="debug", preset_overrides=TK,
                            steps=1, keypoint_weight=1.0, progress=False))  # fmt: skip
    with pytest.raises(ValueError, match="text_keypoints=0"):
        train_sft(SFTConfig(data=[focus_dataset], out=tmp_path / "b", preset="debug", steps=1,
                            keypoint_weight=1.0, progress=False))  # fmt: skip
    with pytest.raises(ValueError, match="keypoint_weight"):
        SFTConfig(data=[focus_dataset], out=tmp_path / "c", keypoint_weight=float("inf"))
    argv = ["pretrain", "--data", str(focus_dataset), "--preset", "debug", "--out", str(tmp_path / "d"),
            "--steps", "1", "--batch-size", "4", "--keypoint-weight", "1"]  # fmt: skip
    assert svrl_main(argv) == 2  # debug has no text keypoints: one line, before any step
    assert "text_keypoints" in capsys.readouterr().err
