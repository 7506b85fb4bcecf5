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
