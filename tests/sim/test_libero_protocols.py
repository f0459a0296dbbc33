"""Evaluation protocols and the LIBERO backend's svrl side: no LIBERO needed (runs in `make test`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from svrl_libero.backend import libero_tasks, make_env, resolve_tasks
from svrl_libero.worker import proprio_of, quat_xyzw_to_axis_angle, to_native_action
from svrl_policy.protocols import (
    center_crop_area,
    get_protocol,
    protocol_image,
    split_init_states,
)


def test_center_crop_follows_crop_and_resize_sampling_exactly() -> None:
    """On a horizontal ramp bilinear sampling is exact, so every output pixel must equal the definition:
    x_in = lo*(W-1) + j*(hi-lo)*(W-1)/(S-1) with lo, hi = (1 -+ sqrt(area))/2, then v/255*255.5 truncated."""
    size, area = 224, 0.9
    ramp = np.broadcast_to(np.arange(size, dtype=np.uint8)[None, :, None], (size, size, 3)).copy()
    out = center_crop_area(ramp, area, size)
    side = math.sqrt(area)
    lo, hi = (1 - side) / 2, (1 + side) / 2
    x_in = lo * (size - 1) + np.arange(size) * (hi - lo) * (size - 1) / (size - 1)
    expected = np.floor(x_in / 255.0 * 255.5).astype(np.uint8)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert np.abs(out[100, :, 0].astype(int) - expected).max() <= 1  # float32 rounding only
    assert (out == out[:1]).all()  # rows are untouched by a horizontal ramp
    assert out[0, 0, 0] == 5 and out[0, -1, 0] == 217  # 2.6 % cut from each side


def _known_frame() -> np.ndarray:
    """256² grey frame, a red 64² square in the top-left corner, a 6 px green border (inside the crop margin)."""
    img = np.full((256, 256, 3), 128, np.uint8)
    img[:64, :64] = (255, 0, 0)
    img[:6, :], img[-6:, :], img[:, :6], img[:, -6:] = (0, 255, 0), (0, 255, 0), (0, 255, 0), (0, 255, 0)
    return img


def test_simplevla_rl_pipeline_flips_compresses_resizes_and_crops_a_known_image() -> None:
    protocol = get_protocol("simplevla_rl")
    out = protocol.frame(_known_frame(), 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    red = (out[..., 0] > 200) & (out[..., 1] < 60)
    ys, xs = np.nonzero(red)
    # rotated 180°: the square is now bottom-right, its inner edge at 192/256 -> 168 px at 224², which the
    # crop (output j reads input lo*223 + j*sqrt(0.9)) moves to (168 - 5.72) / 0.9487 = 171
    assert ys.max() == 223 and xs.max() == 223
    assert abs(ys.min() - 171) <= 1 and abs(xs.min() - 171) <= 1
    # the 6 px border (5.25 px at 224²) lies inside the 5.7 px that the 90 % area crop removes
    green = (out[..., 1] > 200) & (out[..., 0] < 60)
    assert not green.any()
    # the JPEG round trip changes pixels, but only slightly
    no_jpeg = protocol_image(_known_frame(), size=224, flip=True, jpeg_quality=None, crop_area=0.9)
    diff = out.astype(float) - no_jpeg
    assert np.abs(diff).mean() > 0 and 10 * np.log10(255**2 / (diff**2).mean()) > 30


def test_protocols_carry_the_papers_numbers() -> None:
    s = get_protocol("simplevla_rl")
    assert (s.cameras, s.settle_steps, s.render_size, s.image_size) == (("main",), 10, 256, 224)
    assert (s.center_crop_area, s.jpeg_quality, s.flip, s.greedy) == (0.9, 95, True, True)
    assert set(s.horizons.values()) == {512}
    o = get_protocol("openvla_oft")
    assert o.cameras == ("main", "wrist") and o.proprio == "oft"
    assert [o.max_steps(x) for x in ("libero_spatial", "libero_object", "libero_goal", "libero_10")] == [
        220, 280, 300, 520,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="did you mean 'openvla_oft'"):
        get_protocol("openvla-oft")


def test_fair_split_holds_out_states_the_paper_split_trains_on() -> None:
    paper_train, paper_eval = split_init_states(50, "paper")
    assert paper_train == paper_eval == tuple(range(50))
    train, held_out = split_init_states(50, "fair")
    assert (
        len(held_out) == 10
        and not set(train) & set(held_out)
        and set(train) | set(held_out) == set(range(50))
    )


def test_libero_tasks_resolve_by_suite_task_and_split() -> None:
    assert len(libero_tasks()) == 40
    refs = resolve_tasks(["libero_goal:fair", "libero_10"])
    assert len(refs) == 20 and {r.suite for r in refs} == {"libero_goal", "libero_10"}
    goal = refs[0]
    assert goal.name.startswith("libero_goal/") and goal.instruction and goal.max_steps == 512
    assert not set(goal.train_states) & set(goal.eval_states)
    assert refs[-1].max_steps == 520 and len(refs[-1].eval_states) == 50
    with pytest.raises(KeyError, match="unknown LIBERO suite or task"):
        resolve_tasks(["libero_90"])
    with pytest.raises(ValueError, match="split"):
        resolve_tasks(["libero_goal:leaky"])


def test_the_catalog_finds_the_libero_backend() -> None:
    from svrl_trainer.catalog import backend_names
    from svrl_trainer.catalog import resolve_tasks as catalog_resolve

    assert "libero" in backend_names()  # the entry point (pip install -e . refreshes it)
    assert len(catalog_resolve("libero", ["libero_object"])) == 10


def test_a_protocol_refuses_another_image_size_before_starting_anything() -> None:
    with pytest.raises(ValueError, match="image_size 224"):
        make_env(1, image_size=128, protocol="simplevla_rl")
    with pytest.raises(ValueError, match="no option"):
        make_env(1, image_size=224, protocl="simplevla_rl")


def test_svrl_actions_map_to_robosuites_normalised_osc_delta() -> None:
    a = to_native_action(np.array([0.05, -0.025, 0.0, 0.25, 0.0, -0.5, 1.0]), "svrl")
    np.testing.assert_allclose(a, [1.0, -0.5, 0.0, 0.5, 0.0, -1.0, 1.0])
    np.testing.assert_allclose(
        to_native_action(np.array([0.2, 0, 0, 0, 0, 0, -1.0]), "svrl")[0], 1.0
    )  # clipped
    native = np.array([0.3, -0.2, 0.1, 0.0, 0.05, 0.0, -1.0])
    np.testing.assert_allclose(to_native_action(native, "native"), native)
    half_closed = np.array([0.0, 0, 0, 0, 0, 0, 0.3])
    assert to_native_action(half_closed, "svrl")[6] == pytest.approx(0.3)
    assert to_native_action(half_closed, "svrl", binarize_gripper=True)[6] == 1.0  # the papers' loops
    assert get_protocol("simplevla_rl").binarize_gripper and not get_protocol("plain").binarize_gripper


def test_proprio_layouts() -> None:
    half_turn_z = np.array([0.0, 0.0, 1.0, 0.0])  # x, y, z, w: 180° about z
    obs = {
        "robot0_joint_pos": np.arange(7) * 0.1,
        "robot0_gripper_qpos": np.array([0.02, -0.02]),
        "robot0_eef_pos": np.array([0.1, 0.2, 1.0]),
        "robot0_eef_quat": half_turn_z,
    }
    svrl = proprio_of(obs, "svrl")
    assert svrl.shape == (15,) and svrl[7] == pytest.approx(0.5)
    np.testing.assert_allclose(svrl[11:], [0.0, 0.0, 0.0, 1.0])  # w, x, y, z
    oft = proprio_of(obs, "oft")
    assert oft.shape == (8,)
    np.testing.assert_allclose(oft[3:6], [0.0, 0.0, math.pi], atol=1e-6)
    np.testing.assert_allclose(quat_xyzw_to_axis_angle(np.array([0, 0, 0, 1.0])), 0.0)


def test_svrl_commands_answer_for_libero_without_libero(capsys) -> None:
    from svrl.cli import main

    assert main(["sim", "tasks", "--backend", "libero", "--suite", "libero_object"]) == 0
    out = capsys.readouterr().out
    assert out.count("libero_object/") == 10 and "50 standard init states" in out
    # LIBERO's demonstrations are human recordings that svrl cannot make or download: say what to bring
    assert (
        main(["demos", "--backend", "libero", "--suite", "libero_goal", "--per-task", "1", "--out", "x"]) == 2
    )
    err = capsys.readouterr().err
    assert "not on PyPI" in err and "HDF5" in err and "action_units: native" in err
