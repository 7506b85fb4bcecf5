"""Run a sweep: local process pool (default) or Dask, with one writer to the results store.

The runs still missing from the store are grouped into *tasks* (runs of a batched experiment
that differ only in ``seed`` share a task, up to ``batch`` of them, and one batched simulation).
Tasks go to the executor; their outcomes come back to the calling process, which alone writes
to SQLite, one transaction per run. Executors:

* :class:`LocalExecutor` — in-process when ``workers == 1``, else a ``spawn`` process pool;
* :class:`DaskExecutor` — ``"local"`` starts a real ``dask.distributed.LocalCluster``;
  ``"tcp://HOST:PORT"`` connects to a running scheduler.

A run is ``diverged`` when its Result says so (``status == "diverged"``) or any metric is NaN or
inf; ``failed`` when it raised (the message is stored); ``done`` otherwise.
"""

from __future__ import annotations

import math
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import mirrorflow
from mirrorflow._core.progress import progress_bar
from mirrorflow._core.threads import set_worker_threads
from mirrorflow._core.validation import MirrorflowError, check_positive_int
from mirrorflow.sweep.spec import RunSpec, SweepSpec
from mirrorflow.sweep.store import ResultStore, RunRecord

__all__ = [
    "DaskExecutor",
    "LocalExecutor",
    "Outcome",
    "SweepSummary",
    "classify",
    "execute_task",
    "make_executor",
    "make_tasks",
    "run_sweep",
]

_STEP_KEYS = ("diverged_step", "diverged_at", "step_diverged", "steps", "iterations")


@dataclass(frozen=True)
class Outcome:
    """What a worker sends back for one run."""

    run_id: str
    status: str
    metrics: dict[str, Any]
    curves: dict[str, Any] = field(repr=False, default_factory=dict)
    message: str | None = None
    diverged_step: int | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    runtime_s: float = 0.0
    host: str = ""


@dataclass(frozen=True)
class SweepSummary:
    """Counts after a sweep: runs in the spec, skipped (already stored), and new outcomes."""

    name: str
    total: int
    skipped: int
    done: int
    diverged: int
    failed: int
    elapsed_s: float

    def line(self) -> str:
        return (f"{self.name}: {self.total} runs: {self.done} done, {self.diverged} diverged, "
                f"{self.failed} failed, {self.skipped} already stored "
                f"({self.elapsed_s:.1f} s)")


def _non_finite(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


def classify(summary: Mapping[str, Any]) -> tuple[str, int | None, str | None]:
    """``(status, diverged_step, note)`` of a run from its ``Result.summary()``.

    ``diverged`` when ``summary["status"] == "diverged"`` or a metric is NaN/inf; the step is
    taken from the first of the keys ``diverged_step, diverged_at, step_diverged, steps,
    iterations``.
    """
    bad = sorted(k for k, v in summary.items() if _non_finite(v))
    if summary.get("status") != "diverged" and not bad:
        return "done", None, None
    step = None
    for key in _STEP_KEYS:
        v = summary.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            step = int(v)
            break
    note = "non-finite metrics: " + ", ".join(bad) if bad else "run reported status 'diverged'"
    if step is not None:
        note += f" (by step {step})"
    return "diverged", step, note


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"[:1000]


def execute_task(experiment: str, configs: Sequence[Mapping[str, Any]],
                 run_ids: Sequence[str], threads: int | None = None) -> list[Outcome]:
    """Run one task (a list of configs of one experiment) and return an Outcome per run.

    Runs where workers run (a pool process, a Dask worker). Exceptions become ``failed``
    outcomes; a batch that raises is retried one run at a time so one bad run fails alone.
    """
    if threads is not None:  # for the worker's whole life: its runs are one per core
        set_worker_threads(threads)
    from mirrorflow.experiments import get_experiment

    host = socket.gethostname()
    exp = get_experiment(experiment)

    def run(cfg_dicts, ids) -> list[Outcome]:
        t0 = time.time()
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            # a diverging run overflows on purpose: it is recorded as 'diverged', not warned about
            results = exp.run_many([exp.make_config(dict(c)) for c in cfg_dicts])
        t1 = time.time()
        out = []
        for rid, res in zip(ids, results):
            metrics = res.metrics()  # the config is stored in its own column
            status, step, note = classify(metrics)
            out.append(Outcome(
                run_id=rid, status=status, metrics=metrics,
                curves=dict(getattr(res, "curves", None) or {}), message=note,
                diverged_step=step, started_at=t0, finished_at=t1,
                runtime_s=(t1 - t0) / len(ids), host=host,
            ))
        return out

    try:
        return run(configs, run_ids)
    except Exception as exc:
        if len(configs) > 1:
            out: list[Outcome] = []
            for c, rid in zip(configs, run_ids):
                out.extend(execute_task(experiment, [c], [rid]))
            return out
        now = time.time()
        return [Outcome(run_id=run_ids[0], status="failed", metrics={},
                        message=_one_line(exc), started_at=now, finished_at=now, host=host)]


def make_tasks(runs: Sequence[RunSpec], batch: int, batched: bool) -> list[list[RunSpec]]:
    """Group runs into tasks: runs differing only in ``seed`` share a task (≤ ``batch``)."""
    batch = check_positive_int("batch", batch)
    if not batched or batch == 1:
        return [[r] for r in runs]
    groups: dict[str, list[RunSpec]] = {}
    for r in runs:
        key = repr(sorted((k, repr(v)) for k, v in r.config_dict.items() if k != "seed"))
        groups.setdefault(key, []).append(r)
    return [g[i:i + batch] for g in groups.values() for i in range(0, len(g), batch)]


# --------------------------------------------------------------------------------- executors
@dataclass(frozen=True)
class LocalExecutor:
    """Run tasks on this machine: in-process for ``workers == 1``, else a process pool."""

    workers: int = 0  # 0: one per core

    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    @contextmanager
    def session(self, n_tasks: int) -> Iterator[Callable]:
        workers = max(1, min(self.n_workers(), n_tasks))
        threads = 1 if workers > 1 else None
        if workers == 1:
            def imap(tasks):
                for t in tasks:
                    yield t, execute_task(t[0].experiment, [r.config_dict for r in t],
                                          [r.run_id for r in t], threads)
            yield imap
            return
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)

        def imap(tasks):
            pending = {pool.submit(execute_task, t[0].experiment, [r.config_dict for r in t],
                                   [r.run_id for r in t], threads): t for t in tasks}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    task = pending.pop(fut)
                    yield task, _result_or_failed(fut, task)

        try:
            yield imap
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class DaskExecutor:
    """Run tasks on Dask: ``address="local"`` starts a LocalCluster, else connect to a scheduler."""

    address: str = "local"
    n_workers: int = 0  # LocalCluster size; 0: one per core
    processes: bool = True  # LocalCluster workers as processes (False: threads in this process)

    def __post_init__(self):
        if self.address != "local" and not re.fullmatch(r"[a-z]+://[^\s/:]+:\d+", self.address):
            raise MirrorflowError(f"--dask must be 'local' or a scheduler address like "
                                  f"tcp://HOST:PORT, got {self.address!r}")

    @contextmanager
    def session(self, n_tasks: int) -> Iterator[Callable]:
        try:
            from dask.distributed import Client, LocalCluster, as_completed
        except ImportError:  # pragma: no cover - optional dependency
            raise MirrorflowError("Dask is not installed; pip install 'mirrorflow[distributed]'"
                                  ) from None
        cluster = None
        if self.address == "local":
            n = max(1, min(self.n_workers or os.cpu_count() or 1, n_tasks))
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=self.processes,
                                   dashboard_address=None)
            client = Client(cluster)
        else:
            try:
                client = Client(self.address, timeout="10s")
            except OSError as exc:
                raise MirrorflowError(f"cannot reach Dask scheduler at {self.address} ({exc}); "
                                      f"start one with `dask scheduler` or use --dask local"
                                      ) from None
        threads = 1 if (self.processes or cluster is None) else None

        def imap(tasks):
            futs = {client.submit(execute_task, t[0].experiment, [r.config_dict for r in t],
                                  [r.run_id for r in t], threads, pure=False): t for t in tasks}
            for fut in as_completed(list(futs)):
                yield futs[fut], _result_or_failed(fut, futs[fut])

        try:
            yield imap
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _result_or_failed(fut: Any, task: list[RunSpec]) -> list[Outcome]:
    """The outcomes of a finished future; a lost worker or transfer error fails the task."""
    try:
        return fut.result()
    except Exception as exc:
        now = time.time()
        return [Outcome(run_id=r.run_id, status="failed", metrics={}, message=_one_line(exc),
                        started_at=now, finished_at=now) for r in task]


def make_executor(dask: str | None = None, workers: int = 0) -> LocalExecutor | DaskExecutor:
    """``LocalExecutor(workers)`` or, with ``dask`` (``"local"`` / ``"tcp://HOST:PORT"``), Dask."""
    if workers < 0:
        raise MirrorflowError(f"workers must be >= 0 (0 = one per core), got {workers}")
    if dask:
        return DaskExecutor(address=dask, n_workers=workers)
    return LocalExecutor(workers=workers)


# ------------------------------------------------------------------------------ the writer
def run_sweep(spec: SweepSpec, store: ResultStore,
              executor: LocalExecutor | DaskExecutor | None = None, *,
              retry_failed: bool = False, batch: int = 4, progress: bool = False) -> SweepSummary:
    """Run the runs of ``spec`` that are not in ``store`` yet and write each as it finishes.

    Finished runs (``done``, ``diverged``, ``failed``) are skipped; ``retry_failed=True`` runs the
    ``failed`` ones again. Returns the counts.
    """
    from mirrorflow.experiments import get_experiment

    t0 = time.perf_counter()
    executor = executor or LocalExecutor()
    skip_statuses = ("done", "diverged") if retry_failed else ("done", "diverged", "failed")
    stored = store.ids(skip_statuses)
    todo = [r for r in spec.runs if r.run_id not in stored]
    exp = get_experiment(spec.experiment)
    tasks = make_tasks(todo, batch, batched=exp.run_batch is not None)
    counts = {"done": 0, "diverged": 0, "failed": 0}
    by_id = {r.run_id: r for r in todo}
    if tasks:
        with progress_bar(len(todo), spec.name, progress) as advance, \
                executor.session(len(tasks)) as imap:
            for _task, outcomes in imap(tasks):
                for o in outcomes:
                    r = by_id[o.run_id]
                    store.write(RunRecord(
                        run_id=o.run_id, experiment=r.experiment, config=dict(r.config_dict),
                        status=o.status, metrics=o.metrics, sweep=spec.name,
                        version=mirrorflow.__version__, message=o.message,
                        diverged_step=o.diverged_step, started_at=o.started_at,
                        finished_at=o.finished_at, runtime_s=o.runtime_s, host=o.host,
                    ), o.curves)
                    counts[o.status] += 1
                advance(len(outcomes), status=f"done {counts['done']} · diverged "
                                              f"{counts['diverged']} · failed {counts['failed']}")
    return SweepSummary(name=spec.name, total=len(spec.runs), skipped=len(spec.runs) - len(todo),
                        elapsed_s=time.perf_counter() - t0, **counts)
