"""ONNX export and the runtimes: parity with torch, provider truth, and loud (never silent) fallbacks."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from svrl_policy.checkpoint import ONNX_FILE
from svrl_policy.export import export_onnx
from svrl_policy.runtime import RuntimeUnavailableError, load_runtime
from svrl_policy.runtime.onnx_runtime import OnnxRuntime, StaleExportError
from tests.policy.conftest import make_policy

pytestmark = pytest.mark.filterwarnings("ignore")  # tracer warnings from torch.onnx


@pytest.fixture(scope="module", params=["debug", "debug-hf"])
def exported(request, tmp_path_factory) -> Path:
    if request.param == "debug-hf":
        pytest.importorskip("transformers")
    torch.set_num_threads(1)
    ckpt = make_policy(request.param).save_pretrained(tmp_path_factory.mktemp("exp") / request.param)
    export_onnx(ckpt)
    return ckpt


def test_onnxruntime_logits_match_torch_and_greedy_actions_are_identical(exported: Path) -> None:
    ort_rt = load_runtime(exported, "onnx", threads=1)
    torch_rt = load_runtime(exported, "torch")
    obs = torch_rt.preprocessor.example_observation(batch=5, seed=3)  # batch 5: not the traced batch size
    inputs = torch_rt.preprocessor(obs)
    ref, got = torch_rt.logits(inputs), ort_rt.logits(inputs)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-4
    a, b = torch_rt.sample(obs, 0.0), ort_rt.sample(obs, 0.0)
    assert torch.equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.actions, b.actions)
    torch.testing.assert_close(a.log_probs, b.log_probs, rtol=0, atol=1e-4)


def test_auto_prefers_a_fresh_export_and_logs_its_choice(exported: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="svrl_policy.runtime"):
        rt = load_runtime(exported, "auto", threads=1)
    assert rt.name == "onnxruntime:CPUExecutionProvider"
    assert "policy runtime: onnxruntime:CPUExecutionProvider (auto)" in caplog.text
    assert "skipping tensorrt" in caplog.text


def test_auto_falls_back_to_torch_without_an_export_and_says_why(tmp_path: Path, caplog) -> None:
    ckpt = make_policy("debug").save_pretrained(tmp_path / "ck")
    with caplog.at_level(logging.INFO, logger="svrl_policy.runtime"):
        rt = load_runtime(ckpt, "auto")
    assert rt.name == "torch:cpu"
    assert "skipping onnx" in caplog.text and "svrl export" in caplog.text


def test_an_explicit_backend_is_never_swapped(tmp_path: Path) -> None:
    ckpt = make_policy("debug").save_pretrained(tmp_path / "ck")
    with pytest.raises(RuntimeUnavailableError, match="svrl export"):
        load_runtime(ckpt, "onnx")


def test_tensorrt_is_optional_and_says_so(exported: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeUnavailableError, match="TensorRT is not installed"):
            load_runtime(exported, "tensorrt")
    else:  # pragma: no cover - only on GPU machines
        pytest.skip("tensorrt installed: covered by GPU tests")


def test_export_of_other_weights_is_refused(exported: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ck"
    make_policy(exported.name, seed=5).save_pretrained(ckpt)
    shutil.copy(exported / ONNX_FILE, ckpt / ONNX_FILE)  # an export of different weights
    with pytest.raises(StaleExportError, match="re-run `svrl export"):
        OnnxRuntime(ckpt)


def test_requested_provider_that_does_not_run_is_an_error(exported: Path, monkeypatch) -> None:
    """onnxruntime-gpu advertises CUDA even where no GPU works; the session then runs on CPU."""
    import onnxruntime as ort

    real_session = ort.InferenceSession

    class GpuWheelWithoutGpu(real_session):
        def __init__(self, path, sess_options=None, providers=None, **kw):
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"], **kw)

    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(ort, "InferenceSession", GpuWheelWithoutGpu)
    with pytest.raises(RuntimeUnavailableError, match="runs on CPUExecutionProvider"):
        OnnxRuntime(exported, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    rt = OnnxRuntime(exported)  # auto: falls back, and the name tells the truth
    assert rt.name == "onnxruntime:CPUExecutionProvider"


def test_unavailable_provider_is_rejected(exported: Path) -> None:
    with pytest.raises(RuntimeUnavailableError, match="not available"):
        OnnxRuntime(exported, providers=["NoSuchExecutionProvider"])


def test_the_dynamo_exporter_gives_the_same_logits(tmp_path: Path) -> None:
    """torch keeps developing the dynamo exporter (the default one is deprecated): it must work too."""
    ckpt = make_policy("debug").save_pretrained(tmp_path / "ck")
    export_onnx(ckpt, exporter="dynamo")  # verify_onnx inside: max |diff| <= 1e-4 and same greedy tokens
    ort_rt = load_runtime(ckpt, "onnx", threads=1)
    obs = ort_rt.preprocessor.example_observation(batch=3)
    assert torch.equal(ort_rt.sample(obs, 0.0).tokens, load_runtime(ckpt, "torch").sample(obs, 0.0).tokens)
