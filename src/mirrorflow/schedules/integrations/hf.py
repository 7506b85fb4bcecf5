"""Hugging Face ``Trainer`` integration: a weight-decay schedule as a ``TrainerCallback``.

    from mirrorflow.schedules import training
    from mirrorflow.schedules.integrations.hf import WeightDecayCallback

    cb = WeightDecayCallback(training.budget(0.05), diagnostics_every=50)
    trainer = Trainer(model, args, train_dataset=ds)   # args.weight_decay > 0
    cb.attach(trainer)          # or Trainer(..., callbacks=[cb]); see "Logging" below
    trainer.train()

At ``on_train_begin`` the callback wraps the trainer's optimizer in a
:class:`~mirrorflow.schedules.WeightDecayScheduler` (total steps: ``state.max_steps`` unless given).
Only param groups with a nonzero decay are touched — the Trainer's no-decay group (biases,
LayerNorm) stays at zero. The scheduler state lives in the optimizer's param groups, so it is
saved in every checkpoint's ``optimizer.pt`` and ``trainer.train(resume_from_checkpoint=...)``
continues the schedule (step count, integrated decay, base decay) exactly. Resuming from a
checkpoint written *without* mirrorflow starts the schedule at the Trainer's ``global_step``
(``start_step``); the decay applied before is unknown, so ``integrated_wd`` is then a lower bound
(a :class:`~mirrorflow.schedules.scheduler.MirrorflowWarning` says so, and every log row carries
``integrated_wd_counted_from``).

Logging: at each log event the callback adds, for the **last optimizer step taken** (the one
that brought ``global_step`` to the row's ``step``): ``weight_decay`` and ``wd_factor`` that step
used, and ``integrated_wd`` (``a = Σ η_k λ_k``, docs/theory.md §1) right after it, with
``integrated_wd/<group name>`` per param group when there are several — plus, every
``diagnostics_every`` steps, the means of the factor-pair diagnostics (``diag/...``, over the pairs
where they are defined) — to the logs and to ``state.log_history``. Reporting callbacks
(TensorBoard, MLflow, W&B) see them if they run after this callback:
:meth:`WeightDecayCallback.attach` inserts it at the front of the trainer's callback list;
``Trainer(callbacks=[cb])`` appends it after the reporters, so then only ``log_history`` and later
callbacks get the values.
"""

from __future__ import annotations

import warnings
from typing import Any

from transformers import TrainerCallback

from mirrorflow._core.validation import MirrorflowError, check_choice
from mirrorflow.schedules.diagnostics import attention_pairs, diagnose, lora_pairs, summarize
from mirrorflow.schedules.scheduler import (
    MirrorflowWarning,
    WeightDecayScheduler,
    has_scheduler_state,
)
from mirrorflow.schedules.training import as_schedule

__all__ = ["WeightDecayCallback"]

_PAIRS = ("auto", "lora", "attention")


class WeightDecayCallback(TrainerCallback):
    """Schedule the Trainer's weight decay and log ``weight_decay`` / ``integrated_wd``.

    Parameters
    ----------
    schedule:
        a :mod:`mirrorflow.schedules.training` schedule or a callable ``step -> factor``.
    total_steps:
        training length for fractional schedules (default: the Trainer's ``max_steps``).
    diagnostics_every:
        compute factor-pair diagnostics every N optimizer steps (0: never).
    pairs:
        ``"lora"`` (PEFT LoRA pairs), ``"attention"`` (W_Q, W_K per head) or ``"auto"`` (LoRA if the
        model has any, else attention).
    """

    def __init__(self, schedule: Any, total_steps: int | None = None, diagnostics_every: int = 0,
                 pairs: str = "auto"):
        self.schedule = as_schedule(schedule)
        if total_steps is not None:
            self.schedule = self.schedule.bind(total_steps)  # fail early on bad input
        self.total_steps = total_steps
        if isinstance(diagnostics_every, bool) or not isinstance(diagnostics_every, int) \
                or diagnostics_every < 0:
            raise MirrorflowError(f"diagnostics_every must be an int >= 0, got {diagnostics_every!r}")
        self.diagnostics_every = diagnostics_every
        self.pairs = check_choice("pairs", pairs, _PAIRS)
        self.scheduler: WeightDecayScheduler | None = None
        self._pairs: list = []
        self._diag: dict[str, float] = {}

    def attach(self, trainer, replace: bool = False) -> WeightDecayCallback:
        """Insert this callback first in ``trainer``'s callback list (before the reporters).

        Attaching the same callback again does nothing. Another ``WeightDecayCallback`` already on
        the trainer is refused (two would both schedule the one optimizer), unless
        ``replace=True``, which removes it.
        """
        cbs = trainer.callback_handler.callbacks
        others = [c for c in cbs if isinstance(c, WeightDecayCallback) and c is not self]
        if others and not replace:
            raise MirrorflowError(
                f"this trainer already has a WeightDecayCallback ({others[0].schedule.describe()}); "
                "one per trainer: trainer.remove_callback(old) first, or attach(trainer, "
                "replace=True) to replace it"
            )
        for c in others:
            cbs.remove(c)
            if c.scheduler is not None:
                c.scheduler.remove()
        if self in cbs:
            cbs.remove(self)
        cbs.insert(0, self)
        return self

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if optimizer is None:
            raise MirrorflowError("the Trainer passed no optimizer to the callback")
        if self.scheduler is not None:
            self.scheduler.remove()
        total = self.total_steps if self.total_steps is not None else (state.max_steps or None)
        # resuming a checkpoint written without mirrorflow: start at the Trainer's global step
        start = None if has_scheduler_state(optimizer) else int(state.global_step or 0)
        self.scheduler = WeightDecayScheduler(optimizer, self.schedule, total_steps=total,
                                              start_step=start)
        if start is None and self.scheduler.steps_taken > (state.global_step or 0):
            warnings.warn(
                f"the optimizer's weight-decay schedule is at step {self.scheduler.steps_taken} "
                f"but the Trainer starts at global_step {state.global_step} (train() called again "
                "on the same Trainer?): the schedule continues from its step; to restart it, call "
                "mirrorflow.schedules.scheduler.clear_scheduler_state(trainer.optimizer) first",
                MirrorflowWarning, stacklevel=2)
        self._pairs = []
        if self.diagnostics_every and model is not None:
            lora = lora_pairs(model) if self.pairs in ("auto", "lora") else []
            self._pairs = lora if (lora or self.pairs == "lora") else attention_pairs(model)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self._pairs and self.diagnostics_every and state.global_step % self.diagnostics_every == 0:
            self._diag = summarize(diagnose(self._pairs))
        return control

    def values(self) -> dict[str, float]:
        """The last optimizer step taken: ``weight_decay`` and ``wd_factor`` it used,
        ``integrated_wd`` right after it (and ``integrated_wd_counted_from`` when ``a`` is a lower
        bound). Empty before the first step."""
        s = self.scheduler
        if s is None or s.last_step is None:
            return {}
        last = s.last_step
        out = {"weight_decay": last.weight_decay, "wd_factor": last.factor,
               "integrated_wd": last.integrated}
        if len(s.optimizer.param_groups) > 1:
            for name, a in s.integrated_by_group.items():
                out[f"integrated_wd/{name}"] = a
        if s.integrated_is_lower_bound:
            out["integrated_wd_counted_from"] = float(s.counted_from)
        return out

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.scheduler is None or logs is None or "loss" not in logs:
            return control
        extra = {**self.values(), **self._diag}
        self._diag = {}
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.scheduler is not None:
            self.scheduler.remove()
        return control
