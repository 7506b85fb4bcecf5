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
continues the schedule (step count, integrated decay, base decay) exactly.

Logging: at each log event the callback adds ``weight_decay`` (the decay used at the last step),
``wd_factor`` and ``integrated_wd`` (``a = Σ η_k λ_k``, docs/theory.md §1) — plus, every
``diagnostics_every`` steps, the means of the factor-pair diagnostics (``diag/...``) — to the
logs and to ``state.log_history``. Reporting callbacks (TensorBoard, MLflow, W&B) see them if they
run after this callback: :meth:`WeightDecayCallback.attach` inserts it at the front of the
trainer's callback list; ``Trainer(callbacks=[cb])`` appends it after the reporters, so then only
``log_history`` and later callbacks get the values.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from mirrorflow._core.validation import MirrorflowError, check_choice
from mirrorflow.schedules.diagnostics import attention_pairs, diagnose, lora_pairs, summarize
from mirrorflow.schedules.scheduler import WeightDecayScheduler
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

    def attach(self, trainer) -> WeightDecayCallback:
        """Insert this callback first in ``trainer``'s callback list (before the reporters)."""
        trainer.callback_handler.callbacks.insert(0, self)
        return self

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if optimizer is None:
            raise MirrorflowError("the Trainer passed no optimizer to the callback")
        if self.scheduler is not None:
            self.scheduler.remove()
        total = self.total_steps if self.total_steps is not None else (state.max_steps or None)
        self.scheduler = WeightDecayScheduler(optimizer, self.schedule, total_steps=total)
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
        """``weight_decay`` (used at the last step), ``wd_factor``, ``integrated_wd``."""
        s = self.scheduler
        if s is None:
            return {}
        used = s.last_step_lr_wd
        return {
            "weight_decay": used[1] if used is not None else s.last_wd[s.reference_group],
            "wd_factor": s.last_factor,
            "integrated_wd": s.integrated,
        }

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
