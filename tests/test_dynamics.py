"""Batched GD simulator and mirror-space integrator: the central theorem, numerically."""

import numpy as np
import pytest

from mirrorflow import MirrorflowError
from mirrorflow.dynamics import integrate_mirror, simulate_gd, verify_theorem
from mirrorflow.geometry import uv
from mirrorflow.schedules import ConstantDecay, NoDecay, SwitchOffDecay


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
