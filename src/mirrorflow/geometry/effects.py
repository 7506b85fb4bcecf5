"""The three effects of weight decay on the geometry, as numbers (docs/theory.md §4, §7).

For a Legendre family ``R_a`` (any object with ``reference``, ``inverse``, ``potential``; e.g.
:class:`HyperbolicEntropy`, :class:`CommutingQuadratic`, :class:`PowerParameterization`,
:class:`NumericLegendre`) and a list of ``a`` values, :func:`measure_effects` reports

* **positional**: the reference point ``x̄(a) = argmin R_a`` and its shift ``‖x̄(a) − x̄(0)‖``;
* **type**: the family's scale parameter (when it has one), the local scale
  ``diag ∇²R_a*(0)`` (how far ``x`` moves per unit of dual movement at the reference), and the
  **L1-likeness index** (docs/effects.md)::

      s_j(a) = log₂[ R_a(x̄(a) + 2t·d_j) / R_a(x̄(a) + t·d_j) ],     ι(a) = 2 − median_j s_j(a)

  on unit test vectors ``d_j``: ``ι = 0`` for a quadratic (‖·‖₂²-like, degree 2), ``ι → 1`` for a
  function that grows like ‖·‖₁ (degree 1). Displacements are taken from the reference point,
  so the index measures the shape only, not the position. The ratios ``R_a/‖·‖₁`` and
  ``R_a/‖·‖₂²`` on the same vectors are reported too (theory §4);
* **range**: the interval of ``∇R_a`` (dual; ``(−∞, ∞)`` for the hyperbolic entropy) and the
  primal reach ``[x_i(−m e_i), x_i(m e_i)]`` for a bounded dual movement ``|μ_i| ≤ m``.

Sign convention: ``a = ∫ α dt ≥ 0`` (the published text writes ``a ≤ 0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mirrorflow._core.array import to_numpy
from mirrorflow._core.progress import progress_bar
from mirrorflow._core.validation import (
    MirrorflowError,
    check_choice,
    check_finite_array,
    check_finite_scalar,
    check_positive_int,
)
from mirrorflow.geometry.legendre import (
    HyperbolicEntropy,
    u_squared,
    u_squared_minus_v_squared,
    uv,
)
from mirrorflow.geometry.power import PowerParameterization, power

__all__ = ["FAMILIES", "EffectsReport", "dual_interval", "family_from_name", "l1_index",
           "measure_effects", "primal_reach"]

FAMILIES = ("uv", "u2-v2", "u2", "power")


def family_from_name(name: str, u0: float = 1.0, v0: float = 0.5, k: int = 2):
    """Closed-form family by name: ``uv``, ``u2-v2``, ``u2`` (theory §3) or ``power`` (§7)."""
    check_choice("parameterization", name, FAMILIES)
    u0 = check_finite_scalar("u0", u0)
    v0 = check_finite_scalar("v0", v0)
    if name == "uv":
        return uv(u0, v0)
    if name == "u2-v2":
        return u_squared_minus_v_squared(u0, v0)
    if name == "u2":
        return u_squared(u0)
    return power(k, u0, v0)


def dual_interval(family, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Range of ``∇R_a`` per coordinate (the domain of ``R_a*``; docs/theory.md §4, §7)."""
    if hasattr(family, "dual_interval"):
        lo, hi = family.dual_interval(a)
        return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    d = family.dim
    return np.full(d, -np.inf), np.full(d, np.inf)


def primal_reach(family, a: float, m: float) -> tuple[np.ndarray, np.ndarray]:
    """``x_i`` at dual ``μ = −m e_i`` and ``μ = +m e_i``: how far ``x`` gets for ``|μ_i| ≤ m``."""
    m = check_finite_scalar("dual_step", m, minimum=0.0, strict=True)
    d = family.dim
    E = np.eye(d) * m
    lo = np.diagonal(to_numpy(family.inverse(-E, a))).copy()
    hi = np.diagonal(to_numpy(family.inverse(E, a))).copy()
    return lo, hi


def _half_line(family) -> np.ndarray:
    """Coordinates whose domain is a half-line (sign of ``x`` frozen)."""
    if isinstance(family, HyperbolicEntropy):
        return family.balanced
    if isinstance(family, PowerParameterization):
        return np.isinf(family.c_u) | np.isinf(family.c_v)
    xbar = to_numpy(family.reference(0.0))
    probe = to_numpy(family.inverse(-50.0 * np.diag(np.sign(xbar) + (xbar == 0)), 0.0))
    return np.diagonal(probe) * np.sign(xbar) > 0


def _test_vectors(family, n_test: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = family.dim
    D = rng.standard_normal((n_test, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    half = _half_line(family)
    if np.any(half):
        s = np.sign(to_numpy(family.reference(0.0)))
        D[:, half] = np.abs(D[:, half]) * s[half]
    return D


def l1_index(family, a: float, directions, t: float = 1.0) -> tuple[float, float, float]:
    """``(ι, ratio_l1, ratio_l2)`` at ``a`` for unit ``directions (J, d)`` at displacement ``t``.

    ``ι = 2 − median_j log₂[R_a(x̄ + 2t d_j) / R_a(x̄ + t d_j)]`` (docs/effects.md).
    """
    D = np.atleast_2d(to_numpy(directions))
    t = check_finite_scalar("t", t, minimum=0.0, strict=True)
    xbar = to_numpy(family.reference(a))
    r1 = to_numpy(family.potential(xbar + t * D, a))
    r2 = to_numpy(family.potential(xbar + 2 * t * D, a))
    slopes = np.log2(r2 / r1)
    disp = t * D
    ratio_l1 = float(np.mean(r1 / np.abs(disp).sum(1)))
    ratio_l2 = float(np.mean(r1 / (disp**2).sum(1)))
    return float(2.0 - np.median(slopes)), ratio_l1, ratio_l2


@dataclass(frozen=True)
class EffectsReport:
    """The three effects at each ``a`` (``K`` values, dimension ``d``). See docs/effects.md.

    Attributes
    ----------
    a : (K,) integrated weight decay (``≥ 0``).
    reference, shift : (K, d) ``x̄(a)``; (K,) ``‖x̄(a) − x̄(0)‖``.
    scale : (K, d) the family's scale parameter, or ``None`` if it has none.
    local_scale : (K, d) ``diag ∇²R_a*(0)`` (central difference of ``∇R_a*`` at 0).
    l1_index, ratio_l1, ratio_l2 : (K,) type of bias on the test vectors.
    dual_lo, dual_hi : (K, d) interval of ``∇R_a``.
    reach_lo, reach_hi : (K, d) primal reach for dual movement ``|μ_i| ≤ dual_step``.
    """

    name: str
    a: np.ndarray
    reference: np.ndarray
    shift: np.ndarray
    scale: np.ndarray | None
    local_scale: np.ndarray
    l1_index: np.ndarray
    ratio_l1: np.ndarray
    ratio_l2: np.ndarray
    dual_lo: np.ndarray
    dual_hi: np.ndarray
    reach_lo: np.ndarray
    reach_hi: np.ndarray
    dual_step: float
    t: float

    @property
    def reach_width(self) -> np.ndarray:
        """(K, d) width of the primal reach."""
        return self.reach_hi - self.reach_lo

    def rows(self) -> list[dict]:
        """One dict per ``a`` with the coordinate-0 numbers (for tables and JSON)."""
        out = []
        for i, a in enumerate(self.a):
            out.append({
                "a": float(a),
                "reference": float(self.reference[i, 0]),
                "shift": float(self.shift[i]),
                "scale": None if self.scale is None else float(self.scale[i, 0]),
                "local_scale": float(self.local_scale[i, 0]),
                "l1_index": float(self.l1_index[i]),
                "ratio_l1": float(self.ratio_l1[i]),
                "ratio_l2": float(self.ratio_l2[i]),
                "dual_lo": float(self.dual_lo[i, 0]),
                "dual_hi": float(self.dual_hi[i, 0]),
                "reach_lo": float(self.reach_lo[i, 0]),
                "reach_hi": float(self.reach_hi[i, 0]),
            })
        return out

    def summary(self) -> dict:
        return {"family": self.name, "dual_step": self.dual_step, "t": self.t, "rows": self.rows()}


def measure_effects(
    family,
    a_values: Sequence[float],
    *,
    test_vectors=None,
    n_test: int = 16,
    t: float = 1.0,
    dual_step: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> EffectsReport:
    """Positional, type and range effects of ``R_a`` at each ``a`` (docs/theory.md §4, §7).

    Parameters
    ----------
    family : a Legendre family (``reference``, ``inverse``, ``potential``, ``dim``).
    a_values : integrated weight decays ``a ≥ 0``.
    test_vectors : ``(J, d)`` directions for the L1-likeness index (normalized to unit ℓ2);
        default ``n_test`` Gaussian directions drawn with ``seed`` (signs fixed on half-line
        coordinates so every test point is in the domain).
    t : displacement size for the index (``R_a`` is compared at ``t`` and ``2t``).
    dual_step : ``m`` in the primal reach ``[x_i(−m e_i), x_i(m e_i)]``.
    """
    a_arr = np.atleast_1d(np.asarray(a_values, dtype=np.float64))
    if a_arr.ndim != 1 or a_arr.size == 0:
        raise MirrorflowError("pass at least one a value (e.g. --a 0 1 2 4)")
    check_finite_array("a", a_arr)
    if np.any(a_arr < 0):
        raise MirrorflowError(
            f"a must be >= 0 (a = ∫α dt; mirrorflow's sign convention), got {a_arr.min():g}"
        )
    t = check_finite_scalar("t", t, minimum=0.0, strict=True)
    dual_step = check_finite_scalar("dual_step", dual_step, minimum=0.0, strict=True)
    if test_vectors is None:
        D = _test_vectors(family, check_positive_int("n_test", n_test), seed)
    else:
        D = np.atleast_2d(to_numpy(test_vectors)).astype(np.float64)
        if D.shape[1] != family.dim:
            raise MirrorflowError(f"test_vectors must have {family.dim} columns, got {D.shape}")
        nrm = np.linalg.norm(D, axis=1, keepdims=True)
        if np.any(nrm == 0):
            raise MirrorflowError("test_vectors must be nonzero")
        D = D / nrm
    d = family.dim
    ref0 = to_numpy(family.reference(0.0))
    K = a_arr.size
    cols = {k: np.empty((K, d)) for k in ("ref", "loc", "dlo", "dhi", "rlo", "rhi")}
    idx, r1s, r2s = (np.empty(K) for _ in range(3))
    has_scale = hasattr(family, "scale")
    scale = np.empty((K, d)) if has_scale else None
    h = 1e-5
    E = np.eye(d) * h
    with progress_bar(K, "effects", progress) as advance:
        for i, a in enumerate(a_arr):
            cols["ref"][i] = to_numpy(family.reference(a))
            if has_scale:
                scale[i] = to_numpy(family.scale(a))
            fd = (to_numpy(family.inverse(E, a)) - to_numpy(family.inverse(-E, a))) / (2 * h)
            cols["loc"][i] = np.diagonal(fd)
            idx[i], r1s[i], r2s[i] = l1_index(family, a, D, t)
            cols["dlo"][i], cols["dhi"][i] = dual_interval(family, a)
            cols["rlo"][i], cols["rhi"][i] = primal_reach(family, a, dual_step)
            advance(1)
    return EffectsReport(
        name=getattr(family, "name", type(family).__name__),
        a=a_arr,
        reference=cols["ref"],
        shift=np.linalg.norm(cols["ref"] - ref0, axis=1),
        scale=scale,
        local_scale=cols["loc"],
        l1_index=idx,
        ratio_l1=r1s,
        ratio_l2=r2s,
        dual_lo=cols["dlo"],
        dual_hi=cols["dhi"],
        reach_lo=cols["rlo"],
        reach_hi=cols["rhi"],
        dual_step=dual_step,
        t=t,
    )
