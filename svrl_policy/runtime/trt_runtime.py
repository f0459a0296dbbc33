"""Native TensorRT engine runtime (optional: `tensorrt` is imported only when this runtime is used).

The engine (`policy.engine`) is built from policy.onnx by `svrl export --format tensorrt` on the machine
that will run it. Inputs and outputs live in CUDA torch tensors, so no extra CUDA binding is needed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import ModuleType

import torch

from svrl_policy.checkpoint import ENGINE_FILE, load_components
from svrl_policy.export import ENGINE_META_FILE, OUTPUT_NAME, weights_sha256
from svrl_policy.preprocess import ModelInputs
from svrl_policy.runtime.base import PolicyRuntime, RuntimeUnavailableError

log = logging.getLogger(__name__)

_TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "INT64": torch.int64,
    "INT32": torch.int32,
    "BOOL": torch.bool,
}


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError as exc:
        raise RuntimeUnavailableError(
            "TensorRT is not installed (it is optional): on a machine with an NVIDIA GPU, install it from "
            "NVIDIA's index (e.g. `pip install tensorrt-cu12`), or use the onnx/torch runtime"
        ) from exc
    return tensorrt


class TensorRTRuntime(PolicyRuntime):
    backend = "tensorrt"

    def __init__(self, ckpt_dir: str | Path, *, verify: bool = True) -> None:
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise RuntimeUnavailableError("TensorRT needs a CUDA GPU, and torch sees none")
        ckpt_dir = Path(ckpt_dir)
        super().__init__(load_components(ckpt_dir, verify=verify))
        path = ckpt_dir / ENGINE_FILE
        if not path.is_file():
            raise RuntimeUnavailableError(
                f"{path} not found: run `svrl export --ckpt {ckpt_dir} --format tensorrt`"
            )
        meta_path = ckpt_dir / ENGINE_META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if meta.get("weights_sha256") != weights_sha256(ckpt_dir):
            raise RuntimeUnavailableError(
                f"{path} was built from other weights; rebuild with `svrl export --format tensorrt`"
            )
        self.max_batch = int(meta.get("max_batch", 1))
        self._trt = trt
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeUnavailableError(
                f"TensorRT could not load {path} (built with TensorRT {meta.get('tensorrt_version')} on "
                f"{meta.get('gpu')}); rebuild it on this machine"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        log.info("TensorRT engine %s on %s", path, torch.cuda.get_device_name(0))

    @property
    def name(self) -> str:
        return "tensorrt"

    def logits(self, inputs: ModelInputs) -> torch.Tensor:
        batch = int(inputs["pixel_values"].shape[0])
        if batch > self.max_batch:
            raise ValueError(
                f"batch {batch} exceeds the engine's max_batch {self.max_batch}; rebuild with --max-batch"
            )
        keep = []
        for name in self.input_names:
            dtype = _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name]
            t = inputs[name].to("cuda", dtype).contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        out = torch.empty(
            tuple(self.context.get_tensor_shape(OUTPUT_NAME)), dtype=torch.float32, device="cuda"
        )
        self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return out
