"""`svrl bench policy`: per-chunk latency of every available runtime, with speed-up ratios.

A "chunk" is one full `runtime.sample(obs)` call - preprocessing, the network, sampling and decoding - i.e.
what a robot waits for before it has K new actions. The network-only time (`runtime.logits`) is reported
next to it. Each configuration uses a randomly initialised policy of the preset (latency does not depend on
the weights), exported to ONNX in a temporary directory, unless `--ckpt` names a trained one.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def machine_info() -> dict[str, Any]:
    import onnxruntime as ort

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
    }


def _time(fn: Callable[[], Any], *, warmup: int, min_iters: int, min_seconds: float) -> list[float]:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
        if len(times) >= 10 * min_iters:
            break
    return times


def _random_checkpoint(preset: str, image_size: int, directory: Path) -> Path:
    from svrl_policy.codec import ActionCodec
    from svrl_policy.config import get_preset
    from svrl_policy.export import export_onnx
    from svrl_policy.policy import Policy

    overrides: dict[str, Any] = {"image_size": image_size}
    config = get_preset(preset)
    if config.architecture == "hf_vla":
        vision = dict(config.vision_config or {}, image_size=image_size)
        overrides["vision_config"] = vision
    config = config.replace(**overrides)
    rng = np.random.default_rng(0)
    codec = ActionCodec.fit(
        rng.normal(size=(256, config.action_dim)),
        chunk_len=config.chunk_len,
        gripper_index=config.gripper_index,
    )
    policy = Policy(config, codec)
    ckpt = directory / f"{preset}-{image_size}"
    policy.save_pretrained(ckpt)
    export_onnx(ckpt)
    return ckpt


def _runtimes(ckpt: Path, backends: Sequence[str], threads: int) -> tuple[dict[str, Any], dict[str, str]]:
    from svrl_policy.runtime import RuntimeUnavailableError, load_runtime

    out: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for backend in backends:
        try:
            out[backend] = load_runtime(ckpt, backend, threads=threads)
        except (RuntimeUnavailableError, ImportError) as exc:
            skipped[backend] = str(exc)
            log.info("bench: %s unavailable: %s", backend, exc)
    return out, skipped


def bench_policy(
    *,
    preset: str = "tiny",
    ckpt: str | Path | None = None,
    sizes: Sequence[int] = (128, 224),
    batches: Sequence[int] = (1, 16),
    backends: Sequence[str] = ("torch", "onnx", "tensorrt"),
    threads: int = 1,
    warmup: int = 3,
    min_iters: int = 10,
    min_seconds: float = 1.0,
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="svrl-bench-") as tmp:
        if ckpt is not None:
            from svrl_policy.checkpoint import ONNX_FILE, load_components
            from svrl_policy.export import export_onnx

            ckpt_path = Path(ckpt)
            if not (ckpt_path / ONNX_FILE).exists():
                export_onnx(ckpt_path)
            targets = [(load_components(ckpt_path).config.image_size, ckpt_path)]
        else:
            targets = [(s, _random_checkpoint(preset, s, Path(tmp))) for s in sizes]
        for size, path in targets:
            runtimes, why = _runtimes(path, backends, threads)
            skipped.update(why)
            for batch in batches:
                for backend, rt in runtimes.items():
                    obs = rt.preprocessor.example_observation(batch=batch)
                    inputs = rt.preprocessor(obs)
                    kw = {
                        "warmup": warmup,
                        "min_iters": max(3, min_iters // batch),
                        "min_seconds": min_seconds,
                    }
                    chunk = _time(lambda rt=rt, obs=obs: rt.sample(obs, 1.0), **kw)
                    net = _time(lambda rt=rt, inputs=inputs: rt.logits(inputs), **kw)
                    med = statistics.median(chunk)
                    results.append(
                        {
                            "image_size": size,
                            "batch": batch,
                            "backend": backend,
                            "runtime": rt.name,
                            "chunk_ms_median": round(med, 3),
                            "chunk_ms_p90": round(float(np.percentile(chunk, 90)), 3),
                            "network_ms_median": round(statistics.median(net), 3),
                            "per_obs_ms": round(med / batch, 3),
                            "iters": len(chunk),
                        }
                    )
                    log.info("bench %s %dpx b%d: %.1f ms/chunk", rt.name, size, batch, med)
    return {
        "machine": machine_info(),
        "threads": threads,
        "preset": preset if ckpt is None else str(ckpt),
        "results": results,
        "speedups": _speedups(results),
        "skipped": skipped,
    }


def _speedups(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_key = {(r["image_size"], r["batch"], r["backend"]): r for r in results}
    out = []
    for (size, batch, backend), r in sorted(by_key.items()):
        if backend != "torch":
            continue
        row: dict[str, Any] = {"image_size": size, "batch": batch}
        for other in ("onnx", "tensorrt"):
            o = by_key.get((size, batch, other))
            if o is not None:
                row[f"{other}_vs_torch_chunk"] = round(r["chunk_ms_median"] / o["chunk_ms_median"], 3)
                row[f"{other}_vs_torch_network"] = round(r["network_ms_median"] / o["network_ms_median"], 3)
        out.append(row)
    return out


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"machine: {report['machine']['cpu']} ({report['machine']['nproc']} cpus), {report['threads']} thread(s)",
        f"{'size':>5} {'batch':>5}  {'runtime':<36} {'chunk ms':>9} {'p90':>8} {'network':>8} {'per obs':>8}",
    ]
    for r in report["results"]:
        lines.append(
            f"{r['image_size']:>5} {r['batch']:>5}  {r['runtime']:<36} {r['chunk_ms_median']:>9.1f} "
            f"{r['chunk_ms_p90']:>8.1f} {r['network_ms_median']:>8.1f} {r['per_obs_ms']:>8.1f}"
        )
    for s in report["speedups"]:
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in s.items() if k.endswith(("_chunk", "_network")))
        lines.append(f"speed-up at {s['image_size']}px batch {s['batch']}: {ratios or 'n/a'}")
    for backend, why in report["skipped"].items():
        lines.append(f"skipped {backend}: {why}")
    return "\n".join(lines)
