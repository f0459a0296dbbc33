"""`svrl` subcommands owned by svrl_policy (registered from svrl.cli).

- `svrl export --ckpt C --format onnx|tensorrt`
- `svrl bench policy [--json]`
Heavy modules are imported inside the handlers: `svrl --help` must answer instantly.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def register(sub: argparse._SubParsersAction) -> None:
    """Add top-level subcommands. Import heavy modules inside the handlers, never here."""
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX / TensorRT",
        description="Write <ckpt>/policy.onnx (verified against torch with onnxruntime) or build "
        "<ckpt>/policy.engine with TensorRT (optional, needs an NVIDIA GPU).",
    )
    p.add_argument("--ckpt", required=True, help="checkpoint directory")
    p.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (onnx format)")
    p.add_argument(
        "--exporter",
        choices=("auto", "torchscript", "dynamo"),
        default="auto",
        help="torch ONNX exporter (auto: torchscript, falling back to dynamo)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-torch check")
    p.add_argument("--fp16", action="store_true", help="TensorRT: allow fp16 kernels")
    p.add_argument("--max-batch", type=int, default=16, help="TensorRT: largest batch the engine accepts")
    p.set_defaults(handler=_export)


def register_bench(bench_sub: argparse._SubParsersAction) -> None:
    """Add `svrl bench <target>` subcommands."""
    p = bench_sub.add_parser(
        "policy",
        help="per-chunk latency of each policy runtime",
        description="Latency of one action chunk (preprocess + network + sampling + decoding) for torch eager, "
        "ONNX Runtime and (when installed) TensorRT, with speed-up ratios.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    p.add_argument(
        "--preset", default="tiny", help="policy preset (random weights; latency does not depend on them)"
    )
    p.add_argument("--ckpt", default=None, help="benchmark this checkpoint instead of a random preset")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 224], help="image sizes (preset mode)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--backends", nargs="+", default=["torch", "onnx", "tensorrt"])
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for torch and onnxruntime")
    p.add_argument("--min-seconds", type=float, default=1.0, help="time each case for at least this long")
    p.set_defaults(handler=_bench)


def _export(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from svrl_policy.checkpoint import CheckpointError
    from svrl_policy.export import ExportError, export_onnx, export_tensorrt
    from svrl_policy.runtime import RuntimeUnavailableError

    try:
        if args.format == "onnx":
            path = export_onnx(args.ckpt, opset=args.opset, exporter=args.exporter, verify=not args.no_verify)
        else:
            path = export_tensorrt(args.ckpt, fp16=args.fp16, max_batch=args.max_batch)
    except (CheckpointError, ExportError, RuntimeUnavailableError) as exc:
        print(f"svrl export: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def _bench(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from svrl_policy.bench import bench_policy, format_table

    report = bench_policy(
        preset=args.preset,
        ckpt=args.ckpt,
        sizes=args.sizes,
        batches=args.batches,
        backends=args.backends,
        threads=args.threads,
        min_seconds=args.min_seconds,
    )
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0
