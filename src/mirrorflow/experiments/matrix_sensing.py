"""Matrix sensing with ``X = U Vᵀ`` (or ``X = U Uᵀ``) and a weight-decay schedule (docs/theory.md §6).

Teacher: a rank-``rank`` ``X*`` in ``R^{d×d}`` (``P Qᵀ``, or ``W Wᵀ`` for the symmetric model)
scaled to ``‖X*‖_F = √d``; ``m`` sensing matrices with N(0, 1/m) entries, ``y_i = ⟨A_i, X*⟩``
(plus optional noise). Model: full-width factors (``width = d`` unless set) with N(0, s²/d)
entries, ``s = init_scale``; gradient descent on ``f(X) = ½ Σ_i (⟨A_i, X⟩ − y_i)²``.

Configs of one shape (a sweep over ``schedule`` and ``seed``) share one batched simulation;
with ``baseline="cvxpy"`` the convex nuclear-norm minimizer
``argmin {‖X‖_* : A(X) = y}`` (trace norm over PSD ``X`` for the symmetric model) is solved
with cvxpy/SCS on the same data.

Defaults are the quick configuration (about a minute on 2 cores with the baseline); theory §6's
reference case is ``t_max=800`` (40 000 steps, a few minutes; see docs/experiments-matrix-attention.md).
"""

from __future__ import annotations

import math
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
)
from mirrorflow._core.validation import MirrorflowError
from mirrorflow.dynamics.matrix import effective_rank, simulate_matrix_gd
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
    run_grouped,
)

__all__ = [
    "Config",
    "NuclearNormSolution",
    "Result",
    "make_problem",
    "nuclear_norm_minimizer",
    "plot",
    "run",
    "run_batch",
]

@pdataclass(frozen=True, config=CONFIG)
class Config(ScheduleConfig):
    """Matrix-sensing experiment (defaults: a shortened docs/theory.md §6 reference case).

    Times are continuous time ``t = Σ η`` (``switch_at=100`` with ``step=0.02`` is 5 000 steps).
    """

    d: int = Field(20, ge=1, description="X is d × d")
    rank: int = Field(2, ge=1, description="rank of the teacher X*")
    m: int = Field(160, ge=1, description="number of Gaussian measurements")
    noise: float = Field(0.0, ge=0, allow_inf_nan=False, description="std of noise on y")
    model: Literal["uv", "uut"] = Field("uv", description="X = U Vᵀ or the symmetric X = U Uᵀ")
    width: int | None = Field(None, ge=1, description="inner width k of the factors (None: d)")
    init_scale: float = Field(1.0, gt=0, allow_inf_nan=False, description="factor entries N(0, s²/d)")
    wd: Decay = 0.1
    switch_at: SwitchTime = 100.0
    step: float = Field(0.02, gt=0, allow_inf_nan=False, description="gradient-descent step η")
    t_max: float = Field(300.0, gt=0, allow_inf_nan=False, description="training time (800: full)")
    baseline: Literal["cvxpy", "none"] | None = Field(
        "cvxpy", description="convex nuclear-norm baseline ('none' or None: skip)")

    @model_validator(mode="after")
    def _check(self):
        if self.rank > self.d:
            raise ValueError(f"rank ({self.rank}) must be <= d ({self.d}); lower rank or raise d")
        return self

    retired = ("compare",)  # compare schedules with a sweep (experiments.base.RETIRED_FIELDS)

    @property
    def symmetric(self) -> bool:
        return self.model == "uut"

    def time_grid(self) -> TimeGrid:
        return TimeGrid(self.step, self.t_max, "t_max")

    def cost(self) -> RunCost:
        # the m sensing matrices (d × d) twice (and the convex baseline's copies), ~160
        # snapshots of X
        d, m, k = self.d, self.m, self.width or self.d
        base = 4 * m * d * d + 40 * d * d if self.baseline == "cvxpy" else 0
        return RunCost(steps=math.ceil(self.t_max / self.step - 1e-9),
                       memory=8 * (2 * m * d * d + 170 * d * d + 6 * d * k + base),
                       what=f"{m} sensing matrices and the snapshots of X at d = {d}")


@dataclass(frozen=True)
class Result(ExperimentResult):
    """Metrics of one run (errors relative: ``‖X − X*‖_F / ‖X*‖_F``).

    ``baseline_*``: the nuclear-norm minimizer. ``curves`` holds ``time``,
    ``recovery_error``, ``residual``, ``nuclear_norm``, ``effective_rank``, ``balancedness``,
    ``a`` and ``singular_values`` (S × d).
    """

    config: Config
    recovery_error: float
    train_residual: float
    nuclear_norm: float
    target_nuclear_norm: float
    effective_rank: float
    singular_values: tuple[float, ...]
    balancedness: float
    balancedness_init: float
    integrated_wd: float
    status: str
    baseline_error: float | None
    baseline_nuclear_norm: float | None
    baseline_status: str | None
    runtime_s: float
    diverged_step: int | None = None  # the step by which a diverged run was seen
    curves: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


def make_problem(cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``(A, y, X*, U0, V0)`` from ``numpy.random.default_rng(seed)`` (V0 = U0 if symmetric)."""
    rng = np.random.default_rng(cfg.seed)
    d, r = cfg.d, cfg.rank
    P = rng.normal(size=(d, r))
    X = P @ P.T if cfg.symmetric else P @ rng.normal(size=(d, r)).T
    X *= np.sqrt(d) / np.linalg.norm(X)
    A = rng.normal(0.0, 1.0 / np.sqrt(cfg.m), size=(cfg.m, d, d))
    y = np.einsum("mij,ij->m", A, X) + cfg.noise * rng.normal(size=cfg.m)
    k = cfg.width or d
    sd = cfg.init_scale / np.sqrt(d)
    U0 = rng.normal(0.0, sd, size=(d, k))
    V0 = U0 if cfg.symmetric else rng.normal(0.0, sd, size=(d, k))
    return A, y, X, U0, V0


@dataclass(frozen=True)
class NuclearNormSolution:
    """The convex baseline: ``X`` minimizing ``‖X‖_*`` subject to ``A(X) = y``."""

    X: np.ndarray
    nuclear_norm: float
    status: str
    solve_time_s: float


def nuclear_norm_minimizer(A, y, *, psd: bool = False, eps: float = 1e-9) -> NuclearNormSolution:
    """Solve ``min ‖X‖_* s.t. ⟨A_i, X⟩ = y_i`` with cvxpy (SCS); ``psd``: ``min tr X, X ⪰ 0``.

    The convex relaxation of rank minimization (docs/theory.md §6 compares gradient descent's
    implicit bias with it). Needs the optional dependency ``cvxpy`` (``pip install mirrorflow[bench]``).
    """
    try:
        import cvxpy as cp
    except ImportError:  # pragma: no cover - optional dependency
        raise MirrorflowError("the nuclear-norm baseline needs cvxpy: pip install cvxpy, or set baseline=none") from None
    A = np.asarray(A, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if A.ndim != 3 or A.shape[1] != A.shape[2] or y.shape != (A.shape[0],):
        raise MirrorflowError(f"A must be (m, d, d) and y (m,), got {A.shape} and {y.shape}")
    m, d, _ = A.shape
    t0 = time.perf_counter()
    X = cp.Variable((d, d), PSD=True) if psd else cp.Variable((d, d))
    cons = [A.reshape(m, d * d) @ cp.vec(X, order="C") == y]
    objective = cp.trace(X) if psd else cp.normNuc(X)
    prob = cp.Problem(cp.Minimize(objective), cons)
    from mirrorflow._core.limits import check_deadline, time_left

    left = time_left()  # SCS stops by itself at the run's wall-time bound
    prob.solve(solver="SCS", eps=eps, max_iters=200_000,
               **({} if left is None else {"time_limit_secs": max(left, 1e-3)}))
    check_deadline("the nuclear-norm baseline")
    if X.value is None:
        raise MirrorflowError(f"the nuclear-norm baseline failed ({prob.status}); set baseline=none")
    Xv = np.asarray(X.value, dtype=np.float64)
    return NuclearNormSolution(Xv, float(np.linalg.norm(Xv, "nuc")), str(prob.status),
                               time.perf_counter() - t0)


def _group_key(c: Config):
    return (c.d, c.m, c.model, c.width, c.step, c.t_max)


def run_batch(configs: Sequence[Config], progress: bool = False) -> list[Result]:
    """Run several configs; those with equal shapes, step and time share one batched simulation."""
    return run_grouped(configs, _group_key, _run_group, progress)


def run(config: Config, progress: bool = False) -> Result:
    """Run one matrix-sensing experiment."""
    return run_batch([config], progress=progress)[0]


def _metrics(X, Xs, sv):
    return {
        "recovery_error": np.linalg.norm(X - Xs, axis=(-2, -1)) / np.linalg.norm(Xs),
        "nuclear_norm": sv.sum(-1),
        "effective_rank": effective_rank(sv),
    }


def _run_group(cfgs: list[Config], progress: bool) -> list[Result]:
    t0 = time.perf_counter()
    c0 = cfgs[0]
    problems = [make_problem(c) for c in cfgs]
    U0 = np.stack([p[3] for p in problems])
    V0 = None if c0.symmetric else np.stack([p[4] for p in problems])
    snaps = np.unique(np.concatenate([np.linspace(0, c0.t_max, 101),
                                      np.geomspace(c0.step, c0.t_max, 60)]))
    sim = simulate_matrix_gd(
        np.stack([p[0] for p in problems]), np.stack([p[1] for p in problems]), U0, V0,
        [c.make_schedule() for c in cfgs], symmetric=c0.symmetric, step=c0.step, t_max=c0.t_max,
        snapshot_times=snaps, progress=progress,
    )
    elapsed = (time.perf_counter() - t0) / len(cfgs)
    out = []
    for i, c in enumerate(cfgs):
        t1 = time.perf_counter()
        A, y, Xs, _, _ = problems[i]
        Xt = sim.X[:, i]
        ok = np.all(np.isfinite(Xt), axis=(1, 2))
        sv = np.full(Xt.shape[:2], np.nan)
        sv[ok] = np.linalg.svd(Xt[ok], compute_uv=False)
        met = _metrics(Xt, Xs, sv)
        curves: dict[str, np.ndarray] = {"time": sim.times, **met}
        curves["residual"] = sim.residual[:, i]
        curves["balancedness"] = sim.balancedness[:, i]
        curves["a"] = sim.integrated_wd[:, i]
        curves["singular_values"] = sv
        final = {k: float(v[-1]) for k, v in met.items()}
        base = None
        if c.baseline == "cvxpy":
            base = nuclear_norm_minimizer(A, y, psd=c.symmetric)
            curves["baseline/singular_values"] = np.linalg.svd(base.X, compute_uv=False)
        out.append(Result(
            config=c,
            recovery_error=final["recovery_error"],
            train_residual=float(sim.residual[-1, i]),
            nuclear_norm=final["nuclear_norm"],
            target_nuclear_norm=float(np.linalg.norm(Xs, "nuc")),
            effective_rank=final["effective_rank"],
            singular_values=tuple(float(s) for s in sv[-1]),
            balancedness=float(sim.balancedness[-1, i]),
            balancedness_init=float(sim.balancedness[0, i]),
            integrated_wd=float(sim.integrated_wd[-1, i]),
            status="diverged" if sim.diverged[i] else "max-time",
            diverged_step=int(sim.diverged_step[i]) if sim.diverged[i] and
            sim.diverged_step[i] >= 0 else None,
            baseline_error=None if base is None else float(np.linalg.norm(base.X - Xs) / np.linalg.norm(Xs)),
            baseline_nuclear_norm=None if base is None else base.nuclear_norm,
            baseline_status=None if base is None else base.status,
            runtime_s=elapsed + time.perf_counter() - t1,
            curves=curves,
        ))
    return out


def plot(results: Sequence[Result], path: Path) -> None:
    """Recovery error, balancedness and effective rank over time per schedule; final spectra."""
    series = [(r, "", f"{r.config.make_schedule().describe()}, seed {r.config.seed}")
              for r in results]
    baseline = any("baseline/singular_values" in r.curves for r in results)
    fig, axes = new_figure(1, 4, figsize=(17, 3.6 + legend_height(len(series) + baseline, 3)))
    for i, (r, prefix, lab) in enumerate(series):
        c = r.config
        t = np.maximum(r.curves["time"], c.step)
        style = series_style(i, len(t))
        axes[0].loglog(t, r.curves[prefix + "recovery_error"], label=lab, **style)
        axes[1].semilogy(t, np.maximum(r.curves[prefix + "balancedness"], 1e-300), **style)
        axes[2].semilogx(t, r.curves[prefix + "effective_rank"], **style)
        sv = r.curves[prefix + "singular_values"][-1]
        axes[3].semilogy(np.arange(1, sv.size + 1), np.maximum(sv, 1e-16),
                         **{**series_style(i), "label": lab})
        mark_switch(axes[:3], c)
    for r in results:
        if "baseline/singular_values" in r.curves:
            sv = r.curves["baseline/singular_values"]
            axes[3].semilogy(np.arange(1, sv.size + 1), np.maximum(sv, 1e-16), "k--", lw=1,
                             label="nuclear-norm minimizer (convex baseline)")
            axes[0].axhline(r.baseline_error, color="k", ls="--", lw=1)
            break
    axes[0].set(xlabel="time t = Σ η", ylabel="‖X − X*‖_F / ‖X*‖_F", title="recovery error")
    axes[1].set(xlabel="time t = Σ η", ylabel="‖UᵀU − VᵀV‖_F", title="balancedness (∝ e^{−2a})")
    axes[2].set(xlabel="time t = Σ η", ylabel="exp(entropy of σ/Σσ)", title="effective rank")
    axes[3].set(xlabel="index", ylabel="σ_i(X)", title="final singular values")
    figure_legend(fig, axes, ncols=3)
    fig.suptitle("matrix sensing, X = U Vᵀ" + switch_note(r.config for r in results)
                 + (" — dashed black: convex baseline" if baseline else ""))
    save_figure(fig, path)


# docs/theory.md §6: d = 20, rank 2, 160 measurements, decay 0.1 switched off at t = 100; the
# sweeps vary the schedule.
SWEEPS = {
    "quick": {
        "base": {"baseline": "none"},
        "grid": {"seed": [0, 1, 2, 3, 4]},
        "zip": {"schedule": ["none", "constant", "switch-off"]},
    },
    "full": {
        "base": {"baseline": "cvxpy", "t_max": 800.0},
        "grid": {"seed": list(range(5)), "schedule": ["none", "constant", "switch-off"]},
    },
}

EXPERIMENT = Experiment(
    name="matrix-sensing",
    config_cls=Config,
    result_cls=Result,
    run=run,
    run_batch=run_batch,
    plot=plot,
    description=first_line(__doc__),
    sweeps=SWEEPS,
    smoke={"d": 6, "rank": 1, "m": 40, "switch_at": 10.0, "step": 0.05, "t_max": 30.0,
           "baseline": "none"},
)
