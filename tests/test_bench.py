"""The benchmark harness on tiny sizes: its correctness pre-checks, the suite runner, the CLI,
and the simulator's fast path against hand-written per-run loops. No timing assertions."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import torch
from typer.testing import CliRunner

from mirrorflow import MirrorflowError
from mirrorflow.bench import (
    _harness,
    baselines,
    bench_gpu,
    bench_implicit_bias,
    bench_matrix,
    bench_simulate,
)
from mirrorflow.bench import runner as bench_runner
from mirrorflow.cli import app
from mirrorflow.dynamics.simulate import simulate_gd
from mirrorflow.geometry.parameterizations import PARAMETERIZATIONS
from mirrorflow.schedules.continuous import ConstantDecay, NoDecay, SwitchOffDecay

KEYS = ("name", "baseline_s", "mirrorflow_s", "ratio", "peak_rss_mb")


# ------------------------------------------------------------------------- baselines by hand
def test_sparse_baseline_one_step_by_hand():
    # d = n = 1, A = 1, y = 1, u = 1, v = 0: x = 0, r = -1, ∇f = -1, so
    # u1 = 1 - η·wd, v1 = η, x1 = (1 - η·wd)·η
    lr, wd = 0.1, 0.5
    x = baselines.sparse_regression_gd(np.ones((1, 1)), np.ones(1), [1.0], [0.0], lr, wd, 1)
    assert x[0] == pytest.approx((1 - lr * wd) * lr, rel=1e-15)
    # decay is off after the switch: step 2 has midpoint 0.15 > 0.1
    x2 = baselines.sparse_regression_gd(np.ones((1, 1)), np.ones(1), [1.0], [0.0], lr, wd, 2, 0.1)
    u1, v1 = 1 - lr * wd, lr
    g = u1 * v1 - 1
    assert x2[0] == pytest.approx((u1 - lr * g * v1) * (v1 - lr * g * u1), rel=1e-14)


def test_matrix_baseline_one_step_by_hand():
    rng = np.random.default_rng(0)
    A, U, V = rng.normal(size=(3, 2, 2)), rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
    y = rng.normal(size=3)
    lr, wd = 0.05, 0.2
    X = U @ V.T
    G = sum((np.sum(A[i] * X) - y[i]) * A[i] for i in range(3))
    want = (U - lr * (G @ V + wd * U)) @ (V - lr * (G.T @ U + wd * V)).T
    got = baselines.matrix_sensing_gd(A, y, U, V, lr, wd, 1)
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_cvxpy_hyperbolic_entropy_matches_scipy():
    # R(x) = c Σ [x (arcsinh(x/β) − s) − sqrt(x² + β²)]: minimize on Ax = y with SLSQP
    rng = np.random.default_rng(1)
    n, d, c = 2, 5, 0.5
    A = rng.normal(size=(n, d))
    y = rng.normal(size=n)
    beta = rng.uniform(0.2, 1.0, size=d)
    s = rng.uniform(-0.5, 0.5, size=d)

    def R(x):
        return c * np.sum(x * (np.arcsinh(x / beta) - s) - np.sqrt(x**2 + beta**2))

    def dR(x):
        return c * (np.arcsinh(x / beta) - s)

    ref = scipy.optimize.minimize(R, np.linalg.lstsq(A, y, rcond=None)[0], jac=dR,
                                  constraints=[{"type": "eq", "fun": lambda x: A @ x - y,
                                                "jac": lambda x: A}],
                                  method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
    assert ref.success
    x, _ = baselines.hyperbolic_entropy_cvxpy(A, y, c, beta, s)
    np.testing.assert_allclose(x, ref.x, atol=1e-5)


def test_kkt_residual_scores_optimum_low_and_perturbation_high():
    A, y, leg = bench_implicit_bias.make_problem(10, 30)
    # a point with ∇R(x) = Aᵀλ (stationary) built from an arbitrary λ: stationarity ≈ 0,
    # feasibility measured against its own y
    lam = np.random.default_rng(2).normal(size=10)
    x = np.asarray(leg.inverse(A.T @ lam, 1.0))
    assert bench_implicit_bias.kkt_residual(A, A @ x, x, leg, 1.0) < 1e-12
    x_bad = x + 1e-3 * np.random.default_rng(3).normal(size=30)
    assert bench_implicit_bias.kkt_residual(A, A @ x, x_bad, leg, 1.0) > 1e-5


# ------------------------------------------------------------------------- harness checks
def test_check_close_fires_on_mismatch():
    want = np.array([1.0, 2.0])
    assert _harness.check_close("ok", want + 1e-12, want, rtol=1e-10) < 2e-12
    with pytest.raises(_harness.BenchmarkMismatch, match="differ"):
        _harness.check_close("bad", want + 1e-6, want, rtol=1e-10)
    with pytest.raises(_harness.BenchmarkMismatch, match="non-finite"):
        _harness.check_close("nan", np.array([np.nan, 1.0]), want, rtol=1)


def test_simulate_bench_tiny_rows_and_precheck_fires(monkeypatch):
    r = bench_simulate.bench_speedup(8, 40, base_runs=2, repeats=1, check_steps=30)
    assert all(k in r for k in KEYS)
    assert r["max_abs_diff"] < 1e-12 and r["baseline_s"] > 0 and r["mirrorflow_s"] > 0
    assert r["ratio"] == pytest.approx(r["baseline_s"] / r["mirrorflow_s"])
    # a wrong fast path (decay ignored) must be caught before anything is timed
    good = bench_simulate.mirrorflow_run
    monkeypatch.setattr(bench_simulate, "mirrorflow_run",
                        lambda A, y, u0, decays, steps, threads=1: good(A, y, u0, 0 * decays, steps))
    with pytest.raises(_harness.BenchmarkMismatch):
        bench_simulate.bench_speedup(8, 40, base_runs=2, repeats=1, check_steps=30)


def test_simulate_rows_report_the_thread_choice(monkeypatch):
    from mirrorflow.dynamics import _native

    monkeypatch.setattr(_native, "cpu_set", lambda: [0, 1])
    monkeypatch.setattr(_native, "MIN_FLOPS_PER_THREAD", 1.0)
    for free, chosen in ((2.0, [2]), (1.0, [1])):  # an idle machine / another process on a core
        monkeypatch.setattr(_native, "free_cores", lambda free=free: free)
        r = bench_simulate.bench_speedup(24, 30, base_runs=2, repeats=1, check_steps=20,
                                         threads="auto")
        assert r["threads"] == "auto" and r["threads_chosen"] == chosen
        assert r["kernel"] == _native.kernels().variant() and len(r["loadavg"]) == 3
        assert r["max_abs_diff"] < 1e-12


def test_variant_rows_time_every_variant_after_checking_it(monkeypatch):
    import os

    from mirrorflow.dynamics import _native

    monkeypatch.delenv("MIRRORFLOW_KERNEL", raising=False)
    rows = bench_simulate.bench_variants(12, 20, repeats=1, check_steps=20)
    assert [r["kernel"] for r in rows] == list(_native.kernels().available[1:])
    assert all(r["max_abs_diff"] < 1e-12 and r["baseline_s"] > 0 for r in rows)
    assert "MIRRORFLOW_KERNEL" not in os.environ  # restored


def test_busy_core_measurement_runs_and_stops_its_busy_loop():
    from mirrorflow.bench import busy_core

    out = busy_core.run(sizes=((16, 20),), repeats=1, lag_waits=(0.3,))
    assert out["lag"][0]["runnable_others"] >= 1  # the busy loop, seen at once
    for part in ("idle", "busy"):
        assert set(out[part][0]["ms"]) >= {"1", "2", "auto"} and out[part][0]["auto_used"]


def test_gpu_rows_run_where_cuda_is_and_say_so_elsewhere(monkeypatch):
    # the row's code path, with the CPU standing in for the device
    r = bench_gpu.bench_device(16, 5, repeats=1, device="cpu", check_steps=10, peak_size=64)
    assert all(k in r for k in KEYS) and r["max_abs_diff"] < 1e-12
    assert r["max_abs_diff_vs_cpu"] < 1e-12 and 0 < r["peak_fraction"]
    assert r["runs"] == 16 and r["mf_run_steps_per_s"] == pytest.approx(16 * 5 / r["mirrorflow_s"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rows = bench_runner.validate_rows("bench_gpu", bench_gpu.run(quick=True))
    assert len(rows) == 1 and "no CUDA device" in rows[0]["skipped"]
    assert [bench_gpu.steps_for(b, True) for b in (1024, 65536)] == [488, 20]


def test_simulate_peak_and_memory_rows():
    r = bench_simulate.bench_peak(16, 20, threads=1, repeats=1, check_steps=20)
    assert 0 < r["peak_fraction"] and r["peak_gflops"] > 0 and r["max_abs_diff"] < 1e-12
    # 16384 runs hold ≳ 8 arrays of 16384 × 100 float64 (12.5 MiB each) at once
    m = bench_simulate.bench_memory((16384,), steps=2)
    assert m["rss_increase_mb"]["16384"] >= 8 * 12.5


def test_matrix_bench_tiny_and_precheck_fires(monkeypatch):
    r = bench_matrix.bench(8, 20, base_runs=1, repeats=1, check_steps=20)
    assert all(k in r for k in KEYS) and r["max_abs_diff"] < 1e-10
    good = bench_matrix.mirrorflow_run
    monkeypatch.setattr(bench_matrix, "mirrorflow_run",
                        lambda A, y, U0, V0, decays, steps, threads=1: good(A, y, U0, V0,
                                                                            decays + 0.1, steps))
    with pytest.raises(_harness.BenchmarkMismatch):
        bench_matrix.bench(8, 20, base_runs=1, repeats=1, check_steps=20)


def test_implicit_bias_bench_tiny_equal_kkt():
    r = bench_implicit_bias.bench(10, 30, repeats=1, baseline_repeats=1)
    assert r["kkt_mirrorflow"] <= r["kkt_cvxpy"] < 1e-4
    assert r["max_abs_diff"] < 1e-4


# ------------------------------------------------------------------------- runner and CLI
def _fake_suite(tmp_path: Path, body: str) -> Path:
    suite = tmp_path / "benchmarks"
    suite.mkdir()
    (suite / "bench_fake.py").write_text(body)
    return suite


FAKE = """
def run(quick=False):
    return [{"name": "fake", "baseline_s": 2.0, "mirrorflow_s": 0.5, "ratio": 4.0,
             "quick": quick, "blob_mb": len(bytes(range(256)) * (100 * 2**12)) / 2**20,
             "threads_chosen": [1, 2], "free_cores": 1.5, "kernel": "avx512"},
            {"name": "gpu", "baseline_s": float("nan"), "mirrorflow_s": float("nan"),
             "ratio": float("nan"), "skipped": "no CUDA device"}]
"""


def test_runner_subprocess_reports_rows_and_rss(tmp_path):
    suite = _fake_suite(tmp_path, FAKE)
    assert bench_runner.discover(suite) == ["bench_fake"]
    rows = bench_runner.run_suite(suite, quick=True)
    assert [r["name"] for r in rows] == ["fake", "gpu"] and rows[0]["quick"] is True
    # the 100 MiB buffer shows up in the child's peak RSS above its import baseline
    assert rows[0]["peak_rss_mb"] - rows[0]["import_rss_mb"] >= 50


def test_runner_rejects_bad_modules(tmp_path):
    suite = _fake_suite(tmp_path, "def run(quick=False):\n    return [{'name': 'x'}]\n")
    with pytest.raises(MirrorflowError, match="lacks keys"):
        bench_runner.run_suite(suite)
    (suite / "bench_fake.py").write_text("def run(quick=False):\n    raise RuntimeError('boom')\n")
    with pytest.raises(MirrorflowError, match="bench_fake failed: RuntimeError: boom"):
        bench_runner.run_suite(suite)
    with pytest.raises(MirrorflowError, match="does not exist"):
        bench_runner.discover(tmp_path / "nope")


def test_cli_bench_json_and_errors(tmp_path):
    suite = _fake_suite(tmp_path, FAKE)
    cli = CliRunner()
    res = cli.invoke(app, ["bench", "--quick", "--json", "--path", str(suite)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["results"][0]["ratio"] == 4.0 and data["machine"]["cores"] >= 1
    assert data["machine"]["native_kernels"] is True  # CI builds the C kernel
    long_name = "fake simulate uv B=1024 threads=2 with a long name"
    (tmp_path / "long").mkdir()
    suite2 = _fake_suite(tmp_path / "long", FAKE.replace('"name": "fake"', f'"name": "{long_name}"'))
    table = cli.invoke(app, ["bench", "--path", str(suite2)])
    assert table.exit_code == 0, table.output
    line = next(ln for ln in table.stdout.splitlines() if "fake simulate" in ln)
    assert long_name in line and "4.0×" in line  # one row per line, not folded at 80 columns
    assert "1–2 (1.5)" in line and "avx512" in line  # threads used (free cores), kernel
    assert "skipped: no CUDA device" in table.stdout
    bad = cli.invoke(app, ["bench", "--path", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    bad = cli.invoke(app, ["bench", "--path", str(suite), "--only", "bench_other"])
    assert bad.exit_code == 2 and "unknown benchmark" in bad.output


# ------------------------------------------------------------------------- simulator fast path
def _loop(name, A, y, u0, v0, step, steps, rate):
    """Per-run numpy loop of the update in simulate_gd's docstring, for any parameterization."""
    u, v = np.array(u0, float), np.array(v0, float)
    for k in range(steps):
        al = rate((k + 0.5) * step)
        x = {"uv": u * v, "u2-v2": u * u - v * v, "u2": u * u}[name]
        g = A.T @ (A @ x - y)
        gu, gv = {"uv": (v * g, u * g), "u2-v2": (2 * u * g, -2 * v * g),
                  "u2": (2 * u * g, 0 * v)}[name]
        u, v = u - step * (gu + al * u), v - step * (gv + al * v)
    return u, v


@pytest.mark.parametrize("n, d", [(6, 12), (3, 24)])  # kernel_gradient_form "G" / "lowrank"
@pytest.mark.parametrize("name", ["uv", "u2-v2", "u2"])
def test_fast_path_matches_per_run_loop(name, n, d):
    rng = np.random.default_rng(4)
    A = rng.normal(size=(n, d)) / np.sqrt(n)
    y = A @ np.where(np.arange(d) < 2, 1.0, 0.0)
    u0 = rng.uniform(0.5, 1.5, size=(3, d))
    v0 = 0.2
    scheds = [SwitchOffDecay(0.4, 0.33), ConstantDecay(0.2), NoDecay()]
    step, steps = 0.02, 60
    cases = [(A, y, "native", 1), (A, y, "native", 2), (A, y, "torch", 1),
             (np.stack([A] * 3), np.stack([y] * 3), "auto", 1)]  # per-run A: torch fast path
    for AA, yy, backend, threads in cases:
        res = simulate_gd(AA, yy, u0, v0, scheds, parameterization=name, step=step,
                          t_max=step * steps, chunk=17,  # switch falls inside a chunk
                          backend=backend, threads=threads)
        for i, s in enumerate(scheds):
            u, v = _loop(name, A, y, u0[i], np.full(d, v0), step, steps, s.rate)
            np.testing.assert_allclose(res.u[i], u, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(res.v[i], v, rtol=1e-12, atol=1e-14)


def test_fast_path_equals_generic_path_and_restores_threads():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(8, 20)) / np.sqrt(8)
    y = A @ rng.normal(size=20)
    generic = replace(PARAMETERIZATIONS["uv"])  # not the built-in object: slow generic path
    before = torch.get_num_threads()
    kw = dict(step=0.05, t_max=20.0, tol=1e-9, chunk=50, snapshot_times=[1.0, 3.0])
    fast = simulate_gd(A, y, 1.0, 0.0, [SwitchOffDecay(0.3, 2.0), NoDecay()], threads=1, **kw)
    slow = simulate_gd(A, y, 1.0, 0.0, [SwitchOffDecay(0.3, 2.0), NoDecay()],
                       parameterization=generic, **kw)
    assert torch.get_num_threads() == before
    assert fast.status == slow.status and np.array_equal(fast.steps, slow.steps)
    np.testing.assert_allclose(fast.x, slow.x, atol=1e-12)
    with pytest.raises(MirrorflowError, match="threads"):
        simulate_gd(A, y, 1.0, 0.0, NoDecay(), threads=0)


def test_count_flops_and_roofline_by_hand():
    """FLOPs of a matmul forward and backward are 2mnk each (closed form); the roofline's
    rates and ceiling follow by hand from made-up times."""
    from mirrorflow.bench._harness import count_flops, float32_matmul_gflops, roofline

    a = torch.randn(6, 5, requires_grad=True)
    b = torch.randn(5, 7)
    assert count_flops(lambda: a @ b) == 2 * 6 * 5 * 7
    assert count_flops(lambda: (a @ b).sum().backward()) == 2 * (2 * 6 * 5 * 7)  # + grad of a
    r = roofline({"seq": 1e9, "batched": 1.5e9}, 10, {"seq": 2.0, "batched": 1.0}, 20.0)
    assert r["seq_gflops"] == pytest.approx(5.0) and r["batched_gflops"] == pytest.approx(15.0)
    assert r["seq_fraction_of_peak"] == pytest.approx(0.25)
    assert r["max_ratio"] == pytest.approx(4.0)
    assert r["batched_fraction_of_peak"] == pytest.approx(0.75)
    assert 0.1 < float32_matmul_gflops(size=128, repeats=2) < 1e5
