"""Claims and verdicts: stores with KNOWN effects (and a null effect) must give the verdicts the
decision rule promises; the registry's claims find their runs in the built-in sweeps."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from mirrorflow.report.claims import (
    CLAIMS,
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_EVALUATED,
    RULE,
    SUPPORTED,
    Arm,
    AtMost,
    Claim,
    Compare,
    Nearer,
    OneOf,
    SameThroughA,
    evaluate_claims,
    pair_runs,
    sign_test,
)
from mirrorflow.sweep import ResultStore, RunRecord

NONE = Arm("none", {"schedule": "none"})
CONST = Arm("constant", {"schedule": "constant", "wd": 0.2})
SW = Arm("switch-off", {"schedule": "switch-off", "wd": 0.2, "switch_at": 20.0})


def _rec(i, schedule, seed, metrics, status="done", **cfg):
    config = {"schedule": schedule, "seed": seed, "n": 40, "wd": 0.2, "switch_at": 20.0,
              "t_max": 100.0, **cfg}
    return RunRecord(run_id=f"r{i}", experiment="toy", config=config, status=status,
                     metrics=metrics, version="1", sweep="toy-full")


def _store(values: dict[str, list[float]], statuses: dict | None = None, **cfg):
    """Records: one per (schedule, seed) with metric ``err`` = values[schedule][seed]."""
    out = []
    for sched, vals in values.items():
        for seed, v in enumerate(vals):
            status = (statuses or {}).get((sched, seed), "done")
            m = {"err": v} if status == "done" else {"err": None}
            out.append(_rec(len(out), sched, seed, m, status, **cfg))
    return out


def _claim(*tests, free=("t_max",)):
    return Claim(id="toy/claim", statement="toy", source="test", experiment="toy", tests=tests,
                 free=free)


def _wins():
    return _claim(Compare("err", SW, NONE), Compare("err", SW, CONST))


def test_known_effect_is_supported_with_the_hand_computed_effect_and_sign_test():
    rng = np.random.default_rng(1)
    n = 7
    none = np.exp(rng.normal(0.0, 0.1, n)) * 2.0
    const = np.exp(rng.normal(0.0, 0.1, n)) * 0.8
    sw = np.exp(rng.normal(0.0, 0.1, n)) * 0.2  # 4x better than constant, 10x than none
    res = _wins().evaluate(_store({"none": none, "constant": const, "switch-off": sw}))
    assert res.verdict == SUPPORTED
    e_none, e_const = res.effects
    d = np.log(none) - np.log(sw)
    assert e_none.estimate == pytest.approx(d.mean(), rel=1e-12)
    assert e_none.n == n and e_none.seeds == tuple(range(n))
    assert e_none.lo > 0 and e_none.lo < d.mean() < e_none.hi
    # the exact sign-flip p of n differences all above δ is 2^-n; the t p is scipy's
    delta = math.log(1.05)
    assert f"sign-flip p = {0.5 ** n:.2g}" in e_none.reason
    t_p = stats.ttest_1samp(d - delta, 0.0, alternative="greater").pvalue
    assert f"t p = {t_p:.2g}" in e_none.reason
    # the interval is Student's t interval of the mean (scipy's)
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert (e_none.lo, e_none.hi) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert e_const.estimate == pytest.approx((np.log(const) - np.log(sw)).mean(), rel=1e-12)


def test_null_effect_is_inconclusive_and_reversed_effect_contradicted():
    rng = np.random.default_rng(2)
    n = 8
    base = np.exp(rng.normal(0.0, 0.3, n))
    noise = np.exp(rng.normal(0.0, 0.3, n))  # same distribution: no effect
    null = _claim(Compare("err", SW, NONE)).evaluate(
        _store({"none": base, "switch-off": noise * 1.0}))
    assert null.verdict == INCONCLUSIVE
    assert null.effects[0].lo < 0 < null.effects[0].hi
    assert "contains the smallest effect" in null.reason and "rules out" in null.reason
    worse = _claim(Compare("err", SW, NONE)).evaluate(
        _store({"none": base, "switch-off": base * 3.0 * np.exp(rng.normal(0, 0.05, n))}))
    assert worse.verdict == CONTRADICTED
    assert worse.effects[0].hi < 0 and "below 0: the other arm is better" in worse.reason
    # a claim of two tests is contradicted when one test is
    both = _wins().evaluate(_store({"none": base * 5, "constant": base * 0.1,
                                    "switch-off": base}))
    assert [e.verdict for e in both.effects] == [SUPPORTED, CONTRADICTED]
    assert both.verdict == CONTRADICTED


def test_too_few_seeds_diverged_runs_and_missing_arms():
    big = {"none": [10.0, 11, 12], "switch-off": [0.1, 0.11, 0.12]}
    few = _claim(Compare("err", SW, NONE)).evaluate(_store(big))
    assert few.verdict == INCONCLUSIVE and f"3 pair(s) < {RULE.min_pairs}" in few.reason
    # quick sweeps are named as such
    recs = [RunRecord(**{**r.__dict__, "sweep": "toy-quick"}) for r in _store(big)]
    assert "(quick sweep)" in _claim(Compare("err", SW, NONE)).evaluate(recs).reason
    # 6 seeds, 2 of them with a diverged switch-off run: 4 pairs left
    six = {"none": [10.0] * 6, "switch-off": [0.1] * 6}
    bad = _claim(Compare("err", SW, NONE)).evaluate(
        _store(six, {("switch-off", 1): "diverged", ("switch-off", 4): "failed"}))
    assert bad.verdict == INCONCLUSIVE and "runs diverged or did not converge" in bad.reason
    assert "1 pair(s) with diverged runs and 1 with failed runs left out" in bad.reason
    missing = _wins().evaluate(_store({"none": [1.0] * 6, "switch-off": [0.5] * 6}))
    assert missing.verdict == NOT_EVALUATED
    assert missing.missing == ("toy runs with schedule=constant, wd=0.2",)


def test_pairing_by_config_fields_not_by_sweep():
    recs = _store({"none": [2.0] * 5, "switch-off": [1.0] * 5})
    # free fields may differ inside a pair; the seed and every other field may not
    recs += [_rec(100 + s, "none", s, {"err": 3.0}, n=80, t_max=7.0) for s in range(5)]
    recs += [_rec(200 + s, "switch-off", s, {"err": 1.0}, n=80) for s in range(5)]
    recs.append(_rec(300, "switch-off", 9, {"err": 1.0}))  # no partner
    p = pair_runs(recs, [SW, NONE], free=("t_max",))
    assert len(p.pairs) == 10 and p.incomplete == 1
    assert all(a["none"].config["n"] == b["n"] for a, b in
               ((q, q["switch-off"].config) for q in p.pairs))
    assert all(q["none"].config["seed"] == q["switch-off"].config["seed"] for q in p.pairs)
    # without t_max free, the n=80 'none' runs (t_max 7) find no partner
    assert len(pair_runs(recs, [SW, NONE]).pairs) == 5
    # irrelevant fields of a schedule do not split pairs: 'none' runs with another wd pair up
    other = [_rec(400 + s, "none", s, {"err": 2.0}, wd=9.0) for s in range(5)]
    other += [_rec(500 + s, "switch-off", s, {"err": 1.0}) for s in range(5)]
    assert len(pair_runs(other, [SW, NONE], free=("t_max",)).pairs) == 5
    # conditions: AtMost / OneOf select by value, and say so in 'missing'
    short = Arm("short", {"schedule": "none", "t_max": AtMost(50.0)})
    assert [r.config["t_max"] for r in recs if short.matches(r.config)] == [7.0] * 5
    assert Arm("n", {"n": OneOf((40, 80))}).matches({"n": 80})
    assert not Arm("n", {"n": OneOf((40,))}).matches({"n": 80})
    assert short.describe() == "schedule=none, t_max ≤ 50"


def test_pairing_never_crosses_mirrorflow_versions():
    """Issue 28, survivor 4: runs of another mirrorflow version are other code: they never
    pair. Switch-off runs of version 1 (seeds 0-4); 'none' runs of version 2 (seeds 0-4) and
    of version 1 (seeds 0-2 only): exactly the 3 version-1 seeds pair, by hand."""
    recs = [_rec(s, "switch-off", s, {"err": 1.0}) for s in range(5)]
    recs += [replace(_rec(10 + s, "none", s, {"err": 50.0}), version="2") for s in range(5)]
    recs += [_rec(20 + s, "none", s, {"err": 2.0}) for s in range(3)]
    p = pair_runs(recs, [SW, NONE], free=("t_max",))
    assert sorted(q["none"].run_id for q in p.pairs) == ["r20", "r21", "r22"]
    assert all(q["none"].version == q["switch-off"].version == "1" for q in p.pairs)
    # seeds 3, 4: switch-off only in v1, none only in v2 -> no common version, incomplete;
    # seeds 0-2: v1 is the newest version with both arms, the v2 'none' runs are set aside
    assert p.ambiguous == 0 and p.incomplete == 2 and p.older == 3
    # the claim's effect comes from the version-1 pairs only: log(2 / 1) on seeds 0, 1, 2
    (eff,) = _claim(Compare("err", SW, NONE)).evaluate(recs).effects
    assert eff.n == 3 and list(eff.seeds) == [0, 1, 2]
    assert eff.estimate == pytest.approx(math.log(2.0), rel=1e-12)


def test_an_ambiguous_key_is_left_out_and_ties_are_not_sign_test_wins():
    """Mutations C12 and C7 (issue 28), under issue 21's pairing rule: two 'none' runs of one
    seed that differ only in a free field, neither matching a declared preference, leave the
    pair out (never resolved by insertion order), in either order; in the sign test a zero
    difference is neither a win nor a loss: d = (1, 0, −1, 2) has 2 positive of 3 nonzero."""
    recs = [_rec(0, "switch-off", 0, {"err": 1.0}),
            _rec(1, "none", 0, {"err": 5.0}, t_max=50.0),
            _rec(2, "none", 0, {"err": 7.0}, t_max=80.0)]
    for order in (recs, recs[::-1]):
        p = pair_runs(order, [SW, NONE], free=("t_max",))
        assert p.ambiguous == 1 and p.several == 1 and p.pairs == ()
    k, n, p_greater, p_less = sign_test(np.array([1.0, 0.0, -1.0, 2.0]))
    assert (k, n) == (2, 3)
    assert p_greater == pytest.approx(0.5)  # P(K ≥ 2 | n = 3) = 4/8, by hand
    assert p_less == pytest.approx(0.875)  # P(K ≤ 2 | n = 3) = 7/8


def test_metric_edge_cases_and_an_arm_that_leaves_a_field_free():
    """Mutations C5 and C8-C11 (issue 28), each against a hand value: higher-is-better on a linear
    scale (effect = better − worse = 0.9 − 0.5); a log ratio refused when a metric is ≤ 0 and
    a non-finite metric refused (both inconclusive, not a number); a field one arm leaves free
    but the other arm's schedule ignores (wd for 'none': 9 against 0.2) does not split the
    pairs."""
    acc = _store({"none": [0.5] * 6, "switch-off": [0.9] * 6})
    (eff,) = _claim(Compare("err", SW, NONE, higher_is_better=True, scale="linear")
                    ).evaluate(acc).effects
    assert eff.verdict == SUPPORTED and eff.estimate == pytest.approx(0.4, rel=1e-12)
    zero = _store({"none": [1.0] * 6, "switch-off": [0.5] * 5 + [0.0]})
    (eff,) = _claim(Compare("err", SW, NONE)).evaluate(zero).effects
    assert eff.verdict == INCONCLUSIVE and "no log ratio" in eff.reason
    inf = _store({"none": [1.0] * 6, "switch-off": [0.5] * 5 + [math.inf]})
    (eff,) = _claim(Compare("err", SW, NONE)).evaluate(inf).effects
    assert eff.verdict == INCONCLUSIVE and "missing or non-finite" in eff.reason
    free_wd = Arm("switch-off any wd", {"schedule": "switch-off", "switch_at": 20.0})
    recs = [_rec(s, "switch-off", s, {"err": 0.5}) for s in range(5)]  # wd 0.2
    recs += [_rec(10 + s, "none", s, {"err": 1.0}, wd=9.0) for s in range(5)]  # wd ignored
    assert len(pair_runs(recs, [free_wd, NONE], free=("t_max",)).pairs) == 5


def test_matched_metric_drops_unmatched_pairs():
    recs = []
    for s in range(6):
        recs.append(_rec(2 * s, "none", s, {"l1": 10.0 + s, "mse": 0.0}))
        recs.append(_rec(2 * s + 1, "switch-off", s, {"l1": 8.0 + s,
                                                      "mse": 0.5 if s == 0 else 1e-6}))
    c = _claim(Compare("l1", SW, NONE, match=("mse", 1e-4)))
    res = c.evaluate(recs)
    assert res.verdict == SUPPORTED and res.effects[0].n == 5
    assert "1 pair(s) not matched in mse left out" in res.effects[0].detail
    recs2 = [RunRecord(**{**r.__dict__, "metrics": {**r.metrics, "mse": 0.5}})
             if r.config["schedule"] == "switch-off" else r for r in recs]
    assert "not matched" in c.evaluate(recs2).reason


def _a_store(eq_shift: float, a_effect: float, n: int = 6, noise: float = 0.01):
    """Four switch-off arms: A (λ 0.2 to 20) and B (λ 0.4 to 10) share a = 4, C has a = 2."""
    rng = np.random.default_rng(3)
    out = []
    for s in range(n):
        base = 1.0 + 0.3 * rng.normal()
        vals = {(0.2, 20.0): base, (0.4, 10.0): base + eq_shift, (0.2, 10.0): base + a_effect}
        for (wd, at), v in vals.items():
            out.append(_rec(len(out), "switch-off", s, {"err": v + noise * rng.normal()},
                            wd=wd, switch_at=at))
    return out


SAME = SameThroughA("err", (Arm("A", {"schedule": "switch-off", "wd": 0.2, "switch_at": 20.0}),
                            Arm("B", {"schedule": "switch-off", "wd": 0.4, "switch_at": 10.0})),
                    (Arm("C", {"schedule": "switch-off", "wd": 0.2, "switch_at": 10.0}),
                     Arm("A", {"schedule": "switch-off", "wd": 0.2, "switch_at": 20.0})))


def test_only_through_a_supported_contradicted_and_untestable():
    ok = _claim(SAME).evaluate(_a_store(eq_shift=0.0, a_effect=0.5))
    assert ok.verdict == SUPPORTED
    e = ok.effects[0]
    recs = _a_store(eq_shift=0.0, a_effect=0.5)
    by = {(r.config["wd"], r.config["switch_at"], r.config["seed"]): r.metrics["err"] for r in recs}
    q = np.mean([by[0.2, 20.0, s] - by[0.4, 10.0, s] for s in range(6)])
    delta = np.mean([by[0.2, 10.0, s] - by[0.2, 20.0, s] for s in range(6)])
    assert e.estimate == pytest.approx(q / abs(delta), rel=1e-12)
    assert -SAME.margin < e.lo < e.hi < SAME.margin
    bad = _claim(SAME).evaluate(_a_store(eq_shift=0.5, a_effect=0.5))
    assert bad.verdict == CONTRADICTED and bad.effects[0].hi < -SAME.margin  # A − B = −0.5
    flat = _claim(SAME).evaluate(_a_store(eq_shift=0.0, a_effect=0.0))
    assert flat.verdict == INCONCLUSIVE and "does not detectably depend on a" in flat.reason


def test_nearer_supported_and_contradicted():
    def recs(frac):
        out = []
        for s in range(6):
            u, d = 2.0 + 0.01 * s, 1.0 - 0.01 * s
            for sched, v in (("none", u), ("constant", d), ("switch-off", u - frac * (u - d))):
                out.append(_rec(len(out), sched, s, {"ratio": v + 0.001 * ((s * 7) % 3)}))
        return out

    test = Nearer("ratio", NONE, CONST, SW)
    near = _claim(test).evaluate(recs(0.8))
    assert near.verdict == SUPPORTED and near.effects[0].estimate == pytest.approx(0.8, abs=0.01)
    far = _claim(test).evaluate(recs(0.2))
    assert far.verdict == CONTRADICTED and far.effects[0].hi < 0.5


def test_fieller_interval_is_the_set_of_ratios_the_t_test_does_not_reject():
    """Fieller's interval against a brute-force inversion: the θ on a fine grid whose contrast
    x − θy is rejected by neither one-sided t test (scipy) at 2.5%."""
    from mirrorflow.report.claims import fieller_interval

    rng = np.random.default_rng(4)
    y = rng.normal(1.0, 0.2, 6)
    x = 0.6 * y + rng.normal(0.0, 0.1, 6)
    lo, hi = fieller_interval(x, y)
    grid = np.linspace(-1.0, 2.0, 30001)
    d = x[None, :] - grid[:, None] * y[None, :]  # t statistic of every contrast, by hand
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(6))
    keep = grid[np.abs(t) <= stats.t.ppf(0.975, 5)]
    assert stats.ttest_1samp(x - keep[0] * y, 0.0, alternative="less").pvalue > 0.025
    assert lo == pytest.approx(min(keep), abs=2e-4) and hi == pytest.approx(max(keep), abs=2e-4)
    # a denominator that is not significantly nonzero: nothing is ruled out
    assert fieller_interval(x, rng.normal(0.0, 1.0, 6)) == (-math.inf, math.inf)


def test_geometry_claims_follow_the_closed_form():
    """The range claim is read off SIMULATED gradient descent; its widths match the closed
    form of theory §3 for u ⊙ v from u = 1, v = 0: x(μ) = e^{−2a} sinh(2μ)/2, so the reach of
    |μ| ≤ 1 is e^{−2a} sinh 2 (discrete steps of 1e-3: within 1% up to a = 6)."""
    res = {r.claim.id: r for r in evaluate_claims([])}
    rng_claim = res["geometry/reach-shrinks-e-2a"]
    assert rng_claim.verdict == SUPPORTED
    assert rng_claim.effects[0].estimate == pytest.approx(-2.0, abs=0.005)
    from mirrorflow.report.claims import simulated_reach

    a, width = simulated_reach()
    assert np.allclose(width, math.sinh(2.0) * np.exp(-2.0 * a), rtol=1e-2)
    # type: ι = 2 − log2(κ(2t)/κ(t)) with κ(x) = x² R_a''(x), R_a'' = 1/sqrt(δ² + 4x²) for
    # u ⊙ v (theory §3), δ(a) = e^{−2a}, t = 0.1: computed here from the closed form
    type_claim = res["geometry/type-l2-to-l1"]
    assert type_claim.verdict == SUPPORTED, type_claim.effects[0].reason
    for a in (0.0, 0.5, 1.0, 2.0):
        d, t = math.exp(-2 * a), 0.1
        iota = 2 - math.log2(4 * math.sqrt(d**2 + 4 * t**2) / math.sqrt(d**2 + 16 * t**2))
        assert f"ι({a:g}) = {iota:.3f}" in type_claim.effects[0].detail


def test_reach_claim_can_fail(monkeypatch):
    """A simulator whose decay shrank x = uv like e^{−a} (decay on x, not on u and v) would
    give slope −1: the claim is contradicted, not re-read from the closed form."""
    import mirrorflow.report.claims.registry as registry

    a = np.asarray(registry._GEOMETRY_A)
    monkeypatch.setattr(registry, "simulated_reach", lambda: (a, 3.6 * np.exp(-a)))
    verdict = {r.claim.id: r for r in evaluate_claims([])}["geometry/reach-shrinks-e-2a"]
    assert verdict.verdict == CONTRADICTED and "not −2" in verdict.reason


def test_type_claim_refuses_a_measure_that_mixes_in_position(monkeypatch):
    """The control: a 'type' read off values around the moving reference point x̄(a) changes
    for u², whose type does not change (theory §4), so the claim cannot be decided with it."""
    import mirrorflow.report.claims.registry as claims

    monkeypatch.setattr(claims, "type_index",
                        lambda rep: np.tanh(np.abs(np.asarray(rep.reference)[:, 0]) + rep.a))
    verdict = {r.claim.id: r for r in evaluate_claims([])}["geometry/type-l2-to-l1"]
    assert verdict.verdict == INCONCLUSIVE and "mixes in position" in verdict.effects[0].reason


@pytest.mark.parametrize("quick", [True, False])
def test_every_claim_finds_its_runs_in_the_builtin_sweeps(quick):
    """Synthetic 'done' records for every run of the built-in sweeps: no claim lacks runs."""
    from mirrorflow.sweep.builtin import builtin_specs

    specs, _ = builtin_specs(quick=quick)
    rng = np.random.default_rng(5)
    recs = [RunRecord(run_id=r.run_id, experiment=r.experiment, config=dict(r.config_dict),
                      status="done", sweep=s.name, version="x",
                      metrics={"train_mse": 1e-6,
                               **{m: float(rng.uniform(0.5, 2.0)) for m in
                                  ("recovery_error", "test_loss", "val_loss", "nuclear_over_fro",
                                   "l1_norm")}})
            for s in specs for r in s.runs]
    names = {s.experiment for s in specs}
    # the quick sweeps of these real networks are too short for a verdict, by design
    quick_only = {"vit", "lora", "lora-lm"}
    no_power = dataclasses.replace(RULE, power_reps=0)  # the verdicts' power notes: not here
    for res in evaluate_claims(recs, rule=no_power):
        if res.claim.experiment is None or res.claim.experiment in names:
            assert res.verdict != NOT_EVALUATED, (res.claim.id, res.reason)
            if res.claim.experiment is None:
                continue
            need = 1 if quick and res.claim.experiment in quick_only else RULE.min_pairs
            assert min(e.n for e in res.effects) >= need, (res.claim.id, res.reason)
            if need == 1:
                assert "(quick sweep)" in res.reason


def test_claims_json_and_table_in_the_report(tmp_path):
    from mirrorflow.report import write_report

    rng = np.random.default_rng(6)
    with ResultStore(tmp_path / "r.sqlite") as store:
        for r in _store({"none": np.exp(rng.normal(1, 0.1, 6)),
                         "constant": np.exp(rng.normal(0.5, 0.1, 6)),
                         "switch-off": np.exp(rng.normal(0, 0.1, 6))}):
            store.write(r)
    files = write_report(tmp_path / "r.sqlite", tmp_path / "out")
    assert {"claims.json", "claims_forest.png"} <= set(files.files)
    data = json.loads((tmp_path / "out" / "claims.json").read_text())
    ids = [c["id"] for c in data["claims"]]
    assert ids == [c.id for c in CLAIMS]
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.index("## Claims") < md.index("## toy")
    assert ("| claim | verdict | after Holm | effect [95% CI] | boundary | pairs | seeds for 80% "
            "power | figure | why |") in md
    assert data["rule"]["alpha_side"] == 0.025 and "Fieller" in data["rule"]["kinds"]["Nearer"]
    assert "Holm" in md and "sign-flip" in md
    assert "not evaluated" in md and any("not evaluated" in n for n in files.notes)


def test_end_to_end_on_tiny_real_runs(tmp_path):
    """Tiny sparse-regression runs through the real sweep runner and store: the claims'
    effects equal the mean log ratios computed from direct ``run`` calls, and the theory's
    'only through a' holds (equal a: the same limit up to the step-size error)."""
    from mirrorflow.experiments import get_experiment
    from mirrorflow.report import write_report
    from mirrorflow.sweep import LocalExecutor, parse_spec, run_sweep

    tiny = {"n": 10, "d": 20, "sparsity": 2, "step": 0.05, "gd_after_settle": 5.0, "tol": 1e-8}
    spec = parse_spec({"experiment": "sparse-regression", "name": "tiny",
                       "base": tiny, "grid": {"seed": [0, 1, 2, 3, 4]},
                       "case": [{"zip": {"schedule": ["none", "constant", "switch-off"],
                                         "t_max": [500.0, 200.0, 500.0],
                                         "tail": ["gd", "ode", "ode"]}},
                                {"base": {"schedule": "switch-off"},
                                 "zip": {"wd": [0.4, 0.2], "switch_at": [10.0, 10.0]}}]})
    with ResultStore(tmp_path / "r.sqlite") as store:
        run_sweep(spec, store, LocalExecutor(workers=1))
        files = write_report(store, tmp_path / "out")
    data = {c["id"]: c for c in json.loads((tmp_path / "out" / "claims.json").read_text())
            ["claims"]}
    exp = get_experiment("sparse-regression")
    err, status = {}, {}  # computed again, directly, outside the store and the claims
    main = [r for r in spec.runs if r.config.schedule != "switch-off"
            or (r.config.wd, r.config.switch_at) == (0.2, 20.0)]
    for r, res in zip(main, exp.run_many([r.config for r in main])):
        c = r.config
        err[c.schedule, c.seed] = res.recovery_error
        status[c.schedule, c.seed] = res.status
    ok = [s for s in range(5) if status["none", s] == status["switch-off", s] == "converged"]
    none = np.array([err["none", s] for s in ok])
    sw = np.array([err["switch-off", s] for s in ok])
    wins = data["sparse-regression/switch-off-wins"]
    assert wins["effects"][0]["estimate"] == pytest.approx(np.mean(np.log(none / sw)), rel=1e-9)
    # constant decay stopped at t_max = 200: the seeds whose run did not converge are left out
    # of the statistic and counted in the reason
    ok_c = [s for s in ok if status["constant", s] == "converged"]
    e_c = wins["effects"][1]
    assert e_c["n"] == len(ok_c) and e_c["pairing"]["excluded"]["not converged"] == 5 - len(ok_c)
    if ok_c:
        const = np.array([err["constant", s] for s in ok_c])
        sw_c = np.array([err["switch-off", s] for s in ok_c])
        assert e_c["estimate"] == pytest.approx(np.mean(np.log(const / sw_c)), rel=1e-9)
    if len(ok_c) < 5:
        assert "did not converge" in e_c["reason"] and wins["verdict"] != SUPPORTED
    assert wins["effects"][0]["n"] == len(ok) == 5 and wins["verdict"] != NOT_EVALUATED
    a_only = data["sparse-regression/only-through-a"]
    assert a_only["verdict"] == SUPPORTED, a_only["reason"]
    assert "claims_forest.png" in files.files
    assert data["vit/switch-off-wins"]["verdict"] == NOT_EVALUATED


# ----------------------------------------------------------- pairing rule, convergence, δ
def _sr_like(order_seed: int | None, prefer: bool = True, n: int = 6):
    """Per seed: none, switch-off, and TWO constant runs differing only in the free field t_max
    (300: worse; 2000: better) — a quick and a full sweep in one store."""
    rng = np.random.default_rng(7)
    recs = []
    for s in range(n):
        base = float(np.exp(rng.normal(0, 0.1)))
        recs.append(_rec(len(recs), "none", s, {"err": 3.0 * base}))
        recs.append(_rec(len(recs), "switch-off", s, {"err": 1.0 * base}))
        recs.append(_rec(len(recs), "constant", s, {"err": 4.0 * base}, t_max=300.0))
        recs.append(_rec(len(recs), "constant", s, {"err": 0.3 * base}, t_max=2000.0))
    if order_seed is not None:
        recs = [recs[i] for i in np.random.default_rng(order_seed).permutation(len(recs))]
    const = Arm("constant", {"schedule": "constant", "wd": 0.2},
                {"t_max": 2000.0} if prefer else {})
    return recs, _claim(Compare("err", SW, const))


def test_several_candidates_are_never_resolved_by_insertion_order():
    """The same records in shuffled orders: identical verdicts and effects. With the arm's
    declared setting (t_max = 2000) the full-sweep run is used (switch-off worse by 0.3/1:
    contradicted); without it the pairs are left out — and both say how many."""
    results = []
    for order in (None, 0, 1, 2, 3):
        recs, claim = _sr_like(order)
        results.append(claim.evaluate(recs))
    e = results[0].effects[0]
    assert {r.verdict for r in results} == {CONTRADICTED}
    assert {r.effects[0].estimate for r in results} == {e.estimate}
    assert e.estimate == pytest.approx(math.log(0.3), rel=1e-12)  # log(0.3 b / 1.0 b)
    assert e.n == 6 and "6 pair(s) had several candidate runs of one arm: 6 resolved" in e.reason
    assert e.pairing["several_candidates"] == 6 and e.pairing["ambiguous_left_out"] == 0
    for order in (None, 5):
        recs, claim = _sr_like(order, prefer=False)
        res = claim.evaluate(recs)
        assert res.verdict == INCONCLUSIVE and res.effects[0].n == 0
        assert "6 pair(s) had several candidate runs of one arm: 0 resolved" in res.reason
        assert "6 left out" in res.reason
        assert res.effects[0].pairing["ambiguous_left_out"] == 6


def test_pairs_stay_inside_one_version_and_the_newest_is_used():
    """Seeds run under two versions are one pair each (from the newest version, compared as
    numbers: 0.10.0 > 0.9.0), never two; a seed with only some arms in the newest version
    falls back to a version that has them all."""
    recs = []
    for s in range(5):
        for v, f in (("0.9.0", 1.0), ("0.10.0", 2.0)):
            recs.append(RunRecord(run_id=f"n{s}{v}", experiment="toy",
                                  config={"schedule": "none", "seed": s, "t_max": 1.0},
                                  status="done", metrics={"err": 4.0 * f}, version=v))
            if not (s == 4 and v == "0.10.0"):
                recs.append(RunRecord(run_id=f"s{s}{v}", experiment="toy",
                                      config={"schedule": "switch-off", "seed": s, "wd": 0.2,
                                              "switch_at": 20.0, "t_max": 1.0},
                                      status="done", metrics={"err": 1.0}, version=v))
    p = pair_runs(recs, [SW, NONE], free=("t_max",))
    assert len(p.pairs) == 5 and p.older == 5
    versions = [q["none"].version for q in sorted(p.pairs, key=lambda q: q["none"].config["seed"])]
    assert versions == ["0.10.0"] * 4 + ["0.9.0"]
    assert all(q["none"].version == q["switch-off"].version for q in p.pairs)


def test_runs_that_did_not_converge_are_left_out_and_counted():
    """A store whose constant-decay runs all stopped at t_max (status max-time) is never
    supported: those pairs are left out and the reason says so; a fixed-horizon claim keeps
    them and says that too."""
    recs = []
    for s in range(6):
        recs.append(_rec(len(recs), "none", s, {"err": 3.0, "status": "converged"}))
        recs.append(_rec(len(recs), "switch-off", s, {"err": 1.0 + 0.01 * s,
                                                      "status": "converged"}))
        recs.append(_rec(len(recs), "constant", s, {"err": 2.0, "status": "max-time"}))
    res = _wins().evaluate(recs)
    assert res.verdict == INCONCLUSIVE and res.effects[0].verdict == SUPPORTED
    e = res.effects[1]
    assert e.n == 0 and e.pairing["excluded"]["not converged"] == 6
    assert "6 pair(s) with runs that did not converge" in res.reason
    fixed = dataclasses.replace(_wins(), fixed_horizon="no convergence test")
    res2 = fixed.evaluate(recs)
    assert res2.verdict == SUPPORTED and "fixed horizon: no convergence test" in res2.reason
    assert "runs ending at their fixed horizon kept (status max-time 6)" in res2.reason
    # a diverged status inside an otherwise 'done' record is never kept, even fixed-horizon
    recs[2] = _rec(2, "constant", 0, {"err": 2.0, "status": "diverged"})
    assert fixed.evaluate(recs).effects[1].pairing["excluded"]["not converged"] == 1


def test_an_effect_below_the_smallest_effect_of_interest_is_not_supported():
    """Switch-off better by a factor 1 + 1e-9 on every seed: not supported (δ = log 1.05);
    the reason says the data rule out an effect of interest."""
    n = 8
    none = np.exp(np.random.default_rng(8).normal(0, 0.001, n))
    res = _claim(Compare("err", SW, NONE)).evaluate(
        _store({"none": none * (1 + 1e-9), "switch-off": none}))
    e = res.effects[0]
    assert res.verdict == INCONCLUSIVE and 0 < e.estimate < 1e-8
    assert "rule out an effect of interest" in e.reason and e.hi < math.log(1.05)
    assert "δ = 0.0488 (factor 1.05)" in e.smallest


def test_a_two_test_claim_is_contradicted_only_past_the_bonferroni_level():
    """A claim of two tests is contradicted when 2 · (the smaller contradicted-side p) ≤ 2.5%:
    a test contradicted at its own p ∈ (1.25%, 2.5%] leaves the claim inconclusive."""
    from mirrorflow.report.claims import compare_sides

    rng = np.random.default_rng(12)
    for _ in range(400):
        d = rng.normal(-0.02, 0.02, 6)
        _, pc = compare_sides(d, math.log(1.05))
        if 0.0125 < pc <= 0.025 and np.all(d < 0):
            break
    else:
        pytest.fail("no sample in the window")
    base = np.exp(rng.normal(0, 0.2, 6))
    recs = _store({"none": base, "switch-off": base * np.exp(-d),
                   "constant": base * 10.0})
    res = _wins().evaluate(recs)
    assert res.effects[0].verdict == CONTRADICTED and res.verdict == INCONCLUSIVE
    assert res.p_contradicted == pytest.approx(2 * float(pc), rel=1e-9)
    assert "Bonferroni inside the claim" in res.reason


def test_holm_adjusted_verdicts_in_evaluate_claims():
    """Holm over the claims with runs: a claim decided at raw p just under 2.5% is not decided
    after Holm among several; a very small p stays decided."""
    rng = np.random.default_rng(13)
    strong = _store({"none": np.exp(rng.normal(2, 0.05, 8)), "switch-off": np.ones(8)})
    c_strong = Claim("toy/strong", "s", "t", "toy", (Compare("err", SW, NONE),), free=("t_max",))
    others = []
    for i in range(4):
        others.append(Claim(f"toy/weak{i}", "w", "t", f"toy{i}", (Compare("err", SW, NONE),),
                            free=("t_max",)))
    recs = list(strong)
    for i in range(4):
        d = np.array([0.3, 0.1, 0.2, 0.15, 0.12, 0.02]) + 0.05 * i
        for r in _store({"none": np.exp(d), "switch-off": np.ones(6)}):
            recs.append(RunRecord(**{**r.__dict__, "experiment": f"toy{i}",
                                     "run_id": f"{i}{r.run_id}"}))
    res = evaluate_claims(recs, [c_strong, *others])
    from mirrorflow.report.claims import holm

    p2 = [r.p_two_sided for r in res]
    expect = holm(p2, RULE.family_alpha)
    for r, ok in zip(res, expect):
        assert r.verdict_holm == (r.verdict if ok else INCONCLUSIVE)
    assert res[0].verdict_holm == SUPPORTED
    # 6 pairs all above δ: raw p2 = 2 · (1/64)/2 ≈ 0.016 > 0.05/4 — decided raw, not after Holm
    assert any(r.verdict == SUPPORTED and r.verdict_holm == INCONCLUSIVE for r in res)


def test_a_matched_constant_arm_selects_by_integrated_decay():
    """``IntegratedDecay(a)`` picks the constant run whose λ · steps · lr equals a (0.5 · 600 ·
    2e-3 = 0.6), not λ = 1 (a = 1.2); a switch-off run's a is λ · switch_at."""
    from mirrorflow.report.claims import IntegratedDecay

    arm = Arm("c", {"schedule": "constant", "a": IntegratedDecay(0.6)})
    assert arm.matches({"schedule": "constant", "wd": 0.5, "steps": 600, "lr": 2e-3})
    assert not arm.matches({"schedule": "constant", "wd": 1.0, "steps": 600, "lr": 2e-3})
    assert IntegratedDecay(0.8)({"schedule": "switch-off", "wd": 5.0, "switch_at": 0.16})
    assert arm.describe() == "schedule=constant, a = 0.6"


@pytest.mark.parametrize("args, message", [
    (["--budget", "5"], "--budget only applies with --until-decided"),
    (["--until-decided"], "--until-decided needs --budget MINUTES"),
    (["--until-decided", "--budget", "-1"], "--budget must be a positive number of minutes"),
    (["--until-decided", "--budget", "5", "--looks", "1"], "--looks must be ≥ 2"),
])
def test_reproduce_until_decided_refuses_bad_input_before_running(tmp_path, args, message):
    """Bad options: one line, exit 2, nothing written (the out folder is not created)."""
    from typer.testing import CliRunner

    from mirrorflow.cli import app

    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["reproduce", "--quick", "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_reproduce_until_decided_adds_seeds_to_undecided_experiments(tmp_path, monkeypatch):
    """A tiny built-in sweep of 2 seeds leaves the sparse-regression claims undecided at look
    1; look 2 runs the schedule's 6 seeds, reusing the 6 stored runs, and the report states the
    per-look rule (levels divided by the 2 looks)."""
    from typer.testing import CliRunner

    import mirrorflow.experiments as experiments
    from mirrorflow.cli import app
    from mirrorflow.experiments.base import Registry

    tiny = {"quick": {"base": {"n": 10, "d": 20, "sparsity": 2, "step": 0.05, "tail": "gd",
                               "t_max": 40.0, "wd": 0.2},
                      "grid": {"seed": [0, 1]},
                      "zip": {"schedule": ["none", "constant", "switch-off"],
                              "switch_at": [0.0, 0.0, 20.0]}}}
    only = Registry()
    only["sparse-regression"] = dataclasses.replace(experiments.REGISTRY["sparse-regression"],
                                                    sweeps=tiny)
    monkeypatch.setattr(experiments, "REGISTRY", only)
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["reproduce", "--quick", "--out", str(out), "--workers", "1",
                                   "--until-decided", "--budget", "30", "--looks", "2"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console folds long lines
    assert "look 1/2" in said and "undecided experiments: sparse-regression" in said, said
    assert "look 2: sparse-regression-quick: 18 runs" in said and "6 already stored" in said
    with ResultStore(out / "results.sqlite", create=False) as store:
        assert store.count() == 18
    data = json.loads((out / "claims.json").read_text())
    assert data["rule"]["looks"] == 2 and data["rule"]["alpha_side"] == pytest.approx(0.0125)
    assert "2-look group-sequential design" in data["rule"]["sequential"]
    assert "Sequential design" in (out / "report.md").read_text()
