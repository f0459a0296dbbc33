"""OpenVLA-OFT-like VLA built from `transformers` parts, with SimpleVLA-RL's discrete action head.

    vision tower (SigLIP)  -> MLP projector -> patch embeddings (each camera through the same tower)
    proprio                -> MLP projector -> one embedding
    prompt tokens          -> the decoder's own token embeddings
    K*D action placeholders-> zero input embeddings (as OFT), positions from RoPE

Sequence: [patches cam0 .. camC | proprio | prompt (right-padded) | K*D action placeholders].
A 4-D additive attention mask keeps the prefix causal (what a pretrained decoder expects) and makes the
action block bidirectional: every placeholder sees the whole valid prefix and every other placeholder, so
the whole chunk is decoded in ONE forward pass (parallel decoding). The action logits are the decoder's LM
head restricted to the 256 rows [action_token_start, action_token_start + 256) - by default the last 256
vocabulary ids, like SimpleVLA-RL on Llama-2. Only those rows are computed (and exported to ONNX).

Everything is rebuilt from the config dicts, so loading a checkpoint never touches the network. Pretrained
backbones are read once, from a local directory (or the hub if the caller allows it), by
`from_pretrained_backbones`, which also returns a config holding the loaded backbones' full configs.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from svrl_policy.config import PolicyConfig

log = logging.getLogger(__name__)


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise ImportError(
            "the 'small'/'oft' presets need transformers: pip install 'svrl[hf]' (or use the 'tiny' preset)"
        ) from exc
    return transformers


def _vision_config(cfg: PolicyConfig) -> Any:
    tr = _require_transformers()
    kwargs = {
        k: v for k, v in (cfg.vision_config or {}).items() if k not in ("model_type", "transformers_version")
    }
    kwargs.setdefault("vision_use_head", False)  # the pooling head is unused: patches are the tokens
    return tr.SiglipVisionConfig(**kwargs)


def _text_config(cfg: PolicyConfig) -> Any:
    tr = _require_transformers()
    data = dict(cfg.text_config or {})
    model_type = data.pop("model_type")
    data.pop("transformers_version", None)
    return tr.CONFIG_MAPPING[model_type](**data)


class HFVLA(nn.Module):
    def __init__(self, config: PolicyConfig, *, vision: nn.Module | None = None, lm: nn.Module | None = None):
        super().__init__()
        tr = _require_transformers()
        self.config = config
        vcfg, tcfg = _vision_config(config), _text_config(config)
        if vcfg.image_size != config.image_size:
            raise ValueError(
                f"vision_config.image_size={vcfg.image_size} but PolicyConfig.image_size={config.image_size}"
            )
        self.vision = vision if vision is not None else tr.SiglipVisionModel(vcfg)
        self.lm = lm if lm is not None else tr.AutoModelForCausalLM.from_config(tcfg)
        hidden = tcfg.hidden_size
        self.projector = nn.Sequential(
            nn.Linear(vcfg.hidden_size, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.proprio_proj = (
            nn.Sequential(nn.Linear(config.proprio_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
            if config.use_proprio
            else None
        )
        start = config.action_token_start
        self.action_start = tcfg.vocab_size - config.num_bins if start is None else start

    @classmethod
    def from_pretrained_backbones(
        cls, config: PolicyConfig, *, allow_download: bool = False, dtype: torch.dtype | None = None
    ) -> tuple[HFVLA, PolicyConfig]:
        """Load the vision tower and decoder named by `config.{vision,text}_pretrained`.

        Returns the model and a config whose `vision_config`/`text_config` are the loaded backbones' own
        (so the checkpoint rebuilds offline). Projectors start random: SFT trains them.
        """
        tr = _require_transformers()
        if not (config.vision_pretrained and config.text_pretrained):
            raise ValueError(
                "from_pretrained_backbones needs config.vision_pretrained and config.text_pretrained"
            )
        kw: dict[str, Any] = {"local_files_only": not allow_download}
        if dtype is not None:
            kw["dtype"] = dtype
        log.info("loading vision tower %s and decoder %s", config.vision_pretrained, config.text_pretrained)
        vision = tr.SiglipVisionModel.from_pretrained(config.vision_pretrained, **kw)
        lm = tr.AutoModelForCausalLM.from_pretrained(config.text_pretrained, **kw)
        drop = {"transformers_version", "architectures", "torch_dtype", "dtype", "_name_or_path"}
        vdict = {k: v for k, v in vision.config.to_dict().items() if k not in drop}
        tdict = {k: v for k, v in lm.config.to_dict().items() if k not in drop}
        new_cfg = dataclasses.replace(config, vision_config=vdict, text_config=tdict)
        return cls(new_cfg, vision=vision, lm=lm), new_cfg

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: torch.Tensor,  # (B, C, 3, S, S) in [-1, 1] (SigLIP normalisation)
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor,  # (B, L) bool
        proprio: torch.Tensor | None = None,  # (B, P)
    ) -> torch.Tensor:
        B = pixel_values.shape[0]
        embed = self.lm.get_input_embeddings()
        dtype = embed.weight.dtype
        patches = self.vision(
            pixel_values=pixel_values.flatten(0, 1).to(dtype)
        ).last_hidden_state  # (B*C, P, dv)
        patches = self.projector(patches).reshape(B, -1, embed.weight.shape[1])  # (B, C*P, h)
        parts = [patches]
        if self.proprio_proj is not None:
            assert proprio is not None, "this model was configured with proprio_dim > 0: pass proprio"
            parts.append(self.proprio_proj(proprio.to(dtype)).unsqueeze(1))  # (B, 1, h)
        n_prefix_fixed = sum(p.shape[1] for p in parts)
        parts.append(embed(input_ids))  # (B, L, h)
        n_act = self.config.num_action_tokens
        parts.append(patches.new_zeros(B, n_act, patches.shape[-1]))  # OFT: zeroed placeholder embeddings
        x = torch.cat(parts, dim=1)  # (B, N, h)

        valid = torch.cat(
            [
                attention_mask.new_ones(B, n_prefix_fixed),
                attention_mask.bool(),
                attention_mask.new_ones(B, n_act),
            ],
            dim=1,
        ).bool()  # (B, N)
        mask = _prefix_causal_action_bidirectional(valid, n_act, x.dtype)  # (B, 1, N, N)
        position_ids = (valid.long().cumsum(1) - 1).clamp(min=0)  # padding does not shift later positions
        hidden = self.lm.get_decoder()(
            inputs_embeds=x, attention_mask=mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (B, N, h)
        head = self.lm.get_output_embeddings().weight[
            self.action_start : self.action_start + self.config.num_bins
        ]
        return F.linear(hidden[:, -n_act:], head).float()  # (B, K*D, num_bins)


def _prefix_causal_action_bidirectional(valid: torch.Tensor, n_act: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (B, 1, N, N): causal over the prefix, the last n_act positions see everything valid.

    Padding keys are blocked for every query. Additive (0 / most-negative) rather than boolean, so both the
    eager and the SDPA attention implementations of transformers accept it unchanged.
    """
    N = valid.shape[1]
    idx = torch.arange(N, device=valid.device)
    allowed = idx[None, :] <= idx[:, None]  # (N, N) causal
    allowed = allowed | (idx[:, None] >= N - n_act)  # action rows: full rows
    allowed = allowed[None] & valid[:, None, :]  # (B, N, N) block padding keys
    neg = torch.finfo(dtype).min
    zero = torch.zeros((), dtype=dtype, device=valid.device)
    return torch.where(allowed, zero, torch.full((), neg, dtype=dtype, device=valid.device))[:, None]
