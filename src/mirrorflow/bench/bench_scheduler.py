"""Cost of the weight-decay scheduler per training step, and of the factor-pair diagnostics.

* ``scheduler_overhead_*``: the same PyTorch training loop (MLP, AdamW, float32) with and without
  a :class:`~mirrorflow.schedules.WeightDecayScheduler` (cosine schedule, hooks on every step),
  interleaved in the same run. Target: overhead < 1 % of a step. Two readings: the whole-loop
  difference (``overhead_pct``, from process CPU time, which other processes on a shared machine
  disturb far less than wall time; ``overhead_pct_wall`` too) — noisy at the 1 % level — and
  the hooks alone (``hook_us_per_step``: the pre- and post-step hooks called 5000 times, CPU
  time) over the plain loop's step time: ``hook_pct_of_step``, the reliable number. Before
  timing, a ``constant()`` schedule must reproduce the plain loop's weights exactly.
* ``diagnostics_*``: :func:`~mirrorflow.schedules.diagnostics.factor_diagnostics` (thin QR + r×r
  SVD) against the direct way — singular values of the full ``d1×d2`` product plus the Gram
  difference — on a LoRA-sized pair and on all heads of a MiniLM-sized model. Checked equal first.

Rows follow the suite's format (``ratio = baseline_s / mirrorflow_s``; for the scheduler rows it is
just below 1 and ``overhead_pct`` is the number to read).
"""

from __future__ import annotations

import statistics
import time

import torch

from mirrorflow.bench._harness import check_close, row, time_interleaved, torch_threads
from mirrorflow.schedules import WeightDecayScheduler, training
from mirrorflow.schedules.diagnostics import factor_diagnostics


def _mlp_setup(width: int, seed: int = 0, device: str = "cpu"):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.ReLU(),
                              torch.nn.Linear(width, width), torch.nn.ReLU(),
                              torch.nn.Linear(width, 10)).to(device)
    decay = [p for n, p in net.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in net.named_parameters() if n.endswith("bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, width, generator=g).to(device)
    y = torch.randint(0, 10, (64,), generator=g).to(device)
    return net, opt, x, y


def _loop(net, opt, x, y, steps: int) -> None:
    loss_fn = torch.nn.functional.cross_entropy
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()


def _hook_cost(sched: WeightDecayScheduler, n: int = 5000) -> float:
    """CPU seconds per step spent in the scheduler's two hooks alone (median of 5 batches)."""
    opt = sched.optimizer
    times = []
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            sched._before_step(opt, (), {})
            sched._after_step(opt, (), {})
        times.append((time.process_time() - t0) / n)
    return statistics.median(times)


def _time_both(fns: dict, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median CPU time and median wall time of each callable, called in turn ``repeats`` times."""
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - w0)
    return ({k: statistics.median(v) for k, v in cpu.items()},
            {k: statistics.median(v) for k, v in wall.items()})


def _scheduler_rows(quick: bool) -> list[dict]:
    steps, repeats = (50, 5) if quick else (300, 9)
    rows = []
    cases = [("cpu", w) for w in ((64,) if quick else (64, 512))]
    if torch.cuda.is_available():
        cases += [("cuda", w) for w in (256, 2048)]
    for device, width in cases:
        # correctness: constant(1.0) must leave the plain loop unchanged
        net_a, opt_a, x, y = _mlp_setup(width, device=device)
        net_b, opt_b, _, _ = _mlp_setup(width, device=device)
        _loop(net_a, opt_a, x, y, 10)
        sched = WeightDecayScheduler(opt_b, training.constant())
        _loop(net_b, opt_b, x, y, 10)
        sched.remove()
        diff = check_close("scheduler constant()",
                           torch.cat([p.detach().cpu().ravel() for p in net_b.parameters()]),
                           torch.cat([p.detach().cpu().ravel() for p in net_a.parameters()]), rtol=0.0)

        base = _mlp_setup(width, device=device)
        mf = _mlp_setup(width, device=device)
        ws = WeightDecayScheduler(mf[1], training.cosine(), total_steps=10**9)
        fns = {"base": lambda b=base: _loop(*b, steps), "mf": lambda m=mf: _loop(*m, steps)}
        # CUDA work is asynchronous: process time misses it, so time CUDA loops by wall clock
        t, wall = _time_both(fns, repeats) if device == "cpu" else (time_interleaved(fns, repeats),) * 2
        hook_s = _hook_cost(ws)
        step_s = t["base"] / steps
        rows.append(row(f"scheduler_overhead_mlp{width}_adamw_{device}", t["base"], t["mf"],
                        overhead_pct=100.0 * (t["mf"] / t["base"] - 1.0),
                        overhead_pct_wall=100.0 * (wall["mf"] / wall["base"] - 1.0),
                        step_us=1e6 * step_s,
                        hook_us_per_step=1e6 * hook_s,
                        hook_pct_of_step=100.0 * hook_s / step_s,
                        steps=steps, max_abs_diff=diff))
    return rows


def _direct(pairs):
    out = []
    for U, V in pairs:
        s = torch.linalg.svdvals(U @ V.T)
        bal = torch.linalg.matrix_norm(U.T @ U - V.T @ V)
        out.append(torch.cat([s[:5], bal[None]]))
    return out


def _ours(pairs):
    out = []
    for U, V in pairs:
        d = factor_diagnostics(U, V, top_k=5)
        out.append(torch.tensor([*d.top_singular_values, d.balancedness], dtype=torch.float64))
    return out


def _diag_rows(quick: bool) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    cases = {
        "diagnostics_lora_768x8": [(torch.randn(768, 8, generator=g, dtype=torch.float64),
                                    torch.randn(768, 8, generator=g, dtype=torch.float64))],
        "diagnostics_attention_minilm_72heads_384x32": [
            (torch.randn(384, 32, generator=g, dtype=torch.float64),
             torch.randn(384, 32, generator=g, dtype=torch.float64)) for _ in range(72)],
    }
    if quick:
        cases.pop("diagnostics_attention_minilm_72heads_384x32")
    rows = []
    for name, pairs in cases.items():
        diff = check_close(name, torch.stack(_ours(pairs)).numpy(), torch.stack(_direct(pairs)).numpy(),
                           rtol=1e-9)
        t = time_interleaved({"base": lambda p=pairs: _direct(p), "mf": lambda p=pairs: _ours(p)},
                             3 if quick else 7)
        rows.append(row(name, t["base"], t["mf"], per_call_ms=1e3 * t["mf"] / len(pairs),
                        pairs=len(pairs), max_abs_diff=diff))
    return rows


def run(quick: bool = False) -> list[dict]:
    """Scheduler overhead per step and diagnostics cost per call (single-threaded torch)."""
    with torch_threads(1):
        return _scheduler_rows(quick) + _diag_rows(quick)


if __name__ == "__main__":  # pragma: no cover
    import json

    for r in run(quick=False):
        print(json.dumps(r))
