"""The ``mirrorflow`` command line: a thin typer app over the library.

Errors in the input — bad values, unknown options, unusable paths — end the program with one
line on stderr and exit status 2, before any work starts and before any file is written. A run
stopped at its wall-time limit, or runs that failed, give exit status 1; Ctrl-C gives 130 after
saying what was stored and how to resume (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from mirrorflow._core.jsonable import jsonable
from mirrorflow._core.limits import DEFAULT_LIMITS, Limits, RunLimitError
from mirrorflow._core.validation import MirrorflowError, check_positive_int, check_writable_folder

#: The click typer runs on (recent typer versions vendor their own copy).
click = getattr(typer.core, "_click", None) or __import__("click")


def _no_bool_metavar(params):
    """A flag takes no value: show no ``<bool>`` for it (typer shows the metavar, here none)."""
    for p in params:
        if getattr(p, "is_flag", False) and getattr(p, "metavar", None) is None:
            p.metavar = ""
    return params


class _OneLineErrors(TyperGroup):
    """typer's group, with command-line usage errors as one line (``error: ...``) and exit 2
    instead of a multi-line box."""

    def get_params(self, ctx):
        return _no_bool_metavar(super().get_params(ctx))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # `mirrorflow` alone: the help
            text = exc.format_message()  # rich help was printed when the error was made
            if text.strip():
                click.echo(text)
            sys.exit(2)
        except click.ClickException as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" \
                if getattr(exc, "ctx", None) is not None else ""
            _error_line(f"{' '.join(exc.format_message().split())}{where}")
            sys.exit(exc.exit_code)
        except typer.Abort:  # end of input at a prompt
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def _unwrap(text: str | None) -> str | None:
    """Help text with each paragraph on one line: a docstring's line breaks are not the
    terminal's, so paragraphs are joined and rich folds them at the real width."""
    if not text:
        return text
    import inspect

    paras = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paras)


class _Command(TyperCommand):
    """typer's command with plainer help: a flag shows no ``<bool>`` (it takes no value), a
    docstring's paragraphs are not broken mid-sentence."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.help = _unwrap(self.help)
        self.short_help = self.short_help or (self.help or "").split("\n\n")[0]

    def get_params(self, ctx):
        return _no_bool_metavar(super().get_params(ctx))


class _RunCommand(_Command):
    """``mirrorflow run NAME --help`` also lists the experiment's Config fields."""

    def parse_args(self, ctx, args):
        ctx.meta["mirrorflow.args"] = list(args)  # --help is eager: NAME is not parsed yet
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter):
        from mirrorflow.schedules.continuous import SCHEDULE_NAMES  # (torch: only for --help)

        for param in self.params:  # the names from the one table, schedules added to it too
            if param.name == "schedule":
                param.help = "weight-decay schedule: " + " | ".join(SCHEDULE_NAMES)
        super().format_help(ctx, formatter)
        from mirrorflow.experiments import REGISTRY

        names = [a for a in ctx.meta.get("mirrorflow.args", []) if a in REGISTRY]
        out = Console() if Console().is_terminal else Console(width=200)
        if not names:
            out.print("Give NAME to list its config fields: mirrorflow run NAME --help "
                      "(names: mirrorflow list)", markup=False, highlight=False, soft_wrap=True)
            return
        out.print(config_fields_table(names[0]))


def config_fields_table(name: str) -> Table:
    """The Config fields of experiment ``name`` (type, default, description), as a table."""
    from mirrorflow.experiments import REGISTRY

    exp = REGISTRY[name]
    table = Table(title=f"{name}: config fields (set any with --set FIELD=VALUE)",
                  title_justify="left", show_edge=False, box=None, pad_edge=False)
    for col in ("field", "type", "default"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", overflow="fold")
    for fname, info in exp.config_cls.__pydantic_fields__.items():
        table.add_row(fname, _type_name(info.annotation), repr(info.default),
                      info.description or "")
    return table


def _type_name(annotation: Any) -> str:
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin is not None and args:  # unions, Optional
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _show_version(value: bool) -> None:
    if value:
        import mirrorflow

        typer.echo(f"mirrorflow {mirrorflow.__version__}")
        raise typer.Exit(0)


app = typer.Typer(
    name="mirrorflow",
    help="Time-dependent mirror flows: the lasting geometry of weight decay.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_OneLineErrors,
)
console = Console()
err_console = Console(stderr=True)
command = functools.partial(app.command, cls=_Command)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_show_version,
                                          help="print the version and exit")] = False,
) -> None:
    """Time-dependent mirror flows: the lasting geometry of weight decay."""


def _error_line(message: str, label: str = "error") -> None:
    # the message is text, never rich markup: "[base]" or "[[case]]" must survive as written
    err_console.print(Text.assemble((f"{label}: ", "red"), " ".join(message.split())),
                      highlight=False, soft_wrap=True)


def say(message: str) -> None:
    """Print a line of text on stdout (no rich markup, no highlighting, no folding)."""
    console.print(message, markup=False, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr and exit with ``code`` (2: bad input)."""
    _error_line(message)
    raise typer.Exit(code)


def cli_errors(fn):
    """Bad input (MirrorflowError) -> one line, exit 2; a run stopped at its wall-time limit or
    out of memory -> one line, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MirrorflowError as exc:
            fail(str(exc))
        except RunLimitError as exc:
            fail(str(exc), code=1)
        except MemoryError as exc:
            fail(f"out of memory ({exc or 'MemoryError'}); make the run smaller", code=1)

    return wrapper


# --- bounds on work (docs/reliability.md) ----------------------------------------------------
MaxSeconds = Annotated[float | None, typer.Option(
    "--max-seconds", help=f"wall-time limit per run, s (default {DEFAULT_LIMITS.max_seconds:g}; 0: none)")]
MaxSteps = Annotated[float | None, typer.Option(
    "--max-steps", help=f"refuse runs of more steps (default {DEFAULT_LIMITS.max_steps:.0e}; 0: none)")]
MaxMemory = Annotated[float | None, typer.Option(
    "--max-memory", help="refuse runs needing more memory, GB (default: half the RAM; 0: none)")]
MaxRuns = Annotated[float | None, typer.Option(
    "--max-runs", help=f"refuse sweeps of more runs (default {DEFAULT_LIMITS.max_runs:,}; 0: none)")]


def _limits(max_seconds=None, max_steps=None, max_memory=None, max_runs=None) -> Limits:
    gb = None if max_memory is None else (max_memory * 2**30 if max_memory > 0 else 0)
    return DEFAULT_LIMITS.with_overrides(
        max_seconds=max_seconds, max_steps=max_steps, max_memory=gb, max_runs=max_runs)


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


@command("list")
def list_experiments() -> None:
    """List the registered experiments."""
    from mirrorflow.experiments import REGISTRY

    for name in sorted(REGISTRY):
        console.print(Text.assemble((name, "bold"), f"  {REGISTRY.description(name)}"),
                      soft_wrap=True)  # one line per experiment, also when piped


@app.command("run", cls=_RunCommand)
@cli_errors
def run_experiment(
    name: Annotated[str, typer.Argument(help="experiment name (see `mirrorflow list`)")],
    schedule: Annotated[str | None, typer.Option(help="weight-decay schedule (its names: --help)")] = None,
    wd: Annotated[float | None, typer.Option(help="weight decay α (≥ 0)")] = None,
    switch_at: Annotated[float | None, typer.Option(help="switch-off time (continuous time t = Σ η)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="FIELD=VALUE", help="override a Config field (repeatable; the fields: `mirrorflow run NAME --help`)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    plot: Annotated[Path | None, typer.Option(help="write a figure of the run's curves (PNG, PDF, SVG)")] = None,
    max_seconds: MaxSeconds = None,
    max_steps: MaxSteps = None,
    max_memory: MaxMemory = None,
) -> None:
    """Run one experiment and print its metrics."""
    import numpy as np

    from mirrorflow._core.limits import run_deadline, using_limits
    from mirrorflow.experiments import get_experiment
    from mirrorflow.experiments.base import check_limits

    exp = get_experiment(name)
    overrides = {k: v for k, v in (("schedule", schedule), ("wd", wd), ("switch_at", switch_at),
                                   ("seed", seed)) if v is not None}
    overrides.update(parse_set(set_))
    config = exp.make_config(overrides)
    limits = _limits(max_seconds, max_steps, max_memory)
    check_limits(config, limits)  # steps and memory, before anything is allocated
    if plot is not None and exp.plot is None:
        raise MirrorflowError(f"experiment {name!r} has no plot; drop --plot")
    if plot is not None:  # checked before the run, not after it
        from mirrorflow._core.figure import check_figure_path

        plot = check_figure_path(plot)
    with using_limits(limits), run_deadline(limits.max_seconds), \
            np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        result = exp.run(config, progress=True)  # a bar on a terminal, else periodic lines
    summary = result.summary()  # {"config": what was run, **metrics}
    if as_json:
        typer.echo(json.dumps(jsonable({"experiment": name, **summary})))
    else:
        print_table(name, {k: v for k, v in summary.items() if k != "config"})
    if plot is not None:
        exp.plot([result], plot)
        if not as_json:
            say(f"figure written to {plot}")


@command("effects", context_settings={"allow_extra_args": True})
@cli_errors
def effects_command(
    ctx: typer.Context,
    param: Annotated[str, typer.Argument(help="uv | u2-v2 | u2 | power")],
    a: Annotated[list[str] | None, typer.Option("--a", metavar="A", help="integrated decays a ≥ 0: --a 0 1 2 4 (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(help="write the three-panel figure (PNG, PDF, SVG)")] = None,
    u0: Annotated[float, typer.Option(help="initial u (one coordinate)")] = 1.0,
    v0: Annotated[float, typer.Option(help="initial v (ignored by u2)")] = 0.5,
    k: Annotated[int, typer.Option(help="power parameterization x = u^{2k} − v^{2k}")] = 2,
    dual_step: Annotated[float, typer.Option(help="dual movement m for the primal reach")] = 1.0,
    t: Annotated[float, typer.Option("--t", help="size |x| at which the type index is read (the problem's scale of x)")] = 0.1,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Positional, type and range effects of weight decay on R_a, as numbers and a figure.

    The type index ι (0 = L2-like, 1 = L1-like) is read from the curvature ∇²R_a at |x| = t,
    so it ignores the position x̄(a) (docs/effects.md).
    """
    from mirrorflow.geometry.effects import family_from_name, measure_effects

    tokens = [t for item in [*(a or []), *ctx.args] for t in item.split(",") if t.strip()]
    try:
        a_values = [float(t) for t in tokens] or [0.0, 1.0, 2.0, 4.0]
    except ValueError:
        raise MirrorflowError(f"--a expects numbers, got {' '.join(tokens)!r}") from None
    family = family_from_name(param, u0, v0, k)
    _check_effects_range(family, a_values)
    if out is not None:
        from mirrorflow._core.figure import check_figure_path
        from mirrorflow.report.effects_figure import plot_effects

        out = check_figure_path(out)  # before any work

        report = plot_effects(family, a_values, out, dual_step=dual_step, t=t)
    else:
        report = measure_effects(family, a_values, dual_step=dual_step, t=t)
    if as_json:
        typer.echo(json.dumps(jsonable(report.summary())))
        return
    table = Table(title=f"effects of weight decay on R_a: {param} (a = ∫α dt ≥ 0; "
                        f"type index ι at |x| = {t:g}: 0 = L2-like, 1 = L1-like)")
    for col in ("a", "x̄(a)", "shift", "scale", "type ι", "∇R_a interval", "reach |μ|≤m"):
        table.add_column(col, justify="right")
    for r in report.rows():
        table.add_row(f"{r['a']:g}", f"{r['reference']:.4g}", f"{r['shift']:.4g}",
                      "—" if r["scale"] is None else f"{r['scale']:.4g}", f"{r['type_index']:.3f}",
                      f"({r['dual_lo']:.4g}, {r['dual_hi']:.4g})",
                      f"[{r['reach_lo']:.4g}, {r['reach_hi']:.4g}]")
    console.print(table)
    if out is not None:
        say(f"figure written to {out}")


def _check_effects_range(family, a_values) -> None:
    """Refuse values of ``a`` where ``R_a`` cannot be evaluated in float64: its reference point
    and shape parameter shrink like ``e^{−2a}`` (theory §3) and underflow for large ``a``."""
    import math

    import numpy as np

    from mirrorflow._core.array import to_numpy
    from mirrorflow.geometry.family import provides

    with np.errstate(all="ignore"):
        parts0 = [np.abs(to_numpy(family.reference(0.0)))]
        if provides(family, "scale"):
            parts0.append(np.abs(to_numpy(family.scale(0.0))))
        for a in sorted(a_values, reverse=True):
            if not math.isfinite(a) or a < 0:
                return  # measure_effects says what is wrong with it
            parts = [np.abs(to_numpy(family.reference(a)))]
            if provides(family, "scale"):
                parts.append(np.abs(to_numpy(family.scale(a))))
            small = [np.min(p[p0 > 0]) for p, p0 in zip(parts, parts0) if np.any(p0 > 0)]
            if small and min(small) < 1e-300:
                raise MirrorflowError(
                    f"a = {a:g} is too large to compute: R_a's reference point and scale shrink "
                    f"like e^(-2a) and fall below float64's range here ({min(small):.2g}); use "
                    f"a <= 300 (the effects have long saturated by then)")


def bench_table(rows: list[dict], info: dict, quick: bool = False) -> Table:
    """The table ``mirrorflow bench`` prints: one row per benchmark of ``runner.run_suite``."""
    kernel = (f"C kernel {info.get('kernel_variant', '')}".strip() if info.get("native_kernels")
              else "no C kernel: torch path")
    table = Table(title=f"mirrorflow bench{' --quick' if quick else ''}  ({info['cpu']}, "
                        f"{info['cores']} cores, {kernel})")
    table.add_column("benchmark", no_wrap=True)
    # numbers never fold nor shrink to "…": a long note folds instead
    for col in ("baseline s", "mirrorflow s", "speed-up", "at peak", "GFLOP/s", "peak RSS MB"):
        table.add_column(col, justify="right", no_wrap=True, min_width=len(col.split()[0]))
    table.add_column("threads used (free cores)", justify="right", no_wrap=True)
    table.add_column("note", overflow="fold", ratio=1)
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
    return table


@command("bench")
@cli_errors
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="small sizes, fewer steps (about 1–2 min)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    path: Annotated[Path | None, typer.Option(help="a folder of bench_*.py modules (default: the built-in suite)")] = None,
    only: Annotated[list[str] | None, typer.Option(metavar="NAME", help="run only this bench_* module (repeatable)")] = None,
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
    table = bench_table(rows, info, quick)
    if console.is_terminal:
        console.print(table)
    else:
        print_unfolded(table)


def print_unfolded(table: Table, file=None) -> None:
    """Print ``table`` as wide as it needs (piped into a file or CI log): one row per line,
    no column shrunk to "…" or folded at 80 columns."""
    import io

    from rich.measure import Measurement

    probe = Console(width=10_000, file=io.StringIO())
    width = Measurement.get(probe, probe.options, table).maximum
    Console(width=max(80, width), file=file or sys.stdout).print(table)


# --- sweeps, reports, reproduction (issue 8) -----------------------------------------------
def _ahead(specs, store, dask: str | None):
    """:func:`mirrorflow.sweep.prepare_ahead` for the runs not stored yet; only where the
    workers share this machine's cache (no ``--dask tcp://…``)."""
    from mirrorflow.sweep import prepare_ahead
    from mirrorflow.sweep.store import FINAL

    if dask not in (None, "local"):
        return contextlib.nullcontext([])
    ids = [rid for spec in specs for rid in spec.run_ids]
    done = store.statuses(ids)
    return prepare_ahead(specs, [rid for rid in ids if done.get(rid) not in FINAL])


def _sweep_executor(dask: str | None, workers: int):
    from mirrorflow.sweep import make_executor

    return make_executor(dask=dask, workers=workers)


@contextlib.contextmanager
def _results_store(path: Path) -> Iterator[Any]:
    """Open a results store for writing; one this command created and left without a single
    row (bad input found late, an unreachable scheduler, Ctrl-C) is removed again."""
    from mirrorflow.sweep import ResultStore

    existed = path.exists()
    curves = path.with_suffix(".curves")
    curves_existed = curves.exists()
    store = ResultStore(path)
    try:
        yield store
    finally:
        try:
            empty = store.count() == 0
        except Exception:
            empty = False
        store.close()
        if empty and not existed:
            for extra in ("", "-journal", "-wal", "-shm"):
                Path(f"{path}{extra}").unlink(missing_ok=True)
            if not curves_existed and curves.is_dir() and not any(curves.iterdir()):
                curves.rmdir()


def _stored_line(store, specs) -> str:
    ids = {rid for spec in specs for rid in spec.run_ids}
    try:
        stored = store.statuses(ids)
        have = sum(s in ("done", "diverged") for s in stored.values())
        return f"{have} of {len(ids)} runs have a result in {store.path}"
    except Exception:  # pragma: no cover - the store itself was being written
        return f"the finished runs are in {store.path}"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same orderly stop as Ctrl-C (exit 143)."""


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """While a sweep runs, SIGTERM stops it like Ctrl-C: what is stored is said, workers end."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        yield
        return

    def handler(signum, frame):
        raise _Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _interrupted(store, specs, resume: str, exc: BaseException | None = None) -> None:
    """Ctrl-C (or SIGTERM): say what is stored and how to go on; exit 130 (143)."""
    _error_line(f"{_stored_line(store, specs)}; run `{resume}` again to resume (finished runs "
                f"are kept)", label="interrupted")
    raise typer.Exit(143 if isinstance(exc, _Terminated) else 130)


def _store_failed(store, specs, resume: str, exc: BaseException) -> None:
    """The store could not take a write (full disk, I/O error) after work started: one line
    saying what is stored and how to resume; exit 1."""
    _error_line(f"{exc}; {_stored_line(store, specs)}; free space on its disk and run "
                f"`{resume}` again to resume (finished runs are kept)")
    raise typer.Exit(1)


@command("sweep")
@cli_errors
def sweep_command(
    spec: Annotated[Path, typer.Argument(help="TOML sweep spec (see docs/sweeps.md)")],
    db: Annotated[Path | None, typer.Option(help="results database (default: SPEC with .sqlite)")] = None,
    workers: Annotated[int, typer.Option(help="local processes / LocalCluster workers (0: one per core)")] = 0,
    dask: Annotated[str | None, typer.Option(help="'local' (start a LocalCluster) or tcp://HOST:PORT")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="run failed runs again")] = False,
    batch: Annotated[int | None, typer.Option(help="most seeds per task for batched experiments (default: the experiment's own: vit 20, lora-lm 8, others 4)")] = None,
    max_seconds: MaxSeconds = None,
    max_steps: MaxSteps = None,
    max_memory: MaxMemory = None,
    max_runs: MaxRuns = None,
) -> None:
    """Run a grid/zip sweep; finished runs already in the database are skipped.

    Exit status 0 when every run of the spec has a result (done or diverged), 1 when some
    failed or could not be run, 2 for bad input (nothing ran, no file written)."""
    from mirrorflow.sweep import check_sweep_limits, load_spec, run_sweep

    if batch is not None:
        check_positive_int("--batch", batch)
    limits = _limits(max_seconds, max_steps, max_memory, max_runs)
    parsed = load_spec(spec, max_runs=limits.max_runs)  # every run validated before anything
    check_sweep_limits(parsed, limits)
    executor = _sweep_executor(dask, workers)
    cmd = " ".join(["mirrorflow", *sys.argv[1:]]) if sys.argv[1:2] == ["sweep"] else \
        f"mirrorflow sweep {spec}"
    from mirrorflow.sweep.store import StoreWriteError

    with _sigterm_stops(), _results_store(db or spec.with_suffix(".sqlite")) as store:
        try:
            summary = run_sweep(parsed, store, executor, retry_failed=retry_failed, batch=batch,
                                progress=True, limits=limits)
        except KeyboardInterrupt as exc:
            _interrupted(store, [parsed], cmd, exc)
        except StoreWriteError as exc:
            _store_failed(store, [parsed], cmd, exc)
        say(f"{summary.line()} -> {store.path}")
    if not summary.complete:
        raise typer.Exit(1)


def _print_notes(notes) -> None:
    for note in notes:
        err_console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


def _check_out_folder(out: Path) -> None:
    """``--out`` must be a folder (or not exist yet) that can be written, checked up front."""
    if out.exists() and not out.is_dir():
        raise MirrorflowError(f"--out {out} is a file; pass a folder")
    check_writable_folder(out if out.is_dir() else out.parent, what=f"to --out {out}")


def _check_store_path(db: Path) -> None:
    """A folder given where the results database goes: say so, and name the database in it."""
    if not db.is_dir():
        return
    inside = sorted(p for p in db.iterdir() if p.suffix in (".sqlite", ".db") and p.is_file())
    hint = (f"did you mean `mirrorflow report {inside[0]}`?" if inside else
            "pass the results database (`mirrorflow report DB --out FOLDER`; `mirrorflow "
            "reproduce --out F` writes F/results.sqlite)")
    raise MirrorflowError(f"{db} is a folder, not a results database; {hint}")


@command("report")
@cli_errors
def report_command(
    db: Annotated[Path, typer.Argument(help="results database written by `mirrorflow sweep`")],
    out: Annotated[Path, typer.Option(help="report folder (created; files in it are replaced)")] = Path("report"),
    version: Annotated[str | None, typer.Option(help="report the runs of this mirrorflow version (default: the installed one)")] = None,
) -> None:
    """Write Markdown/CSV tables (mean ± sd over seeds per setting) and PNG figures.

    Only runs of one mirrorflow version are reported (default: the installed one); how many
    runs of other versions were left out is said in the report and here."""
    from mirrorflow.report import write_report

    _check_store_path(db)
    _check_out_folder(out)
    files = write_report(db, out, version=version)
    _print_notes(files.notes)
    say(f"report written to {out / 'report.md'} ({len(files.files)} files)")


@command("reproduce")
@cli_errors
def reproduce_command(
    out: Annotated[Path, typer.Option(help="folder for the results database and the report")] = Path("report"),
    quick: Annotated[bool, typer.Option("--quick", help="small built-in sweeps (time: docs/sweeps.md, Time)")] = False,
    workers: Annotated[int, typer.Option(help="local processes / LocalCluster workers (0: one per core)")] = 0,
    dask: Annotated[str | None, typer.Option(help="'local' (start a LocalCluster) or tcp://HOST:PORT")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="run failed runs again")] = False,
    max_seconds: MaxSeconds = None,
    max_steps: MaxSteps = None,
    max_memory: MaxMemory = None,
    until_decided: Annotated[bool, typer.Option("--until-decided", help="add seeds to the experiments of undecided claims, in rounds, under a group-sequential design (docs/claims.md)")] = False,
    budget: Annotated[float | None, typer.Option(help="with --until-decided: minutes of wall time; no new round starts past it")] = None,
    looks: Annotated[int, typer.Option(help="with --until-decided: most looks (rounds) of the sequential design; each look's levels are the single-look ones divided by LOOKS")] = 3,
) -> None:
    """Run the built-in sweep of every available experiment and write the report to OUT.

    With --until-decided: after each round, the experiments of claims still undecided get
    twice the seeds (stored runs are reused), for at most LOOKS rounds and BUDGET minutes;
    every look decides at the levels divided by LOOKS, so the error rates hold over all looks."""
    from mirrorflow.report import write_report
    from mirrorflow.sweep import builtin_specs, check_sweep_limits, run_sweep

    if budget is not None and not until_decided:
        raise MirrorflowError("--budget only applies with --until-decided; add --until-decided "
                              "or drop --budget")
    if until_decided:
        if budget is None:
            raise MirrorflowError("--until-decided needs --budget MINUTES (the most wall time "
                                  "to spend on added seeds), e.g. --budget 60")
        if not (budget > 0 and budget < 1e6):
            raise MirrorflowError(f"--budget must be a positive number of minutes, got {budget:g}")
        check_positive_int("--looks", looks)
        if looks < 2:
            raise MirrorflowError(f"--looks must be ≥ 2 with --until-decided (one look is a "
                                  f"plain reproduce), got {looks}")
    limits = _limits(max_seconds, max_steps, max_memory)
    specs, skipped = builtin_specs(quick=quick)  # all validated before anything runs
    if not specs:
        raise MirrorflowError("no registered experiment has a built-in sweep")
    for spec in specs:
        check_sweep_limits(spec, limits)
    executor = _sweep_executor(dask, workers)
    _check_out_folder(out)
    created = not out.exists()
    out.mkdir(exist_ok=True)
    for name in skipped:
        say(f"{name}: no built-in sweep, skipped")
    incomplete = False
    resume = (f"mirrorflow reproduce{' --quick' if quick else ''}"
              + (f" --until-decided --budget {budget:g} --looks {looks}" if until_decided else "")
              + f" --out {out}")
    import time

    from mirrorflow.sweep.store import StoreWriteError

    started = time.monotonic()
    rule = None
    try:
        with _sigterm_stops(), _results_store(out / "results.sqlite") as store, \
                _ahead(specs, store, dask) as ahead:
            if ahead:
                say(f"{', '.join(ahead)}: one-time setup (pretraining) started in the "
                    f"background; its runs wait for it if they start first")
            for spec in specs:
                try:
                    summary = run_sweep(spec, store, executor, retry_failed=retry_failed,
                                        progress=True, limits=limits)
                except KeyboardInterrupt as exc:
                    _interrupted(store, specs, resume, exc)
                except StoreWriteError as exc:
                    _store_failed(store, specs, resume, exc)
                incomplete |= not summary.complete
                say(summary.line())
            if until_decided:
                rule, more = _until_decided(store, specs, executor, quick, looks, budget,
                                            limits, retry_failed, resume, started)
                incomplete |= more
            files = write_report(store, out, rule=rule)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)  # nothing was stored: leave nothing behind
    _print_notes(files.notes)
    say(f"report written to {out / 'report.md'} ({len(files.files)} files)")
    if incomplete:
        raise typer.Exit(1)


# --- plan (issue 23): the switch-off step for a target a, before training ------------------
@command("plan")
@cli_errors
def plan_command(
    peak_lr: Annotated[float, typer.Option("--peak-lr", help="peak learning rate")],
    steps: Annotated[int, typer.Option("--steps", help="optimizer steps of the run")],
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="base decay λ (AdamW's weight_decay)")],
    lr_schedule: Annotated[str, typer.Option("--lr-schedule", help="constant | linear | cosine")] = "constant",
    warmup: Annotated[int, typer.Option("--warmup", help="linear warm-up steps (η_0 = 0, as HF)")] = 0,
    min_lr_ratio: Annotated[float, typer.Option("--min-lr-ratio", help="final lr / peak lr (linear, cosine)")] = 0.0,
    steps_per_epoch: Annotated[int | None, typer.Option("--steps-per-epoch", help="to give τ and the switch in epochs")] = None,
    target_a: Annotated[float | None, typer.Option("--target-a", help="switch off when a reaches this")] = None,
    target_timescales: Annotated[float | None, typer.Option("--target-timescales", help="switch off after this many AdamW timescales τ = 1/(ηλ) (= a)")] = None,
    reference_wd: Annotated[float | None, typer.Option("--reference-wd", help="reach the a of constant decay λ_ref through the whole run")] = None,
    every: Annotated[int | None, typer.Option("--every", help="print a(t) every N steps (default: 10 rows)")] = None,
    plot: Annotated[Path | None, typer.Option(help="write a figure of η(t) and a(t) (PNG, PDF, SVG)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Plan the integrated decay a(t) of a run and the switch-off step for a target a."""
    from mirrorflow.schedules.planner import plan

    if plot is not None:  # checked before any work
        from mirrorflow._core.figure import check_figure_path

        plot = check_figure_path(plot)
    if every is not None:
        check_positive_int("--every", every)
    p = plan(lr_schedule, peak_lr=peak_lr, total_steps=steps, weight_decay=weight_decay,
             warmup_steps=warmup, min_lr_ratio=min_lr_ratio, steps_per_epoch=steps_per_epoch,
             target_a=target_a, target_timescales=target_timescales,
             reference_weight_decay=reference_wd)
    rows = p.rows(every or max(1, steps // 10))
    if as_json:
        typer.echo(json.dumps(jsonable({**p.summary(), "rows": [
            {"step": k, "lr": lr, "a": a} for k, lr, a in rows]})))
    else:
        s = p.summary()
        tau = f"{s['tau_steps_at_peak']:.6g} steps"
        if s["tau_epochs_at_peak"] is not None:
            tau += f" = {s['tau_epochs_at_peak']:.6g} epochs"
        say(f"{lr_schedule} lr, peak {peak_lr:g}, warm-up {warmup}, {steps} steps; λ = {weight_decay:g}")
        say(f"AdamW timescale τ = 1/(η λ) at the peak lr: {tau}")
        say(f"constant decay: a = {s['a_constant']:.6g} at the end (= timescales elapsed)")
        if p.target_a is not None:
            ep = "" if s["switch_epoch"] is None else f" (epoch {s['switch_epoch']:.6g})"
            say(f"target a = {p.target_a:.6g} ({p.target_from}): switch_off(at={p.switch_step}){ep} "
                f"gives a = {p.a_at_switch:.6g}; budget({p.target_a:.6g}) gives a = {p.target_a:.6g} exactly")
        say("step K    lr of step K  a after K steps")
        for k, lr, a in rows:
            say(f"{k:<9d} {'-' if lr is None else format(lr, '.6g'):<13s} {a:.6g}")
    if plot is not None:
        from mirrorflow._core.figure import save_figure

        save_figure(p.figure(), plot)
        if not as_json:
            say(f"figure written to {plot}")


def _until_decided(store, specs, executor, quick: bool, looks: int, budget: float, limits,
                   retry_failed: bool, resume: str, started: float) -> tuple[Any, bool]:
    """The rounds of ``reproduce --until-decided`` after the first sweep (look 1): evaluate the
    claims with the per-look rule; the experiments of undecided claims get the next seed
    count of the schedule; stop when all are decided, after ``looks`` looks, or when the next
    round would not fit in ``budget`` minutes. Returns ``(rule, some run incomplete)``."""
    import time

    import mirrorflow
    from mirrorflow.experiments import REGISTRY
    from mirrorflow.report.claims import evaluate_claims
    from mirrorflow.report.claims.sequential import (
        look_rule,
        seeds_schedule,
        undecided_experiments,
        with_seeds,
    )
    from mirrorflow.sweep import check_sweep_limits, parse_spec, run_sweep
    from mirrorflow.sweep.store import StoreWriteError

    rule = look_rule(looks)
    kind = "quick" if quick else "full"
    first = {s.experiment: len({r.config.seed for r in s.runs}) for s in specs}
    start, incomplete = started, False
    last_round = time.monotonic() - started  # the first round's time: the built-in sweeps
    for look in range(1, looks + 1):
        records = [r for r in store.records() if r.version == mirrorflow.__version__]
        results = evaluate_claims(records, rule=rule)
        todo = undecided_experiments(results)
        decided = sum(r.verdict in ("supported", "contradicted") for r in results)
        say(f"look {look}/{looks}: {decided} claims decided at the per-look level "
            f"{rule.alpha_side:.3g} per side; undecided experiments: {', '.join(todo) or 'none'}")
        if not todo or look == looks:
            break
        used = (time.monotonic() - start) / 60.0
        if used + last_round / 60.0 > budget:  # the next round: about the runs added so far
            say(f"budget: {used:.1f} of {budget:g} min used; the next round would not fit, "
                f"stopping after look {look}")
            break
        t0 = time.monotonic()
        for name in todo:
            n = seeds_schedule(first.get(name, 1), looks, rule)[look]
            entry = with_seeds(REGISTRY[name].sweeps[kind], n)
            spec = parse_spec({"experiment": name, "name": f"{name}-{kind}", **entry},
                              source=f"built-in {kind} sweep of {name} with {n} seeds")
            check_sweep_limits(spec, limits)
            try:
                summary = run_sweep(spec, store, executor, retry_failed=retry_failed,
                                    progress=True, limits=limits)
            except KeyboardInterrupt as exc:
                _interrupted(store, [spec], resume, exc)
            except StoreWriteError as exc:
                _store_failed(store, [spec], resume, exc)
            incomplete |= not summary.complete
            say(f"look {look + 1}: {summary.line()}")
        last_round = time.monotonic() - t0
    return rule, incomplete


def main() -> None:  # pragma: no cover - console entry point
    try:
        app()
    except BrokenPipeError:  # `mirrorflow --help | head`: the reader left; not an error of ours
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
