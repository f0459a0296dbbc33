"""Export a checkpoint's logits forward to ONNX (and from there to a TensorRT engine).

Only the network is exported: ModelInputs -> logits[B, K*D, 256], with a dynamic batch axis. Preprocessing,
sampling and decoding stay in Python (`svrl_policy.preprocess`, `sampling`, `codec`), shared with the torch
runtime, so a runtime swap cannot change how observations are read or tokens are decoded.

The exported file records the sha256 of the weights it came from (ONNX metadata `svrl.weights_sha256`);
runtimes refuse a file whose weights no longer match the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from svrl_policy.checkpoint import ENGINE_FILE, MANIFEST_FILE, ONNX_FILE, WEIGHTS_FILE, check_directory
from svrl_policy.preprocess import INPUT_NAMES

log = logging.getLogger(__name__)

OUTPUT_NAME = "logits"
META_WEIGHTS = "svrl.weights_sha256"
META_INPUTS = "svrl.input_names"
ENGINE_META_FILE = "policy.engine.json"
_EXTERNAL_DATA_BYTES = 1_500_000_000  # protobuf caps a single file at 2 GB: bigger models keep weights aside


class ExportError(RuntimeError):
    """Export failed or the exported graph disagrees with torch."""


class _LogitsGraph(nn.Module):
    """Positional-argument wrapper: the traced signature is exactly the ONNX input list."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, args, strict=True))).float()


def weights_sha256(ckpt_dir: Path) -> str:
    manifest = json.loads((ckpt_dir / MANIFEST_FILE).read_text())
    return manifest["sha256"][WEIGHTS_FILE]


EXPORTERS = ("auto", "torchscript", "dynamo")


def export_onnx(
    ckpt_dir: str | Path,
    *,
    opset: int = 17,
    exporter: str = "auto",
    verify: bool = True,
    atol: float = 1e-4,
) -> Path:
    """Write `<ckpt>/policy.onnx` (atomically) and check it against torch with onnxruntime.

    exporter: "torchscript" (torch's legacy exporter: ~0.3 s for tiny), "dynamo" (torch.export based: ~6 s,
    the one torch keeps developing), or "auto": torchscript, and dynamo if torchscript fails (logged).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter {exporter!r} is not one of {EXPORTERS}")
    import onnx

    from svrl_policy.policy import Policy

    ckpt_dir = check_directory(ckpt_dir)
    policy = Policy.from_pretrained(ckpt_dir)
    example = policy.preprocessor(policy.preprocessor.example_observation(batch=2))
    names = tuple(n for n in INPUT_NAMES if n in example)
    graph = _LogitsGraph(policy.model.eval(), names).eval()
    args = tuple(example[n] for n in names)
    n_bytes = sum(p.numel() * p.element_size() for p in policy.model.parameters())
    external = n_bytes > _EXTERNAL_DATA_BYTES

    out = ckpt_dir / ONNX_FILE
    tmp = ckpt_dir / f".{ONNX_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    try:
        try:
            used = "dynamo" if exporter == "dynamo" else "torchscript"
            _torch_export(graph, args, names, tmp, opset=opset, dynamo=used == "dynamo", external=external)
        except Exception as exc:
            if exporter != "auto":
                raise
            log.warning(
                "torchscript ONNX export failed (%s: %s); retrying with the dynamo exporter",
                type(exc).__name__,
                exc,
            )
            used = "dynamo"
            _torch_export(graph, args, names, tmp, opset=opset, dynamo=True, external=external)
        model = onnx.load(str(tmp), load_external_data=False)
        for key, value in ((META_WEIGHTS, weights_sha256(ckpt_dir)), (META_INPUTS, ",".join(names))):
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))
        os.replace(tmp, out)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ONNX export of {ckpt_dir} failed: {type(exc).__name__}: {exc}") from exc
    log.info("exported %s with the %s exporter in %.1f s (opset %d%s)", out, used, time.perf_counter() - t0, opset,
             ", external data" if external else "")  # fmt: skip
    if verify:
        verify_onnx(ckpt_dir, policy=policy, atol=atol)
    return out


def _torch_export(
    graph: nn.Module,
    args: tuple,
    names: tuple[str, ...],
    path: Path,
    *,
    opset: int,
    dynamo: bool,
    external: bool,
) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(
                graph,
                args,
                str(path),
                input_names=list(names),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(tuple({0: batch} for _ in names),),
                opset_version=max(opset, 18),  # the dynamo exporter emits opset >= 18
                dynamo=True,
                external_data=external,
            )
        else:
            # Known and chosen (fast, verified below); the dynamo path is one flag away.
            for message in (".*legacy TorchScript-based ONNX export", "The feature will be removed"):
                warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
            torch.onnx.export(
                graph,
                args,
                str(path),
                input_names=list(names),
                output_names=[OUTPUT_NAME],
                dynamic_axes={**{n: {0: "batch"} for n in names}, OUTPUT_NAME: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
                external_data=external,
            )


def verify_onnx(
    ckpt_dir: str | Path, *, policy: Any = None, atol: float = 1e-4, batch: int = 3
) -> dict[str, float]:
    """Compare ORT (CPU) logits and greedy tokens with torch on a random observation batch."""
    import onnxruntime as ort

    from svrl_policy.policy import Policy

    ckpt_dir = Path(ckpt_dir)
    policy = policy or Policy.from_pretrained(ckpt_dir)
    inputs = policy.preprocessor(policy.preprocessor.example_observation(batch=batch, seed=1))
    with torch.no_grad():
        ref = policy(inputs).numpy()
    sess = ort.InferenceSession(str(ckpt_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    feed = {i.name: inputs[i.name].numpy() for i in sess.get_inputs()}
    got = sess.run([OUTPUT_NAME], feed)[0]
    err = float(np.abs(got - ref).max())
    same_greedy = bool((got.argmax(-1) == ref.argmax(-1)).all())
    if err > atol or not same_greedy:
        raise ExportError(
            f"{ckpt_dir / ONNX_FILE}: onnxruntime disagrees with torch (max |logit diff| = {err:.2e}, atol "
            f"{atol:.0e}, same greedy tokens: {same_greedy})"
        )
    log.info("verified %s: max |logit diff| %.1e, greedy tokens identical", ckpt_dir / ONNX_FILE, err)
    return {"max_abs_logit_diff": err}


def export_tensorrt(
    ckpt_dir: str | Path,
    *,
    fp16: bool = False,
    max_batch: int = 16,
    opt_batch: int = 1,
    workspace_gb: float = 4.0,
) -> Path:
    """Build `<ckpt>/policy.engine` from policy.onnx (exported first if missing or stale).

    Needs the optional `tensorrt` package and an NVIDIA GPU; the engine is specific to the GPU model and
    TensorRT version it was built with (recorded in policy.engine.json).
    """
    from svrl_policy.runtime.trt_runtime import import_tensorrt

    trt = import_tensorrt()
    ckpt_dir = check_directory(ckpt_dir)
    onnx_path = ckpt_dir / ONNX_FILE
    if not onnx_path.is_file() or _onnx_weights_sha(onnx_path) != weights_sha256(ckpt_dir):
        export_onnx(ckpt_dir)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (1, *rest), (opt_batch, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT engine build failed (see the TensorRT log above)")
    out = ckpt_dir / ENGINE_FILE
    tmp = ckpt_dir / f".{ENGINE_FILE}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, out)
    meta = {
        "weights_sha256": weights_sha256(ckpt_dir),
        "tensorrt_version": trt.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "fp16": fp16,
        "max_batch": max_batch,
    }
    (ckpt_dir / ENGINE_META_FILE).write_text(json.dumps(meta, indent=2))
    log.info("built %s in %.0f s (fp16=%s, batch 1..%d)", out, time.perf_counter() - t0, fp16, max_batch)
    return out


def _onnx_weights_sha(path: Path) -> str | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == META_WEIGHTS), None)
