"""Calibration of the claims' decision rule: synthetic data AT the decision boundaries of every
test kind (null effect, T at its threshold, T at its margin), 5, 8 and 20 pairs. A verdict there
is false; its rate must not exceed the nominal 2.5% per side (5% for both sides together)
beyond Monte-Carlo error (one-sided binomial test at 0.001 against the nominal rate).

The fast version (200 repetitions, normal noise) runs in the default suite, calling the
statistics layer (:mod:`mirrorflow.report.claims.statistics`) on thousands of samples at once;
``test_store_path_gives_the_statistics_layer_verdicts`` checks that a claim evaluated through
run records and the pairing gives the same verdicts on the same numbers. The slow version
(2000 repetitions; normal, heavy-tailed t₃ and skewed noise) prints the table of
docs/claims.md (``pytest -m slow -s tests/test_claims_calibration.py``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from mirrorflow.report.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    RULE,
    SUPPORTED,
    Arm,
    Claim,
    Compare,
    Nearer,
    SameThroughA,
    compare_sides,
    evaluate_claims,
    holm,
    nearer_sides,
    same_sides,
)
from mirrorflow.sweep import RunRecord

A = RULE.alpha_side
DELTA = math.log(1.05)
THETA = 0.5
MARGIN = 1.0 / 3.0
NS = (5, 8, 20)


def _noise(rng, dist: str, shape) -> np.ndarray:
    """Unit-variance noise: normal, t with 3 degrees of freedom (heavy tails), or a centred
    lognormal (skewed)."""
    if dist == "normal":
        return rng.standard_normal(shape)
    if dist == "t3":
        return rng.standard_t(3, shape) / math.sqrt(3.0)
    z = rng.lognormal(0.0, 0.8, shape)
    return (z - math.exp(0.32)) / math.sqrt((math.exp(0.64) - 1) * math.exp(0.64))


def _pair_noise(rng, dist, shape, rho=0.5):
    """Two unit-variance noises with correlation ``rho`` (per pair: shared seed effects)."""
    z1, z2 = _noise(rng, dist, shape), _noise(rng, dist, shape)
    return z1, rho * z1 + math.sqrt(1 - rho * rho) * z2


def scenarios(reps: int, n: int, dist: str, seed: int = 0):
    """``{name: (p_supported, p_contradicted, which verdicts are false)}`` at the boundaries."""
    rng = np.random.default_rng([seed, n, hash(dist) % 1000])
    out = {}
    s = 0.05  # per-seed sd of the log ratio, the order of δ
    d0 = 0.0 + s * _noise(rng, dist, (reps, n))
    out["Compare, null effect (d = 0)"] = (*compare_sides(d0, DELTA), "both")
    dd = DELTA + s * _noise(rng, dist, (reps, n))
    out["Compare, effect = δ"] = (*compare_sides(dd, DELTA), "both")
    # two Compare tests of one claim, both null: contradicted by Bonferroni inside the claim
    e1, e2 = s * _noise(rng, dist, (reps, n)), s * _noise(rng, dist, (reps, n))
    (s1, c1), (s2, c2) = compare_sides(e1, DELTA), compare_sides(e2, DELTA)
    out["claim of two Compare tests, both null"] = (np.maximum(s1, s2),
                                                    np.minimum(1.0, 2 * np.minimum(c1, c2)),
                                                    "both")
    for label, sy in (("clear", 0.3), ("noisy", 1.0)):
        ex, ey = _pair_noise(rng, dist, (reps, n))
        y = 1.0 + sy * ey
        x = THETA * 1.0 + 0.3 * ex
        out[f"Nearer, T = θ = ½, {label} decay effect"] = (*nearer_sides(x, y, THETA)[:2], "both")
    ex, ey = _pair_noise(rng, dist, (reps, n))
    out["Nearer, decay moves nothing"] = (*nearer_sides(0.3 * ex, 0.3 * ey, THETA)[:2], "both")
    for label, mu_d in (("T = +margin", 1.0), ("T = +margin, Δ < 0", -1.0)):
        eq, ed = _pair_noise(rng, dist, (reps, n), rho=0.3)
        delta = mu_d + 0.4 * ed
        q = MARGIN * abs(mu_d) + 0.2 * eq
        out[f"SameThroughA, {label}"] = (*same_sides(q, delta, MARGIN)[:2], "both")
    eq, ed = _pair_noise(rng, dist, (reps, n), rho=0.3)
    q = -MARGIN + 0.2 * eq
    out["SameThroughA, T = −margin"] = (*same_sides(q, 1.0 + 0.4 * ed, MARGIN)[:2], "both")
    eq, ed = _pair_noise(rng, dist, (reps, n), rho=0.3)
    out["SameThroughA, a has no effect"] = (*same_sides(0.2 * eq, 0.4 * ed, MARGIN)[:2],
                                            "both")
    return out


def _too_high(k: int, reps: int, nominal: float) -> bool:
    """``k`` false verdicts in ``reps`` significantly above ``nominal`` (binomial, 0.001)."""
    return stats.binom.sf(k - 1, reps, nominal) < 1e-3


def _rates(reps: int, dists):
    rows = []
    for dist in dists:
        for n in NS:
            for name, (ps, pc, _) in scenarios(reps, n, dist).items():
                sup, con = np.asarray(ps) <= A, np.asarray(pc) <= A
                rows.append((name, dist, n, int(sup.sum()), int(con.sum()), reps))
    return rows


def _check(rows):
    bad = []
    for name, dist, n, ks, kc, reps in rows:
        # false *supported* and false *contradicted*: each ≤ 2.5%, together ≤ 5%
        if _too_high(ks, reps, A) or _too_high(kc, reps, A) or _too_high(ks + kc, reps, 2 * A):
            bad.append((name, dist, n, ks / reps, kc / reps))
    return bad


def test_false_verdict_rates_at_the_boundaries_fast():
    rows = _rates(200, ("normal",))
    assert len(rows) == 3 * 10
    assert not _check(rows), _check(rows)


def test_the_suite_detects_an_anticalibrated_rule():
    """The check above can fail: the old rule's weakness (a one-sided test at 5% per side at
    the shared boundary T = ½) is flagged at 200 repetitions."""
    rng = np.random.default_rng(9)
    reps, n = 200, 8
    ex, ey = _pair_noise(rng, "normal", (reps, n))
    x, y = THETA + 0.3 * ex, 1.0 + 0.3 * ey
    ps, pc, _ = nearer_sides(x, y, THETA)
    k = int(np.sum(ps <= 0.10)) + int(np.sum(pc <= 0.10))  # 10% per side: 20% together
    assert _too_high(k, reps, 2 * A)


def test_power_grows_with_the_effect_and_the_seeds():
    """Away from the boundary the rule decides: Compare at 3δ with sd δ/2 and 8 pairs, Nearer at
    T = 1 with 8 pairs (a sanity check that calibration is not bought by never deciding)."""
    rng = np.random.default_rng(3)
    d = 3 * DELTA + 0.5 * DELTA * rng.standard_normal((200, 8))
    assert np.mean(compare_sides(d, DELTA)[0] <= A) > 0.9
    ex, ey = _pair_noise(rng, "normal", (200, 8))
    y = 1.0 + 0.2 * ey
    assert np.mean(nearer_sides(1.0 + 0.2 * ex, y, THETA)[0] <= A) > 0.9


def test_holm_keeps_the_family_wise_rate():
    """Ten claims at their null (Compare, d = 0, 5 and 8 pairs): the chance that ANY verdict
    after Holm is false stays ≤ 5%; Holm's rejections equal a hand-run step-down."""
    assert holm([0.01, 0.04, 0.03, 0.2], 0.05) == [True, False, False, False]
    assert holm([0.01, 0.02, 0.03], 0.05) == [True, True, True]  # 0.01 ≤ .05/3, .02 ≤ .025, …
    # step-DOWN: once one is kept, every larger p is kept, even one below its own threshold
    # (0.01 ≤ .05/3; 0.03 > .05/2 stops; 0.04 ≤ .05/1 must not be rejected after it)
    assert holm([0.04, 0.01, 0.03], 0.05) == [False, True, False]
    rng = np.random.default_rng(11)
    reps = 300
    for n in (5, 8):
        d = 0.05 * rng.standard_normal((reps, 10, n))
        ps, pc = compare_sides(d, DELTA)
        p2 = np.minimum(1.0, 2 * np.minimum(ps, pc))
        any_false = sum(any(holm(row, RULE.family_alpha)) for row in p2)
        assert not _too_high(any_false, reps, RULE.family_alpha)


def test_nearer_without_a_detectable_gap_is_never_decided_by_its_p_values():
    """Intersection–union: Nearer's p_supported / p_contradicted are at least the p-value of
    'decay moves the metric' (mean y > 0), so Holm can never reject a Nearer whose gap is not
    shown. Here x − θ·y is clearly positive but y has mean ≈ 0: scipy's one-sided t test of y
    (computed here, independently) gives p ≈ 0.45, and both p-values must be at least that."""
    x = np.array([5.0, 5.1, 4.9, 5.2, 5.05])
    y = np.array([1.0, -1.0, 0.5, -0.5, 0.1])
    p_gap_t = stats.ttest_1samp(y, 0.0, alternative="greater").pvalue
    assert p_gap_t > 0.4
    assert stats.ttest_1samp(x - THETA * y, 0.0, alternative="greater").pvalue < 1e-4
    p_sup, p_con, p_gap = (float(v) for v in nearer_sides(x, y, THETA))
    assert p_gap >= p_gap_t
    assert p_sup >= p_gap_t and p_con >= p_gap_t


def test_compare_needs_the_t_test_at_alpha_side_not_at_the_sign_flip_level():
    """Five pairs all above the smallest effect (exact sign-flip p = 1/32 ≤ 5%) whose one-sided
    t test (scipy, here) gives 0.025 < p < 0.05: the rule needs t p ≤ alpha_side = 2.5%, so
    the claim is not supported (and not contradicted: every pair favours it)."""
    from mirrorflow.report.claims import decide_compare

    e = np.array([0.1, 0.2, 0.3, 0.05, 0.7])
    p_t = stats.ttest_1samp(e, 0.0, alternative="greater").pvalue
    assert 0.025 < p_t < 0.05
    eff = decide_compare(DELTA + e, DELTA, power=False)
    assert eff.verdict == INCONCLUSIVE
    assert eff.p_supported >= p_t
    # and one more pair above it brings t p below 2.5% (both tests reject): supported
    e6 = np.append(e, 0.4)
    assert stats.ttest_1samp(e6, 0.0, alternative="greater").pvalue < 0.025
    assert decide_compare(DELTA + e6, DELTA, power=False).verdict == SUPPORTED


# ------------------------------------------------------------------- through the store
def _records(arms_values: dict[str, dict], n: int, seed_offset: int = 0) -> list[RunRecord]:
    out = []
    for label, (cfg, vals) in arms_values.items():
        for s in range(n):
            out.append(RunRecord(run_id=f"{label}-{s}", experiment="toy",
                                 config={**cfg, "seed": s + seed_offset}, status="done",
                                 metrics={"m": float(vals[s])}, version="1", sweep="toy-full"))
    return out


NONE = Arm("none", {"schedule": "none"})
CONST = Arm("constant", {"schedule": "constant", "wd": 0.5})
SW = Arm("switch-off", {"schedule": "switch-off", "wd": 1.0, "switch_at": 0.6})
SW2 = Arm("switch-off 2", {"schedule": "switch-off", "wd": 2.0, "switch_at": 0.3})
SW3 = Arm("switch-off 3", {"schedule": "switch-off", "wd": 2.0, "switch_at": 0.6})


NOPOWER = dataclasses.replace(RULE, power_reps=0)  # the seeds-for-power note is not tested here


def _verdict(ps, pc):
    return SUPPORTED if ps <= A else CONTRADICTED if pc <= A else INCONCLUSIVE


def test_store_path_gives_the_statistics_layer_verdicts():
    """30 synthetic stores per kind at the boundary and away from it, 5 pairs: the verdict
    through records, pairing and claim equals the statistics layer's on the same numbers."""
    rng = np.random.default_rng(21)
    cfg = {"none": {"schedule": "none"}, "constant": {"schedule": "constant", "wd": 0.5},
           "sw": {"schedule": "switch-off", "wd": 1.0, "switch_at": 0.6},
           "sw2": {"schedule": "switch-off", "wd": 2.0, "switch_at": 0.3},
           "sw3": {"schedule": "switch-off", "wd": 2.0, "switch_at": 0.6}}
    seen = set()
    for i in range(30):
        n, shift = 5, (0.0, 2 * DELTA, 6 * DELTA)[i % 3]
        base = np.exp(rng.normal(0, 0.3, n))
        sw = base * np.exp(-shift + 0.05 * rng.standard_normal(n))
        recs = _records({"none": (cfg["none"], base), "sw": (cfg["sw"], sw)}, n)
        claim = Claim("toy/c", "toy", "test", "toy", (Compare("m", SW, NONE),))
        got = evaluate_claims(recs, [claim], NOPOWER)[0].verdict
        d = np.log(base) - np.log(sw)
        assert got == _verdict(*compare_sides(d, DELTA)), (i, got)
        seen.add(got)
        # Nearer: T = 0.5 or 1.0 or 0.0
        t = (0.5, 1.0, 0.0)[i % 3]
        u = 2.0 + 0.1 * rng.standard_normal(n)
        dec = 1.0 + 0.1 * rng.standard_normal(n)
        s_ = u - t * (u - dec) + 0.1 * rng.standard_normal(n)
        recs = _records({"none": (cfg["none"], u), "c": (cfg["constant"], dec),
                         "sw": (cfg["sw"], s_)}, n)
        claim = Claim("toy/n", "toy", "test", "toy", (Nearer("m", NONE, CONST, SW),))
        got = evaluate_claims(recs, [claim], NOPOWER)[0].verdict
        ps, pc, _ = nearer_sides(u - s_, u - dec, THETA)
        assert got == _verdict(ps, pc), (i, got)
        seen.add(got)
        # SameThroughA: T = 0, margin, 1
        t = (0.0, MARGIN, 1.0)[i % 3]
        a = 1.0 + 0.1 * rng.standard_normal(n)
        c = a + 0.5 + 0.1 * rng.standard_normal(n)
        b = a - t * 0.5 + 0.05 * rng.standard_normal(n)
        recs = _records({"sw": (cfg["sw"], a), "sw2": (cfg["sw2"], b),
                         "sw3": (cfg["sw3"], c)}, n)
        claim = Claim("toy/s", "toy", "test", "toy",
                      (SameThroughA("m", (SW, SW2), (SW3, SW)),))
        got = evaluate_claims(recs, [claim], NOPOWER)[0].verdict
        ps, pc, _ = same_sides(a - b, c - a, MARGIN)
        assert got == _verdict(ps, pc), (i, got)
        seen.add(got)
    assert seen == {SUPPORTED, CONTRADICTED, INCONCLUSIVE}


# ------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_false_verdict_rates_at_the_boundaries_slow():
    """2000 repetitions per cell; normal and t₃ noise must hold the nominal rates, the skewed
    (lognormal) noise is measured and printed (the t test's weak spot at 5 pairs)."""
    reps = 2000
    rows = _rates(reps, ("normal", "t3", "skewed"))
    print("\n| scenario | noise | pairs | false supported | false contradicted |")
    print("| --- | --- | --- | --- | --- |")
    for name, dist, n, ks, kc, r in rows:
        print(f"| {name} | {dist} | {n} | {ks / r:.2%} | {kc / r:.2%} |")
    held = [r for r in rows if r[1] in ("normal", "t3")]
    assert not _check(held), _check(held)
    # power of Compare at a standardized distance 0.8 from its boundary, by seeds
    rng = np.random.default_rng(5)
    print("\n| pairs | power, Compare at (effect − δ)/sd = 0.8 |")
    print("| --- | --- |")
    for n in (5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30):
        d = DELTA + 0.8 + rng.standard_normal((reps, n))
        print(f"| {n} | {np.mean(compare_sides(d, DELTA)[0] <= A):.1%} |")


# -------------------------------------------------------- sequential design (until decided)
def sequential_rates(reps: int, dist: str = "normal", looks: int = 3, first: int = 5):
    """False-verdict rates at ANY look of the ``reproduce --until-decided`` design: seeds
    5 → 10 → 20 (nested: later looks reuse the earlier seeds), every look at the split level."""
    from mirrorflow.report.claims.sequential import look_rule, seeds_schedule

    rule = look_rule(looks)
    ns = seeds_schedule(first, looks, rule)
    rng = np.random.default_rng([77, looks, hash(dist) % 1000])
    nmax = ns[-1]
    data = {
        "Compare, null effect": 0.05 * _noise(rng, dist, (reps, nmax)),
        "Compare, effect = δ": DELTA + 0.05 * _noise(rng, dist, (reps, nmax)),
    }
    ex, ey = _pair_noise(rng, dist, (reps, nmax))
    data["Nearer, T = θ"] = (THETA + 0.3 * ex, 1.0 + 0.3 * ey)
    eq, ed = _pair_noise(rng, dist, (reps, nmax), rho=0.3)
    data["SameThroughA, T = margin"] = (MARGIN + 0.2 * eq, 1.0 + 0.4 * ed)
    out = {}
    for name, arr in data.items():
        sup = np.zeros(reps, bool)
        con = np.zeros(reps, bool)
        for n in ns:
            if name.startswith("Compare"):
                ps, pc = compare_sides(arr[:, :n], DELTA, rule)
            elif name.startswith("Nearer"):
                ps, pc, _ = nearer_sides(arr[0][:, :n], arr[1][:, :n], THETA, rule)
            else:
                ps, pc, _ = same_sides(arr[0][:, :n], arr[1][:, :n], MARGIN, rule)
            dec_s, dec_c = ps <= rule.alpha_side, pc <= rule.alpha_side
            sup |= dec_s & ~con  # the first decision is the final one
            con |= dec_c & ~sup
        out[name] = (int(sup.sum()), int(con.sum()))
    return ns, out


def test_sequential_design_keeps_the_error_rates_fast():
    from mirrorflow.report.claims.sequential import look_rule, seeds_schedule, with_seeds

    assert seeds_schedule(5, 3) == [5, 10, 20] and seeds_schedule(2, 3) == [2, 6, 12]
    r = look_rule(3)
    assert r.alpha_side == pytest.approx(0.025 / 3) and r.family_alpha == pytest.approx(0.05 / 3)
    entry = {"grid": {"seed": [0, 1]}, "case": [{"grid": {"seed": [0]}, "zip": {"x": [1]}}]}
    assert with_seeds(entry, 4) == {"grid": {"seed": [0, 1, 2, 3]},
                                    "case": [{"grid": {"seed": [0, 1, 2, 3]},
                                              "zip": {"x": [1]}}]}
    assert entry["grid"]["seed"] == [0, 1]  # a copy
    reps = 200
    _, out = sequential_rates(reps)
    for name, (ks, kc) in out.items():
        assert not _too_high(ks, reps, A) and not _too_high(kc, reps, A), (name, ks, kc)


@pytest.mark.slow
def test_sequential_design_keeps_the_error_rates_slow():
    reps = 2000
    print("\n| scenario | noise | seeds per look | false supported (any look) | "
          "false contradicted (any look) |")
    print("| --- | --- | --- | --- | --- |")
    for dist in ("normal", "t3"):
        ns, out = sequential_rates(reps, dist)
        for name, (ks, kc) in out.items():
            print(f"| {name} | {dist} | {' → '.join(map(str, ns))} | {ks / reps:.2%} | "
                  f"{kc / reps:.2%} |")
            assert not _too_high(ks, reps, A) and not _too_high(kc, reps, A), (name, ks, kc)
