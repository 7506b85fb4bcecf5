"""Equal tuning budgets (mirrorflow.report.tuned): selection on validation, test on test, paired.

Stores are built by hand so that every selection and every paired difference is known: the
expected effect is computed here from the chosen values, not by the code under test.
"""

import math

import numpy as np
import pytest

from mirrorflow.report.claims import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_EVALUATED,
    SUPPORTED,
    Claim,
)
from mirrorflow.report.tuned import Family, Tuned, select_per_seed, vit_tuned_claim
from mirrorflow.sweep.store import RunRecord

SW = Family("switch-off", {"schedule": "switch-off", "test_fraction": 0.2}, ("wd", "switch_at"))
NONE = Family("none", {"schedule": "none", "test_fraction": 0.2}, ("lr",))


def _rec(i, schedule, seed, val, test, status="done", sweep="vit-full", **cfg):
    config = {"schedule": schedule, "seed": seed, "test_fraction": 0.2, "lr": 2e-3, "wd": 1.0,
              "switch_at": 0.6, "steps": 600, **cfg}
    metrics = {} if status == "failed" else {"val_loss": val, "test_loss": test}
    return RunRecord(run_id=f"r{i}", experiment="vit", config=config, status=status,
                     metrics=metrics, version="1", sweep=sweep)


def _store(n_seeds=6, gain=0.9, sweep="vit-full"):
    """Per seed: switch-off configs (wd 1, t 0.3) and (wd 2, t 0.3); none at lr 1e-3 and 2e-3.

    The selected switch-off config is the one with the lower *validation* loss (wd 2), whose
    test loss is ``gain·base``; the other has a lower test loss but a higher validation loss
    (it must not be picked). none picks lr 2e-3 with test loss ``base``.
    """
    recs = []
    for s in range(n_seeds):
        base = 1.0 + 0.05 * s
        g = gain * (1 + 0.01 * ((3 * s) % 4))
        recs += [_rec(len(recs), "switch-off", s, 0.50, 0.1, wd=1.0, switch_at=0.3, sweep=sweep),
                 _rec(len(recs) + 1, "switch-off", s, 0.40, g * base, wd=2.0, switch_at=0.3,
                      sweep=sweep),
                 _rec(len(recs) + 2, "none", s, 0.45, 0.2, lr=1e-3, sweep=sweep),
                 _rec(len(recs) + 3, "none", s, 0.44, base, lr=2e-3, sweep=sweep)]
    return recs


def _expected(n_seeds, gain):
    return np.mean([-math.log(gain * (1 + 0.01 * ((3 * s) % 4))) for s in range(n_seeds)])


def test_selection_on_validation_and_paired_test_effect():
    recs = _store(gain=0.9)
    sel, problems = select_per_seed(recs, SW, ["schedule", "wd", "switch_at", "lr",
                                               "test_fraction"])
    assert problems == {"failed": 0, "diverged": 0} and len(sel) == 6
    assert all(s.config["wd"] == 2.0 and s.tried == 2 for s in sel.values())
    e = Tuned(SW, NONE).evaluate(recs, "vit", ())
    assert e.verdict == SUPPORTED and e.n == 6
    assert e.estimate == pytest.approx(_expected(6, 0.9), rel=1e-12)
    assert "wd=2, switch_at=0.3: 6/6" in e.detail and "lr=0.002: 6/6" in e.detail
    worse = Tuned(SW, NONE).evaluate(_store(gain=1.1), "vit", ())
    assert worse.verdict == CONTRADICTED
    assert worse.estimate == pytest.approx(_expected(6, 1.1), rel=1e-12)


def test_unequal_budget_failed_and_diverged_runs():
    recs = _store()
    recs.append(_rec(99, "none", 0, 0.1, 5.0, lr=3e-3))  # seed 0: none tried 3, switch-off 2
    recs[1 * 4 + 1] = _rec(5, "switch-off", 1, 0.4, 1.0, status="failed", wd=2.0, switch_at=0.3)
    # seed 2: the best-on-validation switch-off run diverged: the other config is selected
    recs[2 * 4 + 1] = _rec(9, "switch-off", 2, math.nan, math.nan, status="diverged", wd=2.0,
                           switch_at=0.3)
    e = Tuned(SW, NONE).evaluate(recs, "vit", ())
    assert e.n == 4 and e.verdict == INCONCLUSIVE  # 4 seeds < RULE.min_pairs
    assert "unequal budget" in e.reason and "failed" in e.reason
    sel, _ = select_per_seed(recs, SW, ["schedule", "wd", "switch_at", "lr", "test_fraction"])
    pick = next(s for s in sel.values() if s.config["seed"] == 2)
    assert pick.config["wd"] == 1.0 and pick.diverged == 1 and pick.tried == 2
    # with exact budgets: a budget of 3 matches no seed
    assert Tuned(SW, NONE, budget=3).evaluate(_store(), "vit", ()).n == 0


def test_missing_family_and_quick_sweep():
    only_sw = [r for r in _store() if r.config["schedule"] == "switch-off"]
    e = Tuned(SW, NONE).evaluate(only_sw, "vit", ())
    assert e.verdict == NOT_EVALUATED and "schedule=none" in e.missing[0]
    quick = Tuned(SW, NONE).evaluate(_store(n_seeds=2, sweep="vit-quick"), "vit", ())
    assert quick.verdict == INCONCLUSIVE and "(quick sweep)" in quick.reason
    assert np.isfinite(quick.estimate)


def test_vit_claim_reads_the_vit_sweeps():
    from mirrorflow.sweep.builtin import builtin_spec

    claim = vit_tuned_claim()
    assert isinstance(claim, Claim) and claim.id == "vit/tuned-switch-off-wins"
    for quick in (True, False):
        runs = [r.config_dict for r in builtin_spec("vit", quick).runs]
        for test in claim.tests:
            counts = []
            for fam in (test.better, test.worse):
                per_seed = {}
                for c in runs:
                    if fam.arm.matches(c):
                        per_seed[c["seed"]] = per_seed.get(c["seed"], 0) + 1
                counts.append(per_seed)
            assert counts[0] == counts[1] and len(counts[0]) >= 2  # equal budgets per seed
            assert min(counts[0].values()) >= 2


# ------------------------------------------------------------------------------------ lora-lm
def _lm(i, schedule, seed, val, test, status="done", **cfg):
    config = {"schedule": schedule, "seed": seed, "pretrain": "quick", "steps": 300, "lr": 1e-2,
              "wd": 1.0, "switch_at": 0.5, "eval_every": 25, "threads": 1, **cfg}
    metrics = {} if status == "failed" else {"val_loss": val, "test_loss": test}
    return RunRecord(run_id=f"m{i}", experiment="lora-lm", config=config, status=status,
                     metrics=metrics, version="1", sweep="lora-lm-full")


def _g(s):  # tuned switch-off's test loss relative to tuned none's, per seed
    return 0.9 * (1 + 0.01 * ((3 * s) % 4))


def _c(s):  # tuned constant's, per seed
    return 0.97 + 0.01 * (s % 3)


def _lm_store():
    """Seeds 0–5: two configurations per family. On each, the configuration with the lower
    *validation* loss has the higher test loss of its family's two (selection must use
    validation): switch-off picks (2, 1) with test ``g·base``, constant λ = 1 with ``c·base``,
    none lr 1e-2 with ``base``. Seed 6: a none run failed (budget not spent). Seed 7:
    switch-off has a third configuration (unequal budget)."""
    recs = []

    def add(*a, **k):
        recs.append(_lm(len(recs), *a, **k))

    for s in range(8):
        base = 1.2 + 0.03 * s
        add("switch-off", s, 0.50, 0.1, wd=1.0, switch_at=0.5)
        add("switch-off", s, 0.40, _g(s) * base, wd=2.0, switch_at=1.0)
        add("constant", s, 0.45, 0.05, wd=0.5)
        add("constant", s, 0.42, _c(s) * base, wd=1.0)
        add("none", s, 0.44, base, lr=1e-2)
        add("none", s, 0.46, 0.01, lr=2e-2, status="failed" if s == 6 else "done")
        if s == 7:
            add("switch-off", s, 0.45, 0.2, wd=0.5, switch_at=1.0)
    return recs


def test_lora_lm_tuned_claim_selects_on_validation_and_compares_on_test():
    from mirrorflow.report.tuned import lora_lm_tuned_claim

    claim = lora_lm_tuned_claim()
    assert claim.id == "lora-lm/tuned-switch-off-wins" and claim.experiment == "lora-lm"
    res = claim.evaluate(_lm_store())
    vs_none, vs_const = res.effects
    # by hand: against none seeds 0–5 (6: none's budget not spent; 7: unequal budget),
    # against constant seeds 0–6 (seed 6's failed run is none's)
    want_none = np.mean([-math.log(_g(s)) for s in range(6)])
    want_const = np.mean([math.log(_c(s) / _g(s)) for s in range(7)])
    assert vs_none.n == 6 and vs_none.seeds == tuple(range(6))
    assert vs_none.estimate == pytest.approx(want_none, rel=1e-12)
    assert vs_const.n == 7 and vs_const.estimate == pytest.approx(want_const, rel=1e-12)
    assert "wd=2, switch_at=1: 6/6" in vs_none.detail and "lr=0.01: 6/6" in vs_none.detail
    assert "wd=1: 7/7" in vs_const.detail
    # the left-out seeds are said: seed 6 (failed none run) and seed 7 (unequal budget)
    assert "none: 1 seed(s) with failed runs" in vs_none.reason
    assert "1 seed(s) without the same number (≥ 2) of configurations" in vs_none.reason
    assert "failed" not in vs_const.reason and "unequal budget" in vs_const.reason
    # 10% lower test loss against none (above the 5% boundary on every seed): supported
    assert vs_none.verdict == SUPPORTED
    assert res.to_json()["effects"][0]["n"] == 6


@pytest.mark.parametrize("quick", [True, False])
def test_lora_lm_sweeps_give_equal_budgets_and_keep_the_main_claim_paired(quick):
    """The built-in lora-lm sweeps: every family has the same number of configurations per
    seed (the declared K: 2 quick, 3 full), and the tuned cases share the main runs without giving
    ``lora-lm/switch-off-wins`` a second candidate or an unpaired setting per seed."""
    from mirrorflow.report.claims import CLAIMS
    from mirrorflow.report.tuned import lora_lm_tuned_claim
    from mirrorflow.sweep.builtin import builtin_spec

    spec = builtin_spec("lora-lm", quick)
    seeds = sorted({r.config_dict["seed"] for r in spec.runs})
    from mirrorflow.experiments.charlm import TUNED_LORA_LM

    k = len(TUNED_LORA_LM["quick" if quick else "full"]["constant"]["wd"])
    assert k == (2 if quick else 3)
    claim = lora_lm_tuned_claim()
    for test in claim.tests:
        for fam in (test.better, test.worse):
            per_seed = {}
            for r in spec.runs:
                if fam.arm.matches(r.config_dict):
                    per_seed[r.config_dict["seed"]] = per_seed.get(r.config_dict["seed"], 0) + 1
            assert per_seed == {s: k for s in seeds}, fam.label
    rng = np.random.default_rng(3)
    recs = [RunRecord(run_id=r.run_id, experiment="lora-lm", config=dict(r.config_dict),
                      status="done", sweep=spec.name, version="1",
                      metrics={"val_loss": float(rng.uniform(1, 2)),
                               "test_loss": float(rng.uniform(1, 2))}) for r in spec.runs]
    main = next(c for c in CLAIMS if c.id == "lora-lm/switch-off-wins").evaluate(recs)
    for e in main.effects:
        assert e.n == len(seeds) and e.pairing["several_candidates"] == 0
        assert e.pairing["incomplete"] == 0, e.reason
    assert all(e.n == len(seeds) for e in claim.evaluate(recs).effects)
