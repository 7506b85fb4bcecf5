"""Run a sweep: local process pool (default) or Dask, with one writer to the results store.

The runs still missing from the store are grouped into *tasks* (runs of a batched experiment
that differ only in ``seed`` share a task, up to ``batch`` of them, and one batched simulation).
Tasks go to the executor; their outcomes come back to the calling process, which alone writes
to SQLite, one transaction per run. The pieces:

* :mod:`mirrorflow.sweep.task` — :func:`execute_task` (one task, where workers run) and its
  :class:`Outcome` per run; :func:`classify` (``done`` / ``diverged``);
* :mod:`mirrorflow.sweep.pool` — :class:`LocalExecutor`: in-process when ``workers == 1``, else
  ``spawn``ed worker processes, one task at a time each, that die with the calling process;
  worker deaths and memory admission;
* :mod:`mirrorflow.sweep.dask_exec` — :class:`DaskExecutor`: ``"local"`` starts a real
  ``dask.distributed.LocalCluster``; ``"tcp://HOST:PORT"`` connects to a running scheduler,
  checked first by :func:`check_scheduler`;
* this module — the orchestration: :func:`make_tasks`, :func:`make_executor`,
  :func:`check_sweep_limits`, :func:`run_sweep` (the single writer). It re-exports the names
  above, so ``from mirrorflow.sweep.execute import X`` keeps working.

A run is ``diverged`` when its Result says so (``status == "diverged"``) or any metric is NaN or
inf; ``failed`` when it raised (the message is stored) or reached its wall-time limit (message
``stopped: ...``); ``done`` otherwise.

Infrastructure failures are not run failures (docs/reliability.md): a local worker process that
dies (killed, out of memory) is replaced and its task run again; only a task that kills its
worker ``max_worker_deaths`` times is stored as ``failed``, with that reason. A task whose Dask
worker or connection is lost is left unstored (``lost``: the next run of the same command runs
it); Dask's own ``KilledWorker`` (the task killed several workers) is stored as ``failed``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import mirrorflow
from mirrorflow._core.limits import Limits, current_limits
from mirrorflow._core.progress import progress_bar
from mirrorflow._core.validation import MirrorflowError, check_positive_int
from mirrorflow.sweep.dask_exec import (
    _DASK_SCHEMES,
    DASK_CONNECT_TIMEOUT_S,
    DASK_HANDSHAKE_TIMEOUT_S,
    DaskExecutor,
    _dask_outcomes,
    check_scheduler,
)
from mirrorflow.sweep.pool import (
    _STARTED,
    LocalExecutor,
    _die_with_parent,
    _exit_reason,
    _pool_imap,
    _Worker,
    _worker_main,
    task_memory,
)
from mirrorflow.sweep.spec import RunSpec, SweepSpec
from mirrorflow.sweep.store import FINAL, ResultStore, RunRecord
from mirrorflow.sweep.task import (
    _STEP_KEYS,
    LOST,
    Keep,
    Outcome,
    Task,
    _non_finite,
    _one_line,
    _outcomes,
    _task_args,
    classify,
    execute_task,
)

__all__ = [
    "DASK_CONNECT_TIMEOUT_S",
    "DASK_HANDSHAKE_TIMEOUT_S",
    "DaskExecutor",
    "LocalExecutor",
    "Outcome",
    "SweepSummary",
    "check_scheduler",
    "classify",
    "execute_task",
    "make_executor",
    "make_tasks",
    "run_sweep",
]

#: re-exported from the modules above (``from mirrorflow.sweep.execute import X`` keeps working;
#: a monkeypatch must target the module that defines the name)
_REEXPORTED = (_DASK_SCHEMES, _STARTED, _STEP_KEYS, LOST, Keep, Task, _dask_outcomes,
               _die_with_parent, _exit_reason, _non_finite, _one_line, _outcomes, _pool_imap,
               _task_args, _Worker, _worker_main, task_memory)


@dataclass(frozen=True)
class SweepSummary:
    """Counts after a sweep: runs in the spec, skipped (already stored), and new outcomes.

    ``stored_failed``: of the skipped runs, those stored as ``failed`` (``retry_failed`` runs
    them); ``kept``: runs this sweep computed but another writer had stored a result for in the
    meantime (that result is kept); ``lost``: runs the infrastructure lost (not stored), with
    the first reason in ``lost_reason``.
    """

    name: str
    total: int
    skipped: int
    done: int
    diverged: int
    failed: int
    elapsed_s: float
    stored_failed: int = 0
    kept: int = 0
    lost: int = 0
    lost_reason: str = ""

    @property
    def complete(self) -> bool:
        """Every run of the spec has a result (``done`` or ``diverged``) in the store."""
        return self.failed == self.lost == self.stored_failed == 0

    def line(self) -> str:
        out = (f"{self.name}: {self.total} runs: {self.done} done, {self.diverged} diverged, "
               f"{self.failed} failed, {self.skipped} already stored")
        if self.stored_failed:
            out += (f" ({self.stored_failed} of them failed: --retry-failed runs them again)")
        if self.kept:
            out += f", {self.kept} stored meanwhile by another sweep (kept)"
        if self.lost:
            out += (f", {self.lost} not run ({self.lost_reason}): run the same command again "
                    f"to run them")
        return out + f" ({self.elapsed_s:.1f} s)"


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



def make_executor(dask: str | None = None, workers: int = 0) -> LocalExecutor | DaskExecutor:
    """``LocalExecutor(workers)`` or, with ``dask`` (``"local"`` / ``"tcp://HOST:PORT"``), Dask.

    A scheduler address is checked with :func:`check_scheduler` here (one line within
    about ``DASK_CONNECT_TIMEOUT_S`` s when nothing, an HTTP server or another protocol answers)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise MirrorflowError(f"workers must be >= 0 (0 = one per core), got {workers}")
    if dask:
        executor = DaskExecutor(address=dask, n_workers=workers)
        if dask != "local":  # before any store or cluster is created
            check_scheduler(dask)
        return executor
    return LocalExecutor(workers=workers)


# ------------------------------------------------------------------------------ the writer
def check_sweep_limits(spec: SweepSpec, limits: Limits | None = None) -> None:
    """One-line :class:`MirrorflowError` when a run of ``spec`` would exceed the step or memory
    limit (each distinct config is estimated once; nothing is allocated)."""
    from mirrorflow.experiments.base import check_limits

    limits = limits or current_limits()
    seen: set[str] = set()
    for r in spec.runs:
        key = repr(sorted((k, repr(v)) for k, v in r.config_dict.items() if k != "seed"))
        if key not in seen:
            seen.add(key)
            varying = f"{spec.name}, run {r.run_id}"
            check_limits(r.config, limits, where=varying)


def run_sweep(spec: SweepSpec, store: ResultStore,
              executor: LocalExecutor | DaskExecutor | None = None, *,
              retry_failed: bool = False, batch: int | None = None, progress: bool = False,
              limits: Limits | None = None) -> SweepSummary:
    """Run the runs of ``spec`` that are not in ``store`` yet and write each as it finishes.

    Finished runs (``done``, ``diverged``, ``failed``) are skipped; ``retry_failed=True`` runs the
    ``failed`` ones again. Before anything runs, every run's estimated steps and memory are
    checked against ``limits`` (default: the current ones); while runs go, the store is asked
    again before each task is dispatched, so runs another sweep has stored meanwhile are not
    run twice, and a result already stored is never overwritten. ``batch``: most runs of a
    batched experiment per task (``None``: the experiment's own ``Experiment.batch``). Returns
    the counts.
    """
    from mirrorflow.experiments import get_experiment

    t0 = time.perf_counter()
    exp = get_experiment(spec.experiment)
    batch = check_positive_int("batch", exp.batch if batch is None else batch)
    limits = limits or current_limits()
    executor = executor or LocalExecutor()
    check_sweep_limits(spec, limits)
    skip_statuses = FINAL if retry_failed else (*FINAL, "failed")
    stored = store.statuses(spec.run_ids)
    todo = [r for r in spec.runs if stored.get(r.run_id) not in skip_statuses]
    stored_failed = 0 if retry_failed else sum(s == "failed" for s in stored.values())
    tasks = make_tasks(todo, batch, batched=exp.run_batch is not None)
    counts = {"done": 0, "diverged": 0, "failed": 0, LOST: 0, "kept": 0}
    lost_reason = ""
    by_id = {r.run_id: r for r in todo}

    def keep(task: Task) -> Task:  # another sweep may have stored some of them by now
        now = store.statuses(r.run_id for r in task)
        gone = [r for r in task if now.get(r.run_id) in FINAL]
        counts["kept"] += len(gone)
        advance(len(gone))
        return [r for r in task if now.get(r.run_id) not in FINAL]

    if tasks:
        with progress_bar(len(todo), spec.name, progress) as advance, \
                executor.session(len(tasks), limits) as imap:
            for _task, outcomes in imap(tasks, keep):
                for o in outcomes:
                    if o.status == LOST:
                        counts[LOST] += 1
                        lost_reason = lost_reason or (o.message or "lost")
                        continue
                    r = by_id[o.run_id]
                    written = store.write(RunRecord(
                        run_id=o.run_id, experiment=r.experiment, config=dict(r.config_dict),
                        status=o.status, metrics=o.metrics, sweep=spec.name,
                        version=mirrorflow.__version__, message=o.message,
                        diverged_step=o.diverged_step, started_at=o.started_at,
                        finished_at=o.finished_at, runtime_s=o.runtime_s, host=o.host,
                    ), o.curves)
                    counts[o.status if written else "kept"] += 1
                lost = f" · not run {counts[LOST]}" if counts[LOST] else ""
                advance(len(outcomes), status=f"done {counts['done']} · diverged "
                                              f"{counts['diverged']} · failed "
                                              f"{counts['failed']}{lost}")
    return SweepSummary(name=spec.name, total=len(spec.runs), skipped=len(spec.runs) - len(todo),
                        elapsed_s=time.perf_counter() - t0, done=counts["done"],
                        diverged=counts["diverged"], failed=counts["failed"],
                        stored_failed=stored_failed, kept=counts["kept"], lost=counts[LOST],
                        lost_reason=lost_reason)
