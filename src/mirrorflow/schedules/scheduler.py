"""``WeightDecayScheduler``: a weight-decay schedule for any ``torch.optim.Optimizer``.

Mirrors ``torch.optim.lr_scheduler`` (``step()``, ``state_dict()``, ``load_state_dict()``) and
tracks the integrated decay of docs/theory.md §1,

    a = Σ_k η_k λ_k,

summed over the optimizer steps actually taken, with ``η_k`` and ``λ_k`` read from the param group
at the moment of the step. See docs/training.md for what ``a`` means for SGD (coupled L2), Adam
(coupled) and AdamW (decoupled).

How it works
------------
The scheduler registers a step pre-hook and a step post-hook on the optimizer. Right before each
``optimizer.step()`` it sets ``group["weight_decay"] = factor_k · base`` for every group with a
nonzero base decay (groups without decay are never touched), with ``factor_k`` from the schedule,
evaluated with the learning rate the step is about to use; right after the step it adds
``η_k λ_k`` to the group's integrated decay. So the order of ``lr_scheduler.step()`` and
``wd_scheduler.step()`` does not matter, steps skipped by a ``GradScaler`` (which never call
``optimizer.step``) add nothing, and ``step()`` itself only refreshes the value shown in the param
group for the coming step (calling it is optional and harmless).

The scheduler's state (base decay, integrated decay, step count) is stored in each param group
under the ``mf_*`` keys, so it travels with ``optimizer.state_dict()``: restoring an optimizer
checkpoint (plain torch, Hugging Face Trainer, Lightning) and building a new scheduler on it
continues the schedule exactly. ``state_dict()`` / ``load_state_dict()`` give the same state
explicitly.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mirrorflow._core.validation import MirrorflowError
from mirrorflow.schedules.training import TrainingSchedule, as_schedule

__all__ = ["WeightDecayScheduler", "decay_coupling", "unwrap_optimizer"]

_BASE = "mf_base_weight_decay"
_INT = "mf_integrated_wd"
_STEP = "mf_wd_step"


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The innermost ``torch.optim.Optimizer`` (unwraps accelerate / Lightning wrappers)."""
    opt = optimizer
    for _ in range(8):
        inner = getattr(opt, "optimizer", None)
        if inner is None or inner is opt:
            break
        opt = inner
    if not isinstance(opt, torch.optim.Optimizer):
        raise MirrorflowError(
            f"WeightDecayScheduler needs a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    return opt


def decay_coupling(optimizer: Any) -> str:
    """``"decoupled"`` (AdamW-style ``w ← w − η λ w``) or ``"coupled"`` (``λ w`` added to the gradient).

    Decoupled: ``torch.optim.AdamW``, or ``Adam``/``NAdam``/``RAdam`` with
    ``decoupled_weight_decay=True``. Everything else is treated as coupled L2.
    """
    opt = unwrap_optimizer(optimizer)
    if isinstance(opt, torch.optim.AdamW):
        return "decoupled"
    if any(g.get("decoupled_weight_decay", False) for g in opt.param_groups):
        return "decoupled"
    return "coupled"


def _lr(group) -> float:
    lr = group["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)


class WeightDecayScheduler:
    """Schedule each param group's weight decay as ``factor_k × base decay`` and track ``a``.

    Parameters
    ----------
    optimizer:
        a ``torch.optim.Optimizer`` (wrappers exposing ``.optimizer`` are unwrapped). Its groups'
        current ``weight_decay`` values are the base decays, unless the groups already carry a
        scheduler state (a restored checkpoint), which then continues.
    schedule:
        a :class:`~mirrorflow.schedules.training.TrainingSchedule` or any callable
        ``step -> factor`` (factor >= 0).
    total_steps:
        training length in optimizer steps; needed by schedules given as fractions of training
        (``switch_off(at=0.5)``, ``linear()``, ``cosine()``) and used to reject ``at`` beyond it.

    The *reference group* (for :attr:`integrated` and :func:`budget`) is the first group with a
    nonzero base decay.
    """

    def __init__(self, optimizer: Any, schedule: TrainingSchedule | Any,
                 total_steps: int | None = None):
        self.optimizer = unwrap_optimizer(optimizer)
        self.schedule = as_schedule(schedule).bind(total_steps)
        self.total_steps = total_steps
        groups = self.optimizer.param_groups
        for i, g in enumerate(groups):
            if "weight_decay" not in g:
                raise MirrorflowError(
                    f"param group {i} of {type(self.optimizer).__name__} has no 'weight_decay'; "
                    "use an optimizer with a weight_decay option (SGD, Adam, AdamW, ...)"
                )
            if _BASE not in g:
                wd = float(g["weight_decay"])
                if not math.isfinite(wd) or wd < 0:
                    raise MirrorflowError(
                        f"param group {i} has weight_decay={wd!r}; decay must be finite and >= 0"
                    )
                g[_BASE] = wd
                g[_INT] = 0.0
                g[_STEP] = 0
        self._index_groups()
        if self._ref is None:
            raise MirrorflowError(
                "no param group has a nonzero weight_decay, so there is nothing to schedule; "
                "set weight_decay > 0 on the optimizer (or on its decay group)"
            )
        self._pending: list[float] | None = None
        self.last_factor = 0.0
        #: ``(lr, weight_decay)`` of the reference group at the last optimizer step taken.
        self.last_step_lr_wd: tuple[float, float] | None = None
        self._handles = [
            self.optimizer.register_step_pre_hook(self._before_step),
            self.optimizer.register_step_post_hook(self._after_step),
        ]
        self._apply()

    # -- state ------------------------------------------------------------------------------
    @property
    def steps_taken(self) -> int:
        """Optimizer steps taken under this schedule (the index of the next step)."""
        return int(self.optimizer.param_groups[self._ref][_STEP])

    @property
    def reference_group(self) -> int:
        """Index of the first group with nonzero base decay (used by :attr:`integrated`)."""
        return self._ref

    @property
    def base_decays(self) -> list[float]:
        return [float(g[_BASE]) for g in self.optimizer.param_groups]

    @property
    def integrated(self) -> float:
        """Integrated decay ``a = Σ η_k λ_k`` of the reference group so far (theory §1)."""
        return float(self.optimizer.param_groups[self._ref][_INT])

    @property
    def integrated_per_group(self) -> list[float]:
        return [float(g[_INT]) for g in self.optimizer.param_groups]

    @property
    def last_wd(self) -> list[float]:
        """Current ``weight_decay`` of every group (what the next step will use)."""
        return [float(g["weight_decay"]) for g in self.optimizer.param_groups]

    @property
    def coupling(self) -> str:
        return decay_coupling(self.optimizer)

    def get_last_wd(self) -> list[float]:
        return self.last_wd

    # -- mechanics --------------------------------------------------------------------------
    def _apply(self) -> None:
        if self.optimizer.param_groups[self._ref] is not self._ref_group:
            self._index_groups()  # optimizer.load_state_dict() replaced the group dicts
        ref = self._ref_group
        base = ref[_BASE]
        f = self.schedule.factor(ref[_STEP], ref[_INT], _lr(ref) * base)
        if not (f >= 0.0 and f < math.inf):
            raise MirrorflowError(f"schedule returned decay factor {f!r} at step "
                                  f"{self.steps_taken}; factors must be finite and >= 0")
        self.last_factor = f
        for g in self._decay_groups:
            g["weight_decay"] = f * g[_BASE]

    def _before_step(self, optimizer, args, kwargs) -> None:
        self._apply()
        self._pending = [_lr(g) * g["weight_decay"] for g in self._decay_groups]
        self.last_step_lr_wd = (_lr(self._ref_group), float(self._ref_group["weight_decay"]))

    def _after_step(self, optimizer, args, kwargs) -> None:
        pending = self._pending or [0.0] * len(self._decay_groups)
        for g, inc in zip(self._decay_groups, pending):
            g[_INT] = g[_INT] + inc
        for g in self.optimizer.param_groups:
            g[_STEP] = g[_STEP] + 1
        self._pending = None
        self._apply()

    def _index_groups(self) -> None:
        groups = self.optimizer.param_groups
        self._ref = next((i for i, g in enumerate(groups) if g[_BASE] > 0), None)
        self._decay_groups = [g for g in groups if g[_BASE] > 0]
        self._ref_group = groups[self._ref] if self._ref is not None else None

    def step(self) -> None:
        """Refresh the decay shown in the param groups for the coming step (optional).

        The decay is applied and ``a`` accumulated automatically at each ``optimizer.step()``.
        """
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps_taken": self.steps_taken,
            "base_weight_decay": self.base_decays,
            "integrated_wd": self.integrated_per_group,
            "schedule": self.schedule.describe(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        groups = self.optimizer.param_groups
        try:
            base, integ, step = state["base_weight_decay"], state["integrated_wd"], state["steps_taken"]
        except (KeyError, TypeError):
            raise MirrorflowError("not a WeightDecayScheduler state_dict (missing keys); pass the "
                                  "dict returned by WeightDecayScheduler.state_dict()") from None
        if len(base) != len(groups) or len(integ) != len(groups):
            raise MirrorflowError(f"state_dict has {len(base)} param groups, the optimizer has "
                                  f"{len(groups)}; load it into the same optimizer layout")
        for g, b, a in zip(groups, base, integ):
            g[_BASE], g[_INT], g[_STEP] = float(b), float(a), int(step)
        self._index_groups()
        if self._ref is None:
            raise MirrorflowError("state_dict has no group with nonzero base decay")
        self._apply()

    def remove(self) -> None:
        """Detach the hooks (the param groups keep their current decay and the state keys)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __repr__(self) -> str:
        return (f"WeightDecayScheduler({self.schedule.describe()}, step={self.steps_taken}, "
                f"a={self.integrated:.6g})")
