"""A small rich progress bar that does nothing when disabled (library default)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress_bar(total: float, description: str, enabled: bool = True) -> Iterator:
    """Yield ``advance(amount=1, status=None)``; renders to stderr only when ``enabled``.

    ``status``: a short text shown after the counts (e.g. a sweep's done / diverged / failed).
    """
    if not enabled:
        yield lambda amount=1, status=None: None
        return
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
