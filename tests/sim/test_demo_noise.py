"""DART demonstrations: the arm executes noisy actions, the dataset keeps the expert's clean ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from svrl_sim.demos import action_noise, record_episodes, write_demos

TASK = "pretrain/lift_cube_red"


def test_noise_is_seeded_per_episode_and_spares_roll_pitch_and_gripper() -> None:
    a, b = action_noise(TASK, "train", 3, 0.005, 7), action_noise(TASK, "train", 3, 0.005, 7)
    draws = np.stack([a() for _ in range(200)])
    np.testing.assert_array_equal(draws[0], b())  # same (task, split, state): same noise
    assert not np.array_equal(action_noise(TASK, "train", 4, 0.005, 7)(), draws[0])
    assert np.all(draws[:, 3:5] == 0.0) and np.all(draws[:, 6] == 0.0)  # nor roll, pitch or the gripper
    assert draws[:, 5].std() == pytest.approx(0.01, rel=0.15)
    assert draws[:, :3].std() == pytest.approx(0.005, rel=0.15)


def test_noisy_demo_leaves_the_expert_path_and_still_succeeds() -> None:
    ((_, clean),) = record_episodes(TASK, "train", [0], 48, "ee_delta")
    ((_, noisy),) = record_episodes(TASK, "train", [0], 48, "ee_delta", noise=0.005)
    ((_, again),) = record_episodes(TASK, "train", [0], 48, "ee_delta", noise=0.005)
    assert clean is not None and noisy is not None  # kept only when the task succeeded
    np.testing.assert_array_equal(noisy["proprio"], again["proprio"])  # deterministic
    n = min(len(clean["proprio"]), len(noisy["proprio"]))
    assert np.abs(noisy["proprio"][:n] - clean["proprio"][:n]).max() > 1e-3  # the states differ ...
    # ... and each recorded action is the expert's own: no noise-sized jitter on the gripper channel, and
    # translations stay inside the expert's limits (noise would push some beyond them)
    assert set(np.unique(noisy["actions"][:, 6])) <= {-1.0, 1.0}
    assert np.abs(noisy["actions"][:, :3]).max() <= np.abs(clean["actions"][:, :3]).max() + 1e-6


def test_demo_noise_out_of_range_is_refused(tmp_path: Path) -> None:
    for bad in (float("nan"), -0.001, 0.05):
        with pytest.raises(ValueError, match="noise"):
            write_demos(tmp_path / "d", [TASK], 1, noise=bad)
    assert not (tmp_path / "d").exists()  # nothing half-written


def test_demos_record_where_the_expert_is_heading() -> None:
    """focus.* columns: the current skill's object and target relative to the gripper, frame by frame."""
    from svrl_policy.features import FOCUS_FEATURES, FOCUS_PIXEL_FEATURES
    from svrl_sim.env import SimEnv
    from svrl_sim.tasks import InitState

    task = "pretrain/cube_red_on_box"
    ((_, ep),) = record_episodes(task, "train", [0], 48, "ee_delta")
    assert ep is not None and list(ep["extra"]) == [*FOCUS_FEATURES, *FOCUS_PIXEL_FEATURES]
    focus = np.stack([ep["extra"][f] for f in FOCUS_FEATURES], axis=1)
    assert focus.shape == (len(ep["actions"]), 6) and np.isfinite(focus).all()
    with SimEnv(image_size=48) as env:
        env.reset(task, InitState("train", 0))
        tcp = env.view.tcp_pos()
        expected = np.concatenate([env.view.pos("cube_red") - tcp, env.view.pos("box") - tcp])
    np.testing.assert_allclose(focus[0], expected, atol=1e-6)
    assert np.linalg.norm(focus[0, :3]) > 0.05  # the cube starts away from the gripper ...
    assert np.linalg.norm(focus[-1, :3]) < 0.03  # ... and ends between its fingers, over the box
    assert np.linalg.norm(focus[-1, 3:5]) < 0.05


def test_focus_pixels_land_on_the_objects_in_the_rendered_images() -> None:
    """focus.*_px_* columns: the pinhole projection agrees with what the renderer drew, in both cameras."""
    from svrl_policy.features import FOCUS_PIXEL_FEATURES
    from svrl_sim.projection import BEHIND_CAMERA, project_point

    size = 96
    ((_, ep),) = record_episodes("pretrain/cube_red_on_box", "train", [0], size, "ee_delta")
    assert ep is not None
    pixels = np.stack([ep["extra"][f] for f in FOCUS_PIXEL_FEATURES], axis=1).reshape(-1, 2, 2, 2)
    red, brown = np.array([255, 40, 33]), np.array([150, 93, 48])  # the cube and the wooden box, as drawn
    checked = 0
    for t in (0, 5):
        for c, cam in enumerate(("main", "wrist")):
            for k, colour in enumerate((red, brown)):
                x, y = pixels[t, c, k]
                if max(abs(x), abs(y)) > 1:
                    continue
                row, col = int((y + 1) / 2 * size), int((x + 1) / 2 * size)
                patch = ep["images"][cam][t][max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2]
                distance = np.abs(patch.reshape(-1, 3).astype(float) - colour).sum(axis=1).min()
                assert distance < 60, (t, cam, k, patch.reshape(-1, 3))
                checked += 1
    assert checked >= 6
    from svrl_sim.env import SimEnv
    from svrl_sim.tasks import InitState

    with SimEnv(image_size=48) as env:
        env.reset("pretrain/cube_red_on_box", InitState("train", 0))
        cam = env.index.camera_ids["main"]
        eye, forward = (
            env.data.cam_xpos[cam],
            env.data.cam_xmat[cam].reshape(3, 3)[:, 2],
        )  # +z looks backwards
        np.testing.assert_array_equal(
            project_point(env.model, env.data, cam, eye + forward), [BEHIND_CAMERA] * 2
        )
