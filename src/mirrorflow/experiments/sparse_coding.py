"""Sparse coding (dictionary learning) with reparameterized codes and weight-decay schedules.

Patches ``P`` (``N × m``) are approximated as ``C Dᵀ`` with a dictionary ``D`` (``m × K``, atoms in
the unit ball) and codes ``C`` (``N × K``). Each iteration alternates

1. one gradient step of size ``η`` on every code, per patch on ``½‖D c − p‖²``:

   * ``codes="uv"``: ``c = u ⊙ v`` with weight decay ``α_t`` on ``(u, v)`` (coupled,
     ``h = ½‖w‖²``; docs/theory.md §1, §3);
   * ``codes="power"``: ``c = u^{2k} − v^{2k}`` with the matched regularizer
     ``α_t (u^{2k} + v^{2k})`` (docs/theory.md §7, separable parameterizations);
   * ``codes="ista"``: plain ``c`` with the explicit L1 penalty ``α_t ‖c‖₁``, a proximal
     (soft-threshold) step: the ISTA / Lasso baseline;

2. one projected gradient step on ``D`` over a random mini-batch of training patches
   (step ``1/L``, ``L = ‖C_B‖₂² / b``, then every atom is projected onto the unit ball).

All three have the same stationary points when the decay stays on: the Lasso
``min ½‖D c − p‖² + α‖c‖₁`` (docs/theory.md §5; at stationarity ``|u| = |v|`` so the penalty equals
``α|c|``). Time is ``t = Σ η`` and the integrated decay ``a = Σ η α_t`` (docs/theory.md §1).
Held-out patches get codes by the same dynamics but never update the dictionary.

The setting is explicit in three fields (docs/experiments-lora-sparse-coding.md says which
published run each config corresponds to):

* ``init``: ``"matched-speed"`` (default) starts power codes at ``u0 = v0`` chosen so that at
  ``c = 0`` they move as fast as ``u ⊙ v`` codes with ``u0 = init_scale`` (then ``k`` does not
  change the initial speed); ``"authors"`` is the init of the authors' public code,
  ``u^{2k} = v^{2k} = ½`` (the initial speed ``2k²·2^{1/k}`` grows with ``k``);
* ``wd_convention``: ``"ours"`` — ``wd`` is ``α`` in ``½‖Dc − p‖² + α·penalty``; ``"authors"``
  — ``wd`` is their ``α`` in ``‖Dc − p‖² + α·penalty``, i.e. ``α/2`` here for power and ISTA
  codes and ``α`` for ``u ⊙ v`` codes (whose penalty they halve too);
* ``normalize``: ``"centre-scale"`` (default) removes each patch's mean and rescales all to a
  mean squared norm of 1; ``"raw"`` keeps pixel values in ``[0, 1]`` as the authors do.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass as pdataclass

from mirrorflow._core.figure import (
    figure_legend,
    legend_height,
    new_figure,
    save_figure,
    series_style,
    switch_note,
    unique_labels,
)
from mirrorflow._core.limits import check_deadline
from mirrorflow._core.progress import progress_bar
from mirrorflow._core.threads import blas_threads
from mirrorflow._core.validation import (
    MirrorflowError,
    check_choice,
    check_finite_array,
    check_finite_scalar,
    check_positive_int,
)
from mirrorflow.dynamics.simulate import GROWTH_LIMIT
from mirrorflow.experiments.base import (
    CONFIG,
    Decay,
    Experiment,
    ExperimentResult,
    RunCost,
    ScheduleConfig,
    SwitchTime,
    TimeGrid,
    first_line,
    mark_switch,
)
from mirrorflow.schedules.continuous import NoDecay, Schedule

__all__ = ["CODE_TYPES", "Config", "Result", "encode", "learn_dictionary", "plot", "run"]

CODE_TYPES = ("uv", "power", "ista")


@pdataclass(frozen=True, config=CONFIG)
class Config(ScheduleConfig):
    """Sparse-coding experiment. Times are continuous time ``t = Σ η`` (``switch_at`` included)."""

    codes: Literal["uv", "power", "ista"] = Field(
        "uv", description="codes: uv (u ⊙ v), power (u^{2k} − v^{2k}) or ISTA (L1 baseline)")
    k: int = Field(2, ge=1, description="power of the power parameterization u^{2k} − v^{2k}")
    source: Literal["sample-images", "digits", "olivetti"] = Field(
        "sample-images", description="images the patches are cut from (scikit-learn data)")
    patch_size: int = Field(6, ge=2, description="patch side (digits: 8, olivetti: 64)")
    n_train: int = Field(1000, ge=1, description="training patches")
    n_test: int = Field(300, ge=1, description="held-out patches")
    atoms: int = Field(50, ge=1, description="dictionary size K")
    iterations: int = Field(2000, ge=1, description="dictionary-learning iterations")
    batch_size: int = Field(64, ge=1, description="mini-batch of the dictionary step")
    step: float = Field(0.05, gt=0, allow_inf_nan=False, description="code step η")
    init_scale: float = Field(1.0, gt=0, allow_inf_nan=False,
                              description="uv: u0 (v0 = 0); power: u0 = v0 with the same initial speed")
    init: Literal["matched-speed", "authors"] = Field(
        "matched-speed", description="power codes: 'matched-speed' (from init_scale) or the "
                                     "authors' u^{2k} = v^{2k} = 1/2")
    wd_convention: Literal["ours", "authors"] = Field(
        "ours", description="'authors': wd is their α (loss ‖Dc − p‖²): α/2 here for power/ISTA")
    normalize: Literal["centre-scale", "raw"] = Field(
        "centre-scale", description="patches centred and rescaled, or raw pixels in [0, 1]")
    wd: Decay = 0.05
    switch_at: SwitchTime = 50.0
    zero_tol: float = Field(1e-3, gt=0, description="|c| below this counts as zero")
    log_every: int = Field(50, ge=1, description="iterations between logged curve points")
    data_home: str | None = Field(None, description="scikit-learn data folder; set: download "
                                                    "if missing (None: offline cache only)")

    def time_grid(self) -> TimeGrid:
        return TimeGrid(self.step, self.iterations * self.step, "iterations·step")

    def cost(self) -> RunCost:
        # codes (u, v, c, gradients: N × K), residuals and patches (N × m), the source images
        N, m, K = self.n_train + self.n_test, self.patch_size ** 2, self.atoms
        return RunCost(steps=self.iterations,
                       memory=8 * (10 * N * K + 4 * N * m + 4 * m * K) + 20 * 2**20,
                       what=f"codes of {N} patches over {K} atoms")

    @model_validator(mode="after")
    def _check_init(self):
        if self.init == "authors" and self.codes != "power":
            raise ValueError("init='authors' is the authors' power-code init (u^{2k} = v^{2k} = "
                             "1/2); use it with codes='power'")
        return self

    @property
    def alpha_factor(self) -> float:
        """Our ``α`` per unit of ``wd``: ½ for power/ISTA codes under the authors' convention."""
        return 0.5 if self.wd_convention == "authors" and self.codes != "uv" else 1.0

    @property
    def power_u0(self) -> float:
        """``u0 = v0`` of power codes under :attr:`init`."""
        if self.init == "authors":
            return float(0.5 ** (1.0 / (2 * self.k)))
        return _power_init(self.init_scale, self.k)


@dataclass(frozen=True)
class Result(ExperimentResult):
    """Metrics of one run; ``curves``: ``iteration``, ``time``, ``a``, ``train_mse``,
    ``test_mse``, ``sparsity``, ``l1_norm``."""

    config: Config
    train_mse: float
    test_mse: float
    l1_norm: float
    sparsity: float
    nuclear_norm: float
    integrated_wd: float
    iterations: int
    status: str
    runtime_s: float
    diverged_step: int | None = None
    curves: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


# --------------------------------------------------------------------------- code dynamics


@dataclass
class _Codes:
    """Mutable code parameters of one run (internal; the public API is functional)."""

    kind: str
    k: int
    u: np.ndarray
    v: np.ndarray | None = None

    @classmethod
    def init(cls, kind: str, k: int, n: int, K: int, scale: float,
             power_u0: float | None = None) -> _Codes:
        """Start codes at 0: ``u = scale, v = 0`` (uv); ``u = v = power_u0`` (power; default
        the matched-speed value of ``scale``)."""
        if kind == "ista":
            return cls(kind, k, np.zeros((n, K)))
        if kind == "uv":
            return cls(kind, k, np.full((n, K), scale), np.zeros((n, K)))
        s = _power_init(scale, k) if power_u0 is None else power_u0
        return cls(kind, k, np.full((n, K), s), np.full((n, K), s))

    def value(self) -> np.ndarray:
        if self.kind == "ista":
            return self.u
        if self.kind == "uv":
            return self.u * self.v
        return _ipow(self.u, 2 * self.k) - _ipow(self.v, 2 * self.k)

    def step(self, grad: np.ndarray, eta: float, alpha: float) -> None:
        """One step on ``f + α·penalty`` given ``grad = ∇_c f`` (module docstring)."""
        if self.kind == "ista":
            z = self.u - eta * grad
            self.u = np.sign(z) * np.maximum(np.abs(z) - eta * alpha, 0.0)
        elif self.kind == "uv":
            u, v = self.u, self.v
            self.u = u - eta * (v * grad + alpha * u)
            self.v = v - eta * (u * grad + alpha * v)
        else:
            p = 2 * self.k - 1
            u, v = self.u, self.v
            self.u = u - (eta * 2 * self.k) * _ipow(u, p) * (grad + alpha)
            self.v = v - (eta * 2 * self.k) * _ipow(v, p) * (alpha - grad)


def _ipow(x: np.ndarray, p: int) -> np.ndarray:
    """``x**p`` for a small positive integer ``p`` by repeated products (much faster than pow)."""
    out = x.copy()
    for _ in range(p - 1):
        out *= x
    return out


def _power_init(scale: float, k: int) -> float:
    """``u0 = v0`` for the power codes such that at ``c = 0`` the code moves as fast as ``u ⊙ v``
    codes with ``u0 = scale, v0 = 0``: ``dc/dt = −8k² u0^{4k−2} ∇f = −scale² ∇f``."""
    return float((scale**2 / (8 * k * k)) ** (1.0 / (4 * k - 2)))


def _check_patches(name: str, P) -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] == 0 or P.shape[1] == 0:
        raise MirrorflowError(f"{name} must be a non-empty 2-D array (n_patches, dim), got shape {P.shape}")
    return check_finite_array(name, P)


def _alphas(schedule: Schedule, n: int, step: float) -> np.ndarray:
    return np.asarray(schedule.rate((np.arange(n) + 0.5) * step), dtype=np.float64)


def encode(P, D, codes: str = "uv", schedule: Schedule | None = None, *, step: float = 0.05,
           n_steps: int = 1000, k: int = 2, init_scale: float = 1.0) -> tuple[np.ndarray, float]:
    """Codes of patches ``P`` (``N × m``) on a fixed dictionary ``D`` (``m × K``) by ``n_steps``
    gradient steps of the chosen code dynamics; returns ``(C, a)`` with ``a = Σ η α_t``.

    With ``codes="ista"`` and a constant schedule this is ISTA for the Lasso
    ``½‖D c − p‖² + α‖c‖₁``; ``uv`` and ``power`` with constant decay converge to the same Lasso
    solution (docs/theory.md §5). Stable for ``η < 1/‖D‖₂²`` (ISTA) and small enough ``η`` for the
    reparameterized codes (their effective rate grows with ``|c|``).
    """
    P = _check_patches("P", P)
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != P.shape[1] or D.shape[1] == 0:
        raise MirrorflowError(f"D must have shape ({P.shape[1]}, K) to match P {P.shape}, got {D.shape}")
    check_finite_array("D", D)
    check_choice("codes", codes, CODE_TYPES)
    k = check_positive_int("k", k)
    step = check_finite_scalar("step", step, minimum=0.0, strict=True)
    init_scale = check_finite_scalar("init_scale", init_scale, minimum=0.0, strict=True)
    n_steps = check_positive_int("n_steps", n_steps)
    schedule = NoDecay() if schedule is None else schedule
    alphas = _alphas(schedule, n_steps, step)
    state = _Codes.init(codes, k, P.shape[0], D.shape[1], init_scale)
    G, PD = D.T @ D, P @ D
    with blas_threads(1):
        for al in alphas:
            state.step(state.value() @ G - PD, step, float(al))
    return state.value(), float(step * alphas.sum())


def learn_dictionary(P_train, P_test, cfg: Config, progress: bool = False) -> Result:
    """Alternating code / mini-batch dictionary steps (module docstring) on given patches."""
    # the matrices are small: one BLAS thread is much faster than many competing ones
    with blas_threads(1):
        return _learn(P_train, P_test, cfg, progress)


def _learn(P_train, P_test, cfg: Config, progress: bool) -> Result:
    t0 = time.perf_counter()
    P_train = _check_patches("training patches", P_train)
    P_test = _check_patches("held-out patches", P_test)
    if P_test.shape[1] != P_train.shape[1]:
        raise MirrorflowError(f"held-out patches have dim {P_test.shape[1]}, training patches "
                              f"{P_train.shape[1]}; use patches of one size")
    n, m = P_train.shape
    K, b = cfg.atoms, min(cfg.batch_size, n)
    rng = np.random.default_rng(cfg.seed)
    D = P_train[rng.choice(n, size=K, replace=K > n)].T.copy()
    D += 1e-3 * rng.normal(size=D.shape)
    D /= np.maximum(np.linalg.norm(D, axis=0, keepdims=True), 1e-12)
    P = np.concatenate([P_train, P_test])
    state = _Codes.init(cfg.codes, cfg.k, len(P), K, cfg.init_scale, cfg.power_u0)
    alphas = cfg.alpha_factor * _alphas(cfg.make_schedule(), cfg.iterations, cfg.step)
    a_cum = np.concatenate([[0.0], np.cumsum(cfg.step * alphas)])
    log = sorted({*range(0, cfg.iterations + 1, cfg.log_every), cfg.iterations})
    curves: dict[str, list] = {k: [] for k in
                               ("iteration", "time", "a", "train_mse", "test_mse", "sparsity", "l1_norm")}

    def record(it: int, C: np.ndarray) -> None:
        R = C @ D.T - P
        curves["iteration"].append(it)
        curves["time"].append(it * cfg.step)
        curves["a"].append(a_cum[it])
        curves["train_mse"].append(float(np.mean(R[:n] ** 2)))
        curves["test_mse"].append(float(np.mean(R[n:] ** 2)))
        curves["sparsity"].append(float(np.mean(np.abs(C[:n]) <= cfg.zero_tol)))
        curves["l1_norm"].append(float(np.abs(C[:n]).sum()))

    status = "ok"
    it_done = 0
    with (progress_bar(cfg.iterations, f"sparse coding ({cfg.codes})", progress) as advance,
          np.errstate(over="ignore", invalid="ignore")):
        record(0, state.value())
        for it in range(cfg.iterations):
            C = state.value()
            state.step(C @ (D.T @ D) - P @ D, cfg.step, float(alphas[it]))
            C = state.value()
            # diverged: codes not finite, or (checked when logging) the training residual
            # GROWTH_LIMIT times that of the zero code
            if not np.all(np.isfinite(C)) or (it + 1 in log and np.mean(
                    (C[:n] @ D.T - P_train) ** 2) > GROWTH_LIMIT**2 * curves["train_mse"][0]):
                status = "diverged"
                break
            idx = rng.choice(n, size=b, replace=False)
            Cb, Pb = C[idx], P_train[idx]
            L = np.linalg.norm(Cb, 2) ** 2 / b
            if L > 1e-12:
                D = D - ((D @ Cb.T - Pb.T) @ Cb / b) / L
                D /= np.maximum(np.linalg.norm(D, axis=0, keepdims=True), 1.0)
            it_done = it + 1
            if it_done in log:
                record(it_done, C)
            advance(1)
            check_deadline(f"sparse coding at iteration {it_done} of {cfg.iterations}")
    with np.errstate(over="ignore", invalid="ignore"):
        C = state.value()
    finite = bool(np.all(np.isfinite(C)))
    R = C @ D.T - P if finite else np.full_like(P, np.nan)
    Ct = C[:n]
    return Result(
        config=cfg,
        train_mse=float(np.mean(R[:n] ** 2)),
        test_mse=float(np.mean(R[n:] ** 2)),
        l1_norm=float(np.abs(Ct).sum()),
        sparsity=float(np.mean(np.abs(Ct) <= cfg.zero_tol)),
        nuclear_norm=float(np.linalg.svd(Ct, compute_uv=False).sum()) if finite else float("nan"),
        integrated_wd=float(a_cum[it_done]),
        iterations=it_done,
        status=status,
        runtime_s=time.perf_counter() - t0,
        diverged_step=it_done + 1 if status == "diverged" else None,
        curves={k: np.asarray(v, dtype=np.float64) for k, v in curves.items()},
    )


def run(config: Config, progress: bool = False) -> Result:
    """Load the configured patches (offline unless ``source='olivetti'`` with no cache) and run."""
    from mirrorflow.experiments.data import image_patches

    c = config
    P = image_patches(c.n_train + c.n_test, c.patch_size, c.source, c.seed, data_home=c.data_home,
                      download_if_missing=c.data_home is not None,
                      normalize=c.normalize == "centre-scale")
    return learn_dictionary(P[:c.n_train], P[c.n_train:], c, progress=progress)


def _label(r: Result) -> str:
    c = r.config
    if c.codes == "power":  # the init matters for power codes only
        init = "authors' init" if c.init == "authors" else "matched-speed init"
        name = f"power k={c.k}, {init}"
    else:
        name = c.codes
    return f"{name}, {c.make_schedule().describe()}, a={r.integrated_wd:.3g}"


def plot(results: Sequence[Result], path: Path) -> None:
    """Train / held-out MSE and code sparsity vs iteration, one line per run (codes, k, init,
    schedule); runs of different lengths on rows of their own, so short runs are not squeezed
    into the first tenth of a long axis."""
    labels = unique_labels([_label(r) for r in results],
                           [f"seed {r.config.seed}" for r in results])
    lengths = sorted({r.config.iterations for r in results}, reverse=True)
    fig, axes = new_figure(len(lengths), 3, squeeze=False,
                           figsize=(14, 3.3 * len(lengths) + legend_height(len(results), 2)))
    for row, n_it in zip(axes, lengths):
        for i, (r, lab) in enumerate(zip(results, labels)):
            if r.config.iterations != n_it:
                continue
            it = r.curves["iteration"]
            style = series_style(i, len(it))
            row[0].semilogy(it, r.curves["train_mse"], label=lab, **style)
            row[1].semilogy(it, r.curves["test_mse"], **style)
            row[2].plot(it, r.curves["sparsity"], **style)
            mark_switch(row, r.config, per_unit=1.0 / r.config.step)
        row[0].set(xlabel="iteration", ylabel="MSE per pixel",
                   title=f"training reconstruction ({n_it} iterations)")
        row[1].set(xlabel="iteration", ylabel="MSE per pixel", title="held-out reconstruction")
        row[2].set(xlabel="iteration", ylabel=r"fraction |c| ≤ tol", title="code sparsity")
    figure_legend(fig, axes, ncols=2)
    fig.suptitle("sparse coding" + switch_note(r.config for r in results))
    save_figure(fig, path)


# Two settings (mirrorflow.report.claims; docs/experiments-lora-sparse-coding.md):
# 1. dictionary learning with u ⊙ v codes on centred, rescaled patches of scikit-learn's sample
#    images (offline), schedules none / constant / switch-off: switch-off vs no decay at matched
#    reconstruction error. The quick sweep uses a smaller problem (500 patches, 1000 iterations,
#    switch at t = 25, a = 1.25) to afford 5 seeds.
# 2. the early speed of power codes u^{2k} − v^{2k}, k = 1, 2, 3, after 100 iterations, in the
#    authors' setting (raw digits, their α convention, constant α = 1e-3, 400 training images)
#    with their init and with ours (matched initial speed).
_K_CASE = {"base": {"codes": "power", "source": "digits", "patch_size": 8, "n_train": 400,
                    "n_test": 100, "iterations": 100, "step": 0.01, "schedule": "constant",
                    "wd": 1e-3, "wd_convention": "authors", "normalize": "raw",
                    "log_every": 10},
           "grid": {"k": [1, 2, 3], "init": ["authors", "matched-speed"]}}
SWEEPS = {
    "quick": {
        "grid": {"seed": [0, 1, 2, 3, 4]},
        "case": [
            {"base": {"n_train": 500, "n_test": 100, "iterations": 1000, "switch_at": 25.0},
             "zip": {"schedule": ["none", "constant", "switch-off"]}},
            _K_CASE,
        ],
    },
    "full": {
        "grid": {"seed": list(range(8))},
        "case": [
            {"zip": {"schedule": ["none", "constant", "switch-off"]}},
            _K_CASE,
        ],
    },
}

EXPERIMENT = Experiment(
    name="sparse-coding",
    config_cls=Config,
    result_cls=Result,
    run=run,
    plot=plot,
    description=first_line(__doc__),
    sweeps=SWEEPS,
    smoke={"n_train": 60, "n_test": 20, "atoms": 8, "iterations": 40, "switch_at": 1.0,
           "log_every": 10, "batch_size": 16},
)
