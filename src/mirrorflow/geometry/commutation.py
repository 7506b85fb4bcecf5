"""Does the theory apply? Lie brackets of gradient fields at sample points (docs/theory.md §2, §7).

The time-dependent mirror flow needs the gradient fields of the parameterization to commute with
each other, ``[∇g_i, ∇g_j] = 0``, and with the regularizer's, ``[∇g_i, ∇h] = 0``, where

    [X, Y](w) = DY(w)·X(w) − DX(w)·Y(w)                                 (docs/theory.md §2)

Each bracket costs two Jacobian-vector products (``torch.func.jvp`` over ``torch.func.grad``),
so the check works for any ``g`` and ``h`` written as torch functions (:func:`lie_bracket`);
:func:`check_commutation` takes the fields' Jacobians (Hessians of ``g_i`` and ``h``) at each point
once and forms every bracket ``DY·X − DX·Y`` from them. A bracket is reported both
as an absolute norm and relative to the scale

    S(w) = ‖DY‖‖X‖ + ‖DX‖‖Y‖ + ‖DX‖‖DY‖‖w‖          (‖D·‖: spectral norm of the Jacobian)

and the pair commutes when the relative size is below ``tol`` at every sample point. ``S`` bounds
the two terms of the bracket (``‖DY·X‖ ≤ ‖DY‖‖X‖``) without depending on them, and its last term
is the size of the rounding error that ``X`` and ``Y`` themselves carry into the bracket (for a
linear field ``X = Aw`` computed in float64 the error is ``≈ ε‖A‖‖w‖``). So an exactly commuting
pair gives a relative size at rounding level (``≲ m·ε``) even where both terms ``DY·X`` and
``DX·Y`` vanish exactly — e.g. ``u ⊙ v`` in rotated coordinates, where ``A_i A_j = 0``. (Dividing
by ``‖DY·X‖ + ‖DX·Y‖`` instead, as before, divided rounding noise by rounding noise there.)

Known answers (docs/theory.md §2, §7): weight decay ``h = ‖w‖²/2`` commutes with every quadratic
``g`` (``u v``, ``u² − v²``) but not with ``u v s`` or ``u³``; an L1 or Lp (p ≠ 2) penalty does not
commute with ``u v``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mirrorflow._core.array import to_numpy
from mirrorflow._core.errors import NonCommutingError
from mirrorflow._core.validation import (
    MirrorflowError,
    check_finite_array,
    check_finite_scalar,
    check_positive_int,
)

__all__ = [
    "Bracket",
    "CommutationReport",
    "NonCommutingError",
    "check_commutation",
    "lie_bracket",
    "weight_decay",
]


def weight_decay(w: torch.Tensor) -> torch.Tensor:
    """The weight-decay regularizer ``h(w) = ‖w‖²/2`` (its flow is ``w ↦ e^{−a} w``)."""
    return 0.5 * torch.sum(w * w)


def _vector(g: Callable, w: torch.Tensor) -> torch.Tensor:
    return torch.atleast_1d(g(w)).reshape(-1)


def lie_bracket(X: Callable, Y: Callable, w) -> np.ndarray:
    """``[X, Y](w) = DY(w)·X(w) − DX(w)·Y(w)`` for vector fields given as torch functions.

    Computed with two Jacobian-vector products (docs/theory.md §2, §7); float64.

    >>> import torch
    >>> X = lambda w: torch.stack([torch.ones_like(w[0]), 0 * w[0]])   # ∂/∂w₀
    >>> Y = lambda w: torch.stack([0 * w[0], w[0]])                    # w₀ ∂/∂w₁
    >>> lie_bracket(X, Y, [0.3, 0.7])                                  # DY·X − DX·Y = (0, 1)
    array([0., 1.])
    """
    wt = torch.as_tensor(to_numpy(w), dtype=torch.float64)
    x_val, y_val = X(wt), Y(wt)
    _, dy_x = torch.func.jvp(Y, (wt,), (x_val,))
    _, dx_y = torch.func.jvp(X, (wt,), (y_val,))
    return (dy_x - dx_y).detach().numpy()


@dataclass(frozen=True)
class Bracket:
    """The largest value of one Lie bracket over the sample points.

    Attributes
    ----------
    pair : names of the two fields, e.g. ``("∇g_0", "∇h")``.
    max_norm : largest ``‖[X, Y](w)‖`` over the points.
    relative : largest ``‖[X, Y]‖ / S`` with ``S = ‖DY‖‖X‖ + ‖DX‖‖Y‖ + ‖DX‖‖DY‖‖w‖`` (module
        docstring; 0 where ``S`` vanishes).
    point : the sample point with the largest relative size.
    """

    pair: tuple[str, str]
    max_norm: float
    relative: float
    point: np.ndarray

    @property
    def label(self) -> str:
        return f"[{self.pair[0]}, {self.pair[1]}]"


@dataclass(frozen=True)
class CommutationReport:
    """All brackets checked, and the verdict at tolerance ``tol`` (relative size)."""

    brackets: tuple[Bracket, ...]
    tol: float
    n_points: int

    @property
    def worst(self) -> Bracket | None:
        """The bracket with the largest relative size (``None`` if nothing was checked)."""
        if not self.brackets:
            return None
        return max(self.brackets, key=lambda b: (b.relative, b.max_norm))

    @property
    def commutes(self) -> bool:
        w = self.worst
        return w is None or w.relative <= self.tol

    @property
    def max_norm(self) -> float:
        return max((b.max_norm for b in self.brackets), default=0.0)

    def message(self) -> str:
        """One line: the verdict, naming the worst bracket and its size."""
        w = self.worst
        if w is None:
            return "nothing to check (a single field always commutes with itself)"
        where = np.array2string(w.point, precision=3, separator=", ", threshold=8)
        verdict = "commute" if self.commutes else "do NOT commute"
        return (f"the gradient fields {verdict}: largest bracket {w.label} has norm "
                f"{w.max_norm:.3g} (relative {w.relative:.3g}, tolerance {self.tol:g}) at w = {where}")

    def require(self) -> CommutationReport:
        """Return ``self`` if the fields commute, else raise :class:`NonCommutingError`."""
        if not self.commutes:
            raise NonCommutingError(
                self.message() + "; the time-dependent mirror flow (docs/theory.md §2) does not "
                "apply, so exact engines refuse: use a quadratic g with weight decay or a matched "
                "regularizer h = c·g (theory §7)"
            )
        return self

    def summary(self) -> dict:
        w = self.worst
        return {
            "commutes": self.commutes,
            "worst_pair": None if w is None else w.label,
            "max_norm": self.max_norm,
            "max_relative": 0.0 if w is None else w.relative,
            "n_points": self.n_points,
            "n_brackets": len(self.brackets),
        }


def _resolve_h(h):
    if h is None:
        return None
    if isinstance(h, str):
        if h in ("weight_decay", "wd", "l2"):
            return weight_decay
        raise MirrorflowError(f"unknown regularizer {h!r}; pass 'weight_decay' or a torch function")
    if not callable(h):
        raise MirrorflowError(f"h must be a torch function w -> scalar or 'weight_decay', got {h!r}")
    return h


def _sample_points(points, dim, n_points, seed) -> torch.Tensor:
    if points is not None:
        pts = np.atleast_2d(to_numpy(points))
        if pts.ndim != 2:
            raise MirrorflowError(f"points must have shape (k, m), got {pts.shape}")
        check_finite_array("points", pts)
        return torch.as_tensor(pts, dtype=torch.float64)
    if dim is None:
        raise MirrorflowError("pass dim (the number of parameters m) or explicit sample points")
    dim = check_positive_int("dim", dim)
    n_points = check_positive_int("n_points", n_points)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(n_points, dim, generator=gen, dtype=torch.float64)


def _fields_and_jacobians(g: Callable, hs: Callable | None, w: torch.Tensor):
    """Gradient fields ``(k, m)`` of ``g_0..g_{n−1}`` (and ``h``) at ``w`` and their Jacobians ``(k, m, m)``.

    ``torch.func.jacfwd`` over ``jacrev`` (the Jacobians are the Hessians of ``g_i`` and ``h``).
    """
    def jac_g(v):
        J = torch.func.jacrev(lambda u: _vector(g, u))(v)
        return J, J

    try:
        H, F = torch.func.jacfwd(jac_g, has_aux=True)(w)
        if hs is not None:
            fh, hh = torch.func.grad(hs)(w), torch.func.hessian(hs)(w)
            F, H = torch.cat([F, fh[None]]), torch.cat([H, hh[None]])
    except Exception as exc:  # user code: report in one line
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MirrorflowError(
            f"could not differentiate g or h twice with torch.func at a sample point ({msg}); "
            "write them with torch operations only (no numpy, no .item())"
        ) from None
    return F, H


def check_commutation(
    g: Callable,
    h=None,
    *,
    dim: int | None = None,
    points=None,
    n_points: int = 8,
    seed: int = 0,
    tol: float = 1e-8,
) -> CommutationReport:
    """Evaluate ``[∇g_i, ∇g_j]`` and ``[∇g_i, ∇h]`` at sample points (docs/theory.md §2, §7).

    Parameters
    ----------
    g : torch function ``w (m,) -> x (n,)`` (or a scalar), float64-safe.
    h : torch function ``w -> scalar``, ``"weight_decay"``, or ``None`` (only ``g``'s brackets).
    dim : number of parameters ``m`` (when ``points`` is not given).
    points : ``(k, m)`` sample points; default: ``n_points`` standard-normal points drawn with
        ``seed``.
    tol : threshold on the relative bracket size.

    Returns
    -------
    CommutationReport
        Call ``.require()`` to raise :class:`NonCommutingError` when the fields do not commute.

    >>> import torch
    >>> uv = lambda w: w[:1] * w[1:]                 # x = u·v: commutes with weight decay
    >>> check_commutation(uv, "weight_decay", dim=2).commutes
    True
    >>> cube = lambda w: w ** 3                      # x = u³: does not (docs/theory.md §2)
    >>> check_commutation(cube, "weight_decay", dim=1).commutes
    False
    """
    tol = check_finite_scalar("tol", tol, minimum=0.0, strict=True)
    if not callable(g):
        raise MirrorflowError(f"g must be a torch function w -> x, got {g!r}")
    h = _resolve_h(h)
    pts = _sample_points(points, dim, n_points, seed)
    try:
        n = int(_vector(g, pts[0]).numel())
    except Exception as exc:  # user code: report in one line
        raise MirrorflowError(f"g failed on a sample point of dimension {pts.shape[1]}: {exc}") from None
    if n == 0:
        raise MirrorflowError(f"g returns no outputs at a point of dimension {pts.shape[1]}; check dim")

    names = [f"∇g_{i}" for i in range(n)] + ([] if h is None else ["∇h"])
    hs = None if h is None else (lambda w: torch.as_tensor(h(w)).reshape(()))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, len(names))]
    stats = {p: [0.0, 0.0, pts[0].numpy()] for p in pairs}
    for w in pts:
        F, H = _fields_and_jacobians(g, hs, w)
        # DH[i, j] = D(field j)·(field i); the bracket [X_i, X_j] = DH[i, j] − DH[j, i]
        DH = torch.einsum("jab,ib->ija", H, F)
        # scale S = ‖DY‖‖X‖ + ‖DX‖‖Y‖ + ‖DX‖‖DY‖‖w‖ (spectral norms; module docstring)
        jnorm = torch.linalg.matrix_norm(H, ord=2).tolist()
        fnorm = torch.linalg.vector_norm(F, dim=1).tolist()
        wnorm = float(torch.linalg.vector_norm(w))
        for i, j in pairs:
            norm = float(torch.linalg.vector_norm(DH[i, j] - DH[j, i]))
            scale = jnorm[j] * fnorm[i] + jnorm[i] * fnorm[j] + jnorm[i] * jnorm[j] * wnorm
            rel = norm / scale if scale > 0 else 0.0
            if not (np.isfinite(norm) and np.isfinite(rel)):
                raise MirrorflowError(
                    f"bracket [{names[i]}, {names[j]}] is not finite at a sample point; "
                    "pass points where g and h are smooth"
                )
            s = stats[(i, j)]
            s[0] = max(s[0], norm)
            if rel > s[1]:
                s[1], s[2] = rel, w.numpy().copy()
    brackets = tuple(
        Bracket((names[i], names[j]), s[0], s[1], np.asarray(s[2]))
        for (i, j), s in stats.items()
    )
    return CommutationReport(brackets, tol, int(pts.shape[0]))
