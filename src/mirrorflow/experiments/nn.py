"""The small vision transformer of the ViT experiment, and its attention diagnostics.

Query and key projections have no bias, so each head's score matrix ``W_Q,h W_K,hᵀ`` is a
factorized ``U Vᵀ`` in the sense of docs/theory.md §6.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mirrorflow._core.validation import MirrorflowError

__all__ = ["Block", "SelfAttention", "TinyViT", "patchify", "score_ratios"]


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(N, C, H, W)`` → ``(N, (H/p)(W/p), C p²)`` non-overlapping patches, row-major."""
    N, C, H, W = images.shape
    if H % patch or W % patch:
        raise MirrorflowError(f"patch size {patch} does not divide the {H}×{W} images; pick a divisor")
    x = images.reshape(N, C, H // patch, patch, W // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(N, (H // patch) * (W // patch), C * patch * patch)


class SelfAttention(torch.nn.Module):
    """Multi-head self-attention with separate ``query``/``key``/``value``/``out`` projections.

    Query and key have no bias, so head ``h``'s scores are ``x W_Q,hᵀ W_K,h xᵀ / sqrt(d_head)``:
    a factorized matrix ``U Vᵀ`` in the sense of theory §6.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.query = torch.nn.Linear(dim, dim, bias=False)
        self.key = torch.nn.Linear(dim, dim, bias=False)
        self.value = torch.nn.Linear(dim, dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x):
        N, T, D = x.shape
        h = self.num_heads

        def split(t):
            return t.view(N, T, h, D // h).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // h), dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(N, T, D))


class Block(torch.nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(),
                                       torch.nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(torch.nn.Module):
    """Patch embedding + class token + learned positions + ``depth`` blocks + linear head."""

    def __init__(self, channels: int, side: int, patch: int, dim: int, depth: int, heads: int,
                 classes: int):
        super().__init__()
        if side % patch:
            raise MirrorflowError(f"patch size {patch} does not divide the image side {side}")
        self.patch = patch
        tokens = (side // patch) ** 2
        self.embed = torch.nn.Linear(channels * patch * patch, dim)
        self.cls = torch.nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = torch.nn.Parameter(0.02 * torch.randn(1, tokens + 1, dim))
        self.blocks = torch.nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, images):
        x = self.embed(patchify(images, self.patch))
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x[:, 0]))


def score_ratios(model: torch.nn.Module) -> list[float]:
    """Per attention layer: mean over heads of ``‖W_Q,h W_K,hᵀ‖_* / ‖W_Q,h W_K,hᵀ‖_F``.

    Uses :func:`mirrorflow.schedules.diagnostics.attention_pairs` (one pair per head).
    """
    from mirrorflow.schedules.diagnostics import attention_pairs, factor_diagnostics

    per_layer: dict[str, list[float]] = {}
    for pair in attention_pairs(model, per_head=True):
        layer = pair.name.rsplit(".head", 1)[0]
        per_layer.setdefault(layer, []).append(factor_diagnostics(pair).nuclear_over_fro)
    return [float(np.mean(v)) for v in per_layer.values()]
