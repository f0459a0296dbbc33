"""One interface for every way of running a policy: `logits(inputs)` and `sample(obs, temperature)`.

Subclasses only implement `logits`. Preprocessing (`Preprocessor`), sampling (`svrl_policy.sampling`) and
decoding (`ActionCodec`) are shared here, so the torch, ONNX Runtime and TensorRT runtimes cannot differ in
anything but floating-point rounding inside the network.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import torch

from svrl_policy.checkpoint import PolicyComponents
from svrl_policy.policy import SampleOutput, is_model_inputs
from svrl_policy.preprocess import ModelInputs
from svrl_policy.sampling import sample_tokens


class RuntimeUnavailableError(RuntimeError):
    """The requested runtime cannot run here; the message says why and what to install or run."""


class PolicyRuntime(abc.ABC):
    backend: str = "?"

    def __init__(self, components: PolicyComponents) -> None:
        self.components = components
        self.config = components.config
        self.codec = components.codec
        self.preprocessor = components.preprocessor()

    @property
    def name(self) -> str:
        """What is actually running, e.g. 'torch:cpu' or 'onnxruntime:CPUExecutionProvider'."""
        return self.backend

    @abc.abstractmethod
    def logits(self, inputs: ModelInputs) -> torch.Tensor:
        """ModelInputs -> logits float32[B, K*D, num_bins] (a CPU or CUDA torch tensor)."""

    def sample(
        self, obs: Mapping[str, Any], temperature: float = 0.0, *, generator: torch.Generator | None = None
    ) -> SampleOutput:
        inputs = obs if is_model_inputs(obs) else self.preprocessor(obs)
        logits = self.logits(inputs)
        if generator is not None and generator.device != logits.device:
            logits = logits.to(generator.device)
        tokens, logp = sample_tokens(logits, temperature, generator)
        tokens, logp = tokens.cpu(), logp.cpu()
        return SampleOutput(tokens=tokens, log_probs=logp, actions=self.codec.decode_chunk(tokens.numpy()))

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.name, "preset": self.config.preset, "architecture": self.config.architecture}
