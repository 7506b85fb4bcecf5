"""Implicit bias at convergence: ``x_∞ = argmin_{Ax = y} R_a(x)`` (docs/theory.md §5).

Solved through the convex dual ``min_λ F(λ) = R_a*(Aᵀλ) − ⟨λ, y⟩`` by damped Newton with an
Armijo backtracking line search. At the dual optimum ``x = ∇R_a*(Aᵀλ)`` satisfies
``∇R_a(x) = Aᵀλ ∈ range(Aᵀ)`` exactly, so the KKT residual is the primal feasibility ``‖Ax − y‖``.

Why the dual and not root finding on ``A ∇R*(Aᵀλ) = y``: for a tiny scale (``a = 6`` gives
``|δ| ≈ 6e-6``) that map is nearly flat and then exponentially steep; plain Newton on it
overshoots to overflow. On the dual every step is a descent step of a convex function, and the
line search keeps iterates finite.

**Newton systems.** ``H = A diag(∇²R_a*(μ)) Aᵀ`` is badly conditioned at large ``a`` (curvatures
from ``β(a) ≈ 10⁻²⁶¹`` to ``O(1)`` at ``a = 300``). It is solved by Cholesky after symmetric
diagonal (Jacobi) scaling, with a ridge ``ρ·I`` on the scaled matrix: ``ρ = 10⁻¹⁴``, raised
tenfold while the factorization fails. The largest ``ρ`` used is recorded
(``ImplicitBiasResult.regularization``). A ridge only changes the step, not the fixed point:
accuracy is judged by the feasibility ``‖Ax − y‖`` of the final iterate.

**Feasibility.** A coordinate with ``β(a) = 0`` (balanced, ``u₀² = v₀²`` or ``x = u²``; or
``β₀e^{−2a}`` underflowing to 0) keeps the sign of its reference point, so ``{Ax = y}`` may not
meet the domain of ``R_a``. Before any Newton step a linear program (``scipy.optimize.linprog``,
HiGHS) finds the largest margin ``τ`` with ``Ax = y`` and ``sign(x̄_i)·x_i ≥ τ`` on those
coordinates: ``τ < 0`` means no solution (status ``"infeasible"``), ``τ = 0`` that every solution
has some of them at 0, on the boundary of the domain, where the dual diverges (status
``"boundary"`` unless the solve still converges). A second LP names the coordinates responsible:
a certificate ``λ`` with ``(Aᵀλ)_i = 0`` off those coordinates, ``sign(x̄_i)(Aᵀλ)_i ≤ 0`` on them
and ``⟨λ, y⟩ ≥ 0``; since ``⟨λ, y⟩ = Σ_i x_i (Aᵀλ)_i`` for any solution, the coordinates where
``(Aᵀλ)_i ≠ 0`` cannot all keep their frozen signs strictly. A ``y`` outside the range of ``A``
(rank-deficient ``A``) is found by least squares: up front when there are frozen coordinates or
``n > d``, otherwise only after a solve that did not converge (the check costs ``O(n²d)``, as much
as forming one Newton matrix, and a well-posed solve needs only a handful of those).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import numpy as np
import scipy.linalg
from scipy.optimize import linprog

from mirrorflow._core.array import to_numpy
from mirrorflow._core.limits import check_deadline, time_left
from mirrorflow._core.threads import blas_threads
from mirrorflow._core.validation import (
    MirrorflowError,
    check_finite_array,
    check_finite_scalar,
    check_positive_int,
)
from mirrorflow.geometry.family import LegendreFamily, _underflow_a, check_family, provides

__all__ = ["ImplicitBiasResult", "implicit_bias"]


@dataclass(frozen=True)
class ImplicitBiasResult:
    """Solution of ``min R_a(x) s.t. Ax = y``.

    Attributes
    ----------
    x : (d,) the predicted limit (``nan`` when the problem is infeasible).
    dual : (n,) the multiplier ``λ`` with ``∇R_a(x) = Aᵀλ``.
    kkt_residual : ``‖Ax − y‖ / max(1, ‖y‖)`` (stationarity holds by construction).
    iterations : Newton iterations used.
    converged : whether ``kkt_residual <= tol``.
    status : ``"converged"``, ``"infeasible"`` (no ``x`` in the domain of ``R_a`` satisfies
        ``Ax = y``), ``"boundary"`` (only solutions with frozen-sign coordinates at 0; the dual
        diverges), ``"max-iter"`` or ``"stalled"`` (the line search made no progress at float64
        precision).
    message : one line saying why, which coordinates and what to change (``""`` when converged
        without remark).
    regularization : largest ridge ``ρ`` added to the Jacobi-scaled Newton systems.
    """

    x: np.ndarray
    dual: np.ndarray
    kkt_residual: float
    iterations: int
    converged: bool
    status: str = "converged"
    message: str = ""
    regularization: float = 0.0

    def require(self) -> ImplicitBiasResult:
        """Return ``self`` if converged, else raise :class:`MirrorflowError` with :attr:`message`."""
        if not self.converged:
            raise MirrorflowError(self.message)
        return self


def _real(name: str, x) -> np.ndarray:
    """``x`` as float64, refusing what is not real numbers: strings, complex values (which a
    float64 cast would cut to their real part), objects (one-line :class:`MirrorflowError`)."""
    kind = getattr(getattr(x, "dtype", None), "is_complex", None)
    if callable(kind):  # a torch tensor
        if x.is_complex():
            raise MirrorflowError(f"{name} is complex ({x.dtype}); the implicit bias is defined "
                                  f"for real {name}: pass a real (float) array")
        return to_numpy(x)
    arr = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if arr.dtype.kind == "c":
        raise MirrorflowError(f"{name} is complex ({arr.dtype}); the implicit bias is defined for "
                              f"real {name}: pass a real (float) array")
    if arr.dtype.kind not in "biuf":
        raise MirrorflowError(f"{name} must hold real numbers, got an array of dtype "
                              f"{arr.dtype} ({arr.dtype.kind!r}); pass a float array")
    return to_numpy(arr)


def _check_problem(A, y, d: int) -> tuple[np.ndarray, np.ndarray]:
    A = _real("A", A)
    y = _real("y", y)
    if A.ndim != 2:
        raise MirrorflowError(f"A must be a 2-d matrix (n, d), got shape {A.shape}")
    if y.ndim != 1 or y.shape[0] != A.shape[0]:
        raise MirrorflowError(
            f"y must have shape ({A.shape[0]},) to match A of shape {A.shape}, got {y.shape}"
        )
    if A.shape[1] != d:
        raise MirrorflowError(
            f"A has {A.shape[1]} columns but the Legendre function has dimension {d}; "
            "pass an initialization with one entry per column of A"
        )
    check_finite_array("A", A)
    check_finite_array("y", y)
    return A, y


def implicit_bias(
    A,
    y,
    legendre: LegendreFamily,
    a: float = 0.0,
    *,
    tol: float = 1e-12,
    max_iter: int = 500,
    threads: int | None = 1,
) -> ImplicitBiasResult:
    """Predict the limit of the mirror flow: ``argmin_{Ax = y} R_a(x)``.

    Parameters
    ----------
    A : (n, d) array, y : (n,) array
        The interpolation constraint. ``A`` should have full row rank.
    legendre : LegendreFamily
        The Legendre family (e.g. :func:`mirrorflow.geometry.uv`): any object with the core
        methods of :mod:`mirrorflow.geometry.family`, ``conjugate`` and ``inverse_derivative``
        (diagonal ``∇²R_a*``) or ``dual_hessian`` (full); else a one-line
        :class:`MirrorflowError` names what is missing. ``half_line`` (frozen-sign coordinates),
        ``explain_frozen`` and ``dual_unit`` refine the feasibility check and the trust region.
    a : float
        Integrated weight decay at convergence (``a_∞``; ≥ 0).
    tol : float
        Target for the KKT residual ``‖Ax − y‖ / max(1, ‖y‖)``.
    max_iter : int
        Cap on Newton iterations.
    threads : int or None
        BLAS threads during the solve (via ``threadpoolctl`` when installed; restored
        afterwards). One thread is the default: on a shared machine a multi-threaded BLAS spins
        on busy cores and runs 10× slower (docs/benchmarks.md). ``None`` keeps the setting.

    Returns
    -------
    ImplicitBiasResult
        With ``kkt_residual``, ``iterations``, ``status`` and a one-line ``message`` when it did
        not converge (check ``converged``, or call ``.require()`` to raise
        :class:`MirrorflowError`). Frozen signs of balanced coordinates that ``Ax = y`` would
        have to break are detected by a linear program before any Newton step; ``y`` outside the
        range of ``A`` by least squares (module docstring).

    >>> from mirrorflow.geometry import uv
    >>> A, y = np.array([[1.0, 1.0]]), np.array([2.0])
    >>> r = implicit_bias(A, y, uv([1.0, 1.0], [0.0, 0.0]), a=0.0)   # symmetric: x = (1, 1)
    >>> r.status, np.round(r.x, 10)
    ('converged', array([1., 1.]))
    >>> r = implicit_bias(A, y, uv([1.0, 1.0], [1.0, 0.0]), a=0.0)   # coordinate 0 is frozen
    >>> bool(r.x[0] > 0), round(float(r.x.sum()), 10)
    (True, 2.0)
    """
    check_family(legendre, "implicit_bias", "conjugate", ("inverse_derivative", "dual_hessian"))
    A, y = _check_problem(A, y, legendre.dim)
    a = check_finite_scalar("a", a, minimum=0.0)
    tol = check_finite_scalar("tol", tol, minimum=0.0, strict=True)
    max_iter = check_positive_int("max_iter", max_iter)
    if threads is not None:
        threads = check_positive_int("threads", threads)
    # e^(−2a) is exactly 0 in float64 from a ≈ 373 on; past 8.9e307 the product 2a itself
    # overflows to inf (e^(−inf) = 0 all the same): say nothing of that harmless overflow
    quiet = np.errstate(over="ignore") if a > 1e300 else contextlib.nullcontext()
    with blas_threads(threads), quiet:
        issue = _feasibility(A, y, legendre, a)
        if issue is not None and issue[0] == "infeasible":
            nan = np.full(A.shape[1], np.nan)
            return ImplicitBiasResult(nan, np.full(A.shape[0], np.nan), float("inf"), 0, False,
                                      "infeasible", issue[1])
        res = _solve(A, y, legendre, a, tol, max_iter)
        if issue is None and not res.converged:
            # say why if the cause is an inconsistent Ax = y (checked only now: the least-squares
            # test costs about as much as the solve itself, and it never fails on full-rank A)
            rng = _range_issue(A, y)[0]
            if rng is not None:
                return replace(res, x=np.full(A.shape[1], np.nan), status=rng[0], message=rng[1])
        if issue is not None:  # boundary: report it whether or not the solve got there
            status = res.status if res.converged else "boundary"
            return replace(res, status=status, message=issue[1])
        return res


def _coords(idx: np.ndarray, noun: str, limit: int = 8) -> str:
    """``"coordinate 3"`` / ``"coordinates 0, 1, …"`` (at most ``limit`` listed)."""
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    more = f" and {idx.size - limit} more" if idx.size > limit else ""
    return f"{noun}{'s' if idx.size > 1 else ''} {shown}{more}"


def _range_issue(A, y) -> tuple[tuple[str, str] | None, np.ndarray]:
    """``(("infeasible", line) or None, least-squares x)``: does ``Ax = y`` have a solution?"""
    x_ls, *_ = np.linalg.lstsq(A, y, rcond=None)
    if np.linalg.norm(A @ x_ls - y) > 1e-9 * max(1.0, float(np.linalg.norm(y))):
        rank = np.linalg.matrix_rank(A)
        return ("infeasible",
                f"no x satisfies Ax = y: y is not in the range of A (rank {rank} < n = {A.shape[0]}); "
                "drop dependent rows of A or use a consistent y"), x_ls
    return None, x_ls


def _feasibility(A, y, legendre, a) -> tuple[str, str] | None:
    """``None`` if ``{Ax = y}`` meets the interior of the domain of ``R_a``, else ``(status, line)``.

    LPs described in the module docstring (docs/theory.md §3: balanced coordinates keep their sign).
    """
    n, d = A.shape
    if n > d:  # A cannot have full row rank: check Ax = y up front (cheap relative to d)
        issue = _range_issue(A, y)[0]
        if issue is not None:
            return issue
    if not provides(legendre, "half_line"):
        return None
    half = np.flatnonzero(np.broadcast_to(legendre.half_line(a), (d,)))
    if half.size == 0:
        return None
    xbar0 = np.asarray(legendre.reference(0.0), dtype=np.float64)
    lost = half[np.asarray(legendre.reference(a))[half] == 0]
    if lost.size:
        return ("infeasible",
                f"at a = {a:g} the reference point x̄(a) = x̄₀e^(−2a) underflows to 0 on "
                f"{_coords(lost, 'coordinate')}, so R_a is not representable in float64 there; "
                f"use a smaller a (here about a < {_underflow_a(xbar0[lost]):.0f})")
    issue, x_ls = _range_issue(A, y)
    if issue is not None:
        return issue
    s = np.sign(xbar0)[half]
    scale = max(1.0, float(np.abs(x_ls).max()))
    # margin LP: max τ s.t. Ax = y, s_i x_i ≥ τ (i frozen), τ ≤ scale
    c = np.zeros(d + 1)
    c[-1] = -1.0
    A_ub = np.zeros((half.size, d + 1))
    A_ub[np.arange(half.size), half] = -s
    A_ub[:, -1] = 1.0
    opts = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}
    left = time_left()  # the run's wall-time bound (docs/reliability.md) holds inside HiGHS too
    if left is not None:
        opts["time_limit"] = max(left, 1e-3)
    check_deadline("implicit bias: the feasibility linear program")
    lp = linprog(c, A_ub=A_ub, b_ub=np.zeros(half.size), A_eq=np.hstack([A, np.zeros((n, 1))]),
                 b_eq=y, bounds=[(None, None)] * d + [(None, scale)], method="highs",
                 options=opts)
    check_deadline("implicit bias: the feasibility linear program")
    if lp.status == 0 and -lp.fun > 1e-9 * scale:
        return None
    margin = -lp.fun if lp.status == 0 else -np.inf
    infeasible = margin < -1e-9 * scale
    # certificate LPs over λ: z = −s ⊙ (Aᵀλ)_frozen ∈ [0, 1], (Aᵀλ)_free = 0. Infeasible: the
    # largest ⟨λ, y⟩ > 0, then the fewest coordinates giving it; boundary: the most coordinates
    # with ⟨λ, y⟩ ≥ 0 (each of them is 0 in every solution)
    free = np.setdiff1d(np.arange(d), half)
    SA = s[:, None] * A.T[half]                       # rows: s_i (Aᵀλ)_i as a function of λ
    box_ub = np.vstack([SA, -SA])
    box_b = np.concatenate([np.zeros(half.size), np.ones(half.size)])
    eq = {"A_eq": A.T[free], "b_eq": np.zeros(free.size)} if free.size else {}
    common = {"bounds": [(None, None)] * n, "method": "highs", "options": opts, **eq}
    if infeasible:
        best = linprog(-y, A_ub=box_ub, b_ub=box_b, **common)
        v = -best.fun if best.status == 0 else 0.0
        cert = linprog(-np.sum(SA, axis=0), A_ub=np.vstack([box_ub, -y[None]]),
                       b_ub=np.concatenate([box_b, [-(1 - 1e-6) * v]]), **common)
    else:
        cert = linprog(np.sum(SA, axis=0), A_ub=np.vstack([box_ub, -y[None]]),
                       b_ub=np.concatenate([box_b, [0.0]]), **common)
    check_deadline("implicit bias: the certificate linear programs")
    z = -(SA @ cert.x) if cert.status == 0 else np.zeros(half.size)
    culprits = half[z > 1e-7]
    if culprits.size == 0:
        culprits = half
    if provides(legendre, "explain_frozen"):
        why, fix = legendre.explain_frozen(culprits, a)
    else:
        why = "the family's domain keeps the sign of x̄ there (half_line)"
        fix = "change the initialization"
    if infeasible:
        return ("infeasible",
                f"no x with Ax = y keeps the frozen signs of {_coords(culprits, 'coordinate')} "
                f"(the sign of x̄ there; {why}): {fix} or use a target y reachable with those signs")
    return ("boundary",
            f"every x with Ax = y has {_coords(culprits, 'coordinate')} at 0, the edge of the "
            f"frozen-sign domain ({why}): the minimizer is on the boundary, where the dual "
            f"diverges; {fix} or change y")


def _newton_step(H: np.ndarray, grad: np.ndarray, rho: float) -> tuple[np.ndarray, float]:
    """``−H⁻¹ grad`` by Cholesky of the Jacobi-scaled ``H + ρ I``; raises ``ρ`` until it factors."""
    dg = np.sqrt(np.maximum(np.diag(H), 1e-300))
    Hs = H / dg[:, None] / dg[None, :]
    gs = grad / dg
    eye = np.eye(H.shape[0])
    while True:
        try:
            cf = scipy.linalg.cho_factor(Hs + rho * eye, check_finite=False)
            return -scipy.linalg.cho_solve(cf, gs, check_finite=False) / dg, rho
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            if rho >= 1.0:  # pragma: no cover - a unit ridge on a unit-diagonal PSD matrix factors
                return -gs / dg, rho
            rho *= 10.0


def _solve(A, y, legendre, a, tol, max_iter) -> ImplicitBiasResult:
    """Damped Newton on the dual (docs/theory.md §5); arguments already validated."""
    ynorm = max(1.0, float(np.linalg.norm(y)))

    def dual(lam):
        mu = A.T @ lam
        x = legendre.inverse(mu, a)
        val = float(legendre.conjugate(mu, a)) - float(lam @ y)
        return val, x, mu

    if provides(legendre, "inverse_derivative"):
        def newton_matrix(mu):
            return (A * legendre.inverse_derivative(mu, a)) @ A.T
    else:
        def newton_matrix(mu):
            return A @ np.asarray(legendre.dual_hessian(mu, a)) @ A.T
    unit = float(legendre.dual_unit()) if provides(legendre, "dual_unit") else 1.0

    lam = np.zeros(A.shape[0])
    val, x, mu = dual(lam)
    it = 0
    rho_max = 0.0
    stalled = False
    for it in range(1, max_iter + 1):
        check_deadline(f"implicit-bias Newton solve, iteration {it}")
        grad = A @ x - y
        if np.linalg.norm(grad) / ynorm <= tol:
            it -= 1
            break
        step, rho = _newton_step(newton_matrix(mu), grad, 1e-14)
        rho_max = max(rho_max, rho)
        slope = float(grad @ step)
        gnorm = np.linalg.norm(grad)
        # trust region in the exponent: change θ = μ/c by at most 20 per step (a flat start with
        # a tiny scale would otherwise propose steps of size ~1/|δ| that overflow cosh)
        dmu = np.max(np.abs(A.T @ step)) / unit
        t = min(1.0, 20.0 / dmu) if dmu > 0 else 1.0
        for _ in range(80):
            check_deadline(f"implicit-bias Newton solve, line search of iteration {it}")
            new_val, new_x, new_mu = dual(lam + t * step)
            if np.isfinite(new_val) and np.all(np.isfinite(new_x)):
                if new_val <= val + 0.25 * t * slope:
                    break
                # near the optimum the Armijo test drowns in rounding: accept a step that
                # reduces the gradient without increasing F beyond rounding level
                if new_val <= val + 1e-13 * abs(val) and np.linalg.norm(A @ new_x - y) < gnorm:
                    break
            t *= 0.5
        else:
            stalled = True
            break  # no progress possible at float64 precision
        lam = lam + t * step
        val, x, mu = new_val, new_x, new_mu
    resid = float(np.linalg.norm(A @ x - y) / ynorm)
    if resid <= tol:
        return ImplicitBiasResult(np.asarray(x), lam, resid, it, True, regularization=rho_max)
    if stalled:
        status, msg = "stalled", (
            f"the dual Newton solve stalled after {it} iterations at residual {resid:.3g} > tol "
            f"{tol:g}: no step makes progress at float64 precision; loosen tol")
    else:
        status, msg = "max-iter", (
            f"the dual Newton solve reached max_iter = {max_iter} at residual {resid:.3g} > tol "
            f"{tol:g}; raise max_iter or loosen tol")
    return ImplicitBiasResult(np.asarray(x), lam, resid, it, False, status, msg, rho_max)
