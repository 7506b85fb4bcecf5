"""Run the experiments' one-time setup ahead, in the background, while other sweeps run.

Some experiments have a costly setup that all their runs share and cache (lora-lm pretrains its
model: about 6 minutes on one core for the full preset). Run inside the sweep, the first task
does it while the other workers, given tasks of the same experiment, wait on its lock: a core
sits idle for the whole setup. :func:`prepare_ahead` starts every such setup in one background
process as soon as ``mirrorflow reproduce`` begins, so it overlaps the sweeps before it.

The setup is the experiment's :attr:`~mirrorflow.experiments.base.Experiment.prepare`: cached,
lock-protected and written atomically, so a run that needs it before the background process is
done waits for it, and a background process that is stopped (Ctrl-C, an error) leaves nothing
half-written: the run then does the setup itself, and any error it has surfaces there, in the
run's record, as it would without :func:`prepare_ahead`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Iterator, Sequence
from typing import Any

from mirrorflow.sweep.spec import SweepSpec

__all__ = ["prepare_ahead"]


def _prepare(jobs: list[tuple[str, list[Any]]], parent_pid: int) -> None:
    """The background process: each experiment's ``prepare(configs)``, one after another.
    Like a pool worker it ignores Ctrl-C (the parent stops it) and dies with its parent."""
    from mirrorflow._core.threads import torch_threads
    from mirrorflow.experiments import get_experiment
    from mirrorflow.sweep.pool import _die_with_parent

    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with torch_threads(1):
        for name, configs in jobs:
            get_experiment(name).prepare(configs)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while processes are started here (main thread only; else a no-op)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def prepare_ahead(specs: Sequence[SweepSpec], pending: Sequence[str] | None = None,
                  ) -> Iterator[list[str]]:
    """Start the ``prepare`` of every experiment among ``specs`` that declares one, in one
    background process; yields the names of those experiments (empty: nothing started).

    ``pending``: run ids still to run (default: all); an experiment none of whose runs is
    pending is not prepared. On exit the process is stopped if it is still running (its setup
    is then done by the runs that need it).
    """
    from mirrorflow.experiments import get_experiment

    todo = None if pending is None else set(pending)
    jobs = []
    for spec in specs:
        prepare = get_experiment(spec.experiment).prepare
        configs = [r.config for r in spec.runs if todo is None or r.run_id in todo]
        if prepare is not None and configs:
            jobs.append((spec.experiment, configs))
    if not jobs:
        yield []
        return
    proc = multiprocessing.get_context("spawn").Process(target=_prepare, args=(jobs, os.getpid()),
                                                        name="mirrorflow-prepare", daemon=True)
    with _sigint_ignored():  # inherited through exec: the child ignores Ctrl-C from its start
        proc.start()
    try:
        yield [name for name, _ in jobs]
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join()
