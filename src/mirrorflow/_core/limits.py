"""Bounds on the work of one run: wall time, steps, memory; and on the size of a sweep.

Every run that the CLI or a sweep starts is bounded (docs/reliability.md):

* **before it starts**, its estimated steps and memory (``Config.cost()``) are checked against
  ``max_steps`` and ``max_memory``, and a sweep's run count against ``max_runs``: above a limit
  the input is refused with one line (:class:`MirrorflowError`), nothing is allocated;
* **while it runs**, the simulators and training loops call :func:`check_deadline` (once per
  chunk of steps, or per ODE right-hand side); past ``max_seconds`` it raises
  :class:`RunLimitError`, which a sweep stores as a ``failed`` run whose message starts with
  ``stopped:`` — never as ``done``.

The limits are plain settings, not part of a run's config (they do not change its result, only
whether it may finish), so they do not enter run ids. Defaults: :data:`DEFAULT_LIMITS`; the CLI
options ``--max-seconds``, ``--max-steps``, ``--max-memory`` and ``--max-runs`` override them.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from mirrorflow._core.validation import MirrorflowError

__all__ = [
    "DEFAULT_LIMITS",
    "WORKER_OVERHEAD_BYTES",
    "Limits",
    "RunCost",
    "RunLimitError",
    "check_cost",
    "check_deadline",
    "current_limits",
    "physical_memory",
    "run_deadline",
    "time_left",
    "using_limits",
]


from mirrorflow._core.errors import RunLimitError


def physical_memory() -> int:
    """Bytes of physical memory of this machine (0 when unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 0


#: Memory of one idle worker process of the local pool (Python, numpy, scipy, torch and
#: mirrorflow imported): 300 MB measured as VmRSS after those imports on the dev machine
#: (docs/reliability.md). The pool counts it for every live worker against ``max_memory``.
WORKER_OVERHEAD_BYTES = int(0.3 * 2**30)


def _default_memory() -> int:
    total = physical_memory()
    return total // 2 if total else 8 * 2**30


@dataclass(frozen=True)
class Limits:
    """Bounds on one run (``max_seconds``, ``max_steps``, ``max_memory`` in bytes) and on the
    number of runs of a sweep (``max_runs``). ``None`` switches a bound off."""

    max_seconds: float | None = 3600.0
    max_steps: int | None = 10**8
    max_memory: int | None = None  # None here means: half the physical memory (see DEFAULT)
    max_runs: int | None = 100_000

    def with_overrides(self, **kwargs) -> Limits:
        """A copy with the given non-``None`` settings replaced (``0`` switches the bound off);
        one-line error for a negative or non-numeric value."""
        out = {}
        for key, value in kwargs.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise MirrorflowError(f"{key} must be a number, got {value!r}")
            if value < 0:
                raise MirrorflowError(f"--{key.replace('_', '-')} must be >= 0 (0: no limit), "
                                      f"got {value:g}")
            out[key] = None if value == 0 or value == float("inf") else value
        for key in ("max_steps", "max_runs", "max_memory"):
            if out.get(key) is not None:
                out[key] = int(out[key])
        return replace(self, **out)


#: The defaults: 1 hour, 10⁸ steps per run, half the physical memory, 10⁵ runs per sweep.
DEFAULT_LIMITS = Limits(max_memory=_default_memory())

_LIMITS: contextvars.ContextVar[Limits] = contextvars.ContextVar("mirrorflow_limits",
                                                                 default=DEFAULT_LIMITS)
_DEADLINE: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar(
    "mirrorflow_deadline", default=None)


def current_limits() -> Limits:
    """The limits in force (:func:`using_limits`), else :data:`DEFAULT_LIMITS`."""
    return _LIMITS.get()


@contextlib.contextmanager
def using_limits(limits: Limits) -> Iterator[Limits]:
    """Use ``limits`` inside the block (this thread / context only)."""
    token = _LIMITS.set(limits)
    try:
        yield limits
    finally:
        _LIMITS.reset(token)


@contextlib.contextmanager
def run_deadline(seconds: float | None) -> Iterator[None]:
    """Start the wall-time bound of a run: :func:`check_deadline` raises after ``seconds``."""
    token = _DEADLINE.set(None if seconds is None else (time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def time_left() -> float | None:
    """Seconds left before the current run's wall-time bound (``None``: no bound)."""
    d = _DEADLINE.get()
    return None if d is None else max(0.0, d[0] - time.monotonic())


def check_deadline(where: str = "") -> None:
    """Raise :class:`RunLimitError` when the current run is past its wall-time bound.

    Cheap (one clock read); the simulators call it once per chunk of steps.
    """
    d = _DEADLINE.get()
    if d is not None and time.monotonic() > d[0]:
        at = f" ({where})" if where else ""
        raise RunLimitError(f"stopped: the run reached its wall-time limit of {d[1]:g} s{at}; "
                            f"raise it with --max-seconds or make the run smaller")


@dataclass(frozen=True)
class RunCost:
    """Estimated work of one run: ``steps`` (iterations of its main loop) and peak
    ``memory`` in bytes (the big arrays it allocates, an estimate within a small factor)."""

    steps: int
    memory: int
    what: str = ""  # what dominates, e.g. "A (n × d) and AᵀA (d × d)"
    #: the part of ``memory`` that runs trained together as one batched task (seeds stacked
    #: into one model) need once, not once per run: the interpreter, libraries, shared frozen
    #: weights. A task of runs ``r₁ … r_k`` needs ``Σ (memory − shared) + max shared``
    #: (:func:`mirrorflow.sweep.pool.task_memory`).
    shared: int = 0

    def __post_init__(self):
        if not 0 <= self.shared <= self.memory:
            raise ValueError(f"RunCost.shared must be between 0 and memory ({self.memory}), "
                             f"got {self.shared}")


def _gb(n: float) -> str:
    return f"{n / 2**30:.3g} GB"


def check_cost(cost: RunCost | None, limits: Limits | None = None, where: str = "") -> None:
    """One-line :class:`MirrorflowError` when ``cost`` exceeds the step or memory limit."""
    if cost is None:
        return
    limits = limits or current_limits()
    pre = f"{where}: " if where else ""
    if limits.max_memory is not None and cost.memory > limits.max_memory:
        dom = f" for {cost.what}" if cost.what else ""
        raise MirrorflowError(f"{pre}this run needs about {_gb(cost.memory)} of memory{dom}, more "
                              f"than the limit of {_gb(limits.max_memory)}; make it smaller or "
                              f"raise the limit with --max-memory GB")
    if limits.max_steps is not None and cost.steps > limits.max_steps:
        raise MirrorflowError(f"{pre}this run takes {cost.steps:.3g} steps, more than the limit of "
                              f"{limits.max_steps:.3g}; use a larger step or a shorter horizon, or "
                              f"raise the limit with --max-steps")
