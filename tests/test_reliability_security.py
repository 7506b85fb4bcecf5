"""Untrusted results stores (issue 24, item 1): every curves path read from a store stays inside
its curves folder, and a read-only command (`mirrorflow report`) never writes or migrates the
store. Real CLI processes, real SQLite files, a real file outside the store as the victim."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from mirrorflow._core.validation import MirrorflowError
from mirrorflow.sweep import ResultStore
from mirrorflow.sweep.store import _SCHEMA
from reliability_helpers import cli, cli_here, one_error_line

# a row of mirrorflow 0.1 (schema 1) that the v1 -> v2 migration renames (attention teacher)
OLD_ATTENTION = {"batch_size": 128, "budget": None, "compare": False, "dataset": "digits",
                 "depth": 2, "dim": 8, "eval_every": 50, "heads": 2, "init_scale": 1.0,
                 "lr": 0.002, "max_samples": None, "n_test": 500, "n_train": 12, "patch_size": 2,
                 "schedule": "switch-off", "seed": 0, "setting": "teacher", "step": 0.5,
                 "steps": 600, "switch_at": None, "t_max": 300.0, "teacher_norm": 4.0,
                 "teacher_rank": 1, "tokens": 8, "val_fraction": 0.25, "wd": None}
RID = "9185533889f8e134"


def _v1_store(path: Path, curves) -> None:
    conn = sqlite3.connect(path)
    conn.execute(_SCHEMA)
    conn.execute("INSERT INTO runs (id, experiment, version, config, status, metrics, curves) "
                 "VALUES (?, 'attention', '0.1.0', ?, 'done', '{\"test_loss\": 0.5}', ?)",
                 (RID, json.dumps(OLD_ATTENTION), curves))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links not followed) with the sha256 of its bytes."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = "link->" + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _setup(tmp_path: Path, curves: str | None) -> tuple[Path, Path, Path]:
    store_dir = tmp_path / "a" / "b"
    store_dir.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("precious\n")
    db = store_dir / "r.sqlite"
    (store_dir / "r.curves").mkdir()
    _v1_store(db, curves)
    return db, victim, store_dir


def test_the_victim_file_attack_leaves_victim_and_store_untouched(tmp_path):
    """The attack of the issue: `report` on a schema-1 store whose curves column is
    `../../outside/victim.txt` used to move the victim into the store (copy, then unlink)."""
    db, victim, store_dir = _setup(tmp_path, "../../outside/victim.txt")
    before = _tree(tmp_path)
    line = one_error_line(cli("report", db, "--out", tmp_path / "rep"), "is refused")
    assert "../../outside/victim.txt" in line and "nothing was read or changed" in line
    assert victim.read_text() == "precious\n"
    assert _tree(tmp_path) == before  # store byte-identical, no report folder, nothing moved
    # a write command (sweep / reproduce open stores for writing) refuses it the same way
    with pytest.raises(MirrorflowError, match="is refused"):
        ResultStore(db)
    assert _tree(tmp_path) == before


BAD_NAMES = ["../../outside/victim.txt", "..", "../r.sqlite", "/etc/passwd", "sub/x.npz",
             "x.npz/../../../outside/victim.txt", "..npz", "\u2024\u2024/x.npz", "x.npz\n",
             "C:\\x.npz", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_every_curves_name_that_leaves_the_folder_is_refused(tmp_path, name):
    db, victim, _ = _setup(tmp_path, name)
    before = _tree(tmp_path)
    one_error_line(cli_here("report", db, "--out", tmp_path / "rep"), "is refused")
    with pytest.raises(MirrorflowError, match="is refused"):
        ResultStore(db)
    assert victim.read_text() == "precious\n" and _tree(tmp_path) == before


def test_a_curves_file_that_is_a_symlink_out_of_the_folder_is_refused(tmp_path):
    """A plain name whose file is a symlink to the victim: neither read (report) nor moved
    (a write command's migration)."""
    db, victim, store_dir = _setup(tmp_path, f"{RID}.npz")
    (store_dir / "r.curves" / f"{RID}.npz").symlink_to(victim)
    before = _tree(tmp_path)
    with pytest.raises(MirrorflowError, match="is refused"):
        ResultStore(db)  # write mode: the migration would copy, then unlink it
    with ResultStore(db, create=False) as store:  # read mode: the rows open; the file is refused
        (rec,) = store.records()
        with pytest.raises(MirrorflowError, match="is refused"):
            store.load_curves(rec)
    assert victim.read_text() == "precious\n" and _tree(tmp_path) == before


def test_report_on_an_old_store_migrates_in_memory_and_writes_nothing(tmp_path):
    """A valid schema-1 store: `report` reads it migrated (the attention teacher row of 0.1 is
    today's `attention` run with its curves) and leaves the file and its curves as they were;
    the first write command migrates the file itself."""
    db, _, store_dir = _setup(tmp_path, f"{RID}.npz")
    np.savez(store_dir / "r.curves" / f"{RID}.npz", time=np.arange(4.0))
    before = _tree(store_dir)
    mode_before = db.stat().st_mode
    with ResultStore(db, create=False) as store:
        (rec,) = store.records()
        assert rec.run_id != RID and "setting" not in rec.config  # migrated (in memory)
        np.testing.assert_array_equal(store.load_curves(rec)["time"], np.arange(4.0))
        with pytest.raises(MirrorflowError, match="opened for reading"):
            store.write(rec)
    proc = cli_here("report", db, "--out", tmp_path / "rep")
    assert proc.returncode == 0, proc.stderr
    assert _tree(store_dir) == before and db.stat().st_mode == mode_before
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 1
    with ResultStore(db) as store:  # a write command: migrated in place
        (rec2,) = store.records()
        assert rec2.run_id == rec.run_id and rec2.curves_file == f"{rec.run_id}.npz"
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 2
    assert sorted(p.name for p in (store_dir / "r.curves").iterdir()) == [f"{rec.run_id}.npz"]
