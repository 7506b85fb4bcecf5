"""One property suite over every Legendre family, and a toy family registered from this file.

The properties are independent numerics (finite differences, Fenchel–Young, convexity); the toy
family's effects, mirror-flow limit and implicit bias are compared with hand-solved answers.
"""

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.linalg
import torch

from mirrorflow import MirrorflowError
from mirrorflow.dynamics.mirror import integrate_mirror
from mirrorflow.geometry import (
    CommutingQuadratic,
    NumericLegendre,
    implicit_bias,
    measure_effects,
    power,
    quadratic_uv,
    u_squared,
    u_squared_minus_v_squared,
    uv,
)
from mirrorflow.geometry.effects import family_from_name
from mirrorflow.geometry.family import FAMILIES, LegendreFamily, provides, register_family
from mirrorflow.schedules.continuous import NoDecay, SwitchOffDecay


# --------------------------------------------------------------------------- the toy family
@dataclass(frozen=True, eq=False)
class WeightedQuadratic(LegendreFamily):
    """``R_a(x) = ½ Σ_i w_i e^{2a} (x_i − x̄_i e^{−2a})²``: reference ``x̄e^{−2a}``, curvature
    ``w e^{2a}``. Derived by hand: ``∇R_a = w e^{2a}(x − x̄e^{−2a})``, ``(∇R_a)^{-1}(μ) =
    x̄e^{−2a} + μ e^{−2a}/w``, ``R_a*(μ) = ⟨μ, x̄e^{−2a}⟩ + ½ Σ μ² e^{−2a}/w``."""

    w: np.ndarray
    xbar: np.ndarray
    name: str = "toy-quadratic"

    @property
    def dim(self):
        return self.w.size

    def reference(self, a):
        return self.xbar * np.exp(-2.0 * np.asarray(a))

    def grad(self, x, a):
        return self.w * np.exp(2.0 * a) * (np.asarray(x) - self.reference(a))

    def inverse(self, mu, a):
        return self.reference(a) + np.asarray(mu) * np.exp(-2.0 * a) / self.w

    def potential(self, x, a):
        return 0.5 * np.sum(self.w * np.exp(2.0 * a) * (np.asarray(x) - self.reference(a)) ** 2, -1)

    def conjugate(self, mu, a):
        mu = np.asarray(mu)
        return np.sum(mu * self.reference(a) + 0.5 * mu**2 * np.exp(-2.0 * a) / self.w, -1)

    def hessian(self, x, a):
        return np.broadcast_to(self.w * np.exp(2.0 * a), np.shape(x)).copy()

    def inverse_derivative(self, mu, a):
        return np.broadcast_to(np.exp(-2.0 * a) / self.w, np.shape(mu)).copy()


TOY_W = np.array([1.0, 2.0, 0.5, 4.0])
TOY_XBAR = np.array([0.3, -0.2, 0.5, 0.1])


def toy():
    return WeightedQuadratic(TOY_W, TOY_XBAR)


def projection(A, y, a):
    """Hand-solved ``argmin_{Ax=y} ½ Σ w e^{2a}(x − r)²``: ``x = r + D Aᵀ(A D Aᵀ)⁻¹(y − A r)``."""
    D = np.diag(np.exp(-2.0 * a) / TOY_W)
    r = TOY_XBAR * np.exp(-2.0 * a)
    return r + D @ A.T @ np.linalg.solve(A @ D @ A.T, y - A @ r)


# --------------------------------------------------------------------------- every family
def _rotated_quadratic():
    rng = np.random.default_rng(3)
    P, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    lam = np.array([[1.0, -0.5, 0.3], [0.2, 0.8, -0.6]])
    A = np.stack([P @ np.diag(li) @ P.T for li in lam])
    return CommutingQuadratic(A, None, np.array([0.7, -0.4, 0.5]), name="rotated")


def _numeric():
    return NumericLegendre(lambda w: w[:1] * w[1:], "weight_decay", np.array([1.0, 0.3]),
                           rtol=1e-11, atol=1e-13, check=False)


FAMILY_CASES = {
    "uv": lambda: uv([1.0, 0.7, 0.4], [0.3, -0.2, 0.0]),
    "u2-v2": lambda: u_squared_minus_v_squared([1.0, 0.6], [0.4, -0.8]),
    "u2": lambda: u_squared([0.8, 1.3]),
    "power": lambda: power(2, [1.0, 0.8, 1.0], [0.5, 0.3, 0.0]),
    "quadratic-uv": lambda: quadratic_uv([1.0, 0.7], [0.3, -0.2]),
    "quadratic-rotated": _rotated_quadratic,
    "numeric-uv": _numeric,
    "toy-quadratic": toy,
}
A_VALUES = (0.0, 0.6)


@pytest.fixture(scope="module", params=[
    pytest.param(n, marks=pytest.mark.slow) if n.startswith("numeric") else n for n in FAMILY_CASES
])  # the numeric engine integrates ODEs per point (~1 min on 2 busy cores): -m slow
def case(request):
    fam = FAMILY_CASES[request.param]()
    rng = np.random.default_rng(0)
    n_pts = 2 if request.param.startswith("numeric") else 4
    pts = {}
    for a in A_VALUES:  # points of the domain: images of small dual vectors
        mu = 0.4 * rng.standard_normal((n_pts, fam.dim))
        if provides(fam, "dual_interval"):  # stay well inside the range of ∇R_a
            lo, hi = (np.asarray(b, dtype=np.float64) for b in fam.dual_interval(a))
            mu = np.clip(mu, np.where(np.isfinite(lo), 0.5 * lo, -np.inf),
                         np.where(np.isfinite(hi), 0.5 * hi, np.inf))
        pts[a] = (mu, np.asarray(fam.inverse(mu, a), dtype=np.float64))
    return request.param, fam, pts


def test_family_is_declared_and_core_is_complete(case):
    _, fam, _ = case
    assert isinstance(fam, LegendreFamily)
    for m in ("grad", "inverse", "potential", "reference", "dim"):
        assert provides(fam, m)


@pytest.mark.parametrize("a", A_VALUES)
def test_grad_inverse_round_trip(case, a):
    _, fam, pts = case
    mu, x = pts[a]
    np.testing.assert_allclose(np.asarray(fam.grad(x, a)), mu, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("a", A_VALUES)
def test_potential_gradient_matches_finite_difference(case, a):
    name, fam, pts = case
    _, x = pts[a]
    g = np.asarray(fam.grad(x, a))
    h = 1e-5 * np.maximum(np.abs(x), 1e-2)
    for i in range(fam.dim):
        e = np.zeros(fam.dim)
        e[i] = 1.0
        fd = (np.asarray(fam.potential(x + h[:, i:i + 1] * e, a))
              - np.asarray(fam.potential(x - h[:, i:i + 1] * e, a))) / (2 * h[:, i])
        np.testing.assert_allclose(fd, g[:, i], rtol=1e-5, atol=1e-6, err_msg=f"{name} coord {i}")


@pytest.mark.parametrize("a", A_VALUES)
def test_hessian_matches_finite_difference_of_grad(case, a):
    name, fam, pts = case
    _, x = pts[a]
    if not provides(fam, "hessian"):  # the effects' fallback: κ(x) = d²/ds² R_a(s x) at s = 1
        from mirrorflow.geometry.effects import ray_curvature

        h = 1e-3
        R = [np.asarray(fam.potential(s * x, a)) for s in (1 - h, 1.0, 1 + h)]
        np.testing.assert_allclose(ray_curvature(fam, a, x), (R[0] - 2 * R[1] + R[2]) / h**2,
                                   rtol=1e-4, err_msg=name)
        return
    H = np.asarray(fam.hessian(x, a))
    d = fam.dim
    for j in range(len(x)):
        fd = np.empty((d, d))
        for i in range(d):
            h = 1e-6 * max(abs(x[j, i]), 1e-2)
            e = np.zeros(d)
            e[i] = h
            fd[:, i] = (np.asarray(fam.grad(x[j] + e, a)) - np.asarray(fam.grad(x[j] - e, a))) / (2 * h)
        want = np.diagonal(fd) if H.shape == x.shape else fd
        got = H[j]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)
        if H.shape == x.shape:  # a diagonal Hessian claims the off-diagonal part is 0
            np.testing.assert_allclose(fd - np.diag(np.diagonal(fd)), 0.0, atol=1e-6)


@pytest.mark.parametrize("a", A_VALUES)
def test_fenchel_young_equality(case, a):
    name, fam, pts = case
    assert provides(fam, "conjugate")
    mu, x = pts[a]
    lhs = np.asarray(fam.potential(x, a)) + np.asarray(fam.conjugate(mu, a))
    np.testing.assert_allclose(lhs, np.sum(x * mu, -1), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("a", A_VALUES)
def test_reference_minimizes_potential_and_convexity(case, a):
    _, fam, pts = case
    _, x = pts[a]
    ref = np.asarray(fam.reference(a), dtype=np.float64)
    np.testing.assert_allclose(np.asarray(fam.grad(ref[None], a))[0], 0.0, atol=1e-8)
    assert abs(float(np.asarray(fam.potential(ref[None], a))[0])) < 1e-9
    R = np.asarray(fam.potential(x, a))
    assert np.all(R >= -1e-12)
    # midpoint convexity on every pair, and the Bregman divergence is >= 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            mid = np.asarray(fam.potential(((x[i] + x[j]) / 2)[None], a))[0]
            assert mid <= (R[i] + R[j]) / 2 + 1e-10
            assert float(fam.bregman(x[i], x[j], a)) >= 0.0


# --------------------------------------------------------------------------- the toy, end to end
def test_toy_family_reaches_effects_through_the_name_table(monkeypatch):
    monkeypatch.setitem(FAMILIES, "toy-quadratic", lambda u0=1.0, v0=0.5, k=2: toy())
    fam = family_from_name("toy-quadratic")
    a = np.array([0.0, 0.5, 1.0])
    rep = measure_effects(fam, a, t=0.1)
    shrink = np.exp(-2 * a)
    np.testing.assert_allclose(rep.reference, TOY_XBAR * shrink[:, None], rtol=1e-12)
    np.testing.assert_allclose(rep.shift, np.linalg.norm(TOY_XBAR) * (1 - shrink), rtol=1e-12)
    np.testing.assert_allclose(rep.type_index, 0.0, atol=1e-12)  # a quadratic is L2: ι = 2 − 2
    np.testing.assert_allclose(rep.local_scale, shrink[:, None] / TOY_W, rtol=1e-8)
    np.testing.assert_allclose(rep.reach_hi - rep.reference, shrink[:, None] / TOY_W, rtol=1e-12)
    assert rep.scale is None and np.all(np.isinf(rep.dual_hi))
    with pytest.raises(MirrorflowError, match="already registered"):
        register_family("toy-quadratic", toy)


@pytest.mark.parametrize("a", [0.0, 0.8])
def test_toy_implicit_bias_is_the_closed_form_projection(a):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((2, 4))
    y = rng.standard_normal(2)
    res = implicit_bias(A, y, toy(), a).require()
    np.testing.assert_allclose(res.x, projection(A, y, a), rtol=1e-10, atol=1e-12)


def test_toy_mirror_flow_without_decay_is_the_linear_ode_solution():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((2, 4))
    y = rng.standard_normal(2)
    T = 0.7
    # x' = −W⁻¹Aᵀ(Ax − y) from x̄: affine linear ODE, solved by one matrix exponential
    M = np.diag(1 / TOY_W) @ A.T @ A
    b = np.diag(1 / TOY_W) @ A.T @ (y - A @ TOY_XBAR)
    aug = np.zeros((5, 5))
    aug[:4, :4], aug[:4, 4] = -M, b
    want = TOY_XBAR + (scipy.linalg.expm(aug * T) @ np.r_[np.zeros(4), 1.0])[:4]
    got = integrate_mirror(A, y, toy(), NoDecay(), [0.0, T]).x[-1]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def test_toy_mirror_flow_with_switch_off_converges_to_the_projection_at_a_infinity():
    rng = np.random.default_rng(4)
    A = rng.standard_normal((2, 4))
    y = rng.standard_normal(2)
    sched = SwitchOffDecay(0.5, at=1.0)  # a_∞ = 0.5
    got = integrate_mirror(A, y, toy(), sched, [0.0, 400.0]).x[-1]
    np.testing.assert_allclose(got, projection(A, y, 0.5), rtol=1e-7, atol=1e-8)


def test_rotated_quadratic_implicit_bias_uses_the_full_dual_hessian():
    fam = _rotated_quadratic()
    A = np.array([[1.0, 0.5]])
    y = np.array([0.3])
    res = implicit_bias(A, y, fam, 0.2).require()
    # KKT by independent checks: feasibility and ∇R_a(x) ∈ range(Aᵀ)
    np.testing.assert_allclose(A @ res.x, y, atol=1e-10)
    g = np.asarray(fam.grad(res.x, 0.2))
    np.testing.assert_allclose(g - A.T @ (np.linalg.lstsq(A.T, g, rcond=None)[0]), 0.0, atol=1e-8)


# --------------------------------------------------------------------------- refusals
class _NoConjugate:
    dim = 2

    def grad(self, x, a):
        return np.asarray(x)

    def inverse(self, mu, a):
        return np.asarray(mu)

    def potential(self, x, a):
        return 0.5 * np.sum(np.asarray(x) ** 2, -1)

    def reference(self, a):
        return np.zeros(2)


def test_implicit_bias_names_the_missing_method_in_one_line():
    with pytest.raises(MirrorflowError) as exc:
        implicit_bias(np.eye(2), np.ones(2), _NoConjugate(), 0.0)
    msg = str(exc.value)
    assert "\n" not in msg and "conjugate(mu, a)" in msg and "_NoConjugate" in msg
    assert "inverse_derivative(mu, a) or dual_hessian(mu, a)" in msg


def test_numeric_family_is_refused_by_implicit_bias_for_lack_of_a_dual_hessian():
    with pytest.raises(MirrorflowError, match=r"inverse_derivative.*or dual_hessian"):
        implicit_bias(np.eye(1), np.ones(1), _numeric(), 0.0)


def test_effects_and_simulation_refuse_a_non_family():
    with pytest.raises(MirrorflowError, match=r"measure_effects needs .*grad"):
        measure_effects(object(), [0.0])
    with pytest.raises(MirrorflowError, match="integrate_mirror needs"):
        integrate_mirror(np.eye(1), np.ones(1), object(), NoDecay(), [0.0, 1.0])


def test_duck_typed_family_without_the_base_class_is_accepted():
    """Methods, not ancestry: a plain class with the core methods runs the effects."""
    rep = measure_effects(_NoConjugate(), [0.0], t=0.5)
    np.testing.assert_allclose(rep.type_index, 0.0, atol=1e-9)  # ½‖x‖²: L2
    np.testing.assert_allclose(rep.local_scale, 1.0, rtol=1e-8)


def test_torch_input_is_accepted_by_a_declared_family():
    f = uv([1.0], [0.0])
    out = f.grad(torch.tensor([0.5], dtype=torch.float64), 0.0)
    assert isinstance(out, torch.Tensor) and abs(float(out) - 0.5 * np.arcsinh(1.0)) < 1e-15


def test_toy_family_runs_through_the_effects_command(monkeypatch):
    """``mirrorflow effects NAME`` reads the same name table: a family registered from a test
    file is a CLI choice (JSON rows checked against the hand-derived reference x̄e^{−2a})."""
    import json

    from typer.testing import CliRunner

    from mirrorflow.cli import app

    monkeypatch.setitem(FAMILIES, "toy-quadratic", lambda u0=1.0, v0=0.5, k=2: toy())
    res = CliRunner().invoke(app, ["effects", "toy-quadratic", "--a", "0,1", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["rows"]
    assert [r["a"] for r in rows] == [0.0, 1.0]
    np.testing.assert_allclose([r["reference"] for r in rows], TOY_XBAR[0] * np.exp([0.0, -2.0]))
    assert all(r["scale"] is None for r in rows)
