"""Lightning integration: a weight-decay schedule as a ``lightning.pytorch.Callback``.

    from mirrorflow.schedules import training
    from mirrorflow.schedules.integrations.lightning import WeightDecayCallback

    trainer = L.Trainer(max_steps=1000, callbacks=[WeightDecayCallback(training.switch_off(0.3))])

At ``on_train_start`` every optimizer of the trainer is wrapped in a
:class:`~mirrorflow.schedules.WeightDecayScheduler` (total steps: ``trainer.estimated_stepping_batches``
unless given). Only groups with nonzero decay are touched. The scheduler state lives in the
optimizer's param groups, so Lightning checkpoints carry it and ``fit(ckpt_path=...)`` continues
the schedule exactly. After each training batch the callback logs ``weight_decay`` (the decay used
at the last step) and ``integrated_wd`` (``a = Σ η_k λ_k``, docs/theory.md §1) through
``pl_module.log`` (suffixed ``_1``, ``_2``, ... for further optimizers).
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Callback

from mirrorflow.schedules.scheduler import WeightDecayScheduler
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

    def on_train_start(self, trainer, pl_module) -> None:
        for s in self.schedulers:
            s.remove()
        total = self.total_steps
        if total is None:
            est = trainer.estimated_stepping_batches
            total = int(est) if est is not None and math.isfinite(est) and est > 0 else None
        self.schedulers = [WeightDecayScheduler(opt, self.schedule, total_steps=total)
                           for opt in trainer.optimizers]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.log:
            return
        for i, s in enumerate(self.schedulers):
            suffix = "" if i == 0 else f"_{i}"
            used = s.last_step_lr_wd
            wd = used[1] if used is not None else s.last_wd[s.reference_group]
            pl_module.log(f"weight_decay{suffix}", wd, on_step=True, on_epoch=False)
            pl_module.log(f"integrated_wd{suffix}", s.integrated, on_step=True, on_epoch=False)

    def on_train_end(self, trainer, pl_module) -> None:
        for s in self.schedulers:
            s.remove()

    @property
    def scheduler(self) -> WeightDecayScheduler | None:
        """The scheduler of the first optimizer (``None`` before training starts)."""
        return self.schedulers[0] if self.schedulers else None
