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

from mirrorflow._core.jsonable import jsonable
from mirrorflow._core.validation import MirrorflowError

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
        out[key.strip().replace("-", "_")] = value  # "none"/"null" → None where the field allows
    return out


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

    for name in sorted(REGISTRY):
        console.print(f"[bold]{name}[/bold]  {REGISTRY.description(name)}")


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
    if plot is not None:  # checked before the run, not after it
        from mirrorflow._core.figure import check_figure_path

        plot = check_figure_path(plot)
    result = exp.run(config, progress=not as_json and sys.stderr.isatty())
    summary = result.summary()  # {"config": what was run, **metrics}
    if as_json:
        typer.echo(json.dumps(jsonable({"experiment": name, **summary})))
    else:
        print_table(name, {k: v for k, v in summary.items() if k != "config"})
    if plot is not None:
        exp.plot([result], plot)
        if not as_json:
            console.print(f"figure written to {plot}")


@app.command("effects", context_settings={"allow_extra_args": True})
@cli_errors
def effects_command(
    ctx: typer.Context,
    param: Annotated[str, typer.Argument(help="uv | u2-v2 | u2 | power")],
    a: Annotated[list[str] | None, typer.Option("--a", help="integrated decays a ≥ 0: --a 0 1 2 4")] = None,
    out: Annotated[Path | None, typer.Option(help="write the three-panel figure (PNG, PDF, SVG)")] = None,
    u0: Annotated[float, typer.Option(help="initial u (one coordinate)")] = 1.0,
    v0: Annotated[float, typer.Option(help="initial v (ignored by u2)")] = 0.5,
    k: Annotated[int, typer.Option(help="power parameterization x = u^{2k} − v^{2k}")] = 2,
    dual_step: Annotated[float, typer.Option(help="dual movement m for the primal reach")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Positional, type and range effects of weight decay on R_a, as numbers and a figure."""
    from mirrorflow.geometry.effects import family_from_name, measure_effects

    tokens = [t for item in [*(a or []), *ctx.args] for t in item.split(",") if t.strip()]
    try:
        a_values = [float(t) for t in tokens] or [0.0, 1.0, 2.0, 4.0]
    except ValueError:
        raise MirrorflowError(f"--a expects numbers, got {' '.join(tokens)!r}") from None
    family = family_from_name(param, u0, v0, k)
    if out is not None:
        from mirrorflow.report.effects_figure import plot_effects

        report = plot_effects(family, a_values, out, dual_step=dual_step)
    else:
        report = measure_effects(family, a_values, dual_step=dual_step)
    if as_json:
        typer.echo(json.dumps(jsonable(report.summary())))
        return
    table = Table(title=f"effects of weight decay on R_a: {param} (a = ∫α dt ≥ 0)")
    for col in ("a", "x̄(a)", "shift", "scale", "L1 index", "∇R_a interval", "reach |μ|≤m"):
        table.add_column(col, justify="right")
    for r in report.rows():
        table.add_row(f"{r['a']:g}", f"{r['reference']:.4g}", f"{r['shift']:.4g}",
                      "—" if r["scale"] is None else f"{r['scale']:.4g}", f"{r['l1_index']:.3f}",
                      f"({r['dual_lo']:.4g}, {r['dual_hi']:.4g})",
                      f"[{r['reach_lo']:.4g}, {r['reach_hi']:.4g}]")
    console.print(table)
    if out is not None:
        console.print(f"figure written to {out}")


@app.command("bench")
@cli_errors
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="small sizes, fewer steps (about 1–2 min)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    path: Annotated[Path | None, typer.Option(help="a folder of bench_*.py modules (default: the built-in suite)")] = None,
    only: Annotated[list[str] | None, typer.Option(help="run only this bench_* module (repeatable)")] = None,
) -> None:
    """Time mirrorflow against its baselines (medians, speed-up ratios, peak RSS)."""
    from mirrorflow.bench import runner

    show = not as_json and sys.stderr.isatty()
    rows = runner.run_suite(
        path, quick=quick, only=only,
        progress=(lambda name: err_console.print(f"running {name} ...")) if show else None,
    )
    info = runner.machine()
    if as_json:
        typer.echo(json.dumps(jsonable({"machine": info, "results": rows})))
        return
    kernel = (f"C kernel {info.get('kernel_variant', '')}".strip() if info.get("native_kernels")
              else "no C kernel: torch path")
    table = Table(title=f"mirrorflow bench{' --quick' if quick else ''}  ({info['cpu']}, "
                        f"{info['cores']} cores, {kernel})")
    table.add_column("benchmark", no_wrap=True)
    for col in ("baseline s", "mirrorflow s", "speed-up", "at peak", "GFLOP/s", "peak RSS MB"):
        table.add_column(col, justify="right")
    table.add_column("threads used (free cores)", justify="right", no_wrap=True)
    table.add_column("note", no_wrap=True)
    table.caption = ("at peak: the speed-up if mirrorflow's flops ran at the measured GEMM peak; "
                     "threads used: what the timed runs ran on (threads=auto: its choice), free "
                     "cores: the reading it chose from (docs/benchmarks.md)")

    def fmt(v, spec=".3g"):
        return "-" if v is None or (isinstance(v, float) and v != v) else format(v, spec)

    for r in rows:
        gf = r.get("gflops")
        if gf is not None and r.get("peak_fraction") is not None:
            gf_s = f"{gf:.3g} ({100 * r['peak_fraction']:.0f}% peak)"
        else:
            gf_s = fmt(gf)
        used = r.get("threads_chosen") or []
        threads_s = "-" if not used else str(used[0]) if len(used) == 1 else f"{min(used)}–{max(used)}"
        if used and r.get("free_cores") is not None:
            threads_s += f" ({r['free_cores']:.2g})"
        note = f"skipped: {r['skipped']}" if r.get("skipped") else str(r.get("kernel", ""))
        table.add_row(r["name"], fmt(r["baseline_s"]), fmt(r["mirrorflow_s"]),
                      fmt(r["ratio"], ".1f") + ("×" if isinstance(r["ratio"], (int, float))
                                                 and r["ratio"] == r["ratio"] else ""),
                      fmt(r.get("ratio_at_peak"), ".1f"), gf_s, fmt(r.get("peak_rss_mb"), ".0f"),
                      threads_s, note)
    # piped into a file or CI log: do not fold the rows at 80 columns
    (console if console.is_terminal else Console(width=max(console.width, 170))).print(table)


# --- sweeps, reports, reproduction (issue 8) -----------------------------------------------
def _sweep_executor(dask: str | None, workers: int):
    from mirrorflow.sweep import make_executor

    return make_executor(dask=dask, workers=workers)


@app.command("sweep")
@cli_errors
def sweep_command(
    spec: Annotated[Path, typer.Argument(help="TOML sweep spec (see docs/sweeps.md)")],
    db: Annotated[Path | None, typer.Option(help="results database (default: SPEC with .sqlite)")] = None,
    workers: Annotated[int, typer.Option(help="local processes / LocalCluster workers (0: one per core)")] = 0,
    dask: Annotated[str | None, typer.Option(help="'local' (start a LocalCluster) or tcp://HOST:PORT")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="run failed runs again")] = False,
    batch: Annotated[int, typer.Option(help="seeds per task for batched experiments")] = 4,
) -> None:
    """Run a grid/zip sweep; finished runs already in the database are skipped."""
    from mirrorflow.sweep import ResultStore, load_spec, run_sweep

    parsed = load_spec(spec)  # every run validated before anything starts
    executor = _sweep_executor(dask, workers)
    with ResultStore(db or spec.with_suffix(".sqlite")) as store:
        summary = run_sweep(parsed, store, executor, retry_failed=retry_failed, batch=batch,
                            progress=sys.stderr.isatty())
        console.print(f"{summary.line()} -> {store.path}", highlight=False, soft_wrap=True)
    if summary.failed:
        raise typer.Exit(1)


def _print_notes(notes) -> None:
    for note in notes:
        err_console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


@app.command("report")
@cli_errors
def report_command(
    db: Annotated[Path, typer.Argument(help="results database written by `mirrorflow sweep`")],
    out: Annotated[Path, typer.Option(help="report folder (created; files in it are replaced)")] = Path("report"),
) -> None:
    """Write Markdown/CSV tables (mean ± sd over seeds per setting) and PNG figures."""
    from mirrorflow.report import write_report

    files = write_report(db, out)
    _print_notes(files.notes)
    console.print(f"report written to {out / 'report.md'} ({len(files.files)} files)", highlight=False)


@app.command("reproduce")
@cli_errors
def reproduce_command(
    out: Annotated[Path, typer.Option(help="folder for the results database and the report")] = Path("report"),
    quick: Annotated[bool, typer.Option("--quick", help="small built-in sweeps (~10 min on 2 cores)")] = False,
    workers: Annotated[int, typer.Option(help="local processes / LocalCluster workers (0: one per core)")] = 0,
    dask: Annotated[str | None, typer.Option(help="'local' (start a LocalCluster) or tcp://HOST:PORT")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="run failed runs again")] = False,
) -> None:
    """Run the built-in sweep of every available experiment and write the report to OUT."""
    from mirrorflow.report import write_report
    from mirrorflow.sweep import ResultStore, builtin_specs, run_sweep

    specs, skipped = builtin_specs(quick=quick)  # all validated before anything runs
    if not specs:
        raise MirrorflowError("no registered experiment has a built-in sweep")
    executor = _sweep_executor(dask, workers)
    if not out.parent.is_dir():
        raise MirrorflowError(f"cannot write to {out}: folder {out.parent} does not exist")
    if out.exists() and not out.is_dir():
        raise MirrorflowError(f"--out {out} is a file; pass a folder")
    out.mkdir(exist_ok=True)
    for name in skipped:
        console.print(f"{name}: no built-in sweep, skipped", highlight=False)
    failed = 0
    with ResultStore(out / "results.sqlite") as store:
        for spec in specs:
            summary = run_sweep(spec, store, executor, retry_failed=retry_failed,
                                progress=sys.stderr.isatty())
            failed += summary.failed
            console.print(summary.line(), highlight=False, soft_wrap=True)
        files = write_report(store, out)
    _print_notes(files.notes)
    console.print(f"report written to {out / 'report.md'} ({len(files.files)} files)", highlight=False)
    if failed:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
