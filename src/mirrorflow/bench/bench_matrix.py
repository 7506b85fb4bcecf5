"""Batched matrix-sensing simulator vs a per-run numpy loop (docs/benchmarks.md).

Problem (docs/theory.md §6): ``X = U Vᵀ``, ``d = 20``, rank-2 target with ``‖X*‖_F = √d``,
``m = 160`` sensing matrices with N(0, 1/m) entries shared by all runs, ``U₀, V₀`` with
N(0, 1/d) entries, step 0.02, decay switched off at ``t = 40``. 64 runs = 8 initialization
seeds × 8 decays in [0, 0.35]. The simulator is ``mirrorflow.dynamics.matrix.simulate_matrix_gd``;
the per-run loop (``mirrorflow.bench.baselines.matrix_sensing_gd``) is timed on ``baseline_runs`` of
the runs and scaled linearly to all of them.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from mirrorflow.bench import baselines
from mirrorflow.bench._harness import check_close, matmul_peak_gflops, row, time_interleaved
from mirrorflow.dynamics.matrix import simulate_matrix_gd
from mirrorflow.schedules.continuous import SwitchOffDecay

D, M, RANK, STEP, SWITCH = 20, 160, 2, 0.02, 40.0


def make_problem(runs: int, seed: int = 0, d: int = D, m: int = M):
    rng = np.random.default_rng(seed)
    L = rng.normal(size=(d, RANK))
    R = rng.normal(size=(d, RANK))
    Xs = L @ R.T
    Xs *= np.sqrt(d) / np.linalg.norm(Xs)
    A = rng.normal(size=(m, d, d)) / np.sqrt(m)
    y = np.einsum("mij,ij->m", A, Xs)
    n_seeds = max(1, runs // 8)
    init = np.random.default_rng(seed + 1).normal(size=(n_seeds, 2, d, d)) / np.sqrt(d)
    U0 = np.repeat(init[:, 0], runs // n_seeds, axis=0)[:runs]
    V0 = np.repeat(init[:, 1], runs // n_seeds, axis=0)[:runs]
    decays = np.tile(np.linspace(0.0, 0.35, min(8, runs)), -(-runs // 8))[:runs]
    return A, y, U0, V0, decays


def mirrorflow_run(A, y, U0, V0, decays, steps, threads=1):
    scheds = [SwitchOffDecay(float(w), SWITCH) for w in decays]
    res = simulate_matrix_gd(A, y, U0, V0, scheds, step=STEP, t_max=STEP * steps, chunk=1000,
                             threads=threads)
    return res.X[-1]


def baseline_run(A, y, U0, V0, decays, steps, runs):
    return np.stack([baselines.matrix_sensing_gd(A, y, U0[i], V0[i], STEP, float(decays[i]),
                                                 steps, SWITCH) for i in range(runs)])


def step_flops(runs: int, d: int = D, m: int = M) -> float:
    """Per batched step: ``A(X)`` and ``A*(r)`` (2·2·m·d²), ``U Vᵀ``, ``G V``, ``Gᵀ U`` (3·2·d³)."""
    return runs * (4.0 * m * d * d + 6.0 * d**3)


def bench(runs: int, steps: int, base_runs: int, repeats: int, check_steps: int = 200,
          threads: int = 1) -> dict:
    """Speed-up over the per-run loop, and the bound the GEMM peak puts on it.

    Both do the same products per run and step (``step_flops``), so ``baseline_gflops`` is
    the loop's rate and ``ratio_at_peak = peak / baseline_gflops`` the largest speed-up any
    implementation of these flops could reach on this machine with ``threads`` threads.
    """
    A, y, U0, V0, decays = make_problem(runs)
    want = baseline_run(A, y, U0, V0, decays, check_steps, runs)
    got = mirrorflow_run(A, y, U0, V0, decays, check_steps, threads)
    diff = check_close(f"matrix B={runs} (pre-check, {check_steps} steps)", got, want, rtol=1e-10)
    t = time_interleaved({
        "baseline": lambda: baseline_run(A, y, U0, V0, decays, steps, base_runs),
        "mirrorflow": lambda: mirrorflow_run(A, y, U0, V0, decays, steps, threads),
    }, repeats)
    base_s = t["baseline"] * runs / base_runs
    peak = matmul_peak_gflops(threads)
    gf, base_gf = (step_flops(runs) * steps / s / 1e9 for s in (t["mirrorflow"], base_s))
    return row(f"matrix sensing d={D} B={runs} threads={threads}", base_s, t["mirrorflow"],
               steps=steps, runs=runs, baseline_runs=base_runs, threads=threads,
               max_abs_diff=diff, mf_run_steps_per_s=runs * steps / t["mirrorflow"],
               baseline_run_steps_per_s=runs * steps / base_s, gflops=gf,
               baseline_gflops=base_gf, peak_gflops=peak, peak_fraction=gf / peak,
               ratio_at_peak=peak / base_gf)


def run(quick: bool = False) -> list[dict]:
    import torch

    threads = sorted({1, torch.get_num_threads()})
    if quick:
        return [bench(64, 500, base_runs=4, repeats=3, threads=th) for th in threads]
    return [bench(64, 5_000, base_runs=8, repeats=3, threads=th) for th in threads]


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1, default=str))
