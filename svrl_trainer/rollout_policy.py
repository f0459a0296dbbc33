"""What computes the action chunks of a rollout: logits from a runtime (torch eager or ONNX Runtime),
tokens drawn from noise that belongs to the wave, not to a policy call.

Why the noise is drawn here and not by `torch.multinomial`: a pipelined rollout (see `rollout.py`) runs
the policy on half of the envs at a time, and `multinomial` consumes its generator per call, so the two
halves would draw different numbers than one full-batch call. `torch.multinomial(p, 1)` is, in torch's own
code, `argmax(p / q)` with `q ~ Exp(1)` drawn for the whole [rows, bins] tensor; `ChunkNoise` draws that
same `q` once per chunk for every env of the wave, and each policy call takes its rows. A full-batch call
therefore samples exactly what `Policy.sample` did (tests check it), and a half-batch call samples exactly
what the full batch would have, provided the network's logits of a row do not depend on the other rows in
its batch (true for torch and ONNX Runtime on CPU, checked by tests; not promised by GPU kernels).

Why the learner recomputes old log-probs when the runtime is ONNX: ONNX Runtime's logits differ from
torch's in the last bits (~1e-6), so its log-probs are not the learner's. The PPO ratio at the first
mini-batch is exactly 1 only if `old_log_probs` are the learner's own torch log-probs of the sampled tokens
under the rollout weights: `recompute_old_log_probs` does one no-grad torch forward over the kept batch.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from svrl_policy.sampling import tempered_log_softmax, token_log_probs

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx")


@runtime_checkable
class RolloutPolicy(Protocol):
    """The two things a rollout needs from a policy: logits for a batch of observations, and decoding."""

    name: str

    def chunk_logits(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """Raw observations -> float32[B, K*D, num_bins] logits on the CPU."""
        ...

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """tokens int64[B, K*D] -> actions float32[B, K, D] in robot units."""
        ...


class TorchRolloutPolicy:
    """The learner's own `Policy` in torch eager: the reference runtime."""

    name = "torch"

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    @torch.no_grad()
    def chunk_logits(self, obs: Mapping[str, Any]) -> torch.Tensor:
        model = self.policy.model
        was_training = model.training
        model.eval()  # as Policy.sample: rollouts never see dropout, whatever mode the learner left
        try:
            return self.policy.forward(self.policy.preprocess(obs)).cpu()
        finally:
            model.train(was_training)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return self.policy.codec.decode_chunk(tokens)

    def refresh(self, policy: Any) -> None:
        """Take the learner's weights (a no-op when this wraps the learner's own object)."""
        if policy is not self.policy:
            self.policy.model.load_state_dict(policy.model.state_dict())

    def close(self) -> None:
        """Nothing to release."""


class OnnxRolloutPolicy:
    """ONNX Runtime on an export of the learner's current weights, re-exported by every `refresh`.

    Files live in a private temporary folder of this object (removed by `close`): each refresh writes a
    new versioned checkpoint (`save_pretrained`, atomic) and its `policy.onnx` (`export_onnx`, atomic),
    opens a session on it, and only then deletes the previous version, so a failed export leaves the
    previous session in use and says why. The export is checked against torch only the first time: later
    exports trace the same graph with other weights.
    """

    name = "onnx"

    def __init__(self, policy: Any, *, threads: int | None = 1, workdir: str | Path | None = None) -> None:
        self.threads = threads
        self._root = Path(tempfile.mkdtemp(prefix="svrl-onnx-rollout-", dir=workdir))
        self._version = 0
        self._current: Path | None = None
        self._runtime: Any = None
        self.last_refresh_s = 0.0
        try:
            self.refresh(policy)
        except BaseException:
            self.close()
            raise

    def refresh(self, policy: Any) -> None:
        """Export `policy`'s weights and switch the session to them."""
        from svrl_policy.export import export_onnx
        from svrl_policy.runtime.onnx_runtime import OnnxRuntime

        started = time.perf_counter()
        self._version += 1
        target = self._root / f"v{self._version:06d}"
        policy.save_pretrained(target)
        export_onnx(target, verify=self._version == 1)
        runtime = OnnxRuntime(target, providers=["CPUExecutionProvider"], threads=self.threads)
        previous, self._current, self._runtime = self._current, target, runtime
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        self.last_refresh_s = time.perf_counter() - started
        log.debug("ONNX rollout policy v%d ready in %.2f s", self._version, self.last_refresh_s)

    def chunk_logits(self, obs: Mapping[str, Any]) -> torch.Tensor:
        return self._runtime.logits(self._runtime.preprocessor(obs))

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return self._runtime.codec.decode_chunk(tokens)

    def close(self) -> None:
        self._runtime = None
        shutil.rmtree(self._root, ignore_errors=True)


def as_rollout_policy(policy: Any) -> RolloutPolicy:
    """A `RolloutPolicy` as is; a `svrl_policy.Policy` (anything with forward/preprocess/codec) in torch."""
    if isinstance(policy, RolloutPolicy):
        return policy
    if all(hasattr(policy, a) for a in ("forward", "preprocess", "codec", "model")):
        return TorchRolloutPolicy(policy)
    raise TypeError(f"{type(policy).__name__} is neither a RolloutPolicy nor an svrl Policy")


def make_rollout_policy(runtime: str, policy: Any, *, threads: int | None = 1) -> Any:
    """`runtime`: 'torch' (the learner's object itself) or 'onnx' (an ONNX Runtime copy, see above)."""
    if runtime == "torch":
        return TorchRolloutPolicy(policy)
    if runtime == "onnx":
        return OnnxRolloutPolicy(policy, threads=threads)
    raise ValueError(f"rollout.runtime={runtime!r}: choose one of {RUNTIMES}")


class ChunkNoise:
    """Exp(1) noise for every env of a wave, one draw per chunk, shared by the policy calls of that chunk.

    Draws happen in chunk order, once per chunk in which any env is still running: the same draws whether
    the chunk's policy runs as one call or as two halves. Greedy decoding (T = 0) draws nothing, as before.
    """

    def __init__(self, generator: torch.Generator | None, num_envs: int) -> None:
        self.generator = generator
        self.num_envs = num_envs
        self._chunk = -1
        self._noise: torch.Tensor | None = None

    def rows(self, chunk: int, rows: np.ndarray, tokens: int, bins: int) -> torch.Tensor:
        """float32[len(rows), tokens, bins]: chunk `chunk`'s noise for env indices `rows`."""
        if chunk < self._chunk:
            raise RuntimeError(
                f"noise for chunk {chunk} asked after chunk {self._chunk}: draws must go forward"
            )
        if chunk > self._chunk:
            flat = torch.empty(self.num_envs * tokens, bins).exponential_(1, generator=self.generator)
            self._noise, self._chunk = flat.view(self.num_envs, tokens, bins), chunk
        assert self._noise is not None
        return self._noise[torch.as_tensor(rows, dtype=torch.long)]


def sample_from_logits(
    logits: torch.Tensor, temperature: float, noise: ChunkNoise, chunk: int, rows: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits[B, T, V] of env rows `rows` -> (tokens int64[B, T], log-probs float32[B, T]).

    `argmax(p / q)` is `torch.multinomial(p, 1)`'s own computation; T = 0 is argmax of the logits.
    """
    if not torch.isfinite(logits).all():
        raise FloatingPointError("the rollout policy produced non-finite logits")
    logp = tempered_log_softmax(logits, temperature)
    if temperature == 0:
        tokens = logp.argmax(dim=-1)
    else:
        _, t, v = logp.shape
        tokens = (logp.exp() / noise.rows(chunk, rows, t, v)).argmax(dim=-1)
    return tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@dataclasses.dataclass(frozen=True)
class RecomputeStats:
    seconds: float
    chunk_steps: int
    max_abs_diff: float
    """largest |rollout-runtime log-prob - torch log-prob| over executed chunk-steps"""


@torch.no_grad()
def recompute_old_log_probs(
    policy: Any, batch: Any, temperature: float, micro_batch_steps: int = 64
) -> tuple[Any, RecomputeStats]:
    """The batch with `old_log_probs` replaced by the learner's torch log-probs of its tokens.

    One eval-mode forward over every computed chunk of every trajectory, in the same way `grpo_update`
    computes new log-probs (`policy.forward(policy.preprocess(obs))`, `token_log_probs`), so the ratio of
    the first mini-batch is exactly 1 wherever the forward is row-independent (CPU).
    """
    started = time.perf_counter()
    pairs = [(i, c) for i in range(batch.size) for c in range(int(batch.num_chunks[i]))]
    old = batch.old_log_probs.copy()
    was_training = policy.model.training
    policy.model.eval()
    try:
        for k in range(0, len(pairs), max(1, micro_batch_steps)):
            rows = np.array([i for i, _ in pairs[k : k + micro_batch_steps]])
            cols = np.array([c for _, c in pairs[k : k + micro_batch_steps]])
            obs = {
                "images": {cam: frames[rows, cols] for cam, frames in batch.images.items()},
                "proprio": batch.proprio[rows, cols],
                "instruction": [batch.instructions[r] for r in rows],
            }
            logits = policy.forward(policy.preprocess(obs))
            tokens = torch.from_numpy(batch.tokens[rows, cols]).to(logits.device)
            old[rows, cols] = token_log_probs(logits, tokens, temperature).cpu().numpy()
    finally:
        policy.model.train(was_training)
    diff = float(np.abs(old - batch.old_log_probs).max()) if pairs else 0.0
    stats = RecomputeStats(time.perf_counter() - started, len(pairs), diff)
    return dataclasses.replace(batch, old_log_probs=old), stats
