"""Reports: tables (mean ± sd over seeds per setting) checked against statistics by hand."""

from __future__ import annotations

import csv
import dataclasses
import statistics

import matplotlib.image as mpimg
import pytest
from typer.testing import CliRunner

from mirrorflow import MirrorflowError
from mirrorflow.cli import app
from mirrorflow.experiments.base import Registry
from mirrorflow.report import write_report
from mirrorflow.sweep import ResultStore, RunRecord

ERR = {("none", 0): 2.5, ("none", 1): 2.0, ("none", 2): 3.1,
       ("constant", 0): 0.8, ("constant", 1): 0.6, ("constant", 2): 0.9,
       ("switch-off", 0): 0.1, ("switch-off", 1): 0.3, ("switch-off", 2): 0.2}


def _toy_db(path):
    with ResultStore(path) as store:
        for (sched, seed), err in ERR.items():
            store.write(RunRecord(run_id=f"{sched}-{seed}", experiment="toy",
                                  config={"schedule": sched, "seed": seed, "n": 40},
                                  status="done", metrics={"err": err, "steps": 10 * seed}))
        # diverged and failed runs are counted, never averaged
        store.write(RunRecord(run_id="sw-9", experiment="toy",
                              config={"schedule": "switch-off", "seed": 9, "n": 40},
                              status="diverged", metrics={"err": None, "steps": 99},
                              diverged_step=99, message="non-finite metrics: err"))
        store.write(RunRecord(run_id="c-8", experiment="toy",
                              config={"schedule": "constant", "seed": 8, "n": 40},
                              status="failed", metrics={}, message="RuntimeError: boom"))


def test_tables_match_hand_computed_mean_and_sd(tmp_path):
    _toy_db(tmp_path / "r.sqlite")
    files = write_report(tmp_path / "r.sqlite", tmp_path / "out")
    assert {"report.md", "toy.csv", "runs.csv", "toy_summary.png"} <= set(files.files)
    with (tmp_path / "out" / "toy.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["schedule", "metric", "mean", "sd", "n", "runs_done",
                             "runs_diverged", "runs_failed"]  # n=40 is fixed, seed is averaged
    by = {(r["schedule"], r["metric"]): r for r in rows}
    for sched in ("none", "constant", "switch-off"):
        vals = [v for (s, _), v in ERR.items() if s == sched]
        row = by[(sched, "err")]
        assert float(row["mean"]) == pytest.approx(statistics.mean(vals), rel=1e-12)
        assert float(row["sd"]) == pytest.approx(statistics.stdev(vals), rel=1e-12)
        assert row["n"] == "3"
    assert (by[("switch-off", "err")]["runs_diverged"], by[("constant", "err")]["runs_failed"]) \
        == ("1", "1")
    md = (tmp_path / "out" / "report.md").read_text()
    # the three schedules side by side as columns of one table
    header = next(line for line in md.splitlines() if line.startswith("|  | none"))
    assert header.split("|")[2:5] == [" none ", " constant ", " switch-off "]
    assert f"{statistics.mean(ERR[('none', s)] for s in range(3)):.4g} ± " in md
    assert "diverged** at step 99" in md and "RuntimeError: boom" in md
    assert "not registered" in md  # toy has no plot: said, not crashed
    img = mpimg.imread(tmp_path / "out" / "toy_summary.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    with (tmp_path / "out" / "runs.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == len(ERR) + 2


def test_report_errors_write_nothing(tmp_path):
    with pytest.raises(MirrorflowError, match="does not exist"):
        write_report(tmp_path / "missing.sqlite", tmp_path / "out")
    ResultStore(tmp_path / "empty.sqlite").close()
    with pytest.raises(MirrorflowError, match="no runs"):
        write_report(tmp_path / "empty.sqlite", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["empty.sqlite"]  # no temp folders left
    _toy_db(tmp_path / "r.sqlite")
    with pytest.raises(MirrorflowError, match="does not exist"):
        write_report(tmp_path / "r.sqlite", tmp_path / "no" / "out")


def test_reproduce_runs_builtin_sweeps_and_writes_report(tmp_path, monkeypatch):
    tiny = {"quick": {"base": {"n": 10, "d": 20, "sparsity": 2, "step": 0.05, "tail": "gd",
                               "t_max": 20.0},
                      "grid": {"seed": [0, 1]},
                      "zip": {"schedule": ["none", "constant", "switch-off"],
                              "switch_at": [0.0, 0.0, 5.0]}}}
    import mirrorflow.experiments as experiments

    only = Registry()
    only["sparse-regression"] = dataclasses.replace(experiments.REGISTRY["sparse-regression"],
                                                    sweeps=tiny)
    monkeypatch.setattr(experiments, "REGISTRY", only)
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["reproduce", "--quick", "--out", str(out), "--workers", "1"])
    assert res.exit_code == 0, res.output
    with ResultStore(out / "results.sqlite", create=False) as store:
        assert store.count() == 6 and store.ids(["done"]) == {r.run_id for r in store.records()}
    md = (out / "report.md").read_text()
    assert "## sparse-regression" in md
    # switch_at varies only with the schedule: the columns are the schedules
    assert "|  | none | constant | switch-off |" in md and "switch_at" in md
    for name in ("sparse-regression_summary.png", "sparse-regression_curves.png"):
        assert mpimg.imread(out / name).shape[0] > 100
    again = CliRunner().invoke(app, ["reproduce", "--quick", "--out", str(out), "--workers", "1"])
    assert again.exit_code == 0 and "6 already stored" in again.output
