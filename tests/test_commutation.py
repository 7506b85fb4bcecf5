"""Commutation check (docs/theory.md §2, §7): known answers and brackets computed by hand / FD."""

import numpy as np
import pytest
import torch

from mirrorflow import MirrorflowError
from mirrorflow.geometry.commutation import (
    NonCommutingError,
    check_commutation,
    lie_bracket,
    weight_decay,
)


def uv(w):
    return w[:2] * w[2:]


def u2_minus_v2(w):
    return w[:2] ** 2 - w[2:] ** 2


@pytest.mark.parametrize("g, dim", [(uv, 4), (u2_minus_v2, 4)])
def test_weight_decay_commutes_with_quadratic(g, dim):
    rep = check_commutation(g, "weight_decay", dim=dim, n_points=6, seed=1)
    assert rep.commutes
    assert rep.max_norm < 1e-12
    rep.require()  # does not raise


@pytest.mark.parametrize(
    "g, h, dim",
    [
        (lambda w: w[0] * w[1] * w[2], "weight_decay", 3),            # depth 3
        (lambda w: w**3, "weight_decay", 2),                           # u³
        (uv, lambda w: torch.sum(torch.abs(w)), 4),                    # L1 on (u, v)
        (uv, lambda w: torch.sum(torch.abs(w) ** 3), 4),               # Lp, p = 3
        (uv, lambda w: torch.sum(torch.abs(w) ** 1.5), 4),             # Lp, p = 1.5
    ],
)
def test_known_non_commuting_pairs(g, h, dim):
    rep = check_commutation(g, h, dim=dim, n_points=6, seed=2)
    assert not rep.commutes
    assert rep.worst.pair[1] == "∇h"
    assert rep.worst.relative > 0.1
    with pytest.raises(NonCommutingError, match=r"\[∇g_\d, ∇h\] has norm [0-9.e+-]+"):
        rep.require()


def test_lp_with_p_2_is_weight_decay_and_commutes():
    rep = check_commutation(uv, lambda w: torch.sum(torch.abs(w) ** 2), dim=4, n_points=4)
    assert rep.commutes


def test_bracket_depth3_matches_hand_computation():
    # g = u v s, Y = ∇h = w: [∇g, w] = ∇g − D∇g·w = ∇g − 2∇g = −∇g (∇g homogeneous of degree 2)
    w = np.array([0.7, -1.3, 0.4])
    X = torch.func.grad(lambda w: w[0] * w[1] * w[2])
    br = lie_bracket(X, lambda w: w, w)
    u, v, s = w
    np.testing.assert_allclose(br, -np.array([v * s, u * s, u * v]), rtol=1e-14)


def test_bracket_matches_finite_differences():
    # two nonlinear fields; DY·X − DX·Y with Jacobians by central differences
    def X(w):
        return torch.stack([torch.sin(w[1]), w[0] * w[2], torch.exp(0.3 * w[0])])

    def Y(w):
        return torch.stack([w[1] ** 2, torch.cos(w[0]) * w[2], w[0] + w[1] * w[2]])

    w = np.array([0.3, -0.8, 1.1])

    def jac(F, w, h=1e-6):
        cols = []
        for i in range(3):
            e = np.zeros(3)
            e[i] = h
            fp = F(torch.as_tensor(w + e)).numpy()
            fm = F(torch.as_tensor(w - e)).numpy()
            cols.append((fp - fm) / (2 * h))
        return np.stack(cols, axis=1)

    xv, yv = X(torch.as_tensor(w)).numpy(), Y(torch.as_tensor(w)).numpy()
    expected = jac(Y, w) @ xv - jac(X, w) @ yv
    np.testing.assert_allclose(lie_bracket(X, Y, w), expected, rtol=1e-7, atol=1e-9)


def test_non_commuting_parameterization_fields():
    # g = (u v, u²): [∇(uv), ∇(u²)] = (2v, −2u) by hand
    g = lambda w: torch.stack([w[0] * w[1], w[0] ** 2])  # noqa: E731
    pts = np.array([[0.5, 2.0], [1.5, -0.5]])
    rep = check_commutation(g, None, points=pts)
    assert not rep.commutes
    assert rep.worst.pair == ("∇g_0", "∇g_1")
    expected = max(np.hypot(2 * p[1], 2 * p[0]) for p in pts)
    assert rep.max_norm == pytest.approx(expected, rel=1e-12)


def test_weight_decay_helper_and_bad_input():
    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert float(weight_decay(w)) == pytest.approx(2.5)
    with pytest.raises(MirrorflowError, match="pass dim"):
        check_commutation(uv, "weight_decay")
    with pytest.raises(MirrorflowError, match="unknown regularizer"):
        check_commutation(uv, "l7", dim=4)
    with pytest.raises(MirrorflowError, match="g must be"):
        check_commutation(3.0, dim=4)
    with pytest.raises(MirrorflowError, match="g failed"):
        check_commutation(lambda w: w[5], dim=2)
    with pytest.raises(MirrorflowError, match="no outputs"):
        check_commutation(uv, dim=1)


def test_same_seed_same_points():
    g = lambda w: w[0] * w[1] * w[2]  # noqa: E731
    r1 = check_commutation(g, "weight_decay", dim=3, seed=5)
    r2 = check_commutation(g, "weight_decay", dim=3, seed=5)
    np.testing.assert_array_equal(r1.worst.point, r2.worst.point)
