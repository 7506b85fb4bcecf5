"""Reliability with real processes (issue 15, items 1, 2, 4, 8, 11): concurrent sweeps sharing a
store, killed workers, killed and interrupted CLIs, runs that never stop. docs/reliability.md
names each guarantee with its test here."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest

from mirrorflow._core.limits import DEFAULT_LIMITS
from mirrorflow.sweep import LocalExecutor, ResultStore, load_spec, parse_spec, run_sweep
from reliability_helpers import (
    alive,
    cli,
    gate_started,
    kill_tree,
    open_gate,
    plugin_env,
    rows,
    start_cli,
    wait_for,
    workers_of,
    write_spec,
)


def _history(db):
    """Every write of the store as (id, status), in order: an AFTER INSERT trigger logs them
    (the store writes with INSERT OR REPLACE, so each write is an insert)."""
    with ResultStore(db):
        pass  # the schema
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE history (n INTEGER PRIMARY KEY, id TEXT, status TEXT)")
        con.execute("CREATE TRIGGER log AFTER INSERT ON runs BEGIN "
                    "INSERT INTO history (id, status) VALUES (NEW.id, NEW.status); END")


@pytest.mark.slow  # two CLIs and three worker processes: about a minute on 2 busy cores
def test_concurrent_sweeps_and_a_killed_worker_never_replace_a_done_row(tmp_path):
    """Items 1 and 2: sweep A and sweep B (another name, same runs) share one store; one of B's
    worker processes is killed with SIGKILL mid-task. No `done` row is ever written over, B
    reruns the killed task instead of failing it, and both end with every run done."""
    spec_a = write_spec(tmp_path / "a.toml", seeds=range(6), t_max=150.0)
    spec_b = tmp_path / "b.toml"
    spec_b.write_text(spec_a.read_text())  # same runs, another sweep name ("b")
    db = tmp_path / "shared.sqlite"
    _history(db)
    a = start_cli("sweep", spec_a, "--db", db, "--workers", "1", "--batch", "1")
    b = start_cli("sweep", spec_b, "--db", db, "--workers", "2", "--batch", "1")
    try:
        assert wait_for(lambda: len(rows(db)) >= 2 and len(workers_of(b.pid)) == 2)
        victim = workers_of(b.pid)[0]
        os.kill(victim, signal.SIGKILL)
        out_a, err_a = a.communicate(timeout=300)
        out_b, err_b = b.communicate(timeout=300)
    finally:
        kill_tree(a)
        kill_tree(b)
    assert a.returncode == 0 and b.returncode == 0, (out_a, err_a, out_b, err_b)
    assert "Traceback" not in err_a + err_b
    n = len(load_spec(spec_a).runs)
    stored = rows(db)
    assert len(stored) == n and {s for _, s, _ in stored} == {"done"}
    with sqlite3.connect(db) as con:
        history = con.execute("SELECT id, status FROM history ORDER BY n").fetchall()
    assert len(history) >= n
    for rid, status in history:  # not once was a run written as anything but done
        assert status == "done", f"{rid} was written as {status}"
    with ResultStore(db, create=False) as store:  # every row has its curves file
        for rec in store.records():
            assert len(store.load_curves(rec)["time"]) > 2


def test_a_run_that_kills_its_worker_is_failed_with_the_reason_and_the_rerun_says_so(tmp_path):
    """Item 2: a run whose worker dies every time is stored as failed after 2 tries, with the
    reason; the others are done; the rerun exits 1 and says that stored runs failed."""
    env = plugin_env(tmp_path / "plugin")
    spec = tmp_path / "k.toml"
    spec.write_text('experiment = "toy"\n[base]\nschedule = "none"\n'
                    '[zip]\nseed = [0, 1, 2]\naction = ["ok", "kill", "ok"]\n')
    db = tmp_path / "k.sqlite"
    first = cli("sweep", spec, "--db", db, "--workers", "2", env=env)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Traceback" not in first.stderr
    by_status = {}
    for _, status, message in rows(db):
        by_status.setdefault(status, []).append(message)
    assert len(by_status["done"]) == 2 and len(by_status["failed"]) == 1
    assert "died each of the 2 times" in by_status["failed"][0]
    assert "SIGKILL" in by_status["failed"][0]
    again = cli("sweep", spec, "--db", db, "--workers", "2", env=env)
    assert again.returncode == 1  # not hidden behind "already stored", exit 0
    assert "3 already stored (1 of them failed: --retry-failed runs them again)" in again.stdout


def test_a_task_stuck_past_its_limit_has_its_worker_killed(tmp_path, monkeypatch):
    """Item 4: a run stuck where the cooperative deadline check cannot see it (here: a sleep)
    is stopped by killing its worker after limit + grace, stored as failed `stopped:`; the
    sweep goes on and ends."""
    env = plugin_env(tmp_path / "plugin")
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])  # the spawned workers see the plugin
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    from mirrorflow.experiments import REGISTRY

    monkeypatch.setitem(REGISTRY._lazy, "toy", "mf_toy")
    monkeypatch.setitem(REGISTRY, "toy", None)
    spec = parse_spec({"experiment": "toy", "base": {"schedule": "none"},
                       "zip": {"seed": [0, 1], "action": ["ok", "sleep"]}})
    limits = DEFAULT_LIMITS.with_overrides(max_seconds=2)
    t0 = time.monotonic()
    with ResultStore(tmp_path / "s.sqlite") as store:
        summary = run_sweep(spec, store, LocalExecutor(workers=2, kill_grace_s=1.0),
                            limits=limits)
        recs = {r.config["action"]: r for r in store.records()}
    assert time.monotonic() - t0 < 120
    assert (summary.done, summary.failed) == (1, 1)
    assert recs["ok"].status == "done"
    assert recs["sleep"].status == "failed"
    assert recs["sleep"].message.startswith("stopped:") and "worker was killed" in \
        recs["sleep"].message


def test_workers_die_with_a_killed_cli(tmp_path):
    """Item 8: `kill -9` of the CLI leaves no worker process running."""
    spec = write_spec(tmp_path / "w.toml", seeds=range(8), t_max=150.0)
    proc = start_cli("sweep", spec, "--workers", "2", "--batch", "1", new_session=True)
    try:
        assert wait_for(lambda: len(workers_of(proc.pid)) == 2)
        assert wait_for(lambda: len(rows(spec.with_suffix(".sqlite"))) >= 1)
        workers = workers_of(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert wait_for(lambda: not any(alive(w) for w in workers), timeout=10), \
            [w for w in workers if alive(w)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("workers", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_ctrl_c_says_what_is_stored_and_how_to_resume(tmp_path, workers):
    """Item 11: Ctrl-C (SIGINT to the process group, as a terminal sends it) ends the sweep
    with exit 130 and one line: how many runs are stored, the command that resumes; no worker
    is left behind; running that command finishes the sweep.

    Race-free (issue 28): the middle run is a toy run held at a gate until the test opens it,
    so the sweep cannot finish before the SIGINT, however slow or loaded the machine."""
    env = plugin_env(tmp_path / "plugin")
    spec = tmp_path / "c.toml"
    spec.write_text('experiment = "toy"\n[base]\nschedule = "none"\n'
                    '[zip]\nseed = [0, 1, 2]\naction = ["ok", "gate", "ok"]\n')
    db = spec.with_suffix(".sqlite")
    proc = start_cli("sweep", spec, "--workers", workers, "--batch", "1", new_session=True,
                     env=env)
    try:
        assert wait_for(lambda: gate_started(env) and len(rows(db)) >= 1), proc.poll()
        workers_before = workers_of(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), err
    stored = len(rows(db))
    if workers == "1":  # one at a time, in order: run 0 stored, run 1 at the gate, run 2 not begun
        assert stored == 1
    assert 1 <= stored <= 2
    assert f"{stored} of 3 runs have a result in {db}" in lines[0]
    assert f"mirrorflow sweep {spec}" in lines[0] and "again to resume" in lines[0]
    assert wait_for(lambda: not any(alive(w) for w in workers_before), timeout=10)
    open_gate(env)
    done = cli("sweep", spec, "--workers", "1", "--batch", "1", env=env)
    assert done.returncode == 0 and f"{stored} already stored" in done.stdout, done.stdout
    assert len(rows(db)) == 3 and {s for _, s, _ in rows(db)} == {"done"}


@pytest.mark.slow  # a Dask scheduler and worker, twice: about a minute
def test_dask_scheduler_lost_midway_leaves_runs_unstored_not_failed(tmp_path):
    """Item 2 on Dask: a real `dask scheduler` and `dask worker`; the scheduler is killed with
    SIGKILL mid-sweep. The runs not finished are left unstored (not `failed`), the CLI says
    so and exits 1; the same command against a new scheduler finishes them."""
    import socket
    import subprocess

    def dask_cluster():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        addr = f"tcp://127.0.0.1:{port}"
        sched = subprocess.Popen(["dask", "scheduler", "--host", "127.0.0.1", "--port",
                                  str(port), "--no-dashboard"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        work = subprocess.Popen(["dask", "worker", addr, "--nthreads", "1", "--host",
                                 "127.0.0.1", "--no-dashboard"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        return addr, sched, work

    spec = write_spec(tmp_path / "d.toml", seeds=range(6), t_max=150.0)
    db = spec.with_suffix(".sqlite")
    addr, sched, work = dask_cluster()
    try:
        proc = start_cli("sweep", spec, "--dask", addr, "--batch", "1")
        assert wait_for(lambda: len(rows(db)) >= 1, timeout=180)
        os.killpg(sched.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        for p in (sched, work):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err
    stored = rows(db)
    assert stored and {s for _, s, _ in stored} == {"done"}
    assert f"{12 - len(stored)} not run" in out and "run the same command again" in out
    addr, sched, work = dask_cluster()
    try:
        again = cli("sweep", spec, "--dask", addr, "--batch", "1", timeout=300)
    finally:
        for p in (sched, work):
            os.killpg(p.pid, signal.SIGKILL)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(rows(db)) == 12 and {s for _, s, _ in rows(db)} == {"done"}
