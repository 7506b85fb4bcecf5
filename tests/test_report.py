"""Reports: tables (mean ± sd over seeds per setting) checked against statistics by hand."""

from __future__ import annotations

import csv
import dataclasses
import statistics

import matplotlib.image as mpimg
import pydantic.dataclasses
import pytest
from typer.testing import CliRunner

from mirrorflow import MirrorflowError
from mirrorflow.cli import app
from mirrorflow.experiments.base import Baseline, ExperimentResult, Registry
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


@pydantic.dataclasses.dataclass
class _ChanceCfg:
    schedule: str = "none"
    seed: int = 0


@dataclasses.dataclass
class _ChanceRes(ExperimentResult):
    config: _ChanceCfg
    err: float
    curves: dict = dataclasses.field(default_factory=dict)

    def baseline(self):
        return Baseline("err", 1.0, "a coin")


def test_runs_that_do_not_beat_the_declared_chance_level_are_marked(tmp_path, monkeypatch):
    """Issue 22, item 5: an experiment declares its chance level (Result.baseline()); the
    report says how many finished runs do not beat it — by hand: chance 1.0, margin 5%, so
    err 0.5 beats it, 0.99 and 1.2 do not (2 of 3); the diverged run is not counted."""
    from mirrorflow.experiments import REGISTRY
    from mirrorflow.experiments.base import Experiment

    monkeypatch.setitem(REGISTRY, "toy", Experiment(name="toy", config_cls=_ChanceCfg, run=None,
                                                    description="toy", result_cls=_ChanceRes))
    with ResultStore(tmp_path / "c.sqlite") as store:
        for seed, err in enumerate((0.5, 0.99, 1.2)):
            store.write(RunRecord(run_id=f"r{seed}", experiment="toy",
                                  config={"schedule": "none", "seed": seed}, status="done",
                                  metrics={"err": err}))
        store.write(RunRecord(run_id="d", experiment="toy", config={"schedule": "none",
                                                                    "seed": 7},
                              status="diverged", metrics={"err": None}, diverged_step=3))
    files = write_report(tmp_path / "c.sqlite", tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "**2 of 3 finished runs do not beat it**" in md and "a coin" in md
    assert any("2 of 3 finished runs do not beat the chance level" in n for n in files.notes)
