"""The fused C kernels (``mirrorflow.dynamics._kernels``) against per-run numpy loops.

Each check runs the kernel through the public simulators with ``backend="native"`` and compares
with a loop written here from the update rules in docs/theory.md §1 and §6, one run at a time.
CI builds the extension (it needs a C compiler): ``backend="native"`` raises if it is missing,
so these tests fail rather than pass on the torch path.
"""

from __future__ import annotations

import numpy as np
import pytest

from mirrorflow import MirrorflowError
from mirrorflow.dynamics import simulate_gd
from mirrorflow.dynamics._native import kernels, use_native
from mirrorflow.dynamics.matrix import simulate_matrix_gd
from mirrorflow.dynamics.simulate import kernel_gradient_form
from mirrorflow.geometry.parameterizations import PARAMETERIZATIONS
from mirrorflow.schedules.continuous import ConstantDecay, NoDecay, SwitchOffDecay


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
