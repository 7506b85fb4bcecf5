"""Continuous-time schedules: rate and integral against hand values and quadrature."""

import pytest
from scipy.integrate import quad

from mirrorflow import MirrorflowError
from mirrorflow.schedules import BudgetDecay, ConstantDecay, NoDecay, SwitchOffDecay, make_schedule


@pytest.mark.parametrize("sched", [NoDecay(), ConstantDecay(0.3), SwitchOffDecay(0.2, 20.0), BudgetDecay(0.5, target_a=3.0)])
def test_integral_is_integral_of_rate(sched):
    for t in (0.0, 5.0, 19.9, 20.0, 37.0):
        brk = [b for b in sched.breakpoints if 0 < b < t]
        val = quad(lambda s: float(sched.rate(s)), 0, t, points=brk or None, limit=200)[0] if t > 0 else 0.0
        assert float(sched.integral(t)) == pytest.approx(val, abs=1e-9)


def test_hand_values():
    s = SwitchOffDecay(0.2, 20.0)
    assert float(s.integral(100.0)) == pytest.approx(4.0)  # a = 0.2·20
    assert float(s.rate(19.99)) == 0.2 and float(s.rate(20.0)) == 0.0
    assert s.final_integral == pytest.approx(4.0) and s.settle_time == 20.0
    assert ConstantDecay(0.1).final_integral == float("inf")
    b = BudgetDecay(0.5, target_a=3.0)
    assert b.at == pytest.approx(6.0) and b.final_integral == pytest.approx(3.0)


def test_make_schedule_and_errors():
    assert make_schedule("switch-off", 0.2, 20.0) == SwitchOffDecay(0.2, 20.0)
    with pytest.raises(MirrorflowError, match="unknown schedule 'cosine-ish'"):
        make_schedule("cosine-ish", 0.1)
    with pytest.raises(MirrorflowError, match="wd must be >= 0"):
        ConstantDecay(-0.1)
    with pytest.raises(MirrorflowError, match="finite"):
        ConstantDecay(float("nan"))
    with pytest.raises(MirrorflowError, match="switch time must be >= 0"):
        SwitchOffDecay(0.1, -1.0)
    with pytest.raises(MirrorflowError, match="--switch-at"):
        make_schedule("switch-off", 0.1)
    with pytest.raises(MirrorflowError, match="budget"):
        BudgetDecay(0.1, target_a=0.0)
