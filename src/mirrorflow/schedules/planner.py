"""Plan a weight-decay switch-off before training (``mirrorflow plan``; docs/training.md, "Planning").

From a learning-rate schedule (constant / linear / cosine, with linear warm-up), a base decay λ
and the number of steps per epoch, :func:`plan` computes

* the integrated decay ``a_K = Σ_{k<K} η_k λ`` of constant decay after every step ``K``
  (docs/theory.md §1; what :class:`~mirrorflow.schedules.WeightDecayScheduler` reports as
  ``integrated`` for the same run);
* AdamW's EMA timescale ``τ_k = 1/(η_k λ)`` in steps and epochs (Wang & Aitchison 2024: AdamW's
  weights are an exponential moving average of the updates over ``τ`` steps). The number of
  timescales that elapse up to step ``K`` is ``Σ_{k<K} 1/τ_k = a_K``: "n timescales" and
  "a = n" are the same target;
* the switch-off step ``K`` such that ``switch_off(at=K)`` reaches a target ``a`` (the first
  ``K`` with ``a_K ≥ target``; ``budget(target)`` lands on it exactly), given as a target ``a``, a
  number of timescales, or the ``a`` of a reference run with constant decay ``λ_ref`` through the
  whole schedule.

The learning rate at optimizer step ``k`` (0-based; the Hugging Face ``get_*_schedule_with_warmup``
conventions, so ``η_0 = 0`` with warm-up): ``peak·k/W`` for ``k < W``; then ``peak`` (constant),
``peak·(r + (1 − r)·(T − k)/(T − W))`` (linear) or ``peak·(r + (1 − r)·½(1 + cos πp))`` with
``p = (k − W)/(T − W)`` (cosine), ``r`` = ``min_lr_ratio``. :meth:`Plan.lr_lambda` gives the
same factor for ``torch.optim.lr_scheduler.LambdaLR``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mirrorflow._core.validation import MirrorflowError

__all__ = ["LR_SCHEDULES", "Plan", "plan"]

LR_SCHEDULES = ("constant", "linear", "cosine")


def _pos_int(value, what: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise MirrorflowError(f"{what} must be an integer, got {value!r}")
    v = int(value)
    if v < 0 or (v == 0 and not allow_zero):
        raise MirrorflowError(f"{what} must be {'>= 0' if allow_zero else '>= 1'}, got {v}")
    return v


def _pos_float(value, what: str, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise MirrorflowError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise MirrorflowError(f"{what} must be finite and {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    return v


@dataclass(frozen=True)
class Plan:
    """The result of :func:`plan`. Arrays are indexed by step: ``lr[k]`` is the learning rate of
    optimizer step ``k`` (``k < total_steps``), ``a[K]`` the integrated decay of constant decay
    after ``K`` steps (``K ≤ total_steps``, ``a[0] = 0``)."""

    lr_schedule: str
    peak_lr: float
    total_steps: int
    warmup_steps: int
    min_lr_ratio: float
    weight_decay: float
    steps_per_epoch: int | None
    lr: np.ndarray = field(repr=False)
    a: np.ndarray = field(repr=False)
    target_a: float | None = None
    target_from: str | None = None
    switch_step: int | None = None

    # -- derived --------------------------------------------------------------------------
    @property
    def a_constant(self) -> float:
        """``a`` of constant decay through the whole run (= timescales elapsed)."""
        return float(self.a[-1])

    @property
    def tau_steps(self) -> np.ndarray:
        """AdamW's EMA timescale ``1/(η_k λ)`` per step (inf where ``η_k = 0``)."""
        with np.errstate(divide="ignore"):
            return 1.0 / (self.lr * self.weight_decay)

    @property
    def tau_steps_at_peak(self) -> float:
        return 1.0 / (self.peak_lr * self.weight_decay)

    @property
    def tau_epochs_at_peak(self) -> float | None:
        return None if self.steps_per_epoch is None else self.tau_steps_at_peak / self.steps_per_epoch

    @property
    def a_at_switch(self) -> float | None:
        """``a`` that ``switch_off(at=switch_step)`` gives (``≥ target_a`` by less than one step)."""
        return None if self.switch_step is None else float(self.a[self.switch_step])

    def epoch(self, step: int) -> float | None:
        return None if self.steps_per_epoch is None else step / self.steps_per_epoch

    def lr_lambda(self, k: int) -> float:
        """``η_k / peak`` for ``torch.optim.lr_scheduler.LambdaLR`` (the planned schedule)."""
        return _lr_factor(self.lr_schedule, int(k), self.total_steps, self.warmup_steps,
                          self.min_lr_ratio)

    def summary(self) -> dict[str, Any]:
        out = {
            "lr_schedule": self.lr_schedule, "peak_lr": self.peak_lr,
            "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
            "min_lr_ratio": self.min_lr_ratio, "weight_decay": self.weight_decay,
            "steps_per_epoch": self.steps_per_epoch,
            "a_constant": self.a_constant, "timescales_constant": self.a_constant,
            "tau_steps_at_peak": self.tau_steps_at_peak,
            "tau_epochs_at_peak": self.tau_epochs_at_peak,
        }
        if self.target_a is not None:
            out.update(target_a=self.target_a, target_from=self.target_from,
                       switch_step=self.switch_step, switch_epoch=self.epoch(self.switch_step),
                       a_at_switch=self.a_at_switch)
        return out

    def rows(self, every: int) -> list[tuple[int, float | None, float]]:
        """``(step K, η of step K, a after K steps)`` every ``every`` steps and at the end (where
        there is no step ``K``: ``η`` is ``None``)."""
        ks = list(range(0, self.total_steps + 1, every))
        if ks[-1] != self.total_steps:
            ks.append(self.total_steps)
        return [(k, float(self.lr[k]) if k < self.total_steps else None, float(self.a[k]))
                for k in ks]

    def figure(self):
        """A two-panel figure: the learning rate, and ``a(t)`` for constant decay and for the
        planned switch-off (``matplotlib.figure.Figure``)."""
        from mirrorflow._core.figure import new_figure

        fig, (ax1, ax2) = new_figure(2, 1, (6.4, 5.6))
        steps = np.arange(self.total_steps)
        ax1.plot(steps, self.lr, color="C0")
        ax1.set_ylabel("learning rate η_k")
        ax1.set_title(f"{self.lr_schedule} lr, peak {self.peak_lr:g}, warm-up {self.warmup_steps}; "
                      f"λ = {self.weight_decay:g}; τ at peak = {self.tau_steps_at_peak:.4g} steps",
                      fontsize=9)
        K = np.arange(self.total_steps + 1)
        ax2.plot(K, self.a, color="C0", label=f"constant decay: a = {self.a_constant:.4g}")
        if self.switch_step is not None:
            a_sw = np.minimum(self.a, self.a[self.switch_step])
            ax2.plot(K, a_sw, color="C3", ls="--",
                     label=f"switch_off(at={self.switch_step}): a = {self.a_at_switch:.4g}")
            ax2.axhline(self.target_a, color="0.5", lw=0.8, ls=":",
                        label=f"target a = {self.target_a:.4g} ({self.target_from})")
            ax2.axvline(self.switch_step, color="C3", lw=0.8, ls=":")
        ax2.set_xlabel("optimizer step")
        ax2.set_ylabel("a = Σ η_k λ_k (timescales)")
        ax2.legend(fontsize=8, loc="upper left")
        if self.steps_per_epoch is not None:
            spe = self.steps_per_epoch
            ax2.secondary_xaxis("top", functions=(lambda x: x / spe, lambda e: e * spe)) \
                .set_xlabel("epoch", fontsize=8)
        return fig


def _lr_factor(kind: str, k: int, T: int, W: int, r: float) -> float:
    if k < W:
        return k / W
    if kind == "constant":
        return 1.0
    p = min(1.0, (k - W) / (T - W))
    if kind == "linear":
        return r + (1 - r) * (1 - p)
    return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * p))


def plan(lr_schedule: str = "constant", *, peak_lr: float, total_steps: int, weight_decay: float,
         warmup_steps: int = 0, min_lr_ratio: float = 0.0, steps_per_epoch: int | None = None,
         target_a: float | None = None, target_timescales: float | None = None,
         reference_weight_decay: float | None = None) -> Plan:
    """Plan ``a`` over a run and, given one target, the switch-off step (module docstring).

    Exactly one of ``target_a``, ``target_timescales`` (the same number: timescales elapsed =
    ``a``) and ``reference_weight_decay`` (the ``a`` of constant decay ``λ_ref`` through the whole
    schedule) may be given; with none, only ``a`` and ``τ`` are planned. A target that constant
    decay at ``weight_decay`` does not reach within ``total_steps`` is refused with one line.
    """
    if lr_schedule not in LR_SCHEDULES:
        raise MirrorflowError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
    peak = _pos_float(peak_lr, "peak_lr")
    T = _pos_int(total_steps, "total_steps")
    W = _pos_int(warmup_steps, "warmup_steps", allow_zero=True)
    if W >= T:
        raise MirrorflowError(f"warmup_steps={W} must be < total_steps={T}")
    r = _pos_float(min_lr_ratio, "min_lr_ratio", allow_zero=True)
    if r > 1:
        raise MirrorflowError(f"min_lr_ratio must be in [0, 1] (final lr / peak lr), got {r!r}")
    lam = _pos_float(weight_decay, "weight_decay")
    spe = None if steps_per_epoch is None else _pos_int(steps_per_epoch, "steps_per_epoch")
    given = [(n, v) for n, v in (("target_a", target_a), ("target_timescales", target_timescales),
                                 ("reference_weight_decay", reference_weight_decay)) if v is not None]
    if len(given) > 1:
        raise MirrorflowError(f"give one target, not {' and '.join(n for n, _ in given)}")
    lr = peak * np.array([_lr_factor(lr_schedule, k, T, W, r) for k in range(T)], dtype=np.float64)
    a = np.concatenate([[0.0], np.cumsum(lr * lam)])
    target = source = switch = None
    if given:
        name, value = given[0]
        v = _pos_float(value, name)
        if name == "reference_weight_decay":
            target, source = v * float(np.sum(lr)), f"constant λ_ref = {v:g}"
        else:
            target, source = v, ("target a" if name == "target_a" else f"{v:g} timescales")
        if target > a[-1] * (1 + 1e-12):
            raise MirrorflowError(
                f"target a = {target:.6g} is more than constant decay λ = {lam:g} reaches in "
                f"{T} steps (a = {a[-1]:.6g}); raise weight_decay or the number of steps, or "
                "lower the target")
        switch = int(np.searchsorted(a, target * (1 - 1e-12), side="left"))
    return Plan(lr_schedule, peak, T, W, r, lam, spe, lr, a, target, source, switch)
