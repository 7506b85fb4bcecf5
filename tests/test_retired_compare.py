"""``compare=True`` is retired in favour of sweeps (a deprecation, not a break).

What a user passes: ``compare=True`` (the old side runs) is a one-line error that names the
sweep to run instead — silently dropping it would return fewer runs than asked for;
``compare=False`` (what every built-in sweep passed) means what the experiments do today: it is
dropped with a ``DeprecationWarning`` and gives the same config (and run id) as leaving it out.
What a store holds: runs written with a ``compare`` key (either value, with the old
``*_none`` / ``*_constant`` metrics) still load, are reported and pair with today's runs.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
from typer.testing import CliRunner

import mirrorflow
from mirrorflow import MirrorflowError
from mirrorflow.cli import app
from mirrorflow.experiments import REGISTRY
from mirrorflow.experiments.base import RETIRED_FIELDS
from mirrorflow.report.claims.pairing import Arm, pair_runs
from mirrorflow.sweep import ResultStore, run_id
from mirrorflow.sweep.spec import config_to_dict
from mirrorflow.sweep.store import RunRecord

HAD_COMPARE = ("attention", "matrix-sensing", "vit")


def test_retired_names_are_declared_and_no_config_still_has_them():
    for name in sorted(REGISTRY):
        cls = REGISTRY[name].config_cls
        fields = {f.name for f in dataclasses.fields(cls)}
        assert not fields & set(RETIRED_FIELDS), name
        assert set(getattr(cls, "retired", ())) <= set(RETIRED_FIELDS), name
    assert {n for n in sorted(REGISTRY)
            if "compare" in getattr(REGISTRY[n].config_cls, "retired", ())} == set(HAD_COMPARE)


@pytest.mark.parametrize("name", HAD_COMPARE)
@pytest.mark.parametrize("value", [True, "true", "yes", 1])
def test_compare_true_is_one_line_naming_the_sweep(name, value):
    with pytest.raises(MirrorflowError) as err:
        REGISTRY[name].make_config({"compare": value})
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("invalid config: compare=")
    assert 'schedule = ["none", "constant", "switch-off"]' in msg and "mirrorflow sweep" in msg


@pytest.mark.parametrize("name", HAD_COMPARE)
@pytest.mark.parametrize("value", [False, "false", "0"])
def test_compare_false_is_dropped_with_a_warning_same_run_id(name, value):
    exp = REGISTRY[name]
    with pytest.warns(DeprecationWarning, match="'compare' was retired"):
        cfg = exp.make_config({"compare": value, "seed": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # leaving it out warns nothing
        plain = exp.make_config({"seed": 3})
    assert cfg == plain
    assert run_id(name, config_to_dict(cfg)) == run_id(name, config_to_dict(plain))


def test_compare_on_other_experiments_stays_an_unknown_field():
    with pytest.raises(MirrorflowError, match=r"unknown field.*compare"):
        REGISTRY["sparse-regression"].make_config({"compare": False})


def test_cli_run_compare_true_exits_2_with_one_line():
    res = CliRunner().invoke(app, ["run", "attention", "--set", "compare=true"])
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "retired" in lines[0] and "mirrorflow sweep" in lines[0]


def _record(rid, cfg, metrics, curves_file=None):
    return RunRecord(run_id=rid, experiment="attention", config=cfg, status="done",
                     metrics=metrics, version=mirrorflow.__version__, curves_file=curves_file)


def test_stored_compare_runs_load_pair_and_report(tmp_path):
    """An old store: switch-off runs written with ``compare`` (False for seed 0, True for
    seed 1, with the old side metrics), today's none runs without it; all from real runs."""
    exp = REGISTRY["attention"]
    smoke = dict(exp.smoke)
    db = tmp_path / "old.sqlite"
    runs = {}
    with ResultStore(db) as store:
        for seed in (0, 1):
            for sched in ("switch-off", "none"):
                cfg = exp.make_config({**smoke, "seed": seed, "schedule": sched})
                r = exp.run(cfg)
                d = config_to_dict(cfg)
                metrics = r.metrics()
                if sched == "switch-off":  # written by the old version
                    d["compare"] = bool(seed)
                    metrics |= {"test_loss_none": 1.0 if seed else None,
                                "test_loss_constant": 2.0 if seed else None}
                rid = f"{sched}-{seed}"
                store.write(_record(rid, d, metrics), r.curves)
                runs[rid] = r
    with ResultStore(db, create=False) as store:
        recs = store.records()
        # loads: the retired key is dropped, today's metrics come back as stored
        for rec in recs:
            res = exp.result_from_record(rec.config, rec.metrics, store.load_curves(rec))
            assert not hasattr(res.config, "compare")
            assert res.test_loss == runs[rec.run_id].test_loss
        # pairs: the retired key does not split a pair cell (one pair per seed)
        p = pair_runs(recs, [Arm("sw", {"schedule": "switch-off"}), Arm("none", {"schedule": "none"})])
        assert len(p.pairs) == 2 and p.incomplete == 0 and p.several == 0
        assert sorted(pair["sw"].run_id for pair in p.pairs) == ["switch-off-0", "switch-off-1"]
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["report", str(db), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "attention_curves.png").stat().st_size > 1000
    assert "switch-off" in (out / "report.md").read_text() and json.loads(
        (out / "claims.json").read_text())["claims"]
