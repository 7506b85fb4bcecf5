"""Numeric engine (docs/theory.md §2, §7): agrees with the closed forms and the quadratic engine."""

import numpy as np
import pytest
import scipy.stats
import torch

from mirrorflow.geometry.commutation import NonCommutingError
from mirrorflow.geometry.legendre import uv
from mirrorflow.geometry.numeric import NumericLegendre
from mirrorflow.geometry.power import power
from mirrorflow.geometry.quadratic import CommutingQuadratic


def test_uv_weight_decay_matches_hyperbolic_entropy():
    u0, v0 = np.array([1.0, 0.6]), np.array([0.3, -0.8])
    eng = NumericLegendre(lambda w: w[:2] * w[2:], "weight_decay", np.concatenate([u0, v0]))
    closed = uv(u0, v0)
    for a in (0.0, 1.5):
        mu = np.array([0.3, -0.5])
        x = closed.inverse(mu, a)
        np.testing.assert_allclose(eng.inverse(mu, a), x, rtol=1e-10)
        np.testing.assert_allclose(eng.grad(x, a), mu, rtol=1e-9, atol=1e-10)
        assert eng.potential(x, a) == pytest.approx(closed.potential(x, a), rel=1e-9)
        np.testing.assert_allclose(eng.reference(a), closed.reference(a), rtol=1e-13)


def test_power_matched_regularizer_matches_closed_form():
    fam = power(2, 1.0, 0.5)
    eng = NumericLegendre(fam.forward_torch, fam.regularizer_torch, np.array([1.0, 0.5]))
    a = 0.3
    mu = np.array([0.05])
    x = fam.inverse(mu, a)
    np.testing.assert_allclose(eng.inverse(mu, a), x, rtol=1e-9)
    np.testing.assert_allclose(eng.grad(x, a), mu, rtol=1e-8)
    assert eng.potential(x, a) == pytest.approx(float(fam.potential(x, a)), rel=1e-8)
    # range by simulated blow-up along the dual axis vs the closed form (−c_v − a, c_u + a)
    lo, hi = eng.dual_interval(a)
    clo, chi = fam.dual_interval(a)
    np.testing.assert_allclose([lo[0], hi[0]], [clo[0], chi[0]], rtol=1e-6)


def test_general_regularizer_flow_matches_quadratic_engine():
    # h = ½ wᵀBw with B ≠ I: the regularizer's flow is integrated, not taken in closed form
    rng = np.random.default_rng(3)
    P = scipy.stats.ortho_group.rvs(3, random_state=3)
    A = np.stack([P @ np.diag(rng.normal(size=3)) @ P.T for _ in range(2)])
    B = P @ np.diag([0.5, 1.0, 1.5]) @ P.T
    w0 = rng.normal(size=3)
    At, Bt = torch.as_tensor(A), torch.as_tensor(B)
    eng = NumericLegendre(lambda w: 0.5 * torch.einsum("j,ijk,k->i", w, At, w),
                          lambda w: 0.5 * w @ Bt @ w, w0)
    quad = CommutingQuadratic(A, B, w0)
    a, mu = 0.6, np.array([0.1, -0.2])
    np.testing.assert_allclose(eng.inverse(mu, a), quad.inverse(mu, a), rtol=1e-9)
    assert float(eng.conjugate(mu, a)) == pytest.approx(float(quad.conjugate(mu, a)), rel=1e-9)


def test_refuses_non_commuting_pair():
    with pytest.raises(NonCommutingError, match=r"\[∇g_0, ∇h\] has norm"):
        NumericLegendre(lambda w: w[0] * w[1] * w[2], "weight_decay", np.ones(3))
