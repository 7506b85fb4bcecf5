"""Time of one training step of the stacked ViT (the batched side of ``train vit seeds=S``).

``python -m mirrorflow.bench.vit_step [--seeds 16] [--steps 30]``: S seeds of the ViT
experiment's default arm (``Config(seed=s, steps=100, switch_at=0.1)``: width 8, 17 tokens,
2 heads, batch 128, digits) as one :class:`~mirrorflow.experiments.nn.StackedTinyViT` with a
foreach AdamW, as :func:`~mirrorflow.experiments.vit.train_vit_seeds` trains them; after 5
warm-up steps, ``--steps`` steps (forward, backward, optimizer; batches drawn here) timed one
by one on one torch thread; prints one JSON line: median and minimum ms per S-seed step, and
whether the fused C kernels ran (``MIRRORFLOW_NATIVE=0`` turns them off, for the torch path).
Not a ``mirrorflow bench`` row (no baseline in the same run): a profile aid for the rows of
``bench_batched.py``.
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


if __name__ == "__main__":  # pragma: no cover
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args()
    print(json.dumps(measure(a.seeds, a.steps)))
