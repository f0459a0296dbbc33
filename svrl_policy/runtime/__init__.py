"""Policy runtimes behind one interface, and `load_runtime`, which picks one and says why.

    rt = load_runtime("runs/sft", backend="auto")   # logs e.g. "policy runtime: onnxruntime:CPUExecutionProvider"
    out = rt.sample(obs, temperature=0.0)

backend="torch" | "onnx" | "tensorrt" is a demand: if it cannot run, `RuntimeUnavailableError` says why.
backend="auto" tries TensorRT (engine present, tensorrt importable, a GPU), then ONNX Runtime (a fresh
policy.onnx), then torch, and logs each runtime it skipped with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from svrl_policy.runtime.base import PolicyRuntime, RuntimeUnavailableError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "tensorrt")

__all__ = ["BACKENDS", "PolicyRuntime", "RuntimeUnavailableError", "load_runtime"]


def load_runtime(
    ckpt_dir: str | Path,
    backend: str = "auto",
    *,
    providers: Sequence[str] | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> PolicyRuntime:
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {BACKENDS}")
    if backend == "torch":
        return _picked(_torch(ckpt_dir, device), "requested")
    if backend == "onnx":
        return _picked(_onnx(ckpt_dir, providers, threads), "requested")
    if backend == "tensorrt":
        return _picked(_tensorrt(ckpt_dir), "requested")

    for name, make in (
        ("tensorrt", lambda: _tensorrt(ckpt_dir)),
        ("onnx", lambda: _onnx(ckpt_dir, providers, threads)),
    ):
        try:
            return _picked(make(), "auto")
        except RuntimeUnavailableError as exc:
            log.info("policy runtime: skipping %s: %s", name, exc)
    return _picked(_torch(ckpt_dir, device), "auto (fallback)")


def _picked(runtime: PolicyRuntime, how: str) -> PolicyRuntime:
    log.info("policy runtime: %s (%s)", runtime.name, how)
    return runtime


def _torch(ckpt_dir: str | Path, device: str) -> PolicyRuntime:
    from svrl_policy.runtime.torch_runtime import TorchRuntime

    return TorchRuntime.from_checkpoint(ckpt_dir, device=device)


def _onnx(ckpt_dir: str | Path, providers: Sequence[str] | None, threads: int | None) -> PolicyRuntime:
    from svrl_policy.runtime.onnx_runtime import OnnxRuntime

    return OnnxRuntime(ckpt_dir, providers=providers, threads=threads)


def _tensorrt(ckpt_dir: str | Path) -> PolicyRuntime:
    from svrl_policy.runtime.trt_runtime import TensorRTRuntime

    return TensorRTRuntime(ckpt_dir)
