"""The fused C kernels (``mirrorflow.dynamics._kernels``) against per-run numpy loops.

Each check runs the kernel through the public simulators with ``backend="native"`` and compares
with a loop written here from the update rules in docs/theory.md §1 and §6, one run at a time.
CI builds the extension (it needs a C compiler): ``backend="native"`` raises if it is missing,
so these tests fail rather than pass on the torch path.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mirrorflow import MirrorflowError
from mirrorflow.dynamics import _native, simulate_gd
from mirrorflow.dynamics._native import (
    MIN_FLOPS_PER_THREAD,
    FreeCores,
    choose_threads,
    cpu_set,
    kernel_block,
    kernels,
    use_native,
)
from mirrorflow.dynamics.matrix import simulate_matrix_gd
from mirrorflow.dynamics.simulate import distinct_schedules, kernel_gradient_form
from mirrorflow.geometry.parameterizations import PARAMETERIZATIONS
from mirrorflow.schedules.continuous import ConstantDecay, NoDecay, Schedule, SwitchOffDecay

# every variant of the simulator kernel this CPU runs (generic, avx2, avx512)
HERE = kernels().available if kernels() is not None else ()


def test_kernels_are_built():
    assert kernels() is not None, "the C extension was not built; install with a C compiler"


def _matrix_loop(A, y, U, V, step, steps, rate, symmetric):
    """One run of matrix-sensing GD (docs/theory.md §6), plain numpy."""
    U, V = U.copy(), V.copy()
    for k in range(steps):
        al = rate((k + 0.5) * step)
        X = U @ (U if symmetric else V).T
        r = np.einsum("mij,ij->m", A, X) - y
        G = np.einsum("m,mij->ij", r, A)
        if symmetric:
            U = U - step * ((G + G.T) @ U + al * U)
        else:
            U, V = U - step * (G @ V + al * U), V - step * (G.T @ U + al * V)
    return U, (U if symmetric else V)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_matrix_kernel_matches_per_run_loop(symmetric, threads):
    rng = np.random.default_rng(11)
    P, m, d, k, R = 2, 9, 5, 3, 3  # two problems, three runs each (blocks cross problems)
    A = rng.normal(size=(P, m, d, d)) / np.sqrt(m)
    y = rng.normal(size=(P, m))
    U0 = 0.5 * rng.normal(size=(P * R, d, k))
    V0 = None if symmetric else 0.5 * rng.normal(size=(P * R, d, k))
    scheds = [SwitchOffDecay(0.5, 0.13), ConstantDecay(0.3), NoDecay()] * P
    step, steps = 0.02, 23
    res = simulate_matrix_gd(A, y, U0, V0, scheds, symmetric=symmetric, step=step,
                             t_max=step * steps, snapshot_times=[0.1], chunk=7,
                             backend="native", threads=threads)
    for b in range(P * R):
        U, V = _matrix_loop(A[b // R], y[b // R], U0[b], U0[b] if symmetric else V0[b], step,
                            steps, scheds[b].rate, symmetric)
        np.testing.assert_allclose(res.U[b], U, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(res.V[b], V, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(res.X[-1, b], U @ V.T, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("n, form", [(6, "G"), (2, "lowrank")])
def test_simulate_kernel_per_run_targets_frozen_runs_and_snapshots(n, form):
    """Per-run ``y`` with a shared ``A``; a converged run stays frozen while others go on."""
    rng = np.random.default_rng(12)
    d, B = 11, 4
    assert kernel_gradient_form(n, d) == form  # both ways of forming the gradient are covered
    A = rng.normal(size=(n, d)) / np.sqrt(n)
    Y = (A @ rng.normal(size=(d, B))).T
    Y[0] = 0.0  # run 0 sits at its solution x = 0 from the start (u0 v0 = 0) and stops
    kw = dict(step=0.02, t_max=2.0, snapshot_times=[0.5, 1.0], tol=1e-12, chunk=10)
    nat = simulate_gd(A, Y, 1.0, 0.0, NoDecay(), backend="native", **kw)
    assert nat.status[0] == "converged" and nat.steps[0] == 10
    assert nat.steps[1] == 100 and np.all(nat.x[:, 0] == 0.0)
    for i in range(1, B):
        u, v = np.ones(d), np.zeros(d)
        for _ in range(100):
            g = A.T @ (A @ (u * v) - Y[i])
            u, v = u - 0.02 * v * g, v - 0.02 * u * g
            if _ == 24:
                np.testing.assert_allclose(nat.x[1, i], u * v, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(nat.x_final[i], u * v, rtol=1e-12, atol=1e-14)


def test_backend_choice_and_errors(monkeypatch):
    rng = np.random.default_rng(13)
    A = rng.normal(size=(4, 6))
    y = A @ rng.normal(size=6)
    with pytest.raises(MirrorflowError, match="backend must be one of"):
        simulate_gd(A, y, 1.0, 0.0, NoDecay(), backend="fortran")
    custom = PARAMETERIZATIONS["uv"].__class__(**vars(PARAMETERIZATIONS["uv"]))
    with pytest.raises(MirrorflowError, match="does not cover custom parameterizations"):
        simulate_gd(A, y, 1.0, 0.0, NoDecay(), parameterization=custom, backend="native")
    with pytest.raises(MirrorflowError, match="per-run A"):
        simulate_gd(np.stack([A, A]), np.stack([y, y]), 1.0, 0.0, NoDecay(), backend="native")
    assert use_native("auto", True) is kernels() and use_native("torch", True) is None
    monkeypatch.setenv("MIRRORFLOW_NATIVE", "0")
    assert use_native("auto", True) is None
    with pytest.raises(MirrorflowError, match="MIRRORFLOW_NATIVE=0"):
        simulate_matrix_gd(np.ones((2, 3, 3)), np.ones(2), np.eye(3), np.eye(3), NoDecay(),
                           backend="native")


# ------------------------------------------------------------------------- kernel variants
def _gd_loop(name, A, y, u0, v0, step, steps, rate):
    """One run of gradient descent with coupled decay (docs/theory.md §1), plain numpy."""
    u, v = np.array(u0, float), np.array(v0, float)
    for k in range(steps):
        al = rate((k + 0.5) * step)
        x = {"uv": u * v, "u2-v2": u * u - v * v, "u2": u * u}[name]
        g = A.T @ (A @ x - y)
        gu, gv = {"uv": (v * g, u * g), "u2-v2": (2 * u * g, -2 * v * g), "u2": (2 * u * g, 0 * v)}[name]
        u, v = u - step * (gu + al * u), v - step * (gv + al * v)
    return u, v


def _free(value):
    return lambda: value


@pytest.mark.parametrize("variant", HERE)
@pytest.mark.parametrize("name", ["uv", "u2-v2", "u2"])
@pytest.mark.parametrize("n, d, B, per_run_y", [
    (9, 13, 19, False),   # G form; d = 13: a masked vector; blocks of 16 + 3 rows
    (3, 13, 29, True),    # low rank (2n < d), targets per run; a 1-row tile at the end
    (20, 70, 21, False),  # low rank; d = 70: three column tiles, n = 20: a masked one
    (2, 3, 33, True),     # d < 8: one masked vector per row
])
def test_every_variant_matches_per_run_loop(variant, name, n, d, B, per_run_y, monkeypatch):
    monkeypatch.setenv("MIRRORFLOW_KERNEL", variant)
    monkeypatch.setattr(_native, "cpu_set", lambda: [0, 1])  # blocks as on two cores
    monkeypatch.setattr(_native, "free_cores", _free(2.0))
    monkeypatch.setattr(_native, "MIN_FLOPS_PER_THREAD", 1.0)  # tiny work still splits
    rng = np.random.default_rng(14)
    A = rng.normal(size=(n, d)) / np.sqrt(n)
    Y = (A @ rng.normal(size=(d, B))).T if per_run_y else A @ np.where(np.arange(d) < 2, 1.0, 0.0)
    u0 = rng.uniform(0.5, 1.5, size=(B, d))
    scheds = ([SwitchOffDecay(0.4, 0.33), ConstantDecay(0.2), NoDecay()] * B)[:B]
    step, steps = 0.02, 40
    for threads in (1, 2, "auto"):
        res = simulate_gd(A, Y, u0, 0.2, scheds, parameterization=name, step=step,
                          t_max=step * steps, chunk=17, backend="native", threads=threads)
        assert set(res.threads_used) == {1 if threads == 1 else 2}  # two blocks: two threads
        for i, s in enumerate(scheds):
            u, v = _gd_loop(name, A, Y[i] if per_run_y else Y, u0[i], np.full(d, 0.2), step,
                            steps, s.rate)
            np.testing.assert_allclose(res.u[i], u, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(res.v[i], v, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("variant", HERE)
@pytest.mark.parametrize("n", [8, 40])  # G form / low rank at d = 30
def test_results_do_not_depend_on_the_thread_count(variant, n, monkeypatch):
    """Rows are split into blocks fixed by the machine and problem, never by the load, so the
    thread count (chosen by the load with ``"auto"``) leaves every bit of the result alone."""
    monkeypatch.setenv("MIRRORFLOW_KERNEL", variant)
    monkeypatch.setattr(_native, "cpu_set", lambda: [0, 1])
    monkeypatch.setattr(_native, "MIN_FLOPS_PER_THREAD", 1.0)
    rng = np.random.default_rng(15)
    A = rng.normal(size=(n, 30)) / np.sqrt(n)
    y = A @ rng.normal(size=30)
    kw = dict(step=0.01, t_max=0.5, chunk=10, backend="native")
    runs = [SwitchOffDecay(w, 0.2) for w in np.linspace(0, 0.3, 40)]
    ref = simulate_gd(A, y, 1.0, 0.0, runs, threads=1, **kw)
    assert ref.threads_used == (1,) * 5
    for threads, free in ((2, 0.0), (3, 0.0), ("auto", 2.0), ("auto", 1.0)):
        monkeypatch.setattr(_native, "free_cores", _free(free))
        res = simulate_gd(A, y, 1.0, 0.0, runs, threads=threads, **kw)
        assert np.array_equal(res.x, ref.x) and np.array_equal(res.u, ref.u)
        blocks = len(range(0, 40, kernel_block(variant, 40, 30, n, 2 * n < 30, 2)))
        if threads == "auto":
            want = max(1, min(int(free), blocks, 2))
        else:
            want = min(threads, blocks)
        assert set(res.threads_used) == {want}


def test_kernel_variant_choice_and_errors(monkeypatch):
    monkeypatch.delenv("MIRRORFLOW_KERNEL", raising=False)
    k = kernels()
    assert k.available[0] == "generic" and k.variant() == k.available[-1]
    monkeypatch.setenv("MIRRORFLOW_KERNEL", "sse9")
    with pytest.raises(MirrorflowError, match="MIRRORFLOW_KERNEL must be one of"):
        simulate_gd(np.eye(3), np.ones(3), 1.0, 0.0, NoDecay(), t_max=0.1, backend="native")
    monkeypatch.setenv("MIRRORFLOW_KERNEL", "avx512")
    only_generic = dataclasses.replace(k, available=("generic",))
    with pytest.raises(MirrorflowError, match="this CPU runs only generic"):
        only_generic.variant()
    with pytest.raises(MirrorflowError, match="threads must be a positive integer, None or 'auto'"):
        simulate_gd(np.eye(3), np.ones(3), 1.0, 0.0, NoDecay(), threads="many")
    with pytest.raises(MirrorflowError, match="threads must be"):
        simulate_matrix_gd(np.ones((2, 3, 3)), np.ones(2), np.eye(3), np.eye(3), NoDecay(),
                           threads=0)


def test_blocks_fit_the_l2_cache(monkeypatch):
    """Block rows times the working set per row fit in half of L2 next to the shared operand,
    and every core of the CPU set can get a block."""
    for l2 in (256 * 1024, 512 * 1024, 1024 * 1024, 2048 * 1024):
        monkeypatch.setattr(_native, "cache_sizes", lambda l2=l2: {1: 32 * 1024, 2: l2})
        for variant in ("generic", "avx512"):
            for n, d, B, cpus in ((40, 100, 1024, 1), (40, 100, 64, 2), (60, 100, 4096, 4),
                                  (20, 400, 256, 2)):
                lowrank = 2 * n < d
                blk = kernel_block(variant, B, d, n, lowrank, cpus)
                operand = 8 * (2 * n * d if lowrank else d * d)
                assert blk % 8 == 0 and 8 <= blk <= (64 if variant == "generic" else 256)
                assert blk <= max(8, -(-B // cpus) + 7)  # ceil(B / cpus), rounded up to 8
                if blk > 8:
                    assert operand + blk * 8 * (4 * d + n) <= l2 // 2
    monkeypatch.setattr(_native, "cache_sizes", lambda: {1: 32 * 1024, 2: 64 * 1024})
    assert kernel_block("avx512", 4096, 1000, 20, True, 1) == 8  # nothing fits: the floor


# ------------------------------------------------------------------------- thread choice
def test_choose_threads_from_work_and_free_cores(monkeypatch):
    monkeypatch.setattr(_native, "cpu_set", lambda: [0, 1, 2, 3])
    big = 1e12
    assert choose_threads(2, blocks=8, flops=big) == 2      # an integer is taken as given
    assert choose_threads(6, blocks=3, flops=big) == 3      # ... at most one thread per block
    assert choose_threads(None, 8, big) == 1
    assert choose_threads("auto", 8, big, _free(4.0)) == 4
    assert choose_threads("auto", 8, big, _free(3.0)) == 3  # another process holds a core
    assert choose_threads("auto", 8, big, _free(2.75)) == 3  # a core 75 % free counts
    assert choose_threads("auto", 8, big, _free(2.6)) == 2   # 60 % free does not
    assert choose_threads("auto", 8, big, _free(0.0)) == 1   # never fewer than one
    assert choose_threads("auto", 2, big, _free(4.0)) == 2   # one block per thread
    assert choose_threads("auto", 8, 3 * MIN_FLOPS_PER_THREAD, _free(4.0)) == 3  # work per thread
    assert choose_threads("auto", 8, 1.9 * MIN_FLOPS_PER_THREAD, _free(4.0)) == 1
    monkeypatch.setattr(_native, "cpu_set", lambda: [0, 1])
    assert choose_threads("auto", 8, big, _free(4.0)) == 2   # the CPU set caps it


def test_free_cores_readings_from_proc(tmp_path):
    tick = os.sysconf("SC_CLK_TCK")
    clock, own = [100.0], [5.0]

    def write(runnable, busy_ticks):
        (tmp_path / "loadavg").write_text(f"0.50 0.40 0.30 {runnable}/300 999\n")
        lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]  # the total line is ignored
        lines += [f"cpu{i} {b} 0 0 100000 7 0 0 0 0 0" for i, b in enumerate(busy_ticks)]
        (tmp_path / "stat").write_text("\n".join(lines) + "\n")

    fc = FreeCores(proc=str(tmp_path), clock=lambda: clock[0], own_cpu=lambda: own[0],
                   cpus=lambda: [0, 1], online=lambda: 2)
    write(1, [0, 0])       # the reader is the only runnable task
    assert fc() == 2.0
    write(2, [0, 0])       # one other runnable task
    assert fc() == 1.0
    # 0.5 s later: the two CPUs were busy for 0.6 s together, 0.1 s of it this process's own
    # time, so others used 0.5 s / 0.5 s = one core, although nothing else is runnable now
    write(1, [int(0.3 * tick), int(0.3 * tick)])
    clock[0] += 0.5
    own[0] += 0.1
    assert fc() == pytest.approx(1.0)
    clock[0] += 0.05       # too short for a new window: the last one still counts
    assert fc() == pytest.approx(1.0)
    clock[0] += 20.0       # too old: only the reading of now
    assert fc() == 2.0
    write(5, [0, 0])       # more others than cores
    assert fc() == 0.0
    assert FreeCores(proc=str(tmp_path / "missing"))() == 1.0  # no /proc: one thread


def test_auto_threads_leave_the_core_of_a_busy_process():
    """A real busy loop holds a core: the reading sees it and ``"auto"`` does not use it."""
    ncpu = len(cpu_set())
    hog = subprocess.Popen([sys.executable, "-c", "print('busy', flush=True)\nwhile True: pass"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert hog.stdout.readline() == "busy\n"  # its loop has begun, however slow the start
        time.sleep(0.5)
        fc = FreeCores()
        fc()
        time.sleep(0.5)
        free = fc()
        assert free <= ncpu - 0.7
        assert choose_threads("auto", blocks=ncpu, flops=1e12, free=fc) <= max(1, ncpu - 1)
        rng = np.random.default_rng(16)
        A = rng.normal(size=(40, 100)) / np.sqrt(40)
        res = simulate_gd(A, A @ rng.normal(size=100), 1.0, 0.0, [ConstantDecay(0.1)] * 256,
                          step=0.01, t_max=5.0, chunk=100, backend="native")
        assert max(res.threads_used) <= max(1, ncpu - 1)
    finally:
        hog.kill()
        hog.wait()


@dataclasses.dataclass(frozen=True)
class _Table(Schedule):
    values: list  # an unhashable attribute

    def rate(self, t):
        return np.full(np.shape(t), self.values[0])


def test_distinct_schedules_are_evaluated_once():
    a, c = SwitchOffDecay(0.1, 2.0), _Table([0.3])
    distinct, which = distinct_schedules([a, SwitchOffDecay(0.1, 2.0), ConstantDecay(0.1),
                                          NoDecay(), NoDecay(), c, _Table([0.3]), c,
                                          SwitchOffDecay(0.1, 3.0)])
    assert distinct[0] is a and which.tolist() == [0, 0, 1, 2, 2, 3, 4, 3, 5]
    assert distinct[3] is c
    # and a simulation with the duplicates matches one with every schedule a separate object
    rng = np.random.default_rng(17)
    A = rng.normal(size=(4, 9))
    y = A @ rng.normal(size=9)
    runs = [SwitchOffDecay(w, 0.1) for w in (0.2, 0.3, 0.2)] + [_Table([0.25])] * 2
    same = simulate_gd(A, y, 1.0, 0.0, runs, step=0.01, t_max=0.3, chunk=7, threads=1)
    for i, s in enumerate(runs):
        one = simulate_gd(A, y, 1.0, 0.0, [s], step=0.01, t_max=0.3, chunk=7, threads=1)
        np.testing.assert_allclose(same.x_final[i], one.x_final[0], rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(same.integrated_wd[:, i], one.integrated_wd[:, 0])
