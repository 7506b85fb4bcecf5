"""The ``mirrorflow`` command line: a thin typer app over the library.

Errors in the input end the program with one line on stderr and exit status 2.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mirrorflow._validation import MirrorflowError

app = typer.Typer(
    name="mirrorflow",
    help="Time-dependent mirror flows: the lasting geometry of weight decay.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> None:
    """Print ``error: message`` on stderr and exit with status 2."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def cli_errors(fn):
    """Turn MirrorflowError (bad input) into a one-line message and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MirrorflowError as exc:
            fail(str(exc))

    return wrapper


def parse_set(pairs: list[str] | None) -> dict[str, Any]:
    """Parse ``--set key=value`` pairs (values are validated later by the Config)."""
    out: dict[str, Any] = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MirrorflowError(f"--set expects key=value, got {item!r}")
        value = value.strip()
        out[key.strip().replace("-", "_")] = None if value.lower() in ("none", "null") else value
    return out


def to_jsonable(obj: Any) -> Any:
    """Make results JSON-serializable (numpy scalars/arrays, non-finite floats as null)."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def print_table(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in rows.items():
        table.add_row(k, f"{v:.6g}" if isinstance(v, float) else str(v))
    console.print(table)


@app.command("list")
def list_experiments() -> None:
    """List the registered experiments."""
    from mirrorflow.experiments import REGISTRY

    for name, exp in sorted(REGISTRY.items()):
        console.print(f"[bold]{name}[/bold]  {exp.description}")


@app.command("run")
@cli_errors
def run_experiment(
    name: Annotated[str, typer.Argument(help="experiment name (see `mirrorflow list`)")],
    schedule: Annotated[str | None, typer.Option(help="none | constant | switch-off | budget")] = None,
    wd: Annotated[float | None, typer.Option(help="weight decay α (≥ 0)")] = None,
    switch_at: Annotated[float | None, typer.Option(help="switch-off time (continuous time t = Σ η)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override any Config field: key=value")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    plot: Annotated[Path | None, typer.Option(help="write a figure of the run's curves (PNG)")] = None,
) -> None:
    """Run one experiment and print its metrics."""
    from mirrorflow.experiments import get_experiment

    exp = get_experiment(name)
    overrides = {k: v for k, v in (("schedule", schedule), ("wd", wd), ("switch_at", switch_at),
                                   ("seed", seed)) if v is not None}
    overrides.update(parse_set(set_))
    config = exp.make_config(overrides)
    if plot is not None and exp.plot is None:
        raise MirrorflowError(f"experiment {name!r} has no plot; drop --plot")
    if plot is not None and not plot.parent.exists():
        raise MirrorflowError(f"cannot write {plot}: folder {plot.parent} does not exist")
    result = exp.run(config, progress=not as_json and sys.stderr.isatty())
    summary = result.summary()
    if as_json:
        typer.echo(json.dumps(to_jsonable({"experiment": name, **summary})))
    else:
        print_table(f"{name}", summary)
    if plot is not None:
        exp.plot([result], plot)
        if not as_json:
            console.print(f"figure written to {plot}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
