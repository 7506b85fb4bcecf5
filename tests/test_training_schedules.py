"""Step-based training schedules: hand-computed factors and construction-time errors."""

import math

import pytest

from mirrorflow import MirrorflowError
from mirrorflow.schedules import training


def test_switch_off_int_step_hand_values():
    s = training.switch_off(at=3)
    assert [s.factor(k) for k in range(6)] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


def test_switch_off_fraction_resolves_against_total_steps():
    s = training.switch_off(at=0.25).bind(20)
    assert [k for k in range(20) if s.factor(k) > 0] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("bad", [
    lambda: training.switch_off(at=11, total_steps=10),      # beyond training length
    lambda: training.switch_off(at=11).bind(10),
    lambda: training.switch_off(at=1.5),                     # float fraction > 1
    lambda: training.switch_off(at=0.5).bind(None),          # fraction, no length
    lambda: training.switch_off(at=-1),
    lambda: training.budget(0.0),                            # budget <= 0
    lambda: training.budget(-1.0),
    lambda: training.constant(-0.1),                         # negative decay
    lambda: training.piecewise([5], [1.0, -1.0]),
    lambda: training.piecewise([5, 3], [1.0, 0.5, 0.0]),
    lambda: training.piecewise([5], [1.0]),
    lambda: training.linear(end=3, start=5),
    lambda: training.as_schedule(0.5),                       # not callable
    lambda: training.from_callable("cosine"),
])
def test_bad_input_fails_at_construction_with_one_line(bad):
    with pytest.raises(MirrorflowError) as info:
        bad()
    assert "\n" not in str(info.value)


def test_linear_hand_values():
    s = training.linear().bind(10)
    for k in range(12):
        assert s.factor(k) == pytest.approx(max(0.0, 1 - k / 10), abs=1e-15)
    s2 = training.linear(end=8, start=4)
    assert [s2.factor(k) for k in (0, 4, 6, 8, 9)] == pytest.approx([1, 1, 0.5, 0, 0])


def test_cosine_endpoints_and_symmetry():
    s = training.cosine().bind(10)
    assert s.factor(0) == 1.0
    assert s.factor(5) == pytest.approx(0.5, abs=1e-15)
    assert s.factor(10) == 0.0 and s.factor(15) == 0.0
    for k in range(11):  # ½(1+cos(πp)) + ½(1+cos(π(1-p))) = 1
        assert s.factor(k) + s.factor(10 - k) == pytest.approx(1.0, abs=1e-14)
    assert s.factor(2) == pytest.approx((1 + math.cos(math.pi / 5)) / 2)


def test_piecewise_hand_values_steps_and_fractions():
    s = training.piecewise([2, 5], [1.0, 0.5, 0.0])
    assert [s.factor(k) for k in range(7)] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0]
    f = training.piecewise([0.2, 0.5], [2.0, 1.0, 0.0]).bind(10)
    assert [f.factor(k) for k in range(7)] == [2.0, 2.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_budget_factor_hand_cases():
    b = training.budget(1.0)
    assert b.factor(0, integrated=0.0, increment=0.25) == 1.0
    assert b.factor(7, integrated=0.9, increment=0.25) == pytest.approx(0.4)  # lands on 1.0
    assert b.factor(8, integrated=1.0, increment=0.25) == 0.0
    assert training.budget(1.0, exact=False).factor(7, 0.9, 0.25) == 1.0


def test_callable_schedule_checked_at_call():
    s = training.as_schedule(lambda k: 0.5 ** k)
    assert s.factor(3) == 0.125
    neg = training.as_schedule(lambda k: -1.0)
    with pytest.raises(MirrorflowError, match=">= 0"):
        neg.factor(0)
    nan = training.as_schedule(lambda k: float("nan"))
    with pytest.raises(MirrorflowError):
        nan.factor(0)


def test_schedules_are_frozen_and_bind_is_pure():
    s = training.switch_off(at=0.5)
    b = s.bind(10)
    assert b.at_step == 5 and s.at_step is None
    with pytest.raises(AttributeError):
        b.at = 3


# -- composition (issue 13) -----------------------------------------------------------------------

def test_warmup_hand_values_like_torch_linear_lr():
    s = training.warmup(4, start=0.2)
    assert [s.factor(k) for k in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert [training.warmup(0.5).bind(4).factor(k) for k in range(3)] == [0.0, 0.5, 1.0]


def test_sequential_fractions_bind_each_segment_to_its_length():
    s = training.sequential([training.warmup(1.0), training.linear(), training.constant(0.0)],
                            milestones=[0.2, 0.6]).bind(10)
    # warm-up over steps 0-1, linear 1 -> 0 over steps 2-5 (segment length 4), then off
    assert [s.factor(k) for k in range(10)] == pytest.approx(
        [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0])
    assert s.describe().startswith("sequential([warmup(")
    assert not s.needs_integrated
    assert training.sequential([training.constant(), training.budget(0.1)], [3]).needs_integrated


@pytest.mark.parametrize("bad, msg", [
    (lambda: training.sequential([training.constant()], milestones=[3]), "one milestone fewer"),
    (lambda: training.sequential([training.constant()] * 3, milestones=[5, 5]), "strictly increasing"),
    (lambda: training.sequential([training.constant()] * 2, milestones=[0]), "> 0"),
    (lambda: training.sequential([training.constant()] * 2, milestones=[0.5]).bind(None), "total_steps"),
    (lambda: training.sequential([training.constant()] * 2, milestones=[12], total_steps=10),
     "beyond the training length"),
    (lambda: training.sequential([training.constant()] * 2, milestones=[10], total_steps=10),
     "at or after the end"),
    (lambda: training.sequential([training.switch_off(8), training.constant()], [5]),
     "segment 0.*beyond"),
    (lambda: training.sequential(training.constant(), [5]), "list of schedules"),
    (lambda: training.sequential(["cosine", training.constant()], [5]), "callable"),
    (lambda: training.warmup(0), "steps must be >= 1"),
    (lambda: training.warmup(5, start=1.5), "start"),
])
def test_composition_bad_input_is_one_line(bad, msg):
    with pytest.raises(MirrorflowError, match=msg) as exc:
        bad()
    assert "\n" not in str(exc.value)


def test_a_fraction_of_training_rounds_to_the_nearest_step():
    """Mutation T9 (issue 28): 0.33 of 20 steps is step 6.6, so the decay is on for steps 0-6
    and off from step 7 (nearest step, not truncated to 6); 0.33 of 10 steps is 3.3 -> 3."""
    s = training.switch_off(at=0.33).bind(20)
    assert [s.factor(k) for k in range(5, 9)] == [1.0, 1.0, 0.0, 0.0]
    s = training.switch_off(at=0.33).bind(10)
    assert [s.factor(k) for k in range(2, 5)] == [1.0, 0.0, 0.0]
