"""WeightDecayScheduler on real torch optimizers, checked against hand computation.

With a zero gradient, both coupled SGD (``w ← w − η(∇ + λw)``) and decoupled AdamW
(``w ← w(1 − ηλ)``, Adam update 0) shrink the weights by exactly ``∏_k (1 − η_k λ_k)``: the
weights themselves witness which decay the optimizer really used at each step.
"""

import io
import math

import pytest
import torch

from mirrorflow import MirrorflowError
from mirrorflow.schedules import WeightDecayScheduler, decay_coupling, training


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 3).double()


def _groups(m, wd):
    return [{"params": [m.weight], "weight_decay": wd}, {"params": [m.bias], "weight_decay": 0.0}]


def _zero_grad_step(m, opt):
    opt.zero_grad()
    (0.0 * (m.weight.sum() + m.bias.sum())).backward()
    opt.step()


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.AdamW])
def test_shrinkage_and_integrated_match_hand_product(opt_cls):
    m = _model()
    w0, b0 = m.weight.detach().clone(), m.bias.detach().clone()
    opt = opt_cls(_groups(m, 0.3), lr=0.2)
    lrs = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    sched = WeightDecayScheduler(opt, training.switch_off(at=5))
    shrink, a_hand = 1.0, 0.0
    for k in range(9):
        lr = opt.param_groups[0]["lr"]
        lam = 0.3 if k < 5 else 0.0          # the schedule, by hand
        shrink *= 1 - lr * lam
        a_hand += lr * lam
        _zero_grad_step(m, opt)
        lrs.step()
        sched.step()
    torch.testing.assert_close(m.weight.detach(), w0 * shrink, rtol=1e-12, atol=0)
    torch.testing.assert_close(m.bias.detach(), b0, rtol=0, atol=0)  # no-decay group untouched
    assert sched.integrated == pytest.approx(a_hand, rel=1e-14)
    assert sched.last_wd == [0.0, 0.0]
    assert sched.steps_taken == 9


def test_order_of_lr_and_wd_step_does_not_matter():
    res = []
    for lr_first in (True, False):
        m = _model()
        opt = torch.optim.SGD(_groups(m, 0.1), lr=0.3)
        lrs = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + k))
        sched = WeightDecayScheduler(opt, training.linear(end=6))
        for _ in range(8):
            _zero_grad_step(m, opt)
            if lr_first:
                lrs.step()
                sched.step()
            else:
                sched.step()
                lrs.step()
        res.append(sched.integrated)
    hand = sum(0.3 / (1 + k) * 0.1 * max(0.0, 1 - k / 6) for k in range(8))
    assert res[0] == pytest.approx(hand, rel=1e-14)
    assert res[1] == pytest.approx(hand, rel=1e-14)


def test_budget_lands_exactly_and_is_portable_across_lr():
    for lr in (0.07, 0.013):
        m = _model()
        w0 = m.weight.detach().clone()
        opt = torch.optim.AdamW(_groups(m, 0.5), lr=lr)
        sched = WeightDecayScheduler(opt, training.budget(0.3))
        inc = lr * 0.5
        n_full = math.floor(0.3 / inc + 1e-12)
        for _ in range(n_full + 5):
            _zero_grad_step(m, opt)
        hand = (1 - inc) ** n_full * (1 - (0.3 - n_full * inc))
        assert sched.integrated == pytest.approx(0.3, rel=1e-12)
        torch.testing.assert_close(m.weight.detach(), w0 * hand, rtol=1e-12, atol=0)


def test_scales_each_group_base_and_never_enables_decay():
    m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    opt = torch.optim.SGD([
        {"params": m[0].parameters(), "weight_decay": 0.2},
        {"params": m[1].weight, "weight_decay": 0.05},
        {"params": m[1].bias, "weight_decay": 0.0},
    ], lr=1.0)
    sched = WeightDecayScheduler(opt, training.constant(2.0))
    assert sched.last_wd == pytest.approx([0.4, 0.1, 0.0])
    assert sched.reference_group == 0


def test_resume_from_optimizer_checkpoint_continues_exactly():
    torch.manual_seed(1)
    X, Y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)

    def train(m, opt, lrs, steps):
        for _ in range(steps):
            opt.zero_grad()
            ((m(X) - Y) ** 2).mean().backward()
            opt.step()
            lrs.step()

    def build():
        m = _model()
        opt = torch.optim.SGD(_groups(m, 0.2), lr=0.1, momentum=0.9)
        lrs = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        return m, opt, lrs

    m1, o1, l1 = build()
    s1 = WeightDecayScheduler(o1, training.budget(0.07))
    train(m1, o1, l1, 10)

    m2, o2, l2 = build()
    s2 = WeightDecayScheduler(o2, training.budget(0.07))
    train(m2, o2, l2, 4)
    buf = io.BytesIO()  # a real round trip through bytes, as to disk
    torch.save({"m": m2.state_dict(), "o": o2.state_dict(), "l": l2.state_dict(),
                "s": s2.state_dict()}, buf)
    s2.remove()

    def load():
        buf.seek(0)
        return torch.load(buf, weights_only=True)
    ckpt = load()
    # fresh process-like objects: a path through the optimizer state ...
    m3, o3, l3 = build()
    m3.load_state_dict(ckpt["m"])
    o3.load_state_dict(ckpt["o"])
    l3.load_state_dict(ckpt["l"])
    s3 = WeightDecayScheduler(o3, training.budget(0.07))
    assert s3.steps_taken == 4
    train(m3, o3, l3, 6)
    # ... and one through the scheduler's own state_dict on a fresh optimizer
    ckpt = load()
    m4, o4, l4 = build()
    m4.load_state_dict(ckpt["m"])
    s4 = WeightDecayScheduler(o4, training.budget(0.07))
    o4.load_state_dict(ckpt["o"])
    s4.load_state_dict(ckpt["s"])
    l4.load_state_dict(ckpt["l"])
    train(m4, o4, l4, 6)
    # ... and a scheduler built before optimizer.load_state_dict() replaces the param groups
    ckpt = load()
    m5, o5, l5 = build()
    s5 = WeightDecayScheduler(o5, training.budget(0.07))
    m5.load_state_dict(ckpt["m"])
    o5.load_state_dict(ckpt["o"])
    l5.load_state_dict(ckpt["l"])
    train(m5, o5, l5, 6)
    for m, s in ((m3, s3), (m4, s4), (m5, s5)):
        torch.testing.assert_close(m.weight, m1.weight, rtol=0, atol=0)
        assert s.integrated == s1.integrated
        assert s.steps_taken == 10
    assert s1.integrated == pytest.approx(0.07, rel=1e-12)


def test_construction_errors():
    m = _model()
    opt = torch.optim.SGD(_groups(m, 0.1), lr=0.1)
    with pytest.raises(MirrorflowError, match="beyond the training length"):
        WeightDecayScheduler(opt, training.switch_off(at=50), total_steps=20)
    with pytest.raises(MirrorflowError, match="total_steps"):
        WeightDecayScheduler(opt, training.switch_off(at=0.5))
    with pytest.raises(MirrorflowError, match="callable"):
        WeightDecayScheduler(opt, "cosine")
    with pytest.raises(MirrorflowError, match="Optimizer"):
        WeightDecayScheduler(object(), training.constant())
    none = torch.optim.SGD(_groups(_model(), 0.0), lr=0.1)
    with pytest.raises(MirrorflowError, match="nonzero weight_decay"):
        WeightDecayScheduler(none, training.constant())
    neg = torch.optim.SGD(_groups(_model(), 0.1), lr=0.1)
    neg.param_groups[0]["weight_decay"] = -0.1
    with pytest.raises(MirrorflowError, match=">= 0"):
        WeightDecayScheduler(neg, training.constant())


def test_bad_callable_value_is_reported_at_the_step():
    m = _model()
    opt = torch.optim.SGD(_groups(m, 0.1), lr=0.1)
    sched = WeightDecayScheduler(opt, lambda k: 1.0 if k < 2 else -1.0)
    _zero_grad_step(m, opt)
    # the factor for step 2 is evaluated as soon as step 1 is done
    with pytest.raises(MirrorflowError, match="at step 2"):
        _zero_grad_step(m, opt)
    assert sched.steps_taken == 2


def test_decay_coupling():
    m = _model()
    assert decay_coupling(torch.optim.AdamW(m.parameters())) == "decoupled"
    assert decay_coupling(torch.optim.Adam(m.parameters(), decoupled_weight_decay=True)) == "decoupled"
    assert decay_coupling(torch.optim.Adam(m.parameters())) == "coupled"
    assert decay_coupling(torch.optim.SGD(m.parameters(), lr=0.1)) == "coupled"


def test_core_imports_do_not_pull_in_optional_frameworks():
    import subprocess
    import sys

    code = ("import sys, mirrorflow, mirrorflow.schedules, mirrorflow.schedules.diagnostics, "
            "mirrorflow.schedules.integrations; "
            "print(sorted(m for m in ('transformers', 'lightning', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
