"""SFT: chunk targets, the loss goes down, --init keeps the base codec, and the CLI commands run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from svrl.cli import main as svrl_main
from svrl_policy.policy import Policy
from svrl_trainer.sft import (
    SFTConfig,
    chunk_targets,
    lr_at,
    ordinal_label_kernel,
    soft_cross_entropy,
    train_sft,
)


def test_chunk_targets_pad_with_a_hold_action() -> None:
    actions = np.arange(3 * 7, dtype=np.float32).reshape(3, 7)
    t = chunk_targets(actions, 4, "ee_delta")
    assert t.shape == (3, 4, 7)
    np.testing.assert_array_equal(t[0, :3], actions)
    hold = np.zeros(7, np.float32)
    hold[-1] = actions[-1, -1]  # zero motion, last gripper command
    np.testing.assert_array_equal(t[2, 1:], np.tile(hold, (3, 1)))
    j = chunk_targets(actions[:, :7], 4, "joint_pos")
    np.testing.assert_array_equal(j[2, 1:], np.tile(actions[-1], (3, 1)))  # absolute targets: repeat


def test_lr_schedule_warms_up_then_decays() -> None:
    cfg = SFTConfig(data=["x"], out="y", steps=100, warmup_steps=10, lr=1.0, min_lr_frac=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3) and lr_at(50, cfg) < lr_at(20, cfg)


def test_soft_ordinal_targets_favour_near_misses_over_far_ones() -> None:
    kernel = ordinal_label_kernel(16, sigma=2.0)
    torch.testing.assert_close(kernel.sum(dim=1), torch.ones(16))
    assert int(kernel[7].argmax()) == 7 and kernel[7, 6] == kernel[7, 8] > kernel[7, 3] > 0
    assert kernel[0, 0] > kernel[7, 7]  # truncated at the range's ends, then renormalised
    label = torch.tensor([7])
    near, far = torch.full((1, 16), -5.0), torch.full((1, 16), -5.0)
    near[0, 8] = far[0, 15] = 5.0  # one bin off vs eight bins off: hard CE cannot tell them apart
    hard = [torch.nn.functional.cross_entropy(x, label) for x in (near, far)]
    torch.testing.assert_close(hard[0], hard[1])
    soft = [soft_cross_entropy(x, kernel[label]) for x in (near, far)]
    assert soft[0] < soft[1]
    with pytest.raises(ValueError, match="label_sigma"):
        SFTConfig(data=["x"], out="y", label_sigma=-1.0)


def test_sft_lowers_the_loss_and_init_keeps_the_codec(reach_dataset: Path, tmp_path: Path) -> None:
    base = train_sft(
        SFTConfig(
            data=[reach_dataset],
            out=tmp_path / "base",
            preset="debug",
            steps=80,
            batch_size=32,
            lr=2e-3,
            warmup_steps=5,
            log_every=20,
            progress=False,
        )
    )
    losses = [h["loss"] for h in base.history]
    assert losses[-1] < 0.5 * losses[0], losses
    soft = train_sft(
        SFTConfig(data=[reach_dataset], out=tmp_path / "soft", preset="debug", steps=80, batch_size=32,
                  lr=2e-3, warmup_steps=5, log_every=20, progress=False, label_sigma=2.0)
    )  # fmt: skip
    soft_losses = [h["loss"] for h in soft.history]  # logged as hard CE whatever the objective
    assert soft_losses[-1] < 0.5 * soft_losses[0], soft_losses
    manifest = json.loads((base.checkpoint / "manifest.json").read_text())
    assert manifest["metadata"]["stage"] == "sft" and manifest["metadata"]["steps"] == 80

    # Fine-tuning from the base on other data keeps the base's codec and statistics (shared bins).
    other = tmp_path / "other"
    from tests.policy.conftest import write_reach_dataset

    write_reach_dataset(other, episodes=2, seed=9)
    tuned = train_sft(
        SFTConfig(data=[other], out=tmp_path / "tuned", init=base.checkpoint, steps=3, progress=False)
    )
    a, b = Policy.from_pretrained(base.checkpoint), Policy.from_pretrained(tuned.checkpoint)
    assert a.codec == b.codec
    np.testing.assert_array_equal(a.preprocessor.proprio_stats.mean, b.preprocessor.proprio_stats.mean)
    assert not torch.equal(a.model.head.weight, b.model.head.weight)


def test_cli_sft_export_and_bench(reach_dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ck"
    argv = [
        "sft",
        "--data",
        str(reach_dataset),
        "--preset",
        "debug",
        "--out",
        str(out),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--log-every",
        "1",
    ]
    assert svrl_main(argv) == 0
    assert Policy.from_pretrained(out).config.preset == "debug"
    assert svrl_main(["export", "--ckpt", str(out), "--format", "onnx"]) == 0
    assert (out / "policy.onnx").is_file()
    assert svrl_main(["export", "--ckpt", str(tmp_path / "missing")]) == 1
    try:
        import tensorrt  # noqa: F401
    except ImportError:  # optional: the command must fail with a message, not a traceback
        assert svrl_main(["export", "--ckpt", str(out), "--format", "tensorrt"]) == 1
        assert "TensorRT is not installed" in capsys.readouterr().err
    capsys.readouterr()
    bench = ["bench", "policy", "--json", "--ckpt", str(out), "--batches", "1", "2", "--min-seconds", "0"]
    assert svrl_main(bench) == 0
    report = json.loads(capsys.readouterr().out)
    backends = {(r["backend"], r["batch"]) for r in report["results"]}
    assert {("torch", 1), ("onnx", 1), ("torch", 2), ("onnx", 2)} <= backends
    assert all(r["chunk_ms_median"] > 0 for r in report["results"])
    assert {k: report["speedups"][0][k] for k in ("image_size", "batch")} == {"image_size": 64, "batch": 1}
    assert report["speedups"][0]["onnx_vs_torch_chunk"] > 0
    assert "tensorrt" in report["skipped"] or ("tensorrt", 1) in backends


def test_train_and_serve_pipelines_give_bit_identical_inputs(reach_dataset: Path) -> None:
    """Golden parity: a recorded frame read back for SFT and the same frame arriving live (single-observation
    dict, as the sim or the ROS node builds it) become exactly the same model tensors."""
    from svrl_policy.dataset import LeRobotDataset
    from svrl_trainer.sft import DemoFrames
    from tests.policy.conftest import make_policy

    policy = make_policy("debug")
    ds = LeRobotDataset(reach_dataset)
    demos = DemoFrames([ds], chunk_len=policy.config.chunk_len)
    frame = 5
    trained_on = policy.preprocess(demos.observations(np.array([frame])))
    live = ds[frame]  # {"images": {cam: HxWx3}, "proprio": [15], "instruction": str, ...}
    served = policy.preprocess(
        {"images": live["images"], "proprio": live["proprio"], "instruction": live["instruction"]}
    )
    for key in trained_on:
        assert torch.equal(trained_on[key], served[key]), key
