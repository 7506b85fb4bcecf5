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
    """Yield ``advance(amount)``; renders to stderr only when ``enabled``."""
    if not enabled:
        yield lambda amount=1: None
        return
    from rich.console import Console

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as prog:
        task = prog.add_task(description, total=total)
        yield lambda amount=1: prog.advance(task, amount)
