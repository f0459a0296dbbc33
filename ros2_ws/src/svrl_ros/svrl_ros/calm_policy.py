"""A random but calm policy checkpoint: what graph benches and graph tests drive the arm with.

Random weights make arbitrary but deterministic chunks (what a graph test needs to compare runs); the narrow
codec keeps the tool inside arm_controller's workspace for a whole episode, so the safety filter never has to
refuse a step and an episode runs to its end. No training, no data: it builds in a second anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CALM_ACTION_SCALE = 0.003  # m (and rad) per step: a random policy then wanders a few cm per episode


def calm_policy_checkpoint(
    root: Path, *, seed: int = 0, export: bool = True, name: str = "calm_policy"
) -> Path:
    """A random `debug` policy (64 px) whose action bins span +-CALM_ACTION_SCALE, exported to ONNX."""
    import torch

    from svrl_policy.codec import ActionCodec
    from svrl_policy.config import get_preset
    from svrl_policy.policy import Policy
    from svrl_policy.preprocess import ProprioStats

    torch.manual_seed(seed)
    config = get_preset("debug")
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-CALM_ACTION_SCALE, CALM_ACTION_SCALE, size=(500, config.action_dim))
    actions[:, -1] = rng.choice([-1.0, 1.0], size=500)
    codec = ActionCodec.fit(actions, chunk_len=config.chunk_len, gripper_index=config.gripper_index)
    stats = ProprioStats.fit(rng.normal(size=(100, config.proprio_dim))) if config.use_proprio else None
    ckpt = Policy(config, codec, proprio_stats=stats).eval().save_pretrained(Path(root) / name)
    if export:
        from svrl_policy.export import export_onnx

        export_onnx(ckpt)
    return ckpt
