"""The statistics layer of the claims: exact paired tests of a linear contrast, their intervals,
power by simulation and Holm's step-down (no run records here: plain arrays in, numbers out).

Every test of :mod:`mirrorflow.report.claims` reduces to one question about paired samples
``(x_i, y_i)``, one pair per seed: is ``mean(x) − θ·mean(y)`` above or below 0? ``Compare``
asks it with ``x = d`` (the per-seed effect) and ``y = 1``; the ratio tests (``T = mean(x) /
mean(y)``, ``y`` of known sign) ask it with ``d_i(θ) = x_i − θ·y_i``, which is the classical
Fieller construction. The one-sided decision at ``θ`` needs **both**

* Student's one-sided t test on ``d(θ)`` at ``Rule.alpha_side`` (2.5%): exact when the
  per-seed values are normal; its inversion is the t interval of a mean and Fieller's interval of
  a ratio of means, the 95% intervals the report shows; and
* the exact sign-flip permutation test (Fisher–Pitman: all ``2^n`` sign patterns of ``d(θ)``,
  or ``Rule.n_flips`` seeded random ones above ``Rule.exact_up_to`` pairs) at
  ``Rule.alpha_signflip`` (5%): exact for any distribution symmetric about 0 at the boundary, so
  a decision never rests on normality alone nor on one extreme seed. With 5 pairs it needs all
  five ``d_i(θ)`` on the claimed side (p = 1/32).

The decision's p-value is ``max(p_t, p_flip · alpha_side / alpha_signflip)``: below
``alpha_side`` exactly when both tests reject, and never below ``p_t`` (so it is a valid p-value
wherever the t test is: what Holm's procedure needs). docs/claims.md has the measured error
rates (tests/test_claims_calibration.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "RULE",
    "Rule",
    "compare_sides",
    "fieller_interval",
    "holm",
    "mean_interval",
    "nearer_sides",
    "one_sided",
    "same_sides",
    "seeds_for_power",
    "sign_test",
    "signflip_pvalues",
    "t_pvalues",
]


@dataclass(frozen=True)
class Rule:
    """The decision rule shared by every claim, fixed before the runs.

    ``alpha_side``: level of each one-sided decision (2.5%: a verdict is the 95% interval
    lying on one side of the test's boundary). ``alpha_signflip``: level of the exact sign-flip
    test required beside the t test (5%: reachable with 5 pairs, p = 1/32). ``min_pairs``:
    fewest pairs for a verdict (with 4 the sign-flip p is at least 1/16). ``family_alpha``:
    Holm's family-wise level across claims (two-sided scale). ``power``: target of the seeds
    the report asks for, from ``power_reps`` simulated stores per seed count (0: not
    computed). ``n_flips``: random sign patterns above ``exact_up_to`` pairs. ``looks``: the
    number of looks of a sequential design whose share of the levels this rule is
    (:func:`mirrorflow.report.claims.sequential.look_rule`; 1: a single look).
    """

    min_pairs: int = 5
    alpha_side: float = 0.025
    alpha_signflip: float = 0.05
    family_alpha: float = 0.05
    power: float = 0.8
    power_reps: int = 200
    exact_up_to: int = 12
    n_flips: int = 20000
    seed: int = 0
    looks: int = 1

    @property
    def confidence(self) -> float:
        """Level of the two-sided interval whose sides are the one-sided decisions."""
        return 1.0 - 2.0 * self.alpha_side

    def to_json(self) -> dict:
        return {"min_pairs": self.min_pairs, "alpha_side": self.alpha_side,
                "confidence": self.confidence, "alpha_signflip": self.alpha_signflip,
                "family_alpha": self.family_alpha, "power": self.power,
                "exact_up_to": self.exact_up_to, "n_flips": self.n_flips, "seed": self.seed,
                "looks": self.looks}


RULE = Rule()


# ----------------------------------------------------------------------------- the tests
def t_pvalues(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Student t p-values ``(greater, less)`` of ``mean(d) = 0`` along the last axis.

    Zero spread: p = 0 on the side of a nonzero mean, 1 on the other (and 1 both ways at 0).
    """
    from scipy import stats

    d = np.asarray(d, dtype=np.float64)
    n = d.shape[-1]
    m = d.mean(axis=-1)
    s = d.std(axis=-1, ddof=1) if n > 1 else np.zeros_like(m)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = m / (s / math.sqrt(n))
    df = max(n - 1, 1)
    pg = np.where(s > 0, stats.t.sf(t, df), np.where(m > 0, 0.0, 1.0))
    pl = np.where(s > 0, stats.t.cdf(t, df), np.where(m < 0, 0.0, 1.0))
    return np.asarray(pg, dtype=np.float64), np.asarray(pl, dtype=np.float64)


def _patterns(n: int, rule: Rule) -> tuple[np.ndarray, bool]:
    """``(signs (M, n), exact)``: every ±1 pattern, or ``n_flips`` seeded random ones."""
    if n <= rule.exact_up_to:
        idx = np.arange(2 ** n)[:, None]
        return 1.0 - 2.0 * ((idx >> np.arange(n)) & 1), True
    rng = np.random.default_rng(rule.seed)
    return rng.choice([-1.0, 1.0], size=(rule.n_flips, n)), False


def signflip_pvalues(d: np.ndarray, rule: Rule = RULE) -> tuple[np.ndarray, np.ndarray]:
    """One-sided sign-flip permutation p-values ``(greater, less)`` of the mean of ``d`` along
    the last axis: the share of sign patterns whose mean is at least (at most) the observed one.
    Exact (all ``2^n`` patterns) up to ``rule.exact_up_to`` pairs; above, ``(1 + k)/(1 + M)``
    over ``rule.n_flips`` seeded random patterns (a valid p-value)."""
    d = np.asarray(d, dtype=np.float64)
    flat = d.reshape(-1, d.shape[-1])
    n = flat.shape[1]
    signs, exact = _patterns(n, rule)
    obs = flat.mean(axis=1)
    tol = 1e-12 * (np.abs(flat).max(axis=1) + 1e-300)
    pg = np.empty(len(flat))
    pl = np.empty(len(flat))
    step = max(1, 2_000_000 // len(signs))
    for i in range(0, len(flat), step):
        means = flat[i:i + step] @ signs.T / n  # (r, M)
        o, t = obs[i:i + step, None], tol[i:i + step, None]
        ge, le = (means >= o - t).sum(axis=1), (means <= o + t).sum(axis=1)
        if exact:
            pg[i:i + step], pl[i:i + step] = ge / len(signs), le / len(signs)
        else:
            pg[i:i + step] = (1 + ge) / (1 + len(signs))
            pl[i:i + step] = (1 + le) / (1 + len(signs))
    return pg.reshape(d.shape[:-1]), pl.reshape(d.shape[:-1])


def one_sided(d: np.ndarray, rule: Rule = RULE) -> tuple[np.ndarray, np.ndarray]:
    """The decision p-values ``(greater, less)`` of ``mean(d) = 0``: ``max(p_t, p_flip ·
    alpha_side / alpha_signflip)`` each; ``≤ rule.alpha_side`` exactly when the t test and the
    sign-flip test both reject at their levels."""
    tg, tl = t_pvalues(d)
    fg, fl = signflip_pvalues(d, rule)
    k = rule.alpha_side / rule.alpha_signflip
    return np.maximum(tg, fg * k), np.maximum(tl, fl * k)


def sign_test(d: np.ndarray) -> tuple[int, int, float, float]:
    """``(k positive, n nonzero, p one-sided 'greater', p one-sided 'less')`` of ``d`` (binomial
    sign test; reported beside the decision, not part of it)."""
    from scipy import stats

    d = np.asarray(d)
    k, n = int(np.sum(d > 0)), int(np.sum(d != 0))
    if n == 0:
        return 0, 0, 1.0, 1.0
    return (k, n, float(stats.binomtest(k, n, 0.5, alternative="greater").pvalue),
            float(stats.binomtest(k, n, 0.5, alternative="less").pvalue))


# ------------------------------------------------------------------------------ intervals
def _tcrit(n: int, rule: Rule) -> float:
    from scipy import stats

    return float(stats.t.ppf(1.0 - rule.alpha_side, max(n - 1, 1)))


def mean_interval(d: np.ndarray, rule: Rule = RULE) -> tuple[float, float]:
    """Student's t interval of the mean of ``d`` at ``rule.confidence`` (its ends are the
    one-sided t decisions at ``alpha_side``)."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n < 2:
        return math.nan, math.nan
    m, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n)
    h = _tcrit(n, rule) * se
    return m - h, m + h


def fieller_interval(x: np.ndarray, y: np.ndarray, rule: Rule = RULE) -> tuple[float, float]:
    """Fieller's interval of ``mean(x) / mean(y)`` at ``rule.confidence``: the ``θ`` whose
    contrast ``x − θ·y`` the two one-sided t tests at ``alpha_side`` do not reject.

    Bounded only when ``mean(y)`` is itself significantly nonzero; else ``(−inf, inf)`` (or
    the complement of an interval, returned as ``(−inf, inf)``: nothing is ruled out).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 2:
        return math.nan, math.nan
    t2 = _tcrit(n, rule) ** 2
    mx, my = x.mean(), y.mean()
    c = np.cov(x, y, ddof=1) / n
    a = my * my - t2 * c[1, 1]
    b = mx * my - t2 * c[0, 1]
    cc = mx * mx - t2 * c[0, 0]
    disc = b * b - a * cc
    if a <= 0 or disc < 0:
        return -math.inf, math.inf
    r = math.sqrt(disc)
    return float((b - r) / a), float((b + r) / a)


# --------------------------------------------------------------------------------- power
#: seed counts at which power is computed (the monotone choice reads them in order)
POWER_GRID = (5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30, 40, 50)


def seeds_for_power(decide: Callable[[np.ndarray], np.ndarray],
                    draw: Callable[[np.random.Generator, int, int], np.ndarray],
                    rule: Rule = RULE, reps: int = 200,
                    grid: Sequence[int] = POWER_GRID) -> tuple[int | None, dict[int, float]]:
    """``(n, power per n)``: the fewest seeds ``n`` of ``grid`` whose simulated power — and the
    power at every larger ``n`` of the grid (the monotone choice: the discrete sign-flip test
    can lose power when one seed is added) — is at least ``rule.power``; ``None`` when the
    grid's largest ``n`` is not enough. ``draw(rng, reps, n)`` returns samples ``(reps, n, …)``;
    ``decide(samples)`` a boolean per repetition."""
    rng = np.random.default_rng(rule.seed + 1)
    power = {n: float(np.mean(decide(draw(rng, reps, n)))) for n in grid}
    ok = None
    for n in reversed(grid):
        if power[n] < rule.power:
            break
        ok = n
    return ok, power


# ---------------------------------------------------------------------------------- Holm
def holm(pvalues: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down: which hypotheses are rejected at family-wise level ``alpha``."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    out = [False] * m
    for rank, i in enumerate(order):
        if not p[i] <= alpha / (m - rank):
            break
        out[i] = True
    return out


# ------------------------------------------------- the decision p-values of each test kind
# Vectorized over leading axes (the calibration suite runs thousands of stores at once); the
# test kinds of :mod:`mirrorflow.report.claims.kinds` call the same functions for one store.
def compare_sides(d: np.ndarray, delta: float, rule: Rule = RULE
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(p_supported, p_contradicted)`` of Compare: H0 ``mean d ≤ delta`` and H0
    ``mean d ≥ 0``."""
    d = np.asarray(d, dtype=np.float64)
    return one_sided(d - delta, rule)[0], one_sided(d, rule)[1]


def nearer_sides(x: np.ndarray, y: np.ndarray, theta: float, rule: Rule = RULE
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p_supported, p_contradicted, p_gap)`` of Nearer: ``T = mean x / mean y`` above /
    below ``theta``, each together with ``mean y > 0`` (intersection–union: the larger p)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    p_gap = one_sided(y, rule)[0]
    g, le = one_sided(x - theta * y, rule)
    return np.maximum(p_gap, g), np.maximum(p_gap, le), p_gap


def same_sides(q: np.ndarray, delta: np.ndarray, margin: float, rule: Rule = RULE
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p_supported, p_contradicted, p_gate)`` of SameThroughA, ``T = mean q / |mean Δ|``:
    supported ``|T| < margin`` (two one-sided tests), contradicted ``T > margin`` or
    ``T < −margin`` (Bonferroni over the two), each with ``Δ ≠ 0`` shown in the direction of
    its mean (a two-sided test at ``2·alpha_side``)."""
    q, delta = np.asarray(q, dtype=np.float64), np.asarray(delta, dtype=np.float64)
    s = np.where(delta.mean(axis=-1) >= 0, 1.0, -1.0)[..., None]
    y = s * delta
    p_gate = one_sided(y, rule)[0]
    up_g, up_l = one_sided(q - margin * y, rule)
    dn_g, dn_l = one_sided(q + margin * y, rule)
    p_sup = np.maximum(p_gate, np.maximum(up_l, dn_g))
    p_con = np.maximum(p_gate, np.minimum(1.0, 2.0 * np.minimum(up_g, dn_l)))
    return p_sup, p_con, p_gate
