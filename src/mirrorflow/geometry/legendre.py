"""Closed-form time-dependent Legendre functions ``R_a`` for weight decay (docs/theory.md §3).

All three classic parameterizations share one family, the *hyperbolic entropy*::

    ∇R_a(x) = c · [ arcsinh(x / β(a)) − arcsinh(x̄(a) / β(a)) ]
    β(a)    = β₀ e^{−2a},        x̄(a) = x̄₀ e^{−2a}

with, per coordinate and for weight decay ``h = ‖w‖²/2``:

=============  ======  ==================  ============  =======================
``x = g(w)``    ``c``   ``β₀``              ``x̄₀``        ``scale`` (theory's)
=============  ======  ==================  ============  =======================
``u ⊙ v``       ½       ``|u₀² − v₀²|/2``   ``u₀ v₀``     ``|δ(a)| = 2β(a)``
``u² − v²``     ¼       ``2|u₀ v₀|``        ``u₀² − v₀²`` ``2|κ(a)| = β(a)``
``u²``          ¼       0                   ``u₀²``       0
=============  ======  ==================  ============  =======================

A coordinate with ``β₀ = 0`` is *balanced*: its mirror map is the limit
``∇R_a(x) = c · sign(x̄) · log(x / x̄(a))`` on the half-line of ``sign(x̄)`` (the sign of ``x`` is
frozen). ``u²`` is always of this kind: weight decay only moves its reference point.

Sign convention: ``a = ∫ α_t dt ≥ 0`` (the published text writes ``a ≤ 0``).
The potential is normalized so that ``min R_a = R_a(x̄(a)) = 0``; it equals the Bregman
divergence ``D_{R_a}(x, x̄(a))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirrorflow._core.array import array_api, to_numpy
from mirrorflow._core.validation import MirrorflowError, check_finite_array
from mirrorflow.geometry.family import LegendreFamily, _underflow_a

__all__ = ["HyperbolicEntropy", "u_squared", "u_squared_minus_v_squared", "uv"]


@dataclass(frozen=True, eq=False)
class HyperbolicEntropy(LegendreFamily):
    """Separable time-dependent Legendre function ``R_a(x) = Σ_i R_{a,i}(x_i)``.

    Parameters
    ----------
    coef : float
        The constant ``c`` in front of the mirror map (½ for ``u⊙v``, ¼ for ``u²−v²``, ``u²``).
    beta0 : array (d,)
        Half-width ``β₀ ≥ 0`` of the quadratic region at ``a = 0``.
    xbar0 : array (d,)
        Reference point ``x̄₀ = g(w₀)`` at ``a = 0``.
    scale_factor : float
        ``scale(a) = scale_factor · β(a)``: the theory's shape parameter (``|δ(a)|`` for ``u⊙v``).
    name : str
        Parameterization this family comes from.

    Array arguments of the methods accept numpy arrays or torch tensors (returned as float64
    tensors). ``a`` broadcasts elementwise against ``x``; for a batch of ``a`` values use
    ``a[:, None]``. See docs/theory.md §3.

    >>> f = uv(1.0, 0.0)                  # δ₀ = 1: β₀ = ½, x̄₀ = 0
    >>> f.reference(0.0), f.scale(0.0)    # x̄(0) = u₀v₀ and |δ(0)| = u₀² − v₀²
    (array([0.]), array([1.]))
    >>> bool(f.grad(np.array([0.5]), 0.0)[0] == 0.5 * np.arcsinh(1.0))   # ½ arcsinh(2x/|δ|)
    True
    >>> round(float(f.inverse(f.grad(np.array([0.3]), 2.0), 2.0)[0]), 12)
    0.3
    """

    coef: float
    beta0: np.ndarray
    xbar0: np.ndarray
    scale_factor: float = 1.0
    name: str = "hyperbolic"

    def __post_init__(self) -> None:
        beta0 = np.atleast_1d(to_numpy(self.beta0))
        xbar0 = np.atleast_1d(to_numpy(self.xbar0))
        beta0, xbar0 = np.broadcast_arrays(beta0, xbar0)
        check_finite_array("initialization", np.stack([beta0, xbar0]))
        if np.any(beta0 < 0):
            raise MirrorflowError("beta0 must be >= 0")
        dead = (beta0 == 0) & (xbar0 == 0)
        if np.any(dead):
            i = int(np.flatnonzero(dead)[0])
            raise MirrorflowError(
                f"coordinate {i} is initialized at a fixed point (u0 = v0 = 0): the flow never "
                "leaves 0 there; use a nonzero initialization"
            )
        object.__setattr__(self, "beta0", beta0.copy())
        object.__setattr__(self, "xbar0", xbar0.copy())

    # ----------------------------------------------------------------- parameters
    @property
    def dim(self) -> int:
        return int(self.beta0.shape[-1])

    @property
    def balanced(self) -> np.ndarray:
        """Boolean mask of coordinates with ``β₀ = 0`` (sign of ``x`` frozen)."""
        return self.beta0 == 0

    def half_line(self, a) -> np.ndarray:
        """Mask of coordinates with ``β(a) = 0``: their ``x`` keeps the sign of ``x̄`` (balanced,
        or ``β₀e^{−2a}`` underflowed).

        >>> uv([1.0, 1.0], [1.0, 0.0]).half_line(0.0)
        array([ True, False])
        """
        return self._beta(np.asarray(a, dtype=np.float64)) == 0

    def explain_frozen(self, idx, a) -> tuple[str, str]:
        """``(why, fix)``: why coordinates ``idx`` keep their sign at ``a``, and what to change."""
        idx = np.asarray(idx)
        if np.all(self.beta0[idx] == 0):
            return ("balanced: u0² = v0², or x = u², so x_i never changes sign",
                    "start them unbalanced (u0² ≠ v0²)")
        return (f"β(a) = β₀e^(−2a) underflows to 0 at a = {a:g}, which freezes the sign",
                f"use a smaller a (about a < {_underflow_a(self.beta0[idx]):.0f})")

    def dual_unit(self) -> float:
        """Dual movement ``c`` per unit of ``θ = μ/c`` (the Newton trust region is 20 units)."""
        return self.coef

    def _beta(self, a: np.ndarray) -> np.ndarray:
        return self.beta0 * np.exp(-2.0 * a)

    @array_api
    def beta(self, a) -> np.ndarray:
        """Half-width ``β(a) = β₀ e^{−2a}`` of the region where ``R_a`` is quadratic."""
        return self._beta(a)

    @array_api
    def reference(self, a) -> np.ndarray:
        """Reference point ``x̄(a) = g(φ_h^a(w₀)) = x̄₀ e^{−2a}``, the minimizer of ``R_a``."""
        return self.xbar0 * np.exp(-2.0 * a)

    @array_api
    def scale(self, a) -> np.ndarray:
        """Shape parameter of docs/theory.md §3 (``|δ(a)|`` for ``u⊙v``); shrinks as ``e^{−2a}``."""
        return self.scale_factor * self._beta(a)

    # ----------------------------------------------------------------- internals
    def _parts(self, a):
        beta = self._beta(np.asarray(a, dtype=np.float64))
        xbar = self.xbar0 * np.exp(-2.0 * np.asarray(a, dtype=np.float64))
        bal = beta == 0
        safe_beta = np.where(bal, 1.0, beta)
        s = np.arcsinh(xbar / safe_beta)
        sgn = np.sign(xbar)
        safe_xbar = np.where(xbar == 0, 1.0, xbar)
        return beta, xbar, bal, safe_beta, s, sgn, safe_xbar

    def _check_domain(self, x: np.ndarray, bal, xbar) -> None:
        bad = bal & ~(x * np.sign(xbar) > 0)
        if np.any(bad):
            raise MirrorflowError(
                "x is outside the domain of R_a: a balanced coordinate (u0² = v0², or x = u²) "
                "keeps the sign of its reference point and cannot reach 0; pass x with that sign"
            )

    # ----------------------------------------------------------------- the maps
    @array_api
    def grad(self, x, a) -> np.ndarray:
        """Mirror map ``∇R_a(x)`` (elementwise)."""
        beta, xbar, bal, sb, s, sgn, sx = self._parts(a)
        self._check_domain(x, bal, xbar)
        with np.errstate(divide="ignore", invalid="ignore"):
            hyp = np.arcsinh(x / sb) - s
            log = sgn * np.log(np.where(bal, x / sx, 1.0))
        return self.coef * np.where(bal, log, hyp)

    @array_api
    def inverse(self, mu, a) -> np.ndarray:
        """Inverse mirror map ``(∇R_a)^{-1}(μ) = ∇R_a*(μ)`` (elementwise)."""
        beta, xbar, bal, sb, s, sgn, sx = self._parts(a)
        theta = mu / self.coef
        with np.errstate(over="ignore"):
            hyp = sb * np.sinh(theta + s)
            log = xbar * np.exp(np.where(bal, sgn * theta, 0.0))
        return np.where(bal, log, hyp)

    @array_api
    def potential(self, x, a) -> np.ndarray:
        """``R_a(x)``, summed over the last axis; normalized so that ``R_a(x̄(a)) = 0``."""
        beta, xbar, bal, sb, s, sgn, sx = self._parts(a)
        self._check_domain(x, bal, xbar)
        with np.errstate(divide="ignore", invalid="ignore"):
            hyp = x * (np.arcsinh(x / sb) - s) - np.hypot(x, beta) + np.hypot(xbar, beta)
            r = np.where(bal, x / sx, 1.0)
            log = sgn * x * np.log(r) - np.abs(x) + np.abs(xbar)
        return np.sum(self.coef * np.where(bal, log, hyp), axis=-1)

    @array_api
    def conjugate(self, mu, a) -> np.ndarray:
        """Convex conjugate ``R_a*(μ)``, summed over the last axis (``∇R_a* = inverse``)."""
        beta, xbar, bal, sb, s, sgn, sx = self._parts(a)
        theta = mu / self.coef
        with np.errstate(over="ignore"):
            hyp = sb * (np.cosh(theta + s) - np.cosh(s))
            log = np.abs(xbar) * np.expm1(np.where(bal, sgn * theta, 0.0))
        return np.sum(self.coef * np.where(bal, log, hyp), axis=-1)

    @array_api
    def hessian(self, x, a) -> np.ndarray:
        """Diagonal of ``∇²R_a(x)``: ``c / sqrt(x² + β(a)²)`` (elementwise)."""
        beta = self._beta(np.asarray(a, dtype=np.float64))
        return self.coef / np.hypot(x, beta)

    @array_api
    def inverse_derivative(self, mu, a) -> np.ndarray:
        """Diagonal of ``∇²R_a*(μ)`` = ``d inverse/dμ`` = ``sqrt(x² + β²)/c`` at ``x = inverse(μ)``."""
        x = to_numpy(self.inverse(mu, a))
        beta = self._beta(np.asarray(a, dtype=np.float64))
        return np.hypot(x, beta) / self.coef

    @array_api
    def bregman(self, x, z, a) -> np.ndarray:
        """Bregman divergence ``D_{R_a}(x, z) = R_a(x) − R_a(z) − ⟨∇R_a(z), x − z⟩`` (≥ 0)."""
        rx = to_numpy(self.potential(x, a))
        rz = to_numpy(self.potential(z, a))
        gz = to_numpy(self.grad(z, a))
        return np.maximum(rx - rz - np.sum(gz * (x - z), axis=-1), 0.0)


def _init(u0, v0=0.0) -> tuple[np.ndarray, np.ndarray]:
    u0 = np.atleast_1d(to_numpy(u0))
    v0 = np.atleast_1d(to_numpy(v0))
    if u0.ndim > 1 or v0.ndim > 1:
        raise MirrorflowError("u0 and v0 must be scalars or 1-d arrays (one entry per coordinate)")
    if u0.shape != v0.shape and 1 not in (u0.size, v0.size):
        raise MirrorflowError(
            f"u0 has {u0.size} entries but v0 has {v0.size}; pass arrays of the same length"
        )
    u0, v0 = np.broadcast_arrays(u0, v0)
    check_finite_array("u0", u0)
    check_finite_array("v0", v0)
    return u0.astype(np.float64), v0.astype(np.float64)


def uv(u0, v0) -> HyperbolicEntropy:
    """``R_a`` of ``x = u ⊙ v`` under weight decay: hyperbolic entropy, ``δ(a) = δ₀ e^{−2a}``."""
    u0, v0 = _init(u0, v0)
    return HyperbolicEntropy(0.5, np.abs(u0**2 - v0**2) / 2, u0 * v0, 2.0, "uv")


def u_squared_minus_v_squared(u0, v0) -> HyperbolicEntropy:
    """``R_a`` of ``x = u² − v²``: hyperbolic entropy with scale ``2|κ(a)|``, ``κ = u v``."""
    u0, v0 = _init(u0, v0)
    return HyperbolicEntropy(0.25, 2 * np.abs(u0 * v0), u0**2 - v0**2, 1.0, "u2-v2")


def u_squared(u0) -> HyperbolicEntropy:
    """``R_a`` of ``x = u²``: ``∇R_a(x) = ¼ log(x / x̄(a))``; only the position moves."""
    u0, _ = _init(u0, 0.0)
    return HyperbolicEntropy(0.25, np.zeros_like(u0), u0**2, 0.0, "u2")
