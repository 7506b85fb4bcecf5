"""Issue 23, item 1: steps that a GradScaler skips do not count, for fused and non-fused optimizers.

Fused optimizers (``fused=True``) are stepped by ``GradScaler.step`` even when the gradients
overflowed; the kernel skips the update internally (``optimizer.found_inf``). The user's workflow:
a GradScaler loop with inf gradients at some steps. The expected values are hand computations:
with a zero data gradient, decoupled decay (AdamW) and coupled decay under SGD both shrink the
weight by exactly (1 − ηλ) per step taken, so two steps taken at η = 0.1, λ = 0.5 give 0.95² =
0.9025 and a = 2·0.1·0.5 = 0.1.
"""

import pytest
import torch

from mirrorflow.schedules import WeightDecayScheduler, training

LR, WD = 0.1, 0.5


def _make(kind: str, fused: bool):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.ones(4))
    if kind == "adamw":
        opt = torch.optim.AdamW([w], lr=LR, weight_decay=WD, fused=fused)
    elif kind == "adam":
        opt = torch.optim.Adam([w], lr=LR, weight_decay=WD, fused=fused)
    elif kind == "sgd":
        opt = torch.optim.SGD([w], lr=LR, weight_decay=WD, fused=fused)
    else:
        opt = torch.optim.Adagrad([w], lr=LR, weight_decay=WD, fused=fused)
    return w, opt


def _loop(w, opt, inf_at, steps=4, unscale=False):
    sc = torch.amp.GradScaler("cpu")
    for k in range(steps):
        opt.zero_grad()
        sc.scale((w * 0).sum()).backward()
        if k in inf_at:
            w.grad.fill_(float("inf"))
        if unscale:  # the gradient-clipping workflow: unscale_ before step
            sc.unscale_(opt)
            torch.nn.utils.clip_grad_norm_([w], 1.0)
        sc.step(opt)
        sc.update()
    return sc


CASES = [(k, f) for k in ("adamw", "adam", "sgd", "adagrad") for f in (True, False)]


@pytest.mark.parametrize("kind,fused", CASES)
def test_issue_reproduction_counts_only_steps_taken(kind, fused):
    w, opt = _make(kind, fused)
    wd = WeightDecayScheduler(opt, training.constant())
    _loop(w, opt, inf_at=(1, 2))
    assert wd.steps_taken == 2
    assert wd.integrated == pytest.approx(2 * LR * WD, abs=1e-15)
    # the optimizer's own count agrees where it has one (SGD has no step state)
    if "step" in opt.state[w]:
        assert int(opt.state[w]["step"]) == 2
    # the weights are those of two clean steps of a fresh optimizer (skipped steps did nothing)
    w2, opt2 = _make(kind, fused)
    _loop(w2, opt2, inf_at=(), steps=2)
    torch.testing.assert_close(w.detach(), w2.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("kind,fused", [c for c in CASES if c[0] in ("adamw", "sgd")])
def test_decoupled_or_sgd_weight_is_the_hand_product(kind, fused):
    w, opt = _make(kind, fused)
    WeightDecayScheduler(opt, training.constant())
    _loop(w, opt, inf_at=(1, 2))
    torch.testing.assert_close(w.detach(), torch.full((4,), (1 - LR * WD) ** 2), rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind,fused", CASES)
def test_budget_with_two_overflowing_first_steps_applies_the_decay(kind, fused):
    """fp16 training often starts with overflowing steps: the budget must not be spent on them."""
    w, opt = _make(kind, fused)
    wd = WeightDecayScheduler(opt, training.budget(0.1))
    _loop(w, opt, inf_at=(0, 1), steps=6)
    assert wd.integrated == pytest.approx(0.1, abs=1e-15)
    assert wd.steps_taken == 4
    assert wd.last_wd == [0.0]  # budget spent after the two real decay steps
    if kind in ("adamw", "sgd"):  # steps 3 and 4 take no decay and there is no data gradient
        torch.testing.assert_close(w.detach(), torch.full((4,), 0.9025), rtol=1e-6, atol=0)
    assert float(w.detach()[0]) < 1.0  # the decay was applied


@pytest.mark.parametrize("fused", [True, False])
def test_unscale_then_step_workflow_skips_too(fused):
    w, opt = _make("adamw", fused)
    wd = WeightDecayScheduler(opt, training.constant())
    _loop(w, opt, inf_at=(0, 3), steps=5, unscale=True)
    assert wd.steps_taken == 3
    assert wd.integrated == pytest.approx(3 * LR * WD, abs=1e-15)
    torch.testing.assert_close(w.detach(), torch.full((4,), (1 - LR * WD) ** 3), rtol=1e-6, atol=0)


def test_switch_off_step_counts_taken_steps_only():
    """switch_off(at=2) goes off after the second step *taken*, not the second call."""
    w, opt = _make("adamw", True)
    wd = WeightDecayScheduler(opt, training.switch_off(at=2))
    _loop(w, opt, inf_at=(0,), steps=4)  # steps taken: 3 (calls 1, 2, 3)
    assert wd.steps_taken == 3
    assert wd.integrated == pytest.approx(2 * LR * WD, abs=1e-15)
    torch.testing.assert_close(w.detach(), torch.full((4,), (1 - LR * WD) ** 2), rtol=1e-6, atol=0)
