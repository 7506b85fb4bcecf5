"""The chunked driver shared by simulate_gd and simulate_matrix_gd: the integrated decay at every
snapshot equals the hand sum Σ η α(midpoint), whatever the chunk size; runs that stop early keep
their a. (Bitwise identity with the pre-refactor loops was checked during development on 21
result sets; see the issue-26 report.)"""

import numpy as np
import pytest

from mirrorflow.dynamics._chunks import snapshot_grid
from mirrorflow.dynamics.matrix import simulate_matrix_gd
from mirrorflow.dynamics.simulate import simulate_gd
from mirrorflow.schedules.continuous import ConstantDecay, NoDecay, SwitchOffDecay


def _hand_a(wd, at, step, t):
    """Σ over steps k < t/step with midpoint (k + ½)·step < at of step·wd."""
    k = np.arange(round(t / step))
    return step * wd * np.count_nonzero((k + 0.5) * step < at)


@pytest.mark.parametrize("chunk", [1, 7, 500])
def test_gd_snapshot_a_is_the_hand_sum_for_every_chunk_size(chunk):
    A = np.array([[1.0, 0.5]])
    y = np.array([0.3])
    r = simulate_gd(A, y, 0.5, 0.2, [SwitchOffDecay(0.3, at=1.005), ConstantDecay(0.2)], step=0.01,
                    t_max=2.0, snapshot_times=[0.5, 1.0, 1.5], chunk=chunk, backend="torch")
    np.testing.assert_allclose(r.times, [0.0, 0.5, 1.0, 1.5, 2.0])
    want0 = [_hand_a(0.3, 1.005, 0.01, t) for t in r.times]  # 0, .15, .30, .30, .30
    np.testing.assert_allclose(r.integrated_wd[:, 0], want0, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(r.integrated_wd[:, 1], 0.2 * r.times, rtol=1e-12)


def test_matrix_snapshot_a_is_the_hand_sum():
    r = simulate_matrix_gd(np.ones((1, 2, 2)), np.array([1.0]), 0.3 * np.ones((2, 1)),
                           schedules=[SwitchOffDecay(0.4, at=0.5), NoDecay()], symmetric=True,
                           step=0.1, t_max=1.0, snapshot_times=[0.3], chunk=3)
    np.testing.assert_allclose(r.times, [0.0, 0.3, 1.0])
    np.testing.assert_allclose(r.integrated_wd[:, 0], [0.0, 0.12, 0.2], rtol=1e-12)
    np.testing.assert_allclose(r.integrated_wd[:, 1], 0.0)


def test_a_run_that_converges_keeps_its_a_and_stops_early():
    r = simulate_gd(np.eye(1), np.ones(1), 1.0, 0.0, [SwitchOffDecay(0.5, at=0.2), NoDecay()],
                    step=0.01, t_max=200.0, tol=1e-10, chunk=100, backend="torch")
    assert r.status == ("converged", "converged") and np.all(r.steps < 20000)
    np.testing.assert_allclose(r.a_final, [0.5 * 0.2, 0.0], rtol=1e-12)


def test_snapshot_grid_by_hand():
    total, snaps = snapshot_grid(0.25, 1.0, [0.1, 0.6, 3.0])  # 0.1 -> step 0, 0.6 -> step 2
    assert total == 4 and snaps.tolist() == [0, 2, 4]
