"""Checkpoints: save -> load gives identical outputs; missing/corrupt/mismatched files raise clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from svrl_policy.checkpoint import (
    REQUIRED_FILES,
    CheckpointError,
    CheckpointMismatchError,
    CorruptCheckpointError,
    MissingCheckpointFileError,
)
from svrl_policy.policy import Policy
from tests.policy.conftest import make_policy


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Policy, Path]:
    torch.set_num_threads(1)
    policy = make_policy("debug")
    return policy, policy.save_pretrained(tmp_path_factory.mktemp("ck") / "policy")


def _copy(saved, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(saved[1], dst)
    return dst


@pytest.mark.parametrize(
    "preset", ["debug", pytest.param("debug-hf", marks=pytest.mark.filterwarnings("ignore"))]
)
def test_save_load_gives_identical_outputs(preset: str, tmp_path: Path) -> None:
    if preset == "debug-hf":
        pytest.importorskip("transformers")
    policy = make_policy(preset)
    policy.save_pretrained(tmp_path / "ck", metadata={"note": "test"})
    loaded = Policy.from_pretrained(tmp_path / "ck")
    obs = policy.preprocessor.example_observation(batch=2)
    a, b = policy.sample(obs, 0.0), loaded.sample(obs, 0.0)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.log_probs, b.log_probs)
    assert loaded.codec == policy.codec and loaded.config == policy.config
    names = {p.name for p in (tmp_path / "ck").iterdir()}
    assert set(REQUIRED_FILES) <= names
    assert not any(n.endswith((".pt", ".pth", ".bin", ".pkl")) for n in names)  # no pickles
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    assert manifest["metadata"] == {"note": "test"}


@pytest.mark.parametrize("name", REQUIRED_FILES)
def test_a_missing_file_is_named(saved, tmp_path: Path, name: str) -> None:
    ck = _copy(saved, tmp_path)
    (ck / name).unlink()
    with pytest.raises(MissingCheckpointFileError, match=name.replace(".", r"\.")):
        Policy.from_pretrained(ck)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MissingCheckpointFileError, match="does not exist"):
        Policy.from_pretrained(tmp_path / "nope")


def test_a_flipped_byte_fails_the_checksum(saved, tmp_path: Path) -> None:
    ck = _copy(saved, tmp_path)
    data = bytearray((ck / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (ck / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="sha256"):
        Policy.from_pretrained(ck)


def test_a_truncated_tensor_file_is_reported_as_corrupt(saved, tmp_path: Path) -> None:
    ck = _copy(saved, tmp_path)
    weights = ck / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(CorruptCheckpointError, match="safetensors"):
        Policy.from_pretrained(ck, verify=False)


def test_a_non_finite_weight_is_reported(saved, tmp_path: Path) -> None:
    from safetensors.torch import save_model

    ck = _copy(saved, tmp_path)
    bad = make_policy("debug")
    with torch.no_grad():
        bad.model.head.weight[0, 0] = float("nan")
    save_model(bad.model, str(ck / "model.safetensors"))
    with pytest.raises(CorruptCheckpointError, match="NaN"):
        Policy.from_pretrained(ck, verify=False)


def test_config_and_weights_mismatch_is_explained(saved, tmp_path: Path) -> None:
    ck = _copy(saved, tmp_path)
    config = json.loads((ck / "config.json").read_text())
    config["width"] = 96  # the weights were saved for width 64
    (ck / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match="shape"):
        Policy.from_pretrained(ck, verify=False)


def test_invalid_json_and_codec_mismatch(saved, tmp_path: Path) -> None:
    ck = _copy(saved, tmp_path)
    (ck / "codec.json").write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match="not valid JSON"):
        Policy.from_pretrained(ck, verify=False)
    ck2 = tmp_path / "copy2"
    shutil.copytree(saved[1], ck2)
    codec = json.loads((ck2 / "codec.json").read_text())
    codec["chunk_len"] = 4
    (ck2 / "codec.json").write_text(json.dumps(codec))
    with pytest.raises(CheckpointMismatchError, match="chunk_len 4 vs 8"):
        Policy.from_pretrained(ck2, verify=False)


def test_saving_over_a_checkpoint_replaces_it_and_leaves_no_temporaries(saved, tmp_path: Path) -> None:
    policy, _ = saved
    target = tmp_path / "ck"
    policy.save_pretrained(target)
    (target / "policy.onnx").write_text("stale export")
    other = make_policy("debug", seed=1)
    other.save_pretrained(target)
    assert not (target / "policy.onnx").exists()  # exports of the old weights go with them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    obs = other.preprocessor.example_observation(batch=1)
    assert torch.equal(Policy.from_pretrained(target).sample(obs, 0).tokens, other.sample(obs, 0).tokens)


def test_a_failed_save_keeps_the_old_checkpoint(saved, tmp_path: Path, monkeypatch) -> None:
    policy, _ = saved
    target = tmp_path / "ck"
    policy.save_pretrained(target)
    before = (target / "model.safetensors").read_bytes()

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_model", boom)
    with pytest.raises(OSError, match="disk full"):
        make_policy("debug", seed=3).save_pretrained(target)
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_refuses_to_replace_a_directory_that_is_not_a_checkpoint(saved, tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="does not look like a checkpoint"):
        saved[0].save_pretrained(tmp_path / "home")
    assert (tmp_path / "home" / "notes.txt").exists()


def test_no_pickle_based_loading_in_the_package() -> None:
    """Checkpoints must never execute code on load: no torch.load / pickle anywhere in svrl_policy."""
    root = Path(__file__).resolve().parents[2] / "svrl_policy"
    offenders = [
        p.name
        for p in root.rglob("*.py")
        if any(s in p.read_text() for s in ("torch.load(", "import pickle", "pickle.load"))
    ]
    assert offenders == []
