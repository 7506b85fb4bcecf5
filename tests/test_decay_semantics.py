"""What weight decay does under SGD, SGD+momentum, Adam (coupled), AdamW and Adafactor.

Backs every statement of :func:`decay_semantics` / :func:`decay_coupling` and the table in
docs/training.md ("What `a` is"): the coupling label against the optimizer's actual update (one
step with decay vs. without, from the same state), the balancedness law against the closed form
``e^{−2a}`` (docs/theory.md §6) on ``X = U Vᵀ`` with ``U = 0`` (30×5), ``V`` random (25×5) and a
rank-3 target, and Adafactor's decay against its step size computed by hand.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from transformers.optimization import Adafactor

from mirrorflow import MirrorflowError
from mirrorflow.bench.decay_study import TABLE_ROWS, factorization_balancedness
from mirrorflow.schedules import WeightDecayScheduler, decay_coupling, training
from mirrorflow.schedules.scheduler import MirrorflowWarning, decay_semantics

ROWS = dict(TABLE_ROWS)


# -- coupling labels, checked on the update itself ---------------------------------------------

def _run(make, wd, steps=3, extra=0.0, shrink=0.0):
    """``steps`` steps from the same start with the same gradient ``g`` each step, plus
    ``extra·p`` (L2 added by hand); with ``shrink``, each step is instead ``p ← p(1 − shrink)``
    followed by the update of a twin run without decay (decoupled decay by hand)."""
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    g = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    p = torch.nn.Parameter(p0.clone())
    opt = make([p], wd)
    twin = torch.nn.Parameter(p0.clone())
    topt = make([twin], 0.0)
    hand = p0.clone()
    for _ in range(steps):
        p.grad = g + extra * p.detach()
        opt.step()
        before = twin.detach().clone()
        twin.grad = g.clone()
        topt.step()
        hand = hand * (1 - shrink) + (twin.detach() - before)
    return p.detach(), hand


OPTIMIZERS = {
    "sgd": (lambda ps, wd: torch.optim.SGD(ps, lr=0.05, weight_decay=wd), 0.05, "coupled"),
    "sgd-momentum": (lambda ps, wd: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=wd),
                     0.05, "coupled"),
    "adam": (lambda ps, wd: torch.optim.Adam(ps, lr=0.05, weight_decay=wd), 0.05, "coupled"),
    "adamw": (lambda ps, wd: torch.optim.AdamW(ps, lr=0.05, weight_decay=wd), 0.05, "decoupled"),
    "adam-decoupled": (lambda ps, wd: torch.optim.Adam(ps, lr=0.05, weight_decay=wd,
                                                       decoupled_weight_decay=True), 0.05, "decoupled"),
    "adafactor": (lambda ps, wd: Adafactor(ps, lr=0.05, weight_decay=wd, relative_step=False,
                                           scale_parameter=False, warmup_init=False), 0.05, "decoupled"),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_coupling_label_matches_the_update(name):
    make, lr, want = OPTIMIZERS[name]
    lam = 0.3
    with_wd = _run(make, lam)[0]
    l2 = _run(make, 0.0, extra=lam)[0]                   # λp added to the gradient by hand
    decoupled = _run(make, lam, shrink=lr * lam)[1]      # p ← p(1 − lr·λ), then the plain update
    coupled_holds = torch.allclose(with_wd, l2, rtol=1e-12, atol=1e-14)
    decoupled_holds = torch.allclose(with_wd, decoupled, rtol=1e-12, atol=1e-14)
    assert decay_coupling(make([torch.nn.Parameter(torch.zeros(2))], lam)) == want
    if want == "coupled":
        assert coupled_holds
        if name != "sgd":  # for plain SGD the two are the same thing
            assert not decoupled_holds
    else:
        assert decoupled_holds and not coupled_holds


# -- balancedness of X = U Vᵀ: the table of docs/training.md ------------------------------------

def test_sgd_balancedness_follows_exp_minus_2a():
    for label in ("SGD, λ=0.5", "SGD, λ=0.5, switch-off at step 2000"):
        r = factorization_balancedness(**ROWS[label])
        assert abs(r["ratio"] - r["exp_minus_2a"]) < 1e-3, (label, r)
    assert factorization_balancedness(**ROWS["SGD, λ=0.5"])["a"] == pytest.approx(2.0, rel=1e-12)


def test_sgd_momentum_balancedness_follows_exp_minus_2a_over_one_minus_beta():
    r = factorization_balancedness(**ROWS["SGD+momentum 0.9, λ=0.5"])
    assert r["a"] == pytest.approx(0.2, rel=1e-12)
    assert abs(r["ratio"] - math.exp(-2 * r["a"] / (1 - 0.9))) < 1e-3
    assert abs(r["ratio"] - r["exp_minus_2a"]) > 0.5  # the nominal a alone is off by far


@pytest.mark.parametrize("label", ["Adam (coupled L2), λ=0.5", "AdamW, lr 1e-2, λ=0.5",
                                   "Adafactor, lr 1e-2, λ=0.5"])
def test_adaptive_optimizers_do_not_follow_exp_minus_2a(label):
    """At a = 2, e^{−2a} = 0.018; adaptive optimizers leave ~10–30× more imbalance."""
    r = factorization_balancedness(**ROWS[label])
    assert r["a"] == pytest.approx(2.0, rel=1e-12)
    assert r["ratio"] > 5 * r["exp_minus_2a"]


def test_adamw_without_decay_does_not_conserve_balancedness():
    """Gradient flow conserves UᵀU − VᵀV without decay; Adam's preconditioning does not."""
    r = factorization_balancedness(**ROWS["AdamW, no decay"])
    # SGD's drift is the O(η) discretization error: halving η (same time t) halves it
    dev = [factorization_balancedness(optimizer="sgd", lr=lr, wd=0.0, steps=n)["ratio"] - 1.0
           for lr, n in ((2e-3, 2000), (1e-3, 4000))]
    assert dev[1] / dev[0] == pytest.approx(0.5, rel=0.05)
    assert r["a"] == 0.0 and abs(r["ratio"] - 1.0) > 50 * abs(dev[1])


# -- what the decay does to the weights ---------------------------------------------------------

def test_coupled_adam_moves_each_coordinate_by_about_lr_not_multiplicatively():
    """No data gradient: the decay gradient λw is normalized away, so every coordinate moves
    ≈ η per step towards 0 whatever λ and |w| — where ∏(1 − ηλ) would scale with both."""
    w0 = torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64)
    for lam in (0.5, 5.0):
        w = torch.nn.Parameter(w0.clone())
        opt = torch.optim.Adam([w], lr=1e-3, weight_decay=lam)
        for _ in range(20):
            opt.zero_grad()
            (0.0 * w.sum()).backward()
            opt.step()
        moved = (w0.abs() - w.detach().abs()).numpy()
        np.testing.assert_allclose(moved, 20 * 1e-3, rtol=1e-2)


def test_adafactor_relative_step_lr_none_integrates_its_own_step_size():
    """Adafactor(lr=None): no TypeError; a = Σ λ·min(1e-2, 1/√k), weights shrink by ∏(1 − λ·lr_k)."""
    w = torch.nn.Parameter(torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    w0 = w.detach().clone()
    opt = Adafactor([w], weight_decay=0.1, scale_parameter=False)  # lr=None, relative_step=True
    wd = WeightDecayScheduler(opt, training.budget(0.01))
    for _ in range(30):
        opt.zero_grad()
        (0.0 * w.sum()).backward()
        opt.step()
    shrink, a = 1.0, 0.0
    for k in range(1, 31):
        lr_k = min(1e-2, 1 / math.sqrt(k))
        f = 1.0 if a + lr_k * 0.1 <= 0.01 else max(0.0, (0.01 - a) / (lr_k * 0.1))
        shrink *= 1 - 0.1 * f * lr_k
        a += 0.1 * f * lr_k
    assert wd.integrated == pytest.approx(0.01, rel=1e-12) and a == pytest.approx(0.01, rel=1e-12)
    torch.testing.assert_close(w.detach(), w0 * shrink, rtol=1e-12, atol=0)
    assert decay_semantics(opt).kind == "adafactor"


def test_adafactor_defaults_schedule_the_decay_and_say_a_is_not_one_number():
    """Adafactor(weight_decay=0.1) with all defaults (lr=None, scale_parameter=True) used to crash
    with a TypeError; now the schedule applies (checked by hand) and a is NaN, with a warning."""
    w = torch.nn.Parameter(torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    opt = Adafactor([w], weight_decay=0.1)
    with pytest.raises(MirrorflowError, match=r"needs the integrated decay a.*scale_parameter=False"):
        WeightDecayScheduler(opt, training.budget(0.1))
    with pytest.warns(MirrorflowWarning, match=r"not one number.*NaN"):
        wd = WeightDecayScheduler(opt, training.switch_off(at=3))
    hand = w.detach().clone()
    for k in range(1, 7):
        rms = float(hand.norm() / math.sqrt(hand.numel()))
        if k <= 3:
            hand = hand * (1 - 0.1 * max(1e-3, rms) * min(1e-2, 1 / math.sqrt(k)))
        opt.zero_grad()
        (0.0 * w.sum()).backward()
        opt.step()
    torch.testing.assert_close(w.detach(), hand, rtol=1e-12, atol=0)
    assert math.isnan(wd.integrated)
    assert wd.state_dict()["integrated_wd"] == [None]


def test_decay_semantics_kinds():
    p = [torch.nn.Parameter(torch.zeros(2))]
    kinds = {
        "sgd": torch.optim.SGD(p, lr=0.1),
        "sgd-momentum": torch.optim.SGD(p, lr=0.1, momentum=0.9),
        "adam-coupled": torch.optim.Adam(p),
        "decoupled": torch.optim.AdamW(p),
        "adafactor": Adafactor(p, lr=1e-3, relative_step=False),
    }
    for kind, opt in kinds.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert decay_semantics(opt).kind == kind
    assert "a/(1−β)" in decay_semantics(kinds["sgd-momentum"]).shrinkage
