"""Runs that did not learn (issue 22, item 5): tests of geometry metrics leave out pairs with a
run that does not beat its experiment's declared chance level, count them and say so; tests of
losses keep them. Records are built by hand; every expected effect is computed here from the
chosen values."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pydantic.dataclasses
import pytest

from mirrorflow.experiments import chance_verdict
from mirrorflow.experiments.base import Baseline, ExperimentResult
from mirrorflow.report.claims import Arm, Claim, Compare, Nearer, SameThroughA
from mirrorflow.report.claims.kinds import is_geometry_metric
from mirrorflow.sweep import RunRecord


@pydantic.dataclasses.dataclass
class _Cfg:
    schedule: str = "constant"
    seed: int = 0
    wd: float = 1.0


@dataclasses.dataclass
class _Res(ExperimentResult):
    config: _Cfg
    val_loss: float
    nuclear_over_fro: float
    curves: dict = dataclasses.field(default_factory=dict)

    def baseline(self):
        return Baseline("val_loss", 1.0, "a coin")  # beaten at val_loss ≤ 0.95


@pytest.fixture
def toy(monkeypatch):
    from mirrorflow.experiments import REGISTRY
    from mirrorflow.experiments.base import Experiment

    monkeypatch.setitem(REGISTRY, "chancetoy", Experiment(
        name="chancetoy", config_cls=_Cfg, run=None, description="toy", result_cls=_Res))


HEAVY, LIGHT = (Arm("wd=1", {"schedule": "constant", "wd": 1.0}),
                Arm("wd=1e-4", {"schedule": "constant", "wd": 1e-4}))
N = 8


def _ratio(arm, s):
    return (1.5 if arm is HEAVY else 2.0) * (1 + 0.01 * ((5 * s) % 7))


def _val(arm, s):
    if arm is HEAVY and s == 0:
        return 0.99  # at chance (not ≤ 0.95)
    if arm is LIGHT and s == 1:
        return 1.2  # above chance
    return 0.5 + 0.01 * s if arm is HEAVY else 0.6 + 0.02 * (s % 3)


def _records():
    return [RunRecord(run_id=f"{arm.label}-{s}", experiment="chancetoy",
                      config={"schedule": "constant", "seed": s, "wd": arm.where["wd"]},
                      status="done", version="1", sweep="chancetoy-full",
                      metrics={"val_loss": _val(arm, s), "nuclear_over_fro": _ratio(arm, s)})
            for arm in (HEAVY, LIGHT) for s in range(N)]


def _claim(metric):
    return Claim(id=f"chancetoy/{metric}", statement="toy", source="test",
                 experiment="chancetoy", tests=(Compare(metric, HEAVY, LIGHT),))


def test_the_predicate(toy):
    b, beaten = chance_verdict("chancetoy", {"seed": 0}, {"val_loss": 0.95,
                                                          "nuclear_over_fro": 1.0})
    assert b.value == 1.0 and beaten is True
    assert chance_verdict("chancetoy", {}, {"val_loss": 0.951, "nuclear_over_fro": 1.0})[1] is False
    # a record this version cannot rebuild (a metric missing): no verdict, not "at chance"
    assert chance_verdict("chancetoy", {}, {"nuclear_over_fro": 1.0}) is None
    assert chance_verdict("no-such-experiment", {}, {"val_loss": 5.0}) is None


def test_geometry_claim_leaves_out_pairs_with_an_at_chance_run(toy):
    res = _claim("nuclear_over_fro").evaluate(_records())
    (e,) = res.effects
    kept = range(2, N)  # seed 0: the wd=1 run at chance; seed 1: the wd=1e-4 run
    want = np.mean([math.log(_ratio(LIGHT, s) / _ratio(HEAVY, s)) for s in kept])
    assert e.n == N - 2 and e.seeds == tuple(kept)
    assert e.estimate == pytest.approx(want, rel=1e-12)
    assert e.pairing["excluded"]["at chance"] == 2
    assert "2 pair(s) with runs that do not beat the chance level left out" in res.reason
    assert res.to_json()["effects"][0]["pairing"]["excluded"]["at chance"] == 2


def test_loss_claim_keeps_at_chance_runs(toy):
    res = _claim("val_loss").evaluate(_records())
    (e,) = res.effects
    want = np.mean([math.log(_val(LIGHT, s) / _val(HEAVY, s)) for s in range(N)])
    assert e.n == N and e.estimate == pytest.approx(want, rel=1e-12)
    assert "at chance" not in e.pairing["excluded"] and "chance" not in res.reason


def test_which_metrics_are_geometry_and_which_registered_claims_exclude():
    from mirrorflow.report.claims import CLAIMS

    assert is_geometry_metric("nuclear_over_fro") and is_geometry_metric("effective_rank_none")
    assert is_geometry_metric("balancedness")
    assert not any(map(is_geometry_metric, ("val_loss", "test_loss", "recovery_error",
                                            "l1_norm", "train_mse", "nuclear")))
    geometry = {c.id for c in CLAIMS for t in c.tests
                if isinstance(t, (Compare, Nearer, SameThroughA)) and is_geometry_metric(t.metric)}
    assert geometry == {f"{e}/{k}" for e in ("vit", "lora") for k in
                        ("only-through-a", "decay-lowers-ratio", "switch-off-keeps-low-ratio")}
