"""Shared timing helpers for the benchmark modules.

Timing rule: mirrorflow and its baseline run in the same process, interleaved
(baseline, mirrorflow, baseline, mirrorflow, ...), several repeats, with Python's garbage
collector paused (as ``timeit`` does: a full collection walks torch's whole object graph and
lands in whichever call happens to trigger it); we report medians, and every row records the
load average (``os.getloadavg()``) before and after its timing. Before any timing,
:func:`check_close` compares the two on the benchmarked problem and raises
:class:`BenchmarkMismatch` if they disagree, so a fast wrong answer never gets a number.
"""

from __future__ import annotations

import functools
import gc
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from mirrorflow._core.errors import BenchmarkMismatch
from mirrorflow._core.threads import torch_threads


def check_close(name: str, got, want, *, rtol: float, atol: float = 0.0) -> float:
    """Raise :class:`BenchmarkMismatch` unless ``|got − want| ≤ atol + rtol·max|want|``.

    Returns the max abs difference (reported as ``max_abs_diff``).
    """
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise BenchmarkMismatch(f"{name}: shapes differ {got.shape} vs {want.shape}")
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(want))):
        raise BenchmarkMismatch(f"{name}: non-finite values; the benchmark problem diverged")
    diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    bound = atol + rtol * float(np.max(np.abs(want), initial=0.0))
    if diff > bound:
        raise BenchmarkMismatch(
            f"{name}: mirrorflow and baseline differ by {diff:.3g} (> {bound:.3g}); "
            "the optimized code is wrong, do not trust its timing"
        )
    return diff


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int,
                     samples: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Median wall time of each callable, calling them in turn ``repeats`` times (garbage
    collector paused; one collection before). Key ``f"{name}_cpu"``: the median CPU time of
    this process during the call (all its threads), which waiting for a busy core does not
    inflate. ``samples``, if given, receives every repeat's wall times per name."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for k, fn in fns.items():
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
    finally:
        if was_enabled:
            gc.enable()
    if samples is not None:
        samples.update(times)
    return {**{k: statistics.median(v) for k, v in times.items()},
            **{f"{k}_cpu": statistics.median(v) for k, v in cpu.items()}}


def loadavg() -> list[float] | None:
    """``os.getloadavg()`` rounded (1, 5, 15 minutes), or ``None`` where unavailable."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``getrusage``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (``/proc/self/statm``; peak elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


# OpenBLAS's worker threads spin for ~2^28 cycles (~0.1 s) after a parallel call before they
# sleep; a call timed within that window shares its cores with them (measured: a two-thread
# kernel call right after a two-thread OpenBLAS GEMM ran at about half speed).
_SPIN_SETTLE_S = 0.15
_PEAK_LIBRARY: dict[int, str] = {}


@functools.cache
def _gemm_operands(size: int):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, dtype=torch.float64, generator=g)
    b = torch.randn(size, size, dtype=torch.float64, generator=g)
    return a, b, torch.empty_like(a)


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _gemms(size: int):
    a, b, out = _gemm_operands(size)
    an, bn, on = a.numpy(), b.numpy(), out.numpy()
    return {"openblas": lambda: np.matmul(an, bn, out=on), "mkl": lambda: torch.mm(a, b, out=out)}


@functools.cache
def matmul_peak_gflops(threads: int, size: int = 1024, repeats: int = 8) -> float:
    """Measured float64 GEMM rate of this machine: ``size``³, best of ``repeats``.

    Both BLAS libraries at hand are measured, torch's (MKL) and numpy's (OpenBLAS), and the
    faster counts as the peak: on AMD CPUs MKL runs well below OpenBLAS, and the simulator's
    kernel calls scipy's OpenBLAS, so torch alone would understate the peak. Measured once
    per process and thread count, so all rows of a benchmark share one peak; which library
    won is what :func:`gemm_rate` runs.
    """
    rates = {}
    with torch_threads(threads), _blas_controller().limit(limits=threads, user_api="blas"):
        for name, mm in _gemms(size).items():  # OpenBLAS first: MKL's threads stop sooner
            mm()  # warm-up
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                mm()
                best = min(best, time.perf_counter() - t0)
            rates[name] = 2.0 * size**3 / best / 1e9
    _PEAK_LIBRARY[threads] = max(rates, key=rates.get)
    if threads > 1:
        time.sleep(_SPIN_SETTLE_S)
    return max(rates.values())


def gemm_rate(threads: int, size: int = 1024) -> float:
    """One ``size``³ float64 GEMM with ``threads`` threads in the library that gave
    :func:`matmul_peak_gflops` for this thread count, in GFLOP/s. Cheap enough (~40 ms on one
    core) to run between the timed calls, so that a fraction of peak compares rates measured
    at the same time."""
    matmul_peak_gflops(threads, size)
    library = _PEAK_LIBRARY[threads]
    mm = _gemms(size)[library]
    with torch_threads(threads), _blas_controller().limit(limits=threads, user_api="blas"):
        t0 = time.perf_counter()
        mm()
        elapsed = time.perf_counter() - t0
    if library == "openblas" and threads > 1:
        time.sleep(_SPIN_SETTLE_S)
    return 2.0 * size**3 / elapsed / 1e9


def float32_matmul_gflops(size: int = 1024, repeats: int = 10) -> float:
    """Measured float32 ``torch.mm`` rate on the current torch threads: ``size``³, best of
    ``repeats`` (the matmul peak that float32 network training can reach on this machine)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)
    b = torch.randn(size, size, generator=g)
    out = torch.empty_like(a)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best / 1e9


def count_flops(fn: Callable[[], object]) -> float:
    """Matmul-class FLOPs of one call of ``fn`` (``torch.utils.flop_counter.FlopCounterMode``:
    matmuls, convolutions and attention kernels, forward and backward; elementwise work not
    counted, so rates built on it understate the work done)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def roofline(flops_per_seed_step: dict[str, float], seed_steps: int, cpu_s: dict[str, float],
             peak_gflops: float) -> dict:
    """Achieved rates and the ceiling they put on a batched-over-sequential ratio.

    ``flops_per_seed_step``/``cpu_s``: per side (``"seq"``, ``"batched"``); rates are
    FLOPs × ``seed_steps`` over the side's CPU time. ``seq_fraction_of_peak`` is the
    sequential rate over ``peak_gflops``; if the batched side did the sequential side's FLOPs
    at the peak rate it would be ``1 / seq_fraction_of_peak`` times faster: the largest
    ratio possible (``max_ratio``) while the arithmetic stays the same.
    """
    rate = {k: flops_per_seed_step[k] * seed_steps / cpu_s[k] / 1e9 for k in ("seq", "batched")}
    frac = rate["seq"] / peak_gflops
    return {"flops_per_seed_step": flops_per_seed_step["seq"],
            "flops_per_seed_step_batched": flops_per_seed_step["batched"],
            "matmul_peak_gflops": peak_gflops, "seq_gflops": rate["seq"],
            "batched_gflops": rate["batched"], "seq_fraction_of_peak": frac,
            "batched_fraction_of_peak": rate["batched"] / peak_gflops, "max_ratio": 1.0 / frac}


def row(name: str, baseline_s: float, mirrorflow_s: float, **extras) -> dict:
    """A result row in the suite's format (``ratio`` = speed-up of mirrorflow)."""
    return {
        "name": name,
        "baseline_s": float(baseline_s),
        "mirrorflow_s": float(mirrorflow_s),
        "ratio": float(baseline_s / mirrorflow_s) if mirrorflow_s > 0 else float("inf"),
        "peak_rss_mb": peak_rss_mb(),
        "loadavg": loadavg(),
        **extras,
    }


def batched_seeds_row(label: str, seeds: int, steps: int, fns: dict[str, Callable[[], object]],
                      repeats: int, rtol: float = 1e-4,
                      flops_per_seed_step: dict[str, float] | None = None) -> dict:
    """The ``train LABEL seeds=S batched`` row of a stacked-seed benchmark: ``fns["seq"]`` (the
    per-seed loop) and ``fns["batched"]`` (one stacked model) must agree on every seed's
    returned number (``rtol``) before all of ``fns`` are timed interleaved; ``ratio`` is
    seed-steps per second batched over sequential, ``ratio_cpu`` the same in CPU time, and each
    further entry ``X`` of ``fns`` gives ``ratio_vs_X`` (its time over the batched one).
    ``flops_per_seed_step`` (``"seq"``, ``"batched"``) adds :func:`roofline` against a float32
    matmul peak measured right after the timing."""
    diff = check_close(f"train {label} seeds={seeds}", fns["batched"](), fns["seq"](), rtol=rtol)
    t = time_interleaved(fns, repeats)
    more = {f"ratio_vs_{k}": t[k] / t["batched"] for k in fns if k not in ("seq", "batched")}
    more.update(baseline_cpu_s=t["seq_cpu"], mirrorflow_cpu_s=t["batched_cpu"])
    if flops_per_seed_step is not None:
        more.update(roofline(flops_per_seed_step, seeds * steps,
                             {"seq": t["seq_cpu"], "batched": t["batched_cpu"]},
                             float32_matmul_gflops()))
    return row(f"train {label} seeds={seeds} batched", t["seq"], t["batched"],
               ratio_cpu=t["seq_cpu"] / t["batched_cpu"], **more, seeds=seeds, steps=steps,
               seed_steps_per_s=seeds * steps / t["batched"],
               seed_steps_per_s_sequential=seeds * steps / t["seq"], max_abs_diff=diff)
