"""Attention with weight-decay schedules: a single attention layer fitted to a low-rank teacher.

The score matrix ``W_Q W_Kᵀ`` is a factorized ``U Vᵀ`` (docs/theory.md §6). The layer is
``out(Z) = softmax(Z W_Q W_Kᵀ Zᵀ) Z`` (values fixed to the identity, so only the score matrix
``M = W_Q W_Kᵀ`` is learned) on sequences ``Z`` of ``tokens`` Gaussian tokens in ``R^dim``; the
teacher has a rank-``teacher_rank`` score matrix ``M*``. Full-batch gradient descent in float64 on
``½ mean ‖out − out*‖²`` with coupled weight decay on both factors. Reports the test loss, the distance ``‖M − M*‖_F / ‖M*‖_F``, the nuclear/Frobenius
ratio and effective rank of ``M`` and the balancedness ``‖W_QᵀW_Q − W_KᵀW_K‖_F`` (theory §6:
``∝ e^{−2a}``). The practice side, a small ViT trained with AdamW, is :mod:`.vit`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
from mirrorflow._core.spectral import effective_rank, nuclear_over_fro
from mirrorflow._core.threads import torch_threads
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
from mirrorflow.schedules.continuous import Schedule

__all__ = ["Config", "Result", "attention_forward", "make_teacher_problem", "plot", "run"]

@pdataclass(frozen=True, config=CONFIG)
class Config(ScheduleConfig):
    """Attention-teacher experiment. Times are continuous time ``t = Σ η``."""

    wd: Decay = 0.05
    switch_at: SwitchTime = 40.0
    dim: int = Field(8, ge=1, description="token dimension")
    teacher_rank: int = Field(1, ge=1, description="rank of the teacher score matrix")
    teacher_norm: float = Field(4.0, gt=0, allow_inf_nan=False, description="‖M*‖_F")
    tokens: int = Field(8, ge=2, description="sequence length")
    n_train: int = Field(12, ge=1, description="training sequences")
    n_test: int = Field(500, ge=1, description="test sequences")
    init_scale: float = Field(1.0, gt=0, allow_inf_nan=False, description="W_Q, W_K entries N(0, s²/dim)")
    step: float = Field(0.5, gt=0, allow_inf_nan=False, description="gradient-descent step η")
    t_max: float = Field(300.0, gt=0, allow_inf_nan=False, description="training time")

    @model_validator(mode="after")
    def _check(self):
        if self.teacher_rank > self.dim:
            raise ValueError(f"teacher_rank ({self.teacher_rank}) must be <= dim ({self.dim})")
        return self

    retired = ("compare",)  # compare schedules with a sweep (experiments.base.RETIRED_FIELDS)

    def time_grid(self) -> TimeGrid:
        return TimeGrid(self.step, self.t_max, "t_max")

    def cost(self) -> RunCost:
        # the sequences, their scores (T × T) and outputs with autograd buffers
        T, d = self.tokens, self.dim
        seqs = self.n_train + self.n_test
        return RunCost(steps=math.ceil(self.t_max / self.step - 1e-9),
                       memory=8 * (6 * seqs * T * (T + d) + 8 * d * d),
                       what=f"{seqs} sequences of {T} tokens (scores and autograd buffers)")


@dataclass(frozen=True)
class Result(ExperimentResult):
    """Metrics of one run.

    ``test_loss``: test MSE against the teacher; ``teacher_distance``: ``‖M − M*‖_F / ‖M*‖_F``;
    ``nuclear_over_fro`` and ``effective_rank`` of ``M = W_Q W_Kᵀ``. ``curves``: ``time``, ``a``,
    ``test_loss``, ``train_loss``, ``teacher_distance``, ``nuclear_over_fro``, ``effective_rank``,
    ``balancedness``.
    """

    config: Config
    test_loss: float
    teacher_distance: float
    nuclear_over_fro: float
    effective_rank: float
    balancedness: float
    integrated_wd: float
    runtime_s: float
    status: str = "ok"  # "diverged": the loss stopped being finite or W_Q, W_K blew up
    diverged_step: int | None = None
    curves: dict[str, Any] = field(repr=False, default_factory=dict)


def run(config: Config, progress: bool = False) -> Result:
    """Run one attention-teacher experiment."""
    t0 = time.perf_counter()
    main = _run_teacher(config, [config.make_schedule()], progress)[0]
    return Result(
        config=config,
        test_loss=main["test_loss"],
        teacher_distance=main["teacher_distance"],
        nuclear_over_fro=main["ratio"],
        effective_rank=main["effective_rank"],
        balancedness=main["balancedness"],
        integrated_wd=main["a"],
        runtime_s=time.perf_counter() - t0,
        status="ok" if main["diverged_step"] is None else "diverged",
        diverged_step=main["diverged_step"],
        curves=main["curves"],
    )


# ============================================================================ teacher

def attention_forward(Z: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``softmax(Z M Zᵀ) Z`` row-wise; ``Z``: (n, T, d), ``M``: (..., d, d) → (..., n, T, d)."""
    scores = torch.einsum("nti,...ij,nsj->...nts", Z, M, Z)
    return torch.softmax(scores, dim=-1) @ Z


def make_teacher_problem(cfg: Config):
    """Draw ``(M*, Z_train, Z_test, W_Q0, W_K0)`` from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(cfg.seed)
    d, r = cfg.dim, cfg.teacher_rank
    M = rng.normal(size=(d, r)) @ rng.normal(size=(d, r)).T
    M *= cfg.teacher_norm / np.linalg.norm(M)
    Z_train = rng.normal(0, 1 / np.sqrt(d), size=(cfg.n_train, cfg.tokens, d))
    Z_test = rng.normal(0, 1 / np.sqrt(d), size=(cfg.n_test, cfg.tokens, d))
    sd = cfg.init_scale / np.sqrt(d)
    return M, Z_train, Z_test, rng.normal(0, sd, size=(d, d)), rng.normal(0, sd, size=(d, d))


def _run_teacher(cfg: Config, scheds: list[Schedule], progress: bool) -> list[dict]:
    """Full-batch GD on ``(W_Q, W_K)`` for each schedule at once (float64, autograd)."""
    M_star, Ztr, Zte, Q0, K0 = make_teacher_problem(cfg)
    B = len(scheds)
    f64 = dict(dtype=torch.float64)
    Ztr_t, Zte_t, Ms = (torch.as_tensor(x, **f64) for x in (Ztr, Zte, M_star))
    Ytr = attention_forward(Ztr_t, Ms)
    Yte = attention_forward(Zte_t, Ms)
    Wq = torch.as_tensor(np.broadcast_to(Q0, (B, *Q0.shape)).copy(), **f64).requires_grad_(True)
    Wk = torch.as_tensor(np.broadcast_to(K0, (B, *K0.shape)).copy(), **f64).requires_grad_(True)
    total = math.ceil(cfg.t_max / cfg.step - 1e-9)
    record = set(np.unique(np.round(np.concatenate([
        np.linspace(0, total, 61), np.geomspace(1, total, 40)])).astype(int)).tolist())
    hist: dict[str, list] = {k: [] for k in ("time", "a", "test_loss", "train_loss", "teacher_distance",
                                              "nuclear_over_fro", "effective_rank", "balancedness")}
    a = np.zeros(B)

    def loss_per_run(Wq, Wk, Z, Y):
        out = attention_forward(Z, Wq @ Wk.transpose(1, 2))
        return 0.5 * ((out - Y) ** 2).sum((-1, -2)).mean(-1)  # (B,)

    def snapshot(k):
        with torch.no_grad():
            M = (Wq @ Wk.transpose(1, 2)).numpy()
            sv = np.linalg.svd(M, compute_uv=False)
            hist["time"].append(k * cfg.step)
            hist["a"].append(a.copy())
            hist["test_loss"].append(loss_per_run(Wq, Wk, Zte_t, Yte).numpy())
            hist["train_loss"].append(loss_per_run(Wq, Wk, Ztr_t, Ytr).numpy())
            hist["teacher_distance"].append(np.linalg.norm(M - M_star, axis=(1, 2)) / cfg.teacher_norm)
            hist["nuclear_over_fro"].append(nuclear_over_fro(sv))
            hist["effective_rank"].append(effective_rank(sv))
            D = Wq.transpose(1, 2) @ Wq - Wk.transpose(1, 2) @ Wk
            hist["balancedness"].append(torch.linalg.matrix_norm(D).numpy())

    # a run diverged when its loss stops being finite or a factor grows GROWTH_LIMIT-fold past
    # max(1, its start): it is frozen there (its step becomes 0) and the step recorded
    with torch.no_grad():
        w_limit = GROWTH_LIMIT * torch.clamp(torch.maximum(torch.linalg.matrix_norm(Wq),
                                                           torch.linalg.matrix_norm(Wk)), min=1.0)
    eta = torch.full((B, 1, 1), cfg.step, **f64)
    div_step: list[int | None] = [None] * B
    with torch_threads(1), progress_bar(total, "attention (teacher)", progress) as advance:
        for k in range(total):
            if k in record:
                snapshot(k)
            alpha = torch.as_tensor([float(s.rate((k + 0.5) * cfg.step)) for s in scheds], **f64)
            per_run = loss_per_run(Wq, Wk, Ztr_t, Ytr)
            gq, gk = torch.autograd.grad(per_run.sum(), (Wq, Wk))
            with torch.no_grad():
                al = alpha.view(B, 1, 1)
                Wq -= eta * (gq + al * Wq)
                Wk -= eta * (gk + al * Wk)
                if k % 10 == 9 or k == total - 1:
                    big = torch.maximum(torch.linalg.matrix_norm(Wq), torch.linalg.matrix_norm(Wk))
                    bad = ~torch.isfinite(per_run) | ~(big <= w_limit)
                    for b in torch.nonzero(bad & (eta.view(B) > 0)).flatten().tolist():
                        div_step[b] = k + 1
                        eta[b] = 0.0
            a += (eta.view(B).numpy() > 0) * cfg.step * alpha.numpy()
            advance()
            check_deadline(f"attention at step {k + 1} of {total}")
        snapshot(total)
    arr = {k: np.asarray(v) for k, v in hist.items()}
    out = []
    for b in range(B):
        curves = {"time": arr["time"]} | {k: arr[k][:, b] for k in arr if k != "time"}
        out.append({
            "test_loss": float(arr["test_loss"][-1, b]),
            "teacher_distance": float(arr["teacher_distance"][-1, b]),
            "ratio": float(arr["nuclear_over_fro"][-1, b]),
            "effective_rank": float(arr["effective_rank"][-1, b]),
            "balancedness": float(arr["balancedness"][-1, b]),
            "a": float(a[b]),
            "diverged_step": div_step[b],
            "curves": curves,
        })
    return out


def plot(results: Sequence[Result], path: Path) -> None:
    """Test loss, distance to the teacher and nuclear/Frobenius ratio over time per schedule."""
    labels = unique_labels([r.config.make_schedule().describe() for r in results],
                           [f"seed {r.config.seed}" for r in results])
    fig, axes = new_figure(1, 3, figsize=(14, 3.6 + legend_height(len(results), 3)))
    for i, (r, lab) in enumerate(zip(results, labels)):
        t = r.curves["time"]
        style = series_style(i, len(t))
        axes[0].plot(t, r.curves["test_loss"], label=lab, **style)
        axes[1].plot(t, r.curves["teacher_distance"], **style)
        axes[2].plot(t, r.curves["nuclear_over_fro"], **style)
        mark_switch(axes, r.config)
    axes[0].set(xlabel="time t = Σ η", ylabel="loss", title="test loss", yscale="log")
    axes[1].set(xlabel="time t = Σ η", ylabel="‖M − M*‖_F / ‖M*‖_F", title="distance to teacher")
    axes[2].set(xlabel="time t = Σ η", ylabel="‖W_Q W_Kᵀ‖_* / ‖·‖_F", title="nuclear / Frobenius")
    figure_legend(fig, axes, ncols=3)
    fig.suptitle("attention (teacher)" + switch_note(r.config for r in results))
    save_figure(fig, path)


SWEEPS = {
    "quick": {
        "grid": {"seed": [0, 1, 2, 3, 4]},
        "zip": {"schedule": ["none", "constant", "switch-off"]},
    },
    "full": {
        "grid": {"seed": list(range(10)), "schedule": ["none", "constant", "switch-off"]},
    },
}

#: Fields of the version-0.1 attention Config (teacher and ViT in one) that only the ViT used.
_VIT_FIELDS = ("dataset", "patch_size", "depth", "heads", "lr", "steps", "batch_size",
               "val_fraction", "max_samples", "eval_every")
_TEACHER_FIELDS = ("teacher_rank", "teacher_norm", "tokens", "n_train", "n_test", "init_scale",
                   "step", "t_max")


def migrate(old: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A version-0.1 ``attention`` config (``setting`` teacher or vit) as today's experiment."""
    cfg = dict(old)
    setting = cfg.pop("setting", "teacher")
    defaults = {"teacher": (0.05, 40.0), "vit": (1.0, 0.6)}[setting]
    if cfg.get("wd") is None:
        cfg["wd"] = defaults[0]
    if cfg.get("switch_at") is None:
        cfg["switch_at"] = defaults[1]
    drop = _VIT_FIELDS if setting == "teacher" else _TEACHER_FIELDS
    for k in drop:
        cfg.pop(k, None)
    return ("attention" if setting == "teacher" else "vit"), cfg


EXPERIMENT = Experiment(
    name="attention",
    config_cls=Config,
    result_cls=Result,
    run=run,
    plot=plot,
    description=first_line(__doc__),
    sweeps=SWEEPS,
    smoke={"dim": 4, "tokens": 4, "n_train": 6, "n_test": 20, "step": 0.5, "t_max": 10.0,
           "switch_at": 5.0},
    migrate=migrate,
)
