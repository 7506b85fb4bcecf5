"""Implicit-bias predictor (docs/theory.md §5) against independent checks."""

import numpy as np
import pytest
from scipy.linalg import null_space
from scipy.optimize import minimize

from mirrorflow import MirrorflowError
from mirrorflow.geometry import implicit_bias, u_squared_minus_v_squared, uv


def _problem(n=8, d=20, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(0, 1 / np.sqrt(n), (n, d))
    x_star = np.zeros(d)
    x_star[rng.choice(d, 3, replace=False)] = rng.normal(size=3)
    return A, A @ x_star


@pytest.mark.parametrize("a", [0.0, 1.0, 6.0])
def test_kkt_conditions_hold(a):
    """Feasibility and ∇R_a(x) ⟂ null(A), checked through an independent null-space basis."""
    A, y = _problem()
    fam = uv(np.ones(20), np.zeros(20))
    res = implicit_bias(A, y, fam, a)
    assert res.converged and res.iterations > 0
    assert np.linalg.norm(A @ res.x - y) <= 1e-10 * max(1, np.linalg.norm(y))
    N = null_space(A)
    g = fam.grad(res.x, a)
    assert np.linalg.norm(N.T @ g) <= 1e-8 * max(1.0, np.linalg.norm(g))


@pytest.mark.parametrize("a", [0.0, 0.5])
def test_matches_generic_constrained_solver(a):
    """A general-purpose SLSQP solve of min R_a(x) s.t. Ax = y agrees with the dual Newton."""
    A, y = _problem(n=5, d=10, seed=3)
    fam = u_squared_minus_v_squared(np.full(10, 1.0), np.full(10, 0.5))
    res = implicit_bias(A, y, fam, a)
    x0 = np.linalg.lstsq(A, y, rcond=None)[0]
    ref = minimize(lambda x: fam.potential(x, a), x0, jac=lambda x: fam.grad(x, a),
                   constraints=[{"type": "eq", "fun": lambda x: A @ x - y, "jac": lambda x: A}],
                   method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
    assert ref.success
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)


def test_tiny_scale_stays_accurate():
    """a = 6 gives |δ| ≈ 6e-6 for u0 = 1: the solve must still reach a tiny KKT residual."""
    A, y = _problem(n=40, d=100, seed=1)
    fam = uv(np.ones(100), np.zeros(100))
    assert fam.scale(6.0)[0] == pytest.approx(np.exp(-12), rel=1e-12)
    res = implicit_bias(A, y, fam, 6.0)
    assert res.converged and res.kkt_residual < 1e-11
    assert res.iterations < 100
    N = null_space(A)
    g = fam.grad(res.x, 6.0)
    assert np.linalg.norm(N.T @ g) <= 1e-7 * np.linalg.norm(g)


def test_large_a_approaches_min_l1_solution():
    """As a grows R_a becomes L1-like: the prediction approaches the basis-pursuit solution."""
    from scipy.optimize import linprog

    A, y = _problem(n=10, d=30, seed=2)
    d = 30
    lp = linprog(np.ones(2 * d), A_eq=np.hstack([A, -A]), b_eq=y, bounds=[(0, None)] * (2 * d))
    x_l1 = lp.x[:d] - lp.x[d:]
    fam = uv(np.ones(d), np.zeros(d))
    errs = [np.linalg.norm(implicit_bias(A, y, fam, a).x - x_l1) for a in (0.0, 8.0, 30.0)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-2


def test_bad_shapes_are_rejected():
    A, y = _problem()
    fam = uv(np.ones(20), np.zeros(20))
    with pytest.raises(MirrorflowError, match="y must have shape"):
        implicit_bias(A, y[:-1], fam)
    with pytest.raises(MirrorflowError, match="columns"):
        implicit_bias(A[:, :-1], y, fam)
    with pytest.raises(MirrorflowError, match="a must be >= 0"):
        implicit_bias(A, y, fam, -1.0)
    with pytest.raises(MirrorflowError, match="NaN"):
        implicit_bias(A, y * np.nan, fam)
