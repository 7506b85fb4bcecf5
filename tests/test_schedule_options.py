"""Schedules answer the schedule questions; no code compares schedule names (issue 26).

Checked against hand values: which config options each built-in schedule reads, what sets the
end of its decay, the integrated decay ``a`` the claims' pairing reads off a config (hand
products ``wd·switch_at``, ``wd·steps·lr``, the budget target), and that a schedule registered
from this file reaches the report's labels, the pairing and the integrated decay without any
edit elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from mirrorflow.report.claims.pairing import Arm, integrated_decay, pair_runs
from mirrorflow.report.report import _label
from mirrorflow.schedules import continuous
from mirrorflow.schedules.continuous import (
    OPTIONS,
    SCHEDULE_NAMES,
    SCHEDULES,
    Schedule,
    make_schedule,
    register_schedule,
    unused_options,
)
from mirrorflow.sweep.store import RunRecord


def test_options_of_the_built_in_schedules():
    reads = {name: SCHEDULES[name].options for name in SCHEDULE_NAMES}
    assert reads == {"none": (), "constant": ("wd",), "switch-off": ("wd", "switch_at"),
                     "budget": ("wd", "budget")}
    for name in SCHEDULE_NAMES:  # from_options really ignores every other option
        cls = SCHEDULES[name]
        base = dict(wd=0.5, switch_at=2.0, budget=1.0)
        s = cls.from_options(**base)
        for other in set(OPTIONS) - set(cls.options):
            changed = cls.from_options(**{**base, other: {"wd": 0.7, "switch_at": 3.0,
                                                          "budget": 1.5}[other]})
            assert changed == s, (name, other)
    assert unused_options("none") == OPTIONS and unused_options(None) == ()


def test_what_ends_the_decay_and_the_exact_step_form():
    assert make_schedule("switch-off", wd=0.5, switch_at=2.0).ends_by == "switch_at"
    budget = make_schedule("budget", wd=0.5, budget=1.0)
    assert budget.ends_by == "budget/wd" and budget.settle_time == 2.0  # a / wd by hand
    assert [SCHEDULES[n].exact_on_steps for n in SCHEDULE_NAMES] == [False, False, False, True]


@pytest.mark.parametrize(("config", "a"), [
    ({"schedule": "switch-off", "wd": 0.2, "switch_at": 20.0}, 0.2 * 20.0),
    ({"schedule": "constant", "wd": 0.5, "steps": 600, "lr": 2e-3}, 0.5 * 600 * 2e-3),
    ({"schedule": "budget", "wd": 3.0, "budget": 0.6}, 0.6),
    ({"schedule": "none", "wd": 1.0}, 0.0),
    ({"schedule": "constant", "wd": 0.5}, None),          # no end of training: unknown
    ({"schedule": "switch-off", "wd": 0.2}, None),        # no switch time
    ({"schedule": "cosine", "wd": 0.2}, None),            # not a schedule of the table
])
def test_integrated_decay_from_the_schedule_object(config, a):
    got = integrated_decay(config)
    assert got == a if a is None else got == pytest.approx(a, rel=1e-12)


def _rec(i, seed, schedule, lr, wd):
    return RunRecord(run_id=f"r{i}", experiment="toy", status="done", version="1",
                     config={"seed": seed, "schedule": schedule, "lr": lr, "wd": wd},
                     metrics={"err": 1.0})


def test_a_field_the_runs_schedule_ignores_does_not_split_pairs():
    """Arms that fix ``lr`` only; the undecayed runs of one seed differ in ``wd``, which
    ``none`` does not read: they pair (5 seeds: 5 pairs), while a ``constant`` run's ``wd``
    does split (0 pairs)."""
    arms = [Arm("slow", {"lr": 1e-3}), Arm("fast", {"lr": 2e-3})]
    recs = [r for s in range(5) for r in (_rec(2 * s, s, "none", 1e-3, 0.1),
                                          _rec(2 * s + 1, s, "none", 2e-3, 0.7))]
    assert len(pair_runs(recs, arms).pairs) == 5
    decayed = [_rec(i, s, "constant", lr, wd) for i, (s, lr, wd) in enumerate(
        (s, lr, wd) for s in range(5) for lr, wd in ((1e-3, 0.1), (2e-3, 0.7)))]
    p = pair_runs(decayed, arms)
    assert len(p.pairs) == 0 and p.incomplete == 10


@register_schedule
@dataclass(frozen=True)
class _Fading(Schedule):
    """``α_t = wd e^{−t}``: ``a(t) = wd (1 − e^{−t})``, ``a_∞ = wd``; reads ``wd`` only."""

    wd: float
    name: ClassVar[str] = "test-fading"
    options: ClassVar[tuple[str, ...]] = ("wd",)

    @classmethod
    def from_options(cls, wd=0.0, switch_at=None, budget=None):
        return cls(wd)

    def rate(self, t):
        return self.wd * np.exp(-np.asarray(t, dtype=np.float64))

    def integral(self, t):
        return self.wd * -np.expm1(-np.maximum(np.asarray(t, dtype=np.float64), 0.0))

    @property
    def final_integral(self):
        return self.wd


@pytest.fixture(autouse=True, scope="module")
def _unregister():
    yield
    continuous.SCHEDULES.pop("test-fading", None)


def test_a_registered_schedule_reaches_labels_pairing_and_a_without_edits():
    assert unused_options("test-fading") == ("switch_at", "budget")
    label = _label(("schedule", "wd", "switch_at"), ("test-fading", 0.5, 3.0))
    assert label == "schedule=test-fading, wd=0.5"  # switch_at is not read: not shown
    assert integrated_decay({"schedule": "test-fading", "wd": 0.5}) == 0.5
    assert math.isclose(float(make_schedule("test-fading", wd=0.5).integral(1.0)),
                        0.5 * (1 - math.exp(-1.0)), rel_tol=1e-12)
