"""The simulators on a CUDA device against the CPU path (the C kernel), on small cases.

Skipped where torch sees no CUDA device, as issue 17 asks; the GPU benchmark rows
(``mirrorflow.bench.bench_gpu``) run on such a machine too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirrorflow.dynamics import simulate_gd
from mirrorflow.dynamics.matrix import simulate_matrix_gd
from mirrorflow.schedules.continuous import ConstantDecay, NoDecay, SwitchOffDecay

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda
@pytest.mark.parametrize("name", ["uv", "u2-v2", "u2"])
@pytest.mark.parametrize("n, d", [(6, 12), (3, 24)])  # the kernel's G and low-rank forms
def test_cuda_path_equals_cpu_path(name, n, d):
    rng = np.random.default_rng(21)
    A = rng.normal(size=(n, d)) / np.sqrt(n)
    y = A @ np.where(np.arange(d) < 2, 1.0, 0.0)
    u0 = rng.uniform(0.5, 1.5, size=(6, d))
    scheds = [SwitchOffDecay(0.4, 0.33), ConstantDecay(0.2), NoDecay()] * 2
    kw = dict(parameterization=name, step=0.02, t_max=3.0, snapshot_times=[0.5, 1.0],
              tol=1e-9, chunk=17)
    cpu = simulate_gd(A, y, u0, 0.2, scheds, **kw)
    gpu = simulate_gd(A, y, u0, 0.2, scheds, device="cuda", **kw)
    assert gpu.status == cpu.status and np.array_equal(gpu.steps, cpu.steps)
    assert np.max(np.abs(gpu.x - cpu.x)) <= 1e-12
    assert np.max(np.abs(gpu.u - cpu.u)) <= 1e-12 and np.max(np.abs(gpu.v - cpu.v)) <= 1e-12


@cuda
@pytest.mark.parametrize("symmetric", [False, True])
def test_cuda_matrix_path_equals_cpu_path(symmetric):
    rng = np.random.default_rng(22)
    m, d, k = 9, 5, 3
    A = rng.normal(size=(m, d, d)) / np.sqrt(m)
    y = rng.normal(size=m)
    U0 = 0.5 * rng.normal(size=(4, d, k))
    V0 = None if symmetric else 0.5 * rng.normal(size=(4, d, k))
    scheds = [SwitchOffDecay(0.5, 0.13), ConstantDecay(0.3), NoDecay(), NoDecay()]
    kw = dict(symmetric=symmetric, step=0.02, t_max=0.5, chunk=7)
    cpu = simulate_matrix_gd(A, y, U0, V0, scheds, **kw)
    gpu = simulate_matrix_gd(A, y, U0, V0, scheds, device="cuda", **kw)
    assert np.max(np.abs(gpu.X - cpu.X)) <= 1e-12
    assert np.max(np.abs(gpu.U - cpu.U)) <= 1e-12
