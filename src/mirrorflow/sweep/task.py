"""One task of a sweep, run where workers run: :func:`execute_task` and its :class:`Outcome`.

A *task* is a list of runs of one experiment that share one call of :func:`execute_task` (one
batched simulation when the experiment has ``run_batch``). It runs in the calling process, a
local worker process (:mod:`mirrorflow.sweep.pool`) or a Dask worker
(:mod:`mirrorflow.sweep.dask_exec`), and returns one :class:`Outcome` per run.

A run is ``diverged`` when its Result says so (``status == "diverged"``) or any metric is NaN or
inf; ``failed`` when it raised (the message is stored) or reached its wall-time limit (message
``stopped: ...``); ``done`` otherwise.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mirrorflow._core.limits import (
    Limits,
    RunLimitError,
    current_limits,
    run_deadline,
    using_limits,
)
from mirrorflow._core.threads import set_worker_threads
from mirrorflow.sweep.spec import RunSpec

__all__ = ["LOST", "Keep", "Outcome", "Task", "classify", "execute_task"]

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

