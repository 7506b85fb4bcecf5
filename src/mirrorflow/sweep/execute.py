"""Run a sweep: local process pool (default) or Dask, with one writer to the results store.

The runs still missing from the store are grouped into *tasks* (runs of a batched experiment
that differ only in ``seed`` share a task, up to ``batch`` of them, and one batched simulation).
Tasks go to the executor; their outcomes come back to the calling process, which alone writes
to SQLite, one transaction per run. Executors:

* :class:`LocalExecutor` — in-process when ``workers == 1``, else ``spawn``ed worker processes,
  one task at a time each, that die with the calling process;
* :class:`DaskExecutor` — ``"local"`` starts a real ``dask.distributed.LocalCluster``;
  ``"tcp://HOST:PORT"`` connects to a running scheduler.

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

import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import mirrorflow
from mirrorflow._core.limits import (
    WORKER_OVERHEAD_BYTES,
    Limits,
    RunLimitError,
    current_limits,
    run_deadline,
    using_limits,
)
from mirrorflow._core.progress import progress_bar
from mirrorflow._core.threads import set_worker_threads
from mirrorflow._core.validation import MirrorflowError, check_positive_int
from mirrorflow.sweep.spec import RunSpec, SweepSpec
from mirrorflow.sweep.store import FINAL, ResultStore, RunRecord

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

_STEP_KEYS = ("diverged_step", "diverged_at", "step_diverged", "steps", "iterations")


#: Outcome status of a run the infrastructure lost (never stored; the next run of the sweep
#: runs it).
LOST = "lost"


@dataclass(frozen=True)
class Outcome:
    """What a worker sends back for one run (``status``: a store status, or :data:`LOST`)."""

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


def _one_line(exc: BaseException, with_type: bool = True) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    if isinstance(exc, MemoryError):
        text = f"out of memory ({text}); make the run smaller"
    return (f"{type(exc).__name__}: {text}" if with_type else text)[:1000]


def execute_task(experiment: str, configs: Sequence[Mapping[str, Any]],
                 run_ids: Sequence[str], threads: int | None = None,
                 limits: Limits | None = None) -> list[Outcome]:
    """Run one task (a list of configs of one experiment) and return an Outcome per run.

    Runs where workers run (a pool process, a Dask worker). Exceptions become ``failed``
    outcomes; a batch that raises is retried one run at a time so one bad run fails alone. The
    task runs under ``limits`` (default: the current ones): its wall-time bound is
    ``max_seconds`` per run of the task; reaching it fails every run of the task with a
    ``stopped: ...`` message (they share one batched simulation; no retry).
    """
    if threads is not None:  # for the worker's whole life: its runs are one per core
        set_worker_threads(threads)
    from mirrorflow.experiments import get_experiment

    host = socket.gethostname()
    exp = get_experiment(experiment)
    limits = limits or current_limits()

    def run(cfg_dicts, ids) -> list[Outcome]:
        t0 = time.time()
        seconds = None if limits.max_seconds is None else limits.max_seconds * len(ids)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
                using_limits(limits), run_deadline(seconds):
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

    started = time.time()
    try:
        return run(configs, run_ids)
    except RunLimitError as exc:  # the time it ran until the bound stopped it, honestly stored
        now = time.time()
        return [Outcome(run_id=rid, status="failed", metrics={}, message=_one_line(exc, False),
                        started_at=started, finished_at=now,
                        runtime_s=(now - started) / len(run_ids), host=host) for rid in run_ids]
    except Exception as exc:
        if len(configs) > 1:
            out: list[Outcome] = []
            for c, rid in zip(configs, run_ids):
                out.extend(execute_task(experiment, [c], [rid], None, limits))
            return out
        now = time.time()
        return [Outcome(run_id=run_ids[0], status="failed", metrics={},
                        message=_one_line(exc), started_at=started, finished_at=now,
                        runtime_s=now - started, host=host)]


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
#: A task: the runs of one experiment that share one call of ``execute_task``.
Task = list[RunSpec]
#: ``keep(task)``: the runs of ``task`` still to run, asked right before it is dispatched.
Keep = Callable[[Task], Task]


def _task_args(task: Task) -> tuple[str, list[dict], list[str]]:
    return task[0].experiment, [dict(r.config_dict) for r in task], [r.run_id for r in task]


def _outcomes(task: Task, status: str, message: str, host: str = "") -> list[Outcome]:
    now = time.time()
    return [Outcome(run_id=r.run_id, status=status, metrics={}, message=message,
                    started_at=now, finished_at=now, host=host) for r in task]


@dataclass(frozen=True)
class LocalExecutor:
    """Run tasks on this machine: in-process for ``workers == 1``, else worker processes.

    Each worker process runs one task at a time and is ``spawn``ed (torch and fork do not
    mix). A worker that dies while running a task (killed, out of memory, a crash in native
    code) is replaced and the task is run again; a task that has killed its worker
    ``max_worker_deaths`` times is stored as ``failed`` with that reason. A task still running
    well past its wall-time limit (stuck where the cooperative check cannot see it) has its
    worker killed and is stored as ``failed``. Workers die with the calling process, even when
    it is killed with SIGKILL (``PR_SET_PDEATHSIG`` on Linux and a watchdog thread).
    """

    workers: int = 0  # 0: one per core
    max_worker_deaths: int = 2
    kill_grace_s: float = 30.0  # past its wall-time limit + this, a task's worker is killed

    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    @contextmanager
    def session(self, n_tasks: int, limits: Limits | None = None) -> Iterator[Callable]:
        limits = limits or current_limits()
        workers = max(1, min(self.n_workers(), n_tasks))
        if workers == 1:
            def imap(tasks: Iterable[Task], keep: Keep | None = None):
                for t in tasks:
                    t = keep(t) if keep else t
                    if t:
                        yield t, execute_task(*_task_args(t), None, limits)
            yield imap
            return

        def imap(tasks: Iterable[Task], keep: Keep | None = None):
            yield from _pool_imap(list(tasks), workers, limits, self.max_worker_deaths, keep,
                                  self.kill_grace_s)

        yield imap


class _Worker:
    """One spawned worker process and the pipe to it."""

    def __init__(self, ctx, limits: Limits):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, os.getpid(), 1, limits),
                                daemon=True, name="mirrorflow-worker")
        self.proc.start()
        child.close()
        self.task: Task | None = None
        self.hard_deadline = math.inf

    def send(self, task: Task, hard_seconds: float | None) -> bool:
        try:
            self.conn.send(_task_args(task))
        except OSError:  # it died before it could take the task
            return False
        self.task = task
        self.hard_seconds = hard_seconds
        self.hard_deadline = math.inf  # set when the worker says it started (after booting)
        return True

    def started(self) -> None:
        if self.hard_seconds is not None:
            self.hard_deadline = time.monotonic() + self.hard_seconds

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        if self.task is None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(2)
            except OSError:
                pass
        self.kill()


def task_memory(task: Task) -> int:
    """Estimated peak memory of a task in bytes: the sum of its runs' ``Config.cost()``
    (0 for runs without an estimate)."""
    total = 0
    for r in task:
        cost = getattr(r.config, "cost", None)
        est = cost() if callable(cost) else None
        total += int(est.memory) if est is not None else 0
    return total


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        extra = " (e.g. the out-of-memory killer)" if name == "SIGKILL" else ""
        return f"killed by {name}{extra}"
    return f"exit status {code}"


def _pool_imap(tasks: list[Task], n: int, limits: Limits, max_deaths: int,
               keep: Keep | None, grace: float = 30.0) -> Iterator[tuple[Task, list[Outcome]]]:
    """Run ``tasks`` on ``n`` worker processes; yield ``(task, outcomes)`` as each finishes."""
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
    queue: deque[Task] = deque(tasks)
    deaths: Counter = Counter()
    workers: list[_Worker] = []
    budget = limits.max_memory  # for all runs at once on this machine (None: not bounded)
    if budget is not None:  # each live worker costs its interpreter and imports
        n = max(1, min(n, budget // WORKER_OVERHEAD_BYTES))

    def fits(task: Task) -> bool:
        """Admit ``task`` while the estimates of the running tasks, its own and the live
        workers' overhead fit ``budget``; a task alone is always admitted (its run passed
        the per-run check before the sweep started)."""
        running = [w.task for w in workers if w.task is not None]
        if budget is None or not running:
            return True
        need = sum(map(task_memory, running)) + task_memory(task) \
            + len(workers) * WORKER_OVERHEAD_BYTES
        return need <= budget

    def next_task() -> Task | None:
        """The first queued task that fits the memory budget now (``None``: none does)."""
        for k, t in enumerate(queue):
            if fits(t):
                del queue[k]
                return t
        return None

    def hard_seconds(task: Task) -> float | None:
        if limits.max_seconds is None:
            return None
        soft = limits.max_seconds * len(task)
        return soft + max(grace, 0.1 * soft)

    try:
        workers = [_Worker(ctx, limits) for _ in range(min(n, len(queue)))]
        while True:
            for i, w in enumerate(workers):  # hand out work; replace workers found dead
                while w.task is None and queue:
                    if not w.proc.is_alive():
                        w.kill()
                        w = workers[i] = _Worker(ctx, limits)
                    task = next_task()
                    if task is None:
                        break  # nothing fits the memory budget until a running task ends
                    task = keep(task) if keep else task
                    if task and not w.send(task, hard_seconds(task)):
                        queue.appendleft(task)  # it died before taking it: not the task's doing
                        w.kill()
            busy = [w for w in workers if w.task is not None]
            if not busy:
                return
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], 1.0))
            for w in busy:
                task = w.task
                if w.conn in ready or w.proc.sentinel in ready:
                    out = None
                    try:
                        while w.conn.poll():
                            out = w.conn.recv()
                            if out != _STARTED:
                                break
                            w.started()
                            out = None
                    except (EOFError, OSError):  # its end of the pipe closed: it died
                        out = None
                    if out is None and w.proc.is_alive():
                        continue  # it only said it started
                    w.task = None
                    if out is not None:
                        yield task, out
                        continue
                    w.proc.join(5)
                    reason = _exit_reason(w.proc.exitcode)
                    w.kill()  # replaced when there is work for it
                    key = tuple(r.run_id for r in task)
                    deaths[key] += 1
                    if deaths[key] >= max_deaths:
                        yield task, _outcomes(task, "failed", (
                            f"its worker process died each of the {deaths[key]} times it ran "
                            f"(last: {reason}); --retry-failed runs it again"))
                    else:
                        queue.appendleft(task)  # an infrastructure failure: run it again
                elif time.monotonic() > w.hard_deadline:
                    w.task = None
                    w.kill()
                    yield task, _outcomes(task, "failed", (
                        f"stopped: the run exceeded its wall-time limit of "
                        f"{limits.max_seconds * len(task):g} s and did not stop by itself; its "
                        f"worker was killed; raise it with --max-seconds or make the run smaller"))
    finally:
        for w in workers:
            w.stop()


_STARTED = "started"  # a worker's message: it began the task it was sent


def _worker_main(conn, parent_pid: int, threads: int, limits: Limits) -> None:
    """A worker process: run the tasks that arrive on ``conn`` until ``None`` or EOF."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        experiment, configs, ids = msg
        try:
            conn.send(_STARTED)
        except OSError:
            return
        try:
            out = execute_task(experiment, configs, ids, threads, limits)
        except Exception as exc:  # outside any run (e.g. the experiment does not import here)
            out = [Outcome(run_id=rid, status="failed", metrics={}, message=_one_line(exc))
                   for rid in ids]
        try:
            conn.send(out)
        except OSError:
            return


def _die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` ends, even by SIGKILL (docs/reliability.md)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the watchdog remains
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)

    def watchdog() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watchdog, name="mirrorflow-watchdog", daemon=True).start()


#: Dask scheduler address schemes mirrorflow accepts.
_DASK_SCHEMES = ("tcp", "tls")
#: Seconds to open a TCP connection to a Dask scheduler, and then (separately) for Dask's
#: handshake and its answer to ``identity`` (docs/reliability.md).
DASK_CONNECT_TIMEOUT_S = 5.0
DASK_HANDSHAKE_TIMEOUT_S = 3.0


def check_scheduler(address: str, connect_timeout: float = DASK_CONNECT_TIMEOUT_S,
                    handshake_timeout: float = DASK_HANDSHAKE_TIMEOUT_S) -> None:
    """One-line :class:`MirrorflowError` unless a Dask scheduler answers at ``address``.

    First a plain TCP connection (``connect_timeout`` s: nothing listening, a host that does
    not answer); then Dask's handshake and an ``identity`` request, under ``handshake_timeout``
    s, whose answer must be a scheduler's. A port that speaks HTTP (the dashboard, by mistake)
    never answers the handshake; a server of another protocol sends bytes that Dask reads as
    absurd frame sizes (a ``MemoryError`` of exabytes) or closes the connection: each is a
    one-line error before anything is created.
    """
    import asyncio

    from distributed.comm import connect
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.security import Security

    hint = "start one with `dask scheduler` or use --dask local"
    host, port = parse_host_port(parse_address(address)[1])
    try:
        socket.create_connection((host, port), timeout=connect_timeout).close()
    except OSError as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise MirrorflowError(f"cannot reach Dask scheduler at {address} ({text}); {hint}"
                              ) from None

    async def probe():
        args = Security().get_connection_args("client")
        comm = await connect(address, timeout=handshake_timeout, **args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    def in_own_loop():  # a thread of its own: the caller may be inside an event loop
        box: dict[str, Any] = {}

        def target():
            try:
                box["answer"] = asyncio.run(asyncio.wait_for(probe(), handshake_timeout))
            except BaseException as exc:  # handed to the caller's thread below
                box["error"] = exc

        t = threading.Thread(target=target, name="mirrorflow-dask-probe", daemon=True)
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
        return box["answer"]

    try:
        answer = in_own_loop()
    except (asyncio.TimeoutError, TimeoutError):
        raise MirrorflowError(
            f"no Dask scheduler at {address}: the server accepted the connection but did not "
            f"answer Dask's handshake within {handshake_timeout:g} s (an HTTP port such as the "
            f"dashboard's?); pass the scheduler's address (port 8786 by default)") from None
    except MemoryError:
        raise MirrorflowError(
            f"no Dask scheduler at {address}: the server speaks another protocol (its first "
            f"bytes do not read as Dask frames); pass the scheduler's address") from None
    except Exception as exc:  # closed mid-handshake, nonsense frames, a TLS mismatch, ...
        raise MirrorflowError(
            f"no Dask scheduler at {address}: the server does not speak Dask's protocol "
            f"({_one_line(exc)[:200]}); pass the scheduler's address") from None
    if not (isinstance(answer, dict) and answer.get("type") == "Scheduler"):
        what = answer.get("type") if isinstance(answer, dict) else type(answer).__name__
        raise MirrorflowError(f"no Dask scheduler at {address}: it answered as {what!r}; "
                              f"pass the scheduler's address")


@dataclass(frozen=True)
class DaskExecutor:
    """Run tasks on Dask: ``address="local"`` starts a LocalCluster, else connect to a scheduler."""

    address: str = "local"
    n_workers: int = 0  # LocalCluster size; 0: one per core
    processes: bool = True  # LocalCluster workers as processes (False: threads in this process)

    def __post_init__(self):
        ok = re.fullmatch(r"([a-z]+)://[^\s/:]+:\d+/?", self.address)
        if self.address != "local" and not (ok and ok.group(1) in _DASK_SCHEMES):
            raise MirrorflowError(f"--dask must be 'local' or a scheduler address like "
                                  f"tcp://HOST:PORT, got {self.address!r}")

    @contextmanager
    def session(self, n_tasks: int, limits: Limits | None = None) -> Iterator[Callable]:
        try:
            from dask.distributed import Client, LocalCluster, as_completed
        except ImportError:  # pragma: no cover - optional dependency
            raise MirrorflowError("Dask is not installed; pip install 'mirrorflow[distributed]'"
                                  ) from None
        limits = limits or current_limits()
        cluster = None
        if self.address == "local":
            n = max(1, min(self.n_workers or os.cpu_count() or 1, n_tasks))
            where = {"host": "127.0.0.1"} if self.processes else {}  # threads: inproc://
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=self.processes,
                                   dashboard_address=None, **where)
            client = Client(cluster)
        else:
            check_scheduler(self.address)
            try:
                client = Client(self.address, timeout="10s")
            except (OSError, ValueError, TypeError) as exc:
                raise MirrorflowError(f"cannot reach Dask scheduler at {self.address} "
                                      f"({' '.join(str(exc).split())}); start one with "
                                      f"`dask scheduler` or use --dask local") from None
        threads = 1 if (self.processes or cluster is None) else None

        def imap(tasks: Iterable[Task], keep: Keep | None = None):
            tasks = [t for t in ((keep(t) if keep else t) for t in tasks) if t]
            futs = {client.submit(execute_task, *_task_args(t), threads, limits, pure=False): t
                    for t in tasks}
            for fut in as_completed(list(futs)):
                yield futs[fut], _dask_outcomes(fut, futs[fut])

        # a lost scheduler is reported once, as runs "not run"; not as the client's tracebacks
        quiet = logging.getLogger("distributed.client")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            yield imap
        finally:
            try:
                client.close()
                if cluster is not None:
                    cluster.close()
            finally:
                quiet.setLevel(level)


def _dask_outcomes(fut: Any, task: Task) -> list[Outcome]:
    """The outcomes of a finished Dask future. The task itself never raises (execute_task
    catches); an exception here is the infrastructure's: a task that killed its workers
    (``KilledWorker``) is ``failed``, anything else (a lost connection, a cancelled future)
    leaves its runs unstored."""
    try:
        return fut.result()
    except Exception as exc:
        if type(exc).__name__ == "KilledWorker":
            return _outcomes(task, "failed", (f"it killed its Dask worker each time it ran "
                                              f"({_one_line(exc)}); --retry-failed runs it again"))
        text = _one_line(exc)
        return _outcomes(task, LOST, text if len(text) <= 200 else text[:199] + "…")


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
              retry_failed: bool = False, batch: int = 4, progress: bool = False,
              limits: Limits | None = None) -> SweepSummary:
    """Run the runs of ``spec`` that are not in ``store`` yet and write each as it finishes.

    Finished runs (``done``, ``diverged``, ``failed``) are skipped; ``retry_failed=True`` runs the
    ``failed`` ones again. Before anything runs, every run's estimated steps and memory are
    checked against ``limits`` (default: the current ones); while runs go, the store is asked
    again before each task is dispatched, so runs another sweep has stored meanwhile are not
    run twice, and a result already stored is never overwritten. Returns the counts.
    """
    from mirrorflow.experiments import get_experiment

    t0 = time.perf_counter()
    batch = check_positive_int("batch", batch)
    limits = limits or current_limits()
    executor = executor or LocalExecutor()
    check_sweep_limits(spec, limits)
    skip_statuses = FINAL if retry_failed else (*FINAL, "failed")
    stored = store.statuses(spec.run_ids)
    todo = [r for r in spec.runs if stored.get(r.run_id) not in skip_statuses]
    stored_failed = 0 if retry_failed else sum(s == "failed" for s in stored.values())
    exp = get_experiment(spec.experiment)
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
