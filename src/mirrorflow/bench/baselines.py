"""Reference implementations written the way peer research scripts do it.

One configuration at a time, a Python ``for`` loop with one gradient step per iteration, plain
numpy. These are the baselines the benchmarks time mirrorflow against, and the independent
reference the benchmarks check mirrorflow's results with before timing.
"""

from __future__ import annotations

import numpy as np


def sparse_regression_gd(A, y, u0, v0, lr, wd, steps, switch_at=None):
    """Gradient descent on ``f = ½‖A(u⊙v) − y‖²`` with weight decay ``wd`` (off after ``switch_at``)."""
    u = np.array(u0, dtype=np.float64)
    v = np.array(v0, dtype=np.float64)
    for k in range(steps):
        lam = wd if switch_at is None or (k + 0.5) * lr < switch_at else 0.0
        x = u * v
        r = A @ x - y
        g = A.T @ r
        u, v = u - lr * (g * v + lam * u), v - lr * (g * u + lam * v)
    return u * v


def matrix_sensing_gd(A, y, U0, V0, lr, wd, steps, switch_at=None):
    """Gradient descent on ``f = ½ Σ_i (⟨A_i, U Vᵀ⟩ − y_i)²`` with weight decay on ``U, V``."""
    m, d, _ = A.shape
    Af = A.reshape(m, d * d)
    U = np.array(U0, dtype=np.float64)
    V = np.array(V0, dtype=np.float64)
    for k in range(steps):
        lam = wd if switch_at is None or (k + 0.5) * lr < switch_at else 0.0
        X = U @ V.T
        r = Af @ X.ravel() - y
        G = (Af.T @ r).reshape(d, d)
        U, V = U - lr * (G @ V + lam * U), V - lr * (G.T @ U + lam * V)
    return U @ V.T


def hyperbolic_entropy_cvxpy(A, y, coef, beta, s, solver="CLARABEL"):
    """``argmin_{Ax = y} R(x)`` for the hyperbolic entropy with cvxpy (exponential cone).

    ``R(x) = c Σ [x (arcsinh(x/β) − s) − sqrt(x² + β²)] + const`` (docs/theory.md §3, in the
    notation of ``mirrorflow.geometry.HyperbolicEntropy``). cvxpy has no ``arcsinh``; we use the
    variational form, for ``γ = β/2``::

        x arcsinh(x/β) − sqrt(x² + β²) = min_{p, q ≥ 0, p − q = x} p log(p/γ) + q log(q/γ) − p − q

    (the minimizer has ``p q = γ²``, i.e. ``p = (sqrt(x² + β²) + x)/2``), and
    ``p log(p/γ) = −entr(p) − p log γ``. Returns ``(x, solve_seconds)``.
    """
    import cvxpy as cp

    n, d = A.shape
    beta = np.broadcast_to(np.asarray(beta, dtype=np.float64), (d,))
    s = np.broadcast_to(np.asarray(s, dtype=np.float64), (d,))
    gamma = beta / 2.0
    p = cp.Variable(d)
    q = cp.Variable(d)
    lin = -(1.0 + np.log(gamma))
    obj = coef * (cp.sum(-cp.entr(p) - cp.entr(q)) + lin @ (p + q) - s @ (p - q))
    prob = cp.Problem(cp.Minimize(obj), [A @ (p - q) == y])
    prob.solve(solver=solver)
    if p.value is None:
        raise RuntimeError(f"cvxpy did not solve the problem (status {prob.status})")
    return p.value - q.value, prob.solver_stats.solve_time
