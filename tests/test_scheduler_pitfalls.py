"""The workflows of issue 13 that used to fail silently, on real torch optimizers (plain PyTorch).

Each test reproduces what a user does — a notebook cell run twice, resuming from a checkpoint
written without mirrorflow, unfreezing layers, loading a plain optimizer checkpoint in torch's
recommended order, another scheduler writing ``weight_decay``, loading the wrong state — and
checks the outcome against the weights themselves: with a zero gradient, SGD and AdamW multiply
the weights by exactly ``∏_k (1 − η_k λ_k)``, so the weights witness which decay each step
really used (a hand product, independent of the scheduler's bookkeeping).
"""

import copy
import io
import math
import warnings

import pytest
import torch

from mirrorflow import MirrorflowError
from mirrorflow.schedules import WeightDecayScheduler, training
from mirrorflow.schedules.scheduler import MirrorflowWarning, has_scheduler_state


def _model(seed=0, n=4):
    torch.manual_seed(seed)
    return torch.nn.Linear(n, 3).double()


def _groups(m, wd):
    return [{"params": [m.weight], "weight_decay": wd}, {"params": [m.bias], "weight_decay": 0.0}]


def _zero_grad_step(params, opt):
    opt.zero_grad()
    (0.0 * sum(p.sum() for p in params)).backward()
    opt.step()


def _hand(lr, wd, factors):
    """Shrink factor and a of steps with decay ``wd·f`` at constant ``lr`` (by hand)."""
    shrink, a = 1.0, 0.0
    for f in factors:
        shrink *= 1 - lr * wd * f
        a += lr * wd * f
    return shrink, a


# -- 1. two schedulers on one optimizer ---------------------------------------------------------

def test_second_scheduler_on_one_optimizer_is_refused_and_can_take_over_explicitly():
    m = _model()
    w0 = m.weight.detach().clone()
    opt = torch.optim.SGD(_groups(m, 0.5), lr=0.1)
    cell = "wd = WeightDecayScheduler(opt, training.switch_off(at=5))"
    ns = {"WeightDecayScheduler": WeightDecayScheduler, "training": training, "opt": opt}
    exec(cell, ns)  # the notebook cell, run once ...
    first = ns["wd"]
    _zero_grad_step(list(m.parameters()), opt)
    with pytest.raises(MirrorflowError, match=r"already scheduled.*replace=True"):
        exec(cell, ns)  # ... and run again: refused, nothing changed
    assert WeightDecayScheduler.active(opt) is first
    assert first.steps_taken == 1
    # explicit takeover: the old one is detached, the new one continues its state
    second = WeightDecayScheduler(opt, training.switch_off(at=5), replace=True)
    assert WeightDecayScheduler.active(opt) is second and not first._handles
    for _ in range(7):
        _zero_grad_step(list(m.parameters()), opt)
    assert second.steps_taken == 8  # one count per optimizer step, not two
    shrink, a = _hand(0.1, 0.5, [1] * 5 + [0] * 3)  # switch at step 5, exactly
    torch.testing.assert_close(m.weight.detach(), w0 * shrink, rtol=1e-13, atol=0)
    assert second.integrated == pytest.approx(a, rel=1e-13)


def test_after_remove_a_new_scheduler_continues_and_a_deep_copy_is_not_owned():
    m = _model()
    opt = torch.optim.SGD(_groups(m, 0.5), lr=0.1)
    s1 = WeightDecayScheduler(opt, training.switch_off(at=3))
    _zero_grad_step(list(m.parameters()), opt)
    s1.remove()
    assert WeightDecayScheduler.active(opt) is None
    s2 = WeightDecayScheduler(opt, training.switch_off(at=3))  # no error, continues at step 1
    assert s2.steps_taken == 1
    clone = copy.deepcopy(opt)
    assert WeightDecayScheduler.active(clone) is None


# -- 2. start at step N (a checkpoint written without mirrorflow) --------------------------------

def _plain_run(steps, wd=0.5, lr=0.1, opt_cls=torch.optim.AdamW):
    """A run WITHOUT mirrorflow (constant decay), checkpointed through bytes after ``steps``."""
    m = _model()
    opt = opt_cls(_groups(m, wd), lr=lr)
    for _ in range(steps):
        _zero_grad_step(list(m.parameters()), opt)
    buf = io.BytesIO()
    torch.save({"m": m.state_dict(), "o": opt.state_dict()}, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_start_step_resumes_the_schedule_at_step_n_and_says_a_is_a_lower_bound():
    ckpt = _plain_run(7)
    m = _model()
    m.load_state_dict(ckpt["m"])
    opt = torch.optim.AdamW(_groups(m, 0.5), lr=0.1)
    opt.load_state_dict(ckpt["o"])
    w7 = m.weight.detach().clone()
    with pytest.warns(MirrorflowWarning, match=r"step 7 is unknown.*lower bound.*integrated="):
        wd = WeightDecayScheduler(opt, training.switch_off(at=0.5), total_steps=20, start_step=7)
    for _ in range(13):
        _zero_grad_step(list(m.parameters()), opt)
    # decay on for global steps 7, 8, 9 only (switch at 10), not for 10 more steps
    shrink, a = _hand(0.1, 0.5, [1, 1, 1] + [0] * 10)
    torch.testing.assert_close(m.weight.detach(), w7 * shrink, rtol=1e-13, atol=0)
    assert wd.steps_taken == 20
    assert wd.integrated == pytest.approx(a, rel=1e-13)  # steps 7.. only
    assert wd.integrated_is_lower_bound and wd.counted_from == 7
    assert wd.state_dict()["counted_from"] == 7


def test_start_step_with_known_integrated_is_exact_and_budget_counts_it():
    ckpt = _plain_run(4)  # 4 steps of constant decay 0.5 at lr 0.1: a = 0.2 by hand
    m = _model()
    m.load_state_dict(ckpt["m"])
    opt = torch.optim.AdamW(_groups(m, 0.5), lr=0.1)
    opt.load_state_dict(ckpt["o"])
    w4 = m.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error", MirrorflowWarning)
        wd = WeightDecayScheduler(opt, training.budget(0.3), start_step=4, integrated=0.2)
    for _ in range(5):
        _zero_grad_step(list(m.parameters()), opt)
    # the budget had 0.1 left: two full steps of 0.05, then off
    shrink, _ = _hand(0.1, 0.5, [1, 1, 0, 0, 0])
    torch.testing.assert_close(m.weight.detach(), w4 * shrink, rtol=1e-13, atol=0)
    assert wd.integrated == pytest.approx(0.3, rel=1e-13)
    assert not wd.integrated_is_lower_bound


def test_start_step_is_ignored_with_a_warning_when_the_optimizer_carries_state():
    m = _model()
    opt = torch.optim.SGD(_groups(m, 0.5), lr=0.1)
    s = WeightDecayScheduler(opt, training.constant())
    for _ in range(3):
        _zero_grad_step(list(m.parameters()), opt)
    s.remove()
    with pytest.warns(MirrorflowWarning, match=r"start_step=9 ignored.*step 3"):
        s2 = WeightDecayScheduler(opt, training.constant(), start_step=9)
    assert s2.steps_taken == 3


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_bad_start_step_and_integrated_are_refused(bad):
    opt = torch.optim.SGD(_groups(_model(), 0.5), lr=0.1)
    with pytest.raises(MirrorflowError, match="start_step"):
        WeightDecayScheduler(opt, training.constant(), start_step=bad)
    for a in (float("nan"), -0.1, float("inf")):
        with pytest.raises(MirrorflowError, match="integrated"):
            WeightDecayScheduler(opt, training.constant(), start_step=2, integrated=a)
    assert not has_scheduler_state(opt)  # nothing was written by the refused constructions


# -- 3. unfreezing layers, and torch's load order -----------------------------------------------

def test_add_param_group_after_building_is_adopted_with_its_own_base_decay():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)).double()
    opt = torch.optim.SGD([{"params": [net[1].weight], "weight_decay": 0.4}], lr=0.1)
    wd = WeightDecayScheduler(opt, training.switch_off(at=6))
    w1_0 = net[1].weight.detach().clone()
    for _ in range(2):
        _zero_grad_step(list(net.parameters()), opt)
    # unfreeze the first layer: a new group with its own decay, and one without decay
    opt.add_param_group({"params": [net[0].weight], "weight_decay": 0.2})
    opt.add_param_group({"params": [net[0].bias], "weight_decay": 0.0})
    w0_2, b0_2 = net[0].weight.detach().clone(), net[0].bias.detach().clone()
    for _ in range(6):
        _zero_grad_step(list(net.parameters()), opt)
    s_old, a_old = _hand(0.1, 0.4, [1] * 6 + [0] * 2)
    s_new, a_new = _hand(0.1, 0.2, [1] * 4 + [0] * 2)  # joined at step 2, switch at step 6
    torch.testing.assert_close(net[1].weight.detach(), w1_0 * s_old, rtol=1e-13, atol=0)
    torch.testing.assert_close(net[0].weight.detach(), w0_2 * s_new, rtol=1e-13, atol=0)
    torch.testing.assert_close(net[0].bias.detach(), b0_2, rtol=0, atol=0)
    assert wd.integrated_per_group == pytest.approx([a_old, a_new, 0.0], rel=1e-13)
    assert wd.base_decays == [0.4, 0.2, 0.0]
    assert wd.steps_taken == 8


def test_add_param_group_with_bad_decay_is_refused_before_the_step():
    m = _model()
    opt = torch.optim.SGD([{"params": [m.weight], "weight_decay": 0.4}], lr=0.1)
    WeightDecayScheduler(opt, training.constant())
    opt.add_param_group({"params": [m.bias], "weight_decay": float("nan")})
    b0 = m.bias.detach().clone()
    with pytest.raises(MirrorflowError, match="new param group 1's weight_decay"):
        _zero_grad_step(list(m.parameters()), opt)
    torch.testing.assert_close(m.bias.detach(), b0, rtol=0, atol=0)


def test_plain_optimizer_checkpoint_loaded_after_building_the_scheduler():
    """torch's recommended order for LR schedulers: build everything, then load state."""
    ckpt = _plain_run(5)
    m = _model()
    m.load_state_dict(ckpt["m"])
    opt = torch.optim.AdamW(_groups(m, 0.5), lr=0.1)
    wd = WeightDecayScheduler(opt, training.switch_off(at=3))
    opt.load_state_dict(ckpt["o"])  # replaces the param groups with ones lacking mf_* keys
    w5 = m.weight.detach().clone()
    with pytest.warns(MirrorflowWarning, match=r"without mirrorflow state.*taken 5 steps.*start_step"):
        for _ in range(4):
            _zero_grad_step(list(m.parameters()), opt)
    shrink, a = _hand(0.1, 0.5, [1, 1, 1, 0])  # the schedule's own steps 0..3
    torch.testing.assert_close(m.weight.detach(), w5 * shrink, rtol=1e-13, atol=0)
    assert wd.integrated == pytest.approx(a, rel=1e-13)


# -- 4. other writers of weight_decay ------------------------------------------------------------

class _TimmLikeScheduler:
    """What timm's ``Scheduler(optimizer, param_group_field='weight_decay')`` does at each
    ``step(epoch)``: ``param_group['weight_decay'] = value`` (timm is not installed here)."""

    def __init__(self, opt, values):
        self.opt, self.values = opt, values

    def step(self, epoch):
        for g in self.opt.param_groups:
            g["weight_decay"] = self.values[epoch]


def test_external_write_is_refused_before_the_step_by_default():
    m = _model()
    opt = torch.optim.AdamW(_groups(m, 0.5), lr=0.1)
    wd = WeightDecayScheduler(opt, training.cosine(end=10))
    timm_like = _TimmLikeScheduler(opt, [0.3, 0.2])
    _zero_grad_step(list(m.parameters()), opt)
    timm_like.step(0)
    w = m.weight.detach().clone()
    with pytest.raises(MirrorflowError, match=r"param group 0's weight_decay was changed outside"
                                              r".*keep one writer.*set_base_decay.*on_external"):
        _zero_grad_step(list(m.parameters()), opt)
    torch.testing.assert_close(m.weight.detach(), w, rtol=0, atol=0)  # no step was taken
    assert wd.steps_taken == 1


def test_user_write_is_refused_and_set_base_decay_is_the_way():
    m = _model()
    opt = torch.optim.SGD(_groups(m, 0.5), lr=0.1)
    wd = WeightDecayScheduler(opt, training.constant(0.5))
    opt.param_groups[1]["weight_decay"] = 0.1  # turning on decay of the no-decay group
    with pytest.raises(MirrorflowError, match="param group 1"):
        wd.step()
    opt.param_groups[1]["weight_decay"] = 0.0
    wd.set_base_decay(0.2, group=0)
    w = m.weight.detach().clone()
    _zero_grad_step(list(m.parameters()), opt)
    torch.testing.assert_close(m.weight.detach(), w * (1 - 0.1 * 0.2 * 0.5), rtol=1e-14, atol=0)


def test_external_write_adopted_as_new_base_when_asked():
    m = _model()
    w0 = m.weight.detach().clone()
    opt = torch.optim.AdamW(_groups(m, 0.5), lr=0.1)
    sched = training.piecewise([2], [1.0, 0.5])
    wd = WeightDecayScheduler(opt, sched, on_external="adopt")
    timm_like = _TimmLikeScheduler(opt, [0.3])
    _zero_grad_step(list(m.parameters()), opt)
    timm_like.step(0)  # writes 0.3 to both groups (also the no-decay one)
    with pytest.warns(MirrorflowWarning, match="adopted as its new base decay"):
        for _ in range(3):
            _zero_grad_step(list(m.parameters()), opt)
    # step 0: 0.5·1; then base 0.3: step 1 factor 1, steps 2, 3 factor 0.5
    shrink = (1 - 0.1 * 0.5) * (1 - 0.1 * 0.3) * (1 - 0.1 * 0.15) ** 2
    torch.testing.assert_close(m.weight.detach(), w0 * shrink, rtol=1e-13, atol=0)
    assert wd.base_decays == [0.3, 0.3]


# -- 5 + issue 15 item 6: load_state_dict checks everything first --------------------------------

def _snapshot(opt):
    return copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])


def test_state_of_another_schedule_is_refused():
    m = _model()
    opt = torch.optim.SGD(_groups(m, 0.5), lr=0.1)
    so = WeightDecayScheduler(opt, training.switch_off(at=5))
    _zero_grad_step(list(m.parameters()), opt)
    state = so.state_dict()
    m2 = _model()
    opt2 = torch.optim.SGD(_groups(m2, 0.5), lr=0.1)
    bu = WeightDecayScheduler(opt2, training.budget(0.3))
    before = _snapshot(opt2)
    with pytest.raises(MirrorflowError, match=r"written by schedule switch_off.*runs budget"):
        bu.load_state_dict(state)
    assert _snapshot(opt2) == before
    # the same schedule with another training length is another schedule too
    f1 = WeightDecayScheduler(torch.optim.SGD(_groups(_model(), 0.5), lr=0.1),
                              training.switch_off(at=0.5), total_steps=10)
    f2 = WeightDecayScheduler(torch.optim.SGD(_groups(_model(), 0.5), lr=0.1),
                              training.switch_off(at=0.5), total_steps=20)
    with pytest.raises(MirrorflowError, match="total_steps=10"):
        f2.load_state_dict(f1.state_dict())


BAD_STATES = {
    "inf base": ("base_weight_decay", [math.inf, 0.0], "finite"),
    "nan base": ("base_weight_decay", [math.nan, 0.0], "finite"),
    "negative base": ("base_weight_decay", [-0.1, 0.0], ">= 0"),
    "zero base": ("base_weight_decay", [0.0, 0.0], "no group with nonzero base"),
    "nan a": ("integrated_wd", [math.nan, 0.0], "integrated"),
    "negative a": ("integrated_wd", [-1.0, 0.0], "integrated"),
    "negative step": ("steps_taken", -3, "steps_taken"),
    "float step": ("steps_taken", 2.5, "steps_taken"),
    "counted after step": ("counted_from", 99, "counted_from"),
    "wrong layout": ("base_weight_decay", [0.5], "param groups"),
}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_bad_state_is_refused_atomically(case):
    key, value, msg = BAD_STATES[case]
    m = _model()
    opt = torch.optim.AdamW(_groups(m, 0.5), lr=0.1)
    wd = WeightDecayScheduler(opt, training.switch_off(at=4))
    _zero_grad_step(list(m.parameters()), opt)
    state = wd.state_dict()
    state[key] = value
    before = _snapshot(opt)
    with pytest.raises(MirrorflowError, match=msg):
        wd.load_state_dict(state)
    assert _snapshot(opt) == before  # untouched ...
    # ... and still working: the next steps match an untouched twin exactly
    twin_m = _model()
    twin = torch.optim.AdamW(_groups(twin_m, 0.5), lr=0.1)
    WeightDecayScheduler(twin, training.switch_off(at=4))
    for _ in range(6):
        for mm, oo in ((m, opt), (twin_m, twin)):
            _zero_grad_step(list(mm.parameters()), oo)
    torch.testing.assert_close(m.weight, twin_m.weight, rtol=0, atol=0)


def test_bad_factor_at_the_loaded_step_is_refused_before_writing():
    m = _model()
    opt = torch.optim.SGD(_groups(m, 0.5), lr=0.1)
    wd = WeightDecayScheduler(opt, lambda k: 1.0 if k < 10 else -1.0)
    state = wd.state_dict()
    state["steps_taken"] = 12
    before = _snapshot(opt)
    with pytest.raises(MirrorflowError, match="at step 12"):
        wd.load_state_dict(state)
    assert _snapshot(opt) == before


# -- composition ---------------------------------------------------------------------------------

def test_sequential_warmup_decay_off_matches_hand_factors_and_round_trips():
    def build():
        m = _model()
        opt = torch.optim.SGD(_groups(m, 0.5), lr=0.1)
        sched = training.sequential([training.warmup(4), training.cosine(), training.constant(0.0)],
                                    milestones=[4, 8])
        return m, opt, WeightDecayScheduler(opt, sched)

    hand_f = [0.0, 0.25, 0.5, 0.75] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)] + [0.0] * 3
    m, opt, wd = build()
    w0 = m.weight.detach().clone()
    for _ in range(11):
        _zero_grad_step(list(m.parameters()), opt)
    shrink, a = _hand(0.1, 0.5, hand_f)
    torch.testing.assert_close(m.weight.detach(), w0 * shrink, rtol=1e-13, atol=0)
    assert wd.integrated == pytest.approx(a, rel=1e-13)
    # interrupted after 6 steps, resumed through bytes from both state dicts into fresh objects
    m1, o1, s1 = build()
    for _ in range(6):
        _zero_grad_step(list(m1.parameters()), o1)
    buf = io.BytesIO()
    torch.save({"m": m1.state_dict(), "o": o1.state_dict(), "s": s1.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    m2, o2, s2 = build()
    m2.load_state_dict(ckpt["m"])
    s2.load_state_dict(ckpt["s"])
    for _ in range(5):
        _zero_grad_step(list(m2.parameters()), o2)
    torch.testing.assert_close(m2.weight, m.weight, rtol=0, atol=0)
    assert s2.integrated == wd.integrated and s2.steps_taken == 11


def test_sequential_budget_counts_the_whole_run():
    sched = training.sequential([training.warmup(2), training.budget(0.1)], milestones=[2])
    m = _model()
    opt = torch.optim.SGD(_groups(m, 0.5), lr=0.1)
    wd = WeightDecayScheduler(opt, sched)
    for _ in range(6):
        _zero_grad_step(list(m.parameters()), opt)
    # warm-up adds 0 + 0.025; the budget then has 0.075 left: one full 0.05 step and half a step
    assert wd.integrated == pytest.approx(0.1, rel=1e-13)
    assert wd.last_step.factor == 0.0


def test_misuse_of_the_new_options_is_one_line():
    def opt():
        return torch.optim.SGD(_groups(_model(), 0.5), lr=0.1)

    cases = [
        (lambda: WeightDecayScheduler(opt(), training.constant(), total_steps=10, start_step=11),
         "beyond the training length"),
        (lambda: WeightDecayScheduler(opt(), training.constant(), on_external="ignore"),
         "on_external"),
        (lambda: WeightDecayScheduler(opt(), training.constant(), start_step=2, integrated=[0.1]),
         "one per group"),
        (lambda: WeightDecayScheduler(opt(), training.constant()).set_base_decay(-1.0), ">= 0"),
        (lambda: WeightDecayScheduler(opt(), training.constant()).set_base_decay(0.1, group=5),
         "index"),
        (lambda: WeightDecayScheduler(opt(), training.constant()).set_base_decay([0.0, 0.0]),
         "no group with nonzero"),
        (lambda: WeightDecayScheduler(opt(), training.constant()).load_state_dict([1, 2]),
         "needs the dict"),
    ]
    for make, msg in cases:
        with pytest.raises(MirrorflowError, match=msg) as exc:
            make()
        assert "\n" not in str(exc.value)


def test_mirrorflow_checkpoint_loaded_after_building_continues_silently_and_schedule_change_warns():
    m = _model()
    opt = torch.optim.SGD(_groups(m, 0.5), lr=0.1)
    first = WeightDecayScheduler(opt, training.switch_off(at=4))
    for _ in range(2):
        _zero_grad_step(list(m.parameters()), opt)
    ckpt = copy.deepcopy(opt.state_dict())
    first.remove()
    # torch's order, same schedule: exact and silent
    m2 = _model()
    o2 = torch.optim.SGD(_groups(m2, 0.5), lr=0.1)
    s2 = WeightDecayScheduler(o2, training.switch_off(at=4))
    o2.load_state_dict(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MirrorflowWarning)
        _zero_grad_step(list(m2.parameters()), o2)
    assert s2.steps_taken == 3 and s2.integrated == pytest.approx(3 * 0.1 * 0.5, rel=1e-13)
    # another schedule on the restored state: continues from its step and a, and says so
    o3 = torch.optim.SGD(_groups(_model(), 0.5), lr=0.1)
    o3.load_state_dict(ckpt)
    with pytest.warns(MirrorflowWarning, match=r"switch_off\(at=4\); continuing with budget"):
        s3 = WeightDecayScheduler(o3, training.budget(0.15))
    assert s3.steps_taken == 2 and s3.integrated == pytest.approx(0.1, rel=1e-13)


def test_state_dict_round_trip_into_a_fresh_scheduler_keeps_every_field():
    """Issue 28, survivor 2: a scheduler started at step 7 without the earlier decay (a counts
    from step 7: a lower bound), 3 steps, its own state_dict loaded into a fresh scheduler on a
    fresh optimizer (no optimizer state carries anything): step, a, base decays and
    counted_from are restored, and the next steps continue the schedule exactly."""
    m = _model()
    opt = torch.optim.SGD(_groups(m, 0.5), lr=0.1)
    with pytest.warns(MirrorflowWarning, match="lower bound"):
        wd = WeightDecayScheduler(opt, training.switch_off(at=0.5), total_steps=20, start_step=7)
    for _ in range(3):
        _zero_grad_step(list(m.parameters()), opt)
    state = wd.state_dict()
    m2 = _model(seed=1)
    w = m2.weight.detach().clone()
    opt2 = torch.optim.SGD(_groups(m2, 0.5), lr=0.1)
    fresh = WeightDecayScheduler(opt2, training.switch_off(at=0.5), total_steps=20)
    fresh.load_state_dict(state)
    _, a = _hand(0.1, 0.5, [1, 1, 1])  # steps 7, 8, 9 counted
    assert fresh.steps_taken == 10 and fresh.counted_from == 7
    assert fresh.integrated_is_lower_bound
    assert fresh.integrated == pytest.approx(a, rel=1e-13)
    assert fresh.base_decays == [0.5, 0.0]
    assert fresh.state_dict() == state  # and nothing else was dropped on the way
    for _ in range(10):  # steps 10..19: past the switch at 10, no decay
        _zero_grad_step(list(m2.parameters()), opt2)
    torch.testing.assert_close(m2.weight.detach(), w, rtol=0, atol=0)
    assert fresh.integrated == pytest.approx(a, rel=1e-13) and fresh.counted_from == 7
    assert fresh.state_dict()["counted_from"] == 7


class _InfiniteAfterTwo(training.TrainingSchedule):
    """A user's own schedule (a subclass: not wrapped, so not checked by FromCallable) whose
    factor becomes infinite at step 2."""

    def factor(self, step, integrated=0.0, increment=0.0):
        return math.inf if step >= 2 else 1.0


def test_an_infinite_factor_from_a_schedule_subclass_is_refused_before_it_is_used():
    """Mutation S6 (issue 28): the scheduler's own check refuses ``inf`` (not only NaN or < 0)
    before the step that would use it; the weights show that steps 0 and 1 decayed by hand and
    nothing else happened."""
    m = _model()
    w0 = m.weight.detach().clone()
    opt = torch.optim.SGD(_groups(m, 0.5), lr=0.1)
    wd = WeightDecayScheduler(opt, _InfiniteAfterTwo())
    with pytest.raises(MirrorflowError, match="decay factor inf at step 2"):
        for _ in range(3):
            _zero_grad_step(list(m.parameters()), opt)
    shrink, a = _hand(0.1, 0.5, [1, 1])
    torch.testing.assert_close(m.weight.detach(), w0 * shrink, rtol=1e-13, atol=0)
    assert wd.integrated == pytest.approx(a, rel=1e-13)
    assert all(math.isfinite(w) for w in wd.last_wd)


def test_a_group_added_mid_run_continues_the_schedule_from_the_current_step():
    """Mutation S8 (issue 28): a param group added after 4 steps joins at step 4, not 0. When
    it becomes the only decayed group (set_base_decay), the switch-off at step 3 is still
    behind: its weights do not decay, and the step count goes on from 5."""
    m = _model()
    opt = torch.optim.SGD([{"params": [m.weight], "weight_decay": 0.5}], lr=0.1)
    wd = WeightDecayScheduler(opt, training.switch_off(at=3))
    for _ in range(4):
        _zero_grad_step(list(m.parameters()), opt)
    opt.add_param_group({"params": [m.bias], "weight_decay": 0.3})
    _zero_grad_step(list(m.parameters()), opt)  # step 4: the new group is adopted
    wd.set_base_decay([0.0, 0.3])  # now the added group is the one that decays
    b = m.bias.detach().clone()
    for _ in range(3):
        _zero_grad_step(list(m.parameters()), opt)
    assert wd.steps_taken == 8
    torch.testing.assert_close(m.bias.detach(), b, rtol=0, atol=0)  # past the switch: no decay
    assert wd.last_wd == [0.0, 0.0]


def test_plain_checkpoint_loaded_mid_run_continues_at_the_current_step():
    """Mutation S9 (issue 28): a plain optimizer checkpoint loaded after 2 scheduled steps
    keeps the schedule at step 2 (as the warning says), not back at 0: of the next 3 steps
    only step 2 decays (switch-off at 3), by the weights' hand product."""
    ckpt = _plain_run(5)
    m = _model()
    opt = torch.optim.AdamW(_groups(m, 0.5), lr=0.1)
    wd = WeightDecayScheduler(opt, training.switch_off(at=3))
    for _ in range(2):
        _zero_grad_step(list(m.parameters()), opt)
    m.load_state_dict(ckpt["m"])
    opt.load_state_dict(ckpt["o"])  # param groups without mf_* keys, mid-run
    w = m.weight.detach().clone()
    with pytest.warns(MirrorflowWarning, match=r"continues at step 2 with a = 0\.1"):
        for _ in range(3):
            _zero_grad_step(list(m.parameters()), opt)
    shrink, a = _hand(0.1, 0.5, [1, 1, 1, 0, 0])  # steps 0, 1 before the load; 2, 3, 4 after
    torch.testing.assert_close(m.weight.detach(), w * (1 - 0.1 * 0.5), rtol=1e-13, atol=0)
    assert wd.steps_taken == 5 and wd.integrated == pytest.approx(a, rel=1e-13)
