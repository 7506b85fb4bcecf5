"""``sweep/execute.py`` was split into task / pool / dask_exec (issue 26): every name that
``from mirrorflow.sweep.execute import X`` gave before still comes from there, as the very
object of the module that now defines it (patch that module, not ``execute``)."""

from __future__ import annotations

import importlib
import inspect

import pytest

#: where each name of the former execute.py lives now (the split, written out by hand)
MOVED = {
    "mirrorflow.sweep.task": ("LOST", "Keep", "Outcome", "Task", "_STEP_KEYS", "_non_finite",
                              "_one_line", "_outcomes", "_task_args", "classify",
                              "execute_task"),
    "mirrorflow.sweep.pool": ("LocalExecutor", "_STARTED", "_Worker", "_die_with_parent",
                              "_exit_reason", "_pool_imap", "_worker_main", "task_memory"),
    "mirrorflow.sweep.dask_exec": ("DASK_CONNECT_TIMEOUT_S", "DASK_HANDSHAKE_TIMEOUT_S",
                                   "DaskExecutor", "_DASK_SCHEMES", "_dask_outcomes",
                                   "check_scheduler"),
    "mirrorflow.sweep.execute": ("SweepSummary", "check_sweep_limits", "make_executor",
                                 "make_tasks", "run_sweep"),
}


@pytest.mark.parametrize("module,name", [(m, n) for m, names in MOVED.items() for n in names])
def test_every_former_name_still_imports_from_execute(module, name):
    execute = importlib.import_module("mirrorflow.sweep.execute")
    home = importlib.import_module(module)
    assert getattr(execute, name) is getattr(home, name)
    obj = getattr(home, name)
    if inspect.isfunction(obj) or (inspect.isclass(obj) and name not in ("Keep", "Task")):
        assert obj.__module__ == module  # defined there, not re-exported from elsewhere


def test_public_names_are_unchanged():
    execute = importlib.import_module("mirrorflow.sweep.execute")
    assert sorted(execute.__all__) == sorted([
        "DASK_CONNECT_TIMEOUT_S", "DASK_HANDSHAKE_TIMEOUT_S", "DaskExecutor", "LocalExecutor",
        "Outcome", "SweepSummary", "check_scheduler", "classify", "execute_task",
        "make_executor", "make_tasks", "run_sweep"])
