"""Implicit-bias predictor (docs/theory.md §5) against independent checks."""

import numpy as np
import pytest
from scipy.linalg import null_space
from scipy.optimize import linprog, minimize

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


# --------------------------------------------------------------------------- infeasible problems
def _mixed_family():
    """Coordinates 0, 1 balanced (u0 = v0: x̄ = 1, sign frozen +); 2, 3 not."""
    return uv([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.5])


_A4 = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0]])


def test_infeasible_frozen_signs_are_reported_in_one_line():
    # x0 + x1 = −1 cannot hold with x0, x1 > 0: an independent LP confirms it has no solution
    y = np.array([-1.0, 2.0, 0.5])
    lp = linprog(np.zeros(4), A_eq=_A4, b_eq=y, bounds=[(0, None), (0, None), (None, None), (None, None)])
    assert lp.status == 2  # infeasible
    res = implicit_bias(_A4, y, _mixed_family(), 1.0)
    assert res.status == "infeasible" and not res.converged and res.iterations == 0
    assert np.all(np.isnan(res.x))
    assert "\n" not in res.message
    assert "coordinates 0, 1" in res.message and "u0² ≠ v0²" in res.message
    with pytest.raises(MirrorflowError, match=r"keeps the frozen signs of coordinates 0, 1"):
        res.require()


def test_feasible_neighbour_still_solves():
    """Same family and A, a target with x0 + x1 = 1 > 0: solved, KKT checked independently."""
    y = np.array([1.0, 2.0, 0.5])
    fam = _mixed_family()
    res = implicit_bias(_A4, y, fam, 1.0).require()
    assert res.status == "converged" and res.message == ""
    assert np.all(res.x[:2] > 0)
    assert np.linalg.norm(_A4 @ res.x - y) <= 1e-12
    N = null_space(_A4)
    g = fam.grad(res.x, 1.0)
    assert np.linalg.norm(N.T @ g) <= 1e-10 * max(1.0, np.linalg.norm(g))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_infeasible_coordinates_are_the_wrong_sign_ones(seed):
    """Square invertible A: the only solution is A⁻¹y; the balanced coordinates where it has the
    wrong sign are exactly the ones the message names."""
    rng = np.random.default_rng(seed)
    d = 8
    A = rng.normal(size=(d, d)) + 3 * np.eye(d)
    x_true = rng.normal(size=d)
    balanced = np.arange(d) % 2 == 0                 # even coordinates: u0 = v0 = 1, sign +
    x_true[0] = -abs(x_true[0])                      # at least one conflict
    fam = uv(np.ones(d), np.where(balanced, 1.0, 0.3))
    res = implicit_bias(A, A @ x_true, fam, 0.5)
    wrong = np.flatnonzero(balanced & (np.linalg.solve(A, A @ x_true) < 0))
    assert res.status == "infeasible"
    listed = res.message.split("frozen signs of coordinate")[1].split("(")[0]
    assert sorted(int(t) for t in listed.strip(" s").split(",")) == wrong.tolist()


def test_target_outside_the_range_of_a():
    # n ≤ d: found after the solve fails (rows 0 and 1 are parallel, y is not)
    A = np.array([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0]])
    res = implicit_bias(A, np.array([1.0, 3.0]), uv(np.ones(3), np.zeros(3)), 0.0)
    assert res.status == "infeasible" and np.all(np.isnan(res.x))
    assert "not in the range of A (rank 1 < n = 2)" in res.message
    # n > d: checked before any Newton step
    A = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    res = implicit_bias(A, np.array([1.0, 1.0, 3.0]), uv(np.ones(2), np.zeros(2)), 0.0)
    assert res.status == "infeasible" and res.iterations == 0
    assert "rank 2 < n = 3" in res.message
    # the consistent neighbour solves
    assert implicit_bias(A, np.array([1.0, 1.0, 2.0]), uv(np.ones(2), np.zeros(2)), 0.0).converged


def test_boundary_solution_is_reported():
    """x0 + x1 = 0 with x0, x1 ≥ 0 forces both to 0: the minimizer is on the domain's edge."""
    y = np.array([0.0, 2.0, 0.5])
    res = implicit_bias(_A4, y, _mixed_family(), 1.0)
    assert "coordinates 0, 1 at 0" in res.message
    assert res.status in ("converged", "boundary")
    if res.converged:
        assert np.all(np.abs(res.x[:2]) < 1e-9)


def test_reference_point_underflow_is_reported():
    fam = uv(np.ones(3), np.full(3, 0.5))
    res = implicit_bias(np.eye(3), np.array([1.0, 1.0, 2.0]), fam, 400.0)
    assert res.status == "infeasible" and "underflows to 0" in res.message
    assert "a < 372" in res.message  # |x̄₀| = 0.5: (log 0.5 + 744.4)/2 = 371.9


# --------------------------------------------------------------------------- large a, no warnings
def _grad_closed_form(x, a, u0, v0):
    """∇R_a for u ⊙ v from docs/theory.md §3 (c = ½, β = |u0² − v0²|e^{−2a}/2, x̄ = u0v0e^{−2a})."""
    beta = np.abs(u0**2 - v0**2) / 2 * np.exp(-2 * a)
    xbar = u0 * v0 * np.exp(-2 * a)
    return 0.5 * (np.arcsinh(x / beta) - np.arcsinh(xbar / beta))


@pytest.mark.filterwarnings("error::scipy.linalg.LinAlgWarning")
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("a", [0.0, 1.0, 6.0, 30.0, 100.0, 300.0])
def test_large_a_solves_without_warnings_to_kkt_1e_10(a):
    """KKT checked independently: feasibility, and ∇R_a(x) (closed form) projected on null(A)."""
    A, y = _problem(n=40, d=100, seed=0)
    u0, v0 = np.ones(100), np.full(100, 0.2)
    res = implicit_bias(A, y, uv(u0, v0), a)
    assert res.converged and res.status == "converged"
    assert np.linalg.norm(A @ res.x - y) <= 1e-10 * max(1.0, np.linalg.norm(y))
    g = _grad_closed_form(res.x, a, u0, v0)
    Q, _ = np.linalg.qr(A.T)                      # orthonormal basis of range(Aᵀ)
    assert np.linalg.norm(g - Q @ (Q.T @ g)) <= 1e-10 * max(1.0, np.linalg.norm(g))
    assert res.regularization >= 1e-14


def test_sparse_regression_records_why_there_is_no_prediction(monkeypatch):
    """A failed prediction does not crash a run: predicted_gap is None and the note says why."""
    from mirrorflow.experiments import sparse_regression as sr

    infeasible = implicit_bias(_A4, np.array([-1.0, 2.0, 0.5]), _mixed_family(), 1.0)
    monkeypatch.setattr(sr, "implicit_bias", lambda *args, **kw: infeasible)
    r = sr.run(sr.Config(n=10, d=20, sparsity=2, step=0.02, switch_at=4.0, seed=1))
    assert r.status == "converged"
    assert r.predicted_gap is None
    assert "no implicit-bias prediction (infeasible)" in r.prediction_note
    assert r.metrics()["prediction_note"] == r.prediction_note


def test_newton_step_cholesky_and_recorded_ridge():
    from mirrorflow.geometry.implicit_bias import _newton_step

    rng = np.random.default_rng(0)
    M = rng.normal(size=(5, 5))
    H = M @ M.T + np.eye(5)
    g = rng.normal(size=5)
    step, rho = _newton_step(H, g, 1e-14)
    assert rho == 1e-14
    np.testing.assert_allclose(step, -np.linalg.solve(H, g), rtol=1e-10)
    # numerically indefinite (one eigenvalue −1e-9): the ridge is raised until
    # Cholesky succeeds, and the step solves the recorded system (D⁻¹HD⁻¹ + ρI) D s = −D⁻¹g
    Qm, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    H = Qm @ np.diag([-1e-9, 1.0, 2.0, 3.0, 4.0]) @ Qm.T
    step, rho = _newton_step(H, g, 1e-14)
    assert 1e-14 < rho <= 1e-6  # raised from 1e-14 in factors of 10 until it factors
    D = np.sqrt(np.diag(H))
    Ms = H / np.outer(D, D) + rho * np.eye(5)
    resid = np.linalg.norm(Ms @ (D * step) + g / D)
    assert resid <= 1e-12 * np.linalg.norm(Ms, 2) * np.linalg.norm(D * step)  # backward stable
