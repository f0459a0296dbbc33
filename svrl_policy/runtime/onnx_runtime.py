"""ONNX Runtime: CPU, CUDA or TensorRT execution providers, chosen by what a session really uses.

`onnxruntime-gpu` lists the CUDA/TensorRT providers and reports a GPU even on machines where none works;
a session created with them then runs on CPU without complaint. So the provider in use is read back from
`session.get_providers()` after the session exists, logged, and - when the caller asked for a specific
provider - a mismatch is an error instead of a silent swap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from svrl_policy.checkpoint import ONNX_FILE, load_components
from svrl_policy.export import META_WEIGHTS, OUTPUT_NAME, weights_sha256
from svrl_policy.preprocess import ModelInputs
from svrl_policy.runtime.base import PolicyRuntime, RuntimeUnavailableError

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class StaleExportError(RuntimeUnavailableError):
    """policy.onnx was exported from other weights than the checkpoint's model.safetensors."""


class OnnxRuntime(PolicyRuntime):
    backend = "onnxruntime"

    def __init__(
        self,
        ckpt_dir: str | Path,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        verify: bool = True,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # the `cpu` or `gpu` extra (never both): `auto` then falls back to torch
            raise RuntimeUnavailableError(
                "onnxruntime is not installed: pip install 'svrl[cpu]' (or 'svrl[gpu]' on a CUDA machine)"
            ) from exc
        ckpt_dir = Path(ckpt_dir)
        super().__init__(load_components(ckpt_dir, verify=verify))
        path = ckpt_dir / ONNX_FILE
        if not path.is_file():
            raise RuntimeUnavailableError(
                f"{path} not found: run `svrl export --ckpt {ckpt_dir} --format onnx` first"
            )
        self._check_fresh(path, ckpt_dir)

        available = ort.get_available_providers()
        explicit = providers is not None
        requested = list(providers) if explicit else [p for p in PREFERRED_PROVIDERS if p in available]
        unknown = [p for p in requested if p not in available]
        if unknown:
            raise RuntimeUnavailableError(
                f"onnxruntime providers {unknown} are not available in this build (available: {available})"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=requested)
        self.providers = self.session.get_providers()
        active = self.providers[0]
        if active != requested[0]:
            msg = (
                f"onnxruntime: asked for {requested[0]} but the session runs on {active} (the GPU wheel "
                "advertises GPU providers even where no GPU works)"
            )
            if explicit:
                raise RuntimeUnavailableError(
                    msg + f"; pass providers=['{active}'] to accept that explicitly"
                )
            log.warning(msg)
        self.input_names = [i.name for i in self.session.get_inputs()]
        log.info("onnxruntime session on %s (providers %s) for %s", active, self.providers, path)

    @property
    def name(self) -> str:
        return f"onnxruntime:{self.providers[0]}"

    @staticmethod
    def _check_fresh(path: Path, ckpt_dir: Path) -> None:
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if meta.get(META_WEIGHTS) != weights_sha256(ckpt_dir):
            raise StaleExportError(
                f"{path} was exported from different weights than {ckpt_dir}/model.safetensors; "
                f"re-run `svrl export --ckpt {ckpt_dir} --format onnx`"
            )

    def logits(self, inputs: ModelInputs) -> torch.Tensor:
        feed = {name: _to_numpy(inputs[name]) for name in self.input_names}
        return torch.from_numpy(self.session.run([OUTPUT_NAME], feed)[0])


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
