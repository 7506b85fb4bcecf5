"""The scheduler benchmark and the decay-study helpers on tiny sizes (no timing assertions)."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from mirrorflow.bench import bench_scheduler, decay_study
from mirrorflow.bench._harness import BenchmarkMismatch
from mirrorflow.schedules import training


@pytest.mark.slow  # runs the scheduler benchmark itself (mirrorflow bench)
def test_scheduler_rows_report_hook_share_of_a_step():
    rows = bench_scheduler._scheduler_rows(quick=True)
    assert rows
    for r in rows:
        assert r["max_abs_diff"] == 0.0  # constant() reproduced the plain loop exactly
        assert r["hook_pct_of_step"] == pytest.approx(100 * r["hook_us_per_step"] / r["step_us"])
        assert r["step_us"] == pytest.approx(1e6 * r["baseline_s"] / r["steps"])


def test_scheduler_precheck_fires_when_the_schedule_changes_the_decay(monkeypatch):
    half = training.constant(0.5)
    monkeypatch.setattr(bench_scheduler.training, "constant", lambda *a: half)
    with pytest.raises(BenchmarkMismatch, match="scheduler constant"):
        bench_scheduler._scheduler_rows(quick=True)


def test_study_summary_uses_paired_t_intervals(tmp_path):
    path = tmp_path / "s.jsonl"
    rng = np.random.default_rng(0)
    recs = []
    for seed in range(4):
        base = rng.normal()
        for label, shift in (("same-a/x", 0.0), ("same-a/y", 0.1), ("a=0 (none)", 1.0)):
            recs.append({"label": label, "seed": seed, "integrated_wd": 0.5,
                         **{m: base + shift + 0.01 * rng.normal() for m in decay_study.METRICS
                            if m != "integrated_wd"}})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    d, h, n = decay_study.paired_diff(recs, "same-a/y", "same-a/x", "nuclear_over_fro")
    diffs = [next(r for r in recs if r["label"] == "same-a/y" and r["seed"] == s)["nuclear_over_fro"]
             - next(r for r in recs if r["label"] == "same-a/x" and r["seed"] == s)["nuclear_over_fro"]
             for s in range(4)]
    lo, hi = stats.t.interval(0.95, 3, loc=np.mean(diffs), scale=stats.sem(diffs))
    assert n == 4 and d == pytest.approx(np.mean(diffs)) and h == pytest.approx((hi - lo) / 2)
    text = decay_study.summarize_study(path)
    assert "same-a/y − same-a/x" in text and "a=0 (none)" in text


def test_factorization_toy_reports_a_by_hand():
    r = decay_study.factorization_balancedness("sgd", lr=1e-2, wd=0.5, steps=30, switch_step=10)
    assert r["a"] == pytest.approx(10 * 1e-2 * 0.5, rel=1e-12)
    assert r["exp_minus_2a"] == pytest.approx(math.exp(-0.1))
