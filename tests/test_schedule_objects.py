"""Schedule objects answer the schedule questions; one name table; Registry is a Mapping;
every public error class lives in mirrorflow._core.errors."""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.integrate import quad

import mirrorflow
from mirrorflow import MirrorflowError
from mirrorflow._core import errors
from mirrorflow.experiments.base import Experiment, Registry
from mirrorflow.schedules import training
from mirrorflow.schedules.continuous import (
    SCHEDULE_NAMES,
    SCHEDULES,
    BudgetDecay,
    ConstantDecay,
    NoDecay,
    Schedule,
    SwitchOffDecay,
    make_schedule,
)
from mirrorflow.schedules.training import from_continuous

OPTIONS = {"wd": 0.3, "switch_at": 2.5, "budget": 0.45}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_table_name_builds_its_class_and_integral_is_the_quadrature_of_the_rate(name):
    s = make_schedule(name, **OPTIONS)
    assert type(s) is SCHEDULES[name] and s.name == name
    for t in (0.7, 1.5, 4.0):
        cuts = [b for b in s.breakpoints if 0 < b < t]
        want, _ = quad(lambda u: float(s.rate(u)), 0.0, t, points=cuts or None, epsabs=1e-13)
        assert float(s.integral(t)) == pytest.approx(want, abs=1e-11)


def test_names_and_hand_values_of_each_schedule():
    assert SCHEDULE_NAMES == ("none", "constant", "switch-off", "budget")
    assert make_schedule("switch-off", **OPTIONS).final_integral == pytest.approx(0.3 * 2.5)
    assert make_schedule("budget", **OPTIONS).at == pytest.approx(0.45 / 0.3)
    assert make_schedule("constant", **OPTIONS).final_integral == float("inf")


@pytest.mark.parametrize(("schedule", "lr", "total", "want"), [
    (NoDecay(), 0.1, None, None),
    (ConstantDecay(0.0), 0.1, None, None),
    (ConstantDecay(0.2), 0.1, None, training.Constant),
    (SwitchOffDecay(1.0, at=0.6), 2e-3, None, 300),          # ceil(0.6 / 0.002)
    (SwitchOffDecay(1.0, at=0.6), 2e-3, 300, training.Constant),  # never reached in 300 steps
    (BudgetDecay(0.5, target_a=2.0), 0.1, None, 2.0),
])
def test_from_continuous_asks_the_object(schedule, lr, total, want):
    out = from_continuous(schedule, lr, total)
    if want is None:
        assert out is None
    elif isinstance(want, type):
        assert isinstance(out, want)
    elif isinstance(schedule, BudgetDecay):
        assert out.target_a == want
    else:
        assert out.at == want


@dataclass(frozen=True)
class _Ramp(Schedule):
    """α_t = wd·max(0, 1 − t/T): no step form declared."""

    wd: float
    T: float

    def rate(self, t):
        return self.wd * np.clip(1 - np.asarray(t, dtype=np.float64) / self.T, 0, None)

    def integral(self, t):
        t = np.clip(np.asarray(t, dtype=np.float64), 0, self.T)
        return self.wd * (t - t**2 / (2 * self.T))


def test_a_schedule_without_a_step_form_is_refused_in_one_line():
    with pytest.raises(MirrorflowError) as exc:
        from_continuous(_Ramp(1.0, 2.0), lr=0.1)
    assert "\n" not in str(exc.value) and "_Ramp" in str(exc.value)
    with pytest.raises(MirrorflowError, match="cannot convert"):
        from_continuous("switch-off", lr=0.1)
    assert float(_Ramp(1.0, 2.0).integral(5.0)) == pytest.approx(1.0)  # wd·T/2


# --------------------------------------------------------------------------- Registry
def test_registry_is_a_mapping_whose_every_read_loads():
    r = Registry()
    r.register_lazy("sr", "mirrorflow.experiments.sparse_regression")
    r.register_lazy("ghost", "mirrorflow_no_such_module_xyz")
    assert isinstance(r, Mapping) and not isinstance(r, dict)
    assert "ghost" in r and len(r) == 2 and sorted(r) == ["ghost", "sr"]  # no import yet
    with pytest.raises(ModuleNotFoundError):
        dict(r)  # dict() reads every value through the loading (the ghost fails to import)
    del r["ghost"]
    assert "ghost" not in r and isinstance(dict(r)["sr"], Experiment)
    c = r.copy()
    assert isinstance(c, Registry) and c is not r and isinstance(c["sr"], Experiment)
    assert isinstance(c.pop("sr"), Experiment) and "sr" not in c and "sr" in r
    assert r.get("nope") is None
    with pytest.raises(MirrorflowError, match="unknown experiment 'nope'"):
        r.get_experiment("nope")


# --------------------------------------------------------------------------- errors
def test_every_public_error_lives_in_core_errors():
    from mirrorflow._core.limits import RunLimitError
    from mirrorflow._core.validation import MirrorflowError as V
    from mirrorflow.bench._harness import BenchmarkMismatch
    from mirrorflow.geometry import NonCommutingError

    assert mirrorflow.MirrorflowError is errors.MirrorflowError is V
    assert NonCommutingError is errors.NonCommutingError
    assert RunLimitError is errors.RunLimitError
    assert BenchmarkMismatch is errors.BenchmarkMismatch
    for cls in (errors.MirrorflowError, NonCommutingError, RunLimitError, BenchmarkMismatch):
        assert cls.__module__ == "mirrorflow._core.errors"
