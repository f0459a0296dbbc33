"""The data-parallel learner: DDP, or FSDP for presets too large to replicate, under `torchrun`.

Rank 0 owns the rollouts (in process or on Ray actors), evaluation, logs and checkpoints; it
broadcasts each step's batch, and every rank backpropagates its share of every mini-batch with the
weights of the *whole* mini-batch, so that the all-reduced gradient is exactly the single-process
one (tested against it on CPU with gloo). Under FSDP the learner's parameters are sharded, so rank 0
keeps an unsharded copy for rollouts and checkpoints, refreshed by a full-state gather after each update.

    torchrun --nproc-per-node 4 -m svrl.cli train --config paper.yaml --set learner.strategy=fsdp
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)
STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job; the default is the single-process learner."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (pickled; batches of uint8 frames are a few MB)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        holder = [value if self.is_main else None]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return values
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def init_from_env() -> DistContext:
    """Join the process group `torchrun` describes (RANK, WORLD_SIZE, ...); alone, do nothing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank)
    log.info("learner rank %d of %d on %s", ctx.rank, ctx.world_size, ctx.device())
    return ctx


def wrap_learner(policy: nn.Module, ctx: DistContext, strategy: str) -> nn.Module:
    """The module the update calls for logits: the policy itself, its DDP wrapper, or the policy
    sharded in place by FSDP (one unit per transformer layer, found as the items of every ModuleList)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"learner.strategy={strategy!r}: choose one of {STRATEGIES}")
    if not ctx.enabled:
        return policy
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.local_rank] if torch.cuda.is_available() else None
        return DistributedDataParallel(policy, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    for module in list(policy.modules()):
        if isinstance(module, nn.ModuleList):
            for layer in module:
                fully_shard(layer)
    fully_shard(policy)
    return policy


@contextlib.contextmanager
def gradient_sync(learner: nn.Module, enabled: bool) -> Iterator[None]:
    """Accumulate micro-batch gradients locally; communicate only on the mini-batch's last backward."""
    if hasattr(learner, "no_sync") and not enabled:  # DDP
        with learner.no_sync():
            yield
        return
    if hasattr(learner, "set_requires_gradient_sync"):  # FSDP
        learner.set_requires_gradient_sync(enabled)
    yield


def full_state_dict(learner: nn.Module, ctx: DistContext) -> dict[str, torch.Tensor] | None:
    """FSDP: gather the whole model onto rank 0's CPU (collective: every rank calls it); else None."""
    if not _is_sharded(learner, ctx):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(learner, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if ctx.is_main else None


def scalar(value: torch.Tensor) -> float:
    """A float from a tensor that may be an FSDP DTensor (e.g. the clipped gradient norm)."""
    return float(value.full_tensor() if hasattr(value, "full_tensor") else value)


def _is_sharded(learner: nn.Module, ctx: DistContext) -> bool:
    return ctx.enabled and hasattr(learner, "set_requires_gradient_sync")


def optimizer_state(learner: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext) -> dict[str, Any]:
    """The optimizer's state for a checkpoint. FSDP: gathered whole (keyed by parameter name) onto rank
    0's CPU; every rank must call it. Otherwise the local state dict (identical on every DDP rank)."""
    if not _is_sharded(learner, ctx):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(learner, optimizer, options=options)


def load_optimizer_state(
    learner: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], ctx: DistContext
) -> None:
    """Inverse of `optimizer_state`; under FSDP each rank keeps its shard of the full state."""
    if not _is_sharded(learner, ctx):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(learner, optimizer, state, options=StateDictOptions(full_state_dict=True))
