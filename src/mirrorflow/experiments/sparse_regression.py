"""Sparse regression with ``x = u ⊙ v`` (or ``u² − v²``, ``u²``) and a weight-decay schedule.

Teacher: a ``sparsity``-sparse ``x*`` with N(0, 1) entries on a random support, ``A`` with
N(0, 1/n) entries (``n < d``), ``y = A x* (+ noise)``. Training: gradient descent on
``f(x) = ½‖Ax − y‖²`` in parameter space from ``u = u0, v = v0`` with the chosen schedule.

Run to convergence: gradient descent until the schedule has settled plus ``gd_after_settle`` time
units; then, when the decay has ended, the remaining gradient flow (a fixed mirror flow, theory
§2 with ``α = 0``) is followed by an implicit ODE solver to ``‖Ax − y‖/‖y‖ ≤ tol``
(``tail="ode"``, fast and exact for the flow), or by more gradient descent (``tail="gd"``).
With decay always on, gradient descent runs until it is stationary (a Lasso-like point).

When the decay has ended and the run converged, the result includes ``predicted_gap``: the
distance to the implicit-bias prediction ``argmin_{Ax=y} R_a(x)`` (theory §5). When the
prediction cannot be made (e.g. no solution of ``Ax = y`` keeps the frozen signs of balanced
coordinates), ``predicted_gap`` is ``None`` and ``prediction_note`` says why, in one line.
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
from mirrorflow.dynamics.mirror import flow_to_convergence
from mirrorflow.dynamics.simulate import simulate_gd
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
from mirrorflow.geometry.implicit_bias import implicit_bias
from mirrorflow.geometry.parameterizations import get_parameterization

__all__ = ["Config", "Result", "make_problem", "plot", "run", "run_batch"]


@pdataclass(frozen=True, config=CONFIG)
class Config(ScheduleConfig):
    """Sparse-regression experiment (defaults: docs/theory.md §5's setting).

    Times are continuous time ``t = Σ η`` (``switch_at=20`` with ``step=0.01`` is 2 000 steps).
    """

    n: int = Field(40, ge=1, description="number of measurements")
    d: int = Field(100, ge=1, description="dimension")
    sparsity: int = Field(5, ge=1, description="nonzeros in the teacher x*")
    noise: float = Field(0.0, ge=0, description="std of Gaussian noise on y")
    parameterization: Literal["uv", "u2-v2", "u2"] = Field(
        "uv", description="x = u ⊙ v, u² − v² or u² (coordinate-wise)")
    u0: float = Field(1.0, allow_inf_nan=False, description="initial u (every coordinate)")
    v0: float = Field(0.0, allow_inf_nan=False, description="initial v (every coordinate)")
    wd: Decay = 0.2
    switch_at: SwitchTime = 20.0
    step: float = Field(0.01, gt=0, allow_inf_nan=False, description="gradient-descent step η")
    t_max: float = Field(5000.0, gt=0, allow_inf_nan=False, description="time cap of gradient descent")
    gd_after_settle: float = Field(50.0, ge=0, allow_inf_nan=False,
                                   description="gradient-descent time after the schedule settles, "
                                               "before the tail")
    tail: Literal["ode", "gd"] = Field(
        "ode", description="to convergence by an implicit ODE solver or by more gradient descent")
    tol: float = Field(1e-10, gt=0, lt=1, allow_inf_nan=False,
                       description="stop at relative residual ‖Ax − y‖/‖y‖ ≤ tol (decay that "
                                   "never ends: ‖Δx‖/Δt ≤ tol); < 1")

    @model_validator(mode="after")
    def _check(self):
        if self.sparsity > self.d:
            raise ValueError(f"sparsity ({self.sparsity}) must be <= d ({self.d})")
        return self

    def time_grid(self) -> TimeGrid:
        # gradient descent runs at most to t_max; the decay must end inside it (the ODE tail
        # follows the flow without decay)
        return TimeGrid(self.step, self.t_max, "t_max")

    def cost(self) -> RunCost:
        # A (n × d); AᵀA and its kernel copy (d × d), the ODE tail's Jacobian and Radau's real
        # and complex LU factors (d × d each); ~300 snapshots of x (d)
        d, n = self.d, self.n
        return RunCost(steps=math.ceil(self.t_max / self.step - 1e-9),
                       memory=8 * (8 * d * d + 3 * n * d + 300 * d),
                       what=f"AᵀA and the ODE tail's d × d matrices at d = {d}")


@dataclass(frozen=True)
class Result(ExperimentResult):
    """Metrics of one run.

    ``curves`` holds the time series ``time``, ``recovery_error``, ``residual``, ``a`` and the
    vectors ``x_final`` (the simulated limit) and ``x_star`` (the teacher).
    """

    config: Config
    recovery_error: float
    train_residual: float
    l1_norm: float
    integrated_wd: float
    steps: int
    time: float
    status: str
    predicted_gap: float | None
    runtime_s: float
    curves: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    prediction_note: str | None = None


def make_problem(cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``(A, y, x*)`` for a config from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(cfg.seed)
    A = rng.normal(0.0, 1.0 / np.sqrt(cfg.n), size=(cfg.n, cfg.d))
    x_star = np.zeros(cfg.d)
    support = rng.choice(cfg.d, size=cfg.sparsity, replace=False)
    x_star[support] = rng.normal(size=cfg.sparsity)
    y = A @ x_star + cfg.noise * rng.normal(size=cfg.n)
    if cfg.parameterization == "u2":
        # x = u² reaches only x ≥ 0: use a nonnegative teacher
        x_star = np.abs(x_star)
        y = A @ x_star + cfg.noise * rng.normal(size=cfg.n)
    return A, y, x_star


def _group_key(c: Config):
    # runs handed to the ODE tail (decay ends) and runs that need gradient descent to
    # stationarity (decay stays on) have very different horizons: never batch them together
    ode_tail = c.tail == "ode" and c.make_schedule().final_rate == 0
    return (c.n, c.d, c.step, c.t_max, c.parameterization, c.tol, c.tail, c.gd_after_settle,
            ode_tail)


def run_batch(configs: Sequence[Config], progress: bool = False) -> list[Result]:
    """Run several configs; those with equal shapes and step share one batched simulation."""
    return run_grouped(configs, _group_key, _run_group, progress)


def run(config: Config, progress: bool = False) -> Result:
    """Run one sparse-regression experiment."""
    return run_batch([config], progress=progress)[0]


def _run_group(cfgs: list[Config], progress: bool) -> list[Result]:
    t0 = time.perf_counter()
    c0 = cfgs[0]
    param = get_parameterization(c0.parameterization)
    problems = [make_problem(c) for c in cfgs]
    A = np.stack([p[0] for p in problems])
    y = np.stack([p[1] for p in problems])
    scheds = [c.make_schedule() for c in cfgs]
    ends = [s.final_rate == 0 for s in scheds]
    use_tail = c0.tail == "ode"
    # gradient descent horizon: to convergence, or until the ODE tail takes over
    horizons = [min(c0.t_max, s.settle_time + c0.gd_after_settle) if (use_tail and e) else c0.t_max
                for s, e in zip(scheds, ends)]
    t_gd = max(horizons)
    snap = np.unique(np.concatenate([np.linspace(0, t_gd, 101), np.geomspace(c0.step, t_gd, 100)]))
    u0 = np.array([[c.u0] for c in cfgs])
    v0 = np.array([[c.v0] for c in cfgs])
    sim = simulate_gd(A, y, u0, v0, scheds, parameterization=param, step=c0.step, t_max=t_gd,
                      snapshot_times=snap, tol=None if use_tail and all(ends) else c0.tol,
                      progress=progress)
    elapsed = (time.perf_counter() - t0) / len(cfgs)
    out = []
    for i, (c, (Ai, yi, xs)) in enumerate(zip(cfgs, problems)):
        t1 = time.perf_counter()
        x = sim.x_final[i]
        status = sim.status[i]
        t_end = float(sim.steps[i] * c.step)
        if use_tail and ends[i] and status != "diverged":
            x, t_tail, ok = flow_to_convergence(Ai, yi, param.legendre(sim.u[i], sim.v[i]), tol=c.tol)
            t_end += t_tail
            status = "converged" if ok else "max-time"
        resid = float(np.linalg.norm(Ai @ x - yi) / max(np.linalg.norm(yi), 1e-300))
        a = float(sim.a_final[i])
        gap = note = None
        if ends[i] and status == "converged":
            legendre = param.legendre(np.full(c.d, c.u0), np.full(c.d, c.v0))
            pred = implicit_bias(Ai, yi, legendre, a)
            if pred.converged:
                gap = float(np.linalg.norm(x - pred.x))
            else:
                note = f"no implicit-bias prediction ({pred.status}): {pred.message}"
        traj = sim.x[:, i, :]
        curves = {
            "time": np.append(sim.times, t_end),
            "recovery_error": np.append(np.linalg.norm(traj - xs, axis=1), np.linalg.norm(x - xs)),
            "residual": np.append(np.linalg.norm(traj @ Ai.T - yi, axis=1) / np.linalg.norm(yi), resid),
            "a": np.append(sim.integrated_wd[:, i], a),
            "x_final": x,
            "x_star": xs,
        }
        out.append(Result(
            config=c,
            recovery_error=float(np.linalg.norm(x - xs)),
            train_residual=resid,
            l1_norm=float(np.abs(x).sum()),
            integrated_wd=a,
            steps=int(sim.steps[i]),
            time=t_end,
            status=status,
            predicted_gap=gap,
            runtime_s=elapsed + time.perf_counter() - t1,
            curves=curves,
            prediction_note=note,
        ))
    return out


def plot(results: Sequence[Result], path: Path) -> None:
    """Recovery error and training residual over time, one line per run."""
    fig, axes = new_figure(1, 2, figsize=(10, 3.6 + legend_height(len(results), 2)))
    for i, r in enumerate(results):
        c = r.config
        label = f"{c.make_schedule().describe()}, a={r.integrated_wd:.2f}, seed {c.seed}"
        t = np.maximum(r.curves["time"], c.step)
        style = series_style(i, len(t))
        axes[0].loglog(t, r.curves["recovery_error"], label=label, **style)
        axes[1].loglog(t, np.maximum(r.curves["residual"], 1e-16), **style)
        mark_switch(axes, c)
    axes[0].set(xlabel="time t = Σ η", ylabel="‖x − x*‖", title="recovery error")
    axes[1].set(xlabel="time t = Σ η", ylabel="‖Ax − y‖ / ‖y‖", title="training residual")
    figure_legend(fig, axes, ncols=2)
    fig.suptitle("sparse regression, x = u ⊙ v" + switch_note(r.config for r in results))
    save_figure(fig, path)


# docs/theory.md §5: n = 40, d = 100, 5-sparse, u0 = 1, v0 = 0, decay 0.2 switched off at t = 20
# (a = 4). Constant decay never settles: cap its time (it is near stationary by then). Without
# decay plain gradient descent converges by t ≈ 60, so 'none' uses tail = "gd" (the implicit-ODE
# tail stalled on seed 3 of the 'none' schedule). The claim that the limit depends on the
# schedule only through a (mirrorflow.report.claims) adds switch-off λ = 0.4 to t = 10 (a = 4,
# another shape) and λ = 0.2 to t = 10 (a = 2); the full sweep also λ = 0.1 to t = 40 (a = 4).
# (a = 8, λ = 0.2 to t = 40, was dropped: its runs took minutes each, the scale e^{−16} makes
# the flow after the switch stiff.)
SWEEPS = {
    "quick": {
        "grid": {"seed": [0, 1, 2, 3, 4]},
        "case": [
            {"zip": {"schedule": ["none", "constant", "switch-off"],
                     "t_max": [5000.0, 300.0, 5000.0], "tail": ["gd", "ode", "ode"]}},
            {"base": {"schedule": "switch-off"},
             "zip": {"wd": [0.4, 0.2], "switch_at": [10.0, 10.0]}},
        ],
    },
    "full": {
        "grid": {"seed": list(range(10))},
        "case": [
            {"base": {"schedule": "none", "tail": "gd"}},
            {"base": {"schedule": "constant", "t_max": 2000.0}, "grid": {"wd": [0.1, 0.2, 0.4]}},
            {"zip": {"schedule": ["switch-off"] * 4, "wd": [0.1, 0.2, 0.4, 0.2],
                     "switch_at": [40.0, 20.0, 10.0, 10.0]}},
        ],
    },
}

EXPERIMENT = Experiment(
    name="sparse-regression",
    config_cls=Config,
    result_cls=Result,
    run=run,
    run_batch=run_batch,
    plot=plot,
    description=first_line(__doc__),
    sweeps=SWEEPS,
    smoke={"n": 10, "d": 20, "sparsity": 2, "switch_at": 2.0, "step": 0.05, "t_max": 200.0,
           "gd_after_settle": 5.0, "tol": 1e-6},
)
