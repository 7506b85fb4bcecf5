"""Batched GD simulator and mirror-space integrator: the central theorem, numerically."""

from dataclasses import dataclass

import numpy as np
import pytest

from mirrorflow import MirrorflowError
from mirrorflow.dynamics import integrate_mirror, simulate_gd, verify_theorem
from mirrorflow.geometry import uv
from mirrorflow.schedules import ConstantDecay, NoDecay, SwitchOffDecay
from mirrorflow.schedules.continuous import Schedule


def _problem(n=6, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1 / np.sqrt(n), (n, d)), rng.normal(size=n)


@pytest.mark.parametrize("param,u0,v0", [("uv", 1.0, 0.0), ("u2-v2", 1.0, 0.5), ("u2", 0.8, 0.0),
                                         ("uv", 0.6, 0.6)])
def test_theorem_gd_matches_mirror_flow_with_switch_off(param, u0, v0):
    """Theory §2: GD in (u, v) and the mirror ODE in x agree; the gap shrinks like O(η)."""
    A, y = _problem()
    sched = SwitchOffDecay(0.5, 1.5)
    coarse = verify_theorem(A, y, u0, v0, sched, parameterization=param, step=4e-3, t_max=3.0)
    fine = verify_theorem(A, y, u0, v0, sched, parameterization=param, step=1e-3, t_max=3.0)
    assert fine.max_rel_error < 5e-3
    assert 2.5 < coarse.max_rel_error / fine.max_rel_error < 6  # first order: ratio ≈ 4


def _numpy_gd(A, y, u0, v0, alphas, step, steps):
    """Independent reference: gradient descent on ½‖A(u⊙v) − y‖² + α_k ‖(u, v)‖²/2, written out."""
    u, v = np.full(A.shape[1], u0), np.full(A.shape[1], v0)
    for k in range(steps):
        g = A.T @ (A @ (u * v) - y)
        u, v = u - step * (v * g + alphas[k] * u), v - step * (u * g + alphas[k] * v)
    return u * v


def test_batched_simulator_matches_per_run_numpy_loop():
    A, y = _problem()
    scheds = [NoDecay(), ConstantDecay(0.3), SwitchOffDecay(0.3, 0.5)]
    step, steps = 0.01, 150
    res = simulate_gd(A, y, 1.0, 0.2, scheds, step=step, t_max=step * steps, chunk=40)
    mids = (np.arange(steps) + 0.5) * step
    for i, s in enumerate(scheds):
        ref = _numpy_gd(A, y, 1.0, 0.2, s.rate(mids), step, steps)
        np.testing.assert_allclose(res.x_final[i], ref, rtol=1e-12, atol=1e-14)
    # integrated decay is Σ η α_k: 0, 0.3·1.5, 0.3·0.5
    np.testing.assert_allclose(res.a_final, [0.0, 0.45, 0.15], atol=1e-12)


def test_snapshots_and_a_along_the_way():
    A, y = _problem()
    res = simulate_gd(A, y, 1.0, 0.0, SwitchOffDecay(0.2, 1.0), step=0.01, t_max=2.0,
                      snapshot_times=[0.5, 1.0, 1.5])
    np.testing.assert_allclose(res.times, [0.0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(res.integrated_wd[:, 0], [0.0, 0.1, 0.2, 0.2, 0.2], atol=1e-12)
    np.testing.assert_allclose(res.x[-1], res.x_final)


def test_balancedness_decays_like_exp_minus_2a():
    """u² − v² shrinks by e^{-2a} under the flow (theory §3); GD with a small step tracks it."""
    A, y = _problem()
    res = simulate_gd(A, y, 1.0, 0.3, ConstantDecay(0.4), step=1e-3, t_max=2.0)
    delta = res.u**2 - res.v**2
    np.testing.assert_allclose(delta, (1 - 0.09) * np.exp(-2 * 0.8), rtol=5e-3)


def test_convergence_stops_runs_and_divergence_is_flagged():
    A, y = _problem(n=4, d=10)
    res = simulate_gd(np.stack([A, A]), np.stack([y, y]), 1.0, 0.0, NoDecay(), step=0.02,
                      t_max=2000.0, tol=1e-9)
    assert res.status == ("converged", "converged")
    assert np.all(res.residual <= 1e-9)
    bad = simulate_gd(np.stack([A, 30 * A]), np.stack([y, y]), 1.0, 0.0, NoDecay(), step=0.5,
                      t_max=100.0)
    assert bad.status[1] == "diverged" and bad.status[0] != "diverged"
    assert np.all(np.isfinite(bad.x_final[0]))


def test_mirror_integrator_reaches_prediction_direction():
    """Mirror ODE at t → large: x stays on the dual manifold ∇R(x) ∈ range(Aᵀ)."""
    A, y = _problem(n=3, d=6)
    fam = uv(np.ones(6), np.zeros(6))
    out = integrate_mirror(A, y, fam, NoDecay(), [0.0, 1.0, 50.0])
    assert np.allclose(out.x[0], 0.0)
    g = fam.grad(out.x[-1], 0.0)
    proj = A.T @ np.linalg.lstsq(A.T, g, rcond=None)[0]
    np.testing.assert_allclose(g, proj, atol=1e-7)


def test_bad_input():
    A, y = _problem()
    with pytest.raises(MirrorflowError, match="y must have shape"):
        simulate_gd(A, y[:-1], 1.0, 0.0, NoDecay())
    with pytest.raises(MirrorflowError, match="u0 must be"):
        simulate_gd(A, y, np.ones(3), 0.0, NoDecay())
    with pytest.raises(MirrorflowError, match="step must be > 0"):
        simulate_gd(A, y, 1.0, 0.0, NoDecay(), step=-1)
    with pytest.raises(MirrorflowError, match="2 schedules for a batch of 3"):
        simulate_gd(np.stack([A] * 3), y, 1.0, 0.0, [NoDecay(), NoDecay()])
    with pytest.raises(MirrorflowError, match="unknown parameterization"):
        simulate_gd(A, y, 1.0, 0.0, NoDecay(), parameterization="uvw")


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_a_stopped_run_keeps_the_integrated_decay_of_its_own_stop_time(backend):
    """Issue 28, survivor 1: in a batch, the run that converges first stops integrating decay.
    Constant decay 0.1 and 0.01 with a speed tolerance: run 0 stops at its own time T₀ (long
    before run 1), so its a must be 0.1 · T₀ by hand — not 0.1 · (run 1's stop time)."""
    A, y = _problem()
    rates, step = (0.1, 0.01), 0.1
    res = simulate_gd(A, y, 1.0, 0.0, [ConstantDecay(r) for r in rates], step=step,
                      t_max=1000.0, tol=1e-4, chunk=50, snapshot_times=[50.0, 300.0],
                      backend=backend)
    assert res.status == ("converged", "converged")
    stop = res.steps * step  # each run's own stop time
    assert stop[0] < 300.0 < stop[1] < 1000.0  # run 0 stops first, run 1 runs on
    np.testing.assert_allclose(res.a_final, [r * t for r, t in zip(rates, stop)], rtol=1e-12)
    # a snapshot while both run counts both; at t = 300 run 0 has stopped, run 1 not yet
    snap = {round(t, 6): a for t, a in zip(res.times, res.integrated_wd)}
    np.testing.assert_allclose(snap[50.0], [0.1 * 50.0, 0.01 * 50.0], rtol=1e-12)
    np.testing.assert_allclose(snap[300.0], [0.1 * stop[0], 0.01 * 300.0], rtol=1e-12)


@dataclass(frozen=True)
class _Wavy(Schedule):
    """A decay that changes at every step: α_t = 0.3 + 0.2 sin(7t) (never settles)."""

    def rate(self, t):
        return 0.3 + 0.2 * np.sin(7.0 * np.asarray(t, dtype=np.float64))

    def integral(self, t):  # pragma: no cover - not used by the simulator
        t = np.asarray(t, dtype=np.float64)
        return 0.3 * t + 0.2 * (1.0 - np.cos(7.0 * t)) / 7.0

    @property
    def final_rate(self) -> float:  # the decay stays on (sin(∞) is undefined)
        return 0.3


def _numpy_loop(name, A, y, u0, v0, step, steps, rate):
    """One run of gradient descent on ½‖Ax − y‖² + α(t)‖(u, v)‖²/2, written out in numpy, with
    the decay of step k taken at its midpoint (k + ½)η; returns u, v and a = Σ η α."""
    u, v, a = np.array(u0, float), np.array(v0, float), 0.0
    for k in range(steps):
        al = float(rate((k + 0.5) * step))
        x = {"uv": u * v, "u2-v2": u * u - v * v, "u2": u * u}[name]
        g = A.T @ (A @ x - y)
        gu, gv = {"uv": (v * g, u * g), "u2-v2": (2 * u * g, -2 * v * g),
                  "u2": (2 * u * g, np.zeros_like(v))}[name]
        u, v = u - step * (gu + al * u), v - step * (gv + al * v)
        a += step * al
    return u, v, a


@pytest.mark.parametrize("shared", [True, False])  # shared A (addmm) / per-run A (baddbmm)
@pytest.mark.parametrize("name", ["uv", "u2-v2", "u2"])
def test_torch_path_with_decay_changing_inside_chunks_matches_a_numpy_loop(name, shared):
    """Issue 28: the torch fast path (forced: backend="torch", never the C kernel) with decays
    that change inside a chunk — a switch-off at step 16.5 of chunks of 7, and a decay that
    changes every step — against a per-run numpy loop."""
    rng = np.random.default_rng(28)
    n, d, B = 5, 9, 4
    A = rng.normal(size=(n, d)) / np.sqrt(n)
    y = A @ np.where(np.arange(d) < 2, 1.0, 0.0)
    u0 = rng.uniform(0.5, 1.5, size=(B, d))
    v0 = rng.uniform(0.1, 0.4, size=(B, d))
    scheds = [SwitchOffDecay(0.4, 0.33), _Wavy(), ConstantDecay(0.2), NoDecay()]
    step, steps = 0.02, 40
    AA, yy = (A, y) if shared else (np.stack([A] * B), np.stack([y] * B))
    res = simulate_gd(AA, yy, u0, v0, scheds, parameterization=name, step=step,
                      t_max=step * steps, chunk=7, backend="torch", threads=1)
    for i, s in enumerate(scheds):
        u, v, a = _numpy_loop(name, A, y, u0[i], v0[i], step, steps, s.rate)
        np.testing.assert_allclose(res.u[i], u, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(res.v[i], v, rtol=1e-12, atol=1e-14)
        assert res.a_final[i] == pytest.approx(a, rel=1e-12, abs=1e-15)


def test_a_run_does_not_stop_before_its_schedule_settles():
    """Mutation M5 (issue 28): the stopping rule is checked only after a run's schedule has
    settled. A switch-off of a tiny decay (1e-9, at t = 40) reaches the residual tolerance
    about when a run without decay does (t = 36 here) but may stop only from t = 40 on, with
    a = 1e-9 · 40 by hand."""
    rng = np.random.default_rng(0)
    A, y = rng.normal(0, 1 / np.sqrt(4), (4, 10)), rng.normal(size=4)
    res = simulate_gd(A, y, 1.0, 0.0, [SwitchOffDecay(1e-9, 40.0), NoDecay()], step=0.05,
                      t_max=400.0, tol=1e-6, chunk=20)
    stop = res.steps * 0.05
    assert res.status == ("converged", "converged")
    assert stop[1] < 40.0 <= stop[0]  # the criterion alone would have stopped run 0 earlier
    assert res.a_final[0] == pytest.approx(1e-9 * 40.0, rel=1e-12)


def test_a_finite_blow_up_is_diverged_at_the_step_it_passes_the_growth_limit():
    """Mutation M8 (issue 28): a run whose residual grows past 10⁴ × max(1, its start value)
    is diverged at that step while still finite (not only once it overflows). The step is
    found by a numpy loop of the same gradient descent (uv, step 0.8: unstable)."""
    rng = np.random.default_rng(0)
    A, y = rng.normal(0, 1 / np.sqrt(4), (4, 10)), rng.normal(size=4)
    step, ny = 0.8, np.linalg.norm(y)
    u, v = np.ones(10), np.zeros(10)
    limit = 1e4 * max(1.0, np.linalg.norm(A @ (u * v) - y) / ny)
    k, res = 0, 0.0
    while res <= limit and k < 200:
        g = A.T @ (A @ (u * v) - y)
        u, v = u - step * v * g, v - step * u * g
        res = np.linalg.norm(A @ (u * v) - y) / ny
        k += 1
    assert np.isfinite(res) and k < 50  # a finite blow-up, a few steps in
    out = simulate_gd(A, y, 1.0, 0.0, NoDecay(), step=step, t_max=200 * step, chunk=1)
    assert out.status == ("diverged",) and out.steps[0] == k
    assert out.residual[0] == pytest.approx(res, rel=1e-9)


def test_a_t_max_off_the_step_grid_runs_the_steps_that_cover_it():
    """Mutation M12 (issue 28): t_max = 1 with step 0.3 runs ceil(1 / 0.3) = 4 steps (as
    documented), so constant decay 0.5 leaves a = 0.5 · 4 · 0.3 = 0.6 by hand."""
    A, y = _problem()
    res = simulate_gd(A, y, 1.0, 0.0, ConstantDecay(0.5), step=0.3, t_max=1.0)
    assert res.steps[0] == 4 and res.a_final[0] == pytest.approx(0.6, rel=1e-12)
