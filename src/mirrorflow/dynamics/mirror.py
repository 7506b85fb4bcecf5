"""Mirror-space integrator: ``d/dt ∇R_{a_t}(x_t) = −∇f(x_t)`` (docs/theory.md §2).

The state is the dual variable ``μ̃_t = ∇R_{a_t}(x_t)``, which starts at 0 (``x_0 = x̄(0)``) and
obeys ``dμ̃/dt = −Aᵀ(A x_t − y)`` with ``x_t = (∇R_{a_t})^{-1}(μ̃_t)``. The schedule enters only
through ``a_t``. Integrated with scipy's DOP853 at tight tolerances, piecewise between the
schedule's breakpoints (where ``α`` jumps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from mirrorflow._core.limits import check_deadline
from mirrorflow._core.threads import blas_threads
from mirrorflow._core.validation import MirrorflowError, check_finite_scalar
from mirrorflow.geometry.family import LegendreFamily, check_family
from mirrorflow.schedules.continuous import Schedule

__all__ = ["MirrorResult", "integrate_mirror"]


@dataclass(frozen=True)
class MirrorResult:
    """``x`` along the mirror flow at the requested ``times``: ``x`` has shape ``(S, d)``."""

    times: np.ndarray
    x: np.ndarray
    dual: np.ndarray
    integrated_wd: np.ndarray


def integrate_mirror(
    A,
    y,
    legendre: LegendreFamily,
    schedule: Schedule,
    times: Sequence[float],
    *,
    rtol: float = 1e-11,
    atol: float = 1e-13,
) -> MirrorResult:
    """Integrate the time-dependent mirror flow of ``f = ½‖Ax − y‖²`` from ``x_0 = x̄(0)``.

    Parameters
    ----------
    A : (n, d), y : (n,)
    legendre : the family ``R_a`` (e.g. ``mirrorflow.geometry.uv(u0, v0)``): any object with the
        core methods of :mod:`mirrorflow.geometry.family` (only ``inverse`` and ``dim`` are used).
    schedule : weight-decay schedule; only ``schedule.integral`` is used.
    times : increasing output times ``≥ 0``.

    >>> import numpy as np
    >>> from mirrorflow.geometry import uv
    >>> from mirrorflow.schedules.continuous import NoDecay
    >>> r = integrate_mirror(np.eye(1), np.array([2.0]), uv(1.0, 0.0), NoDecay(), [0.0, 50.0])
    >>> float(r.x[0, 0]), round(float(r.x[1, 0]), 6)     # from x̄(0) = u₀v₀ = 0 to the target y = 2
    (0.0, 2.0)
    """
    check_family(legendre, "integrate_mirror")
    A = np.asarray(A, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if A.ndim != 2 or y.shape != (A.shape[0],) or A.shape[1] != legendre.dim:
        raise MirrorflowError(
            f"shapes do not match: A {A.shape}, y {y.shape}, Legendre dimension {legendre.dim}"
        )
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or np.any(np.diff(times) < 0) or times[0] < 0:
        raise MirrorflowError("times must be a non-empty increasing 1-d sequence of values >= 0")
    check_finite_scalar("rtol", rtol, minimum=0.0, strict=True)
    t_end = float(times[-1])

    def rhs(t, mu):
        check_deadline(f"mirror flow at t = {t:.4g} of {t_end:g}")
        x = legendre.inverse(mu, float(schedule.integral(t)))
        return -(A.T @ (A @ x - y))

    cuts = sorted({0.0, t_end, *(b for b in schedule.breakpoints if 0.0 < b < t_end)})
    mu = np.zeros(legendre.dim)
    out = np.empty((times.size, legendre.dim))
    for t0, t1 in zip(cuts[:-1], cuts[1:]):
        mask = (times >= t0) & (times <= t1)
        t_eval = np.unique(np.append(times[mask], t1))
        sol = solve_ivp(rhs, (t0, t1), mu, method="DOP853", t_eval=t_eval, rtol=rtol, atol=atol)
        if not sol.success:
            raise MirrorflowError(f"mirror-flow integration failed at t={sol.t[-1]:g}: {sol.message}")
        out[mask] = sol.y.T[np.searchsorted(t_eval, times[mask])]
        mu = sol.y[:, -1]
    if times[0] == 0.0:
        out[times == 0.0] = 0.0
    a = np.asarray(schedule.integral(times))
    x = np.stack([legendre.inverse(out[i], float(a[i])) for i in range(times.size)])
    return MirrorResult(times, x, out, a)



def flow_to_convergence(
    A,
    y,
    legendre: LegendreFamily,
    *,
    tol: float = 1e-10,
    t_max: float = 1e8,
    rtol: float = 1e-10,
    atol: float = 1e-14,
) -> tuple[np.ndarray, float, bool]:
    """Follow the mirror flow of ``R = legendre`` at ``a = 0`` with no decay until it converges.

    This is the *exact adaptive tail* used once a weight-decay schedule has switched off: from
    the current parameters ``(u, v)`` the remaining gradient flow is the mirror flow of the
    Legendre function built from ``(u, v)`` (theory §2 with ``α = 0``). The late phase is stiff
    (tiny coordinates move on time scales ``~1/|δ|``), so it uses an implicit solver (Radau)
    with the analytic Jacobian ``−AᵀA diag(∇²R*)`` and stops when ``‖Ax − y‖/‖y‖ ≤ tol``, at
    ``t_max``, or when the run's wall-time bound is reached
    (:func:`mirrorflow._core.limits.check_deadline` raises ``RunLimitError``).

    Returns ``(x, t_end, converged)``.
    """
    check_family(legendre, "flow_to_convergence", "inverse_derivative")
    A = np.asarray(A, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    G, b = A.T @ A, A.T @ y
    ynorm = max(float(np.linalg.norm(y)), 1e-300)

    def rhs(t, mu):
        check_deadline(f"ODE tail at t = {t:.4g}")
        return b - G @ legendre.inverse(mu, 0.0)

    def jac(t, mu):
        check_deadline(f"ODE tail at t = {t:.4g} (Jacobian)")
        return -G * legendre.inverse_derivative(mu, 0.0)

    def event(t, mu):
        check_deadline(f"ODE tail at t = {t:.4g}")
        # aim at tol/2 so that the event's root (located to solver accuracy) is safely ≤ tol
        return np.linalg.norm(A @ legendre.inverse(mu, 0.0) - y) / ynorm - 0.5 * tol

    event.terminal = True
    mu0 = np.zeros(legendre.dim)
    if event(0.0, mu0) <= 0:  # already converged
        return np.asarray(legendre.inverse(mu0, 0.0)), 0.0, True
    with blas_threads(1):  # 100×100 LU factorizations: one thread is fastest
        sol = solve_ivp(rhs, (0.0, t_max), mu0, method="Radau", jac=jac,
                        events=event, rtol=rtol, atol=atol)
    mu = sol.y[:, -1]
    x = np.asarray(legendre.inverse(mu, 0.0))
    converged = bool(np.linalg.norm(A @ x - y) / ynorm <= tol)
    return x, float(sol.t[-1]), converged
