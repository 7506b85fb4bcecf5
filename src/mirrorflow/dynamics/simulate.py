"""Batched gradient descent in parameter space for ``f(x) = ½‖Ax − y‖²``, ``x = g(u, v)``.

One call runs ``B`` independent problems (seeds, decays, schedules) side by side in float64
torch: state ``u, v`` of shape ``(B, d)``. Steps run in chunks; within a chunk the decay of every
run is precomputed, so the per-step work is a handful of fused tensor ops.

Update (coupled weight decay, step ``η``, decay ``α_k`` evaluated at the step's midpoint time)::

    x = g(u, v);   ∇f = Aᵀ(Ax − y)
    (u, v) ← (u, v) − η [ J_gᵀ ∇f + α_k (u, v) ]

and the integrated decay is ``a = Σ_k η α_k`` (docs/theory.md §1).

A run is ``diverged`` (and stops being updated) when ``x`` stops being finite or its residual
``‖Ax − y‖/‖y‖`` grows past :data:`GROWTH_LIMIT` times ``max(1, its initial residual)``: stable
gradient descent with weight decay never gets there (the regularized loss decreases), so a
finite blow-up is caught as early as a NaN. Both are checked once per chunk, as is the
wall-time bound of :func:`mirrorflow._core.limits.check_deadline`.

Fast path (the built-in ``uv``, ``u2-v2``, ``u2``; docs/benchmarks.md): all three are
*multiplicative* in suitable coordinates ``(p, q)``. With ``x = κ (p² − q²)`` and
``c_k = 1 − η α_k`` the update above is exactly::

    g = x G − b  (G = AᵀA, b = Aᵀy),     p ← p ⊙ (c_k − γ η g),     q ← q ⊙ (c_k + γ η g)

``uv``: ``p = u + v, q = u − v, κ = ¼, γ = 1``; ``u2-v2``: ``p = u, q = v, κ = 1, γ = 2``;
``u2``: ``p = u, q = 0, κ = 1, γ = 2``. With a shared ``A`` on the CPU, chunks of steps run in
the fused C kernel of ``_kernels.c`` (the gradient as ``x G − b`` or, when ``2n < d``, as
``(x Aᵀ − y) A`` with fewer flops, then one elementwise pass; no Python per step;
``backend="auto"``); otherwise one step is one ``addmm`` and six in-place torch ops on
preallocated buffers.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from mirrorflow._core.threads import torch_threads
from mirrorflow._core.validation import (
    MirrorflowError,
    check_finite_array,
    check_finite_scalar,
    check_positive_int,
)
from mirrorflow.dynamics._chunks import (
    ChunkDriver,
    as_schedules,
    broadcast_schedules,
    distinct_schedules,
    snapshot_grid,
)
from mirrorflow.dynamics._native import check_threads, row_parallel, use_native
from mirrorflow.geometry.parameterizations import (
    PARAMETERIZATIONS,
    Parameterization,
    get_parameterization,
)
from mirrorflow.schedules.continuous import Schedule

__all__ = ["GROWTH_LIMIT", "GDResult", "distinct_schedules", "simulate_gd"]

#: A run whose relative residual exceeds this many times ``max(1, initial residual)`` diverged.
GROWTH_LIMIT = 1e4


@dataclass(frozen=True)
class GDResult:
    """Output of :func:`simulate_gd` (``B`` runs, ``S`` snapshots, dimension ``d``).

    Attributes
    ----------
    times : (S,) snapshot times (continuous time ``t = k η``).
    x : (S, B, d) snapshots of ``x``.
    integrated_wd : (S, B) integrated decay ``a`` at each snapshot.
    u, v : (B, d) final parameters.
    x_final : (B, d) final ``x``.
    steps : (B,) steps taken by each run (runs stop at convergence or divergence).
    status : tuple of ``"converged" | "max-time" | "diverged"`` per run.
    residual : (B,) final ``‖Ax − y‖ / ‖y‖``.
    a_final : (B,) integrated decay at the end of each run.
    threads_used : CPU threads of each chunk (the C kernel's choice for ``threads="auto"``;
        torch's thread count on the torch path).
    """

    times: np.ndarray
    x: np.ndarray
    integrated_wd: np.ndarray
    u: np.ndarray
    v: np.ndarray
    x_final: np.ndarray
    steps: np.ndarray
    status: tuple[str, ...]
    residual: np.ndarray
    a_final: np.ndarray
    step: float
    threads_used: tuple[int, ...] = ()


def _prepare(A, y, u0, v0):
    A = np.asarray(A, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if A.ndim not in (2, 3):
        raise MirrorflowError(f"A must have shape (n, d) or (B, n, d), got {A.shape}")
    n, d = A.shape[-2:]
    if y.shape[-1:] != (n,) or y.ndim not in (1, 2):
        raise MirrorflowError(f"y must have shape ({n},) or (B, {n}) to match A {A.shape}, got {y.shape}")
    u0 = np.asarray(u0, dtype=np.float64)
    v0 = np.asarray(v0, dtype=np.float64)
    for name, w in (("u0", u0), ("v0", v0)):
        if w.ndim > 2 or (w.ndim >= 1 and w.shape[-1] not in (1, d)):
            raise MirrorflowError(
                f"{name} must be a scalar or have shape ({d},) or (B, {d}) to match A {A.shape}, "
                f"got {w.shape}"
            )
    batch_sizes = {x.shape[0] for x, k in ((A, 3), (y, 2), (u0, 2), (v0, 2)) if x.ndim == k}
    if len(batch_sizes) > 1:
        raise MirrorflowError(f"batch sizes of A, y, u0, v0 disagree: {sorted(batch_sizes)}")
    for name, arr in (("A", A), ("y", y), ("u0", u0), ("v0", v0)):
        check_finite_array(name, arr)
    return A, y, u0, v0, (batch_sizes.pop() if batch_sizes else None)


def simulate_gd(
    A,
    y,
    u0,
    v0=0.0,
    schedules: Schedule | Sequence[Schedule] = (),
    *,
    parameterization: str | Parameterization = "uv",
    step: float = 0.01,
    t_max: float = 100.0,
    snapshot_times: Sequence[float] | None = None,
    tol: float | None = None,
    chunk: int = 500,
    device: str | torch.device = "cpu",
    threads: int | str | None = "auto",
    progress: bool = False,
    backend: str = "auto",
) -> GDResult:
    """Run gradient descent with weight-decay schedules on ``B`` problems at once.

    Parameters
    ----------
    A : (n, d) shared or (B, n, d); y : (n,) or (B, n)
    u0, v0 : scalar, (d,) or (B, d) initializations.
    schedules : one schedule for all runs or a sequence of ``B`` schedules.
    parameterization : ``"uv"``, ``"u2-v2"``, ``"u2"`` or a :class:`Parameterization`.
    step : step size ``η``; time advances by ``η`` per step.
    t_max : time cap; a run stops after ``ceil(t_max / η)`` steps at most.
    snapshot_times : times at which to record ``x`` (rounded to the step grid); ``0`` and the
        final time are always included.
    tol : stopping rule, checked once per chunk after the run's schedule has settled. A run
        whose decay ends (``final_rate == 0``) stops when ``‖Ax − y‖/‖y‖ ≤ tol`` (it converges
        to an interpolating point); a run whose decay stays on stops when the speed
        ``‖Δx‖/Δt`` over the chunk is ``≤ tol`` (a stationary point of the regularized
        problem). ``None`` runs to ``t_max``.
    chunk : steps per chunk (convergence is checked once per chunk).
    threads : CPU threads (restored afterwards). ``"auto"`` (default): the C kernel picks, chunk
        by chunk, as many threads as the work per thread and the cores that other processes
        leave free allow (``mirrorflow.dynamics._native.choose_threads``; one on a busy
        machine), and the torch path runs on one. An integer: the kernel splits the runs into
        up to that many parts run in parallel; the torch path sets torch's thread count.
        ``None`` keeps torch's setting (and one thread for the kernel). The results do not
        depend on the thread count.
    progress : show a progress bar.
    backend : ``"auto"`` (the C kernel where it applies: built-in parameterization, shared
        ``A``, CPU; else torch), ``"native"`` (the kernel, or an error saying why not) or
        ``"torch"``. Both compute the same steps, to rounding.

    >>> from mirrorflow.schedules.continuous import ConstantDecay, NoDecay
    >>> r = simulate_gd(np.eye(1), np.ones(1), 1.0, 0.0, NoDecay(), t_max=50.0, tol=1e-9)
    >>> r.status, round(float(r.x_final[0, 0]), 6)        # x = uv fits y = 1
    (('converged',), 1.0)
    >>> r = simulate_gd(np.eye(1), np.ones(1), 1.0, 0.0, ConstantDecay(0.1), step=0.01, t_max=10.0)
    >>> round(float(r.a_final[0]), 12)                      # a = Σ η α = 1000 · 0.01 · 0.1
    1.0
    """
    threads = check_threads(threads)
    with torch_threads(1 if threads == "auto" else threads):
        return _simulate(A, y, u0, v0, schedules, parameterization, step, t_max, snapshot_times,
                         tol, chunk, device, progress, backend, threads)


def kernel_gradient_form(n: int, d: int) -> str:
    """How the C kernel forms ``∇f = Aᵀ(Ax − y)`` for ``A`` of shape ``(n, d)``.

    ``"G"``: ``x G − b`` with ``G = AᵀA`` precomputed, ``2d²`` flops per run and step;
    ``"lowrank"``: ``(x Aᵀ − y) A``, ``4nd`` flops; chosen when it has fewer (``2n < d``, the
    overparameterized case). Measured at ``B = 64``: 1.1× faster at ``n = 40, d = 100``,
    16× at ``n = 20, d = 1000`` (docs/benchmarks.md).
    """
    return "lowrank" if 2 * n < d else "G"


# (κ, γ, has q) of the multiplicative form of each built-in parameterization (module docstring)
_MULTIPLICATIVE = {"uv": (0.25, 1.0, True), "u2-v2": (1.0, 2.0, True), "u2": (1.0, 2.0, False)}


def _to_pq(name: str, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    if name == "uv":
        return u + v, u - v
    return u.clone(), (v.clone() if name == "u2-v2" else None)


def _from_pq(name: str, p: torch.Tensor, q: torch.Tensor | None, v: torch.Tensor):
    if name == "uv":
        return 0.5 * (p + q), 0.5 * (p - q)
    return p, (q if name == "u2-v2" else v)


def _pq_into(name: str, u: np.ndarray, v: np.ndarray, bufs: list) -> tuple:
    """``(p, q)`` for the C kernel, as numpy arrays: ``u`` and ``v`` themselves where ``p = u,
    q = v``, else written into the reused buffers ``bufs`` (``uv``: ``u ± v``)."""
    if name != "uv":
        return u, v
    if not bufs:
        bufs.extend((np.empty_like(u), np.empty_like(u)))
    np.add(u, v, out=bufs[0])
    np.subtract(u, v, out=bufs[1])
    return bufs[0], bufs[1]


def _uv_from(name: str, pq: tuple, u: np.ndarray, v: np.ndarray) -> None:
    """``u, v`` (in place) from the kernel's ``p, q`` (the inverse of :func:`_pq_into`)."""
    if name != "uv":
        return  # the kernel updated u (and v) in place
    p, q = pq
    np.add(p, q, out=u)
    u *= 0.5
    np.subtract(p, q, out=v)
    v *= 0.5


def _multiplicative_chunk(p, q, grad_into, alphas: np.ndarray, alpha_t: torch.Tensor,
                          eta: torch.Tensor, gamma: float, bufs) -> None:
    """Run ``len(alphas)`` steps of the multiplicative update in place on ``p, q``.

    ``grad_into(x, out)`` writes ``x G − b`` into ``out``. The shrink factor ``c = 1 − η α``
    is rebuilt only on steps where some run's decay changes.
    """
    x, g, t = bufs
    K = len(alphas)
    changed = np.ones(K, dtype=bool)
    changed[1:] = np.any(alphas[1:] != alphas[:-1], axis=1)
    ge = gamma * eta  # (B, 1); 0 for frozen runs
    c = c2 = None
    for j in range(K):
        if changed[j]:
            c = 1.0 - eta * alpha_t[j].unsqueeze(1)
            c2 = 2.0 * c
        torch.mul(p, p, out=x)
        if q is not None:
            x.addcmul_(q, q, value=-1.0)
        grad_into(x, g)
        torch.addcmul(c, ge, g, value=-1.0, out=t)  # c − γη g
        p.mul_(t)
        if q is not None:
            torch.sub(c2, t, out=t)  # c + γη g
            q.mul_(t)


def _simulate(A, y, u0, v0, schedules, parameterization, step, t_max, snapshot_times, tol,
              chunk, device, progress, backend, threads) -> GDResult:
    param = get_parameterization(parameterization) if isinstance(parameterization, str) else parameterization
    step = check_finite_scalar("step", step, minimum=0.0, strict=True)
    t_max = check_finite_scalar("t_max", t_max, minimum=0.0, strict=True)
    chunk = check_positive_int("chunk", chunk)
    if tol is not None:
        tol = check_finite_scalar("tol", tol, minimum=0.0, strict=True)
    A, y, u0, v0, B = _prepare(A, y, u0, v0)
    schedules = as_schedules(schedules)
    if B is None:
        B = len(schedules)
    schedules = broadcast_schedules(schedules, B)
    n, d = A.shape[-2:]
    total_steps, snaps = snapshot_grid(step, t_max, snapshot_times)

    dev = torch.device(device)
    f64 = dict(dtype=torch.float64, device=dev)
    shared = A.ndim == 2
    fast = param is PARAMETERIZATIONS.get(param.name)
    native = use_native(backend, fast and shared and dev.type == "cpu",
                        "custom parameterizations, per-run A or non-CPU devices")
    if native and torch.get_num_threads() != 1:
        # the kernel's own threads do the work; torch's would only spin between the small
        # bookkeeping ops (simulate_gd restores torch's thread count on return)
        torch.set_num_threads(1)
    lowrank = bool(native) and kernel_gradient_form(n, d) == "lowrank"
    At = torch.as_tensor(A, **f64)
    yt = torch.as_tensor(y, **f64)
    if yt.ndim == 1:
        yt = yt.expand(B, n)
    u = torch.as_tensor(np.broadcast_to(u0, (B, d)).copy(), **f64)
    v = torch.as_tensor(np.broadcast_to(v0, (B, d)).copy(), **f64)
    ynorm = torch.linalg.vector_norm(yt, dim=1).clamp_min(1e-300)

    if lowrank:  # the kernel forms the gradient from A itself
        G = b = None
    elif shared:
        G, b = At.T @ At, yt @ At  # ∇f = x Aᵀ A − Aᵀ y, one matmul per step
    else:
        G, b = At.transpose(1, 2) @ At, torch.einsum("bn,bnd->bd", yt, At)

    def grad_of(x):
        return torch.addmm(-b, x, G) if shared else torch.baddbmm(-b.unsqueeze(1), x.unsqueeze(1), G).squeeze(1)

    if fast:
        kappa, gamma, has_q = _MULTIPLICATIVE[param.name]
    if native:
        if lowrank:
            grad_np = ("lowrank", np.ascontiguousarray(A), np.ascontiguousarray(y), kappa)
        else:
            grad_np = ("G", np.ascontiguousarray(kappa * G.numpy()),
                       -(b[0] if y.ndim == 1 else b).numpy().copy())
    elif fast:
        Gk, nb = kappa * G, (-b).expand(B, d).contiguous()
        if shared:
            def grad_into(x, out):
                torch.addmm(nb, x, Gk, out=out)
        else:
            nb3 = nb.unsqueeze(1)

            def grad_into(x, out):
                torch.baddbmm(nb3, x.unsqueeze(1), Gk, out=out.unsqueeze(1))
        bufs = tuple(torch.empty(B, d, **f64) for _ in range(3))

    def residual_of(x):
        r = x @ At.T - yt if shared else torch.einsum("bnd,bd->bn", At, x) - yt
        return r

    pq_bufs: list = []  # the kernel's p, q for uv, reused chunk to chunk
    distinct, which = distinct_schedules(schedules)
    settle = np.array([s.settle_time for s in distinct])[which]
    decay_ends = np.array([s.final_rate == 0 for s in distinct])[which]
    threads_used: list[int] = []
    res_limit = GROWTH_LIMIT * np.maximum(
        1.0, (torch.linalg.vector_norm(residual_of(param.forward(u, v)), dim=1) / ynorm).cpu().numpy())
    active = torch.ones(B, 1, **f64)  # 1 while a run is still being updated
    steps_taken = np.zeros(B, dtype=np.int64)
    status = np.array(["max-time"] * B, dtype=object)

    snap_x = np.empty((len(snaps), B, d))
    snap_a = np.empty((len(snaps), B))
    x = x_prev = param.forward(u, v)

    def record(i, k):
        snap_x[i] = x.cpu().numpy()
        snap_a[i] = driver.a.cpu().numpy()

    driver = ChunkDriver(total=total_steps, chunk=chunk, step=step, snaps=snaps,
                         schedules=schedules, B=B, f64=f64, record=record, label="simulating",
                         where="gradient descent", t_max=t_max, progress=progress,
                         keep_going=lambda: bool(active.any()))
    with (row_parallel(threads) if native else nullcontext()) as run_parts:
        for c in driver.chunks():
            alphas = c.alphas  # (K, B)
            alpha_t = torch.as_tensor(alphas, **f64) * active.T  # frozen runs get no decay
            driver.applied = alpha_t
            used = torch.get_num_threads()
            eta = step * active
            if fast and native:
                eta_np = eta.squeeze(1).numpy()
                un, vn = u.numpy(), v.numpy()
                pq = _pq_into(param.name, un, vn, pq_bufs)  # numpy, in place: no allocations
                used = native.mult_steps(pq[0], pq[1] if has_q else None, grad_np,
                                         1.0 - eta_np * alphas * (eta_np > 0),  # frozen: c = 1
                                         gamma * eta_np, c.steps, run_parts)
                _uv_from(param.name, pq, un, vn)
                if not has_q:  # x = u² ignores v, which only decays
                    v = v * (1.0 - eta.T * alpha_t).prod(0).unsqueeze(1)
            elif fast:
                p, q = _to_pq(param.name, u, v)
                _multiplicative_chunk(p, q if has_q else None, grad_into, alphas, alpha_t,
                                      eta, gamma, bufs)
                u, v = _from_pq(param.name, p, q, v)
                if not has_q:  # x = u² ignores v, which only decays
                    v = v * (1.0 - eta.T * alpha_t).prod(0).unsqueeze(1)
            else:
                for j in range(c.steps):
                    g = grad_of(param.forward(u, v))
                    gu, gv = param.pullback(u, v, g)
                    al = alpha_t[j].unsqueeze(1)
                    u, v = u - eta * (gu + al * u), v - eta * (gv + al * v)
            threads_used.append(used)
            steps_taken += c.steps * active.squeeze(1).cpu().numpy().astype(np.int64)
            k = c.end

            x = param.forward(u, v)
            # numpy on the CPU: torch's row-wise all() of a bool tensor costs ~0.2 ms here
            finite = (np.isfinite(x.numpy()).all(1) if x.device.type == "cpu"
                      else torch.isfinite(x).all(1).cpu().numpy())
            act = active.squeeze(1).cpu().numpy() > 0
            res = (torch.linalg.vector_norm(residual_of(x), dim=1) / ynorm).cpu().numpy()
            with np.errstate(invalid="ignore"):
                newly_div = act & (~finite | ~(res <= res_limit))  # NaN residual included
            if newly_div.any():
                status[newly_div] = "diverged"
                active[torch.as_tensor(newly_div)] = 0.0
                u = torch.where(torch.isfinite(u), u, torch.full_like(u, float("nan")))
            if tol is not None and c.steps:
                vel = (torch.linalg.vector_norm(x - x_prev, dim=1) / (c.steps * step)).cpu().numpy()
                crit = np.where(decay_ends, res, vel)
                done = act & finite & (crit <= tol) & (k * step >= settle)
                if done.any():
                    status[done] = "converged"
                    active[torch.as_tensor(done)] = 0.0
            x_prev = x
    a_acc = driver.a
    snap_ptr = driver.recorded

    x = param.forward(u, v)
    # fill snapshots after every run stopped with the final state
    xf = x.cpu().numpy()
    snap_x[snap_ptr:] = xf
    snap_a[snap_ptr:] = a_acc.cpu().numpy()
    res = (torch.linalg.vector_norm(residual_of(x), dim=1) / ynorm).cpu().numpy()
    return GDResult(
        times=snaps * step,
        x=snap_x,
        integrated_wd=snap_a,
        u=u.cpu().numpy(),
        v=v.cpu().numpy(),
        x_final=xf,
        steps=steps_taken,
        status=tuple(status.tolist()),
        residual=res,
        a_final=a_acc.cpu().numpy(),
        step=step,
        threads_used=tuple(threads_used),
    )
