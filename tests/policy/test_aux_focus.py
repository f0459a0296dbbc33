"""The auxiliary focus head: a privileged localisation loss for pretraining that acting never sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from svrl_policy.config import ConfigError, get_preset
from svrl_policy.dataset import LeRobotDataset
from svrl_policy.export import export_onnx
from svrl_policy.features import FOCUS_FEATURES
from svrl_policy.policy import Policy
from svrl_policy.runtime import load_runtime
from svrl_trainer.sft import AUX_SCALE_M, DemoFrames, SFTConfig, train_sft
from tests.policy.conftest import make_policy, write_reach_dataset

pytestmark = pytest.mark.filterwarnings("ignore")  # tracer warnings from torch.onnx


@pytest.fixture(scope="module")
def focus_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_reach_dataset(tmp_path_factory.mktemp("data") / "reach_focus", focus=True)


def test_the_aux_query_does_not_change_the_action_logits_and_export_ignores_it(tmp_path: Path) -> None:
    shape = dict(tokenizer="word", max_text_len=16, keypoints=4)
    policy = make_policy("debug", aux_dim=len(FOCUS_FEATURES), **shape)
    obs = policy.preprocessor.example_observation(batch=3, seed=2)
    inputs = policy.preprocessor(obs)
    with torch.no_grad():
        plain = policy.model(**inputs)
        logits, aux, points = policy.model(**inputs, with_aux=True)
    assert aux.shape == (3, len(FOCUS_FEATURES)) and points is None  # (no text keypoints)
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=0)  # no token attends to the aux query
    ckpt = policy.save_pretrained(tmp_path / "aux")
    export_onnx(ckpt)
    ort_rt = load_runtime(ckpt, "onnx", threads=1)
    assert (ort_rt.logits(inputs) - plain).abs().max().item() < 1e-4
    with pytest.raises(ValueError, match="no auxiliary head"):
        make_policy("debug", **shape).model(**inputs, with_aux=True)


def test_aux_dim_is_a_tiny_architecture_option() -> None:
    with pytest.raises(ConfigError, match="aux_dim"):
        get_preset("debug-hf", aux_dim=6)
    with pytest.raises(ConfigError, match="aux_dim"):
        get_preset("debug", aux_dim=-1)


def test_sft_with_aux_weight_learns_the_focus_offsets(focus_dataset: Path, tmp_path: Path) -> None:
    common = dict(data=[focus_dataset], preset="debug", steps=100, batch_size=32, lr=2e-3, warmup_steps=5,
                  log_every=20, progress=False)  # fmt: skip
    result = train_sft(SFTConfig(out=tmp_path / "aux", aux_weight=5.0, **common))
    aux = [h["aux"] for h in result.history]
    # Better than the best constant guess: the head reads the goal's offset from the inputs.
    offsets = torch.from_numpy(DemoFrames([LeRobotDataset(focus_dataset)], chunk_len=4).focus) / AUX_SCALE_M
    constant = F.smooth_l1_loss(offsets.median(0).values.expand_as(offsets), offsets).item()
    assert aux[-1] < 0.6 * constant, (aux, constant)
    policy = Policy.from_pretrained(result.checkpoint)
    assert policy.config.aux_dim == len(FOCUS_FEATURES)
    # A fine-tune from it may keep the loss (the head is in the checkpoint) or drop it (aux_weight 0).
    again = train_sft(SFTConfig(data=[focus_dataset], out=tmp_path / "ft", init=result.checkpoint, steps=2,
                                aux_weight=1.0, progress=False))  # fmt: skip
    assert "aux" in again.history[-1]
    plain_ft = train_sft(SFTConfig(data=[focus_dataset], out=tmp_path / "ft0", init=result.checkpoint, steps=2,
                                   progress=False))  # fmt: skip
    before, after = policy.model, Policy.from_pretrained(plain_ft.checkpoint).model
    assert torch.equal(before.aux_head.weight, after.aux_head.weight)  # frozen without the loss
    assert not torch.equal(before.head.weight, after.head.weight)
    plain = train_sft(SFTConfig(out=tmp_path / "plain", **{**common, "steps": 2}))
    assert "aux" not in plain.history[-1]
    assert Policy.from_pretrained(plain.checkpoint).config.aux_dim == 0


def test_aux_weight_refuses_data_without_focus_columns_and_a_headless_init(
    reach_dataset: Path, focus_dataset: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"focus\.object_dx"):
        train_sft(SFTConfig(data=[reach_dataset], out=tmp_path / "a", preset="debug", steps=1, aux_weight=1.0,
                            progress=False))  # fmt: skip
    headless = train_sft(
        SFTConfig(data=[focus_dataset], out=tmp_path / "b", preset="debug", steps=1, progress=False)
    )
    with pytest.raises(ValueError, match="aux_dim=0"):
        train_sft(SFTConfig(data=[focus_dataset], out=tmp_path / "c", init=headless.checkpoint, steps=1,
                            aux_weight=1.0, progress=False))  # fmt: skip
    for bad in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="aux_weight"):
            SFTConfig(data=[focus_dataset], out=tmp_path / "d", aux_weight=bad)
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_focus_columns_are_read_in_feature_order(focus_dataset: Path) -> None:
    ds = LeRobotDataset(focus_dataset)
    frames = DemoFrames([ds], chunk_len=4)
    assert frames.focus is not None and frames.focus.shape == (len(ds), len(FOCUS_FEATURES))
    np.testing.assert_array_equal(frames.focus[:, 1], ds.extra["focus.object_dy"])


def test_cli_pretrain_takes_an_aux_weight(
    focus_dataset: Path, reach_dataset: Path, tmp_path: Path, capsys
) -> None:
    from svrl.cli import main as svrl_main

    out = tmp_path / "base"
    argv = ["pretrain", "--data", str(focus_dataset), "--preset", "debug", "--out", str(out), "--steps", "2",
            "--batch-size", "4", "--aux-weight", "0.5"]  # fmt: skip
    assert svrl_main(argv) == 0
    manifest = Policy.from_pretrained(out)
    assert manifest.config.aux_dim == len(FOCUS_FEATURES)
    assert svrl_main([*argv[:-2], "--aux-weight", "-1", "--overwrite"]) == 2
    assert "aux_weight" in capsys.readouterr().err
    argv[2] = str(reach_dataset)  # no focus.* columns: refused before any step, in one line
    assert svrl_main([*argv, "--overwrite"]) == 2
    assert "focus.object_dx" in capsys.readouterr().err
