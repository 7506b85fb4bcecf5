"""Batched sparse-regression simulator vs a per-run numpy loop (docs/benchmarks.md).

Problem (docs/theory.md §5): ``n = 40, d = 100``, ``A`` with N(0, 1/n) entries shared by all
runs, 5-sparse teacher, ``x = u ⊙ v``, ``v₀ = 0``, step 0.01, weight decay switched off at
``t = 20``. 64 runs = 8 initialization seeds (``u₀ = 1 + 0.1 ξ``) × 8 decays in [0, 0.35].

Rows (``threads``: 1, the cores of this process's CPU set, and ``"auto"``, the default):
- ``simulate uv B=64``: speed-up in run-steps per second over the per-run loop. The loop's cost
  is linear in the number of runs, so it is timed on ``baseline_runs`` of the runs and scaled
  to all of them (``baseline_s`` is that scaled time; ``baseline_runs`` says how many ran).
- ``simulate uv B=256`` (quick) / ``B=1024``: achieved GFLOP/s against this machine's float64
  GEMM peak measured in the same process with the same thread count. The peak is measured
  between the timed calls (one 1024³ GEMM per repeat, the faster of MKL and OpenBLAS), and
  ``peak_fraction`` is the median over repeats of GFLOP/s over that repeat's peak;
  ``peak_fraction_best`` compares with the best of 8 GEMMs before the rows instead (the
  measure of earlier rounds). Every speed row carries both.
- ``ratio_at_peak`` (every speed row): the speed-up mirrorflow would show if its step ran at
  100 % of that peak; the measured ratio cannot exceed it without doing fewer flops.
- ``kernel``: the C kernel variant that ran (``generic``, ``avx2``, ``avx512``; ``torch``
  without the kernel). ``threads_chosen``: the thread counts the timed runs used (for
  ``"auto"``, what it picked), ``free_cores``: :func:`~mirrorflow.dynamics._native.free_cores`
  just before the timing.
- ``simulate kernel=V vs generic``: each kernel variant this CPU runs (``avx2``, ``avx512``)
  against the portable one, one thread, same process.
- ``simulate memory``: peak RSS of a fresh process above its RSS before the run, for growing
  ``B`` (each size in its own subprocess), in MiB per 1000 runs. Sizes are large so that the
  working set stands above the transient memory of importing torch.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import numpy as np

from mirrorflow.bench import baselines
from mirrorflow.bench._harness import (
    check_close,
    gemm_rate,
    loadavg,
    matmul_peak_gflops,
    peak_rss_mb,
    row,
    time_interleaved,
)
from mirrorflow.dynamics._native import cpu_set, free_cores, kernels
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


def simulate(A, y, u0, decays, steps, threads="auto", device="cpu"):
    """The benchmarked call: :func:`simulate_gd` on the problem, the whole result."""
    scheds = [SwitchOffDecay(float(w), SWITCH) for w in decays]
    return simulate_gd(A, y, u0, 0.0, scheds, step=STEP, t_max=STEP * steps, chunk=1000,
                       threads=threads, device=device)


def mirrorflow_run(A, y, u0, decays, steps, threads="auto"):
    return simulate(A, y, u0, decays, steps, threads).x_final


def baseline_run(A, y, u0, decays, steps, runs):
    return np.stack([baselines.sparse_regression_gd(A, y, u0[i], np.zeros_like(u0[i]), STEP,
                                                    float(decays[i]), steps, SWITCH)
                     for i in range(runs)])


def step_flops(runs: int, d: int = D, n: int = N, form: str | None = None) -> float:
    """Floating-point operations of one batched step as the kernel does it: the gradient
    (``x G``, ``2d²`` per run, or ``(x Aᵀ − y) A``, ``4nd``, whichever it picks; ``form``
    forces one) and 8 elementwise ops per entry."""
    form = form or kernel_gradient_form(n, d)
    grad = 4.0 * n * d if form == "lowrank" else 2.0 * d * d
    return runs * (grad + 8.0 * d)


def kernel_variant() -> str:
    """The simulator kernel variant this process runs (``torch`` without the C kernel)."""
    k = kernels()
    return "torch" if k is None else k.variant()


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


def _timed(A, y, u0, decays, steps, threads, base_runs, repeats):
    """Interleaved timing of the loop on ``base_runs`` runs, mirrorflow on all, and the GEMM
    peak (:func:`gemm_rate` with the thread count mirrorflow just used); the last results of
    both, and row fields: the thread counts used, the free cores before, and the fraction of
    peak as the median over repeats of each repeat's GFLOP/s over that repeat's peak
    (``peak_fraction``: load that comes and goes hits both sides of a repeat alike)."""
    out: dict = {"used": set(), "last": 1, "peaks": []}

    def mf():
        res = simulate(A, y, u0, decays, steps, threads)
        out["m"] = res.x_final
        out["used"].update(res.threads_used)
        out["last"] = max(res.threads_used)

    free, load = free_cores(), loadavg()
    samples: dict = {}
    t = time_interleaved({
        "baseline": lambda: out.__setitem__("b", baseline_run(A, y, u0, decays, steps, base_runs)),
        "mirrorflow": mf,
        "peak": lambda: out["peaks"].append(gemm_rate(out["last"])),
    }, repeats, samples)
    flops = step_flops(len(u0)) * steps
    fractions = [flops / s / 1e9 / pk for s, pk in zip(samples["mirrorflow"], out["peaks"])]
    best = matmul_peak_gflops(max(out["used"]))
    gf = flops / t["mirrorflow"] / 1e9
    extras = dict(threads_chosen=sorted(out["used"]), free_cores=round(free, 2),
                  loadavg_before=load, kernel=kernel_variant(),
                  mirrorflow_cpu_s=t["mirrorflow_cpu"], gflops=gf,
                  peak_gflops=statistics.median(out["peaks"]),
                  peak_fraction=statistics.median(fractions),
                  peak_gflops_best=best, peak_fraction_best=gf / best)
    return t, out, extras


def bench_speedup(runs: int, steps: int, base_runs: int, repeats: int,
                  check_steps: int = 300, threads: int | str = 1) -> dict:
    """Speed-up in run-steps/s over the per-run loop, after checking both agree."""
    A, y, u0, decays = make_problem(runs)
    want = baseline_run(A, y, u0, decays, check_steps, runs)
    got = mirrorflow_run(A, y, u0, decays, check_steps, threads)
    diff = check_close(f"simulate B={runs} (pre-check, {check_steps} steps, all runs)", got, want,
                       rtol=1e-10)
    t, out, extras = _timed(A, y, u0, decays, steps, threads, base_runs, repeats)
    diff = max(diff, check_close(f"simulate B={runs} (timed runs)", out["m"][:base_runs], out["b"],
                                 rtol=1e-8))
    base_s = t["baseline"] * runs / base_runs
    return row(
        f"simulate uv B={runs} threads={threads}", base_s, t["mirrorflow"], steps=steps,
        runs=runs, baseline_runs=base_runs, threads=threads, max_abs_diff=diff,
        mf_run_steps_per_s=runs * steps / t["mirrorflow"],
        baseline_run_steps_per_s=runs * steps / base_s,
        ratio_at_peak=base_s * extras["peak_gflops"] * 1e9 / (step_flops(runs) * steps), **extras,
    )


def bench_peak(runs: int, steps: int, threads: int | str, repeats: int,
               check_steps: int = 300) -> dict:
    """Achieved GFLOP/s at a large batch vs the GEMM peak measured here with ``threads``."""
    A, y, u0, decays = make_problem(runs)
    want = baseline_run(A, y, u0, decays, check_steps, 2)
    got = mirrorflow_run(A, y, u0, decays, check_steps, threads)[:2]
    diff = check_close(f"simulate B={runs} (pre-check)", got, want, rtol=1e-10)
    t, out, extras = _timed(A, y, u0, decays, steps, threads, 2, repeats)
    diff = max(diff, check_close(f"simulate B={runs} (timed runs)", out["m"][:2], out["b"],
                                 rtol=1e-8))
    return row(
        f"simulate uv B={runs} threads={threads}", t["baseline"] * runs / 2, t["mirrorflow"],
        steps=steps, runs=runs, baseline_runs=2, threads=threads, max_abs_diff=diff,
        mf_run_steps_per_s=runs * steps / t["mirrorflow"], **extras,
    )


def bench_variants(runs: int, steps: int, repeats: int, check_steps: int = 300) -> list[dict]:
    """Each kernel variant this CPU runs against the portable one (``generic``), one thread.

    ``baseline_s`` is the ``generic`` variant, ``mirrorflow_s`` the row's variant, timed
    interleaved; each is first checked against the per-run loop on two runs.
    """
    import os

    k = kernels()
    if k is None:
        return []
    A, y, u0, decays = make_problem(runs)
    want = baseline_run(A, y, u0, decays, check_steps, 2)
    old = os.environ.get("MIRRORFLOW_KERNEL")
    fns, diffs = {}, {}
    try:
        for v in k.available:
            os.environ["MIRRORFLOW_KERNEL"] = v
            diffs[v] = check_close(f"simulate B={runs} kernel={v} (pre-check)",
                                   mirrorflow_run(A, y, u0, decays, check_steps, 1)[:2], want,
                                   rtol=1e-10)

            def fn(v=v):
                os.environ["MIRRORFLOW_KERNEL"] = v
                simulate(A, y, u0, decays, steps, 1)

            fns[v] = fn
        load = loadavg()
        t = time_interleaved(fns, repeats)
    finally:
        if old is None:
            os.environ.pop("MIRRORFLOW_KERNEL", None)
        else:
            os.environ["MIRRORFLOW_KERNEL"] = old
    peak = matmul_peak_gflops(1)
    rows = []
    for v in k.available[1:]:
        gf = step_flops(runs) * steps / t[v] / 1e9
        rows.append(row(f"simulate kernel={v} vs generic B={runs} threads=1", t["generic"], t[v],
                        steps=steps, runs=runs, threads=1, kernel=v, max_abs_diff=diffs[v],
                        gflops=gf, peak_gflops=peak, peak_fraction=gf / peak,
                        generic_gflops=step_flops(runs) * steps / t["generic"] / 1e9,
                        loadavg_before=load))
    return rows


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


def thread_settings() -> list[int | str]:
    """1, the cores of this process's CPU set (when more than one), and ``"auto"``."""
    return [*sorted({1, len(cpu_set())}), "auto"]


def run(quick: bool = False) -> list[dict]:
    settings = thread_settings()
    fixed = [th for th in settings if th != "auto"]
    if quick:
        rows = [bench_speedup(64, 2_000, base_runs=4, repeats=5, threads=th) for th in settings]
        rows += [bench_peak(256, 200, th, repeats=7) for th in fixed]
        rows += bench_variants(256, 200, repeats=5)
        rows.append(bench_memory((4096, 16384)))
    else:
        rows = [bench_speedup(64, 20_000, base_runs=8, repeats=5, threads=th) for th in settings]
        rows += [bench_peak(1024, 2_000, th, repeats=3) for th in fixed]
        rows += bench_variants(1024, 500, repeats=3)
        rows.append(bench_memory((4096, 16384, 65536)))
    return rows


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1, default=str))
