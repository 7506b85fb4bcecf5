"""Commutation check (docs/theory.md §2, §7): known answers and brackets computed by hand / FD."""

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mirrorflow import MirrorflowError
from mirrorflow.geometry.commutation import (
    NonCommutingError,
    check_commutation,
    lie_bracket,
    weight_decay,
)
from mirrorflow.geometry.legendre import uv as uv_family
from mirrorflow.geometry.numeric import NumericLegendre


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


# --------------------------------------------------------------------------- rotated families
# Commutation is invariant under an orthogonal change of parameters w ↦ Qw: the gradient fields of
# g∘Q and h∘Q are the fields of g and h pulled back by Q (∇(g∘Q)(w) = Qᵀ∇g(Qw)), and Lie brackets
# are natural under diffeomorphisms. So every family below must give the same verdict in rotated
# coordinates, where the brackets' two terms no longer vanish entry by entry.


def _sym(rng, m):
    S = rng.standard_normal((m, m))
    return torch.as_tensor(S + S.T)


def _ortho(m, seed):
    if m == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    return torch.as_tensor(scipy.stats.ortho_group.rvs(m, random_state=seed))


def _commuting(name, d, seed):
    """(g, h, m) of a pair that commutes exactly (docs/theory.md §2, §7)."""
    rng = np.random.default_rng(seed)
    m = 2 * d
    if name == "uv":
        return (lambda w: w[:d] * w[d:]), "weight_decay", m
    if name == "u2-v2":
        return (lambda w: w[:d] ** 2 - w[d:] ** 2), "weight_decay", m
    if name == "u2":
        return (lambda w: w**2), "weight_decay", d
    if name in ("quadratics+wd", "quadratics+quadratic h"):
        # g_i = ½wᵀA_i w, h = ½wᵀBw with A_i, B diagonal in one random orthonormal basis P
        P = _ortho(m, seed + 1)
        A = [P.T @ torch.diag(torch.as_tensor(rng.standard_normal(m))) @ P for _ in range(d)]
        B = P.T @ torch.diag(torch.as_tensor(rng.uniform(0.5, 2.0, m))) @ P
        g = lambda w: torch.stack([0.5 * w @ Ai @ w for Ai in A])  # noqa: E731
        return g, ("weight_decay" if name.endswith("wd") else (lambda w: 0.5 * w @ B @ w)), m
    if name == "any quadratic g+wd":  # one quadratic g, any symmetric matrix: [Sw, w] = 0
        S = _sym(rng, m)
        return (lambda w: 0.5 * w @ S @ w), "weight_decay", m
    if name == "UU^T, commuting sensing":  # x_i = <S_i, UUᵀ>, S_i simultaneously diagonal
        P, r = _ortho(d, seed + 2), 2
        S = [P.T @ torch.diag(torch.as_tensor(rng.standard_normal(d))) @ P for _ in range(2)]
        return (lambda w: torch.stack([torch.sum(Si * (w.reshape(d, r) @ w.reshape(d, r).T))
                                       for Si in S])), "weight_decay", d * r
    if name.startswith("power k="):  # x = u^{2k} − v^{2k} with the matched h = u^{2k} + v^{2k}
        k = int(name[-1])
        return (lambda w: w[:d] ** (2 * k) - w[d:] ** (2 * k)), (lambda w: torch.sum(w ** (2 * k))), m
    raise AssertionError(name)


def _non_commuting(name, d, seed):
    """(g, h, m) of a pair that does not commute (docs/theory.md §2, §7)."""
    rng = np.random.default_rng(seed)
    m = 2 * d
    uv_g = lambda w: w[:d] * w[d:]  # noqa: E731
    if name == "uvs depth 3":
        return (lambda w: w[:d] * w[d:2 * d] * w[2 * d:]), "weight_decay", 3 * d
    if name == "u^3":
        return (lambda w: w**3), "weight_decay", d
    if name == "uv+L1":
        return uv_g, (lambda w: torch.sum(torch.abs(w))), m
    if name.startswith("uv+Lp"):
        p = float(name.split()[-1])
        return uv_g, (lambda w: torch.sum(torch.abs(w) ** p)), m
    if name == "uv+anisotropic decay":  # h = ½(‖u‖² + 2‖v‖²): [Jw, Bw] = (BJ − JB)w ≠ 0
        b = torch.cat([torch.ones(d), 2 * torch.ones(d)]).double()
        return uv_g, (lambda w: 0.5 * torch.sum(b * w * w)), m
    if name == "power k=2+wd":  # unmatched: h ≠ c·g on each piece
        return (lambda w: w[:d] ** 4 - w[d:] ** 4), "weight_decay", m
    if name == "non-commuting quadratics":
        A, B = _sym(rng, m), _sym(rng, m)
        return (lambda w: torch.stack([0.5 * w @ A @ w, 0.5 * w @ B @ w])), None, m
    raise AssertionError(name)


def _rotate(g, h, m, seed):
    Q = _ortho(m, seed)
    h_rot = h if (h is None or isinstance(h, str)) else (lambda w: h(Q @ w))
    return (lambda w: g(Q @ w)), h_rot


COMMUTING = ["uv", "u2-v2", "u2", "quadratics+wd", "quadratics+quadratic h", "any quadratic g+wd",
             "UU^T, commuting sensing", "power k=2", "power k=3"]
NON_COMMUTING = ["uvs depth 3", "u^3", "uv+L1", "uv+Lp 1.5", "uv+Lp 3", "uv+anisotropic decay",
                 "power k=2+wd", "non-commuting quadratics"]


@pytest.mark.parametrize("name", COMMUTING)
@settings(max_examples=5, deadline=None)
@given(d=st.integers(1, 3), seed=st.integers(0, 2**16))
@example(d=1, seed=0)
@example(d=2, seed=1)
@example(d=3, seed=2)
def test_rotated_commuting_families_pass(name, d, seed):
    g, h, m = _commuting(name, d, seed)
    g, h = _rotate(g, h, m, seed + 7)
    rep = check_commutation(g, h, dim=m, seed=seed)
    assert rep.commutes, rep.message()
    # rounding level, far below the default tolerance 1e-8 (m·ε with m ≤ 6 is 1.3e-15)
    assert rep.worst.relative < 1e-14, rep.message()


@pytest.mark.parametrize("name", NON_COMMUTING)
@settings(max_examples=5, deadline=None)
@given(d=st.integers(1, 3), seed=st.integers(0, 2**16))
@example(d=1, seed=0)
@example(d=2, seed=1)
@example(d=3, seed=2)
@example(d=1, seed=11940)  # a random pair that nearly commutes: relative bracket 3.6e-3
def test_rotated_non_commuting_families_are_rejected(name, d, seed):
    g, h, m = _non_commuting(name, d, seed)
    g, h = _rotate(g, h, m, seed + 7)
    rep = check_commutation(g, h, dim=m, seed=seed)
    assert not rep.commutes
    # far above rounding (< 1e-14 for the commuting families) and the tolerance 1e-8
    assert rep.worst.relative > 1e-5, rep.message()
    with pytest.raises(NonCommutingError):
        rep.require()


def test_issue_example_rotated_uv_is_accepted_by_the_numeric_engine():
    """u ⊙ v in rotated coordinates: the numeric engine accepts it and reproduces theory §3."""
    Q = torch.as_tensor(scipy.stats.ortho_group.rvs(4, random_state=0))
    g = lambda w: (Q @ w)[:2] * (Q @ w)[2:]  # noqa: E731
    rep = check_commutation(g, "weight_decay", dim=4)
    assert rep.commutes and rep.worst.relative < 1e-14, rep.message()
    u0, v0 = np.array([1.0, 0.6]), np.array([0.3, -0.8])
    eng = NumericLegendre(g, "weight_decay", Q.numpy().T @ np.concatenate([u0, v0]))
    closed, a, mu = uv_family(u0, v0), 0.7, np.array([0.3, -0.5])
    np.testing.assert_allclose(eng.inverse(mu, a), closed.inverse(mu, a), rtol=1e-10)
    np.testing.assert_allclose(eng.reference(a), u0 * v0 * np.exp(-2 * a), rtol=1e-12)


def test_relative_size_uses_the_documented_scale():
    """relative = ‖[X, Y]‖ / (‖DY‖‖X‖ + ‖DX‖‖Y‖ + ‖DX‖‖DY‖‖w‖), computed by hand for g = u v s.

    With Y = ∇h = w (DY = I) and X = ∇g = (vs, us, uv): [X, Y] = −X, and DX is the Hessian
    [[0, s, v], [s, 0, u], [v, u, 0]].
    """
    w = np.array([0.7, -1.3, 0.4])
    u, v, s = w
    X = np.array([v * s, u * s, u * v])
    H = np.array([[0, s, v], [s, 0, u], [v, u, 0]])
    hn = np.linalg.norm(H, 2)
    expected = np.linalg.norm(X) / (np.linalg.norm(X) + hn * np.linalg.norm(w) + hn * np.linalg.norm(w))
    rep = check_commutation(lambda w: w[0] * w[1] * w[2], "weight_decay", points=w[None])
    assert rep.worst.relative == pytest.approx(expected, rel=1e-12)
    assert rep.max_norm == pytest.approx(np.linalg.norm(X), rel=1e-12)


def test_function_torch_cannot_differentiate_is_a_one_line_error():
    g = lambda w: torch.as_tensor(np.asarray(w.detach())[:2] ** 2)  # noqa: E731 - goes through numpy
    with pytest.raises(MirrorflowError, match=r"could not differentiate g or h .*torch operations only"):
        check_commutation(g, "weight_decay", dim=4)
