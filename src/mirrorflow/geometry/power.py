"""Separable matched regularizers and the power parameterization (docs/theory.md §7).

**Matched pieces.** When ``x_i = Σ_j g_ij(w_ij)`` is a sum of one-dimensional pieces, a separable
regularizer ``h = Σ h_ij`` commutes with it iff ``[g', h'] = h''g' − g''h' = 0`` for every piece,
i.e. ``h_ij = c_ij g_ij + const`` (docs/theory.md §2, §7). :func:`matched_constant` checks this
with autograd and returns ``c``.

**Power parameterization** ``x = u^{2k} − v^{2k}`` (integer ``k ≥ 2``) with the matched regularizer
``h = u^{2k} + v^{2k}`` (so ``c = +1`` on the ``u`` piece and ``−1`` on the ``v`` piece). With
``p = 2k − 2``, ``K = 2kp``, ``q = k/(k−1)``, ``μ_t = −∫∇f`` and ``a_t = ∫α ≥ 0`` the flow solves
(docs/theory.md §7)::

    u^{-p} = u₀^{-p} + K (a − μ),        v^{-p} = v₀^{-p} + K (a + μ),

so with ``c_u = u₀^{-p}/K``, ``c_v = v₀^{-p}/K`` and ``U = c_u + a − μ``, ``V = c_v + a + μ``::

    ∇R_a*(μ) = K^{-q} (U^{-q} − V^{-q}),        μ ∈ (−c_v − a, c_u + a)   (range of ∇R_a),
    R_a*(μ)  = K^{-q}/(q−1) · (U^{1−q} − U(0)^{1−q} + V^{1−q} − V(0)^{1−q}).

``∇R_a`` is the closed form ``μ = c_u + a − x^{-1/q}/K`` when ``v₀ = 0`` (mirror for ``u₀ = 0``) and
otherwise the root of the strictly increasing map above inside the interval (safeguarded Newton,
to machine precision). The map saturates (``x → ±∞``) at the interval's ends; :meth:`inverse`
returns ``±inf`` there. Sign convention: ``a ≥ 0``; the dual interval *widens* with ``a`` while the
primal reach for a bounded dual movement contracts (see :mod:`mirrorflow.geometry.effects`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mirrorflow._core.array import array_api, to_numpy
from mirrorflow._core.validation import (
    MirrorflowError,
    check_finite_array,
    check_finite_scalar,
    check_positive_int,
)
from mirrorflow.geometry.commutation import NonCommutingError
from mirrorflow.geometry.family import LegendreFamily

__all__ = ["PowerParameterization", "matched_constant", "power"]


def matched_constant(g_piece: Callable, h_piece: Callable, points=None, *, tol: float = 1e-8) -> float:
    """Check ``h = c·g + const`` for one-dimensional pieces and return ``c`` (docs/theory.md §7).

    The check is the one-dimensional bracket ``[g', h'] = h''g' − g''h'`` (relative to
    ``|h''g'| + |g''h'|``) at ``points`` (default: 0.3, 0.7, …, 2.3 and their negatives), computed
    with torch autograd in float64. Raises :class:`NonCommutingError` naming the bracket and its
    size when the pieces are not matched.
    """
    tol = check_finite_scalar("tol", tol, minimum=0.0, strict=True)
    pts = np.linspace(0.3, 2.3, 6) if points is None else np.atleast_1d(to_numpy(points))
    if points is None:
        pts = np.concatenate([pts, -pts])
    check_finite_array("points", pts)
    worst, worst_at, ratios = 0.0, float(pts[0]), []
    worst_abs = 0.0
    for t in pts:
        w = torch.tensor(float(t), dtype=torch.float64, requires_grad=True)
        gp = torch.autograd.grad(g_piece(w), w, create_graph=True)[0]
        hp = torch.autograd.grad(h_piece(w), w, create_graph=True)[0]
        gpp = torch.autograd.grad(gp, w, allow_unused=True)[0] if gp.requires_grad else None
        hpp = torch.autograd.grad(hp, w, allow_unused=True)[0] if hp.requires_grad else None
        gpp = 0.0 if gpp is None else float(gpp.detach())
        hpp = 0.0 if hpp is None else float(hpp.detach())
        gp, hp = float(gp.detach()), float(hp.detach())
        br = hpp * gp - gpp * hp
        den = abs(hpp * gp) + abs(gpp * hp)
        rel = abs(br) / den if den > 0 else 0.0
        if rel > worst:
            worst, worst_at, worst_abs = rel, float(t), abs(br)
        if gp != 0:
            ratios.append(hp / gp)
    if worst > tol:
        raise NonCommutingError(
            f"the pieces are not matched: the bracket [g', h'] = h''g' − g''h' has size "
            f"{worst_abs:.3g} (relative {worst:.3g}) at w = {worst_at:g}; the regularizer commutes "
            "only if h = c·g + const on each piece (docs/theory.md §7)"
        )
    if not ratios:
        raise MirrorflowError("g' vanishes at every sample point; pass points where g' ≠ 0")
    return float(np.median(ratios))


@dataclass(frozen=True, eq=False)
class PowerParameterization(LegendreFamily):
    """``R_a`` of ``x = u^{2k} − v^{2k}`` with the matched regularizer ``h = u^{2k} + v^{2k}``.

    Parameters
    ----------
    k : int ≥ 2
    u0, v0 : arrays (d,) of initial magnitudes (signs do not matter; ``0`` switches a side off,
        but not both at once).

    Methods mirror :class:`mirrorflow.geometry.HyperbolicEntropy` (elementwise maps, ``potential``
    and ``conjugate`` summed over the last axis). See docs/theory.md §7.
    """

    k: int
    u0: np.ndarray
    v0: np.ndarray
    name: str = "power"

    def __post_init__(self) -> None:
        k = check_positive_int("k", self.k, minimum=2)
        u0 = np.abs(np.atleast_1d(to_numpy(self.u0)))
        v0 = np.abs(np.atleast_1d(to_numpy(self.v0)))
        if u0.ndim > 1 or v0.ndim > 1:
            raise MirrorflowError("u0 and v0 must be scalars or 1-d arrays")
        u0, v0 = np.broadcast_arrays(u0, v0)
        check_finite_array("u0", u0)
        check_finite_array("v0", v0)
        if np.any((u0 == 0) & (v0 == 0)):
            raise MirrorflowError("u0 = v0 = 0 is a fixed point of the flow; pass a nonzero initialization")
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "u0", u0.astype(np.float64).copy())
        object.__setattr__(self, "v0", v0.astype(np.float64).copy())

    # ----------------------------------------------------------------- constants
    @property
    def dim(self) -> int:
        return int(self.u0.size)

    @property
    def p(self) -> int:
        return 2 * self.k - 2

    @property
    def K(self) -> float:
        return float(2 * self.k * self.p)

    @property
    def q(self) -> float:
        return self.k / (self.k - 1)

    @property
    def c_u(self) -> np.ndarray:
        """``c_u = u₀^{-p}/(2kp)`` (``inf`` where ``u₀ = 0``)."""
        with np.errstate(divide="ignore"):
            return self.u0 ** (-float(self.p)) / self.K

    @property
    def c_v(self) -> np.ndarray:
        """``c_v = v₀^{-p}/(2kp)`` (``inf`` where ``v₀ = 0``)."""
        with np.errstate(divide="ignore"):
            return self.v0 ** (-float(self.p)) / self.K

    def half_line(self, a) -> np.ndarray:
        """Mask of one-sided coordinates (``u₀ = 0`` or ``v₀ = 0``): ``x`` keeps its sign.

        >>> power(2, [1.0, 1.0], [0.0, 0.5]).half_line(0.0)
        array([ True, False])
        """
        return np.isinf(self.c_u) | np.isinf(self.c_v)

    def dual_interval(self, a) -> tuple[np.ndarray, np.ndarray]:
        """Range of ``∇R_a`` per coordinate: ``(−c_v − a, c_u + a)`` (docs/theory.md §7)."""
        a = check_finite_scalar("a", a, minimum=0.0)
        return -self.c_v - a, self.c_u + a

    # ----------------------------------------------------------------- maps
    def _sides(self, mu, a):
        U = self.c_u + a - mu
        V = self.c_v + a + mu
        return U, V

    def _x(self, mu, a) -> np.ndarray:
        U, V = self._sides(mu, a)
        q, K = self.q, self.K
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            xu = np.where(np.isinf(U), 0.0, (K * np.maximum(U, 0.0)) ** (-q))
            xv = np.where(np.isinf(V), 0.0, (K * np.maximum(V, 0.0)) ** (-q))
            x = xu - xv
        x = np.where(U <= 0, np.inf, x)
        return np.where(V <= 0, -np.inf, x)

    @array_api
    def inverse(self, mu, a) -> np.ndarray:
        """``∇R_a*(μ) = u^{2k} − v^{2k}`` at dual ``μ`` (``±inf`` beyond the dual interval)."""
        return self._x(mu, a)

    @array_api
    def reference(self, a) -> np.ndarray:
        """``x̄(a) = g(φ_h^a(w₀))``: ``(u₀^{-p} + Ka)^{-2k/p} − (v₀^{-p} + Ka)^{-2k/p}``."""
        return self._x(np.zeros(self.dim), a)

    @array_api
    def conjugate(self, mu, a) -> np.ndarray:
        """``R_a*(μ)`` normalized so ``R_a*(0) = 0``, summed over the last axis."""
        U, V = self._sides(mu, a)
        U0, V0 = self._sides(0.0, a)
        e = 1.0 - self.q
        c = self.K ** (-self.q) / (self.q - 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            tu = np.where(np.isinf(U0), 0.0, np.where(U > 0, np.maximum(U, 0) ** e, np.inf) - U0 ** e)
            tv = np.where(np.isinf(V0), 0.0, np.where(V > 0, np.maximum(V, 0) ** e, np.inf) - V0 ** e)
        return np.sum(c * (tu + tv), axis=-1)

    @array_api
    def grad(self, x, a) -> np.ndarray:
        """Mirror map ``∇R_a(x)`` (closed form one-sided; safeguarded Newton otherwise)."""
        x = np.asarray(x, dtype=np.float64)
        check_finite_array("x", x)
        a_arr = np.asarray(a, dtype=np.float64)
        x, a_b, cu, cv = np.broadcast_arrays(x, a_arr, self.c_u, self.c_v)
        q, K = self.q, self.K
        only_u, only_v = np.isinf(cv), np.isinf(cu)
        if np.any(only_u & (x <= 0)) or np.any(only_v & (x >= 0)):
            raise MirrorflowError(
                "x is outside the domain of R_a: with v0 = 0 (u0 = 0) the coordinate stays "
                "positive (negative); pass x of that sign"
            )
        lo, hi = -cv - a_b, cu + a_b
        with np.errstate(divide="ignore", invalid="ignore"):
            mu_u = cu + a_b - np.abs(x) ** (-1.0 / q) / K
            mu_v = np.abs(x) ** (-1.0 / q) / K - cv - a_b
        out = np.where(only_u, mu_u, np.where(only_v, mu_v, 0.0))
        both = ~(only_u | only_v)
        if np.any(both):
            xb, lb, hb = x[both], lo[both], hi[both]
            ab = a_b[both]
            cub, cvb = cu[both], cv[both]
            # start from the dominant side's closed form, clipped into the bracket
            with np.errstate(divide="ignore"):
                guess = np.where(xb > 0, cub + ab - np.abs(xb) ** (-1 / q) / K,
                                 np.abs(xb) ** (-1 / q) / K - cvb - ab)
            mu = np.where((guess > lb) & (guess < hb), guess, 0.5 * (lb + hb))
            for _ in range(200):
                U, V = cub + ab - mu, cvb + ab + mu
                f = (K * U) ** (-q) - (K * V) ** (-q) - xb
                lb = np.where(f < 0, mu, lb)
                hb = np.where(f > 0, mu, hb)
                df = q * K * ((K * U) ** (-q - 1) + (K * V) ** (-q - 1))
                new = mu - f / df
                bad = ~((new > lb) & (new < hb))
                new = np.where(bad, 0.5 * (lb + hb), new)
                conv = np.abs(new - mu) <= 4e-16 * np.maximum(1.0, np.abs(mu))
                mu = new
                if np.all(conv | (f == 0)):
                    break
            out[both] = mu
        return out

    @array_api
    def potential(self, x, a) -> np.ndarray:
        """``R_a(x) = ⟨∇R_a(x), x⟩ − R_a*(∇R_a(x))``, summed over the last axis; ``R_a(x̄(a)) = 0``."""
        mu = to_numpy(self.grad(x, a))
        return np.sum(mu * x, axis=-1) - to_numpy(self.conjugate(mu, a))

    @array_api
    def inverse_derivative(self, mu, a) -> np.ndarray:
        """Diagonal of ``∇²R_a*(μ)``: ``q K^{-q} (U^{-q-1} + V^{-q-1})`` (elementwise; theory §7)."""
        U, V = self._sides(np.asarray(mu, dtype=np.float64), a)
        q, K = self.q, self.K
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            du = np.where(np.isinf(U), 0.0, np.maximum(U, 0.0) ** (-q - 1))
            dv = np.where(np.isinf(V), 0.0, np.maximum(V, 0.0) ** (-q - 1))
        return q * K ** (-q) * (du + dv)

    @array_api
    def hessian(self, x, a) -> np.ndarray:
        """Diagonal of ``∇²R_a(x) = 1 / ∇²R_a*(∇R_a(x))`` (elementwise)."""
        return 1.0 / to_numpy(self.inverse_derivative(to_numpy(self.grad(x, a)), a))

    def blowup_dual(self, a) -> np.ndarray:
        """Dual time ``μ`` at which ``u`` blows up under a constant push: ``c_u + a`` (theory §7)."""
        return self.dual_interval(a)[1]

    # torch pieces (for the commutation checks and simulations)
    def forward_torch(self, w: torch.Tensor) -> torch.Tensor:
        """``g(w) = u^{2k} − v^{2k}`` with ``w = (u, v)`` concatenated."""
        d = self.dim
        return w[:d] ** (2 * self.k) - w[d:] ** (2 * self.k)

    def regularizer_torch(self, w: torch.Tensor) -> torch.Tensor:
        """The matched regularizer ``h(w) = Σ u^{2k} + v^{2k}``."""
        return torch.sum(w ** (2 * self.k))


def power(k: int, u0, v0=0.0) -> PowerParameterization:
    """``R_a`` of ``x = u^{2k} − v^{2k}`` with ``h = u^{2k} + v^{2k}`` (docs/theory.md §7)."""
    return PowerParameterization(k, u0, v0)
