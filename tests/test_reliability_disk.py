"""A full disk and I/O errors (issue 24, item 2): the store's commit order leaves no orphan
curves file, the CLI says in one line what was stored and how to resume, and nothing empty is
left behind. The full disk is a real one for the process: ``RLIMIT_FSIZE`` (what
``prlimit --fsize=N`` sets) makes every write past N bytes fail with EFBIG; Python ignores the
SIGXFSZ that comes with it, so the write raises."""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np

from mirrorflow.sweep import ResultStore, RunRecord
from reliability_helpers import cli, cli_here, one_error_line

SEEDS = 20
SPEC = ('experiment = "sparse-regression"\n[base]\nn = 10\nd = 20\nsparsity = 2\nstep = 0.05\n'
        'tail = "gd"\nt_max = 20.0\n[grid]\nseed = ' + str(list(range(SEEDS))) + "\n")


def _fsize(n: int):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    return limit


def _files_and_rows(db: Path) -> tuple[set[str], dict[str, str | None]]:
    curves = db.with_suffix(".curves")
    files = {p.name for p in curves.iterdir()} if curves.is_dir() else set()
    with sqlite3.connect(db) as con:
        rows = dict(con.execute("SELECT id, curves FROM runs").fetchall())
    return files, rows


def test_a_disk_that_fills_mid_sweep_gives_one_line_and_no_orphan_curves(tmp_path):
    """16 KiB of file size: some runs are stored, then a write fails (the database page or the
    curves file). Before: a 49-line traceback, and a curves file whose row was rolled back."""
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    db = tmp_path / "r.sqlite"
    proc = cli("sweep", spec, "--db", db, "--workers", 1, "--batch", 1,
               preexec_fn=_fsize(16384))
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write run "), proc.stderr
    files, rows = _files_and_rows(db)
    assert 0 < len(rows) < SEEDS
    assert f"{len(rows)} of {SEEDS} runs have a result in {db}" in lines[0]
    assert "free space" in lines[0] and f"mirrorflow sweep {spec}" in lines[0]
    # every curves file belongs to a committed row and every row's file is there, complete
    assert files == {c for c in rows.values() if c}, (files, rows)
    for name in files:
        with np.load(db.with_suffix(".curves") / name) as data:
            assert "time" in data.files or data.files
    # the resume the line names finishes the sweep: each seed once
    again = cli_here("sweep", spec, "--db", db, "--workers", 1, "--batch", 1)
    assert again.returncode == 0, again.stderr
    files, rows = _files_and_rows(db)
    assert len(rows) == SEEDS and files == {c for c in rows.values() if c}


def test_a_disk_too_full_for_the_first_page_is_exit_2_and_leaves_no_file(tmp_path):
    """4 KiB: the store cannot even be created. Before: 'check its permissions' and a 0-byte
    store left behind."""
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    db = tmp_path / "r.sqlite"
    proc = cli("sweep", spec, "--db", db, "--workers", 1, preexec_fn=_fsize(4096))
    line = one_error_line(proc, "free space")
    assert "disk I/O error" in line or "full" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_an_existing_empty_file_is_not_used_as_a_new_store(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    db = tmp_path / "r.sqlite"
    db.write_bytes(b"")
    one_error_line(cli_here("sweep", spec, "--db", db, "--workers", 1), "is an empty file")
    assert db.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.sqlite", "s.toml"]


CRASH_AFTER_COMMIT = r'''
import os, sys
import numpy as np
from mirrorflow.sweep import ResultStore, RunRecord
real_replace = os.replace
def crash(src, dst):
    if str(dst).endswith(".npz"):
        os._exit(9)  # killed right after the COMMIT, before the curves are in place
    return real_replace(src, dst)
os.replace = crash
store = ResultStore(sys.argv[1])
store.write(RunRecord(run_id="r1", experiment="x", config={}, status="done"),
            {"time": np.arange(5.0)})
'''


def test_a_crash_between_commit_and_rename_is_repaired_at_the_next_opening(tmp_path):
    """The row is committed before its curves file is renamed into place; a process killed in
    between leaves the complete temporary file, which the next opening for writing puts in
    place (reading never writes: a report sees the run without curves meanwhile)."""
    db = tmp_path / "r.sqlite"
    with ResultStore(db) as store:
        store.write(RunRecord(run_id="r0", experiment="x", config={}, status="done"),
                    {"time": np.arange(2.0)})
    proc = subprocess.run([sys.executable, "-c", CRASH_AFTER_COMMIT, str(db)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    curves = tmp_path / "r.curves"
    assert not (curves / "r1.npz").exists() and len(list(curves.glob(".r1.npz.*.tmp"))) == 1
    with ResultStore(db, create=False) as store:
        assert store.load_curves(next(r for r in store.records() if r.run_id == "r1")) == {}
    assert not (curves / "r1.npz").exists()
    with ResultStore(db) as store:
        rec = next(r for r in store.records() if r.run_id == "r1")
        np.testing.assert_array_equal(store.load_curves(rec)["time"], np.arange(5.0))
    assert sorted(p.name for p in curves.iterdir()) == ["r0.npz", "r1.npz"]


def test_curves_files_get_the_mode_of_the_store(tmp_path):
    """Before: curves files were 0600 (mkstemp's mode) whatever the store's mode."""
    db = tmp_path / "r.sqlite"
    for mode in (0o644, 0o640, 0o600, 0o664):
        with ResultStore(db) as store:
            os.chmod(db, mode)
            store.write(RunRecord(run_id=f"m{mode:o}", experiment="x", config={}, status="done"),
                        {"time": np.arange(2.0)})
        assert (tmp_path / "r.curves" / f"m{mode:o}.npz").stat().st_mode & 0o777 == mode
