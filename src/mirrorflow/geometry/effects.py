"""The three effects of weight decay on the geometry, as numbers (docs/theory.md §4, §7).

For a Legendre family ``R_a`` (any object with the core methods of
:mod:`mirrorflow.geometry.family`: ``dim``, ``reference``, ``inverse``, ``grad``, ``potential``; e.g. :class:`HyperbolicEntropy`, :class:`CommutingQuadratic`,
:class:`PowerParameterization`, :class:`NumericLegendre`) and a list of ``a`` values,
:func:`measure_effects` reports

* **positional**: the reference point ``x̄(a) = argmin R_a`` and its shift ``‖x̄(a) − x̄(0)‖``;
* **type**: the family's scale parameter (when it has one) and the **type index**
  (docs/effects.md): at test points ``x_j = t·d_j`` (unit directions ``d_j``; ``t`` is the
  problem's scale of ``x`` and does not depend on ``a``) the degree of the curvature of ``R_a``
  along the ray through ``x_j``::

      κ(x) = xᵀ ∇²R_a(x) x  (= d²/ds² R_a(s x) at s = 1),
      ι(a) = 2 − median_j log₂[ κ(2 x_j) / κ(x_j) ].

  For ``‖x‖_p^p`` (degree ``p``) ``κ = p(p − 1)R`` and ``ι = 2 − p``: ``0`` for a quadratic (L2),
  ``→ 1`` as ``p → 1`` (L1-like; also the entropy ``x log x``, whose Hessian is ``∝ 1/x``). For the
  hyperbolic entropy (theory §3), per coordinate ``ι = ½ log₂[(4x² + β²)/(x² + β²)]``. Built from
  ``∇²R_a`` only, so adding a linear function to ``R_a`` — all that moving the reference point does
  — cannot change it (the previous index compared ``R_a`` at ``x̄(a) + t d`` and ``x̄(a) + 2t d``
  and so mixed the position ``x̄(a)`` into the type);
* **range**: the interval of ``∇R_a`` (dual; ``(−∞, ∞)`` for the hyperbolic entropy), the primal
  reach ``[x_i(−m e_i), x_i(m e_i)]`` for a bounded dual movement ``|μ_i| ≤ m``, and its rate at
  ``m → 0``, the local scale ``diag ∇²R_a*(0)`` (how far ``x`` moves per unit of dual movement at
  the reference point).

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
from mirrorflow.geometry.family import FAMILIES, check_family, provides

__all__ = ["FAMILIES", "EffectsReport", "dual_interval", "family_from_name", "measure_effects",
           "primal_reach", "ray_curvature", "type_index"]

def family_from_name(name: str, u0: float = 1.0, v0: float = 0.5, k: int = 2):
    """Family by name from the table :data:`mirrorflow.geometry.family.FAMILIES`: ``uv``,
    ``u2-v2``, ``u2`` (theory §3), ``power`` (§7), and any added by ``register_family``.

    >>> family_from_name("uv", 1.0, 0.5).scale(0.0)   # |δ₀| = |u₀² − v₀²| = 0.75
    array([0.75])
    """
    check_choice("parameterization", name, tuple(FAMILIES))
    u0 = check_finite_scalar("u0", u0)
    v0 = check_finite_scalar("v0", v0)
    return FAMILIES[name](u0, v0, k)


def dual_interval(family, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Range of ``∇R_a`` per coordinate (the domain of ``R_a*``; docs/theory.md §4, §7).

    >>> from mirrorflow.geometry import power
    >>> dual_interval(power(2, 1.0, 0.5), 1.0)   # (−c_v − a, c_u + a), c = u₀^{-2}/8
    (array([-1.5]), array([1.125]))
    """
    if provides(family, "dual_interval"):
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
    """Coordinates whose domain is a half-line (sign of ``x`` frozen) at ``a = 0``.

    The family's ``half_line`` when it has one, else probed: a large dual push against the sign
    of ``x̄`` that does not flip ``x`` marks the coordinate.
    """
    if provides(family, "half_line"):
        return np.broadcast_to(np.asarray(family.half_line(0.0), dtype=bool), (family.dim,))
    xbar = to_numpy(family.reference(0.0))
    probe = to_numpy(family.inverse(-50.0 * np.diag(np.sign(xbar) + (xbar == 0)), 0.0))
    return np.diagonal(probe) * np.sign(xbar) > 0


def _test_vectors(family, n_test: int, seed: int) -> np.ndarray:
    """``n_test`` seeded Gaussian unit directions; in one dimension the two signs ``±1``.

    Signs are fixed on half-line coordinates so that every test point is in the domain.
    """
    d = family.dim
    if d == 1:
        D = np.array([[1.0], [-1.0]])
    else:
        rng = np.random.default_rng(seed)
        D = rng.standard_normal((n_test, d))
        D /= np.linalg.norm(D, axis=1, keepdims=True)
    half = _half_line(family)
    if np.any(half):
        s = np.sign(to_numpy(family.reference(0.0)))
        D[:, half] = np.abs(D[:, half]) * s[half]
    return D


def ray_curvature(family, a: float, points) -> np.ndarray:
    """``κ(x) = xᵀ ∇²R_a(x) x`` for each row of ``points (J, d)`` (docs/theory.md §3, §4).

    Exact from ``family.hessian`` when the family has one (elementwise diagonal or full matrix);
    otherwise the derivative of ``s ↦ ⟨∇R_a(s x), x⟩`` at ``s = 1`` by central differences with
    Richardson extrapolation (steps ``10⁻³`` and ``5·10⁻⁴`` relative to ``x``).

    >>> from mirrorflow.geometry import uv
    >>> ray_curvature(uv(1.0, 0.0), 0.0, [[0.0], [1.0]]).round(6).tolist()   # x² · ½/sqrt(x² + ¼)
    [0.0, 0.447214]
    """
    X = np.atleast_2d(np.asarray(to_numpy(points), dtype=np.float64))
    if provides(family, "hessian"):
        H = to_numpy(family.hessian(X, a))
        if H.shape == X.shape:  # diagonal, elementwise
            return np.sum(X * X * H, axis=-1)
        return np.einsum("ji,jik,jk->j", X, H, X)

    def phi(s):
        return np.sum(to_numpy(family.grad(s * X, a)) * X, axis=-1)

    h = 1e-3
    d_h = (phi(1 + h) - phi(1 - h)) / (2 * h)
    d_h2 = (phi(1 + h / 2) - phi(1 - h / 2)) / h
    return (4 * d_h2 - d_h) / 3


def type_index(family, a: float, points) -> np.ndarray:
    """Type index ``ι_j = 2 − log₂[κ(2x_j) / κ(x_j)]`` for each row ``x_j`` of ``points``.

    ``κ(x) = xᵀ∇²R_a(x)x = d²/ds² R_a(s x)`` at ``s = 1`` (:func:`ray_curvature`). For ``R``
    homogeneous of degree ``p`` (``‖x‖_p^p``), ``κ = p(p − 1)R`` and ``ι = 2 − p``: ``0`` = L2-like,
    ``1`` = L1-like (curvature ``∝ 1/|x|``, the entropy's; docs/effects.md). Built from ``∇²R_a``
    only, so ``R_a + ⟨c, x⟩`` has the same index (docs/theory.md §4).

    >>> from mirrorflow.geometry import u_squared
    >>> type_index(u_squared(1.0), 0.0, [[0.5]])   # ¼ x log x: curvature ∝ 1/x, L1-like
    array([1.])
    """
    X = np.atleast_2d(np.asarray(to_numpy(points), dtype=np.float64))
    check_finite_array("points", X)
    k1 = ray_curvature(family, a, X)
    k2 = ray_curvature(family, a, 2.0 * X)
    with np.errstate(divide="ignore", invalid="ignore"):
        iota = 2.0 - np.log2(k2 / k1)
    if not (np.all(np.isfinite(iota)) and np.all(k1 > 0) and np.all(k2 > 0)):
        raise MirrorflowError(
            f"the curvature of R_a at a = {a:g} is not finite and positive at every test point "
            "(points outside the domain of R_a, or x = 0?); pass nonzero test points inside the domain"
        )
    return iota


@dataclass(frozen=True)
class EffectsReport:
    """The three effects at each ``a`` (``K`` values, dimension ``d``). See docs/effects.md.

    Attributes
    ----------
    a : (K,) integrated weight decay (``≥ 0``).
    reference, shift : (K, d) ``x̄(a)``; (K,) ``‖x̄(a) − x̄(0)‖``.
    scale : (K, d) the family's scale parameter, or ``None`` if it has none.
    type_index : (K,) median type index ``ι`` over the test points ``t·d_j`` (0 = L2-like,
        1 = L1-like; :func:`type_index`).
    dual_lo, dual_hi : (K, d) interval of ``∇R_a``.
    reach_lo, reach_hi : (K, d) primal reach for dual movement ``|μ_i| ≤ dual_step``.
    local_scale : (K, d) ``diag ∇²R_a*(0)`` (central difference of ``∇R_a*`` at 0): the reach's
        rate at ``dual_step → 0``.
    t : distance of the test points from 0 (the problem's scale of ``x``).
    """

    name: str
    a: np.ndarray
    reference: np.ndarray
    shift: np.ndarray
    scale: np.ndarray | None
    local_scale: np.ndarray
    type_index: np.ndarray
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
                "type_index": float(self.type_index[i]),
                "dual_lo": float(self.dual_lo[i, 0]),
                "dual_hi": float(self.dual_hi[i, 0]),
                "reach_lo": float(self.reach_lo[i, 0]),
                "reach_hi": float(self.reach_hi[i, 0]),
            })
        return out

    def summary(self) -> dict:
        return {
            "family": self.name,
            "dual_step": self.dual_step,
            "t": self.t,
            "type_index_definition": (
                "2 - median_j log2[k(2 x_j) / k(x_j)], k(x) = x^T Hess R_a(x) x, at test points "
                "x_j with |x_j| = t (independent of a); 0 = L2-like, 1 = L1-like"
            ),
            "rows": self.rows(),
        }


def measure_effects(
    family,
    a_values: Sequence[float],
    *,
    test_vectors=None,
    n_test: int = 16,
    t: float = 0.1,
    dual_step: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> EffectsReport:
    """Positional, type and range effects of ``R_a`` at each ``a`` (docs/theory.md §4, §7).

    Parameters
    ----------
    family : a Legendre family (``reference``, ``inverse``, ``grad``, ``dim``; ``hessian`` and
        ``scale`` when it has them).
    a_values : integrated weight decays ``a ≥ 0``.
    test_vectors : ``(J, d)`` directions for the type index (normalized to unit ℓ2); default
        ``n_test`` Gaussian directions drawn with ``seed``, or ``±1`` in one dimension (signs
        fixed on half-line coordinates so every test point is in the domain).
    t : distance of the test points ``t·d_j`` from 0: the problem's scale of ``x`` (the size of the
        entries you care about). It does not depend on ``a``; the type index is read there. A
        hyperbolic-entropy coordinate is L2-like for ``|x| ≪ β(a)`` and L1-like for ``|x| ≫ β(a)``
        (theory §3), so the index moves from 0 to 1 as ``β(a)`` passes below ``t``. Default 0.1,
        inside the quadratic region of the default initialization (``u₀ = 1, v₀ = 0.5``:
        ``β₀ = 0.375``).
    dual_step : ``m`` in the primal reach ``[x_i(−m e_i), x_i(m e_i)]``.

    >>> from mirrorflow.geometry import u_squared
    >>> rep = measure_effects(u_squared(1.0), [0.0, 1.0])   # x̄(a) = u₀²e^{−2a}
    >>> np.round(rep.reference[:, 0], 6), np.round(rep.type_index, 6)   # type stays entropy-like
    (array([1.      , 0.135335]), array([1., 1.]))
    """
    check_family(family, "measure_effects")
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
        check_finite_array("test_vectors", D)
        family.grad(t * D, 0.0)  # raises a one-line MirrorflowError outside the domain of R_a
    d = family.dim
    ref0 = to_numpy(family.reference(0.0))
    K = a_arr.size
    cols = {k: np.empty((K, d)) for k in ("ref", "loc", "dlo", "dhi", "rlo", "rhi")}
    idx = np.empty(K)
    has_scale = provides(family, "scale")
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
            idx[i] = float(np.median(type_index(family, a, t * D)))
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
        type_index=idx,
        dual_lo=cols["dlo"],
        dual_hi=cols["dhi"],
        reach_lo=cols["rlo"],
        reach_hi=cols["rhi"],
        dual_step=dual_step,
        t=t,
    )
