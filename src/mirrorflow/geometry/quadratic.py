"""Commuting quadratic parameterizations: the general engine of docs/theory.md §7.

Take ``g_i(w) = ½ wᵀA_i w`` (``i = 1..n``) and ``h(w) = ½ wᵀB w`` with ``A_1..A_n, B`` symmetric and
mutually commuting. The flow of ``∇g`` is ``Ψ(w, μ) = exp(Σ μ_i A_i) w``, the regularizer's flow is
``φ_h^a(w) = exp(−aB) w``, and (docs/theory.md §7)

    Q_a(μ) = ¼ ‖exp(−aB + Σ_i μ_i A_i) w₀‖²,    x = ∇Q_a(μ),    R_a = Q_a*.

Sign convention: ``a = ∫ α dt ≥ 0`` (the published text writes ``exp(aB + …)`` with ``a ≤ 0``).

The matrices share an orthonormal eigenbasis ``P`` (found once, from a random combination). With
``z = Pᵀw₀``, ``λ_k = (eigenvalue of A_i on column k)_i ∈ Rⁿ`` and ``b_k`` that of ``B``::

    Q_a(μ) = ¼ Σ_k z_k² exp(2λ_kᵀμ − 2a b_k),    ∇Q_a(μ) = ½ Σ_k λ_k z_k² exp(2λ_kᵀμ − 2a b_k),
    ∇²Q_a(μ) = Σ_k λ_k λ_kᵀ z_k² exp(2λ_kᵀμ − 2a b_k).

``∇R_a(x)`` is the ``μ`` with ``∇Q_a(μ) = x``, found by damped Newton on the convex function
``Q_a(μ) − ⟨x, μ⟩``. Normalization as in :mod:`mirrorflow.geometry.legendre`:
``R_a(x) = ⟨μ, x⟩ − Q_a(μ) + Q_a(0)`` so that ``min R_a = R_a(x̄(a)) = 0`` with ``x̄(a) = ∇Q_a(0)``.

Covers ``u ⊙ v``, ``u² − v²``, ``u²`` (reproducing :mod:`legendre` to rounding) and the matrix case
``X = U Uᵀ`` with commuting sensing matrices (docs/theory.md §6), where ``R_a`` is spectral.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirrorflow._core.array import array_api, to_numpy
from mirrorflow._core.validation import (
    MirrorflowError,
    check_finite_array,
    check_finite_scalar,
)
from mirrorflow.geometry.commutation import NonCommutingError
from mirrorflow.geometry.family import LegendreFamily

__all__ = [
    "CommutingQuadratic",
    "SpectralSensing",
    "matrix_sensing",
    "quadratic_u2",
    "quadratic_u2_minus_v2",
    "quadratic_uv",
]

_BASIS_SEED = 20240229  # fixed: the random combination used to find the common eigenbasis
#: largest Newton step per coordinate of μ in the conjugate solve (a trust region; see _solve)
_MAX_STEP = 10.0


def _commutator_check(mats: list[np.ndarray], names: list[str], tol: float) -> None:
    for i in range(len(mats)):
        for j in range(i + 1, len(mats)):
            X, Y = mats[i], mats[j]
            scale = np.linalg.norm(X) * np.linalg.norm(Y)
            if scale == 0:
                continue
            size = float(np.linalg.norm(X @ Y - Y @ X))
            if size > tol * scale:
                raise NonCommutingError(
                    f"the matrices do not commute: ‖[{names[i]}, {names[j]}]‖ = {size:.3g} "
                    f"(relative {size / scale:.3g} > {tol:g}); the commuting-quadratic engine "
                    "(docs/theory.md §7) would be wrong, so it refuses: pass commuting matrices "
                    "or use mirrorflow.geometry.check_commutation to locate the problem"
                )


@dataclass(frozen=True, eq=False)
class CommutingQuadratic(LegendreFamily):
    """Time-dependent Legendre function of commuting quadratic ``g`` and ``h`` (theory §7).

    Parameters
    ----------
    A : (n, m, m) or (m, m)
        Symmetric, mutually commuting; ``g_i(w) = ½ wᵀA_i w``.
    B : (m, m) or None
        Regularizer ``h(w) = ½ wᵀB w``; ``None`` means weight decay (``B = I``).
    w0 : (m,)
        Initialization.
    tol : float
        Relative tolerance for symmetry, commutation and simultaneous diagonalization.

    Array arguments accept numpy arrays or torch tensors and broadcast over leading axes; ``a`` is
    a scalar (or broadcasts against the leading axes).
    """

    A: np.ndarray
    B: np.ndarray | None
    w0: np.ndarray
    tol: float = 1e-9
    name: str = "quadratic"

    def __post_init__(self) -> None:
        A = to_numpy(self.A)
        if A.ndim == 2:
            A = A[None]
        if A.ndim != 3 or A.shape[1] != A.shape[2]:
            raise MirrorflowError(f"A must have shape (n, m, m) or (m, m), got {A.shape}")
        m = A.shape[1]
        B = np.eye(m) if self.B is None else to_numpy(self.B)
        w0 = np.atleast_1d(to_numpy(self.w0)).astype(np.float64)
        if B.shape != (m, m):
            raise MirrorflowError(f"B must have shape ({m}, {m}) to match A, got {B.shape}")
        if w0.shape != (m,):
            raise MirrorflowError(f"w0 must have shape ({m},) to match A, got {w0.shape}")
        for name, arr in (("A", A), ("B", B), ("w0", w0)):
            check_finite_array(name, arr)
        tol = check_finite_scalar("tol", self.tol, minimum=0.0, strict=True)
        names = [f"A_{i}" for i in range(A.shape[0])] + ["B"]
        mats = [*list(A), B]
        for nm, M in zip(names, mats):
            asym = float(np.linalg.norm(M - M.T))
            if asym > tol * max(np.linalg.norm(M), 1e-300):
                raise MirrorflowError(
                    f"{nm} is not symmetric (‖{nm} − {nm}ᵀ‖ = {asym:.3g}); g_i(w) = ½ wᵀA_i w only "
                    "sees the symmetric part: pass (M + Mᵀ)/2"
                )
        _commutator_check(mats, names, tol)
        # one common eigenbasis from a generic combination of all matrices
        rng = np.random.default_rng(_BASIS_SEED)
        coef = rng.uniform(0.5, 1.5, len(mats))
        C = sum(c * M / max(np.linalg.norm(M), 1e-300) for c, M in zip(coef, mats))
        _, P = np.linalg.eigh(0.5 * (C + C.T))
        lam = np.empty((A.shape[0], m))
        for i, M in enumerate(mats):
            D = P.T @ M @ P
            off = float(np.linalg.norm(D - np.diag(np.diag(D))))
            if off > 1e3 * tol * max(np.linalg.norm(M), 1e-300):  # pragma: no cover - degenerate
                raise MirrorflowError(
                    f"could not diagonalize {names[i]} in the common basis (off-diagonal "
                    f"{off:.3g}); the matrices are numerically not commuting"
                )
            if i < A.shape[0]:
                lam[i] = np.diag(D)
            else:
                b = np.diag(D).copy()
        z2 = (P.T @ w0) ** 2
        support = z2 > 1e-26 * max(float(w0 @ w0), 1e-300)
        if not np.any(support):
            raise MirrorflowError("w0 is zero: the flow never leaves 0; pass a nonzero w0")
        lam_s = lam[:, support]
        rank = np.linalg.matrix_rank(lam_s, tol=1e-10 * max(np.abs(lam_s).max(), 1e-300))
        if rank < A.shape[0]:
            raise MirrorflowError(
                f"the quadratic maps are not independent on the initialization's support "
                f"(rank {rank} < n = {A.shape[0]}): R_a would not be strictly convex; drop "
                "redundant A_i or choose w0 with more nonzero components in the common eigenbasis"
            )
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "B", B)
        object.__setattr__(self, "w0", w0)
        object.__setattr__(self, "_basis", P)
        object.__setattr__(self, "_lam", lam_s)          # (n, K) eigenvalues of the A_i
        object.__setattr__(self, "_b", b[support])         # (K,)   eigenvalues of B
        object.__setattr__(self, "_logz2", np.log(z2[support]))

    # ----------------------------------------------------------------- basics
    @property
    def dim(self) -> int:
        """Number of coordinates ``n`` of ``x``."""
        return int(self._lam.shape[0])

    @property
    def eigen(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(λ (n, K), b (K,), z² (K,))`` on the support of ``w₀`` in the common eigenbasis."""
        return self._lam.copy(), self._b.copy(), np.exp(self._logz2)

    def _logw(self, mu: np.ndarray, a) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)[..., None]
        return self._logz2 - 2.0 * a * self._b + 2.0 * mu @ self._lam

    def _Q(self, mu, a) -> np.ndarray:
        with np.errstate(over="ignore"):
            return 0.25 * np.sum(np.exp(self._logw(mu, a)), axis=-1)

    def _gradQ(self, mu, a) -> np.ndarray:
        with np.errstate(over="ignore"):
            return 0.5 * np.exp(self._logw(mu, a)) @ self._lam.T

    def _hessQ(self, mu, a) -> np.ndarray:
        with np.errstate(over="ignore"):
            e = np.exp(self._logw(mu, a))
        return np.einsum("ik,...k,jk->...ij", self._lam, e, self._lam)

    def _mu(self, mu) -> np.ndarray:
        mu = np.asarray(mu, dtype=np.float64)
        if mu.shape[-1:] != (self.dim,):
            raise MirrorflowError(f"μ must have last axis {self.dim}, got shape {mu.shape}")
        return mu

    # ----------------------------------------------------------------- the maps
    @array_api
    def regularized_init(self, a) -> np.ndarray:
        """``φ_h^a(w₀) = exp(−aB) w₀`` (docs/theory.md §2, §7)."""
        P = self._basis
        d = np.diag(P.T @ self.B @ P)
        return P @ (np.exp(-float(a) * d) * (P.T @ self.w0))

    @array_api
    def inverse(self, mu, a) -> np.ndarray:
        """``∇R_a*(μ) = ∇Q_a(μ) = g(exp(−aB + Σ μ_i A_i) w₀)`` (docs/theory.md §7)."""
        return self._gradQ(self._mu(mu), a)

    @array_api
    def conjugate(self, mu, a) -> np.ndarray:
        """``R_a*(μ) = Q_a(μ) − Q_a(0)`` (normalized like :class:`HyperbolicEntropy.conjugate`)."""
        mu = self._mu(mu)
        return self._Q(mu, a) - self._Q(np.zeros_like(mu), a)

    @array_api
    def dual_hessian(self, mu, a) -> np.ndarray:
        """``∇²R_a*(μ) = ∇²Q_a(μ)`` (``(..., n, n)``, positive definite)."""
        return self._hessQ(self._mu(mu), a)

    @array_api
    def reference(self, a) -> np.ndarray:
        """Reference point ``x̄(a) = ∇Q_a(0) = g(φ_h^a(w₀))``, the minimizer of ``R_a``."""
        return self._gradQ(np.zeros(self.dim), a)

    def dual_interval(self, a) -> tuple[np.ndarray, np.ndarray]:
        """Per-coordinate range of ``∇R_a``: all of ``R`` (``Q_a`` is finite everywhere)."""
        return np.full(self.dim, -np.inf), np.full(self.dim, np.inf)

    def _rel_residual(self, mu: np.ndarray, x: np.ndarray, a) -> np.ndarray:
        """``max_i |∇Q_i(μ) − x_i| / (½ Σ_k |λ_ik| e^{ℓ_k})``: residual at the rounding scale."""
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.exp(self._logw(mu, a))
            scale = 0.5 * e @ np.abs(self._lam).T
            r = np.abs(0.5 * e @ self._lam.T - x) / np.maximum(scale, 1e-300)
        return np.where(np.isfinite(r), r, np.inf).max(-1)

    def _solve(self, x: np.ndarray, a, max_iter: int = 400) -> np.ndarray:
        """Damped Newton on ``Φ(μ) = Q_a(μ) − ⟨x, μ⟩`` for a batch ``x (N, n)``.

        Armijo backtracking on ``Φ``; near the optimum, where ``Φ`` no longer resolves progress,
        a step is also accepted when it lowers the coordinatewise relative residual.
        """
        mu = np.zeros_like(x)
        phi = self._Q(mu, a) - np.sum(x * mu, -1)
        rel = self._rel_residual(mu, x, a)
        done = rel <= 1e-15
        for _ in range(max_iter):
            act = ~done
            if not act.any():
                break
            idx = np.flatnonzero(act)
            m_a, x_a, p_a, r_a = mu[idx], x[idx], phi[idx], rel[idx]
            grad = self._gradQ(m_a, a) - x_a
            H = self._hessQ(m_a, a)
            diag = np.abs(np.diagonal(H, axis1=-2, axis2=-1)).max(-1)
            H = H + np.eye(self.dim) * (1e-300 + 1e-15 * diag)[:, None, None]
            try:
                step = -np.linalg.solve(H, grad[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = -np.stack([np.linalg.lstsq(h, g_, rcond=None)[0] for h, g_ in zip(H, grad)])
            # trust region: far from the solution (large a: Q_a ~ e^{-2a}, so H is tiny at μ = 0)
            # the Newton step is astronomically long; move at most _MAX_STEP per coordinate
            # (the exponents change by at most 2·_MAX_STEP·max|λ|) and let Newton finish
            big = np.abs(step).max(-1)
            step = step * np.minimum(1.0, _MAX_STEP / np.maximum(big, 1e-300))[:, None]
            slope = np.sum(grad * step, -1)
            t = np.ones(len(idx))
            ok = np.zeros(len(idx), dtype=bool)
            new_mu, new_phi, new_rel = m_a.copy(), p_a.copy(), r_a.copy()
            for _ in range(80):
                trial = m_a + t[:, None] * step
                tphi = self._Q(trial, a) - np.sum(x_a * trial, -1)
                trel = self._rel_residual(trial, x_a, a)
                good = ~ok & np.isfinite(tphi) & (
                    (tphi <= p_a + 0.25 * t * slope)
                    | ((tphi <= p_a + 1e-12 * np.abs(p_a)) & (trel < r_a))
                )
                new_mu[good], new_phi[good], new_rel[good] = trial[good], tphi[good], trel[good]
                ok |= good
                if ok.all():
                    break
                t = np.where(ok, t, 0.5 * t)
            moved = np.abs(t[:, None] * step).max(-1)
            mu[idx], phi[idx], rel[idx] = new_mu, new_phi, new_rel
            small = (moved <= 1e-15 * (1.0 + np.abs(new_mu).max(-1))) | (new_rel <= 1e-15)
            done[idx[small | ~ok]] = True
        if np.any(~(rel <= 1e-9)):
            raise MirrorflowError(
                "x is outside the domain of R_a (not reachable as ∇Q_a(μ) for any finite μ: "
                "e.g. a coordinate of x = u² must stay > 0); pass x inside the domain"
            )
        return mu

    @array_api
    def grad(self, x, a) -> np.ndarray:
        """Mirror map ``∇R_a(x)``: the ``μ`` with ``∇Q_a(μ) = x`` (Newton on the conjugate)."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1:] != (self.dim,):
            raise MirrorflowError(f"x must have last axis {self.dim}, got shape {x.shape}")
        check_finite_array("x", x)
        a_arr = np.asarray(a, dtype=np.float64)
        if a_arr.ndim:
            a_b = np.broadcast_to(a_arr, x.shape[:-1]).reshape(-1)
            flat = x.reshape(-1, self.dim)
            out = np.stack([self._solve(flat[i:i + 1], float(a_b[i]))[0] for i in range(len(flat))])
            return out.reshape(x.shape)
        return self._solve(x.reshape(-1, self.dim), float(a_arr)).reshape(x.shape)

    @array_api
    def potential(self, x, a) -> np.ndarray:
        """``R_a(x) = ⟨μ, x⟩ − Q_a(μ) + Q_a(0)`` at ``μ = ∇R_a(x)``; ``R_a(x̄(a)) = 0``."""
        mu = to_numpy(self.grad(x, a))
        return np.sum(mu * x, -1) - to_numpy(self.conjugate(mu, a))

    @array_api
    def hessian(self, x, a) -> np.ndarray:
        """``∇²R_a(x) = (∇²Q_a(μ))^{-1}`` at ``μ = ∇R_a(x)`` (``(..., n, n)``)."""
        mu = to_numpy(self.grad(x, a))
        return np.linalg.inv(self._hessQ(mu, a))


# --------------------------------------------------------------------------- constructors
def _pair(u0, v0) -> tuple[np.ndarray, np.ndarray]:
    u0 = np.atleast_1d(to_numpy(u0))
    v0 = np.atleast_1d(to_numpy(v0))
    if u0.ndim > 1 or v0.ndim > 1:
        raise MirrorflowError("u0 and v0 must be scalars or 1-d arrays")
    u0, v0 = np.broadcast_arrays(u0, v0)
    return u0.astype(np.float64), v0.astype(np.float64)


def quadratic_uv(u0, v0) -> CommutingQuadratic:
    """``x = u ⊙ v`` as a commuting quadratic: ``w = (u, v)``, ``A_i = e_{u_i}e_{v_i}ᵀ + e_{v_i}e_{u_i}ᵀ``.

    >>> q = quadratic_uv(1.0, 0.5)
    >>> q.reference(0.0), np.round(q.reference(1.0), 6)     # x̄(a) = u₀v₀e^{−2a}
    (array([0.5]), array([0.067668]))
    >>> x = np.array([0.8])          # agrees with the hyperbolic entropy ½[arcsinh(2x/|δ|) − ...]
    >>> bool(abs(q.grad(x, 0.0)[0] - 0.5 * (np.arcsinh(2 * 0.8 / 0.75) - np.arcsinh(1 / 0.75))) < 1e-10)
    True
    """
    u0, v0 = _pair(u0, v0)
    d = u0.size
    A = np.zeros((d, 2 * d, 2 * d))
    for i in range(d):
        A[i, i, d + i] = A[i, d + i, i] = 1.0
    return CommutingQuadratic(A, None, np.concatenate([u0, v0]), name="uv")


def quadratic_u2_minus_v2(u0, v0) -> CommutingQuadratic:
    """``x = u² − v²``: ``A_i = 2 e_{u_i}e_{u_i}ᵀ − 2 e_{v_i}e_{v_i}ᵀ``."""
    u0, v0 = _pair(u0, v0)
    d = u0.size
    A = np.zeros((d, 2 * d, 2 * d))
    for i in range(d):
        A[i, i, i], A[i, d + i, d + i] = 2.0, -2.0
    return CommutingQuadratic(A, None, np.concatenate([u0, v0]), name="u2-v2")


def quadratic_u2(u0) -> CommutingQuadratic:
    """``x = u²``: ``A_i = 2 e_i e_iᵀ``."""
    u0, _ = _pair(u0, 0.0)
    d = u0.size
    A = np.zeros((d, d, d))
    for i in range(d):
        A[i, i, i] = 2.0
    return CommutingQuadratic(A, None, u0, name="u2")


@dataclass(frozen=True, eq=False)
class SpectralSensing:
    """``X = U Uᵀ`` measured by commuting symmetric ``S_1..S_n`` (docs/theory.md §6, §7).

    ``x_i = ⟨S_i, U Uᵀ⟩ = ½ vec(U)ᵀ (2 S_i ⊗ I_r) vec(U)``: a commuting quadratic whose engine is
    :attr:`engine`. In the common eigenbasis ``P`` of the ``S_i`` the dynamics are ``x = u²`` on the
    diagonal ``σ = diag(Pᵀ X P)``, and ``R_a`` is *spectral* (docs/theory.md §6)::

        R_a = ¼ Σ_k [ σ_k log(σ_k / σ̄_k(a)) − σ_k + σ̄_k ],   σ̄(a) = diag(Pᵀ X₀ P) e^{−2a}.
    """

    engine: CommutingQuadratic
    basis: np.ndarray
    eigenvalues: np.ndarray  # (n, d): eigenvalue of S_i on basis vector k
    sigma0: np.ndarray       # (d,)

    def measure(self, X) -> np.ndarray:
        """``x_i = Σ_k s_ik σ_k`` with ``σ = diag(Pᵀ X P)`` (equals ``⟨S_i, X⟩``)."""
        return self.eigenvalues @ self.spectrum(X)

    def spectrum(self, X) -> np.ndarray:
        """``σ = diag(Pᵀ X P)`` (the eigenvalues of ``X`` when ``X`` commutes with the ``S_i``)."""
        X = to_numpy(X)
        return np.einsum("ik,ij,jk->k", self.basis, X, self.basis)

    def spectral_potential(self, X, a: float) -> float:
        """Spectral ``R_a`` of docs/theory.md §6 evaluated on ``σ = diag(Pᵀ X P) > 0``."""
        s = self.spectrum(X)
        sbar = self.sigma0 * np.exp(-2.0 * float(a))
        if np.any(s <= 0):
            raise MirrorflowError("X must be positive definite in the sensing eigenbasis")
        return float(0.25 * np.sum(s * np.log(s / sbar) - s + sbar))


def matrix_sensing(S, U0, *, tol: float = 1e-9) -> SpectralSensing:
    """Engine for ``X = U Uᵀ`` with commuting symmetric sensing matrices ``S (n, d, d)``, ``U0 (d, r)``."""
    S = to_numpy(S)
    U0 = to_numpy(U0)
    if S.ndim == 2:
        S = S[None]
    if S.ndim != 3 or S.shape[1] != S.shape[2]:
        raise MirrorflowError(f"S must have shape (n, d, d), got {S.shape}")
    d = S.shape[1]
    if U0.ndim == 1:
        U0 = U0[:, None]
    if U0.ndim != 2 or U0.shape[0] != d:
        raise MirrorflowError(f"U0 must have shape ({d}, r) to match S, got {U0.shape}")
    r = U0.shape[1]
    A = np.stack([2.0 * np.kron(Si, np.eye(r)) for Si in S])
    engine = CommutingQuadratic(A, None, U0.reshape(-1), tol=tol, name="UU^T")
    rng = np.random.default_rng(_BASIS_SEED)
    C = np.tensordot(rng.uniform(0.5, 1.5, S.shape[0]), S, axes=1)
    _, P = np.linalg.eigh(0.5 * (C + C.T))
    ev = np.einsum("ak,nab,bk->nk", P, S, P)
    sigma0 = np.einsum("ak,ab,bk->k", P, U0 @ U0.T, P)
    return SpectralSensing(engine, P, ev, sigma0)
