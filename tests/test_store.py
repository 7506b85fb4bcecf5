"""The SQLite results store: round trips, one row per id, transactions that leave no half row."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import replace

import numpy as np
import pytest

from mirrorflow import MirrorflowError
from mirrorflow.sweep import ResultStore, RunRecord


def _rec(rid, status="done", **metrics):
    return RunRecord(run_id=rid, experiment="toy", config={"seed": 1, "wd": 0.5},
                     status=status, metrics=metrics, sweep="s", version="v",
                     runtime_s=0.25, started_at=10.0, finished_at=10.5)


def test_round_trip_of_row_and_curves(tmp_path):
    rng = np.random.default_rng(0)
    curves = {"time": np.linspace(0, 1, 7), "x_final": rng.normal(size=(3, 4)),
              "steps": np.arange(5)}
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.write(_rec("a1", err=0.125, n=3, bad=float("nan"), inf=-math.inf), curves)
    # reopen (as the report does) and read back with plain sqlite3 as well
    with ResultStore(tmp_path / "r.sqlite", create=False) as store:
        (rec,) = store.records()
        assert rec.metrics == {"err": 0.125, "n": 3, "bad": None, "inf": None}
        assert rec.config == {"seed": 1, "wd": 0.5} and rec.status == "done"
        back = store.load_curves(rec)
    assert set(back) == set(curves)
    for k in curves:
        np.testing.assert_array_equal(back[k], curves[k])
        assert back[k].dtype == curves[k].dtype
    assert (tmp_path / "r.curves" / "a1.npz").is_file()
    with sqlite3.connect(tmp_path / "r.sqlite") as con:
        assert con.execute("SELECT id, status, runtime_s FROM runs").fetchall() == [("a1", "done", 0.25)]


def test_rewriting_an_id_replaces_the_row(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.write(_rec("a1", "failed"))
        store.write(_rec("b2", "diverged"))
        store.write(_rec("a1", "done", err=1.0))
        assert store.count() == 2
        assert store.ids(["done"]) == {"a1"} and store.ids(["diverged", "failed"]) == {"b2"}


def test_a_write_that_fails_mid_transaction_leaves_no_row(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.write(_rec("ok"))
    # a trigger makes the INSERT of id 'boom' fail inside the transaction
    with sqlite3.connect(path) as con:
        con.execute("CREATE TRIGGER t BEFORE INSERT ON runs WHEN NEW.id = 'boom' "
                    "BEGIN SELECT RAISE(ABORT, 'forced failure'); END")
    with ResultStore(path) as store:
        with pytest.raises(sqlite3.IntegrityError, match="forced failure"):
            store.write(_rec("boom", err=2.0))
        store.write(_rec("after"))  # the connection is usable again: no transaction left open
    with sqlite3.connect(path) as con:
        assert sorted(r[0] for r in con.execute("SELECT id FROM runs")) == ["after", "ok"]


def test_bad_paths_and_files_are_one_line_errors(tmp_path):
    with pytest.raises(MirrorflowError, match="does not exist"):
        ResultStore(tmp_path / "missing" / "r.sqlite")
    with pytest.raises(MirrorflowError, match="does not exist"):
        ResultStore(tmp_path / "r.sqlite", create=False)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, just text " * 100)
    with pytest.raises(MirrorflowError, match="not a SQLite database"):
        ResultStore(junk)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE t (x)")
    with pytest.raises(MirrorflowError, match="no 'runs' table"):
        ResultStore(other)
    with ResultStore(tmp_path / "r.sqlite") as store, pytest.raises(MirrorflowError, match="status"):
        store.write(_rec("x", status="running"))


def test_reads_by_status_experiment_and_order_and_a_bad_status_is_refused(tmp_path):
    """Mutations D4-D9 (issue 28): statuses() of more ids than one query takes (500 a query:
    the ids at the chunk edges), records() in insertion order and by experiment, an unknown
    status refused with one line, object arrays left out of the curves file (no pickle)."""
    ids = [f"id{i:04d}" for i in range(1001)]
    stored = {ids[0]: "done", ids[499]: "failed", ids[500]: "diverged", ids[999]: "done",
              ids[1000]: "failed"}
    with ResultStore(tmp_path / "r.sqlite") as store:
        for rid in reversed(sorted(stored)):  # written in reverse id order
            store.write(_rec(rid, stored[rid]))
        store.write(replace(_rec("other", "done"), experiment="other-exp"))
        assert store.statuses(ids) == stored
        assert [r.run_id for r in store.records()] == [*reversed(sorted(stored)), "other"]
        assert [r.run_id for r in store.records("other-exp")] == ["other"]
        assert len(store.records("toy")) == 5
        with pytest.raises(MirrorflowError, match="status must be one of done, diverged, failed"):
            store.write(_rec("x", "running"))
        assert store.count() == 6
        assert store.write(_rec("c", "done"), {"t": np.arange(3.0), "tags": np.array([{"a": 1}])})
        (c,) = [r for r in store.records() if r.run_id == "c"]
        back = store.load_curves(c)  # np.load with allow_pickle=False: no object arrays
    assert set(back) == {"t"}
    np.testing.assert_array_equal(back["t"], np.arange(3.0))
