"""Batched seeds: S seeds of one ViT arm trained as one stacked model vs one after another.

Rows ``train vit seeds=S batched`` (S = 16, 8): the ViT experiment's training of S seeds of one
arm (switch-off decay, its default sizes: width 8, 17 tokens, batch 128, digits), as
:func:`mirrorflow.experiments.vit.train_vit_seeds` (one ``StackedTinyViT``, one AdamW) against
the sequential per-seed loop :func:`~mirrorflow.experiments.vit.train_vit` (S runs), interleaved
in the same process, one torch thread each. ``ratio = baseline_s / mirrorflow_s`` is seed-steps
per second batched over sequential: both do the same S × steps steps, the same per-seed setup
(data split, model, final diagnostics) and the same evaluations (one every 50 steps, as in the
experiment's runs). ``ratio_cpu``: the same from process CPU time, which waiting for a core
shared with other processes does not inflate. Before timing, the two must agree on every seed's
final validation loss (rtol 1e-4). Goal (issue 22): ratio ≥ 4 at 16 seeds on 2 cores.

Roofline fields (:func:`mirrorflow.bench._harness.roofline`): ``flops_per_seed_step`` (the
matmul-class FLOPs of one seed's ``train_vit`` per step, by ``FlopCounterMode``; forward,
backward and the evaluations), ``seq_gflops``/``batched_gflops`` (those FLOPs over each side's
CPU time), ``matmul_peak_gflops`` (a 1024³ float32 ``torch.mm`` on one thread, measured right
after the timing), ``seq_fraction_of_peak`` and ``max_ratio = 1 / seq_fraction_of_peak``, the
ratio a batched side doing the same FLOPs at the matmul peak would reach. For the ViT the
sequential loop runs at a few percent of the peak (per-operation overhead on ``[128, 17, 8]``
tensors), so arithmetic does not rule 4× out; what bounds the batched side is the efficiency of
kernels on tensors whose inner sizes are 4–17: it reaches under a tenth of the matmul peak.
The attention core (tiny per-head matmuls, softmax over 17 keys) and the layer norms run as
fused C kernels (:mod:`mirrorflow.experiments._fused`): 16 seeds 2.38× (CPU 2.38×), 8 seeds
2.69× (2026-12-03, load 1.0–1.5), against 1.78× / 1.82× for the code before them (same
command, load 2.9); with the fused attention alone 2.11× / 2.02×. Per 16-seed step 28–32 ms
against 42–46 (``python -m mirrorflow.bench.vit_step``). The fused attention takes about 11
ms of it (two layers of 1.6 ms forward, 5.6 ms forward + backward; its torch path 9.1:
``vit_step --attention``); the rest is the small ``bmm``/``baddbmm`` with their copies, the
exact GELU and the optimizer. ``FlopCounterMode`` does not see inside the C kernels, so
``flops_per_seed_step_batched`` (and ``batched_gflops``) leave out the attention's score and
value products (about a third of the FLOPs).
"""

from __future__ import annotations

from mirrorflow.bench._harness import batched_seeds_row, count_flops, torch_threads


def _rows(quick: bool) -> list[dict]:
    from mirrorflow.experiments.vit import Config, train_vit, train_vit_seeds

    # 100 steps with an evaluation every 50: the share of evaluations and per-seed setup (data
    # split, model, diagnostics) of a real run (600 steps, one evaluation every 50)
    steps, repeats = (20, 2) if quick else (100, 2)
    rows = []
    for S in (16, 8):
        cfgs = [Config(seed=s, steps=steps, eval_every=50, switch_at=steps * 2e-3 / 2)
                for s in range(S)]
        sched = cfgs[0].make_schedule()

        def sequential(cfgs=cfgs, sched=sched):
            return [train_vit(c, sched)["val_loss"] for c in cfgs]

        def batched(cfgs=cfgs, sched=sched):
            return [r["val_loss"] for r in train_vit_seeds(cfgs, sched)]

        flops = {"seq": count_flops(lambda c=cfgs[0], sched=sched: train_vit(c, sched)) / steps,
                 "batched": count_flops(batched) / (S * steps)}
        rows.append(batched_seeds_row("vit", S, steps, {"seq": sequential, "batched": batched},
                                      repeats, flops_per_seed_step=flops))
    return rows


def run(quick: bool = False) -> list[dict]:
    """Batched vs sequential seeds of the ViT (single-threaded torch)."""
    with torch_threads(1):
        return _rows(quick)


if __name__ == "__main__":  # pragma: no cover
    import json

    for r in run(quick=False):
        print(json.dumps(r))
