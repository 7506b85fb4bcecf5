"""Batched seeds (mirrorflow.experiments.batched): one stacked model equals S separate runs.

The reference is S ordinary PyTorch runs — one ``nn.Module``, one ``AdamW``, one
``WeightDecayScheduler`` and ``torch.nn.utils.clip_grad_norm_`` each, data order from each seed's
own generator — written out here independently of the engine.
"""

import math

import numpy as np
import pytest
import torch

from mirrorflow import MirrorflowError
from mirrorflow.experiments.batched import (
    SeedBatches,
    clip_grad_norm_per_seed_,
    gather,
    load_seed,
    make_adamw,
    per_seed_integrated,
    stack_modules,
    unstack,
    vmapped_loss,
)
from mirrorflow.schedules import WeightDecayScheduler, training

SEEDS = (3, 7, 11)
N, D_IN, CLASSES, BATCH, LR, WD = 40, 6, 4, 8, 0.05, 2.0


def _net(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(D_IN, 16), torch.nn.LayerNorm(16),
                               torch.nn.GELU(), torch.nn.Linear(16, CLASSES))


def _data(seed):
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(N, D_IN, generator=g), torch.randint(0, CLASSES, (N,), generator=g)


def _schedule(kind, steps):
    return training.switch_off(at=9) if kind == "switch-off" else training.budget(0.5)


def _separate(seed, steps, kind, clip):
    """One seed the ordinary way."""
    net = _net(seed)
    X, y = _data(seed)
    decay = [p for p in net.parameters() if p.ndim >= 2]
    rest = [p for p in net.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": rest, "weight_decay": 0.0}], lr=LR)
    sched = WeightDecayScheduler(opt, _schedule(kind, steps), total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    order, ptr, losses = torch.randperm(N, generator=gen), 0, []
    for _ in range(steps):
        if ptr + BATCH > N:
            order, ptr = torch.randperm(N, generator=gen), 0
        idx = order[ptr:ptr + BATCH]
        ptr += BATCH
        loss = torch.nn.functional.cross_entropy(net(X[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        losses.append(float(loss.detach()))
    return net, sched.integrated, losses


def _stacked(steps, kind, clip):
    params, buffers = stack_modules([_net(s) for s in SEEDS])
    data = [_data(s) for s in SEEDS]
    X, y = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])
    opt = make_adamw(params, lr=LR, weight_decay=WD)
    sched = WeightDecayScheduler(opt, _schedule(kind, steps), total_steps=steps)
    f = vmapped_loss(_net(0), torch.nn.functional.cross_entropy)
    batches = SeedBatches(N, BATCH, SEEDS)
    losses, norms = [], []
    for _ in range(steps):
        idx = next(batches)
        loss = f(params, buffers, gather(X, idx), gather(y, idx))
        opt.zero_grad()
        loss.sum().backward()
        if clip:
            norms.append(clip_grad_norm_per_seed_(params.values(), clip))
        opt.step()
        losses.append(loss.detach().clone())
    return params, buffers, sched, torch.stack(losses), norms


@pytest.mark.parametrize("kind", ["switch-off", "budget"])
def test_stacked_equals_separate_runs(kind):
    steps, clip = 12, 0.5
    params, buffers, sched, losses, norms = _stacked(steps, kind, clip)
    assert torch.stack(norms).max() > clip  # clipping acted (else the test proves less)
    a = per_seed_integrated(sched, len(SEEDS))
    for i, seed in enumerate(SEEDS):
        net, a_ref, loss_ref = _separate(seed, steps, kind, clip)
        for name, p in net.named_parameters():
            np.testing.assert_allclose(params[name][i].detach().numpy(), p.detach().numpy(),
                                       rtol=1e-5, atol=1e-6, err_msg=f"seed {seed} {name}")
        np.testing.assert_allclose(losses[:, i].numpy(), loss_ref, rtol=1e-5)
        assert a[i] == pytest.approx(a_ref, rel=1e-12)
    # the integrated decay by hand: switch-off at step 9 → a = 9·lr·wd; budget stops at a = 0.5
    want = 9 * LR * WD if kind == "switch-off" else 0.5
    assert a[0] == pytest.approx(want, rel=1e-9)
    # the decay really switched off in the stacked optimizer
    assert sched.optimizer.param_groups[0]["weight_decay"] == 0.0


def test_per_seed_clip_is_torch_clip_on_each_seed():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 4, 5, generator=g), torch.randn(3, 7, generator=g)]
    grads[0][1] *= 1e-3  # seed 1 stays below max_norm: untouched
    grads[1][1] *= 1e-3
    params = [torch.zeros_like(x, requires_grad=True) for x in grads]
    for p, x in zip(params, grads):
        p.grad = x.clone()
    norms = clip_grad_norm_per_seed_(params, 1.0)
    for s in range(3):
        ref = [torch.zeros_like(x[s], requires_grad=True) for x in grads]
        for r, x in zip(ref, grads):
            r.grad = x[s].clone()
        n = torch.nn.utils.clip_grad_norm_(ref, 1.0)
        assert float(norms[s]) == pytest.approx(float(n), rel=1e-6)
        for p, r in zip(params, ref):
            torch.testing.assert_close(p.grad[s], r.grad, rtol=1e-6, atol=0)
    assert torch.equal(params[1].grad[1], grads[1][1])
    with pytest.raises(MirrorflowError, match="max_norm"):
        clip_grad_norm_per_seed_(params, math.inf)


def test_seed_batches_follow_each_seeds_generator():
    n, B = 10, 4
    b = SeedBatches(n, B, (5, 6))
    got = [next(b) for _ in range(5)]
    for j, seed in enumerate((5, 6)):
        gen = torch.Generator().manual_seed(seed)
        order, ptr = torch.randperm(n, generator=gen), 0
        for k in range(5):
            if ptr + B > n:
                order, ptr = torch.randperm(n, generator=gen), 0
            assert torch.equal(got[k][j], order[ptr:ptr + B])
            ptr += B
    assert not torch.equal(got[0][0], got[0][1])
    with pytest.raises(MirrorflowError, match="larger than the training set"):
        SeedBatches(3, 4, (0,))


def test_stack_unstack_round_trip_and_bad_input():
    nets = [_net(s) for s in SEEDS]
    params, buffers = stack_modules(nets)
    assert all(p.is_leaf and p.requires_grad and p.shape[0] == 3 for p in params.values())
    copy = load_seed(_net(0), params, buffers, 2)
    for (n, p), q in zip(nets[2].named_parameters(), copy.parameters()):
        assert torch.equal(p, q) and torch.equal(unstack(params, 2)[n], p)
    X = torch.randn(3, 5, 2)
    assert torch.equal(gather(X, torch.tensor([[1, 0], [3, 3], [0, 4]]))[1],
                       X[1, [3, 3]])
    with pytest.raises(MirrorflowError, match="one architecture"):
        stack_modules([_net(0), torch.nn.Linear(D_IN, 3)])
    with pytest.raises(MirrorflowError, match="at least one"):
        stack_modules([])
    assert per_seed_integrated(None, 2) == [0.0, 0.0]
