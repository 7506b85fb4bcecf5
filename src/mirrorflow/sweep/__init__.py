"""Sweeps: TOML grid/zip specs, a SQLite results store, local and Dask execution.

See ``docs/sweeps.md``. The pieces:

spec      ``load_spec(path) -> SweepSpec``: validated, expanded runs with stable ids.
store     ``ResultStore(path)``: one row per finished run, curves as ``.npz`` next to it.
execute   ``run_sweep(spec, store, executor)``: orchestration, single writer; re-exports the three below.
task      ``execute_task``: one task where workers run, an ``Outcome`` per run.
pool      ``LocalExecutor``: in-process or spawned worker processes, deaths, memory admission.
dask_exec ``DaskExecutor``, ``check_scheduler``: Dask cluster or scheduler, address probe.
builtin   the quick / full sweeps of ``mirrorflow reproduce``.
ahead     ``prepare_ahead(specs)``: the experiments' one-time setup in a background process.
"""

from mirrorflow.sweep.ahead import prepare_ahead
from mirrorflow.sweep.builtin import builtin_spec, builtin_specs
from mirrorflow.sweep.execute import (
    DaskExecutor,
    LocalExecutor,
    SweepSummary,
    check_sweep_limits,
    classify,
    make_executor,
    run_sweep,
)
from mirrorflow.sweep.spec import RunSpec, SweepSpec, load_spec, parse_spec, run_id
from mirrorflow.sweep.store import ResultStore, RunRecord

__all__ = [
    "DaskExecutor",
    "LocalExecutor",
    "ResultStore",
    "RunRecord",
    "RunSpec",
    "SweepSpec",
    "SweepSummary",
    "builtin_spec",
    "builtin_specs",
    "check_sweep_limits",
    "classify",
    "load_spec",
    "make_executor",
    "parse_spec",
    "prepare_ahead",
    "run_id",
    "run_sweep",
]
