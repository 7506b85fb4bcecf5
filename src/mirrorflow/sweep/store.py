"""The results store: one SQLite file (stdlib, embedded) plus a folder of ``.npz`` curves.

Table ``runs`` has one row per finished run::

    id TEXT PRIMARY KEY        stable run id (see :func:`mirrorflow.sweep.spec.run_id`)
    experiment, sweep, version experiment name, sweep name, mirrorflow version
    config TEXT                full config as JSON
    status TEXT                'done' | 'diverged' | 'failed'
    message TEXT               error message of a failed run, note on a diverged one
    diverged_step INTEGER      step at which NaN/inf appeared (when known)
    metrics TEXT               scalar metrics as JSON (NaN/inf stored as null)
    curves TEXT                file name of the run's curves in the curves folder, or NULL
    started_at, finished_at    wall-clock (unix seconds) of the task that ran it
    runtime_s                  seconds per run, host

The curves of ``results.sqlite`` live in ``results.curves/<id>.npz``. A run's curves are
written to a temporary file first, then its row is committed in one SQLite transaction, and
only then is the file renamed into place: a failed or rolled-back commit (a full disk, an I/O
error) leaves no curves file behind, and a crash between the commit and the rename leaves a
complete temporary file that the next opening for writing puts in place
(:meth:`ResultStore._repair_curves`). Only finished runs are written, so a killed sweep leaves
no half-finished rows behind. Curves files get the permission bits of the store file.

**Untrusted stores** (docs/reliability.md): every curves name read from a store must be a plain
file name (``[A-Za-z0-9_.-]``, no ``..``, no separator) that resolves inside the store's curves
folder (a symlink out of it is refused); otherwise the store is refused with one line before
anything is read or written. Opening for reading (``create=False``: ``mirrorflow report``)
never writes: the SQLite file is opened read-only, and an old layout is migrated in a copy in
memory; only a command that writes (``sweep``, ``reproduce``) migrates the file itself.

A result is never lost to a later write (docs/reliability.md): inside the write transaction
the stored row is read, and a ``done`` or ``diverged`` row is kept — whatever another sweep or
process wrote since this one started. Only a missing row or a ``failed`` one is (re)written.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mirrorflow._core.jsonable import jsonable
from mirrorflow._core.validation import MirrorflowError, check_writable_folder

__all__ = ["STATUSES", "ResultStore", "RunRecord", "StoreWriteError", "jsonable"]

STATUSES = ("done", "diverged", "failed")
#: Statuses that are results: a row with one of them is never replaced.
FINAL = ("done", "diverged")
#: 1: mirrorflow 0.1 (attention teacher and ViT in one experiment, LoRA ``switch_at`` in steps);
#: 2: configs of today's experiments (:meth:`ResultStore._migrate_v1`).
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    sweep TEXT,
    version TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'diverged', 'failed')),
    message TEXT,
    diverged_step INTEGER,
    metrics TEXT NOT NULL,
    curves TEXT,
    started_at REAL,
    finished_at REAL,
    runtime_s REAL,
    host TEXT
)
"""
_COLUMNS = ("id", "experiment", "sweep", "version", "config", "status", "message",
            "diverged_step", "metrics", "curves", "started_at", "finished_at", "runtime_s", "host")


#: What a curves name read from a store may look like: a plain file name in the curves folder.
_CURVES_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\.npz")
#: Temporary curves files older than this are a killed writer's leftovers (removed at opening).
_STALE_TMP_S = 24 * 3600.0


class StoreWriteError(MirrorflowError):
    """The store could not take a write: a full disk, a file-size limit, an I/O error, a lock
    held too long. One line naming the store and the cause; nothing of the run was kept."""


@dataclass(frozen=True)
class RunRecord:
    """One row of the store."""

    run_id: str
    experiment: str
    config: dict[str, Any]
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    sweep: str | None = None
    version: str = ""
    message: str | None = None
    diverged_step: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    runtime_s: float | None = None
    host: str | None = None
    curves_file: str | None = None


class ResultStore:
    """A results database: ``with ResultStore(path) as store: store.write(record, curves)``.

    The connection is owned by the one process that writes (the sweep's single writer).
    """

    def __init__(self, path: str | Path, *, create: bool = True):
        """Open (``create=True``: for writing, created when missing) a results database.

        Every problem is a one-line :class:`MirrorflowError` before anything is written: a
        missing or unwritable folder, a file that is not a mirrorflow results database (an
        empty file is not one, and is left as it is when ``create=False``), a damaged file.
        """
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise MirrorflowError(f"cannot use {self.path}: folder {self.path.parent} does not "
                                  f"exist; create it first")
        if not create and not self.path.is_file():
            raise MirrorflowError(f"results database {self.path} does not exist; run "
                                  f"`mirrorflow sweep SPEC --db {self.path}` first")
        if self.path.is_dir():
            raise MirrorflowError(f"{self.path} is a folder; pass the path of a .sqlite file")
        if self.path.exists() and not self.path.is_file():
            raise MirrorflowError(f"{self.path} is not a regular file; pass a .sqlite file")
        if not create and self.path.stat().st_size == 0:
            raise MirrorflowError(f"{self.path} is an empty file, not a results database; run "
                                  f"`mirrorflow sweep SPEC --db {self.path}` into it first")
        if create and self.path.is_file() and self.path.stat().st_size == 0:
            raise MirrorflowError(f"{self.path} is an empty file, not a results database; "
                                  f"remove it or pass another path as the results database")
        self.readonly = not create
        existed = self.path.exists()
        self.curves_dir = self.path.with_suffix(".curves")
        if create:  # a sweep writes: find out now, not after the first run has been computed
            check_writable_folder(self.path.parent, what=f"results database {self.path}")
            if self.curves_dir.is_dir():
                check_writable_folder(self.curves_dir, what=f"curves of {self.path}")
            elif self.curves_dir.exists():
                raise MirrorflowError(f"cannot write curves of {self.path}: {self.curves_dir} "
                                      f"is a file, not a folder; move it away")
        self._conn = None
        try:
            if self.readonly:  # reading never writes, not even a journal or a migration
                uri = self.path.resolve().as_uri() + "?mode=ro"
                self._conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
            else:
                self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}
            check = self._conn.execute("PRAGMA quick_check(1)").fetchone()[0] if tables else "ok"
        except sqlite3.DatabaseError as exc:
            self.close()
            if "malformed" in str(exc):
                raise MirrorflowError(self._damaged(exc)) from None
            raise MirrorflowError(f"{self.path} is not a SQLite database ({exc}); "
                                  f"pass a mirrorflow results file") from None
        if check != "ok":
            self.close()
            raise MirrorflowError(self._damaged(check))
        if tables and "runs" not in tables:
            self.close()
            raise MirrorflowError(f"{self.path} is a SQLite file but not a mirrorflow results "
                                  f"database (no 'runs' table)")
        if version > _SCHEMA_VERSION:
            self.close()
            raise MirrorflowError(f"{self.path} was written by a newer mirrorflow (schema "
                                  f"{version}); upgrade mirrorflow")
        if not tables and not create:
            self.close()
            raise MirrorflowError(f"{self.path} holds no results database (no tables); run "
                                  f"`mirrorflow sweep SPEC --db {self.path}` into it first")
        if tables:
            self._check_curves_names()  # before anything is read from or written to disk
        try:
            if not tables:
                with self._transaction():
                    self._conn.execute(_SCHEMA)
                    self._conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            elif version < 2:
                if self.readonly:  # migrate a copy in memory; the file stays as it is
                    mem = sqlite3.connect(":memory:", isolation_level=None)
                    self._conn.backup(mem)
                    self._conn.close()
                    self._conn = mem
                self._add_missing_columns()
                self._migrate_v1()
            elif not self.readonly:
                self._repair_curves()
        except (sqlite3.OperationalError, OSError) as exc:  # read-only place, full disk, I/O
            self.close()
            if not existed:  # leave no (empty) file of our own behind
                for extra in ("", "-journal", "-wal", "-shm"):
                    Path(f"{self.path}{extra}").unlink(missing_ok=True)
            raise MirrorflowError(f"cannot write to {self.path} ({' '.join(str(exc).split())}); "
                                  f"check its permissions and the free space on its disk"
                                  ) from None

    def _check_curves_names(self) -> None:
        """One-line error when a row names a curves file that is not a plain file name in the
        curves folder (``../x``, ``/etc/x``, ``a/b.npz``): such a store is not trusted."""
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(runs)")}
        if "curves" not in have:
            return
        for rid, name in self._conn.execute(
                "SELECT id, curves FROM runs WHERE curves IS NOT NULL"):
            if not (isinstance(name, str) and _CURVES_NAME.fullmatch(name) and ".." not in name):
                self.close()
                raise MirrorflowError(self._untrusted(rid, name))

    def _untrusted(self, rid, name) -> str:
        shown = repr(name)[:120]
        return (f"{self.path} is refused: run {str(rid)[:40]!r} names curves file {shown}, "
                f"which is not a file inside {self.curves_dir}; nothing was read or changed "
                f"(a damaged or untrusted store: recreate it with `mirrorflow sweep`)")

    def _curves_path(self, rid, name: str) -> Path:
        """The path of curves file ``name``, checked to be inside the curves folder (a symlink
        out of it is refused)."""
        if not (_CURVES_NAME.fullmatch(name) and ".." not in name):
            raise MirrorflowError(self._untrusted(rid, name))
        path = self.curves_dir / name
        if path.is_symlink() or not path.resolve().is_relative_to(self.curves_dir.resolve()):
            raise MirrorflowError(self._untrusted(rid, name))
        return path

    def _repair_curves(self) -> None:
        """Put in place the curves of committed rows whose rename did not happen (a crash right
        after the commit): their complete temporary file is next to where the file belongs.
        Temporary files older than a day (killed writers) are removed."""
        if not self.curves_dir.is_dir():
            return
        tmps = list(self.curves_dir.glob(".*.npz.*.tmp"))
        if not tmps:
            return
        by_name: dict[str, list[Path]] = {}
        for t in tmps:
            by_name.setdefault(t.name[1:].split(".npz.", 1)[0] + ".npz", []).append(t)
        rows = self._conn.execute(
            f"SELECT id, curves FROM runs WHERE status IN ('done', 'diverged') AND curves IN "
            f"({', '.join('?' * len(by_name))})", tuple(by_name)).fetchall() if len(by_name) < 900 \
            else self._conn.execute("SELECT id, curves FROM runs WHERE curves IS NOT NULL").fetchall()
        for rid, name in rows:
            final = self._curves_path(rid, name)
            if final.exists():
                continue
            for t in sorted(by_name.get(name, []), key=lambda p: -p.stat().st_mtime):
                try:
                    with np.load(t, allow_pickle=False) as data:
                        data.files  # noqa: B018 - a complete zip has a readable directory
                except (OSError, ValueError, EOFError):
                    continue
                os.replace(t, final)
                break
        now = time.time()
        for t in tmps:
            try:
                if t.exists() and now - t.stat().st_mtime > _STALE_TMP_S:
                    t.unlink()
            except OSError:
                pass

    def _damaged(self, detail) -> str:
        detail = " ".join(str(detail).split())
        return (f"{self.path} is damaged ({detail}); restore it from a backup, or recover "
                f"its rows with `sqlite3 {self.path.name} .recover` into a new file")

    def _add_missing_columns(self) -> None:
        """A store from before schema versioning may lack the optional (nullable) columns of
        ``runs``: add them. Missing required columns make it unusable: a one-line error."""
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(runs)")}
        required = ("id", "experiment", "version", "config", "status", "metrics")
        lost = [c for c in required if c not in have]
        if lost:
            self.close()
            raise MirrorflowError(f"{self.path} has a 'runs' table without column(s) "
                                  f"{', '.join(lost)}: not a mirrorflow results database this "
                                  f"version can read")
        types = {"diverged_step": "INTEGER", "started_at": "REAL", "finished_at": "REAL",
                 "runtime_s": "REAL"}
        missing = [c for c in _COLUMNS if c not in have]
        if missing:
            with self._transaction():
                for c in missing:
                    self._conn.execute(f"ALTER TABLE runs ADD COLUMN {c} {types.get(c, 'TEXT')}")

    def _migrate_v1(self) -> None:
        """Rewrite the rows of a schema-1 store for today's experiments, in one transaction.

        Each experiment with a ``migrate`` function maps its stored configs (e.g. the old
        ``attention`` with ``setting = "vit"`` becomes a ``vit`` run; LoRA's ``switch_at`` step
        becomes a time); the run id is recomputed with the row's own version, so a rerun of the
        same sweep recognises the migrated runs. Curves files are copied to their new names
        before the rows change and the old ones removed after, so a crash at any point leaves a
        consistent store (at worst an orphan ``.npz``). A row whose config no longer validates
        is left as it was.
        """
        from mirrorflow.experiments import REGISTRY, make_config
        from mirrorflow.sweep.spec import config_to_dict, run_id

        rows = self._conn.execute("SELECT id, experiment, version, config, curves FROM runs"
                                  ).fetchall()
        taken = {r[0] for r in rows}
        updates, old_files = [], []
        for rid, exp_name, version, config, curves in rows:
            exp = REGISTRY.get(exp_name) if exp_name in REGISTRY else None
            if exp is None or exp.migrate is None:
                continue
            try:
                new_name, cfg = exp.migrate(json.loads(config))
                new_cfg = config_to_dict(make_config(REGISTRY[new_name].config_cls, cfg,
                                                     stored=True))  # retired fields dropped
            except (MirrorflowError, KeyError, TypeError, ValueError):
                continue
            new_id = run_id(new_name, new_cfg, version=version)
            if new_id != rid and new_id in taken:
                continue  # the same run is already stored under the new id
            new_curves = curves
            if curves and new_id != rid and not self.readonly \
                    and self._curves_path(rid, curves).is_file():
                new_curves = f"{new_id}.npz"  # (read-only: the row keeps naming the old file)
                shutil.copyfile(self._curves_path(rid, curves), self.curves_dir / new_curves)
                old_files.append(self._curves_path(rid, curves))
            taken.add(new_id)
            updates.append((new_id, new_name, json.dumps(new_cfg, sort_keys=True), new_curves, rid))
        with self._transaction():
            self._conn.executemany("UPDATE runs SET id = ?, experiment = ?, config = ?, curves = ? "
                                   "WHERE id = ?", updates)
            self._conn.execute("PRAGMA user_version = 2")
        for f in old_files:  # each checked by _curves_path: inside the curves folder
            f.unlink(missing_ok=True)

    # -- context management ------------------------------------------------------------------
    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _transaction(self):
        conn = self._conn

        class _Tx:
            def __enter__(self_inner):
                conn.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, exc, tb):
                if exc_type is None:
                    try:
                        conn.execute("COMMIT")
                        return False
                    except sqlite3.Error:  # e.g. a full disk at COMMIT: roll back, re-raise
                        if conn.in_transaction:
                            try:
                                conn.execute("ROLLBACK")
                            except sqlite3.Error:
                                pass
                        raise
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                return False

        return _Tx()

    # -- writing -----------------------------------------------------------------------------
    def write(self, record: RunRecord, curves: Mapping[str, Any] | None = None) -> bool:
        """Store one finished run (and its curves) atomically; ``True`` when written.

        A stored ``done`` or ``diverged`` row of the same id is kept (``False``): the decision
        is taken inside the write transaction, so it holds against concurrent writers. A
        ``failed`` row is replaced. The curves go to a temporary file first; it is renamed into
        place only after the row is committed, so a commit that fails leaves no curves file.
        A full disk, a file-size limit or an I/O error raise :class:`StoreWriteError` (one
        line); the run is then not stored.
        """
        if self.readonly:
            raise MirrorflowError(f"{self.path} was opened for reading; open it with "
                                  f"create=True to write")
        if record.status not in STATUSES:
            raise MirrorflowError(f"status must be one of {', '.join(STATUSES)}, "
                                  f"got {record.status!r}")
        curves_file = tmp = None
        row_in = False
        try:
            if curves:
                curves_file = f"{record.run_id}.npz"
                tmp = self._write_npz(self.curves_dir / curves_file, curves, publish=False,
                                      mode=self._file_mode())
            row = (
                record.run_id, record.experiment, record.sweep, record.version,
                json.dumps(jsonable(record.config), sort_keys=True, allow_nan=False),
                record.status, record.message, record.diverged_step,
                json.dumps(jsonable(record.metrics), sort_keys=True, allow_nan=False),
                curves_file, record.started_at, record.finished_at, record.runtime_s, record.host,
            )
            with self._transaction():
                old = self._conn.execute("SELECT status FROM runs WHERE id = ?",
                                         (record.run_id,)).fetchone()
                if old is not None and old[0] in FINAL:
                    return False  # a result stays; nothing of it is touched
                self._conn.execute(
                    f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_COLUMNS))})", row)
            row_in = True  # committed: now, and only now, the curves go in place
            if tmp is not None:
                os.replace(tmp, self.curves_dir / curves_file)
                tmp = None
            return True
        except (sqlite3.OperationalError, OSError) as exc:
            what = "its curves could not be put in place" if row_in else "it was not stored"
            raise StoreWriteError(f"cannot write run {record.run_id} to {self.path} "
                                  f"({' '.join(str(exc).split()) or type(exc).__name__}); "
                                  f"{what}") from None
        finally:
            if tmp is not None and not row_in:  # (after the commit: _repair_curves uses it)
                tmp.unlink(missing_ok=True)

    def _file_mode(self) -> int:
        """Permission bits for curves files: those of the store file (read/write bits)."""
        try:
            return self.path.stat().st_mode & 0o666
        except OSError:  # pragma: no cover - the store file is there while it is open
            return 0o644

    @staticmethod
    def _write_npz(path: Path, curves: Mapping[str, Any], publish: bool = True,
                   mode: int | None = None) -> Path:
        """Write ``curves`` to a temporary file next to ``path``; rename it to ``path`` when
        ``publish`` (else return the temporary path for the caller to rename). A failed write
        (full disk) leaves no temporary file."""
        arrays = {}
        for k, v in curves.items():
            arr = np.asarray(v)
            if arr.dtype == object:  # keep the file pickle-free
                continue
            arrays[str(k)] = arr
        path.parent.mkdir(exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                if mode is not None:
                    os.fchmod(fh.fileno(), mode)
                fh.write(buf.getvalue())
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        if publish:
            os.replace(name, path)
            return path
        return Path(name)

    # -- reading -----------------------------------------------------------------------------
    def _query(self, q: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(q, args).fetchall()
        except sqlite3.OperationalError:  # locked, I/O: not a statement about the file
            raise
        except sqlite3.DatabaseError as exc:  # "database disk image is malformed", ...
            raise MirrorflowError(self._damaged(exc)) from None

    def ids(self, statuses: Iterable[str] = STATUSES) -> set[str]:
        """Ids of the stored runs with one of ``statuses``."""
        statuses = tuple(statuses)
        q = f"SELECT id FROM runs WHERE status IN ({', '.join('?' * len(statuses))})"
        return {r[0] for r in self._query(q, statuses)}

    def statuses(self, run_ids: Iterable[str]) -> dict[str, str]:
        """``{id: status}`` of those of ``run_ids`` that are stored."""
        ids = list(run_ids)
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            part = tuple(ids[i:i + 500])
            q = f"SELECT id, status FROM runs WHERE id IN ({', '.join('?' * len(part))})"
            out.update(dict(self._query(q, part)))
        return out

    def count(self) -> int:
        return self._query("SELECT COUNT(*) FROM runs")[0][0]

    def records(self, experiment: str | None = None) -> list[RunRecord]:
        """All rows (optionally of one experiment), in insertion order."""
        q = f"SELECT {', '.join(_COLUMNS)} FROM runs"
        args: tuple = ()
        if experiment is not None:
            q += " WHERE experiment = ?"
            args = (experiment,)
        out = []
        for row in self._query(q + " ORDER BY rowid", args):
            d = dict(zip(_COLUMNS, row))
            out.append(RunRecord(
                run_id=d["id"], experiment=d["experiment"], config=json.loads(d["config"]),
                status=d["status"], metrics=json.loads(d["metrics"]), sweep=d["sweep"],
                version=d["version"], message=d["message"], diverged_step=d["diverged_step"],
                started_at=d["started_at"], finished_at=d["finished_at"],
                runtime_s=d["runtime_s"], host=d["host"], curves_file=d["curves"],
            ))
        return out

    def load_curves(self, record: RunRecord) -> dict[str, np.ndarray]:
        """The curves of a run (empty dict when it has none or the file is missing)."""
        if not record.curves_file:
            return {}
        path = self._curves_path(record.run_id, record.curves_file)
        if not path.is_file():
            return {}
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
