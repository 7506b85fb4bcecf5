"""The local executor: in-process, or a pool of ``spawn``ed worker processes.

Infrastructure failures are not run failures (docs/reliability.md): a local worker process that
dies (killed, out of memory) is replaced and its task run again; only a task that kills its
worker ``max_worker_deaths`` times is stored as ``failed``, with that reason. Tasks are admitted
while their estimated memory (``Config.cost()``) and the live workers' overhead fit the memory
budget (``Limits.max_memory``).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mirrorflow._core.limits import WORKER_OVERHEAD_BYTES, Limits, current_limits
from mirrorflow.sweep.task import (
    Keep,
    Outcome,
    Task,
    _one_line,
    _outcomes,
    _task_args,
    execute_task,
)

__all__ = ["LocalExecutor", "task_memory"]


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
    """Estimated peak memory of a task in bytes, from its runs' ``Config.cost()`` (0 for runs
    without an estimate): each run's own part (``memory − shared``) plus, once, the largest
    ``shared`` part (a batched task trains its runs as one model in one process).

    Summing whole estimates instead counted the interpreter and libraries once per seed: a
    20-seed ViT task came to 5.8 GB against 0.52 GB measured (peak RSS), so two never fitted
    the budget of a 24 GB machine together and the ViT sweep ran one task at a time
    (docs/sweeps.md, "Memory")."""
    own, shared = 0, 0
    for r in task:
        cost = getattr(r.config, "cost", None)
        est = cost() if callable(cost) else None
        if est is not None:
            own += int(est.memory) - int(est.shared)
            shared = max(shared, int(est.shared))
    return own + shared


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

