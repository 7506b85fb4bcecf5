"""Power parameterization x = u^{2k} − v^{2k} and matched regularizers (docs/theory.md §7).

Range claims are tested against simulated blow-up of the parameter ODE, not against prose.
"""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from mirrorflow import MirrorflowError
from mirrorflow.geometry.commutation import NonCommutingError, check_commutation
from mirrorflow.geometry.power import matched_constant, power


def _blowup_mu(k, u0, v0, alpha, push):
    """Simulate du/dt = 2k u^{2k−1}(−∇f − α), dv/dt = 2k v^{2k−1}(∇f − α) with ∇f = −push.

    Returns μ = −∫∇f dt = push·T at the time T the parameters blow up (max |w| = 1e3).
    """
    grad_f = -push

    def rhs(t, w):
        u, v = w
        return [2 * k * u ** (2 * k - 1) * (-grad_f - alpha), 2 * k * v ** (2 * k - 1) * (grad_f - alpha)]

    def blow(t, w):
        return 1e3 - np.max(np.abs(w))

    blow.terminal = True
    sol = solve_ivp(rhs, (0.0, 50.0), [u0, v0], method="DOP853", rtol=1e-11, atol=1e-14, events=blow)
    assert sol.t_events[0].size == 1
    return push * sol.t_events[0][0]


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.6])
def test_range_end_matches_simulated_blowup(alpha):
    # theory §7 check: k = 2, u0 = 1, constant push ∇f = −1, decay α
    k, u0 = 2, 1.0
    mu_sim = _blowup_mu(k, u0, 0.0, alpha, push=1.0)
    fam = power(k, u0, 0.0)
    # at blow-up μ = T and a = αT = α μ; the predicted end is c_u + a
    lo, hi = fam.dual_interval(alpha * mu_sim)
    assert mu_sim == pytest.approx(float(hi[0]), rel=1e-5)  # blow-up threshold costs ~1e-6
    assert np.isinf(lo[0])


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_lower_end_matches_simulated_blowup(alpha):
    k, u0, v0 = 3, 0.8, 1.2
    mu_sim = _blowup_mu(k, u0, v0, alpha, push=-1.0)  # pushes v up: μ decreases
    fam = power(k, u0, v0)
    lo, _ = fam.dual_interval(alpha * abs(mu_sim))
    assert mu_sim == pytest.approx(float(lo[0]), rel=1e-5)


def test_mirror_map_matches_simulated_flow():
    """x_t = ∇R_{a_t}*(μ_t) along a simulated flow of f = ½(x − y)² with decay (theorem, §2)."""
    k, alpha = 2, 0.3
    u0, v0, y = np.array([0.9, 0.6]), np.array([0.4, 0.7]), np.array([0.5, -0.3])
    fam = power(k, u0, v0)

    def rhs(t, s):
        u, v = s[:2], s[2:4]
        gf = (u ** (2 * k) - v ** (2 * k)) - y
        du = 2 * k * u ** (2 * k - 1) * (-gf - alpha)
        dv = 2 * k * v ** (2 * k - 1) * (gf - alpha)
        return np.concatenate([du, dv, -gf])

    times = [0.5, 2.0, 6.0]
    sol = solve_ivp(rhs, (0, times[-1]), np.concatenate([u0, v0, np.zeros(2)]), t_eval=times,
                    method="DOP853", rtol=1e-12, atol=1e-14)
    for j, t in enumerate(times):
        u, v, mu = sol.y[:2, j], sol.y[2:4, j], sol.y[4:, j]
        x = u ** (2 * k) - v ** (2 * k)
        np.testing.assert_allclose(fam.inverse(mu, alpha * t), x, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(fam.grad(x, alpha * t), mu, rtol=1e-7, atol=1e-10)


def test_reference_is_regularizer_flow():
    # φ_h^a for h = u^{2k} + v^{2k}: du/da = −2k u^{2k−1}, integrated numerically
    k, u0, v0, a = 3, 1.1, 0.7, 0.9
    sol = solve_ivp(lambda s, w: -2 * k * w ** (2 * k - 1), (0, a), [u0, v0], rtol=1e-12, atol=1e-14)
    u, v = sol.y[:, -1]
    assert power(k, u0, v0).reference(a)[0] == pytest.approx(u ** (2 * k) - v ** (2 * k), rel=1e-9)


def test_potential_and_conjugate_by_finite_differences():
    fam = power(2, [1.0, 0.6], [0.5, 0.9])
    a = 0.7
    mu = np.array([0.2, -0.3])
    x = fam.inverse(mu, a)
    h = 1e-6
    for i, e in enumerate(np.eye(2)):
        dconj = (fam.conjugate(mu + h * e, a) - fam.conjugate(mu - h * e, a)) / (2 * h)
        dpot = (fam.potential(x + h * e, a) - fam.potential(x - h * e, a)) / (2 * h)
        assert dconj == pytest.approx(x[i], rel=1e-6)
        assert dpot == pytest.approx(mu[i], rel=1e-6, abs=1e-8)
    assert fam.potential(fam.reference(a), a) == pytest.approx(0.0, abs=1e-14)
    # one-sided closed form agrees with the root solve
    one = power(2, 1.0, 0.0)
    xs = np.array([0.05, 0.5, 3.0])
    np.testing.assert_allclose(one.inverse(one.grad(xs, a), a), xs, rtol=1e-13)


def test_saturation_and_domain():
    fam = power(2, 1.0, 0.5)
    lo, hi = fam.dual_interval(0.2)
    assert fam.inverse(np.array([hi[0] + 1e-3]), 0.2)[0] == np.inf
    assert fam.inverse(np.array([lo[0] - 1e-3]), 0.2)[0] == -np.inf
    with pytest.raises(MirrorflowError, match="outside the domain"):
        power(2, 1.0, 0.0).grad(np.array([-1.0]), 0.0)
    with pytest.raises(MirrorflowError, match="k must be >= 2"):
        power(1, 1.0, 1.0)


def test_matched_regularizers():
    k = 3
    assert matched_constant(lambda u: u ** (2 * k), lambda u: u ** (2 * k)) == pytest.approx(1.0)
    assert matched_constant(lambda v: -(v ** (2 * k)), lambda v: v ** (2 * k)) == pytest.approx(-1.0)
    assert matched_constant(lambda u: u**2, lambda u: 0.5 * u**2 + 3.0) == pytest.approx(0.5)
    with pytest.raises(NonCommutingError, match=r"\[g', h'\]"):
        matched_constant(lambda u: u ** (2 * k), lambda u: u**2)
    # the same verdict from the general Lie-bracket check on w = (u, v)
    fam = power(k, 1.0, 1.0)
    assert check_commutation(fam.forward_torch, fam.regularizer_torch, dim=2, n_points=4).commutes
    assert not check_commutation(fam.forward_torch, "weight_decay", dim=2, n_points=4).commutes
    assert isinstance(fam.forward_torch(torch.ones(2, dtype=torch.float64)), torch.Tensor)


def test_dual_interval_widens_and_reach_contracts():
    fam = power(2, 1.0, 0.5)
    a = np.array([0.0, 0.5, 1.0, 2.0])
    widths = [np.diff(fam.dual_interval(ai), axis=0)[0, 0] for ai in a]
    assert np.all(np.diff(widths) > 0)
    m = 0.1
    reach = [fam.inverse(np.array([m]), ai)[0] - fam.inverse(np.array([-m]), ai)[0] for ai in a]
    assert np.all(np.diff(reach) < 0)
