"""The three effects as numbers, the figure and the CLI (docs/theory.md §3, §4, §7)."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.optimize import brentq
from typer.testing import CliRunner

from mirrorflow import MirrorflowError
from mirrorflow.cli import app
from mirrorflow.geometry.effects import family_from_name, measure_effects, ray_curvature, type_index
from mirrorflow.geometry.legendre import u_squared, u_squared_minus_v_squared, uv
from mirrorflow.geometry.power import power
from mirrorflow.geometry.quadratic import quadratic_u2, quadratic_uv
from mirrorflow.report.effects_figure import plot_effects


@dataclass(frozen=True)
class _Norm:
    """Test family R(x) = ‖x‖_p^p / p (degree p), given by its gradient only (no Hessian)."""

    p: float
    dim: int = 3
    name: str = "norm"

    def reference(self, a):
        return np.zeros(self.dim)

    def potential(self, x, a):
        return np.sum(np.abs(x) ** self.p, axis=-1) / self.p

    def grad(self, x, a):
        return np.sign(x) * np.abs(x) ** (self.p - 1)

    def inverse(self, mu, a):
        return np.sign(mu) * np.abs(mu) ** (1 / (self.p - 1))


@dataclass(frozen=True)
class _NormWithHessian(_Norm):
    def hessian(self, x, a):
        return (self.p - 1) * np.abs(x) ** (self.p - 2)


@dataclass(frozen=True)
class _PlusLinear:
    """``R_a + ⟨c, x⟩`` (renormalized to min 0), built from a family's own maps; no Hessian.

    Its minimizer is ``∇R_a*(−c)``: adding a linear function moves the position only.
    """

    base: object
    c: np.ndarray
    name: str = "plus-linear"

    @property
    def dim(self):
        return self.base.dim

    def reference(self, a):
        return np.asarray(self.base.inverse(-self.c, a))

    def grad(self, x, a):
        return np.asarray(self.base.grad(x, a)) + self.c

    def inverse(self, mu, a):
        return np.asarray(self.base.inverse(np.asarray(mu) - self.c, a))

    def potential(self, x, a):
        ref = self.reference(a)
        return (np.asarray(self.base.potential(x, a)) + np.asarray(x) @ self.c
                - float(self.base.potential(ref, a)) - float(ref @ self.c))


def _unit(n, d, seed):
    D = np.random.default_rng(seed).standard_normal((n, d))
    return D / np.linalg.norm(D, axis=1, keepdims=True)


@pytest.mark.parametrize("cls", [_Norm, _NormWithHessian])
@pytest.mark.parametrize("p, expected", [(2.0, 0.0), (1.5, 0.5), (1.2, 0.8), (3.0, -1.0)])
def test_index_of_homogeneous_functions(cls, p, expected):
    """ι = 2 − p for ‖x‖_p^p, through the family's Hessian and through differences of ∇R."""
    D = _unit(8, 3, 0)
    idx = type_index(cls(p), 0.0, 0.7 * D)
    np.testing.assert_allclose(idx, expected, atol=1e-9)
    # the curvature along the ray is p(p − 1)R(x) for a degree-p function, computed by hand
    R = np.sum(np.abs(0.7 * D) ** p, 1) / p
    np.testing.assert_allclose(ray_curvature(cls(p), 0.0, 0.7 * D), p * (p - 1) * R, rtol=1e-9)


def _families():
    d = 3
    return {
        "uv": uv([1.0, 0.3, 2.0], [0.5, -0.8, 0.1]),
        "u2-v2": u_squared_minus_v_squared([1.0, 0.4, 1.5], [0.5, 0.9, -0.2]),
        "u2": u_squared([1.0, 0.5, 2.0]),
        "power k=2": power(2, np.full(d, 1.0), np.full(d, 0.5)),
        "quadratic uv": quadratic_uv([1.0, 0.7, 0.4], [0.5, -0.3, 0.9]),
    }


@pytest.mark.parametrize("name", ["uv", "u2-v2", "u2", "power k=2", "quadratic uv"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_type_index_ignores_added_linear_functions(name, seed):
    """R + ⟨c, x⟩ has the same type index as R, while its position moves (docs/theory.md §4).

    The shifted family has no Hessian, so its index comes from differences of its own gradient;
    the base family's from its closed-form Hessian.
    """
    fam = _families()[name]
    c = 0.1 * np.random.default_rng(seed).standard_normal(fam.dim)
    shifted = _PlusLinear(fam, c)
    a = [0.0, 0.5, 2.0]
    rep = measure_effects(fam, a, t=0.3, seed=seed)
    rep_s = measure_effects(shifted, a, t=0.3, seed=seed)
    np.testing.assert_allclose(rep_s.type_index, rep.type_index, atol=1e-8)
    moved = np.linalg.norm(rep_s.reference - rep.reference, axis=1)
    assert np.all(moved > 0.05 * np.linalg.norm(rep.reference, axis=1))


def _hyperbolic_index(X, beta):
    """Closed form (docs/theory.md §3): ∇²R_a = c/√(x² + β²), κ(x) = Σ c x_i²/√(x_i² + β_i²)."""
    def kappa(Y):
        return np.sum(Y**2 / np.sqrt(Y**2 + beta**2), axis=-1)

    return 2.0 - np.log2(kappa(2 * X) / kappa(X))


@pytest.mark.parametrize("u0", [1.0, [1.0, 0.5, 2.0], [0.01, 3.0]])
def test_u_squared_type_never_changes(u0):
    """x = u²: R_a = R_0 + (a/2)·Σx + const, so ι = 1 (curvature c/x) at every a and scale."""
    a = [0.0, 0.5, 1.0, 2.0, 4.0, 20.0, 50.0, 300.0]
    # the quadratic engine's Newton solve for ∇R_a reaches only a ≈ 20 (starts at μ = 0)
    for fam, a_max in ((u_squared(u0), 300.0), (quadratic_u2(u0), 20.0)):
        for t in (0.01, 0.1, 1.0, 10.0):
            rep = measure_effects(fam, [ai for ai in a if ai <= a_max], t=t)
            np.testing.assert_allclose(rep.type_index, 1.0, atol=1e-9)
        assert rep.shift[-1] > 0.9 * np.linalg.norm(np.atleast_1d(u0) ** 2)  # the position moves


@pytest.mark.parametrize("u0, v0", [(1.0, 0.0), (1.0, 0.5), ([1.0, 0.3, 2.0], [0.5, -0.8, 0.1])])
def test_uv_type_index_rises_like_the_closed_form(u0, v0):
    """u ⊙ v: ι(a) from β(a) = |u₀² − v₀²|e^{−2a}/2 (theory §3), rising from L2 towards L1."""
    a = np.linspace(0.0, 8.0, 33)
    fam = uv(u0, v0)
    D = _unit(12, fam.dim, 1) if fam.dim > 1 else np.array([[1.0], [-1.0]])
    rep = measure_effects(fam, a, test_vectors=D, t=0.1)
    beta0 = np.abs(np.asarray(u0) ** 2 - np.asarray(v0) ** 2) / 2
    expected = [np.median(_hyperbolic_index(0.1 * D, beta0 * np.exp(-2 * ai))) for ai in a]
    np.testing.assert_allclose(rep.type_index, expected, atol=1e-12)
    assert np.all(np.diff(rep.type_index) > 0)
    assert rep.type_index[0] < 0.2 and rep.type_index[-1] > 0.99


def test_u2_minus_v2_type_index_matches_closed_form():
    u0, v0 = np.array([1.0, 0.4, 1.5]), np.array([0.5, 0.9, -0.2])
    a = np.linspace(0.0, 6.0, 13)
    D = _unit(10, 3, 4)
    rep = measure_effects(u_squared_minus_v_squared(u0, v0), a, test_vectors=D, t=0.05)
    beta0 = 2 * np.abs(u0 * v0)
    expected = [np.median(_hyperbolic_index(0.05 * D, beta0 * np.exp(-2 * ai))) for ai in a]
    np.testing.assert_allclose(rep.type_index, expected, atol=1e-12)
    assert np.all(np.diff(rep.type_index) > 0)


def _power_index(k, u0, v0, a, x):
    """ι at scalar x from theory §7 alone: x(μ) = K^{-q}(U^{-q} − V^{-q}), solved by brentq,
    curvature 1/x'(μ) with x'(μ) = qK^{-q}(U^{-q-1} + V^{-q-1})."""
    p, K, q = 2 * k - 2, 2 * k * (2 * k - 2), k / (k - 1)
    cu = u0 ** (-p) / K if u0 else np.inf
    cv = v0 ** (-p) / K if v0 else np.inf

    def x_of(mu):
        U, V = cu + a - mu, cv + a + mu
        return K ** (-q) * ((U ** (-q) if np.isfinite(U) else 0.0) - (V ** (-q) if np.isfinite(V) else 0.0))

    def curv(y):
        lo, hi = -cv - a, cu + a
        lo = lo if np.isfinite(lo) else -1e6
        hi = hi if np.isfinite(hi) else 1e6
        span = hi - lo
        mu = brentq(lambda m: x_of(m) - y, lo + 1e-15 * span, hi - 1e-15 * span, xtol=1e-300,
                    rtol=1e-15, maxiter=500)
        U, V = cu + a - mu, cv + a + mu
        d = q * K ** (-q) * ((U ** (-q - 1) if np.isfinite(U) else 0.0)
                             + (V ** (-q - 1) if np.isfinite(V) else 0.0))
        return y * y / d

    return 2.0 - np.log2(curv(2 * x) / curv(x))


@pytest.mark.parametrize("k", [2, 3])
def test_power_type_index_matches_theory(k):
    """Both sides: ι rises towards 2 − 1/k (curvature ∝ |x|^{1/k − 2} once ∇R_a nears the ends of
    its interval); one side (v₀ = 0): only the position moves, ι = 2 − 1/k at every a."""
    a = np.array([0.0, 0.3, 1.0, 3.0, 10.0])
    t = 0.1
    rep = measure_effects(power(k, 1.0, 0.5), a, t=t)
    expected = [0.5 * (_power_index(k, 1.0, 0.5, ai, t) + _power_index(k, 1.0, 0.5, ai, -t)) for ai in a]
    np.testing.assert_allclose(rep.type_index, expected, atol=1e-9)
    assert np.all(np.diff(rep.type_index) > 0)
    assert abs(rep.type_index[-1] - (2 - 1 / k)) < 0.02
    one = measure_effects(power(k, 1.0, 0.0), a, t=t)
    np.testing.assert_allclose(one.type_index, 2 - 1 / k, atol=1e-9)
    np.testing.assert_allclose([_power_index(k, 1.0, 0.0, ai, t) for ai in a], 2 - 1 / k, atol=1e-9)


def test_power_hessian_matches_differences_of_the_gradient():
    fam = power(2, [1.0, 0.7], [0.5, 0.0])
    x = np.array([[0.3, 0.2], [-0.4, 1.5]])
    for a in (0.0, 0.8):
        h = 1e-6
        fd = (fam.grad(x + h, a) - fam.grad(x - h, a)) / (2 * h)
        np.testing.assert_allclose(fam.hessian(x, a), fd, rtol=1e-6)


def test_positional_type_and_range_numbers_for_uv():
    u0, v0 = 1.0, 0.5
    a = np.array([0.0, 1.0, 2.0, 4.0])
    rep = measure_effects(uv(u0, v0), a, dual_step=0.5)
    # closed forms of theory §3 (x̄(a) = u0 v0 e^{−2a}, |δ(a)| = |u0² − v0²| e^{−2a})
    np.testing.assert_allclose(rep.reference[:, 0], u0 * v0 * np.exp(-2 * a), rtol=1e-14)
    np.testing.assert_allclose(rep.shift, u0 * v0 * (1 - np.exp(-2 * a)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rep.scale[:, 0], abs(u0**2 - v0**2) * np.exp(-2 * a), rtol=1e-14)
    # local scale: d/dμ of (|δ|/2) sinh(2μ + s) at 0 = |δ| cosh(s) = sqrt(|δ|² + 4 x̄²)
    delta = abs(u0**2 - v0**2) * np.exp(-2 * a)
    np.testing.assert_allclose(rep.local_scale[:, 0], np.sqrt(delta**2 + 4 * rep.reference[:, 0] ** 2),
                               rtol=1e-8)
    # range: dual interval is all of R; reach = (|δ|/2) sinh(±2m + s), contracting as e^{−2a}
    assert np.all(np.isinf(rep.dual_lo)) and np.all(np.isinf(rep.dual_hi))
    s = np.arcsinh(2 * u0 * v0 / abs(u0**2 - v0**2))
    np.testing.assert_allclose(rep.reach_hi[:, 0], delta / 2 * np.sinh(1.0 + s), rtol=1e-12)
    np.testing.assert_allclose(rep.reach_width[:, 0],
                               delta / 2 * (np.sinh(1.0 + s) - np.sinh(-1.0 + s)), rtol=1e-12)


def test_power_range_in_report():
    fam = family_from_name("power", 1.0, 0.5, 2)
    rep = measure_effects(fam, [0.0, 0.5, 1.0], dual_step=0.1)
    c_u, c_v = 1.0 / 8, 0.5 ** (-2) / 8
    np.testing.assert_allclose(rep.dual_hi[:, 0], c_u + rep.a, rtol=1e-14)
    np.testing.assert_allclose(rep.dual_lo[:, 0], -c_v - rep.a, rtol=1e-14)
    assert np.all(np.diff(rep.reach_width[:, 0]) < 0)
    assert rep.scale is None


def test_bad_input():
    with pytest.raises(MirrorflowError, match="a must be >= 0"):
        measure_effects(uv(1.0, 0.0), [-1.0])
    with pytest.raises(MirrorflowError, match="unknown parameterization"):
        family_from_name("uvw")
    with pytest.raises(MirrorflowError, match="test_vectors must have 1 columns"):
        measure_effects(uv(1.0, 0.0), [0.0], test_vectors=np.ones((2, 3)))
    with pytest.raises(MirrorflowError, match="t must be > 0"):
        measure_effects(uv(1.0, 0.0), [0.0], t=0.0)
    # x = u² keeps its sign: a test direction of the other sign is outside the domain
    with pytest.raises(MirrorflowError, match="outside the domain"):
        measure_effects(u_squared([1.0, 2.0]), [0.0], test_vectors=np.array([[1.0, -1.0]]))


def test_figure_written_and_nothing_on_error(tmp_path):
    out = tmp_path / "fig.png"
    rep = plot_effects(family_from_name("u2", 1.0), [0.0, 1.0], out, t=0.3)
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rep.a.tolist() == [0.0, 1.0] and rep.t == 0.3
    bad = tmp_path / "fig.txt"
    with pytest.raises(MirrorflowError, match="use one of"):
        plot_effects(family_from_name("uv"), [0.0], bad)
    assert not bad.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def test_cli_effects(tmp_path):
    runner = CliRunner()
    out = tmp_path / "fig.png"
    res = runner.invoke(app, ["effects", "power", "--a", "0", "0.5", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists()
    res = runner.invoke(app, ["effects", "uv", "--a", "0,2", "--t", "0.2", "--json"])
    assert res.exit_code == 0
    payload = json.loads(res.output)
    rows = payload["rows"]
    assert [r["a"] for r in rows] == [0.0, 2.0]
    assert rows[1]["reference"] == pytest.approx(0.5 * np.exp(-4.0))
    # type index at |x| = t from the closed form (theory §3; u0 = 1, v0 = 0.5: β = 0.375 e^{−2a})
    assert payload["t"] == 0.2 and "Hess R_a" in payload["type_index_definition"]
    for r in rows:
        beta = 0.375 * np.exp(-2 * r["a"])
        assert r["type_index"] == pytest.approx(0.5 * np.log2((0.16 + beta**2) / (0.04 + beta**2)), abs=1e-12)
    res = runner.invoke(app, ["effects", "uv", "--a", "1", "--t", "-1"])
    assert res.exit_code == 2 and "t must be > 0" in res.output and "Traceback" not in res.output
    bad = tmp_path / "no.png"
    res = runner.invoke(app, ["effects", "nope", "--a", "1", "--out", str(bad)])
    assert res.exit_code == 2
    assert "unknown parameterization" in res.output
    assert "Traceback" not in res.output
    assert not bad.exists()


def test_figure_for_families_with_a_full_hessian_or_none(tmp_path):
    """The type panel uses a full Hessian (quadratic engine) or differences of ∇R (no Hessian)."""
    quad = quadratic_uv([1.0, 0.7], [0.5, -0.3])
    rep = plot_effects(quad, [0.0, 1.0], tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 10_000
    shifted = _PlusLinear(uv([1.0, 0.7], [0.5, -0.3]), np.array([0.05, -0.02]))
    rep_s = plot_effects(shifted, [0.0, 1.0], tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 10_000
    # same maps (theory §7 reproduces §3), same type, different position
    np.testing.assert_allclose(rep_s.type_index, rep.type_index, atol=1e-8)
