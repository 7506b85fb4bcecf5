"""Progress that does nothing when disabled (library default): a rich bar on a terminal, and
periodic one-line updates (done/total, elapsed, ETA) when stderr is a file, a pipe or a CI log.

The line interval is ``MIRRORFLOW_PROGRESS_INTERVAL`` seconds (default 15); lines go to stderr
from a background thread, so a long step (one LoRA run of a sweep) still shows that the job is
alive.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["DEFAULT_LINE_INTERVAL", "LineProgress", "format_seconds", "progress_bar"]

#: Seconds between two progress lines when stderr is not a terminal.
DEFAULT_LINE_INTERVAL = 15.0


def format_seconds(s: float) -> str:
    """``75.2 -> '1m15s'``, ``3725 -> '1h02m'``, ``8.4 -> '8s'``."""
    s = max(0, round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class LineProgress:
    """Counts done work and writes ``description: done/total (pct), elapsed …, ETA …`` lines.

    ``clock``: a function returning seconds (``time.monotonic``; tests pass a fake one).
    The ETA assumes the remaining work goes at the average speed so far (``?`` before the
    first unit is done).
    """

    def __init__(self, total: float, description: str, stream=None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.description = total, description
        self.stream, self.clock = stream, clock
        self.done = 0.0
        self.status = ""
        self.start = clock()
        self.lines = 0

    def advance(self, amount: float = 1, status: str | None = None) -> None:
        self.done += amount
        if status is not None:
            self.status = status

    def line(self) -> str:
        elapsed = self.clock() - self.start
        if self.done > 0 and self.total:
            eta = format_seconds(elapsed / self.done * max(self.total - self.done, 0))
        else:
            eta = "?"
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        status = f", {self.status}" if self.status else ""
        return (f"{self.description}: {self.done:g}/{self.total:g}{pct}{status}, elapsed "
                f"{format_seconds(elapsed)}, ETA {eta}")

    def write(self) -> None:
        stream = self.stream or sys.stderr
        try:
            stream.write(self.line() + "\n")
            stream.flush()
        except (ValueError, OSError):  # the stream was closed under us: stay quiet
            return
        self.lines += 1


def _interval() -> float:
    raw = os.environ.get("MIRRORFLOW_PROGRESS_INTERVAL", "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_LINE_INTERVAL
    return value if value > 0 else DEFAULT_LINE_INTERVAL


@contextmanager
def progress_bar(total: float, description: str, enabled: bool = True, *,
                 interval: float | None = None, stream=None) -> Iterator:
    """Yield ``advance(amount=1, status=None)``; renders to stderr only when ``enabled``.

    ``status``: a short text shown after the counts (e.g. a sweep's done / diverged / failed).
    On a terminal: a rich progress bar. Otherwise one line every ``interval`` seconds
    (default ``MIRRORFLOW_PROGRESS_INTERVAL`` or 15 s), and a closing line if any was written.
    """
    if not enabled:
        yield lambda amount=1, status=None: None
        return
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        yield from _rich_bar(total, description)
        return
    prog = LineProgress(total, description, stream)
    stop = threading.Event()
    wait = _interval() if interval is None else interval

    def tick() -> None:
        while not stop.wait(wait):
            prog.write()

    thread = threading.Thread(target=tick, name="mirrorflow-progress", daemon=True)
    thread.start()
    try:
        yield prog.advance
    finally:
        stop.set()
        thread.join()
        if prog.lines:
            prog.write()  # the final count and time, after the periodic ones


def _rich_bar(total: float, description: str) -> Iterator:
    from rich.console import Console

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as prog:
        task = prog.add_task(description, total=total, status="")

        def advance(amount: float = 1, status: str | None = None) -> None:
            prog.update(task, advance=amount, **({} if status is None else {"status": status}))

        yield advance
