"""Numerical check of the central theorem (docs/theory.md §2).

Runs gradient descent in parameter space and integrates the time-dependent mirror flow in
``x``-space for the same problem and schedule, then compares ``x`` along the trajectory. The
theorem says the two coincide as the step goes to 0; the gap should shrink like ``O(η)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirrorflow._core.validation import check_positive_int
from mirrorflow.dynamics.mirror import integrate_mirror
from mirrorflow.dynamics.simulate import simulate_gd
from mirrorflow.geometry.parameterizations import get_parameterization
from mirrorflow.schedules.continuous import Schedule

__all__ = ["VerifyReport", "verify_theorem"]


@dataclass(frozen=True)
class VerifyReport:
    """Trajectories from both sides and their relative gap ``‖x_gd − x_mf‖ / max(‖x_mf‖, 1e-12)``."""

    times: np.ndarray
    x_gd: np.ndarray
    x_mirror: np.ndarray
    rel_error: np.ndarray

    @property
    def max_rel_error(self) -> float:
        return float(np.max(self.rel_error))


def verify_theorem(
    A,
    y,
    u0,
    v0,
    schedule: Schedule,
    *,
    parameterization: str = "uv",
    step: float = 1e-3,
    t_max: float = 10.0,
    n_snapshots: int = 21,
) -> VerifyReport:
    """Compare gradient descent (step ``step``) with the mirror flow on ``[0, t_max]``.

    >>> from mirrorflow.schedules.continuous import SwitchOffDecay
    >>> rep = verify_theorem(np.eye(2), np.array([1.0, -0.5]), 1.0, 0.2, SwitchOffDecay(0.5, 2.0),
    ...                      t_max=4.0, n_snapshots=5)
    >>> rep.times.tolist(), rep.max_rel_error < 1e-2        # the gap is the O(step) error
    ([0.0, 1.0, 2.0, 3.0, 4.0], True)
    """
    n_snapshots = check_positive_int("n_snapshots", n_snapshots, minimum=2)
    param = get_parameterization(parameterization)
    times = np.linspace(0.0, t_max, n_snapshots)
    gd = simulate_gd(A, y, u0, v0, schedule, parameterization=param, step=step, t_max=t_max,
                     snapshot_times=times)
    times = gd.times
    x_gd = gd.x[:, 0, :]
    legendre = param.legendre(np.broadcast_to(u0, (np.shape(A)[-1],)),
                              np.broadcast_to(v0, (np.shape(A)[-1],)))
    mf = integrate_mirror(A, y, legendre, schedule, times)
    err = np.linalg.norm(x_gd - mf.x, axis=1) / np.maximum(np.linalg.norm(mf.x, axis=1), 1e-12)
    return VerifyReport(times, x_gd, mf.x, err)
