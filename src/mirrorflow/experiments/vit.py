"""A small vision transformer trained with AdamW under weight-decay schedules (attention in practice).

Patch embedding, ``depth`` pre-norm blocks and a class token (:class:`~.nn.TinyViT`), trained on
scikit-learn's digits (offline, 8×8) or CIFAR-10 through Hugging Face ``datasets`` (online only).
Each head's score matrix ``W_Q,h W_K,hᵀ`` is a factorized ``U Vᵀ`` (docs/theory.md §6). The
decay on the matrices is scheduled by :class:`mirrorflow.schedules.WeightDecayScheduler`; per-layer
nuclear/Frobenius ratios of the score matrices (mean over heads) come from
:mod:`mirrorflow.schedules.diagnostics`.

Schedules use continuous time ``t = Σ η_k`` with ``η_k`` the learning rate (``switch_at=0.6`` at
``lr=2e-3`` is step 300), and ``a = Σ η_k λ_k`` is the integrated decoupled shrinkage (theory §1).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass as pdataclass

from mirrorflow._core.figure import new_figure, save_figure
from mirrorflow._core.limits import check_deadline
from mirrorflow._core.progress import progress_bar
from mirrorflow._core.threads import torch_threads
from mirrorflow.experiments.base import (
    CONFIG,
    Decay,
    Experiment,
    ExperimentResult,
    RunCost,
    ScheduleConfig,
    SwitchTime,
    TimeGrid,
    compared,
    compared_curves,
    compared_schedules,
    first_line,
    mark_switch,
)
from mirrorflow.experiments.data import DATASETS, load_image_dataset
from mirrorflow.experiments.nn import TinyViT, score_ratios
from mirrorflow.schedules import training
from mirrorflow.schedules.continuous import Schedule
from mirrorflow.schedules.diagnostics import attention_pairs, factor_diagnostics
from mirrorflow.schedules.scheduler import WeightDecayScheduler

__all__ = ["Config", "Result", "plot", "run", "train_vit"]

@pdataclass(frozen=True, config=CONFIG)
class Config(ScheduleConfig):
    """ViT experiment. ``switch_at`` is a time ``t = Σ lr`` (step ``switch_at / lr``)."""

    wd: Decay = 1.0
    switch_at: SwitchTime = 0.6
    compare: bool = Field(True, description="also train with 'none' and 'constant' decay")
    dataset: str = Field("digits", description="digits | cifar10")
    dim: int = Field(8, ge=1, description="embedding width")
    patch_size: int = Field(2, ge=1, description="patch side in pixels (divides the image side)")
    depth: int = Field(2, ge=1, description="transformer blocks")
    heads: int = Field(2, ge=1, description="attention heads (divide dim)")
    lr: float = Field(2e-3, gt=0, allow_inf_nan=False, description="AdamW learning rate")
    steps: int = Field(600, ge=1, description="AdamW steps")
    batch_size: int = Field(128, ge=1, description="training images per step")
    val_fraction: float = Field(0.25, gt=0, lt=1, description="share of images held out for validation")
    max_samples: int | None = Field(None, ge=10, description="subsample the dataset")
    eval_every: int = Field(50, ge=1, description="steps between evaluations")

    @model_validator(mode="after")
    def _check(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASETS)}")
        side = DATASETS[self.dataset][1]
        if side % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide the {side}×{side} images "
                             f"of {self.dataset}; pick a divisor of {side}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        return self

    decay_rule = "start"  # AdamW through WeightDecayScheduler: off from step ceil(T / lr)

    def time_grid(self) -> TimeGrid:
        return TimeGrid(self.lr, self.steps * self.lr, "steps·lr")

    def cost(self) -> RunCost:
        # float32: the images, activations of a training batch and of the whole validation
        # set (tokens × width and heads × tokens² per block), the model; runs one at a time
        C, side = DATASETS[self.dataset]
        N = {"digits": 1797, "cifar10": 60000}.get(self.dataset, 60000)
        N = min(N, self.max_samples or N)
        tokens = (side // self.patch_size) ** 2 + 1
        per_seq = 30 * tokens * (self.dim + self.heads * tokens) * self.depth
        rows = self.batch_size + max(1, round(self.val_fraction * N))
        params = self.depth * 12 * self.dim ** 2 + C * self.patch_size ** 2 * self.dim
        return RunCost(steps=self.steps * (3 if self.compare else 1),
                       memory=4 * (2 * N * C * side * side + rows * per_seq + 16 * params)
                       + 200 * 2**20,
                       what=f"activations of {rows} images × {tokens} tokens")


@dataclass(frozen=True)
class Result(ExperimentResult):
    """Metrics of one run, with ``*_none`` / ``*_constant`` for the comparison runs.

    ``val_loss`` / ``val_accuracy`` on the held-out images; ``nuclear_over_fro``: of the score
    matrices ``W_Q,h W_K,hᵀ`` (mean over layers of the per-layer mean over heads; per layer in
    ``nuclear_over_fro_per_layer``). ``curves``: ``time``, ``a``, ``weight_decay``, ``val_loss``,
    ``val_accuracy``, ``nuclear_over_fro`` (S × layers), ``train_loss`` per run label.
    """

    config: Config
    val_loss: float
    val_accuracy: float
    nuclear_over_fro: float
    nuclear_over_fro_per_layer: tuple[float, ...]
    effective_rank: float
    balancedness: float
    integrated_wd: float
    val_loss_none: float | None
    val_loss_constant: float | None
    val_accuracy_none: float | None
    val_accuracy_constant: float | None
    nuclear_over_fro_none: float | None
    nuclear_over_fro_constant: float | None
    runtime_s: float
    status: str = "ok"  # "diverged": the training loss stopped being finite
    diverged_step: int | None = None
    curves: dict[str, Any] = field(repr=False, default_factory=dict)


def run(config: Config, progress: bool = False) -> Result:
    """Run one ViT experiment (the comparison schedules too when ``compare``)."""
    t0 = time.perf_counter()
    runs = [train_vit(config, s, progress) for s in compared_schedules(config)]
    main = runs[0]
    others, curves = compared(runs, {"val_loss": "val_loss", "val_accuracy": "val_accuracy",
                                     "nuclear_over_fro": lambda r: float(np.mean(r["ratios"]))})
    return Result(
        config=config,
        val_loss=main["val_loss"],
        val_accuracy=main["val_accuracy"],
        nuclear_over_fro=float(np.mean(main["ratios"])),
        nuclear_over_fro_per_layer=tuple(float(x) for x in main["ratios"]),
        effective_rank=main["effective_rank"],
        balancedness=main["balancedness"],
        integrated_wd=main["a"],
        **others,
        runtime_s=time.perf_counter() - t0,
        status="ok" if main["diverged_step"] is None else "diverged",
        diverged_step=main["diverged_step"],
        curves=curves,
    )


def train_vit(cfg: Config, schedule: Schedule, progress: bool = False) -> dict:
    """Train a :class:`TinyViT` with AdamW under ``schedule``; returns metrics, curves, the model
    and the optimizer (its param groups show the decay actually used at the end)."""
    X, y = load_image_dataset(cfg.dataset, max_samples=cfg.max_samples, seed=cfg.seed)
    C, side = X.shape[1], X.shape[2]
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(y))
    n_val = max(1, round(cfg.val_fraction * len(y)))
    val, tr = perm[:n_val], perm[n_val:]
    Xtr, ytr = torch.as_tensor(X[tr]), torch.as_tensor(y[tr])
    Xva, yva = torch.as_tensor(X[val]), torch.as_tensor(y[val])
    classes = int(y.max()) + 1
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = TinyViT(C, side, cfg.patch_size, cfg.dim, cfg.depth, cfg.heads, classes)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n not in ("cls", "pos")]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and n not in ("cls", "pos"))]
    tsched = training.from_continuous(schedule, cfg.lr, cfg.steps)
    wd = 0.0 if tsched is None else cfg.wd
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = None if tsched is None else WeightDecayScheduler(opt, tsched, total_steps=cfg.steps)
    hist: dict[str, list] = {k: [] for k in ("time", "a", "weight_decay", "val_loss",
                                              "val_accuracy", "nuclear_over_fro", "train_loss")}
    lossf = torch.nn.functional.cross_entropy

    def evaluate(k, train_loss):
        model.eval()
        with torch.no_grad():
            logits = model(Xva)
            hist["val_loss"].append(float(lossf(logits, yva)))
            hist["val_accuracy"].append(float((logits.argmax(1) == yva).float().mean()))
        model.train()
        hist["time"].append(k * cfg.lr)
        hist["a"].append(0.0 if scheduler is None else scheduler.integrated)
        hist["weight_decay"].append(float(opt.param_groups[0]["weight_decay"]))
        hist["nuclear_over_fro"].append(score_ratios(model))
        hist["train_loss"].append(train_loss)

    order = torch.randperm(len(ytr), generator=gen)
    ptr, last, diverged_step = 0, float("nan"), None
    with torch_threads(1), \
            progress_bar(cfg.steps, f"ViT ({schedule.describe()})", progress) as advance:
        for k in range(cfg.steps):
            if k % cfg.eval_every == 0:
                evaluate(k, last)
            if ptr + cfg.batch_size > len(ytr):
                order, ptr = torch.randperm(len(ytr), generator=gen), 0
            idx = order[ptr:ptr + cfg.batch_size]
            ptr += cfg.batch_size
            loss = lossf(model(Xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last = float(loss.detach())
            advance()
            if not np.isfinite(last):  # diverged: stop here, the metrics say NaN
                diverged_step = k + 1
                break
            check_deadline(f"ViT at step {k + 1} of {cfg.steps}")
        evaluate(cfg.steps if diverged_step is None else diverged_step, last)
    a = 0.0 if scheduler is None else scheduler.integrated
    if scheduler is not None:
        scheduler.remove()
    ratios = hist["nuclear_over_fro"][-1]
    diags = [factor_diagnostics(p) for p in attention_pairs(model, per_head=True)]
    curves = {k: np.asarray(v) for k, v in hist.items()}
    return {
        "val_loss": hist["val_loss"][-1],
        "val_accuracy": hist["val_accuracy"][-1],
        "ratios": ratios,
        "effective_rank": float(np.mean([d.effective_rank for d in diags])),
        "balancedness": float(np.mean([d.balancedness for d in diags])),
        "a": float(a),
        "diverged_step": diverged_step,
        "curves": curves,
        "model": model,
        "optimizer": opt,
    }


def plot(results: Sequence[Result], path: Path) -> None:
    """Validation loss, accuracy and nuclear/Frobenius ratio per layer over time per schedule."""
    fig, axes = new_figure(1, 3, figsize=(14, 3.8))
    for r in results:
        c = r.config
        for prefix, lab in compared_curves(c, r.curves):
            t = r.curves[prefix + "time"]
            (line,) = axes[0].plot(t, r.curves[prefix + "val_loss"], label=lab)
            axes[1].plot(t, r.curves[prefix + "val_accuracy"], color=line.get_color())
            ratios = np.atleast_2d(np.asarray(r.curves[prefix + "nuclear_over_fro"]))
            for j in range(ratios.shape[1]):
                axes[2].plot(t, ratios[:, j], color=line.get_color(), ls=["-", "--", ":", "-."][j % 4],
                             label=f"{lab}, layer {j}" if ratios.shape[1] > 1 else lab)
        mark_switch(axes, c)
    axes[0].set(xlabel="time t = Σ lr", ylabel="cross-entropy", title="validation loss", yscale="log")
    axes[1].set(xlabel="time t = Σ lr", ylabel="accuracy", title="validation accuracy")
    axes[2].set(xlabel="time t = Σ lr", ylabel="‖W_Q W_Kᵀ‖_* / ‖·‖_F", title="nuclear / Frobenius")
    axes[2].legend(fontsize=7)
    fig.suptitle("ViT: dotted line = weight decay switched off")
    save_figure(fig, path)


# The ViT on scikit-learn's digits (offline): the three schedules at the defaults (λ = 1,
# switched off at t = 0.6 = step 300 of 600, so a = 0.6 vs 1.2 for constant decay), plus what the
# claims of mirrorflow.report.claims need: a decay sweep of constant λ (1e-4 … 2; the quick sweep
# only 1e-4 and 1) and switch-off runs with equal a from another (λ, switch point) — λ = 2 to
# t = 0.3 (a = 0.6) — and unequal a, λ = 2 to t = 0.6 (a = 1.2). The quick sweep runs the extra
# settings for one seed: its claims are "inconclusive (quick)" by design.
_VIT_EXTRA = {"zip": {"schedule": ["constant", "switch-off", "switch-off", "constant"],
                      "wd": [1e-4, 2.0, 2.0, 0.5], "switch_at": [0.6, 0.3, 0.6, 0.6]}}
SWEEPS = {
    "quick": {
        "base": {"compare": False},
        "case": [
            {"grid": {"seed": [0, 1]},
             "zip": {"schedule": ["none", "constant", "switch-off"]}},
            {"grid": {"seed": [0]}, **_VIT_EXTRA},
        ],
    },
    "full": {
        "base": {"compare": False},
        "grid": {"seed": list(range(5))},
        "case": [
            {"zip": {"schedule": ["none", "switch-off"]}},
            {"base": {"schedule": "constant"}, "grid": {"wd": [1e-4, 0.1, 0.5, 1.0, 2.0]}},
            {"base": {"schedule": "switch-off", "wd": 2.0}, "grid": {"switch_at": [0.3, 0.6]}},
        ],
    },
}

EXPERIMENT = Experiment(
    name="vit",
    config_cls=Config,
    result_cls=Result,
    run=run,
    plot=plot,
    description=first_line(__doc__),
    sweeps=SWEEPS,
    smoke={"compare": False, "steps": 6, "eval_every": 3, "max_samples": 200, "batch_size": 32,
           "switch_at": 0.006, "dim": 4, "depth": 1},
)
