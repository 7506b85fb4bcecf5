"""Sweep execution: resume after SIGKILL, Dask == local, diverged and failed runs, the CLI."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from typer.testing import CliRunner

from mirrorflow.cli import app
from mirrorflow.experiments import REGISTRY, Experiment, ExperimentResult, get_experiment
from mirrorflow.sweep import (
    DaskExecutor,
    LocalExecutor,
    ResultStore,
    RunRecord,
    classify,
    load_spec,
    parse_spec,
    run_sweep,
)
from reliability_helpers import gate_started, open_gate, plugin_env, wait_for

TINY = {"n": 10, "d": 20, "sparsity": 2, "step": 0.05, "tail": "gd"}


def _toml(path, t_max=20.0, seeds=(0, 1), extra=""):
    path.write_text(
        'experiment = "sparse-regression"\n[base]\n'
        + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in TINY.items())
        + f"t_max = {t_max}\n{extra}"
        + f"[grid]\nseed = {list(seeds)}\n"
        + '[zip]\nschedule = ["none", "switch-off"]\nswitch_at = [0.0, 5.0]\n')
    return path


def _rows(db):
    with sqlite3.connect(db) as con:
        return con.execute("SELECT id, status, metrics FROM runs").fetchall()


def test_classify_diverged_from_status_or_non_finite_metrics():
    assert classify({"err": 0.5, "status": "converged", "steps": 10}) == ("done", None, None)
    status, step, note = classify({"err": math.nan, "status": "max-time", "steps": 40})
    assert (status, step) == ("diverged", 40) and "err" in note
    assert classify({"err": 1.0, "status": "diverged", "diverged_step": 7})[:2] == ("diverged", 7)
    assert classify({"loss": [1.0, math.inf]})[:2] == ("diverged", None)
    assert classify({"flag": True, "count": 3})[0] == "done"


def test_sigkill_midway_then_resume_gives_each_run_once(tmp_path, monkeypatch):
    """SIGKILL of the sweep's process group while run 3 of 6 is in flight, then a resume in
    this process: the 3 stored runs are skipped, the other 3 run once. Race-free (issue 28):
    run 3 is a toy run held at a gate, so the sweep cannot finish before the kill."""
    env = plugin_env(tmp_path / "plugin")
    spec_path = tmp_path / "kill.toml"
    spec_path.write_text('experiment = "toy"\n[base]\nschedule = "none"\nseconds = 0.0\n'
                         '[zip]\nseed = [0, 1, 2, 3, 4, 5]\n'
                         'action = ["ok", "ok", "ok", "gate", "ok", "ok"]\n')
    db = tmp_path / "kill.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mirrorflow.cli", "sweep", str(spec_path), "--db", str(db),
         "--workers", "1", "--batch", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    try:
        assert wait_for(lambda: gate_started(env), timeout=120), proc.poll()
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep's own process group
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    monkeypatch.setenv("MF_TOY_GATE", env["MF_TOY_GATE"])
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    monkeypatch.setitem(REGISTRY._lazy, "toy", "mf_toy")
    monkeypatch.setitem(REGISTRY, "toy", None)
    open_gate(env)
    before = {r[0] for r in _rows(db)}
    spec = load_spec(spec_path)
    assert before == set(spec.run_ids[:3])  # one at a time, in order: runs 0-2 stored

    with ResultStore(db) as store:
        summary = run_sweep(spec, store, LocalExecutor(workers=1), batch=1)
        assert summary.skipped == len(before)
        assert summary.done == len(spec.runs) - len(before)
        records = store.records()
        for rec in records:  # complete rows: the toy's value is seed squared
            assert rec.status == "done" and rec.metrics["value"] == rec.config["seed"] ** 2
    with sqlite3.connect(db) as con:
        total, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM runs").fetchone()
    assert total == distinct == len(spec.runs)
    assert {r.run_id for r in records} == set(spec.run_ids)


def _metrics_by_id(store):
    return {r.run_id: (r.status, {k: v for k, v in r.metrics.items() if k != "runtime_s"})
            for r in store.records()}


def test_dask_local_cluster_gives_the_same_metrics_as_local(tmp_path):
    spec = parse_spec({"experiment": "sparse-regression", "base": {**TINY, "t_max": 20.0},
                       "grid": {"seed": [0, 1, 2]},
                       "zip": {"schedule": ["none", "switch-off"], "switch_at": [0.0, 5.0]}})
    with ResultStore(tmp_path / "local.sqlite") as store:
        run_sweep(spec, store, LocalExecutor(workers=1), batch=1)
        local = _metrics_by_id(store)
    with ResultStore(tmp_path / "dask.sqlite") as store:
        summary = run_sweep(spec, store, DaskExecutor("local", n_workers=2, processes=False),
                            batch=1)
        dask = _metrics_by_id(store)
    assert summary.done == len(spec.runs) == 6
    assert local.keys() == dask.keys() == set(spec.run_ids)
    for rid in local:
        assert local[rid] == dask[rid]
    # and both equal a direct call of the experiment, outside the sweep machinery
    exp = get_experiment("sparse-regression")
    direct = exp.run(spec.runs[0].config).summary()
    stored = local[spec.runs[0].run_id][1]
    for k, v in stored.items():
        if isinstance(v, float):
            assert v == pytest.approx(direct[k], rel=1e-12, abs=0), k
        else:
            assert v == direct[k], k


def test_dask_scheduler_address_runs_batched_tasks(tmp_path):
    from dask.distributed import LocalCluster

    spec = parse_spec({"experiment": "sparse-regression", "base": {**TINY, "t_max": 20.0},
                       "grid": {"seed": [0, 1, 2, 3]}, "zip": {"schedule": ["none"]}})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp://",
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        with ResultStore(tmp_path / "tcp.sqlite") as store:
            summary = run_sweep(spec, store, DaskExecutor(cluster.scheduler_address), batch=2)
            got = _metrics_by_id(store)
    assert summary.done == 4
    exp = get_experiment("sparse-regression")
    for run in spec.runs:  # batched on the cluster == one run at a time here
        direct = exp.run(run.config).summary()
        assert got[run.run_id][1]["recovery_error"] == pytest.approx(
            direct["recovery_error"], rel=1e-9)


def test_forced_nan_run_is_diverged_and_the_others_finish(tmp_path):
    base = {k: v for k, v in TINY.items() if k != "step"}
    spec = parse_spec({"experiment": "sparse-regression", "base": {**base, "t_max": 200.0},
                       "grid": {"seed": [0, 1], "step": [0.05, 5.0]}})
    with ResultStore(tmp_path / "nan.sqlite") as store:
        summary = run_sweep(spec, store, LocalExecutor(workers=1), batch=2)
        records = store.records()
    assert (summary.done, summary.diverged, summary.failed) == (2, 2, 0)
    for rec in records:
        if rec.config["step"] == 5.0:
            # gradient descent with step 5 on ‖Ax−y‖² (‖AᵀA‖ ≈ 1) blows up: recorded with its step
            assert rec.status == "diverged"
            assert 0 < rec.diverged_step < 200.0 / 5.0  # before the time cap
            # caught when the residual grew 10⁴-fold (or NaN, stored as null): never done
            err = rec.metrics["recovery_error"]
            assert err is None or err > 1e3
        else:
            assert rec.status == "done" and rec.metrics["recovery_error"] < 5


@dataclass(frozen=True)
class _ToyResult(ExperimentResult):
    config: object
    value: float


def test_failed_runs_are_recorded_then_retried(tmp_path, monkeypatch):
    exp = get_experiment("sparse-regression")
    state = {"broken": True}

    def run(config, progress=False):
        if state["broken"] and config.seed == 1:
            raise RuntimeError("solver exploded\non two lines")
        return _ToyResult(config=config, value=float(config.seed) ** 2)

    monkeypatch.setitem(REGISTRY, "toy", Experiment(name="toy", config_cls=exp.config_cls,
                                                    run=run, description="test"))
    spec = parse_spec({"experiment": "toy", "grid": {"seed": [0, 1, 2]}})
    with ResultStore(tmp_path / "f.sqlite") as store:
        s1 = run_sweep(spec, store, LocalExecutor(workers=1))
        failed = [r for r in store.records() if r.status == "failed"]
        s2 = run_sweep(spec, store, LocalExecutor(workers=1))
        state["broken"] = False
        s3 = run_sweep(spec, store, LocalExecutor(workers=1), retry_failed=True)
        values = {r.config["seed"]: r.metrics["value"] for r in store.records()}
    assert (s1.done, s1.failed) == (2, 1)
    assert failed[0].message == "RuntimeError: solver exploded on two lines"
    assert (s2.skipped, s2.done, s2.failed) == (3, 0, 0)
    assert (s3.skipped, s3.done) == (2, 1)
    assert values == {0: 0.0, 1: 1.0, 2: 4.0}


def test_a_resume_never_runs_a_diverged_run_again(tmp_path, monkeypatch):
    """Issue 28, survivor 5: `diverged` is a result; a resume (with or without
    retry_failed) skips it like `done` and runs only what is missing or failed. Counted by
    the experiment itself: each seed's calls."""
    exp = get_experiment("sparse-regression")
    calls = {0: 0, 1: 0, 2: 0}

    def run(config, progress=False):
        calls[config.seed] += 1
        if config.seed == 2 and calls[2] == 1:
            raise RuntimeError("a failure the first time only")
        return _ToyResult(config=config, value=math.nan if config.seed == 1 else 1.0)

    monkeypatch.setitem(REGISTRY, "toy", Experiment(name="toy", config_cls=exp.config_cls,
                                                    run=run, description="test"))
    spec = parse_spec({"experiment": "toy", "grid": {"seed": [0, 1, 2]}})
    with ResultStore(tmp_path / "d.sqlite") as store:
        s1 = run_sweep(spec, store, LocalExecutor(workers=1), batch=1)
        s2 = run_sweep(spec, store, LocalExecutor(workers=1), batch=1)
        s3 = run_sweep(spec, store, LocalExecutor(workers=1), batch=1, retry_failed=True)
        statuses = {r.config["seed"]: r.status for r in store.records()}
    assert (s1.done, s1.diverged, s1.failed) == (1, 1, 1)
    assert (s2.skipped, s2.done, s2.diverged, s2.failed) == (3, 0, 0, 0)
    assert (s3.skipped, s3.done, s3.diverged, s3.failed) == (2, 1, 0, 0)  # only the failed one
    # a stored failed run leaves the sweep incomplete (exit 1) until it is retried
    assert (s2.stored_failed, s2.complete) == (1, False)
    assert (s3.stored_failed, s3.complete) == (0, True)
    assert calls == {0: 1, 1: 1, 2: 2}
    assert statuses == {0: "done", 1: "diverged", 2: "done"}


def test_runs_stored_meanwhile_by_another_sweep_are_kept_and_counted_as_kept(tmp_path,
                                                                             monkeypatch):
    """Mutations E3 and E5 (issue 28): while seed 0 runs, "another sweep" (a second connection)
    stores seed 0 (the same run, finished first) and seed 1. Seed 0's own result is not
    written over the other's and seed 1 is never run: both counted as kept; seed 2 runs."""
    exp = get_experiment("sparse-regression")
    db = tmp_path / "m.sqlite"
    calls = {0: 0, 1: 0, 2: 0}

    def run(config, progress=False):
        calls[config.seed] += 1
        if config.seed == 0:
            with ResultStore(db) as other:
                for r in spec.runs[:2]:
                    other.write(RunRecord(run_id=r.run_id, experiment="toy",
                                          config=dict(r.config_dict), status="done",
                                          metrics={"value": 100.0 + r.config_dict["seed"]},
                                          sweep="other", version="v"))
        return _ToyResult(config=config, value=float(config.seed))

    monkeypatch.setitem(REGISTRY, "toy", Experiment(name="toy", config_cls=exp.config_cls,
                                                    run=run, description="test"))
    spec = parse_spec({"experiment": "toy", "grid": {"seed": [0, 1, 2]}})
    with ResultStore(db) as store:
        summary = run_sweep(spec, store, LocalExecutor(workers=1), batch=1)
        values = {r.config["seed"]: r.metrics["value"] for r in store.records()}
    assert (summary.done, summary.kept, summary.skipped) == (1, 2, 0)
    assert calls == {0: 1, 1: 0, 2: 1}
    assert values == {0: 100.0, 1: 101.0, 2: 2.0}


def test_a_failing_batch_of_two_is_retried_run_by_run(tmp_path, monkeypatch):
    """Mutations E6 and E8 (issue 28): a batched task whose batch call raises is retried one
    run at a time, so only the bad run fails (here seed 1 of the batch [0, 1]); the last task,
    a batch of one (seed 2), runs too."""
    exp = get_experiment("sparse-regression")

    def run(config, progress=False):
        if config.seed == 1:
            raise RuntimeError("bad seed")
        return _ToyResult(config=config, value=float(config.seed))

    def run_batch(configs, progress=False):
        return [run(c) for c in configs]  # one bad run fails the whole batch call

    monkeypatch.setitem(REGISTRY, "toy", Experiment(name="toy", config_cls=exp.config_cls,
                                                    run=run, run_batch=run_batch,
                                                    description="test"))
    spec = parse_spec({"experiment": "toy", "grid": {"seed": [0, 1, 2]}})
    with ResultStore(tmp_path / "b.sqlite") as store:
        summary = run_sweep(spec, store, LocalExecutor(workers=1), batch=2)
        statuses = {r.config["seed"]: r.status for r in store.records()}
    assert (summary.done, summary.failed) == (2, 1)
    assert statuses == {0: "done", 1: "failed", 2: "done"}


def test_the_experiments_own_batch_sizes_its_tasks_unless_one_is_given(tmp_path, monkeypatch):
    """Issue 22: a stacked-seed experiment declares how many seeds one task trains
    (``Experiment.batch``); ``run_sweep(batch=None)`` uses it, an explicit ``batch`` wins.
    7 seeds in tasks of 3 are 3 + 3 + 1 (by hand); in tasks of 2: 2 + 2 + 2 + 1."""
    exp = get_experiment("sparse-regression")
    sizes: list[int] = []

    def run(config, progress=False):
        return _ToyResult(config=config, value=float(config.seed))

    def run_batch(configs, progress=False):
        sizes.append(len(configs))
        return [run(c) for c in configs]

    monkeypatch.setitem(REGISTRY, "toy", Experiment(name="toy", config_cls=exp.config_cls,
                                                    run=run, run_batch=run_batch,
                                                    description="test", batch=3))
    spec = parse_spec({"experiment": "toy", "grid": {"seed": list(range(7))}})
    with ResultStore(tmp_path / "own.sqlite") as store:
        assert run_sweep(spec, store, LocalExecutor(workers=1)).done == 7
    assert sorted(sizes, reverse=True) == [3, 3, 1]
    sizes.clear()
    with ResultStore(tmp_path / "given.sqlite") as store:
        assert run_sweep(spec, store, LocalExecutor(workers=1), batch=2).done == 7
    assert sorted(sizes, reverse=True) == [2, 2, 2, 1]


def test_cli_malformed_spec_fails_before_any_run(tmp_path):
    runner = CliRunner()
    for extra, field in [("bogus = 3\n", "bogus"), ('wd = "heavy"\n', "wd")]:
        spec = _toml(tmp_path / "bad.toml", extra=extra)
        db = tmp_path / "bad.sqlite"
        res = runner.invoke(app, ["sweep", str(spec), "--db", str(db)])
        assert res.exit_code == 2, res.output
        assert field in res.output and "Traceback" not in res.output
        assert not db.exists()
    spec = _toml(tmp_path / "ok.toml")
    res = runner.invoke(app, ["sweep", str(spec), "--dask", "not-an-address"])
    assert res.exit_code == 2 and "tcp://HOST:PORT" in res.output
    assert not spec.with_suffix(".sqlite").exists()


def test_cli_sweep_twice_skips_finished_runs(tmp_path):
    runner = CliRunner()
    spec = _toml(tmp_path / "s.toml")
    first = runner.invoke(app, ["sweep", str(spec), "--workers", "1"])
    second = runner.invoke(app, ["sweep", str(spec), "--workers", "1"])
    assert first.exit_code == 0 and "4 done" in first.output
    assert second.exit_code == 0 and "0 done" in second.output and "4 already stored" in second.output
    rows = _rows(spec.with_suffix(".sqlite"))
    assert len(rows) == 4 and all(np.isfinite(eval_metric(r[2])) for r in rows)


def eval_metric(metrics_json):
    import json

    return json.loads(metrics_json)["recovery_error"]
