"""Closed-form Legendre functions (docs/theory.md §3) against independent computations."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from mirrorflow import MirrorflowError
from mirrorflow.geometry import u_squared, u_squared_minus_v_squared, uv

FAMILIES = {
    "uv": lambda u0, v0: uv(u0, v0),
    "u2-v2": lambda u0, v0: u_squared_minus_v_squared(u0, v0),
    "u2": lambda u0, v0: u_squared(u0),
}

floats = st.floats(-3, 3, allow_nan=False)
# v0 is either exactly 0 or bounded away from it (a subnormal v0 makes β ~ 1e-300, where a
# finite difference with any representable step is meaningless)
inits = st.tuples(
    st.floats(0.2, 2.0),
    st.one_of(st.just(0.0), st.floats(0.05, 1.5), st.floats(-1.5, -0.05)),
)


def _family(name, u0, v0):
    if name == "uv" and abs(u0**2 - v0**2) < 1e-3:
        v0 = v0 + 0.1
    return FAMILIES[name](np.array([u0]), np.array([v0]))


def _domain_point(fam, x, a):
    """Map an arbitrary x into the domain (balanced coordinates keep the sign of x̄)."""
    xbar = np.asarray(fam.reference(a))
    return np.where(fam.balanced, np.sign(xbar) * (np.abs(x) + 1e-2), x)


@pytest.mark.parametrize("name", list(FAMILIES))
@settings(max_examples=40, deadline=None)
@given(init=inits, x=floats, a=st.floats(0, 3))
def test_grad_is_derivative_of_potential(name, init, x, a):
    fam = _family(name, *init)
    x = _domain_point(fam, np.array([x]), a)
    h = 1e-6 * max(1.0, abs(x[0]))
    fd = (fam.potential(x + h, a) - fam.potential(x - h, a)) / (2 * h)
    assert fam.grad(x, a)[0] == pytest.approx(fd, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", list(FAMILIES))
@settings(max_examples=40, deadline=None)
@given(init=inits, x=floats, a=st.floats(0, 6))
def test_inverse_undoes_grad(name, init, x, a):
    fam = _family(name, *init)
    x = _domain_point(fam, np.array([x]), a)
    np.testing.assert_allclose(fam.inverse(fam.grad(x, a), a), x, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(FAMILIES))
@settings(max_examples=40, deadline=None)
@given(init=inits, x=floats, z=floats, a=st.floats(0, 3))
def test_bregman_nonnegative_and_zero_only_at_equality(name, init, x, z, a):
    fam = _family(name, *init)
    x = _domain_point(fam, np.array([x]), a)
    z = _domain_point(fam, np.array([z]), a)
    d = fam.bregman(x, z, a)
    assert d >= 0
    if abs(x[0] - z[0]) > 1e-3:
        assert d > 0
    assert fam.bregman(x, x, a) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_conjugate_derivative_is_inverse_and_fenchel_young(name):
    fam = _family(name, 1.0, 0.4)
    mu = np.linspace(-1, 1, 9)[:, None]
    h = 1e-6
    fd = (fam.conjugate(mu + h, 0.7) - fam.conjugate(mu - h, 0.7)) / (2 * h)
    np.testing.assert_allclose(fd, fam.inverse(mu, 0.7)[:, 0], rtol=1e-6)
    # Fenchel–Young equality at x = ∇R*(μ): R(x) + R*(μ) = μ x
    x = fam.inverse(mu, 0.7)
    np.testing.assert_allclose(fam.potential(x, 0.7) + fam.conjugate(mu, 0.7), (mu * x)[:, 0],
                               rtol=1e-9, atol=1e-12)


def test_uv_matches_theory_formula_and_reference_moves():
    """§3 formula for ∇R_a with δ(a) = δ0 e^{-2a}, x̄(a) = u0 v0 e^{-2a}, written out by hand."""
    u0, v0, a = 1.3, 0.4, 0.8
    fam = uv(u0, v0)
    delta = (u0**2 - v0**2) * np.exp(-2 * a)
    xbar = u0 * v0 * np.exp(-2 * a)
    x = np.array([-2.0, 0.1, 3.0])
    fam3 = uv(np.full(3, u0), np.full(3, v0))
    expected = 0.5 * (np.arcsinh(2 * x / delta) - np.arcsinh(2 * xbar / delta))
    np.testing.assert_allclose(fam3.grad(x, a), expected, rtol=1e-12)
    assert fam.reference(a)[0] == pytest.approx(xbar)
    assert fam.scale(a)[0] == pytest.approx(delta)
    assert fam.grad(fam.reference(a), a)[0] == pytest.approx(0.0, abs=1e-14)


def test_mirror_flow_is_the_parameter_flow_in_one_dimension():
    """d/dt ∇R_{a_t}(x_t) = −∇f along the exact ODE in (u, v), for a scalar u⊙v problem.

    f(x) = ½(x − 2)², α = 0.5: integrate (u, v) with solve_ivp and compare ∇R_{a_t}(x_t) with
    −∫∇f(x_s) ds integrated alongside.
    """
    u0, v0, alpha = 0.8, 0.3, 0.5

    def rhs(t, w):
        u, v, m = w
        g = u * v - 2.0
        return [-v * g - alpha * u, -u * g - alpha * v, -g]

    sol = solve_ivp(rhs, (0, 3), [u0, v0, 0.0], rtol=1e-12, atol=1e-12, dense_output=True)
    fam = uv(u0, v0)
    for t in (0.5, 1.5, 3.0):
        u, v, m = sol.sol(t)
        assert fam.grad(np.array([u * v]), alpha * t)[0] == pytest.approx(m, abs=1e-8)


def test_type_of_bias_l2_to_l1():
    """|x| ≪ |δ|: R ≈ x²/(2|δ|); |x| ≫ |δ|: R ≈ ½|x| log(4|x|/|δ|) (theory §3)."""
    fam = uv(1.0, 0.0)  # δ0 = 1, x̄ = 0
    small = np.array([1e-4])
    assert fam.potential(small, 0.0) == pytest.approx(small[0] ** 2 / 2, rel=1e-6)
    a = 6.0
    delta = np.exp(-2 * a)
    big = np.array([2.0])
    approx = 0.5 * big[0] * np.log(4 * big[0] / delta)
    assert fam.potential(big, a) == pytest.approx(approx - 0.5 * big[0], rel=1e-6)


def test_balanced_uv_is_the_limit_of_hyperbolic():
    """δ0 → 0: ∇R_a → ½ sign(x̄) log(x/x̄); the closed form at δ0 = 0 matches the limit."""
    x = np.array([0.5, 2.0])
    for sign in (1.0, -1.0):
        bal = uv(np.full(2, 1.0), np.full(2, sign))
        near = uv(np.full(2, 1.0), np.full(2, sign * (1 - 1e-7)))
        np.testing.assert_allclose(bal.grad(sign * x, 0.3), near.grad(sign * x, 0.3), rtol=1e-5)
        with pytest.raises(MirrorflowError, match="domain"):
            bal.grad(-sign * x, 0.3)


def test_torch_inputs_return_float64_tensors():
    fam = uv(np.ones(3), np.zeros(3))
    x = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float32)
    out = fam.grad(x, 1.0)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), fam.grad(x.double().numpy(), 1.0), rtol=1e-15)


def test_bad_initializations_are_rejected():
    with pytest.raises(MirrorflowError, match="fixed point"):
        uv([1.0, 0.0], [0.0, 0.0])
    with pytest.raises(MirrorflowError, match="same length"):
        uv([1.0, 2.0], [0.0, 0.0, 1.0])
    with pytest.raises(MirrorflowError, match="NaN"):
        uv([np.nan], [0.0])
