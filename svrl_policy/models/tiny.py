"""The tiny VLA: ~1-5 M parameters that train on a 2-core CPU in minutes.

Token sequence (all tokens attend to all others: the action block is bidirectional, as in OpenVLA-OFT's
parallel decoding, and so is everything else since nothing here is generated autoregressively):

    [cam0 patches | cam1 patches | cam keypoints | text | proprio | K*D action queries]
      g*g each      (shared conv stem  M per camera  L    1        learned, one per (k, d))
                     + camera embedding)

Keypoints (optional, `keypoints` = M > 0): a spatial softmax over the stem's first, stride-4 feature map gives
M expected (x, y) image positions per camera, each embedded as one token (`keypoint_refine` > 0: over that map
refined by a few residual dilated convs, KeypointRefiner). Patch tokens locate an object only
to within a patch (16 px, ~8 cm of table at 96 px); the soft-argmax reads position at sub-pixel precision, the
reason robomimic and diffusion-policy image encoders end in one. Grasping needs ~1 cm. `text_keypoints` = K > 0
adds K more per camera whose filters are read from the prompt (TextKeypoints), placed after the M.

One forward pass gives 256 logits for each of the K*D action queries.

Auxiliary head (optional, `aux_dim` > 0): one more query token after the action queries, read by a linear
head into `aux_dim` numbers that the SFT loss regresses onto privileged simulator state (where the named
object is). It reads every layer the action queries read, so what it must learn (localisation) is learned by
the trunk the actions use; no other token attends to it, so the action logits are identical with or without
it, and acting never computes it (`with_aux=False`, the default and the export path). The same call also
returns the text keypoints, which `--keypoint-weight` teaches to sit on the named object and target.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from svrl_policy.config import WORD_BUCKETS, PolicyConfig
from svrl_policy.tokenizer import ByteTokenizer, WordTokenizer


class AuxiliaryOutputs(NamedTuple):
    """What a training-time forward (`with_aux=True`) returns besides acting's logits."""

    logits: torch.Tensor  # (B, K*D, num_bins), the same as a plain forward's
    focus: torch.Tensor | None  # (B, aux_dim) from the auxiliary head; None without one
    text_keypoints: torch.Tensor | None  # (B, C, K, 2) in [-1, 1] (x right, y down); None without them


class ConvStem(nn.Module):
    """Image -> (S/p)^2 patch features: a 4x4/4 conv, then 2x2/2 convs until the stride is `patch`.

    Cheaper and better at small objects than one big 16x16 patchify conv at this width.
    """

    def __init__(self, width: int, patch: int) -> None:
        super().__init__()
        n_half = int(math.log2(patch // 4))  # extra 2x2 stages
        chans = [max(16, width >> (n_half - i)) for i in range(n_half + 1)]  # ends at width
        layers: list[nn.Module] = [nn.Conv2d(3, chans[0], kernel_size=4, stride=4), nn.GELU()]
        for c_in, c_out in itertools.pairwise(chans):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=2, stride=2), nn.GELU()]
        layers[-1] = nn.Identity()  # no activation on the final features
        self.net = nn.Sequential(*layers)

        self.first_channels = chans[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(final features (N, width, S/p, S/p), stride-4 features (N, c0, S/4, S/4))."""
        fine = x
        for i, layer in enumerate(self.net):  # one pass; the first conv + GELU give the stride-4 map
            x = layer(x)
            if i == 1:
                fine = x
        return x, fine


class KeypointRefiner(nn.Module):
    """Residual dilated 3x3 conv blocks (dilation 1, 2, 4, ...) over the stride-4 map the keypoints read.

    Each block's last conv starts at zero, so a refiner added to a trained policy leaves its outputs
    unchanged until training moves it (a base can grow one and keep what it learned).
    """

    def __init__(self, channels: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.GroupNorm(math.gcd(8, channels), channels),
                nn.Conv2d(channels, channels, kernel_size=3, padding=2**i, dilation=2**i),
                nn.GELU(),
                nn.Conv2d(channels, channels, kernel_size=1),
            )
            for i in range(blocks)
        )

    def zero_last(self) -> None:
        for block in self.blocks:
            nn.init.zeros_(block[-1].weight)
            nn.init.zeros_(block[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


def pixel_grid(size: int) -> torch.Tensor:
    """(size*size, 2) pixel-centre (x, y) in [-1, 1], row-major: the soft-argmax's coordinates."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)


class SpatialSoftmax(nn.Module):
    """Feature map -> `num` keypoints (x, y) in [-1, 1]: a 1x1 conv, a softmax over positions, expectations."""

    def __init__(self, channels: int, num: int, size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, num, kernel_size=1)
        self.register_buffer("grid", pixel_grid(size), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        attn = self.proj(features).flatten(2).softmax(dim=-1)  # (N, num, H*W)
        return attn @ self.grid  # (N, num, 2)


class TextKeypoints(nn.Module):
    """A spatial softmax whose filters the prompt chooses: `num` keypoints (x, y) in [-1, 1] per image.

    Each keypoint pools the prompt's word embeddings with its own learned query (one can read the object's
    words, another the target's) into a filter over the stride-4 features. A fixed filter (SpatialSoftmax)
    finds the mean position of everything that matches it: between the red cube and the red can, or between
    two identical cubes, which is nowhere a gripper should go.

    The match is a cosine similarity times a learned sharpness (initially 10), not a plain dot product: with
    the small initial weights every layer here starts from, a dot product gives each keypoint a nearly
    uniform softmax over all positions, whose gradient is vanishingly small, and the keypoints barely moved
    (pulled onto the focus pixels, stem and keypoints alone, 400 steps: loss 1.72 against 0.45 with cosine).
    """

    def __init__(self, width: int, channels: int, num: int, size: int) -> None:
        super().__init__()
        self.word_queries = nn.Parameter(torch.zeros(num, width))
        self.to_filter = nn.Linear(width, channels)
        self.keys = nn.Conv2d(channels, channels, kernel_size=1)
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(10.0)))
        self.register_buffer("grid", pixel_grid(size), persistent=False)

    def forward(self, features: torch.Tensor, words: torch.Tensor, word_pad: torch.Tensor) -> torch.Tensor:
        """features (B*C, c, H, W), words (B, L, d), word_pad (B, L) additive (0 word, -1e4 padding)
        -> (B, C, num, 2)."""
        B = words.shape[0]
        scores = (words @ self.word_queries.t()).transpose(1, 2) + word_pad[:, None, :]  # (B, num, L)
        filters = F.normalize(self.to_filter(scores.softmax(dim=-1) @ words), dim=-1)  # (B, num, c)
        keys = F.normalize(self.keys(features), dim=1).flatten(2)  # (B*C, c, H*W)
        keys = keys.reshape(B, -1, keys.shape[1], keys.shape[2])  # (B, C, c, H*W)
        attn = (self.log_sharpness.exp() * (filters.unsqueeze(1) @ keys)).softmax(dim=-1)  # (B, C, num, H*W)
        return attn @ self.grid  # (B, C, num, 2)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, B: int) -> torch.Tensor:
        # x: (B*N, C) - tokens flattened so every Linear is one GEMM with fused bias (also in ONNX).
        # mask: (B, 1, 1, N) additive (0 attend, -1e4 padding).
        C = x.shape[-1]
        hd = C // self.heads
        qkv = self.qkv(x).view(B, -1, 3, self.heads, hd).permute(2, 0, 3, 1, 4)  # (3, B, h, N, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if torch.onnx.is_in_onnx_export():
            # Same maths spelled out: ONNX Runtime runs this faster than the exported SDPA graph.
            att = torch.matmul(q * hd**-0.5, k.transpose(-2, -1)) + mask  # (B, h, N, N)
            y = torch.matmul(att.softmax(dim=-1), v)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )  # (B, h, N, hd)
        return self.proj(y.transpose(1, 2).reshape(-1, C))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, B: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask, B)
        return x + self.mlp(self.norm2(x))


class TinyVLA(nn.Module):
    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        d = config.width
        n_cam, n_patch = len(config.cameras), config.num_patches_per_camera
        self.stem = ConvStem(d, config.patch_size)
        self.patch_pos = nn.Parameter(torch.zeros(n_patch, d))
        self.camera_emb = nn.Parameter(torch.zeros(n_cam, d))
        tokenizer = (
            ByteTokenizer if config.tokenizer == "byte" else WordTokenizer(config.max_text_len, WORD_BUCKETS)
        )
        self.text_emb = nn.Embedding(tokenizer.vocab_size, d)
        self.keypoint_refiner = (
            KeypointRefiner(self.stem.first_channels, config.keypoint_refine)
            if config.keypoint_refine
            else None
        )
        self.keypoints = (
            SpatialSoftmax(self.stem.first_channels, config.keypoints, config.image_size // 4)
            if config.keypoints
            else None
        )
        self.keypoint_proj = nn.Linear(2, d) if config.keypoints else None
        self.keypoint_emb = (
            nn.Parameter(torch.zeros(n_cam * config.keypoints, d)) if config.keypoints else None
        )
        n_tk = config.text_keypoints
        self.text_keypoints = (
            TextKeypoints(d, self.stem.first_channels, n_tk, config.image_size // 4) if n_tk else None
        )
        self.text_keypoint_proj = nn.Linear(2, d) if n_tk else None
        self.text_keypoint_emb = nn.Parameter(torch.zeros(n_cam * n_tk, d)) if n_tk else None
        self.text_pos = nn.Parameter(torch.zeros(config.max_text_len, d))
        self.proprio_proj = nn.Linear(config.proprio_dim, d) if config.use_proprio else None
        self.action_queries = nn.Parameter(torch.zeros(config.num_action_tokens, d))
        self.blocks = nn.ModuleList(
            Block(d, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.num_bins)
        self.aux_query = nn.Parameter(torch.zeros(1, d)) if config.aux_dim else None
        self.aux_head = nn.Linear(d, config.aux_dim) if config.aux_dim else None
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        learned = (self.patch_pos, self.camera_emb, self.text_pos, self.action_queries, self.keypoint_emb)
        word_queries = self.text_keypoints.word_queries if self.text_keypoints is not None else None
        for p in (*learned, self.aux_query, self.text_keypoint_emb, word_queries):
            if p is not None:
                nn.init.normal_(p, std=0.02)
        if self.keypoint_refiner is not None:
            self.keypoint_refiner.zero_last()

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        """The aux query and head: trained by `aux_weight` pretraining only (Policy.freeze_auxiliary_head)."""
        if self.aux_query is None or self.aux_head is None:
            return []
        return [self.aux_query, *self.aux_head.parameters()]

    def forward(
        self,
        pixel_values: torch.Tensor,  # (B, C, 3, S, S) in [-1, 1]
        input_ids: torch.Tensor,  # (B, L) int64
        attention_mask: torch.Tensor,  # (B, L) bool, False = padding
        proprio: torch.Tensor | None = None,  # (B, P) normalised
        with_aux: bool = False,
    ) -> torch.Tensor | AuxiliaryOutputs:
        """Action logits (B, K*D, num_bins); with `with_aux`, AuxiliaryOutputs (logits, the auxiliary head's
        output, the text keypoints)."""
        B, C = pixel_values.shape[:2]
        L = input_ids.shape[1]
        d = self.config.width
        if not torch.onnx.is_in_onnx_export() and self.text_pos.shape[0] < L:
            raise ValueError(f"prompt of {L} tokens > max_text_len {self.text_pos.shape[0]}")

        txt = self.text_emb(input_ids) + self.text_pos[:L]  # (B, L, d)
        # Additive key-padding for the prompt: 0 attend, -1e4 not (finite, so a fully padded row could never
        # produce NaN; exp(-1e4) is exactly 0 in float32). Used by the text keypoints and every block.
        pad = (~attention_mask.bool()).to(txt.dtype) * -1e4  # (B, L)
        img, fine = self.stem(pixel_values.flatten(0, 1))  # (B*C, d, g, g), (B*C, c0, S/4, S/4)
        if self.keypoint_refiner is not None:
            fine = self.keypoint_refiner(fine)
        img = img.flatten(2).transpose(1, 2) + self.patch_pos  # (B*C, P, d)
        img = (img.reshape(B, C, -1, d) + self.camera_emb[:, None, :]).reshape(B, -1, d)  # (B, C*P, d)
        if self.keypoints is not None:
            points = self.keypoints(fine).reshape(B, -1, 2)  # (B, C*M, 2)
            img = torch.cat([img, self.keypoint_proj(points) + self.keypoint_emb], dim=1)
        named = None
        if self.text_keypoints is not None:
            named = self.text_keypoints(fine, txt, pad)  # (B, C, K, 2)
            flat = named.reshape(B, -1, 2)
            img = torch.cat([img, self.text_keypoint_proj(flat) + self.text_keypoint_emb], dim=1)
        parts = [img, txt]
        if self.proprio_proj is not None:
            assert proprio is not None, "this model was configured with proprio_dim > 0: pass proprio"
            parts.append(self.proprio_proj(proprio).unsqueeze(1))  # (B, 1, d)
        parts.append(self.action_queries.expand(B, -1, -1))  # (B, K*D, d)
        with_query = with_aux and self.aux_query is not None
        if with_aux and not with_query and named is None:
            raise ValueError("this model has no auxiliary head (aux_dim = 0) and no text keypoints")
        if with_query:
            parts.append(self.aux_query.expand(B, -1, -1))  # (B, 1, d)
        x = torch.cat(parts, dim=1)  # (B, N, d)

        # Key-padding mask (B, 1, 1, N): only text positions can be padding (`pad` above).
        N = x.shape[1]
        n_before, n_after = img.shape[1], N - img.shape[1] - L
        zeros = x.new_zeros
        mask = torch.cat([zeros(B, n_before), pad, zeros(B, n_after)], dim=1)[:, None, None, :]
        if with_query:  # no token attends to the aux query: the action logits are the same with or without it
            mask = mask.clone()
            mask[..., -1] = -1e4

        x = x.reshape(B * N, d)
        for block in self.blocks:
            x = block(x, mask, B)
        x = self.norm(x.view(B, N, d))
        n_act = self.config.num_action_tokens
        if with_query:
            assert self.aux_head is not None
            return AuxiliaryOutputs(self.head(x[:, -1 - n_act : -1]), self.aux_head(x[:, -1]), named)
        logits = self.head(x[:, -n_act:])  # (B, K*D, num_bins)
        return AuxiliaryOutputs(logits, None, named) if with_aux else logits
