"""The three effects as numbers, the figure and the CLI (docs/theory.md §3, §4, §7)."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
from typer.testing import CliRunner

from mirrorflow import MirrorflowError
from mirrorflow.cli import app
from mirrorflow.geometry.effects import family_from_name, l1_index, measure_effects
from mirrorflow.geometry.legendre import uv
from mirrorflow.report.effects_figure import plot_effects


@dataclass(frozen=True)
class _Norm:
    """Test family R(x) = ‖x − c‖_p^p / p: degree p, so the index must be 2 − p."""

    p: float
    dim: int = 3
    name: str = "norm"

    def reference(self, a):
        return np.zeros(self.dim)

    def potential(self, x, a):
        return np.sum(np.abs(x) ** self.p, axis=-1) / self.p

    def inverse(self, mu, a):
        return np.sign(mu) * np.abs(mu) ** (1 / (self.p - 1))


@pytest.mark.parametrize("p, expected", [(2.0, 0.0), (1.5, 0.5), (1.2, 0.8)])
def test_index_of_homogeneous_functions(p, expected):
    D = np.random.default_rng(0).standard_normal((8, 3))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    idx, r1, r2 = l1_index(_Norm(p), 0.0, D, t=0.7)
    assert idx == pytest.approx(expected, abs=1e-12)
    # the ratios are the mean of R/‖·‖₁ and R/‖·‖₂² on the same points, computed by hand
    R = np.sum(np.abs(0.7 * D) ** p, 1) / p
    assert r1 == pytest.approx(np.mean(R / np.abs(0.7 * D).sum(1)))
    assert r2 == pytest.approx(np.mean(R / (0.49 * (D**2).sum(1))))


@pytest.mark.parametrize("u0, v0", [(1.0, 0.0), (1.0, 0.5), ([1.0, 0.3, 2.0], [0.5, -0.8, 0.1])])
def test_l1_index_monotone_in_a_for_uv(u0, v0):
    a = np.linspace(0.0, 8.0, 33)
    rep = measure_effects(uv(u0, v0), a, n_test=12, seed=1)
    assert np.all(np.diff(rep.l1_index) > 0)
    assert rep.l1_index[-1] > 0.9  # L1-like once |δ(a)| is tiny


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


def test_figure_written_and_nothing_on_error(tmp_path):
    out = tmp_path / "fig.png"
    rep = plot_effects(family_from_name("u2", 1.0), [0.0, 1.0], out)
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rep.a.tolist() == [0.0, 1.0]
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
    res = runner.invoke(app, ["effects", "uv", "--a", "0,2", "--json"])
    assert res.exit_code == 0
    rows = json.loads(res.output)["rows"]
    assert [r["a"] for r in rows] == [0.0, 2.0]
    assert rows[1]["reference"] == pytest.approx(0.5 * np.exp(-4.0))
    bad = tmp_path / "no.png"
    res = runner.invoke(app, ["effects", "nope", "--a", "1", "--out", str(bad)])
    assert res.exit_code == 2
    assert "unknown parameterization" in res.output
    assert "Traceback" not in res.output
    assert not bad.exists()
