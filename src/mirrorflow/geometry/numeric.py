"""Numeric engine for any commuting pair ``(g, h)`` (docs/theory.md §2, §7).

For commuting gradient fields the central theorem gives ``x = ∇R_a*(μ) = g(Ψ(φ_h^a(w₀), μ))``:

1. *regularized initialization* ``w₀(a) = φ_h^a(w₀)``: integrate ``dw/ds = −∇h(w)`` for ``s ∈ [0, a]``;
2. *dual flow*: since the fields commute, ``Ψ(w, μ)`` is the time-1 flow of ``Σ_i μ_i ∇g_i``,
   i.e. ``dw/ds = J_g(w)ᵀ μ`` on ``s ∈ [0, 1]``; along it ``d/ds R_a*(sμ) = ⟨g(w(s)), μ⟩``, so the
   conjugate comes out of the same integration;
3. ``∇R_a(x)``: Newton on ``∇R_a*(μ) = x`` with the exact Jacobian ``∇²R_a*(μ) = J_g J_gᵀ`` at
   ``w = Ψ(w₀(a), μ)`` (``∂Ψ/∂μ_j = ∇g_j`` for commuting fields), damped on the residual.

Everything is float64 (scipy DOP853, tight tolerances, torch autograd for the fields). It is slow
but general, and it refuses pairs that fail :func:`check_commutation`. The range of ``∇R_a`` is
found by simulated blow-up along each dual axis (:meth:`NumericLegendre.dual_interval`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.integrate import solve_ivp

from mirrorflow._core.array import array_api, to_numpy
from mirrorflow._core.validation import MirrorflowError, check_finite_array, check_finite_scalar
from mirrorflow.geometry.commutation import _resolve_h, check_commutation, weight_decay
from mirrorflow.geometry.family import LegendreFamily

__all__ = ["NumericLegendre"]


@dataclass(frozen=True, eq=False)
class NumericLegendre(LegendreFamily):
    """``R_a`` of a commuting pair by integrating the flows (docs/theory.md §2, §7).

    Parameters
    ----------
    g : torch function ``w (m,) -> x (n,)``.
    h : torch function ``w -> scalar`` or ``"weight_decay"``.
    w0 : (m,) initialization.
    rtol, atol : ODE tolerances.
    check : run :func:`check_commutation` at ``w₀`` and random points near it and raise
        :class:`NonCommutingError` if the pair does not commute (default on; nothing is
        silently approximated).
    blowup : ``‖w‖`` treated as blow-up when locating the range of ``∇R_a``.
    """

    g: Callable
    h: Callable | str
    w0: np.ndarray
    rtol: float = 1e-12
    atol: float = 1e-14
    check: bool = True
    seed: int = 0
    blowup: float = 1e6
    name: str = "numeric"

    def __post_init__(self) -> None:
        w0 = np.atleast_1d(to_numpy(self.w0)).astype(np.float64)
        if w0.ndim != 1:
            raise MirrorflowError(f"w0 must be a 1-d parameter vector, got shape {w0.shape}")
        check_finite_array("w0", w0)
        h = _resolve_h(self.h)
        if h is None:
            raise MirrorflowError("pass a regularizer h (a torch function or 'weight_decay')")
        check_finite_scalar("rtol", self.rtol, minimum=0.0, strict=True)
        object.__setattr__(self, "w0", w0)
        object.__setattr__(self, "h", h)
        wt = torch.as_tensor(w0)
        try:
            n = int(torch.atleast_1d(self.g(wt)).numel())
        except Exception as exc:
            raise MirrorflowError(f"g failed at w0: {exc}") from None
        object.__setattr__(self, "_n", n)
        if self.check:
            gen = np.random.default_rng(self.seed)
            scale = max(float(np.abs(w0).max()), 1e-3)
            pts = np.vstack([w0, w0 + 0.3 * scale * gen.standard_normal((5, w0.size))])
            check_commutation(self.g, h, points=pts).require()

    @property
    def dim(self) -> int:
        return self._n

    # ----------------------------------------------------------------- torch helpers
    def _gvec(self, w: torch.Tensor) -> torch.Tensor:
        return torch.atleast_1d(self.g(w)).reshape(-1)

    def _jac(self, w: np.ndarray) -> np.ndarray:
        return torch.func.jacrev(self._gvec)(torch.as_tensor(w)).detach().numpy()

    # ----------------------------------------------------------------- flows
    def regularized_init(self, a) -> np.ndarray:
        """``φ_h^a(w₀)``: the time-``a`` flow of ``−∇h`` (exact ``e^{−a}w₀`` for weight decay)."""
        a = check_finite_scalar("a", a, minimum=0.0)
        if self.h is weight_decay:
            return np.exp(-a) * self.w0
        if a == 0:
            return self.w0.copy()
        gh = torch.func.grad(lambda w: torch.as_tensor(self.h(w)).reshape(()))

        def rhs(s, w):
            return -gh(torch.as_tensor(w)).numpy()

        sol = solve_ivp(rhs, (0.0, a), self.w0, method="DOP853", rtol=self.rtol, atol=self.atol)
        if not sol.success:
            raise MirrorflowError(f"the regularizer's flow failed before a = {a:g}: {sol.message}")
        return sol.y[:, -1]

    def _dual_flow(self, mu: np.ndarray, w_a: np.ndarray) -> tuple[np.ndarray, float, bool]:
        """Integrate ``dw/ds = J_gᵀμ`` and ``dR*/ds = ⟨g(w), μ⟩`` on ``[0, 1]``."""
        mu_t = torch.as_tensor(mu)
        m = w_a.size

        def rhs(s, y):
            w = torch.as_tensor(y[:m])
            x, vjp = torch.func.vjp(self._gvec, w)
            return np.concatenate([vjp(mu_t)[0].numpy(), [float(x @ mu_t)]])

        def blow(s, y):
            return self.blowup - np.linalg.norm(y[:m])

        blow.terminal = True
        sol = solve_ivp(rhs, (0.0, 1.0), np.append(w_a, 0.0), method="DOP853", rtol=self.rtol,
                        atol=self.atol, events=blow)
        ok = sol.success and sol.status == 0 and np.all(np.isfinite(sol.y[:, -1]))
        return sol.y[:m, -1], float(sol.y[m, -1]), bool(ok)

    def _point(self, mu: np.ndarray, w_a: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, bool]:
        w, r, ok = self._dual_flow(mu, w_a)
        x = self._gvec(torch.as_tensor(w)).detach().numpy()
        return x, r, w, ok

    def _batch(self, arr, a, fn):
        arr = np.asarray(arr, dtype=np.float64)
        if arr.shape[-1:] != (self.dim,):
            raise MirrorflowError(f"last axis must have length {self.dim}, got shape {arr.shape}")
        flat = arr.reshape(-1, self.dim)
        w_a = self.regularized_init(a)
        return [fn(row, w_a) for row in flat], arr.shape

    # ----------------------------------------------------------------- public maps
    @array_api
    def inverse(self, mu, a) -> np.ndarray:
        """``∇R_a*(μ) = g(Ψ(φ_h^a(w₀), μ))``; ``nan`` where the flow blows up before time 1."""
        def one(m, w_a):
            x, _, _, ok = self._point(m, w_a)
            return x if ok else np.full(self.dim, np.nan)

        out, shape = self._batch(mu, a, one)
        return np.stack(out).reshape(shape)

    @array_api
    def conjugate(self, mu, a) -> np.ndarray:
        """``R_a*(μ) − R_a*(0) = ∫_0^1 ⟨∇R_a*(sμ), μ⟩ ds`` (from the same integration)."""
        def one(m, w_a):
            _, r, _, ok = self._point(m, w_a)
            return r if ok else np.inf

        out, shape = self._batch(mu, a, one)
        return np.asarray(out).reshape(shape[:-1])

    @array_api
    def reference(self, a) -> np.ndarray:
        """``x̄(a) = g(φ_h^a(w₀))``."""
        return self._gvec(torch.as_tensor(self.regularized_init(a))).detach().numpy()

    def _solve(self, x: np.ndarray, w_a: np.ndarray, max_iter: int = 60) -> np.ndarray:
        """Newton on the convex ``Φ(μ) = R_a*(μ) − ⟨x, μ⟩`` (Hessian ``J_g J_gᵀ``), Armijo-damped."""
        mu = np.zeros(self.dim)
        xm, r, w, _ = self._point(mu, w_a)
        phi = r - float(mu @ x)
        scale = max(np.linalg.norm(x), np.linalg.norm(xm), 1e-300)
        for _ in range(max_iter):
            grad = xm - x
            if np.linalg.norm(grad) <= 1e-12 * scale:
                break
            J = self._jac(w)
            step = -np.linalg.solve(J @ J.T, grad)
            slope = float(grad @ step)
            t = 1.0
            for _ in range(60):
                cand = mu + t * step
                xc, rc, wc, okc = self._point(cand, w_a)
                pc = rc - float(cand @ x)
                if okc and (pc <= phi + 0.25 * t * slope
                            or (pc <= phi + 1e-14 * abs(phi)
                                and np.linalg.norm(xc - x) < np.linalg.norm(grad))):
                    break
                t *= 0.5
            else:
                break
            mu, xm, w, phi = cand, xc, wc, pc
            if np.max(np.abs(t * step)) <= 1e-14 * (1 + np.max(np.abs(mu))):
                break
        res = float(np.linalg.norm(xm - x))
        if not res <= 1e-8 * scale:
            raise MirrorflowError(
                f"could not solve ∇R_a*(μ) = x (residual {res:.3g}); x may be outside the domain "
                "of R_a (the range of g along the flows)"
            )
        return mu

    @array_api
    def grad(self, x, a) -> np.ndarray:
        """Mirror map ``∇R_a(x)`` by Newton with Jacobian ``J_g J_gᵀ`` (slow, general)."""
        check_finite_array("x", np.asarray(x))
        out, shape = self._batch(x, a, self._solve)
        return np.stack(out).reshape(shape)

    @array_api
    def potential(self, x, a) -> np.ndarray:
        """``R_a(x) = ⟨μ, x⟩ − R_a*(μ)`` at ``μ = ∇R_a(x)``; ``R_a(x̄(a)) = 0``."""
        def one(row, w_a):
            mu = self._solve(row, w_a)
            _, r, _, _ = self._point(mu, w_a)
            return float(mu @ row) - r

        out, shape = self._batch(x, a, one)
        return np.asarray(out).reshape(shape[:-1])

    def dual_interval(self, a, *, mu_max: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
        """Range of ``∇R_a`` along each dual axis, by simulated blow-up (``±inf`` if none by ``mu_max``).

        Integrates ``dw/ds = ±∇g_i(w)`` from ``φ_h^a(w₀)`` and records the ``s`` at which
        ``‖w‖`` reaches ``blowup`` (docs/theory.md §7: the map saturates at the interval's ends).
        """
        mu_max = check_finite_scalar("mu_max", mu_max, minimum=0.0, strict=True)
        w_a = self.regularized_init(a)
        lo, hi = np.full(self.dim, -np.inf), np.full(self.dim, np.inf)
        for i in range(self.dim):
            for sign in (1.0, -1.0):
                e = torch.zeros(self.dim, dtype=torch.float64)
                e[i] = sign

                def rhs(s, w, e=e):
                    _, vjp = torch.func.vjp(self._gvec, torch.as_tensor(w))
                    return vjp(e)[0].numpy()

                def blow(s, w):
                    return self.blowup - np.linalg.norm(w)

                blow.terminal = True
                sol = solve_ivp(rhs, (0.0, mu_max), w_a, method="DOP853", rtol=self.rtol,
                                atol=self.atol, events=blow)
                if sol.t_events[0].size:
                    s = float(sol.t_events[0][0])
                    if sign > 0:
                        hi[i] = s
                    else:
                        lo[i] = -s
        return lo, hi
