"""Commuting-quadratic engine (docs/theory.md §6, §7) against closed forms, expm and simulation."""

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from mirrorflow import MirrorflowError
from mirrorflow.geometry.commutation import NonCommutingError
from mirrorflow.geometry.legendre import u_squared, u_squared_minus_v_squared, uv
from mirrorflow.geometry.quadratic import (
    CommutingQuadratic,
    matrix_sensing,
    quadratic_u2,
    quadratic_u2_minus_v2,
    quadratic_uv,
)

RNG_SEED = 7


def _families():
    rng = np.random.default_rng(RNG_SEED)
    u0, v0 = rng.normal(size=3), rng.normal(size=3)
    return [
        (quadratic_uv(u0, v0), uv(u0, v0)),
        (quadratic_u2_minus_v2(u0, v0), u_squared_minus_v_squared(u0, v0)),
        (quadratic_u2(u0), u_squared(u0)),
    ]


@pytest.mark.parametrize("a", [0.0, 1.0, 3.0, 6.0])
def test_reproduces_closed_forms(a):
    rng = np.random.default_rng(int(10 * a))
    for engine, closed in _families():
        mu = 0.7 * rng.normal(size=(6, 3))
        x = closed.inverse(mu, a)
        np.testing.assert_allclose(engine.inverse(mu, a), x, rtol=1e-10, atol=1e-300)
        np.testing.assert_allclose(engine.grad(x, a), mu, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(engine.potential(x, a), closed.potential(x, a), rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(engine.reference(a), closed.reference(a), rtol=1e-12)
        np.testing.assert_allclose(engine.conjugate(mu, a), closed.conjugate(mu, a), rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("a", [30.0, 50.0, 100.0, 300.0])
def test_mirror_map_at_large_a_matches_closed_forms(a):
    """At large a, Q_a ~ e^{-2a} is flat at μ = 0: the conjugate solve must still reach ∇R_a(x)
    for points of the problem's scale (a plain damped Newton from μ = 0 stalled from a ≈ 45)."""
    x = np.array([[0.1, -2.0, 1e-3], [5.0, 0.3, -0.7]])
    for engine, closed in _families()[:2]:
        np.testing.assert_allclose(engine.grad(x, a), closed.grad(x, a), rtol=1e-12)
    engine, closed = _families()[2]  # x = u²: only x > 0
    np.testing.assert_allclose(engine.grad(np.abs(x), a), closed.grad(np.abs(x), a), rtol=1e-12)


def test_theory_section7_check_uv():
    # u ⊙ v, A = [[0,1],[1,0]], B = I, w0 = (1, 0): ∇Q_a(μ) = ½ e^{−2a} sinh 2μ (theory §7)
    eng = CommutingQuadratic(np.array([[0.0, 1.0], [1.0, 0.0]]), np.eye(2), np.array([1.0, 0.0]))
    for a in (0.0, 0.5, 2.0):
        mu = np.linspace(-2, 2, 9)[:, None]
        np.testing.assert_allclose(eng.inverse(mu, a)[:, 0], 0.5 * np.exp(-2 * a) * np.sinh(2 * mu[:, 0]),
                                   rtol=1e-13, atol=1e-16)


def _random_commuting(n, m, seed, B_identity=False):
    rng = np.random.default_rng(seed)
    P = scipy.stats.ortho_group.rvs(m, random_state=seed)
    A = np.stack([P @ np.diag(rng.normal(size=m)) @ P.T for _ in range(n)])
    B = np.eye(m) if B_identity else P @ np.diag(rng.uniform(0.5, 1.5, m)) @ P.T
    w0 = rng.normal(size=m)
    return A, B, w0


def test_inverse_matches_matrix_exponential():
    A, B, w0 = _random_commuting(2, 5, seed=3)
    eng = CommutingQuadratic(A, B, w0)
    rng = np.random.default_rng(4)
    for a in (0.0, 0.8):
        mu = 0.3 * rng.normal(size=2)
        w = scipy.linalg.expm(-a * B + mu[0] * A[0] + mu[1] * A[1]) @ w0
        x = np.array([0.5 * w @ Ai @ w for Ai in A])
        np.testing.assert_allclose(eng.inverse(mu, a), x, rtol=1e-12)
        np.testing.assert_allclose(eng.regularized_init(a), scipy.linalg.expm(-a * B) @ w0, rtol=1e-12)


def test_potential_gradient_by_finite_differences():
    A, B, w0 = _random_commuting(2, 5, seed=5)
    eng = CommutingQuadratic(A, B, w0)
    a = 0.4
    x = eng.inverse(np.array([0.2, -0.1]), a)
    h = 1e-6
    fd = [(eng.potential(x + h * e, a) - eng.potential(x - h * e, a)) / (2 * h) for e in np.eye(2)]
    np.testing.assert_allclose(fd, eng.grad(x, a), rtol=1e-6, atol=1e-8)
    assert eng.potential(eng.reference(a), a) == pytest.approx(0.0, abs=1e-14)
    # the Hessian of R_a is the inverse of that of R_a*
    np.testing.assert_allclose(eng.hessian(x, a) @ eng.dual_hessian(eng.grad(x, a), a), np.eye(2),
                               atol=1e-8)


def test_simulated_gradient_descent_follows_engine():
    """Theorem (theory §2) for the engine: GD with decay on g_i = ½wᵀA_i w, h = ½wᵀBw."""
    A, B, w0 = _random_commuting(2, 4, seed=11)
    A *= 0.5
    eng = CommutingQuadratic(A, B, w0)
    y = np.array([0.3, -0.2])
    eta, alpha, steps = 1e-4, 0.5, 20000
    w = w0.copy()
    mu, a = np.zeros(2), 0.0
    for _ in range(steps):
        x = np.array([0.5 * w @ Ai @ w for Ai in A])
        gf = x - y
        w = w - eta * (np.einsum("i,ijk,k->j", gf, A, w) + alpha * B @ w)
        mu -= eta * gf
        a += eta * alpha
    x = np.array([0.5 * w @ Ai @ w for Ai in A])
    pred = eng.inverse(mu, a)
    assert np.linalg.norm(x - pred) < 5e-3 * max(np.linalg.norm(pred), 1e-3)


def test_non_commuting_matrices_are_refused():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(3, 3))
    A = 0.5 * (M + M.T)
    B = np.diag([1.0, 2.0, 3.0])
    with pytest.raises(NonCommutingError, match=r"‖\[A_0, B\]‖ = [0-9.]+"):
        CommutingQuadratic(A, B, np.ones(3))


def test_bad_inputs():
    with pytest.raises(MirrorflowError, match="not symmetric"):
        CommutingQuadratic(np.array([[0.0, 1.0], [0.0, 0.0]]), None, np.ones(2))
    with pytest.raises(MirrorflowError, match="w0 must have shape"):
        CommutingQuadratic(np.eye(2), None, np.ones(3))
    with pytest.raises(MirrorflowError, match="not independent"):
        CommutingQuadratic(np.stack([np.eye(2), 2 * np.eye(2)]), None, np.ones(2))
    with pytest.raises(MirrorflowError, match="outside the domain"):
        quadratic_u2([1.0]).grad(np.array([-0.5]), 0.0)


def test_matrix_sensing_is_spectral():
    d, r = 3, 2
    P = scipy.stats.ortho_group.rvs(d, random_state=2)
    rng = np.random.default_rng(2)
    s = rng.normal(size=(d, d)) + 2 * np.eye(d)  # invertible eigenvalue table (n = d)
    S = np.stack([P @ np.diag(s[i]) @ P.T for i in range(d)])
    U0 = rng.normal(size=(d, r))
    sens = matrix_sensing(S, U0)
    eng = sens.engine
    xi0 = np.diag(P.T @ U0 @ U0.T @ P)
    for a in (0.0, 1.5):
        sigma = xi0 * np.exp(-2 * a) * np.exp(rng.normal(scale=0.5, size=d))
        X = P @ np.diag(sigma) @ P.T
        x = np.array([np.sum(Si * X) for Si in S])
        np.testing.assert_allclose(sens.measure(X), x, rtol=1e-12)
        # spectral R_a on the eigenvalues (x = u² on each eigen-direction, coefficient ¼)
        sbar = xi0 * np.exp(-2 * a)
        spectral = 0.25 * np.sum(sigma * np.log(sigma / sbar) - sigma + sbar)
        assert eng.potential(x, a) == pytest.approx(spectral, rel=1e-9, abs=1e-12)
        assert sens.spectral_potential(X, a) == pytest.approx(spectral, rel=1e-12)
        ref = np.array([np.sum(Si * (U0 @ U0.T)) for Si in S]) * np.exp(-2 * a)
        np.testing.assert_allclose(eng.reference(a), ref, rtol=1e-12)
