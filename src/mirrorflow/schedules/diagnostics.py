"""Diagnostics for factor pairs ``X = U Vᵀ`` in real models (docs/theory.md §6, docs/training.md).

A :class:`FactorPair` names two factors ``U ∈ R^{d1×r}``, ``V ∈ R^{d2×r}`` of a product
``X = scale · U Vᵀ``:

* LoRA (PEFT): ``ΔW = scaling · B A`` → ``U = B`` (out×r), ``V = Aᵀ`` (in×r);
* attention: scores ``x W_Qᵀ W_K xᵀ`` per head → ``U = W_Q,hᵀ``, ``V = W_K,hᵀ`` (hidden×d_head).

:func:`factor_diagnostics` reports the balancedness ``‖UᵀU − VᵀV‖_F`` — which theory §6 predicts
to decay exactly as ``e^{−2a}`` under gradient flow with weight decay, for any loss of ``UVᵀ`` — and
the spectrum of the product: nuclear norm, Frobenius norm, their ratio, effective rank, top
singular values. Everything is computed from ``r×r`` matrices (cost ``O((d1+d2) r²)`` plus
``O(r³)``), never from the ``d1×d2`` product: the balancedness from the Grams ``UᵀU``, ``VᵀV``,
and the spectrum from thin QR factors ``U = Q_U R_U``, ``V = Q_V R_V``:

    singular values of U Vᵀ  =  singular values of the r×r matrix R_U R_Vᵀ

(``Q_U``, ``Q_V`` have orthonormal columns). This is as accurate as an SVD of the product; the
Gram route ``sqrt(eig(G_U^{1/2} G_V G_U^{1/2}))`` would lose half the digits of small values.

Detection (:func:`lora_pairs`, :func:`attention_pairs`) only inspects module attributes, so this
module imports neither ``peft`` nor ``transformers``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mirrorflow._core.spectral import effective_rank, nuclear_over_fro
from mirrorflow._core.validation import MirrorflowError, check_positive_int

__all__ = [
    "FactorDiagnostics",
    "FactorPair",
    "attention_pairs",
    "diagnose",
    "factor_diagnostics",
    "lora_pairs",
    "summarize",
]


@dataclass(frozen=True)
class FactorPair:
    """``X = scale · U Vᵀ`` with ``U: d1×r`` and ``V: d2×r`` (tensors are referenced, not copied).

    ``U`` and ``V`` may be views of live parameters: diagnostics read their current values.
    """

    name: str
    U: Any
    V: Any
    scale: float = 1.0
    kind: str = "pair"


@dataclass(frozen=True)
class FactorDiagnostics:
    """Diagnostics of one pair (docs/theory.md §6). Norms are of the product ``scale · U Vᵀ``.

    ``effective_rank`` is ``exp(H(p))`` with ``p = σ / Σσ`` (Roy & Vetterli), in ``[1, rank]``;
    ``nuclear_over_fro`` lies in ``[1, sqrt(rank)]``. Both are NaN for a zero product (a fresh
    LoRA pair with ``B = 0``): undefined, not 0 (:mod:`mirrorflow._core.spectral`).
    """

    name: str
    balancedness: float
    imbalance_relative: float
    nuclear: float
    frobenius: float
    nuclear_over_fro: float
    effective_rank: float
    factor_norm_sq: float
    top_singular_values: tuple[float, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {
            "balancedness": self.balancedness,
            "imbalance_relative": self.imbalance_relative,
            "nuclear": self.nuclear,
            "frobenius": self.frobenius,
            "nuclear_over_fro": self.nuclear_over_fro,
            "effective_rank": self.effective_rank,
            "factor_norm_sq": self.factor_norm_sq,
        }


def _as64(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise MirrorflowError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    x = x.detach()
    if x.ndim != 2:
        raise MirrorflowError(f"{name} must be a 2-D matrix (rows × rank), got shape {tuple(x.shape)}")
    return x.to(torch.float64)


def factor_diagnostics(U: Any, V: Any | None = None, *, scale: float = 1.0, top_k: int = 5,
                       name: str = "pair") -> FactorDiagnostics:
    """Diagnostics of ``X = scale · U Vᵀ`` (or of a :class:`FactorPair` given as ``U``).

    ``U: d1×r``, ``V: d2×r`` (same ``r``). Computed in float64 from the ``r×r`` Grams.
    """
    if isinstance(U, FactorPair):
        pair = U
        U, V, scale, name = pair.U, pair.V, pair.scale, pair.name
    if V is None:
        raise MirrorflowError("factor_diagnostics needs two factors U (d1×r) and V (d2×r), or a FactorPair")
    top_k = check_positive_int("top_k", top_k)
    with torch.no_grad():
        Ut, Vt = _as64(U, "U"), _as64(V, "V")
        if Ut.shape[1] != Vt.shape[1]:
            raise MirrorflowError(
                f"U and V must share the inner dimension r (U: d1×r, V: d2×r); got U "
                f"{tuple(Ut.shape)} and V {tuple(Vt.shape)} (transpose LoRA A: V = Aᵀ)"
            )
        Gu, Gv = Ut.T @ Ut, Vt.T @ Vt
        diff = Gu - Gv
        bal = float(torch.linalg.matrix_norm(diff))
        fnorm = float(torch.trace(Gu) + torch.trace(Gv))
        Ru = torch.linalg.qr(Ut, mode="r")[1]
        Rv = torch.linalg.qr(Vt, mode="r")[1]
        s = abs(float(scale)) * torch.linalg.svdvals(Ru @ Rv.T).cpu().numpy()
    nuc = float(s.sum())
    fro = float(math.sqrt((s**2).sum()))
    return FactorDiagnostics(
        name=name,
        balancedness=bal,
        imbalance_relative=bal / fnorm if fnorm > 0 else 0.0,
        nuclear=nuc,
        frobenius=fro,
        nuclear_over_fro=nuclear_over_fro(s),
        effective_rank=effective_rank(s),
        factor_norm_sq=fnorm,
        top_singular_values=tuple(float(x) for x in s[:top_k]),
    )


def diagnose(pairs: Iterable[FactorPair], top_k: int = 5) -> dict[str, FactorDiagnostics]:
    """:func:`factor_diagnostics` of every pair, keyed by name."""
    return {p.name: factor_diagnostics(p, top_k=top_k) for p in pairs}


def summarize(diags: dict[str, FactorDiagnostics] | Sequence[FactorDiagnostics],
              prefix: str = "diag/") -> dict[str, float]:
    """Mean of each scalar diagnostic over the pairs where it is defined (for logging).

    ``nuclear_over_fro`` and ``effective_rank`` are NaN for a zero product (a fresh LoRA pair,
    ``B = 0``): such pairs are skipped, not counted as 0, so they do not pull the means down;
    ``<prefix>pairs`` is the number of pairs and ``<prefix>pairs_defined`` the number with a
    nonzero product. A mean over no defined pair is left out (not logged as NaN). Also
    ``<prefix>balancedness_max``.
    """
    items = list(diags.values()) if isinstance(diags, dict) else list(diags)
    if not items:
        return {}
    rows = [d.as_dict() for d in items]
    out: dict[str, float] = {}
    for key in rows[0]:
        vals = np.array([r[key] for r in rows], dtype=np.float64)
        ok = ~np.isnan(vals)
        if ok.any():
            out[f"{prefix}{key}_mean"] = float(vals[ok].mean())
    out[f"{prefix}balancedness_max"] = float(max(d.balancedness for d in items))
    out[f"{prefix}pairs"] = float(len(items))
    out[f"{prefix}pairs_defined"] = float(sum(1 for d in items if d.frobenius > 0))
    return out


# -- detection ----------------------------------------------------------------------------------

def _weight(module) -> torch.Tensor:
    """Weight of a Linear/Conv1D, looking through PEFT's ``base_layer`` wrapper."""
    m = module
    while hasattr(m, "base_layer"):
        m = m.base_layer
    return m.weight


def lora_pairs(model: torch.nn.Module, adapter: str | None = None) -> list[FactorPair]:
    """Every PEFT LoRA pair ``(A, B)`` of ``model``: ``U = B`` (out×r), ``V = Aᵀ``, scale = alpha/r.

    Finds modules with ``lora_A``/``lora_B`` dicts (peft's ``LoraLayer``); ``adapter`` restricts to
    one adapter name (default: all).
    """
    pairs = []
    for mname, m in model.named_modules():
        la, lb = getattr(m, "lora_A", None), getattr(m, "lora_B", None)
        if not isinstance(la, torch.nn.ModuleDict) or not isinstance(lb, torch.nn.ModuleDict):
            continue
        for key in la:
            if (adapter is not None and key != adapter) or key not in lb:
                continue
            A, B = la[key].weight, lb[key].weight
            if A.ndim != 2 or B.ndim != 2:  # conv LoRA: skip
                continue
            scale = float(getattr(m, "scaling", {}).get(key, 1.0))
            pairs.append(FactorPair(f"{mname}[{key}]", B, A.T, scale, "lora"))
    return pairs


def _n_heads(module, model, default_key: str) -> int:
    for attr in ("num_attention_heads", "num_heads", "n_head", "n_heads"):
        v = getattr(module, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    cfg = getattr(model, "config", None)
    for attr in ("num_attention_heads", "n_head", "num_heads"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    raise MirrorflowError(f"cannot find the number of heads of {default_key}; pass per_head=False")


def _split(name: str, Wq_t: torch.Tensor, Wk_t: torch.Tensor, heads: int, per_head: bool,
           scale: float) -> list[FactorPair]:
    """``Wq_t, Wk_t``: hidden × (heads·d_head), columns grouped by head."""
    if not per_head:
        return [FactorPair(name, Wq_t, Wk_t, scale, "attention")]
    width = Wq_t.shape[1]
    if width % heads:
        raise MirrorflowError(f"{name}: width {width} is not divisible by {heads} heads")
    dh = width // heads
    return [FactorPair(f"{name}.head{h}", Wq_t[:, h * dh:(h + 1) * dh], Wk_t[:, h * dh:(h + 1) * dh],
                       scale, "attention") for h in range(heads)]


def attention_pairs(model: torch.nn.Module, per_head: bool = True) -> list[FactorPair]:
    """``(W_Q, W_K)`` pairs of every attention block, as ``U = W_Qᵀ``, ``V = W_Kᵀ`` (hidden×d).

    Recognizes: modules with ``query``/``key`` Linear layers (BERT, MiniLM, RoBERTa, ViT),
    ``q_lin``/``k_lin`` (DistilBERT), ``q_proj``/``k_proj`` with equal widths (BART, OPT, LLaMA
    without grouped KV), GPT-2's fused ``c_attn`` Conv1D (``[q | k | v]`` columns) and
    ``torch.nn.MultiheadAttention`` (``in_proj_weight`` rows ``[q; k; v]``, or separate
    ``q_proj_weight``/``k_proj_weight``). PEFT-wrapped layers are read through ``base_layer``.
    ``per_head=True`` (default) gives one pair per head — the factorization the loss actually
    sees; the ``1/sqrt(d_head)`` score scale is included in ``scale``. Query/key biases are
    ignored (with biases the scores are not a function of ``W_Qᵀ W_K`` alone).
    """
    pairs: list[FactorPair] = []
    for mname, m in model.named_modules():
        name = mname or type(m).__name__
        if isinstance(m, torch.nn.MultiheadAttention):
            E, H = m.embed_dim, m.num_heads
            if m.in_proj_weight is not None:
                Wq, Wk = m.in_proj_weight[:E], m.in_proj_weight[E:2 * E]
            else:
                Wq, Wk = m.q_proj_weight, m.k_proj_weight
            pairs += _split(name, Wq.T, Wk.T, H, per_head, 1.0 / math.sqrt(E // H))
            continue
        found = None
        for q, k in (("query", "key"), ("q_lin", "k_lin"), ("q_proj", "k_proj")):
            mq, mk = getattr(m, q, None), getattr(m, k, None)
            if isinstance(mq, torch.nn.Module) and isinstance(mk, torch.nn.Module):
                try:
                    Wq, Wk = _weight(mq), _weight(mk)
                except AttributeError:
                    continue
                if Wq.ndim == 2 and Wq.shape == Wk.shape:
                    found = (Wq.T, Wk.T)
                    break
        if found is None and hasattr(m, "c_attn") and getattr(m, "split_size", None):
            W = _weight(m.c_attn)  # Conv1D: in × 3E, y = x W + b
            E = int(m.split_size)
            if W.ndim == 2 and W.shape[1] == 3 * E:
                found = (W[:, :E], W[:, E:2 * E])
        if found is None:
            continue
        H = _n_heads(m, model, name)
        pairs += _split(name, found[0], found[1], H, per_head, 1.0 / math.sqrt(found[0].shape[1] // H))
    return pairs
