"""Batched sparse-regression simulator vs a per-run numpy loop (docs/benchmarks.md).

Problem (docs/theory.md §5): ``n = 40, d = 100``, ``A`` with N(0, 1/n) entries shared by all
runs, 5-sparse teacher, ``x = u ⊙ v``, ``v₀ = 0``, step 0.01, weight decay switched off at
``t = 20``. 64 runs = 8 initialization seeds (``u₀ = 1 + 0.1 ξ``) × 8 decays in [0, 0.35].

Rows:
- ``simulate uv B=64``: speed-up in run-steps per second over the per-run loop. The loop's cost
  is linear in the number of runs, so it is timed on ``baseline_runs`` of the runs and scaled
  to all of them (``baseline_s`` is that scaled time; ``baseline_runs`` says how many ran).
- ``simulate uv B=1024``: achieved GFLOP/s against this machine's float64 GEMM peak measured in
  the same process with the same thread count.
- ``ratio_at_peak`` (every speed row): the speed-up mirrorflow would show if its step ran at
  100 % of that peak; the measured ratio cannot exceed it without doing fewer flops.
- ``simulate memory``: peak RSS of a fresh process above its RSS before the run, for growing
  ``B`` (each size in its own subprocess), in MiB per 1000 runs. Sizes are large so that the
  working set stands above the transient memory of importing torch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from mirrorflow.bench import baselines
from mirrorflow.bench._harness import (
    check_close,
    matmul_peak_gflops,
    peak_rss_mb,
    row,
    time_interleaved,
)
from mirrorflow.dynamics.simulate import kernel_gradient_form, simulate_gd
from mirrorflow.schedules.continuous import SwitchOffDecay

N, D, SPARSITY, STEP, SWITCH = 40, 100, 5, 0.01, 20.0


def make_problem(runs: int, seed: int = 0, n: int = N, d: int = D):
    """Shared ``A, y`` and per-run ``u0`` (seeds) and decays (seeds × decays grid)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, d)) / np.sqrt(n)
    xs = np.zeros(d)
    xs[rng.choice(d, SPARSITY, replace=False)] = rng.normal(size=SPARSITY)
    y = A @ xs
    n_decay = 8 if runs >= 8 else runs
    decays = np.tile(np.linspace(0.0, 0.35, n_decay), -(-runs // n_decay))[:runs]
    u0 = 1.0 + 0.1 * np.random.default_rng(seed + 1).normal(size=(runs, d))
    return A, y, u0, decays


def mirrorflow_run(A, y, u0, decays, steps, threads=1):
    scheds = [SwitchOffDecay(float(w), SWITCH) for w in decays]
    res = simulate_gd(A, y, u0, 0.0, scheds, step=STEP, t_max=STEP * steps, chunk=1000,
                      threads=threads)
    return res.x_final


def baseline_run(A, y, u0, decays, steps, runs):
    return np.stack([baselines.sparse_regression_gd(A, y, u0[i], np.zeros_like(u0[i]), STEP,
                                                    float(decays[i]), steps, SWITCH)
                     for i in range(runs)])


def step_flops(runs: int, d: int = D, n: int = N) -> float:
    """Floating-point operations of one batched step as the kernel does it: the gradient
    (``x G``, ``2d²`` per run, or ``(x Aᵀ − y) A``, ``4nd``, whichever it picks) and 8
    elementwise ops per entry."""
    grad = 4.0 * n * d if kernel_gradient_form(n, d) == "lowrank" else 2.0 * d * d
    return runs * (grad + 8.0 * d)


def _memory_probe(runs: int, steps: int) -> float:
    """Peak RSS increase (MiB) of a fresh process running ``runs`` runs (run in a subprocess)."""
    code = (
        "import json, numpy as np; from mirrorflow.bench.bench_simulate import make_problem, "
        "mirrorflow_run; from mirrorflow.bench._harness import current_rss_mb, peak_rss_mb; "
        f"p = make_problem({runs}); r0 = current_rss_mb(); mirrorflow_run(*p, {steps}); "
        "print(json.dumps(peak_rss_mb() - r0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_speedup(runs: int, steps: int, base_runs: int, repeats: int,
                  check_steps: int = 300, threads: int = 1) -> dict:
    """Speed-up in run-steps/s over the per-run loop, after checking both agree."""
    A, y, u0, decays = make_problem(runs)
    want = baseline_run(A, y, u0, decays, check_steps, runs)
    got = mirrorflow_run(A, y, u0, decays, check_steps)
    diff = check_close(f"simulate B={runs} (pre-check, {check_steps} steps, all runs)", got, want,
                       rtol=1e-10)
    out = {}
    t = time_interleaved({
        "baseline": lambda: out.__setitem__("b", baseline_run(A, y, u0, decays, steps, base_runs)),
        "mirrorflow": lambda: out.__setitem__("m", mirrorflow_run(A, y, u0, decays, steps,
                                                                  threads)),
    }, repeats)
    diff = max(diff, check_close(f"simulate B={runs} (timed runs)", out["m"][:base_runs], out["b"],
                                 rtol=1e-8))
    base_s = t["baseline"] * runs / base_runs
    peak = matmul_peak_gflops(threads)
    gf = step_flops(runs) * steps / t["mirrorflow"] / 1e9
    return row(
        f"simulate uv B={runs} threads={threads}", base_s, t["mirrorflow"], steps=steps,
        runs=runs, baseline_runs=base_runs, threads=threads, max_abs_diff=diff,
        mf_run_steps_per_s=runs * steps / t["mirrorflow"],
        baseline_run_steps_per_s=runs * steps / base_s,
        gflops=gf, peak_gflops=peak, peak_fraction=gf / peak,
        ratio_at_peak=base_s * peak * 1e9 / (step_flops(runs) * steps),
    )


def bench_peak(runs: int, steps: int, threads: int, repeats: int, check_steps: int = 300) -> dict:
    """Achieved GFLOP/s at a large batch vs the GEMM peak measured here with ``threads``."""
    A, y, u0, decays = make_problem(runs)
    want = baseline_run(A, y, u0, decays, check_steps, 2)
    got = mirrorflow_run(A, y, u0, decays, check_steps, threads)[:2]
    diff = check_close(f"simulate B={runs} (pre-check)", got, want, rtol=1e-10)
    peak = matmul_peak_gflops(threads)
    t = time_interleaved({
        "baseline": lambda: baseline_run(A, y, u0, decays, steps, 2),
        "mirrorflow": lambda: mirrorflow_run(A, y, u0, decays, steps, threads),
    }, repeats)
    gf = step_flops(runs) * steps / t["mirrorflow"] / 1e9
    return row(
        f"simulate uv B={runs} threads={threads}", t["baseline"] * runs / 2, t["mirrorflow"],
        steps=steps, runs=runs, baseline_runs=2, threads=threads, max_abs_diff=diff, gflops=gf,
        peak_gflops=peak, peak_fraction=gf / peak,
        mf_run_steps_per_s=runs * steps / t["mirrorflow"],
    )


def bench_memory(sizes, steps: int = 5) -> dict:
    """Peak-RSS increase of a fresh process per batch size (linear in runs, no trajectories)."""
    mem = {b: _memory_probe(b, steps) for b in sizes}
    return {
        "name": "simulate memory", "baseline_s": float("nan"), "mirrorflow_s": float("nan"),
        "ratio": float("nan"), "peak_rss_mb": peak_rss_mb(),
        "rss_increase_mb": {str(b): round(m, 2) for b, m in mem.items()},
        "mb_per_1000_runs": {str(b): round(1000 * m / b, 3) for b, m in mem.items()},
        "mb_per_run_float64_vector": D * 8 / 2**20 * 1000,  # one (1000, d) array, for scale
    }


def run(quick: bool = False) -> list[dict]:
    import torch

    threads = sorted({1, torch.get_num_threads()})
    if quick:
        rows = [bench_speedup(64, 2_000, base_runs=4, repeats=3, threads=th) for th in threads]
        rows += [bench_peak(256, 200, th, repeats=3) for th in threads]
        rows.append(bench_memory((4096, 16384)))
    else:
        rows = [bench_speedup(64, 20_000, base_runs=8, repeats=5, threads=th) for th in threads]
        rows += [bench_peak(1024, 2_000, th, repeats=3) for th in threads]
        rows.append(bench_memory((4096, 16384, 65536)))
    return rows


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1, default=str))
