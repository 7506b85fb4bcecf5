"""Lightning integration: a weight-decay schedule as a ``lightning.pytorch.Callback``.

    from mirrorflow.schedules import training
    from mirrorflow.schedules.integrations.lightning import WeightDecayCallback

    trainer = L.Trainer(max_steps=1000, callbacks=[WeightDecayCallback(training.switch_off(0.3))])

At ``on_train_start`` every optimizer of the trainer is wrapped in a
:class:`~mirrorflow.schedules.WeightDecayScheduler` (total steps: ``trainer.estimated_stepping_batches``
unless given). Only groups with nonzero decay are touched. The scheduler state lives in the
optimizer's param groups, so Lightning checkpoints carry it and ``fit(ckpt_path=...)`` continues
the schedule exactly. A checkpoint written *without* mirrorflow starts the schedule at
``trainer.global_step``; the decay applied before is unknown, so ``integrated_wd`` is then a lower
bound (a :class:`~mirrorflow.schedules.scheduler.MirrorflowWarning` says so, and
``integrated_wd_counted_from`` is logged). After each training
batch the callback logs, for the last optimizer step taken, ``weight_decay`` and ``wd_factor`` it
used and ``integrated_wd`` (``a = Σ η_k λ_k``, docs/theory.md §1) right after it, through
``pl_module.log`` (suffixed ``_1``, ``_2``, ... for further optimizers), and with several param
groups ``integrated_wd/<group name>`` per group. One
``WeightDecayCallback`` per trainer: a second is refused when training starts.

Several optimizers (manual optimization, e.g. a GAN's generator and discriminator): Lightning's
``global_step`` and ``max_steps`` count the steps of *all* optimizers together, so each
optimizer's own length is not known from the trainer. Each optimizer's schedule counts its own
steps; ``total_steps`` is then each optimizer's own number of steps (one int for all, or one per
optimizer), and a schedule that needs the length (``switch_off(at=0.5)``, ``cosine()``, ...)
without ``total_steps`` is refused with one line naming the fix instead of switching at a step
that never comes. Resuming such a run from a checkpoint without mirrorflow state starts each
schedule at its optimizer's own step count (``state["step"]``), or is refused where the
optimizer keeps none.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Callback

from mirrorflow._core.validation import MirrorflowError
from mirrorflow.schedules.scheduler import (
    WeightDecayScheduler,
    _optimizer_state_steps,
    has_scheduler_state,
    unwrap_optimizer,
)
from mirrorflow.schedules.training import as_schedule

__all__ = ["WeightDecayCallback"]


class WeightDecayCallback(Callback):
    """Schedule the weight decay of a Lightning run and log ``weight_decay`` / ``integrated_wd``."""

    def __init__(self, schedule: Any, total_steps: int | Sequence[int] | None = None,
                 log: bool = True):
        self.schedule = as_schedule(schedule)
        if isinstance(total_steps, Sequence) and not isinstance(total_steps, str):
            total_steps = list(total_steps)
            if not total_steps:
                raise MirrorflowError("total_steps=[] is empty; give one step count per optimizer")
            for t in total_steps:
                self.schedule.bind(t)  # fail early on bad input
        elif total_steps is not None:
            self.schedule.bind(total_steps)  # fail early on bad input
        self.total_steps = total_steps
        self.log = bool(log)
        self.schedulers: list[WeightDecayScheduler] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        others = [c for c in trainer.callbacks if isinstance(c, WeightDecayCallback) and c is not self]
        if others:
            raise MirrorflowError(
                f"the trainer has {len(others) + 1} WeightDecayCallbacks; one per trainer (two "
                "would both schedule the same optimizer): keep one in callbacks=[...]"
            )

    def on_train_start(self, trainer, pl_module) -> None:
        for s in self.schedulers:
            s.remove()
        opts = list(trainer.optimizers)
        totals, starts = self._lengths(trainer, opts), self._starts(trainer, opts)
        self.schedulers = []
        for opt, total, start in zip(opts, totals, starts):
            self.schedulers.append(WeightDecayScheduler(opt, self.schedule, total_steps=total,
                                                        start_step=start))

    def _lengths(self, trainer, opts) -> list[int | None]:
        """Each optimizer's own training length (checked before any scheduler is built)."""
        n, total = len(opts), self.total_steps
        if isinstance(total, list):
            if len(total) != n:
                raise MirrorflowError(f"total_steps has {len(total)} values but the trainer has "
                                      f"{n} optimizers; give one step count per optimizer")
            return list(total)
        if total is not None:
            return [total] * n
        est = trainer.estimated_stepping_batches
        est = int(est) if est is not None and math.isfinite(est) and est > 0 else None
        if n == 1:
            return [est]
        try:  # several optimizers: the trainer's count is their sum, not anyone's length
            self.schedule.bind(None)
        except MirrorflowError:
            each = f"{est // n}" if est is not None and est % n == 0 else "N"
            raise MirrorflowError(
                f"{self.schedule.describe()} needs each optimizer's training length, but with {n} "
                f"optimizers Lightning's max_steps/global_step ({est}) counts all their steps "
                f"together; pass WeightDecayCallback(..., total_steps=[{', '.join([each] * n)}]) "
                "with the number of steps each optimizer takes"
            ) from None
        return [None] * n

    @staticmethod
    def _starts(trainer, opts) -> list[int | None]:
        """Where each schedule starts when the optimizer carries no mirrorflow state."""
        gs = int(trainer.global_step)
        out = []
        for i, opt in enumerate(opts):
            if has_scheduler_state(opt):
                out.append(None)
            elif len(opts) == 1 or gs == 0:
                out.append(gs)  # a checkpoint written without mirrorflow: the trainer's step
            else:
                own = _optimizer_state_steps(unwrap_optimizer(opt))
                if own is None:
                    raise MirrorflowError(
                        f"resuming {len(opts)} optimizers from a checkpoint without mirrorflow "
                        f"state: global_step={gs} counts all their steps and optimizer {i} "
                        f"({type(unwrap_optimizer(opt)).__name__}) keeps no step count; resume "
                        "from a checkpoint written with the WeightDecayCallback, or start fresh"
                    )
                out.append(own)
        return out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.log:
            return
        for i, s in enumerate(self.schedulers):
            last = s.last_step
            if last is None:  # no optimizer step yet (gradient accumulation)
                continue
            suffix = "" if i == 0 else f"_{i}"
            pl_module.log(f"weight_decay{suffix}", last.weight_decay, on_step=True, on_epoch=False)
            pl_module.log(f"wd_factor{suffix}", last.factor, on_step=True, on_epoch=False)
            pl_module.log(f"integrated_wd{suffix}", last.integrated, on_step=True, on_epoch=False)
            if len(s.optimizer.param_groups) > 1:
                for name, a in s.integrated_by_group.items():
                    pl_module.log(f"integrated_wd{suffix}/{name}", a, on_step=True, on_epoch=False)
            if s.integrated_is_lower_bound:
                pl_module.log(f"integrated_wd_counted_from{suffix}", float(s.counted_from),
                              on_step=True, on_epoch=False)

    def on_train_end(self, trainer, pl_module) -> None:
        for s in self.schedulers:
            s.remove()

    @property
    def scheduler(self) -> WeightDecayScheduler | None:
        """The scheduler of the first optimizer (``None`` before training starts)."""
        return self.schedulers[0] if self.schedulers else None
