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
``pl_module.log`` (suffixed ``_1``, ``_2``, ... for further optimizers). One
``WeightDecayCallback`` per trainer: a second is refused when training starts.
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Callback

from mirrorflow._core.validation import MirrorflowError
from mirrorflow.schedules.scheduler import WeightDecayScheduler, has_scheduler_state
from mirrorflow.schedules.training import as_schedule

__all__ = ["WeightDecayCallback"]


class WeightDecayCallback(Callback):
    """Schedule the weight decay of a Lightning run and log ``weight_decay`` / ``integrated_wd``."""

    def __init__(self, schedule: Any, total_steps: int | None = None, log: bool = True):
        self.schedule = as_schedule(schedule)
        if total_steps is not None:
            self.schedule = self.schedule.bind(total_steps)  # fail early on bad input
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
        total = self.total_steps
        if total is None:
            est = trainer.estimated_stepping_batches
            total = int(est) if est is not None and math.isfinite(est) and est > 0 else None
        self.schedulers = []
        for opt in trainer.optimizers:
            # a checkpoint written without mirrorflow: start at the trainer's global step
            start = None if has_scheduler_state(opt) else int(trainer.global_step)
            self.schedulers.append(WeightDecayScheduler(opt, self.schedule, total_steps=total,
                                                        start_step=start))

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
