"""One contract test over every registered experiment (scikit-learn's ``parametrize_with_checks``).

For each experiment, on its declared ``smoke`` config: the shared schedule fields are declared
once (inherited from ScheduleConfig); ``summary()`` is JSON and includes the config that was
run; ``run_many`` gives what ``run`` gives one by one; the plot works on Results rebuilt from a
real results store after a sweep; its description is the same lazily and loaded; its quick and
full sweeps parse.
"""

from __future__ import annotations

import dataclasses
import json
import math

import matplotlib.image as mpimg
import pytest

from mirrorflow._core.jsonable import jsonable
from mirrorflow.experiments import BUILTIN, REGISTRY
from mirrorflow.experiments.base import ScheduleConfig, module_description
from mirrorflow.sweep import LocalExecutor, ResultStore, parse_spec, run_sweep
from mirrorflow.sweep.builtin import builtin_spec
from mirrorflow.sweep.spec import config_to_dict

NAMES = sorted(REGISTRY)
SHARED = ("schedule", "wd", "switch_at", "budget", "seed")


def test_every_builtin_is_registered_here():
    # CI installs every extra: an experiment missing here would silently skip its checks
    assert sorted(name for name, _, _ in BUILTIN) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_shared_fields_declared_once(name):
    exp = REGISTRY[name]
    assert issubclass(exp.config_cls, ScheduleConfig)
    fields = {f.name for f in dataclasses.fields(exp.config_cls)}
    assert set(SHARED) <= fields
    # the subclass overrides defaults only: same annotation as the base
    base = {f.name: f.type for f in dataclasses.fields(ScheduleConfig)}
    for f in dataclasses.fields(exp.config_cls):
        if f.name in SHARED:
            assert f.type == base[f.name], f"{name}.{f.name} redeclares its type"
    # a budget the run can spend: ends at a quarter of the default run (time_grid)
    end = exp.make_config({}).time_grid().end
    cfg = exp.make_config({"schedule": "budget", "budget": 0.25 * 0.25 * end, "wd": 0.25})
    sched = cfg.make_schedule()
    assert sched.final_integral == pytest.approx(0.0625 * end)
    assert sched.settle_time == pytest.approx(0.25 * end)


@pytest.mark.parametrize("name", NAMES)
def test_description_once(name):
    module = next(m for n, m, _ in BUILTIN if n == name)
    assert REGISTRY[name].description == module_description(module) != ""


@pytest.mark.parametrize("name", NAMES)
def test_builtin_sweeps_parse(name):
    for quick in (True, False):
        spec = builtin_spec(name, quick)
        assert spec is not None and spec.experiment == name and len(spec.runs) >= 3


def _same(a, b, where):
    if isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12), where
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for x, y in zip(a, b):
            _same(x, y, where)
    else:
        assert a == b, where


@pytest.mark.parametrize("name", NAMES)
def test_run_summary_store_and_plot(name, tmp_path):
    exp = REGISTRY[name]
    c0 = exp.make_config(dict(exp.smoke))
    c1 = exp.make_config({**exp.smoke, "seed": 1, "schedule": "constant"})
    singles = [exp.run(c0), exp.run(c1)]
    batched = exp.run_many([c0, c1])
    for s, b in zip(singles, batched):
        ms, mb = s.metrics(), b.metrics()
        assert ms.keys() == mb.keys()
        for k in ms:
            if k != "runtime_s":
                _same(ms[k], mb[k], f"{name}: run_many vs run on {k}")
    # summary: JSON, and it says what was run
    summary = singles[0].summary()
    assert summary["config"] == config_to_dict(c0)
    json.dumps(jsonable(summary), allow_nan=False)
    # a real sweep into a real store, then the plot on Results rebuilt from the records
    spec = parse_spec({"experiment": name, "base": dict(exp.smoke)})
    with ResultStore(tmp_path / "r.sqlite") as store:
        summ = run_sweep(spec, store, LocalExecutor(workers=1))
        assert summ.done == 1, store.records()[0].message
        rec = store.records()[0]
        result = exp.result_from_record(rec.config, rec.metrics, store.load_curves(rec))
    assert result.config == c0
    for k, v in singles[0].metrics().items():
        if k != "runtime_s":
            _same(jsonable(result.metrics()[k]), jsonable(v), f"{name}: stored {k}")
    exp.plot([result], tmp_path / "fig.png")
    assert mpimg.imread(tmp_path / "fig.png").shape[0] > 100


