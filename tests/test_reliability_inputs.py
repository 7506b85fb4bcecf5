"""Reliability of results and inputs (issue 15, items 1, 3, 5, 7, 9, 10, 11): a result is never
overwritten, reports never mix versions, configs that cannot do what they say and absurd sizes
are refused up front with one line, outputs are checked before work, nothing is left behind.
docs/reliability.md names each guarantee with its test here."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mirrorflow
from mirrorflow import MirrorflowError
from mirrorflow._core.limits import RunLimitError, run_deadline
from mirrorflow.experiments import REGISTRY, get_experiment
from mirrorflow.sweep import LocalExecutor, ResultStore, RunRecord, parse_spec, run_sweep
from reliability_helpers import cli, cli_here, one_error_line, rows, wait_for, write_spec


#: a path no one can write to, root included: a folder under a regular file
def _unwritable(tmp_path: Path) -> Path:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    return blocker


# ----------------------------------------------------------------------------- item 1
def _rec(rid, status, **metrics):
    return RunRecord(run_id=rid, experiment="toy", config={"seed": 1}, status=status,
                     metrics=metrics, sweep="s", version="v")


def test_a_stored_result_is_never_replaced_by_a_later_write(tmp_path):
    """Item 1, at the store: two connections (as two sweeps have); the second writes `failed`
    (and then `done` again) for a run the first stored as `done`: the row, its metrics and
    its curves file stay as they were. A `failed` row is replaced by a result."""
    db = tmp_path / "r.sqlite"
    curves = {"time": np.arange(5.0)}
    with ResultStore(db) as a, ResultStore(db) as b:
        assert a.write(_rec("x", "done", err=0.5), curves)
        assert not b.write(_rec("x", "failed"))
        assert not b.write(_rec("x", "diverged", err=None), {"time": np.zeros(2)})
        assert not b.write(_rec("x", "done", err=9.0), {"time": np.zeros(2)})
        assert a.write(_rec("y", "failed"))
        assert b.write(_rec("y", "done", err=1.0))
        (x,) = [r for r in a.records() if r.run_id == "x"]
        assert (x.status, x.metrics) == ("done", {"err": 0.5})
        np.testing.assert_array_equal(a.load_curves(x)["time"], np.arange(5.0))
        assert a.statuses(["x", "y", "z"]) == {"x": "done", "y": "done"}
    assert sorted(p.name for p in (tmp_path / "r.curves").iterdir()) == ["x.npz"]  # no temp


def test_a_stored_diverged_row_is_never_replaced_either(tmp_path):
    """Issue 28, survivor 3: `diverged` is a result too. A run stored as diverged (its step,
    its NaN metric, its curves) is kept against a later `failed`, `done` or `diverged` write
    from another connection; only `failed` rows are ever replaced."""
    db = tmp_path / "r.sqlite"
    with ResultStore(db) as a, ResultStore(db) as b:
        first = RunRecord(run_id="x", experiment="toy", config={"seed": 1}, status="diverged",
                          metrics={"err": float("nan")}, diverged_step=12, version="v")
        assert a.write(first, {"time": np.arange(3.0)})
        assert not b.write(_rec("x", "failed"))
        assert not b.write(_rec("x", "done", err=0.25), {"time": np.zeros(2)})
        assert not b.write(_rec("x", "diverged", err=None), {"time": np.zeros(7)})
        (x,) = a.records()
        assert (x.status, x.diverged_step, x.metrics) == ("diverged", 12, {"err": None})
        np.testing.assert_array_equal(a.load_curves(x)["time"], np.arange(3.0))
        assert b.statuses(["x"]) == {"x": "diverged"}
    assert sorted(p.name for p in (tmp_path / "r.curves").iterdir()) == ["x.npz"]


# ----------------------------------------------------------------------------- item 3
def _version_store(db: Path) -> dict[str, list[float]]:
    """Runs of this version and of 0.0.9 for the same settings; returns this version's errs."""
    here = {"none": [2.0, 3.0], "constant": [0.5, 0.7]}
    with ResultStore(db) as store:
        for version, errs in ((mirrorflow.__version__, here),
                              ("0.0.9", {"none": [900.0, 1000.0], "constant": [5.0, 6.0]})):
            for sched, values in errs.items():
                for seed, err in enumerate(values):
                    store.write(RunRecord(run_id=f"{version}-{sched}-{seed}", experiment="toy",
                                          config={"schedule": sched, "seed": seed},
                                          status="done", metrics={"err": err},
                                          version=version))
    return here


def test_report_never_mixes_versions_and_says_what_it_left_out(tmp_path):
    """Item 3: a store with runs of 0.0.9 and of this version: the report averages this
    version's runs only (mean by hand) and names the 4 runs left out; `--version 0.0.9`
    reports those."""
    db = tmp_path / "v.sqlite"
    here = _version_store(db)
    res = cli("report", db, "--out", tmp_path / "rep")
    assert res.returncode == 0, res.stderr
    assert "left out 4 runs of other mirrorflow versions (0.0.9: 4)" in res.stderr
    csv_rows = (tmp_path / "rep" / "toy.csv").read_text().splitlines()
    got = {r.split(",")[0]: r.split(",") for r in csv_rows[1:]}
    for sched, values in here.items():
        assert float(got[sched][2]) == pytest.approx(np.mean(values), rel=1e-12)
        assert got[sched][4] == "2"  # n = 2 seeds, not 4
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"runs of mirrorflow {mirrorflow.__version__}" in md and "left out 4 runs" in md
    old = cli_here("report", db, "--out", tmp_path / "old", "--version", "0.0.9")
    assert old.returncode == 0
    assert "left out 4 runs" in old.stderr
    older = tmp_path / "o.sqlite"  # no run of this version: one old version is reported, said
    with ResultStore(older) as store:
        store.write(RunRecord(run_id="o", experiment="toy", config={"seed": 0}, status="done",
                              metrics={"err": 1.0}, version="0.0.9"))
    one = cli_here("report", older, "--out", tmp_path / "x")
    assert one.returncode == 0 and "all runs were written by mirrorflow 0.0.9" in one.stderr
    with ResultStore(older) as store:  # two old versions, none of this one: which? refused
        store.write(RunRecord(run_id="p", experiment="toy", config={"seed": 1}, status="done",
                              metrics={"err": 2.0}, version="0.0.8"))
    one_error_line(cli_here("report", older, "--out", tmp_path / "y"),
                   "no runs of mirrorflow " + mirrorflow.__version__)


# ----------------------------------------------------------------------------- item 4
def test_a_run_past_its_wall_time_limit_stops_with_an_honest_status(tmp_path):
    """Item 4: a sparse-regression run of 10⁶ steps with `--max-seconds 1` stops within a
    few seconds, exit 1, one line `stopped: ...`; in a sweep the run is stored as `failed`
    with that message, not `done`, and the sweep exits 1."""
    slow = ["--schedule", "constant", "--set", "step=0.005", "--set", "t_max=5000",
            "--set", "tail=gd", "--set", "tol=1e-300"]
    t0 = time.monotonic()
    res = cli("run", "sparse-regression", *slow, "--max-seconds", "1")
    assert res.returncode == 1, res.stdout + res.stderr
    assert time.monotonic() - t0 < 60
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "stopped: the run reached its wall-time limit of 1 s" in lines[0]
    spec = tmp_path / "slow.toml"
    spec.write_text('experiment = "sparse-regression"\n[base]\nschedule = "constant"\n'
                    'step = 0.005\nt_max = 5000.0\ntail = "gd"\ntol = 1e-300\n'
                    '[grid]\nseed = [0]\n')
    sw = cli("sweep", spec, "--workers", "1", "--max-seconds", "1")
    assert sw.returncode == 1 and "1 failed" in sw.stdout
    (row,) = rows(spec.with_suffix(".sqlite"))
    assert row[1] == "failed" and row[2].startswith("stopped: the run reached its wall-time")


def test_ode_tail_and_mirror_flow_obey_the_deadline():
    """Item 4: the ODE tail (scipy Radau, no step bound of its own) stops at the deadline."""
    from mirrorflow.dynamics.mirror import flow_to_convergence
    from mirrorflow.geometry import uv

    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 12))
    y = A @ np.where(np.arange(12) < 2, 1.0, 0.0)
    with run_deadline(0.0), pytest.raises(RunLimitError, match="ODE tail"):
        flow_to_convergence(A, y, uv(np.ones(12), np.zeros(12)), tol=1e-12)
    x, _, ok = flow_to_convergence(A, y, uv(np.ones(12), np.zeros(12)), tol=1e-8)
    assert ok and np.linalg.norm(A @ x - y) <= 1e-8 * np.linalg.norm(y)  # no deadline: runs


# ----------------------------------------------------------------------------- item 5
HORIZONS = {  # experiment -> (overrides that end the run at T, T)
    "sparse-regression": ({"t_max": 10.0}, 10.0),
    "matrix-sensing": ({"t_max": 10.0}, 10.0),
    "attention": ({"t_max": 10.0}, 10.0),
    "sparse-coding": ({"iterations": 200}, 200 * 0.05),
    "vit": ({"steps": 100}, 100 * 2e-3),
    "lora": ({"steps": 50}, 50 * 2e-3),
    "lora-lm": ({"steps": 50}, 50 * 1e-2),
}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_switch_after_the_end_of_the_run_is_refused(name):
    """Item 5: in every experiment, a switch-off (or budget) past the end of the run would
    apply only part of the decay: refused up front, naming the horizon; inside it is fine."""
    over, end = HORIZONS[name]
    exp = get_experiment(name)
    with pytest.raises(MirrorflowError, match="after the end of the run") as err:
        exp.make_config({**over, "schedule": "switch-off", "switch_at": 2 * end})
    assert "ArgsKwargs" not in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(MirrorflowError, match="after the end of the run"):
        exp.make_config({**over, "schedule": "budget", "wd": 0.5, "budget": 0.5 * 2 * end})
    cfg = exp.make_config({**over, "schedule": "switch-off", "switch_at": end / 2})
    assert cfg.make_schedule().final_integral == pytest.approx(cfg.wd * end / 2)


def test_a_step_grid_that_misses_the_decay_is_refused():
    """Item 5: a step longer than the run, or one that applies the decay for a visibly wrong
    time (a = wd·switch_at by hand), is refused; a step dividing switch_at is not."""
    exp = get_experiment("sparse-regression")
    with pytest.raises(MirrorflowError, match="longer than the whole run"):
        exp.make_config({"step": 1e6})
    # step 30 > switch_at 20: the first step's midpoint (15) is before the switch, the second
    # (45) after: decay for 30 time units, a = 6 instead of 0.2·20 = 4
    with pytest.raises(MirrorflowError, match=r"a = 6 instead of wd·20 = 4"):
        exp.make_config({"step": 30.0})
    assert exp.make_config({"step": 0.5}).step == 0.5  # 40 steps of decay: a = 4 exactly


def test_finite_blow_ups_are_diverged_not_done(tmp_path):
    """Item 5: a run that blows up without reaching NaN is diverged, not done. Sparse
    regression with constant decay 6 at step 0.5 (shrink factor 1 − ηα = −2) for 4 steps
    ended finite (recovery error 1.6e13) and was stored `done`; now it is `diverged` at the
    step an independent numpy loop of the same update shows the residual passing 10⁴ × its
    start."""
    from mirrorflow.experiments.sparse_regression import make_problem

    spec = parse_spec({"experiment": "sparse-regression",
                       "base": {"n": 10, "d": 20, "sparsity": 2, "tail": "gd", "t_max": 2.0,
                                "schedule": "constant", "wd": 6.0, "step": 0.5},
                       "grid": {"seed": [0]}})
    with ResultStore(tmp_path / "b.sqlite") as store:
        summary = run_sweep(spec, store, LocalExecutor(workers=1))
        (rec,) = store.records()
    assert summary.diverged == 1 and rec.status == "diverged"
    assert rec.metrics["recovery_error"] > 1e3  # finite: caught by growth, not by NaN
    A, y, _ = make_problem(spec.runs[0].config)
    u, v = np.ones(20), np.zeros(20)
    res = [np.linalg.norm(A @ (u * v) - y) / np.linalg.norm(y)]
    for _ in range(4):  # coupled decay α = 6: (u, v) ← (u, v) − η (∇ + α (u, v)), x = u ⊙ v
        g = A.T @ (A @ (u * v) - y)
        u, v = u - 0.5 * (v * g + 6.0 * u), v - 0.5 * (u * g + 6.0 * v)
        res.append(np.linalg.norm(A @ (u * v) - y) / np.linalg.norm(y))
    first = next(k for k, r in enumerate(res) if r > 1e4 * max(1.0, res[0]))
    assert rec.diverged_step == first


def test_matrix_sensing_divergence_is_diverged_with_its_step(tmp_path):
    """Items 5 and 11: matrix sensing with decay 60 at step 0.05 (shrink factor −2) for 5
    steps ended finite (recovery error 2.5e14) and was stored `done` with diverged_step
    NULL; now `diverged`, with the step the residual passed 10⁴ × its start."""
    spec = parse_spec({"experiment": "matrix-sensing",
                       "base": {"d": 6, "rank": 1, "m": 40, "step": 0.05, "t_max": 0.25,
                                "baseline": "none", "schedule": "constant",
                                "wd": 60.0}, "grid": {"seed": [0]}})
    with ResultStore(tmp_path / "m.sqlite") as store:
        run_sweep(spec, store, LocalExecutor(workers=1))
        (rec,) = store.records()
    assert rec.status == "diverged" and rec.metrics["recovery_error"] > 1e3
    assert rec.diverged_step is not None and 0 < rec.diverged_step <= 5


# ----------------------------------------------------------------------------- item 7
def test_absurd_sizes_are_refused_before_allocating():
    """Item 7: d = 10⁹ (and n = 40, d = 10⁵) would need terabytes: one line, exit 2, within
    seconds, nothing allocated; --max-memory overrides the limit either way."""
    for sets in (["d=1000000000", "n=1"], ["n=40", "d=100000"]):
        t0 = time.monotonic()
        res = cli("run", "sparse-regression", *[a for s in sets for a in ("--set", s)])
        line = one_error_line(res, "GB of memory")
        assert "--max-memory" in line and time.monotonic() - t0 < 60
    one_error_line(cli_here("run", "sparse-regression", "--max-memory", "0.00001"), "GB of memory")
    one_error_line(cli_here("run", "sparse-regression", "--set", "step=1e-9"), "1e+08")


def test_the_builtin_sweeps_fit_the_default_bounds():
    """Item 7: the up-front bounds never refuse a built-in sweep (quick or full): every run's
    estimated steps and memory are well within the defaults."""
    from mirrorflow._core.limits import DEFAULT_LIMITS
    from mirrorflow.sweep import builtin_specs, check_sweep_limits

    for quick in (True, False):
        specs, _ = builtin_specs(quick)
        for spec in specs:
            check_sweep_limits(spec, DEFAULT_LIMITS)
            for r in spec.runs:
                cost = r.config.cost()
                assert cost.steps <= 10**6 and cost.memory <= 2 * 2**30, (spec.name, cost)


def test_a_huge_grid_is_refused_before_expanding(tmp_path):
    """Item 7: a grid of 10⁸ runs is counted, not expanded: one line within seconds."""
    spec = tmp_path / "huge.toml"
    spec.write_text('experiment = "sparse-regression"\n[grid]\n'
                    f"seed = {list(range(10_000))}\nn = {list(range(1, 10_001))}\n")
    t0 = time.monotonic()
    line = one_error_line(cli("sweep", spec), "100,000,000 runs")
    assert "--max-runs" in line and time.monotonic() - t0 < 60
    assert not spec.with_suffix(".sqlite").exists()


# ----------------------------------------------------------------------------- item 9
def test_outputs_are_checked_before_any_work(tmp_path):
    """Item 9: unwritable or unusable outputs are one line, exit 2, before the run (a run of
    minutes would otherwise come first) and before any file is written. Unwritable for root
    too: a path under a regular file, and /proc."""
    blocker = _unwritable(tmp_path)
    long_run = ["--set", "step=0.001", "--schedule", "constant"]  # minutes if it ran
    t0 = time.monotonic()
    one_error_line(cli("run", "sparse-regression", *long_run, "--plot", "/proc/f.png"),
                   "not writable")
    assert time.monotonic() - t0 < 60
    cases = [
        (["run", "sparse-regression", *long_run, "--plot", blocker / "f.png"], "not a folder"),
        (["run", "sparse-regression", *long_run, "--plot", tmp_path / "f.xyz"], "unknown format"),
        (["run", "sparse-regression", *long_run, "--plot", tmp_path], "it is a folder"),
        (["effects", "uv", "--out", blocker / "e.png"], "not a folder"),
        (["effects", "uv", "--out", "/proc/e.png"], "not writable"),
        (["reproduce", "--quick", "--out", blocker / "rep"], "not a folder"),
        (["reproduce", "--quick", "--out", "/proc/rep"], "not writable"),
    ]
    for args, needle in cases:
        one_error_line(cli_here(*args), needle)
    spec = write_spec(tmp_path / "s.toml")
    one_error_line(cli("sweep", spec, "--db", "/proc/r.sqlite"), "not writable")
    one_error_line(cli_here("sweep", spec, "--db", blocker / "r.sqlite"), "does not exist")
    db = tmp_path / "ok.sqlite"
    assert cli_here("sweep", spec, "--db", db, "--workers", "1").returncode == 0
    one_error_line(cli("report", db, "--out", "/proc/rep"), "not writable")
    one_error_line(cli_here("report", db, "--out", spec), "is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "ok.curves", "ok.sqlite",
                                                          "s.toml"]


def test_damaged_and_foreign_files_are_one_line(tmp_path):
    """Item 9: a store with a corrupt page, a store of an older layout with an orphan .npz, a
    non-UTF-8 spec, a Dask address that is not a scheduler's: one line, exit 2."""
    db = tmp_path / "big.sqlite"
    with ResultStore(db) as store:
        for i in range(300):
            store.write(RunRecord(run_id=f"r{i}", experiment="toy", config={"seed": i},
                                  status="done", metrics={"err": 1.0}, message="x" * 200))
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 6 * page
    data[3 * page:4 * page] = os.urandom(page)  # one page of garbage, as a disk error leaves
    db.write_bytes(bytes(data))
    one_error_line(cli("report", db, "--out", tmp_path / "rep"), "is damaged")
    spec = write_spec(tmp_path / "s.toml")
    one_error_line(cli_here("sweep", spec, "--db", db, "--workers", "1"), "is damaged")

    old = tmp_path / "old.sqlite"  # before schema versioning: no host/runtime_s columns
    with sqlite3.connect(old) as con:
        con.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, experiment TEXT NOT NULL, sweep "
                    "TEXT, version TEXT NOT NULL, config TEXT NOT NULL, status TEXT NOT NULL, "
                    "message TEXT, diverged_step INTEGER, metrics TEXT NOT NULL, curves TEXT)")
        con.execute("INSERT INTO runs VALUES ('a', 'toy', 's', ?, '{\"seed\": 0}', 'done', NULL, "
                    "NULL, '{\"err\": 1.5}', NULL)", (mirrorflow.__version__,))
    (tmp_path / "old.curves").mkdir()
    np.savez(tmp_path / "old.curves" / "orphan.npz", time=np.arange(3.0))
    res = cli("sweep", spec, "--db", old, "--workers", "1")
    assert res.returncode == 0 and "4 done" in res.stdout, res.stdout + res.stderr
    assert cli_here("report", old, "--out", tmp_path / "rep2").returncode == 0

    latin = tmp_path / "latin.toml"
    latin.write_bytes('experiment = "sparse-regression"\nname = "d\u00e9j\u00e0"\n'.encode("latin-1"))
    one_error_line(cli("sweep", latin), "not UTF-8")
    for address in ("http://127.0.0.1:8786", "tcp://no port", "ws://h:1"):
        one_error_line(cli_here("sweep", spec, "--dask", address), "tcp://HOST:PORT")


# ----------------------------------------------------------------------------- item 10
def test_nothing_is_left_behind(tmp_path):
    """Item 10: no empty store after `--batch 0` or an unreachable scheduler; `report` leaves
    a 0-byte file as it was; a `--plot` path without suffix is refused, not renamed."""
    spec = write_spec(tmp_path / "s.toml")
    one_error_line(cli_here("sweep", spec, "--batch", "0"), "--batch must be >= 1")
    one_error_line(cli("sweep", spec, "--dask", "tcp://127.0.0.1:9"), "cannot reach Dask")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    one_error_line(cli_here("report", empty, "--out", tmp_path / "rep"), "empty file")
    assert empty.stat().st_size == 0
    one_error_line(cli_here("run", "sparse-regression", "--plot", tmp_path / "fig"),
                   "unknown format")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite", "s.toml"]


#: test-only hook (loaded through sitecustomize in the report's process): once the report has
#: written into its temporary folder, mark it and hold there, so the test kills it mid-write
#: every time instead of trying to catch a moment (issue 28: no timing guess)
_HOLD_REPORT = """
import os, time
import mirrorflow.report.report as _report
_write_runs_csv = _report._write_runs_csv
def _held(path, rows):
    _write_runs_csv(path, rows)
    open(os.environ["MF_HOLD_MARK"], "w").close()
    time.sleep(600)
_report._write_runs_csv = _held
"""


def test_a_killed_report_leaves_no_temporary_folder_after_the_next(tmp_path):
    """Item 10: `kill -9` of `report` while it writes leaves a hidden temporary folder; the
    next report removes it (its process is gone) and leaves none of its own."""
    spec = parse_spec({"experiment": "sparse-regression", "base": {
        "n": 10, "d": 20, "sparsity": 2, "step": 0.05, "tail": "gd", "t_max": 20.0},
        "grid": {"seed": [0, 1, 2]}, "zip": {"schedule": ["none", "constant"]}})
    db = tmp_path / "s.sqlite"
    with ResultStore(db) as store:
        assert run_sweep(spec, store, LocalExecutor(workers=1)).done == 6
    out = tmp_path / "rep"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_HOLD_REPORT)
    mark = tmp_path / "held"
    env = dict(os.environ, MF_HOLD_MARK=str(mark), PYTHONPATH=os.pathsep.join(
        [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen([sys.executable, "-m", "mirrorflow.cli", "report", str(db),
                             "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    try:
        assert wait_for(lambda: mark.exists() or proc.poll() is not None, timeout=300)
        assert mark.exists(), proc.stderr.read() if proc.poll() is not None else ""
    finally:
        proc.kill()
        proc.communicate()
    left = list(tmp_path.glob(".rep.tmp-*"))
    assert len(left) == 1 and (left[0] / "runs.csv").is_file()  # killed mid-write
    assert not out.exists()  # nothing half-written where the report goes
    assert cli("report", db, "--out", out).returncode == 0
    assert not list(tmp_path.glob(".rep*")) and (out / "report.md").is_file()


# ----------------------------------------------------------------------------- item 11
def test_messages_keep_brackets_and_parse_errors_are_one_line(tmp_path):
    """Item 11: `[base]`, `[grid]`, `[[case]]` survive in messages; typer's usage errors are
    one line with exit 2; `tol=inf`, `seed=[true]` are refused; no message ends in
    ArgsKwargs(...)."""
    spec = tmp_path / "twice.toml"
    spec.write_text('experiment = "sparse-regression"\n[base]\nwd = 0.1\n[grid]\nwd = [0.2]\n')
    one_error_line(cli("sweep", spec), "appears in both [base] and [grid]")
    spec.write_text('experiment = "sparse-regression"\ncase = 3\n')
    one_error_line(cli_here("sweep", spec), "'case' must be an array of tables ([[case]] ...)")
    one_error_line(cli("run", "sparse-regression", "--bogus"), "No such option: --bogus")
    one_error_line(cli_here("run", "sparse-regression", "--wd", "abc"),
                   "Invalid value for '--wd'")
    one_error_line(cli_here("run", "sparse-regression", "--set", "tol=inf"),
                   "tol: Input should be a finite number")
    spec.write_text('experiment = "sparse-regression"\n[grid]\nseed = [true]\n')
    one_error_line(cli_here("sweep", spec), "boolean true")
    for name in sorted(REGISTRY):  # model-level errors of every experiment, in one line
        exp = get_experiment(name)
        for bad in ({"schedule": "budget"}, {"seed": True}, {"wd": float("nan")}):
            with pytest.raises(MirrorflowError) as err:
                exp.make_config(bad)
            assert "ArgsKwargs" not in str(err.value) and "\n" not in str(err.value)


def test_effects_with_a_too_large_a_names_the_real_cause():
    """Item 11: `effects --a 400`: e^(-2a) underflows float64; the message says so (not a
    domain error about signs)."""
    line = one_error_line(cli("effects", "uv", "--a", "400"), "too large to compute")
    assert "e^(-2a)" in line and "a <= 300" in line
    ok = cli_here("effects", "uv", "--a", "300", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["rows"][0]["a"] == 300.0
