"""Scalar summaries of a matrix's singular values, defined once for the whole library.

Both are invariant to scaling the matrix and undefined for the zero matrix, where they return
NaN (a fresh LoRA pair with ``B = 0`` has no direction yet; reporting 0 would put it outside the
range ``[1, rank]`` / ``[1, √rank]`` and pull averages down). Logged means skip NaN.
"""

from __future__ import annotations

import numpy as np

__all__ = ["effective_rank", "nuclear_over_fro"]


def effective_rank(sv) -> np.ndarray | float:
    """Entropy effective rank ``exp(−Σ p_i log p_i)``, ``p = σ / Σσ`` (Roy & Vetterli), over the
    last axis of ``sv``; in ``[1, rank]``, NaN for a zero matrix.

    >>> float(effective_rank([2.0, 2.0]))
    2.0
    """
    sv = np.abs(np.asarray(sv, dtype=np.float64))
    total = sv.sum(axis=-1, keepdims=True)
    p = sv / np.where(total > 0, total, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
    out = np.where(total[..., 0] > 0, np.exp(ent), np.nan)
    return float(out) if out.ndim == 0 else out


def nuclear_over_fro(sv) -> np.ndarray | float:
    """``‖X‖_* / ‖X‖_F = Σσ / sqrt(Σσ²)`` over the last axis; in ``[1, √rank]``, NaN for zero.

    >>> float(nuclear_over_fro([3.0, 4.0]))
    1.4
    """
    sv = np.abs(np.asarray(sv, dtype=np.float64))
    fro = np.sqrt((sv**2).sum(axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(fro > 0, sv.sum(axis=-1) / np.where(fro > 0, fro, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out
