"""Batched gradient descent for matrix sensing with ``X = U Vᵀ`` or ``X = U Uᵀ`` (docs/theory.md §6).

Loss ``f(X) = ½ Σ_i (⟨A_i, X⟩ − y_i)²`` with gradient ``G = Σ_i r_i A_i`` (``r = A(X) − y``).
One call runs ``B`` independent problems (seeds, schedules) side by side in float64 torch:
factors of shape ``(B, d, k)``. Update with coupled weight decay ``α_k`` taken at the step's
midpoint time (as :func:`mirrorflow.dynamics.simulate_gd`)::

    U ← U − η (G V + α_k U),   V ← V − η (Gᵀ U + α_k V)       (X = U Vᵀ)
    U ← U − η ((G + Gᵀ) U + α_k U)                            (X = U Uᵀ)

The integrated decay is ``a = Σ_k η α_k`` (docs/theory.md §1). On the CPU, chunks of steps run in
the fused C kernel of ``_kernels.c`` (``backend="auto"``; docs/benchmarks.md), else in torch. Theory §6: the balancedness
``UᵀU − VᵀV`` equals ``e^{−2a} (U₀ᵀU₀ − V₀ᵀV₀)`` along gradient flow, for every loss.

A run has ``diverged`` from the end of the first chunk at which ``X`` is not finite or its
residual ``‖A(X) − y‖/‖y‖`` exceeds :data:`mirrorflow.dynamics.simulate.GROWTH_LIMIT` times
``max(1, initial residual)`` (a finite blow-up counts as early as a NaN); ``diverged_step``
holds that step. The wall-time bound (:func:`mirrorflow._core.limits.check_deadline`) is
checked once per chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from mirrorflow._core.spectral import effective_rank
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
    snapshot_grid,
)
from mirrorflow.dynamics._native import check_threads, row_parallel, use_native
from mirrorflow.dynamics.simulate import GROWTH_LIMIT
from mirrorflow.schedules.continuous import Schedule

__all__ = ["MatrixGDResult", "effective_rank", "simulate_matrix_gd"]


@dataclass(frozen=True)
class MatrixGDResult:
    """Output of :func:`simulate_matrix_gd` (``B`` runs, ``S`` snapshots, ``X`` of size ``d × d``).

    Attributes
    ----------
    times : (S,) snapshot times ``t = k η``.
    X : (S, B, d, d) snapshots of ``X``.
    integrated_wd : (S, B) integrated decay ``a`` at each snapshot.
    balancedness : (S, B) ``‖UᵀU − VᵀV‖_F`` (0 for the symmetric model).
    residual : (S, B) ``‖A(X) − y‖ / ‖y‖``.
    U, V : (B, d, k) final factors (``V is U`` for the symmetric model).
    diverged : (B,) True where the run blew up (non-finite, or its residual grew past
        ``GROWTH_LIMIT`` times its start); ``diverged_step``: (B,) the step by which it was
        seen (end of a chunk), ``-1`` for the others.
    threads_used : CPU threads of each chunk (see ``threads`` of :func:`simulate_matrix_gd`).
    """

    times: np.ndarray
    X: np.ndarray
    integrated_wd: np.ndarray
    balancedness: np.ndarray
    residual: np.ndarray
    U: np.ndarray
    V: np.ndarray
    diverged: np.ndarray
    step: float
    symmetric: bool
    diverged_step: np.ndarray | None = None
    threads_used: tuple[int, ...] = ()


def _prepare(A, y, U0, V0, symmetric):
    A = np.asarray(A, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if A.ndim not in (3, 4) or A.shape[-1] != A.shape[-2]:
        raise MirrorflowError(f"A must have shape (m, d, d) or (P, m, d, d), got {A.shape}")
    m, d = A.shape[-3], A.shape[-1]
    P = A.shape[0] if A.ndim == 4 else 1
    if y.ndim not in (1, 2) or y.shape[-1] != m or (y.ndim == 2 and y.shape[0] != P):
        want = f"({m},)" if A.ndim == 3 else f"({P}, {m})"
        raise MirrorflowError(f"y must have shape {want} to match A {A.shape}, got {y.shape}")
    U0 = np.asarray(U0, dtype=np.float64)
    if U0.ndim not in (2, 3) or U0.shape[-2] != d:
        raise MirrorflowError(f"U0 must have shape ({d}, k) or (B, {d}, k) to match A, got {U0.shape}")
    if symmetric:
        if V0 is not None:
            raise MirrorflowError("the symmetric model X = U Uᵀ takes no V0; pass V0=None")
        V0 = U0
    else:
        if V0 is None:
            raise MirrorflowError("the model X = U Vᵀ needs V0; pass V0 or symmetric=True")
        V0 = np.asarray(V0, dtype=np.float64)
        if V0.shape[-2:] != U0.shape[-2:] or V0.ndim not in (2, 3):
            raise MirrorflowError(f"V0 must have the shape of U0 {U0.shape[-2:]}, got {V0.shape}")
    sizes = {x.shape[0] for x in (U0, V0) if x.ndim == 3}
    if len(sizes) > 1:
        raise MirrorflowError(f"batch sizes of U0 and V0 disagree: {sorted(sizes)}")
    for name, arr in (("A", A), ("y", y), ("U0", U0), ("V0", V0)):
        check_finite_array(name, arr)
    return A.reshape(P, m, d, d), np.broadcast_to(y, (P, m)), U0, V0, (sizes.pop() if sizes else None)


def simulate_matrix_gd(
    A,
    y,
    U0,
    V0=None,
    schedules: Schedule | Sequence[Schedule] = (),
    *,
    symmetric: bool = False,
    step: float = 0.02,
    t_max: float = 100.0,
    snapshot_times: Sequence[float] | None = None,
    chunk: int = 500,
    device: str | torch.device = "cpu",
    threads: int | str | None = "auto",
    progress: bool = False,
    backend: str = "auto",
) -> MatrixGDResult:
    """Gradient descent on ``U, V`` (or ``U``) with weight-decay schedules, ``B`` runs at once.

    Parameters
    ----------
    A : (m, d, d) sensing matrices shared by every run, or (P, m, d, d) for ``P`` problems;
        y : (m,) or (P, m). With ``P`` problems the batch is problem-major: run ``b`` uses
        problem ``b // (B // P)`` (e.g. ``P`` seeds × ``R`` schedules), and ``B`` must be a
        multiple of ``P``. Runs of one problem share one matrix product per step.
    U0, V0 : (d, k) or (B, d, k) initial factors; ``V0=None`` with ``symmetric=True``.
    schedules : one schedule for every run or ``B`` schedules (one per run).
    step : step size ``η``; time advances by ``η`` per step. ``t_max``: final time.
    snapshot_times : times at which ``X`` is recorded (rounded to the step grid; 0 and
        ``t_max`` are always included).
    threads : CPU threads (restored afterwards), as in :func:`~mirrorflow.dynamics.simulate_gd`:
        ``"auto"`` (default) lets the C kernel pick chunk by chunk from the work and the free
        cores (the torch path runs on one); an integer splits the runs into up to that many
        parts (kernel) or sets torch's thread count; ``None`` keeps torch's setting (and one
        thread for the kernel). The results do not depend on the thread count.
    backend : ``"auto"`` (the C kernel on the CPU when built, else torch), ``"native"`` (the
        kernel, or an error saying why not) or ``"torch"``. Both compute the same steps.

    >>> from mirrorflow.schedules.continuous import NoDecay
    >>> r = simulate_matrix_gd(np.ones((1, 1, 1)), np.array([4.0]), np.ones((1, 1)),
    ...                        schedules=NoDecay(), symmetric=True, step=0.01, t_max=20.0)
    >>> round(float(r.X[-1, 0, 0, 0]), 6)                   # X = u² fits ⟨A, X⟩ = 4
    4.0
    """
    threads = check_threads(threads)
    with torch_threads(1 if threads == "auto" else threads):
        return _simulate(A, y, U0, V0, schedules, symmetric, step, t_max, snapshot_times, chunk,
                         device, progress, backend, threads)


def _simulate(A, y, U0, V0, schedules, symmetric, step, t_max, snapshot_times, chunk, device,
              progress, backend, threads) -> MatrixGDResult:
    step = check_finite_scalar("step", step, minimum=0.0, strict=True)
    t_max = check_finite_scalar("t_max", t_max, minimum=0.0, strict=True)
    chunk = check_positive_int("chunk", chunk)
    A, y, U0, V0, B = _prepare(A, y, U0, V0, symmetric)
    schedules = as_schedules(schedules)
    P, m, d = A.shape[0], A.shape[1], A.shape[-1]
    if B is None:
        B = max(len(schedules), P)
    schedules = broadcast_schedules(schedules, B)
    if B % P:
        raise MirrorflowError(f"{B} runs cannot be split evenly over {P} problems; pass a multiple of {P} runs")
    R = B // P
    k = U0.shape[-1]
    total, snaps = snapshot_grid(step, t_max, snapshot_times)

    f64 = dict(dtype=torch.float64, device=torch.device(device))
    native = use_native(backend, f64["device"].type == "cpu", "non-CPU devices")
    if native and torch.get_num_threads() != 1:
        # the kernel's own threads do the work; torch's would only spin between the small
        # bookkeeping ops (simulate_matrix_gd restores torch's thread count on return)
        torch.set_num_threads(1)
    if native:
        Af_np = np.ascontiguousarray(A.reshape(P, m, d * d))
        y_np = np.ascontiguousarray(y)
    Af = torch.as_tensor(A.reshape(P, m, d * d), **f64)
    AfT = Af.transpose(1, 2).contiguous()
    yt = torch.as_tensor(np.array(y), **f64).unsqueeze(2)  # (P, m, 1)
    U = torch.as_tensor(np.broadcast_to(U0, (B, d, k)).copy(), **f64)
    V = U if symmetric else torch.as_tensor(np.broadcast_to(V0, (B, d, k)).copy(), **f64)
    ynorm = torch.linalg.vector_norm(yt, dim=1).clamp_min(1e-300).repeat_interleave(R, 0).squeeze(1)

    def residual(X):  # (P, m, R): the R runs of a problem share one product
        return torch.bmm(Af, X.reshape(P, R, d * d).transpose(1, 2)) - yt

    def grad(X):
        return torch.bmm(AfT, residual(X)).transpose(1, 2).reshape(B, d, d)

    def forward(U, V):
        return U @ V.transpose(1, 2)

    def record(i, it):
        X = forward(U, V)
        snap_X[i] = X.cpu().numpy()
        snap_a[i] = driver.a.cpu().numpy()
        bal = U.transpose(1, 2) @ U - V.transpose(1, 2) @ V
        snap_bal[i] = torch.linalg.matrix_norm(bal).cpu().numpy()
        res = torch.linalg.vector_norm(residual(X), dim=1).reshape(B)
        snap_res[i] = (res / ynorm).cpu().numpy()

    S = len(snaps)
    snap_X = np.empty((S, B, d, d))
    snap_a = np.empty((S, B))
    snap_bal = np.empty((S, B))
    snap_res = np.empty((S, B))

    def rel_residual(U, V):
        X = forward(U, V)
        return (torch.linalg.vector_norm(residual(X), dim=1).reshape(B) / ynorm).cpu().numpy()

    res_limit = GROWTH_LIMIT * np.maximum(1.0, rel_residual(U, V))
    div_step = np.full(B, -1, dtype=np.int64)
    threads_used: list[int] = []
    driver = ChunkDriver(total=total, chunk=chunk, step=step, snaps=snaps, schedules=schedules,
                         B=B, f64=f64, record=record, label="matrix sensing",
                         where="matrix sensing", t_max=t_max, progress=progress)
    with (row_parallel(threads) if native else nullcontext()) as run_parts:
        for c in driver.chunks():
            alphas_np = c.alphas  # (K, B)
            alphas = torch.as_tensor(alphas_np, **f64)
            used = torch.get_num_threads()
            if native:
                Un = U.numpy()
                used = native.matrix_steps(Un, Un if symmetric else V.numpy(), Af_np, y_np, R, step,
                                    1.0 - step * alphas_np, c.steps, run_parts)
            else:
                for j in range(c.steps):
                    G = grad(forward(U, V))
                    shrink = (1.0 - step * alphas[j]).view(B, 1, 1)
                    if symmetric:
                        U = shrink * U - step * ((G + G.transpose(1, 2)) @ U)
                        V = U
                    else:
                        U, V = (shrink * U - step * (G @ V),
                                shrink * V - step * (G.transpose(1, 2) @ U))
            threads_used.append(used)
            driver.applied = alphas
            with np.errstate(invalid="ignore"):
                bad = (div_step < 0) & ~(rel_residual(U, V) <= res_limit)  # NaN included
            div_step[bad] = c.end
    diverged = (div_step >= 0) | ~np.all(np.isfinite(snap_X[-1]), axis=(1, 2))
    Un = U.cpu().numpy()
    return MatrixGDResult(
        times=snaps * step,
        X=snap_X,
        integrated_wd=snap_a,
        balancedness=snap_bal,
        residual=snap_res,
        U=Un,
        V=Un if symmetric else V.cpu().numpy(),
        diverged=diverged,
        step=step,
        symmetric=symmetric,
        diverged_step=div_step,
        threads_used=tuple(threads_used),
    )
