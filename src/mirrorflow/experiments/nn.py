"""The small vision transformer of the ViT experiment, and its attention diagnostics.

Query and key projections have no bias, so each head's score matrix ``W_Q,h W_K,hᵀ`` is a
factorized ``U Vᵀ`` in the sense of docs/theory.md §6.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mirrorflow._core.validation import MirrorflowError
from mirrorflow.experiments._fused import fused_attention, layer_norm

__all__ = ["Block", "SelfAttention", "StackedTinyViT", "TinyViT", "patchify", "score_ratios"]


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


class StackedTinyViT(torch.nn.Module):
    """S :class:`TinyViT` of one architecture as one module: every parameter ``[S, ...]``.

    The forward takes images ``[S, B, C, H, W]`` (seed ``s``'s batch through seed ``s``'s
    weights) and returns logits ``[S, B, classes]``; the math is TinyViT's, laid out for few,
    large batched ops (:mod:`mirrorflow.experiments.batched`): linear weights are stored as
    ``[S, in, out]`` (``x @ W`` by ``baddbmm``), the query/key/value weights of a block as one
    ``qkv`` tensor ``[S, D, 3D]`` (columns ``[Q | K | V]``; queries and keys have no bias).
    The layout avoids copies of activations (each one costs as much as a matmul at these
    sizes): the class token enters as a zero patch plus a per-token bias (no concatenation),
    the attention core of all heads (``softmax(q kᵀ/√dh) v`` per head) runs on the ``qkv``
    product as it is, in one fused C pass forward and one backward
    (:func:`~mirrorflow.experiments._fused.fused_attention`; where the kernel is not built, the
    same math in torch ops: strided per-head views, scores transposed so the softmax runs over
    dim 1), its output ``[S, B·T, D]`` goes through one output projection, the value bias is
    folded into the output projection's bias (attention rows sum to 1), and the affine of each
    block's layer norms is folded into the weights of the product that follows
    (``x̂ diag(w) W + b W``), the normalization itself a fused C pass over rows
    (:func:`~mirrorflow.experiments._fused.layer_norm`). At the ViT experiment's sizes (16
    seeds, batch 128, 17 tokens, width 8, 2 heads) the two kernels take a 16-seed training
    step from 42–46 ms to 28–32 ms (medians, one thread; ``python -m
    mirrorflow.bench.vit_step``, 2026-12-03, load 1.1–1.5; the torch path,
    ``MIRRORFLOW_NATIVE=0``, 43–45 ms); what remains is mostly the attention backward, the
    small ``bmm``/``baddbmm`` with their copies, and the exact GELU.
    :meth:`seed_state` gives seed ``s``'s weights as a TinyViT ``state_dict``.
    """

    #: per-seed matrices that take weight decay (TinyViT's: every weight matrix, not cls/pos)
    DECAYED = ("embed_w", "qkv", "out_w", "fc1_w", "fc2_w", "head_w")

    def __init__(self, models: list[TinyViT]):
        super().__init__()
        if not models:
            raise MirrorflowError("StackedTinyViT needs at least one TinyViT")
        m0 = models[0]
        self.patch, self.depth = m0.patch, len(m0.blocks)
        self.heads = m0.blocks[0].attn.num_heads if self.depth else 1
        P = torch.nn.Parameter

        def st(get, transpose=False):
            with torch.no_grad():
                t = torch.stack([get(m).detach() for m in models])
                return P((t.transpose(-1, -2) if transpose else t).contiguous())

        self.embed_w = st(lambda m: m.embed.weight, True)
        self.embed_b = st(lambda m: m.embed.bias)
        self.cls = st(lambda m: m.cls[0])  # [S, 1, D]
        self.pos = st(lambda m: m.pos[0])  # [S, T, D]
        blocks = []
        for j in range(self.depth):
            def b(m, j=j):
                return m.blocks[j]
            blk = torch.nn.ParameterDict({
                "n1_w": st(lambda m: b(m).norm1.weight), "n1_b": st(lambda m: b(m).norm1.bias),
                "qkv": st(lambda m: torch.cat([b(m).attn.query.weight, b(m).attn.key.weight,
                                                b(m).attn.value.weight]), True),
                "v_b": st(lambda m: b(m).attn.value.bias),
                "out_w": st(lambda m: b(m).attn.out.weight, True),
                "out_b": st(lambda m: b(m).attn.out.bias),
                "n2_w": st(lambda m: b(m).norm2.weight), "n2_b": st(lambda m: b(m).norm2.bias),
                "fc1_w": st(lambda m: b(m).mlp[0].weight, True),
                "fc1_b": st(lambda m: b(m).mlp[0].bias),
                "fc2_w": st(lambda m: b(m).mlp[2].weight, True),
                "fc2_b": st(lambda m: b(m).mlp[2].bias),
            })
            blocks.append(blk)
        self.blocks = torch.nn.ModuleList(blocks)
        self.norm_w = st(lambda m: m.norm.weight)
        self.norm_b = st(lambda m: m.norm.bias)
        self.head_w = st(lambda m: m.head.weight, True)
        self.head_b = st(lambda m: m.head.bias)
        self.eps = m0.norm.eps

    @property
    def n_seeds(self) -> int:
        return self.embed_w.shape[0]

    def decay_groups(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        """``(decayed, not decayed)`` parameters, as TinyViT's training splits them."""
        dec, rest = [], []
        for n, p in self.named_parameters():
            (dec if n.rsplit(".", 1)[-1] in self.DECAYED else rest).append(p)
        return dec, rest

    def _ln(self, x, w, b):
        x = layer_norm(x, self.eps)
        return torch.addcmul(b.unsqueeze(1), x, w.unsqueeze(1))

    def _ln_linear(self, x, w, b, weight, bias=None):
        """``LayerNorm(x; w, b) @ weight (+ bias)`` with the norm's affine folded into the
        weights: ``x̂ (diag(w) W) + b W``, so no elementwise pass over the activations."""
        x = layer_norm(x, self.eps)
        shift = torch.bmm(b.unsqueeze(1), weight)
        return torch.baddbmm(shift if bias is None else shift + bias.unsqueeze(1), x,
                             w.unsqueeze(-1) * weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        S, B = images.shape[:2]
        N = S * B
        # a zero "patch" in front of every image's patches holds the class-token slot: its
        # embedding is 0, and the per-token bias below adds cls there (embed_b elsewhere), so
        # the tokens come out of one bmm with no concatenation of activations
        p = torch.nn.functional.pad(patchify(images.flatten(0, 1), self.patch), (0, 0, 1, 0))
        T = p.shape[1]
        D = self.embed_w.shape[-1]
        tok = self.pos + torch.cat([self.cls, self.embed_b.unsqueeze(1).expand(S, T - 1, D)], 1)
        x = (torch.bmm(p.view(S, B * T, -1), self.embed_w).view(S, B, T, D)
             + tok.unsqueeze(1)).view(S, B * T, D)
        h = self.heads
        for blk in self.blocks:
            # queries and keys have no bias (the norm's shift b W enters all three)
            qkv = self._ln_linear(x, blk["n1_w"], blk["n1_b"], blk["qkv"]).view(N, T, 3 * D)
            w_out = blk["out_w"]
            # attention rows sum to 1, so the value bias passes through unchanged: it joins the
            # output projection's bias as v_b @ W_out
            bias = blk["out_b"].unsqueeze(1) + torch.bmm(blk["v_b"].unsqueeze(1), w_out)
            x = x + bias
            # all heads' softmax(q kᵀ/√dh) v at once, [S, B·T, D] (one fused C pass forward and
            # one backward, or the same math in torch ops), then one output projection
            o = fused_attention(qkv, h).view(S, B * T, D)
            x = torch.baddbmm(x, o, w_out)
            y = torch.nn.functional.gelu(self._ln_linear(x, blk["n2_w"], blk["n2_b"], blk["fc1_w"],
                                                         blk["fc1_b"]))
            x = torch.baddbmm(x, y, blk["fc2_w"]) + blk["fc2_b"].unsqueeze(1)
        c = self._ln(x.view(S, B, T, D)[:, :, 0], self.norm_w, self.norm_b)
        return torch.baddbmm(self.head_b.unsqueeze(1), c, self.head_w)

    @torch.no_grad()
    def score_ratios(self) -> list[list[float]]:
        """Per seed, :func:`score_ratios` of its TinyViT (per layer, the mean over heads of
        ``‖W_Q,h W_K,hᵀ‖_* / ‖W_Q,h W_K,hᵀ‖_F``), all seeds in one batched SVD (float64); NaN
        for a seed with a non-finite parameter."""
        S, D = self.n_seeds, self.embed_w.shape[-1]
        finite = torch.stack([p.detach().flatten(1).isfinite().all(1)
                              for p in self.parameters()]).all(0)
        if not self.depth:
            return [[] for _ in range(S)]
        h, dh = self.heads, D // self.heads
        mats = []
        for blk in self.blocks:  # qkv columns [Q | K | V]: head j's U = W_Q,jᵀ, V = W_K,jᵀ
            w = blk["qkv"].detach().double()
            mats += [w[:, :, j * dh:(j + 1) * dh] @ w[:, :, D + j * dh:D + (j + 1) * dh].mT
                     for j in range(h)]
        X = torch.stack(mats, 1)  # [S, depth·h, D, D]
        X = torch.where(finite.view(S, 1, 1, 1), X, torch.zeros((), dtype=X.dtype))
        sv = torch.linalg.svdvals(X)
        ratio = (sv.sum(-1) / sv.square().sum(-1).sqrt()).view(S, self.depth, h).mean(-1)
        ratio[~finite] = math.nan
        return ratio.tolist()

    @torch.no_grad()
    def seed_state(self, s: int) -> dict[str, torch.Tensor]:
        """Seed ``s``'s weights as a :class:`TinyViT` ``state_dict`` (copies)."""
        def t(w):
            return w[s].transpose(0, 1).clone()

        D = self.embed_w.shape[-1]
        out = {"embed.weight": t(self.embed_w), "embed.bias": self.embed_b[s].clone(),
               "cls": self.cls[s].unsqueeze(0).clone(), "pos": self.pos[s].unsqueeze(0).clone(),
               "norm.weight": self.norm_w[s].clone(), "norm.bias": self.norm_b[s].clone(),
               "head.weight": t(self.head_w), "head.bias": self.head_b[s].clone()}
        for j, blk in enumerate(self.blocks):
            pre = f"blocks.{j}."
            qkv = t(blk["qkv"])
            out.update({
                pre + "norm1.weight": blk["n1_w"][s].clone(), pre + "norm1.bias": blk["n1_b"][s].clone(),
                pre + "attn.query.weight": qkv[:D].clone(), pre + "attn.key.weight": qkv[D:2 * D].clone(),
                pre + "attn.value.weight": qkv[2 * D:].clone(), pre + "attn.value.bias": blk["v_b"][s].clone(),
                pre + "attn.out.weight": t(blk["out_w"]), pre + "attn.out.bias": blk["out_b"][s].clone(),
                pre + "norm2.weight": blk["n2_w"][s].clone(), pre + "norm2.bias": blk["n2_b"][s].clone(),
                pre + "mlp.0.weight": t(blk["fc1_w"]), pre + "mlp.0.bias": blk["fc1_b"][s].clone(),
                pre + "mlp.2.weight": t(blk["fc2_w"]), pre + "mlp.2.bias": blk["fc2_b"][s].clone(),
            })
        return out
