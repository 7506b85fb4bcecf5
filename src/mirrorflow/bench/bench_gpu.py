"""The simulator's torch path on a CUDA device against the C kernel on this machine's CPU
(docs/benchmarks.md, "GPU").

Runs only where torch sees a CUDA device; elsewhere it returns one row that says so
(``skipped``), so the suite runs everywhere. Problem: ``bench_simulate``'s (``n = 40``,
``d = 100``, ``x = u ⊙ v``, decay switched off at ``t = 20``) with ``B`` = 1 024 … 65 536 runs.

Rows ``simulate uv B=… cuda``: ``baseline_s`` is the CPU (the C kernel, ``threads="auto"``),
``mirrorflow_s`` the GPU, so ``ratio`` is the GPU's speed-up over the CPU kernel; both as
run-steps per second too. ``gflops`` counts the flops of the torch path's step (the gradient as
``x G − b``, ``2d²`` per run, plus 8 elementwise operations per entry), ``device_peak_gflops``
is a float64 GEMM measured on the device in the same process, ``peak_fraction`` their ratio.
Before timing, the GPU result is checked against the per-run numpy loop on a few runs and
against the CPU kernel on all runs (``max_abs_diff``, ``max_abs_diff_vs_cpu``).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from mirrorflow.bench._harness import check_close, loadavg, row, time_interleaved
from mirrorflow.bench.bench_simulate import (
    D,
    N,
    baseline_run,
    kernel_variant,
    make_problem,
    simulate,
    step_flops,
)

SIZES = (1024, 4096, 16384, 65536)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def device_peak_gflops(device: str, size: int = 8192, repeats: int = 5) -> float:
    """Best float64 GEMM rate of ``size``³ on ``device`` (GFLOP/s), timed with synchronization."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, dtype=torch.float64, device=device, generator=g)
    b = torch.randn(size, size, dtype=torch.float64, device=device, generator=g)
    out = torch.empty_like(a)
    torch.mm(a, b, out=out)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best / 1e9


def steps_for(runs: int, quick: bool) -> int:
    """Steps per timed call: about 2·10⁶ run-steps (quick: 5·10⁵), between 20 and 500."""
    return int(np.clip((500_000 if quick else 2_000_000) // runs, 20, 500))


def bench_device(runs: int, steps: int, repeats: int, device: str = "cuda",
                 check_steps: int = 100, peak_size: int = 8192) -> dict:
    """Run-steps/s of ``simulate_gd(device=device)`` against the CPU kernel, after checks."""
    A, y, u0, decays = make_problem(runs)
    cpu = simulate(A, y, u0, decays, check_steps).x_final
    dev = simulate(A, y, u0, decays, check_steps, device=device).x_final
    want = baseline_run(A, y, u0, decays, check_steps, 4)
    diff = check_close(f"{device} B={runs} vs per-run loop (pre-check)", dev[:4], want, rtol=1e-10)
    diff_cpu = check_close(f"{device} B={runs} vs CPU kernel (pre-check)", dev, cpu, rtol=1e-10)

    def on_device():
        simulate(A, y, u0, decays, steps, device=device)
        _sync(device)

    load = loadavg()
    t = time_interleaved({"baseline": lambda: simulate(A, y, u0, decays, steps),
                          "mirrorflow": on_device}, repeats)
    peak = device_peak_gflops(device, peak_size)
    flops = step_flops(runs, D, N, form="G") * steps
    gf = flops / t["mirrorflow"] / 1e9
    name = torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else device
    return row(f"simulate uv B={runs} {torch.device(device).type}", t["baseline"], t["mirrorflow"],
               steps=steps, runs=runs, device=name, max_abs_diff=diff,
               max_abs_diff_vs_cpu=diff_cpu, mf_run_steps_per_s=runs * steps / t["mirrorflow"],
               baseline_run_steps_per_s=runs * steps / t["baseline"], gflops=gf,
               device_peak_gflops=peak, peak_fraction=gf / peak, kernel=kernel_variant(),
               loadavg_before=load)


def skipped(reason: str) -> dict:
    """The row that stands for the GPU rows where they cannot run."""
    nan = float("nan")
    return {"name": "simulate uv on CUDA", "baseline_s": nan, "mirrorflow_s": nan, "ratio": nan,
            "skipped": reason}


def run(quick: bool = False) -> list[dict]:
    if not torch.cuda.is_available():
        return [skipped("no CUDA device (torch.cuda.is_available() is False)")]
    return [bench_device(b, steps_for(b, quick), repeats=3) for b in SIZES]


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1, default=str))
