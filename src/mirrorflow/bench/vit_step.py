"""Time of one training step of the stacked ViT (the batched side of ``train vit seeds=S``).

``python -m mirrorflow.bench.vit_step [--seeds 16] [--steps 30]``: S seeds of the ViT
experiment's default arm (``Config(seed=s, steps=100, switch_at=0.1)``: width 8, 17 tokens,
2 heads, batch 128, digits) as one :class:`~mirrorflow.experiments.nn.StackedTinyViT` with a
foreach AdamW, as :func:`~mirrorflow.experiments.vit.train_vit_seeds` trains them; after 5
warm-up steps, ``--steps`` steps (forward, backward, optimizer; batches drawn here) timed one
by one on one torch thread; prints one JSON line: median and minimum ms per S-seed step, and
whether the fused C kernels ran (``MIRRORFLOW_NATIVE=0`` turns them off, for the torch path).
``--attention``: instead, the attention core alone at the step's size (``qkv`` of 16 × 128
sequences, 17 tokens, 2 heads of width 4), the fused kernel against its torch path, ms per
layer forward and forward + backward (minimum of 20). Not a ``mirrorflow bench`` row: a
profile aid for the rows of ``bench_batched.py``.
"""

from __future__ import annotations

import argparse
import json
import time


def measure(seeds: int = 16, steps: int = 30) -> dict:
    import torch

    from mirrorflow.bench._harness import torch_threads
    from mirrorflow.experiments._fused import native_kernels
    from mirrorflow.experiments.nn import StackedTinyViT
    from mirrorflow.experiments.vit import Config, _classes, _tiny_vit, split

    cfgs = [Config(seed=s, steps=100, switch_at=0.1) for s in range(seeds)]
    data = [split(c) for c in cfgs]
    X = torch.stack([d["train"][0] for d in data])
    y = torch.stack([d["train"][1] for d in data])
    classes = _classes(data)
    model = StackedTinyViT([_tiny_vit(c, X.shape[2], X.shape[3], classes) for c in cfgs])
    decay, rest = model.decay_groups()
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfgs[0].wd},
                             {"params": rest, "weight_decay": 0.0}], lr=cfgs[0].lr, foreach=True)
    B = cfgs[0].batch_size
    gen = torch.Generator().manual_seed(0)
    rows = torch.arange(seeds).unsqueeze(1)

    def step():
        idx = torch.randint(0, y.shape[1], (seeds, B), generator=gen)
        logits = model(X[rows, idx])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[rows, idx].flatten(),
                                                 reduction="none").view(seeds, -1).mean(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()

    times = []
    with torch_threads(1):
        for k in range(5 + steps):
            t = time.perf_counter()
            step()
            if k >= 5:
                times.append(time.perf_counter() - t)
    times.sort()
    return {"seeds": seeds, "steps": steps, "native": native_kernels() is not None,
            "median_ms": round(1e3 * times[len(times) // 2], 2), "min_ms": round(1e3 * times[0], 2)}


def measure_attention(repeats: int = 20) -> dict:
    import torch

    from mirrorflow.bench._harness import torch_threads
    from mirrorflow.experiments._fused import _attention_torch, fused_attention, native_kernels

    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(16 * 128, 17, 24, generator=gen).requires_grad_()
    g = torch.randn(16 * 128, 17, 8, generator=gen)
    out = {"native": native_kernels() is not None}

    def best(f):
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return round(1e3 * min(ts), 2)

    with torch_threads(1):
        for name, f in (("fused", fused_attention), ("torch", _attention_torch)):
            out[f"{name}_fwd_ms"] = best(lambda f=f: f(qkv, 2))
            out[f"{name}_fwd_bwd_ms"] = best(lambda f=f: f(qkv, 2).backward(g))
    return out


if __name__ == "__main__":  # pragma: no cover
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--attention", action="store_true", help="time the attention core alone")
    a = ap.parse_args()
    print(json.dumps(measure_attention() if a.attention else measure(a.seeds, a.steps)))
