"""Implicit bias at convergence: ``x_∞ = argmin_{Ax = y} R_a(x)`` (docs/theory.md §5).

Solved through the convex dual ``min_λ F(λ) = R_a*(Aᵀλ) − ⟨λ, y⟩`` by damped Newton with an
Armijo backtracking line search. At the dual optimum ``x = ∇R_a*(Aᵀλ)`` satisfies
``∇R_a(x) = Aᵀλ ∈ range(Aᵀ)`` exactly, so the KKT residual is the primal feasibility ``‖Ax − y‖``.

Why the dual and not root finding on ``A ∇R*(Aᵀλ) = y``: for a tiny scale (``a = 6`` gives
``|δ| ≈ 6e-6``) that map is nearly flat and then exponentially steep; plain Newton on it
overshoots to overflow. On the dual every step is a descent step of a convex function, and the
line search keeps iterates finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from mirrorflow._core.array import to_numpy
from mirrorflow._core.threads import blas_threads
from mirrorflow._core.validation import (
    MirrorflowError,
    check_finite_array,
    check_finite_scalar,
    check_positive_int,
)
from mirrorflow.geometry.legendre import HyperbolicEntropy

__all__ = ["ImplicitBiasResult", "implicit_bias"]


@dataclass(frozen=True)
class ImplicitBiasResult:
    """Solution of ``min R_a(x) s.t. Ax = y``.

    Attributes
    ----------
    x : (d,) the predicted limit.
    dual : (n,) the multiplier ``λ`` with ``∇R_a(x) = Aᵀλ``.
    kkt_residual : ``‖Ax − y‖ / max(1, ‖y‖)`` (stationarity holds by construction).
    iterations : Newton iterations used.
    converged : whether ``kkt_residual <= tol``.
    """

    x: np.ndarray
    dual: np.ndarray
    kkt_residual: float
    iterations: int
    converged: bool


def _check_problem(A, y, d: int) -> tuple[np.ndarray, np.ndarray]:
    A = to_numpy(A)
    y = to_numpy(y)
    if A.ndim != 2:
        raise MirrorflowError(f"A must be a 2-d matrix (n, d), got shape {A.shape}")
    if y.ndim != 1 or y.shape[0] != A.shape[0]:
        raise MirrorflowError(
            f"y must have shape ({A.shape[0]},) to match A of shape {A.shape}, got {y.shape}"
        )
    if A.shape[1] != d:
        raise MirrorflowError(
            f"A has {A.shape[1]} columns but the Legendre function has dimension {d}; "
            "pass an initialization with one entry per column of A"
        )
    check_finite_array("A", A)
    check_finite_array("y", y)
    return A, y


def implicit_bias(
    A,
    y,
    legendre: HyperbolicEntropy,
    a: float = 0.0,
    *,
    tol: float = 1e-12,
    max_iter: int = 500,
    threads: int | None = 1,
) -> ImplicitBiasResult:
    """Predict the limit of the mirror flow: ``argmin_{Ax = y} R_a(x)``.

    Parameters
    ----------
    A : (n, d) array, y : (n,) array
        The interpolation constraint. ``A`` should have full row rank.
    legendre : HyperbolicEntropy
        The Legendre family (e.g. :func:`mirrorflow.geometry.uv`).
    a : float
        Integrated weight decay at convergence (``a_∞``; ≥ 0).
    tol : float
        Target for the KKT residual ``‖Ax − y‖ / max(1, ‖y‖)``.
    max_iter : int
        Cap on Newton iterations.
    threads : int or None
        BLAS threads during the solve (via ``threadpoolctl`` when installed; restored
        afterwards). One thread is the default: on a shared machine a multi-threaded BLAS spins
        on busy cores and runs 10× slower (docs/benchmarks.md). ``None`` keeps the setting.

    Returns
    -------
    ImplicitBiasResult
        With ``kkt_residual`` and ``iterations`` reported (check ``converged``).
    """
    A, y = _check_problem(A, y, legendre.dim)
    a = check_finite_scalar("a", a, minimum=0.0)
    tol = check_finite_scalar("tol", tol, minimum=0.0, strict=True)
    max_iter = check_positive_int("max_iter", max_iter)
    if threads is not None:
        threads = check_positive_int("threads", threads)
    with blas_threads(threads):
        return _solve(A, y, legendre, a, tol, max_iter)


def _solve(A, y, legendre, a, tol, max_iter) -> ImplicitBiasResult:
    """Damped Newton on the dual (docs/theory.md §5); arguments already validated."""
    ynorm = max(1.0, float(np.linalg.norm(y)))

    def dual(lam):
        mu = A.T @ lam
        x = legendre.inverse(mu, a)
        val = float(legendre.conjugate(mu, a)) - float(lam @ y)
        return val, x, mu

    lam = np.zeros(A.shape[0])
    val, x, mu = dual(lam)
    it = 0
    for it in range(1, max_iter + 1):
        grad = A @ x - y
        if np.linalg.norm(grad) / ynorm <= tol:
            it -= 1
            break
        curv = legendre.inverse_derivative(mu, a)
        H = (A * curv) @ A.T
        H[np.diag_indices_from(H)] += 1e-300 + 1e-14 * np.max(np.abs(np.diag(H)))
        try:
            step = -scipy.linalg.solve(H, grad, assume_a="pos", check_finite=False)
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            step = -np.linalg.lstsq(H, grad, rcond=None)[0]
        slope = float(grad @ step)
        gnorm = np.linalg.norm(grad)
        # trust region in the exponent: change θ = μ/c by at most 20 per step (a flat start with
        # a tiny scale would otherwise propose steps of size ~1/|δ| that overflow cosh)
        dmu = np.max(np.abs(A.T @ step)) / legendre.coef
        t = min(1.0, 20.0 / dmu) if dmu > 0 else 1.0
        for _ in range(80):
            new_val, new_x, new_mu = dual(lam + t * step)
            if np.isfinite(new_val) and np.all(np.isfinite(new_x)):
                if new_val <= val + 0.25 * t * slope:
                    break
                # near the optimum the Armijo test drowns in rounding: accept a step that
                # reduces the gradient without increasing F beyond rounding level
                if new_val <= val + 1e-13 * abs(val) and np.linalg.norm(A @ new_x - y) < gnorm:
                    break
            t *= 0.5
        else:
            break  # no progress possible at float64 precision
        lam = lam + t * step
        val, x, mu = new_val, new_x, new_mu
    resid = float(np.linalg.norm(A @ x - y) / ynorm)
    return ImplicitBiasResult(np.asarray(x), lam, resid, it, resid <= tol)
