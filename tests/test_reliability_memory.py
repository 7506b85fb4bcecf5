"""A machine-wide memory budget for concurrent runs (issue 24, item 6): the local pool admits
a task while the estimates of the running tasks, its own and the overhead of every live worker
(:data:`mirrorflow._core.limits.WORKER_OVERHEAD_BYTES`) fit ``--max-memory``. Real worker
processes; a plugin experiment whose memory estimate is a config field (fake estimates, no
real allocation) and whose runs write when they start and end."""

from __future__ import annotations

import json
import sqlite3

import pytest

from reliability_helpers import cli

MEM_MODULE = '''
"""mem: a run with a stated memory estimate; it records its start and end times, and runs
until another run has started (at most `wait` s), so concurrency shows as overlap."""
import os
import time
from dataclasses import dataclass

from pydantic.dataclasses import dataclass as pdataclass

from mirrorflow._core.limits import RunCost
from mirrorflow.experiments.base import CONFIG, Experiment, ExperimentResult, ScheduleConfig


@pdataclass(frozen=True, config=CONFIG)
class Config(ScheduleConfig):
    mem_gb: float = 0.1
    wait: float = 10.0
    folder: str = "."

    def cost(self):
        return RunCost(steps=1, memory=int(self.mem_gb * 2**30), what="a stated estimate")


@dataclass(frozen=True)
class Result(ExperimentResult):
    config: Config
    t_start: float
    t_end: float


def run(config, progress=False):
    t0 = time.time()
    open(os.path.join(config.folder, f"start-{config.seed}"), "w").close()
    end = time.monotonic() + config.wait
    others = lambda: [f for f in os.listdir(config.folder)
                      if f.startswith("start-") and f != f"start-{config.seed}"]
    while time.monotonic() < end and not others():
        time.sleep(0.05)
    time.sleep(0.5)
    return Result(config=config, t_start=t0, t_end=time.time())


EXPERIMENT = Experiment(name="mem", config_cls=Config, result_cls=Result, run=run,
                        description="test experiment with a stated memory estimate")
'''
SITE = 'from mirrorflow.experiments import REGISTRY\n\nREGISTRY.register_lazy("mem", "mf_mem")\n'


def _env(folder):
    import os

    folder.mkdir(exist_ok=True)
    (folder / "mf_mem.py").write_text(MEM_MODULE)
    (folder / "sitecustomize.py").write_text(SITE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])
    return env


BUDGET_GB = 4.0


@pytest.mark.slow  # two pools of two spawned workers: about 80 s on 2 busy cores
@pytest.mark.parametrize("fraction, together", [(0.9, False), (0.2, True)])
def test_two_runs_that_do_not_fit_the_budget_together_do_not_run_together(tmp_path, fraction,
                                                                           together):
    """Two runs, each estimated at ``fraction`` × the budget, on two workers. At 0.9 (1.8× the
    budget together, plus 2 × 0.3 GB of workers) they run one after the other; at 0.2 (0.4×
    plus 0.6 GB: 2.2 of 4 GB) together — the control that shows the test sees concurrency.
    Before: the 0.9 pair ran together (the bound was per run)."""
    env = _env(tmp_path / "plugin")
    runs = tmp_path / "runs"
    runs.mkdir()
    spec = tmp_path / "m.toml"
    spec.write_text(f'experiment = "mem"\n[base]\nmem_gb = {fraction * BUDGET_GB}\n'
                    f'folder = "{runs}"\n[grid]\nseed = [0, 1]\n')
    db = tmp_path / "m.sqlite"
    proc = cli("sweep", spec, "--db", db, "--workers", 2, "--max-memory", BUDGET_GB, env=env,
               timeout=600)
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(db) as con:
        spans = sorted((m["t_start"], m["t_end"]) for (m,) in
                       ((json.loads(r[0]),) for r in con.execute("SELECT metrics FROM runs")))
    assert len(spans) == 2
    (s0, e0), (s1, e1) = spans
    overlap = s1 < e0
    assert overlap == together, spans
