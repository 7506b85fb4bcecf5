"""``WeightDecayScheduler``: a weight-decay schedule for any ``torch.optim.Optimizer``.

Mirrors ``torch.optim.lr_scheduler`` (``step()``, ``state_dict()``, ``load_state_dict()``, a way
to start at step N) and tracks the integrated decay of docs/theory.md §1,

    a = Σ_k η_k λ_k,

summed over the optimizer steps actually taken, with ``η_k`` and ``λ_k`` read from the param group
at the moment of the step. What ``a`` means depends on the optimizer: :func:`decay_semantics`
(docs/training.md, "What `a` is").

How it works
------------
The scheduler registers a step pre-hook and a step post-hook on the optimizer. Right before each
``optimizer.step()`` it sets ``group["weight_decay"] = factor_k · base`` for every group with a
nonzero base decay (groups without decay are never touched), with ``factor_k`` from the schedule,
evaluated with the learning rate the step is about to use; right after the step it adds
``η_k λ_k`` to the group's integrated decay. So the order of ``lr_scheduler.step()`` and
``wd_scheduler.step()`` does not matter, and ``step()`` itself only refreshes the value shown in
the param group for the coming step (calling it is optional and harmless).

Steps skipped by a ``GradScaler`` (inf/NaN gradients) add nothing and are not counted: for most
optimizers the scaler does not call ``optimizer.step()`` then; for optimizers that handle the
scaling themselves (``fused=True`` Adam, AdamW, SGD, Adagrad) it does call it, with
``optimizer.found_inf`` set, and the kernel skips the update internally — the pre-hook reads
``found_inf`` and leaves ``a``, the step count and the schedule untouched for that call.

The state (base decay, integrated decay, step count, the step from which ``a`` is counted, the
schedule's name) is stored in each param group under the ``mf_*`` keys (read and written
through :class:`~mirrorflow.schedules.group_state.GroupState`), so it travels with
``optimizer.state_dict()``: restoring an optimizer checkpoint (plain torch, Hugging Face Trainer,
Lightning) and building a new scheduler on it continues the schedule exactly.

Never silently wrong (docs/training.md, "Common pitfalls"):

* one scheduler per optimizer: a second refuses, or takes over with ``replace=True``;
* ``start_step=N`` starts the schedule at step N on an optimizer without mirrorflow state (a
  checkpoint written without it); ``a`` then counts only steps ``≥ N`` — a lower bound — and a
  warning says so, unless ``integrated=`` gives the decay applied before;
* param groups added later (``add_param_group``) are adopted with their own base decay; groups
  replaced by ``optimizer.load_state_dict()`` are adopted (a mirrorflow checkpoint continues
  exactly, a plain one keeps this scheduler's state, with a warning);
* a ``weight_decay`` written by anything else (user code, another scheduler) is refused with one
  line before the step (``on_external="error"``, default) or adopted as the group's new base
  decay (``on_external="adopt"``, with a warning); :meth:`WeightDecayScheduler.set_base_decay`
  is the sanctioned way to change it;
* :meth:`~WeightDecayScheduler.load_state_dict` checks everything, including that the state was
  written by the same schedule, before it changes anything.
"""

from __future__ import annotations

import math
import operator
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mirrorflow._core.validation import MirrorflowError, check_choice
from mirrorflow.schedules.group_state import (
    BASE,
    COUNTED_FROM,
    INTEGRATED,
    SCHEDULE,
    STEP,
    GroupState,
)
from mirrorflow.schedules.training import TrainingSchedule, as_schedule

__all__ = [
    "DecaySemantics",
    "MirrorflowWarning",
    "StepRecord",
    "WeightDecayScheduler",
    "clear_scheduler_state",
    "decay_coupling",
    "decay_semantics",
    "has_scheduler_state",
    "unwrap_optimizer",
]

_BASE = BASE  # the mf_* key names, kept here for code that imported them
_INT, _STEP, _FROM, _SCHED = INTEGRATED, STEP, COUNTED_FROM, SCHEDULE
_OWNER = "_mirrorflow_wd_scheduler"
_STATE_VERSION = 2


class MirrorflowWarning(UserWarning):
    """Something mirrorflow did that changes what a number means (e.g. ``a`` is a lower bound)."""


def _warn(msg: str) -> None:
    warnings.warn(msg, MirrorflowWarning, stacklevel=3)


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


def has_scheduler_state(optimizer: Any) -> bool:
    """Whether the optimizer's param groups carry mirrorflow scheduler state (``mf_*`` keys)."""
    return any(GroupState.carried(g) for g in unwrap_optimizer(optimizer).param_groups)


def clear_scheduler_state(optimizer: Any) -> None:
    """Remove the ``mf_*`` scheduler state from the param groups, so that the next scheduler
    starts the schedule afresh (at step 0, ``a = 0``) with the groups' current ``weight_decay`` as
    base decays. Refused while a live scheduler is attached (``remove()`` it first)."""
    opt = unwrap_optimizer(optimizer)
    owner = WeightDecayScheduler.active(opt)
    if owner is not None:
        raise MirrorflowError(f"{owner!r} is attached to this optimizer; call .remove() on it "
                              "before clearing its state")
    for g in opt.param_groups:
        GroupState(g).clear()


# -------------------------------------------------------------------------- decay semantics

def _is_adafactor(opt: torch.optim.Optimizer) -> bool:
    """Hugging Face ``Adafactor`` (relative step sizes; ``torch.optim.Adafactor`` is not it)."""
    g = opt.param_groups[0] if opt.param_groups else {}
    if isinstance(opt, getattr(torch.optim, "Adafactor", ())):
        return False
    return type(opt).__name__ == "Adafactor" or ("relative_step" in g and "scale_parameter" in g)


def _decoupled_types() -> tuple:
    """Optimizers whose decay is ``p ← p(1 − lr·λ)`` apart from the update."""
    names = ("AdamW", "Muon", "Adafactor")  # torch.optim.Adafactor: param.mul_(1 - lr * wd)
    return tuple(getattr(torch.optim, n) for n in names if hasattr(torch.optim, n))


def decay_coupling(optimizer: Any) -> str:
    """``"decoupled"`` (``w ← w − η λ w`` apart from the gradient step), ``"coupled"`` (``λ w``
    added to the gradient, i.e. L2) or ``"none"`` (the optimizer has no ``weight_decay``).

    Decoupled: ``torch.optim.AdamW``, ``Muon`` and ``Adafactor``; ``Adam``/``NAdam``/``RAdam``
    with ``decoupled_weight_decay=True``; Hugging Face ``Adafactor`` (its code applies
    ``p ← p − λ·lr·p`` before and apart from the update; ``lr`` is its own relative step size
    when ``lr=None``). Everything else with a ``weight_decay`` is treated as coupled L2. Checked
    against the optimizers' updates in ``tests/test_decay_semantics.py`` and
    ``tests/test_decay_semantics_all.py``.
    """
    opt = unwrap_optimizer(optimizer)
    if isinstance(opt, _decoupled_types()) or _is_adafactor(opt):
        return "decoupled"
    if any(g.get("decoupled_weight_decay", False) for g in opt.param_groups):
        return "decoupled"
    if opt.param_groups and not any("weight_decay" in g for g in opt.param_groups):
        return "none"
    return "coupled"


@dataclass(frozen=True)
class DecaySemantics:
    """What the integrated decay ``a = Σ η_k λ_k`` means for an optimizer (docs/training.md).

    ``kind``: ``sgd``, ``sgd-momentum``, ``asgd``, ``decoupled``, ``adafactor``, ``adam-coupled``
    (Adam, Adamax), ``nadam``, ``radam``, ``adagrad``, ``rmsprop``, ``adadelta``, ``none`` (no
    ``weight_decay`` option: Rprop, LBFGS, SparseAdam) or ``coupled-other``; ``shrinkage``: what
    the decay does to a weight (for the coupled adaptive optimizers: how far a weight with no data
    gradient moves per step, a closed form measured in ``tests/test_decay_semantics_all.py``);
    ``balancedness``: whether ``‖UᵀU − VᵀV‖`` of a factorization follows ``e^{−2a}`` (theory §6);
    ``a``: how to read ``a``.
    """

    kind: str
    coupling: str
    shrinkage: str
    balancedness: str
    a: str


_ADAPTIVE = "does not follow e^{−2a}"
_NOMINAL = "nominal: comparable between runs of the same optimizer settings only"
_COUPLED = ("λw enters the gradient before the adaptive rescaling; with no data gradient a weight "
            "moves towards 0 (not a multiplicative shrink) by ")


def decay_semantics(optimizer: Any) -> DecaySemantics:
    """What holds for this optimizer's decay (docs/training.md, "What `a` is")."""
    opt = unwrap_optimizer(optimizer)
    coupling = decay_coupling(opt)
    optim = torch.optim
    if coupling == "none":
        return DecaySemantics(
            "none", coupling,
            f"{type(opt).__name__} has no weight_decay option: nothing to schedule (the "
            "scheduler refuses it)", "unknown", "not defined")
    if _is_adafactor(opt):
        scaled = any(g.get("scale_parameter", False) for g in opt.param_groups)
        return DecaySemantics(
            "adafactor", coupling,
            "p ← (1 − λ·lr_p) p per step, apart from the update (decoupled); lr_p is the "
            "relative step size min(1e-2, 1/√k) when lr=None"
            + (", times the parameter's RMS (scale_parameter=True)" if scaled else ""),
            "does not follow e^{−2a} (adaptive update, as AdamW)",
            "per-parameter, not one number (scale_parameter=True): integrated is NaN" if scaled
            else "exact Σ lr_k λ_k with the step size Adafactor really uses",
        )
    if coupling == "decoupled":
        return DecaySemantics(
            "decoupled", coupling,
            "exactly ∏(1 − η_k λ_k) ≈ e^{−a} per weight, apart from the optimizer's update",
            "does not follow e^{−2a}: Adam's per-coordinate scaling breaks the conservation law; "
            "the measured ratio stays far above e^{−2a}",
            "exact shrinkage exponent; not the theory's geometric a (no mirror-flow geometry)",
        )
    if isinstance(opt, optim.SGD):
        beta = max(float(g.get("momentum", 0.0) or 0.0) for g in opt.param_groups)
        if beta > 0:
            return DecaySemantics(
                "sgd-momentum", coupling,
                f"through the momentum buffer: effective integrated decay a/(1−β) = {1 / (1 - beta):g}·a "
                "(slowly varying regime; the buffer builds up over ~1/(1−β) steps)",
                "follows e^{−2a/(1−β)} up to O(η) discretization",
                "multiply by 1/(1−β) to get the theory's a",
            )
        return DecaySemantics(
            "sgd", coupling, "exactly ∏(1 − η_k λ_k) ≈ e^{−a} per step's decay part",
            "follows e^{−2a} up to O(η) discretization (gradient flow, theory §6)",
            "the theory's a = ∫α dt with t = Σ η",
        )
    if isinstance(opt, optim.ASGD):
        return DecaySemantics(
            "asgd", coupling,
            "as SGD, w ← w(1 − lambd·η_k) − η_k λ w: ASGD's own shrink lambd (1e-4 by default) "
            "adds to λ, and its step size η_k = lr/(1 + lambd·lr·k)^α decays",
            "follows e^{−2a} as SGD when lambd ≪ λ and η_k ≈ lr (not measured here)",
            "Σ lr·λ with the group's lr; ASGD's own η_k and lambd are not included",
        )
    if isinstance(opt, (optim.Adam, optim.Adamax)):
        return DecaySemantics(
            "adam-coupled", coupling,
            _COUPLED + "≈ η per step (m̂/√v̂ = 1 for a constant gradient), whatever λ and |w|",
            _ADAPTIVE, _NOMINAL)
    if isinstance(opt, optim.NAdam):
        return DecaySemantics(
            "nadam", coupling,
            _COUPLED + "η·[(1 − μ_t)/(1 − Πμ) + μ_{t+1}(1 − β₁^t)/(1 − Πμ·μ_{t+1})] at step t "
            "(momentum schedule μ_t): 1.06 η at the first step, ≈ η later",
            _ADAPTIVE, _NOMINAL)
    if isinstance(opt, optim.RAdam):
        return DecaySemantics(
            "radam", coupling,
            _COUPLED + "η·m̂ = η·λ|w| per step while the rectification is off (ρ_t ≤ 5, the "
            "first ~5 steps: multiplicative, like SGD), then η·r_t, with the rectification r_t "
            "rising from ≈ 0.1 towards 1 over thousands of steps (0.26 η per step on average "
            "over the first 200 at β₂ = 0.999)",
            _ADAPTIVE, _NOMINAL)
    if isinstance(opt, optim.Adagrad):
        return DecaySemantics(
            "adagrad", coupling,
            _COUPLED + "η/√k at step k (the accumulated squares grow as k·(λw)²), 2η√K after K "
            "steps: the decay fades (0.134 η per step on average over 200 steps)",
            _ADAPTIVE, _NOMINAL)
    if isinstance(opt, optim.RMSprop):
        return DecaySemantics(
            "rmsprop", coupling,
            _COUPLED + "η/√(1 − α^k) at step k: η/√(1 − α) = 10η at the first step (α = 0.99), "
            "≈ η after a few hundred steps",
            _ADAPTIVE, _NOMINAL)
    if isinstance(opt, optim.Adadelta):
        return DecaySemantics(
            "adadelta", coupling,
            _COUPLED + "lr·√ε/√(1 − ρ) at the first step (lr scales a unitless step that starts "
            "at √ε; 0.003·lr at the defaults, 0.005·lr per step over 200 steps): the decay "
            "barely acts",
            _ADAPTIVE, _NOMINAL)
    return DecaySemantics(
        "coupled-other", coupling, "λw added to the gradient (assumed; unknown optimizer)",
        "unknown", "nominal",
    )


# -------------------------------------------------------------------------- helpers

def _number(x) -> float:
    return float(x.item() if isinstance(x, torch.Tensor) else x)


def _lr(opt: torch.optim.Optimizer, group: dict) -> float | None:
    """The learning rate the coming step of ``group`` uses for the decay, or ``None`` if it is not
    one number (Hugging Face ``Adafactor`` with ``scale_parameter=True`` scales it per parameter).

    ``Adafactor(lr=None, relative_step=True)``: ``min(1e-2, 1/√k)`` (``1e-6·k`` with
    ``warmup_init``), ``k`` the coming step of the group's first parameter.
    """
    if "relative_step" in group and "scale_parameter" in group:
        if group["scale_parameter"]:
            return None
        if group["relative_step"]:
            k = 1
            for p in group["params"]:
                st = opt.state.get(p)
                if st and "step" in st:
                    k = int(_number(st["step"])) + 1
                    break
            min_step = 1e-6 * k if group.get("warmup_init") else 1e-2
            return min(min_step, 1.0 / math.sqrt(k))
    lr = group.get("lr")
    if lr is None:
        return None
    try:
        return _number(lr)
    except (TypeError, ValueError):
        return None


def _optimizer_state_steps(opt: torch.optim.Optimizer) -> int | None:
    """The largest per-parameter ``step`` in the optimizer state (Adam, AdamW, Adafactor, ...)."""
    n = None
    for st in opt.state.values():
        if isinstance(st, dict) and "step" in st:
            try:
                v = int(_number(st["step"]))
            except (TypeError, ValueError):
                continue
            n = v if n is None else max(n, v)
    return n


def _scaler_skips(opt: torch.optim.Optimizer) -> bool:
    """Whether the coming ``optimizer.step()`` is one a ``GradScaler`` makes the optimizer skip.

    For optimizers that do their own amp scaling (``_step_supports_amp_scaling``: ``fused=True``
    Adam, AdamW, SGD, Adagrad) ``GradScaler.step`` calls ``optimizer.step()`` even when the
    gradients overflowed, with ``optimizer.found_inf`` set (nonzero when they did); the fused
    kernel then leaves parameters, moments and step counts unchanged. Other optimizers are never
    stepped by the scaler on overflow, so the hooks do not run at all. Reading ``found_inf``
    costs one device sync per step on a GPU (the scaler's ``update()`` syncs anyway).
    """
    found = getattr(opt, "found_inf", None)
    if not isinstance(found, torch.Tensor):
        return False
    return bool(found.item() != 0)


def _check_nonnegative(value, what: str, quantity: str) -> float:
    """``value`` as a finite float >= 0, or a one-line error naming ``what`` and ``quantity``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise MirrorflowError(f"{what} must be a number ({quantity}), got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise MirrorflowError(f"{what} is {v!r}; the {quantity} must be finite and >= 0")
    return v


def _check_decay(value, what: str) -> float:
    return _check_nonnegative(value, what, "weight decay")


def _check_step(value, what: str) -> int:
    if isinstance(value, bool) or (not isinstance(value, int) and not hasattr(value, "__index__")):
        raise MirrorflowError(f"{what} must be an int >= 0 (optimizer steps), got {value!r}")
    v = int(value)
    if v < 0:
        raise MirrorflowError(f"{what} must be >= 0 (optimizer steps), got {v}")
    return v


def _check_a(value, what: str) -> float:
    return _check_nonnegative(value, what, "integrated decay a")


@dataclass(frozen=True)
class StepRecord:
    """The last optimizer step taken under the schedule (reference group).

    ``step``: its 0-based index (so ``step + 1`` steps have been taken); ``lr``, ``weight_decay``
    and ``factor``: what that step used; ``integrated``: ``a`` right after it.
    """

    step: int
    lr: float | None
    weight_decay: float
    factor: float
    integrated: float


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
    start_step:
        optimizer steps already taken (``lr_scheduler``'s ``last_epoch + 1``), for an optimizer
        *without* mirrorflow state — typically one restored from a checkpoint written without
        mirrorflow. The schedule starts at this step. Ignored, with a warning if it disagrees,
        when the groups carry state (that state is exact).
    integrated:
        the integrated decay ``a`` already applied before ``start_step`` (a number for the
        reference group — other groups get it scaled by their base decay — or one per group).
        Without it, ``a`` counts only the steps from ``start_step`` on: a **lower bound**
        (:attr:`integrated_is_lower_bound`), and a :class:`MirrorflowWarning` says so.
    replace:
        take over an optimizer that another live ``WeightDecayScheduler`` schedules (that one is
        removed). Without it, a second scheduler on one optimizer is refused.
    on_external:
        what to do when something else wrote ``group["weight_decay"]`` since this scheduler last
        set it: ``"error"`` (default: refuse before the step, one line) or ``"adopt"`` (the
        written value becomes the group's new base decay; the schedule's factor still applies;
        a warning the first time).

    The *reference group* (for :attr:`integrated` and :func:`budget`) is the first group with a
    nonzero base decay.
    """

    def __init__(self, optimizer: Any, schedule: TrainingSchedule | Any,
                 total_steps: int | None = None, *, start_step: int | None = None,
                 integrated: float | Sequence[float] | None = None, replace: bool = False,
                 on_external: str = "error"):
        opt = unwrap_optimizer(optimizer)
        self.schedule = as_schedule(schedule).bind(total_steps)
        self.total_steps = total_steps
        self.on_external = check_choice("on_external", on_external, ("error", "adopt"))
        if start_step is not None:
            start_step = _check_step(start_step, "start_step")
            if total_steps is not None and start_step > total_steps:
                raise MirrorflowError(f"start_step={start_step} is beyond the training length "
                                      f"total_steps={total_steps}; pass the step the checkpoint "
                                      "was taken at, <= total_steps")
        groups = opt.param_groups
        for i, g in enumerate(groups):
            if "weight_decay" not in g:
                raise MirrorflowError(
                    f"param group {i} of {type(opt).__name__} has no 'weight_decay'; "
                    "use an optimizer with a weight_decay option (SGD, Adam, AdamW, ...)"
                )
        owner = self.active(opt)
        if owner is not None and not replace:
            raise MirrorflowError(
                f"this optimizer is already scheduled by {owner!r}; one WeightDecayScheduler per "
                "optimizer (two would both advance the step count): call .remove() on the old one "
                "(HF/Lightning: drop its callback), or pass replace=True to take over"
            )
        carried = any(GroupState.carried(g) for g in groups)
        # -- everything validated and computed first; the optimizer is changed only at the end
        if carried:
            state = self._read_carried(groups)
            if start_step is not None and start_step != state["step"]:
                _warn(f"start_step={start_step} ignored: the optimizer carries mirrorflow state at "
                      f"step {state['step']} (exact), which the schedule continues from")
            if integrated is not None:
                _warn("integrated= ignored: the optimizer carries mirrorflow state with its own "
                      "integrated decay (exact)")
            prev = state["schedule"]
            if prev is not None and prev != self.schedule.describe() and owner is None:
                _warn(f"the optimizer's state was written by schedule {prev}; continuing with "
                      f"{self.schedule.describe()} from step {state['step']} (a = {state['a'][state['ref']]:.6g})")
        else:
            bases = [_check_decay(g["weight_decay"], f"param group {i}'s weight_decay")
                     for i, g in enumerate(groups)]
            ref = next((i for i, b in enumerate(bases) if b > 0), None)
            if ref is None:
                raise MirrorflowError(
                    "no param group has a nonzero weight_decay, so there is nothing to schedule; "
                    "set weight_decay > 0 on the optimizer (or on its decay group)"
                )
            step = start_step or 0
            a = self._initial_a(integrated, bases, ref)
            counted_from = step if (step > 0 and integrated is None) else 0
            state = {"base": bases, "a": a, "step": step, "from": counted_from, "ref": ref,
                     "schedule": None}
        lrs = [_lr(opt, g) for g in groups]
        if lrs[state["ref"]] is None and self.schedule.needs_integrated:
            raise MirrorflowError(
                f"{self.schedule.describe()} needs the integrated decay a, but {type(opt).__name__} "
                "gives every parameter its own step size (Adafactor scale_parameter=True), so a is "
                "not one number; use scale_parameter=False, or a step-based schedule (switch_off, "
                "cosine, ...)"
            )
        # -- commit
        self.optimizer = opt
        if owner is not None:
            owner.remove()
        for g, b, a in zip(groups, state["base"], state["a"]):
            GroupState(g).write(b, a, state["step"], state["from"], self.schedule.describe())
        self._groups: list[dict] = []
        self._written: list[float] = []
        self._index()
        self._pending: list[float] | None = None
        self._adopt_warned = False
        self.last_factor = 0.0
        self._last: tuple | None = None
        self._handles = [
            opt.register_step_pre_hook(self._before_step),
            opt.register_step_post_hook(self._after_step),
        ]
        setattr(opt, _OWNER, weakref.ref(self))
        if lrs[self._ref] is None:
            _warn(f"{type(opt).__name__} scales each parameter's step size (Adafactor "
                  "scale_parameter=True): the integrated decay a is not one number and is reported "
                  "as NaN; the schedule itself applies as usual")
        if carried and state["from"] > 0:
            _warn(f"the optimizer's mirrorflow state counts the integrated decay from step "
                  f"{state['from']} on (the run was started from a checkpoint without it): "
                  "integrated is a lower bound")
        elif state["from"] > 0:
            _warn(f"starting the schedule at step {state['from']} on an optimizer without "
                  "mirrorflow state (a checkpoint written without it?): the decay applied before "
                  f"step {state['from']} is unknown, so integrated counts only steps >= "
                  f"{state['from']} (a lower bound); pass integrated=<a before step "
                  f"{state['from']}> if you know it")
        self._apply()

    # -- construction helpers ---------------------------------------------------------------
    @staticmethod
    def active(optimizer: Any) -> WeightDecayScheduler | None:
        """The live scheduler attached to ``optimizer``, if any (a notebook's lost reference)."""
        opt = unwrap_optimizer(optimizer)
        ref = getattr(opt, _OWNER, None)
        owner = ref() if ref is not None else None
        if owner is None or not owner._handles or owner.optimizer is not opt:
            return None  # removed, or a deep copy of a scheduled optimizer
        return owner

    @staticmethod
    def _read_carried(groups) -> dict:
        """Validated state from param groups that carry ``mf_*`` keys (a restored checkpoint)."""
        stored = [GroupState(g) for g in groups if GroupState.carried(g)]
        step = max(st.step for st in stored)
        base, a = [], []
        for i, g in enumerate(groups):
            if not GroupState.carried(g):  # a group added after the checkpoint was written
                base.append(_check_decay(g["weight_decay"], f"param group {i}'s weight_decay"))
                a.append(0.0)
                continue
            st = GroupState(g)
            base.append(_check_decay(st.base, f"param group {i}'s stored base decay"))
            a.append(st.checked_integrated(i))
        ref = next((i for i, b in enumerate(base) if b > 0), None)
        if ref is None:
            raise MirrorflowError("the optimizer's stored scheduler state has no group with nonzero "
                                  "base decay; nothing to schedule")
        counted = max(st.counted_from for st in stored)
        sched = stored[0].schedule
        return {"base": base, "a": a, "step": step, "from": counted, "ref": ref, "schedule": sched}

    @staticmethod
    def _initial_a(integrated, bases: list[float], ref: int) -> list[float]:
        if integrated is None:
            return [0.0] * len(bases)
        if isinstance(integrated, Sequence) and not isinstance(integrated, str):
            if len(integrated) != len(bases):
                raise MirrorflowError(f"integrated has {len(integrated)} values, the optimizer has "
                                      f"{len(bases)} param groups; give one per group or one number")
            return [_check_a(x, f"integrated[{i}]") for i, x in enumerate(integrated)]
        a = _check_a(integrated, "integrated")
        return [a * b / bases[ref] for b in bases]

    # -- state ------------------------------------------------------------------------------
    @property
    def steps_taken(self) -> int:
        """Optimizer steps taken under this schedule (the index of the next step)."""
        return self._ref_state.step

    @property
    def reference_group(self) -> int:
        """Index of the first group with nonzero base decay (used by :attr:`integrated`)."""
        return self._ref

    @property
    def base_decays(self) -> list[float]:
        return [float(GroupState(g).base) for g in self.optimizer.param_groups]

    @property
    def integrated(self) -> float:
        """Integrated decay ``a = Σ η_k λ_k`` of the reference group so far (theory §1).

        A lower bound when :attr:`integrated_is_lower_bound`; NaN when the optimizer's step size
        is not one number (Adafactor with ``scale_parameter=True``).
        """
        return float(self._ref_state.integrated)

    @property
    def integrated_per_group(self) -> list[float]:
        return [float(GroupState(g).integrated) for g in self.optimizer.param_groups]

    @property
    def integrated_by_group(self) -> dict[str, float]:
        """``a`` of every group, keyed by the group's ``"name"`` (as set by
        :func:`~mirrorflow.schedules.groups.decay_param_groups`) or ``"group<i>"``."""
        out = {}
        for i, g in enumerate(self.optimizer.param_groups):
            name = g.get("name")
            key = str(name) if isinstance(name, str) and name and str(name) not in out else f"group{i}"
            out[key] = float(GroupState(g).integrated)
        return out

    @property
    def counted_from(self) -> int:
        """The step from which :attr:`integrated` counts the decay (0: from the start, exact)."""
        return self._ref_state.counted_from

    @property
    def integrated_is_lower_bound(self) -> bool:
        """``True`` after a start at step N > 0 without the earlier decay (``integrated`` = the
        decay of steps ≥ N only)."""
        return self.counted_from > 0

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
    def _index(self) -> None:
        groups = self.optimizer.param_groups
        self._groups = list(groups)
        self._written = [g["weight_decay"] for g in groups]
        self._states = [GroupState(g) for g in groups]
        self._set_reference()

    def _set_reference(self) -> None:
        """The reference group (first with nonzero base decay) and the scheduled groups."""
        self._ref = next(i for i, st in enumerate(self._states) if st.decays)
        self._ref_group = self._groups[self._ref]
        self._ref_state = self._states[self._ref]
        self._decay = [st for st in self._states if st.decays]

    def _sync(self) -> None:
        """Adopt param groups added or replaced since the last step, refuse or adopt external
        writes to ``weight_decay``."""
        groups = self.optimizer.param_groups
        old = self._groups
        if len(groups) != len(old) or not all(map(operator.is_, groups, old)):
            self._adopt_groups(groups, old)
        # list equality compares identical float objects by identity first: cheap per step
        if [g["weight_decay"] for g in groups] != self._written:
            for i, g in enumerate(groups):
                if g["weight_decay"] != self._written[i]:
                    self._external(i, g)

    def _adopt_groups(self, groups, old) -> None:
        known = {id(g) for g in old}
        replaced = len(groups) == len(old) and not any(id(g) in known for g in groups)
        step, a_ref, counted = self.steps_taken, self.integrated, self.counted_from
        plain = []
        for i, g in enumerate(groups):
            if id(g) in known:
                continue
            st = GroupState(g)
            if GroupState.carried(g):  # a mirrorflow checkpoint: its state is exact
                _check_decay(st.base, f"param group {i}'s stored base decay")
                st.ensure_counted_from()
                prev = st.schedule
                if prev is not None and prev != self.schedule.describe():
                    _warn(f"optimizer.load_state_dict() restored the state of schedule {prev}; "
                          f"continuing with {self.schedule.describe()} from step {st.step}")
                st.schedule = self.schedule.describe()
                continue
            if replaced:  # a plain checkpoint loaded after the scheduler was built
                src = GroupState(old[i])
                st.write(src.base, src.integrated, step, counted, self.schedule.describe())
                plain.append(i)
            else:  # add_param_group: a new group with its own base decay, no decay so far
                base = _check_decay(g["weight_decay"], f"new param group {i}'s weight_decay")
                st.write(base, 0.0, step, 0, self.schedule.describe())
        if not any(GroupState(g).decays for g in groups):
            raise MirrorflowError("after the change of param groups no group has a nonzero base "
                                  "decay; nothing to schedule")
        self._index()
        if plain:
            n = _optimizer_state_steps(self.optimizer)
            said = f" (its optimizer state has taken {n} steps)" if n is not None else ""
            _warn(f"optimizer.load_state_dict() loaded param groups without mirrorflow state (a "
                  f"checkpoint written without the scheduler){said}; the schedule continues at "
                  f"step {step} with a = {a_ref:.6g}; if the checkpoint was taken at step N > "
                  "0, build the scheduler after loading it with start_step=N")

    def _external(self, i: int, g: dict) -> None:
        old, new = self._written[i], g["weight_decay"]
        k = self.steps_taken
        if self.on_external == "error":
            raise MirrorflowError(
                f"param group {i}'s weight_decay was changed outside the WeightDecayScheduler "
                f"({old!r} -> {new!r}) before step {k}; another scheduler (e.g. timm's "
                "param_group_field='weight_decay') or your code writes it, and this scheduler "
                "would overwrite it: keep one writer, change the base with "
                "wd.set_base_decay(...), or build the scheduler with on_external='adopt'"
            )
        base = _check_decay(new, f"the weight_decay written to param group {i}")
        GroupState(g).base = base
        if not any(GroupState(h).decays for h in self.optimizer.param_groups):
            raise MirrorflowError("every param group's weight_decay was set to 0 outside the "
                                  "scheduler; nothing left to schedule — call wd.remove() instead")
        if not self._adopt_warned:
            self._adopt_warned = True
            _warn(f"param group {i}'s weight_decay was set to {new!r} outside the scheduler before "
                  f"step {k}; adopted as its new base decay (the schedule's factor still applies)")
        self._written[i] = new
        self._set_reference()

    def _factor(self, ref: GroupState, lr: float | None) -> float:
        inc = float("nan") if lr is None else lr * ref.base
        f = self.schedule.factor(ref.step, float(ref.integrated), inc)
        if not (f >= 0.0 and f < math.inf):
            raise MirrorflowError(f"schedule returned decay factor {f!r} at step "
                                  f"{ref.step}; factors must be finite and >= 0")
        return f

    def _apply(self) -> float | None:
        """Set every decay group's ``weight_decay`` for the coming step; returns the reference
        group's learning rate (``None`` if not one number)."""
        lr = _lr(self.optimizer, self._ref_group)
        f = self._factor(self._ref_state, lr)
        self.last_factor = f
        for st in self._decay:
            st.group["weight_decay"] = f * st.base
        self._written = [g["weight_decay"] for g in self._groups]
        return lr

    def _before_step(self, optimizer, args, kwargs) -> None:
        if _scaler_skips(self.optimizer):
            # a fused optimizer under a GradScaler: optimizer.step() runs, but the kernel skips
            # the update because the scaler found inf/NaN gradients; the step does not count
            self._pending = None
            return
        self._sync()
        lr_ref = self._apply()
        opt, ref = self.optimizer, self._ref_group
        pending = []
        for st in self._decay:
            g = st.group
            lr = lr_ref if g is ref else _lr(opt, g)
            pending.append(float("nan") if lr is None else lr * g["weight_decay"])
        self._pending = pending
        self._step_used = (self._ref_state.step, lr_ref, ref["weight_decay"], self.last_factor)

    def _after_step(self, optimizer, args, kwargs) -> None:
        if self._pending is None:  # the pre-hook did not run (hooks removed in between)
            return
        for st, inc in zip(self._decay, self._pending):
            st.add(inc)
        for st in self._states:
            st.advance()
        self._pending = None
        self._last = (*self._step_used, self._ref_state.integrated)
        self._apply()

    @property
    def last_step(self) -> StepRecord | None:
        """The last optimizer step taken under this scheduler (``None`` before the first)."""
        if self._last is None:
            return None
        step, lr, wd, f, a = self._last
        return StepRecord(step, lr, float(wd), f, float(a))

    def step(self) -> None:
        """Refresh the decay shown in the param groups for the coming step (optional).

        The decay is applied and ``a`` accumulated automatically at each ``optimizer.step()``.
        """
        self._sync()
        self._apply()

    def set_base_decay(self, value: float | Sequence[float], group: int | None = None) -> None:
        """Change the base decay (the sanctioned way; writing ``weight_decay`` directly is refused).

        ``value``: one number for ``group`` (an index), or — without ``group`` — for every group
        whose base is nonzero, or a list with one value per group.
        """
        groups = self.optimizer.param_groups
        self._sync()
        if isinstance(value, Sequence) and not isinstance(value, str):
            if group is not None or len(value) != len(groups):
                raise MirrorflowError(f"give one base decay per param group ({len(groups)}), or "
                                      "one number")
            new = [_check_decay(v, f"base decay of group {i}") for i, v in enumerate(value)]
        else:
            v = _check_decay(value, "base decay")
            if group is not None:
                if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group < len(groups):
                    raise MirrorflowError(f"group must be an index in [0, {len(groups)}), got {group!r}")
                new = [v if i == group else float(GroupState(g).base) for i, g in enumerate(groups)]
            else:
                new = [v if GroupState(g).decays else 0.0 for g in groups]
        if not any(b > 0 for b in new):
            raise MirrorflowError("that leaves no group with nonzero base decay; call wd.remove() "
                                  "to stop scheduling")
        for g, b in zip(groups, new):
            GroupState(g).base = b
        self._index()
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: schedule name, step, base and integrated decay per group.

        ``integrated_wd`` entries are ``None`` where ``a`` is not one number (NaN in the groups).
        """
        return {
            "version": _STATE_VERSION,
            "schedule": self.schedule.describe(),
            "total_steps": self.total_steps,
            "steps_taken": self.steps_taken,
            "counted_from": self.counted_from,
            "base_weight_decay": self.base_decays,
            "integrated_wd": [None if math.isnan(a) else a for a in self.integrated_per_group],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Everything is checked before anything changes: a state of
        another schedule, another group layout, or a non-finite / negative base decay, integrated
        decay or step count is refused with one line and the optimizer is left as it was."""
        groups = self.optimizer.param_groups
        if not isinstance(state, dict):
            raise MirrorflowError(f"load_state_dict needs the dict from WeightDecayScheduler."
                                  f"state_dict(), got {type(state).__name__}")
        try:
            base, integ, step = state["base_weight_decay"], state["integrated_wd"], state["steps_taken"]
        except KeyError:
            raise MirrorflowError("not a WeightDecayScheduler state_dict (missing keys); pass the "
                                  "dict returned by WeightDecayScheduler.state_dict()") from None
        sched = state.get("schedule")
        if sched is not None and sched != self.schedule.describe():
            raise MirrorflowError(f"the state_dict was written by schedule {sched}, this scheduler "
                                  f"runs {self.schedule.describe()}; build the scheduler with the "
                                  "same schedule to resume (to change schedules mid-run, build the "
                                  "new one with start_step= and integrated= from the old state)")
        total = state.get("total_steps", self.total_steps)
        if total != self.total_steps:
            raise MirrorflowError(f"the state_dict was written with total_steps={total}, this "
                                  f"scheduler has total_steps={self.total_steps}; use the same "
                                  "training length to resume")
        if not isinstance(base, (list, tuple)) or not isinstance(integ, (list, tuple)):
            raise MirrorflowError("state_dict base_weight_decay and integrated_wd must be lists "
                                  "(one value per param group)")
        if len(base) != len(groups) or len(integ) != len(groups):
            raise MirrorflowError(f"state_dict has {len(base)} param groups, the optimizer has "
                                  f"{len(groups)}; load it into the same optimizer layout")
        step = _check_step(step, "state_dict steps_taken")
        counted = _check_step(state.get("counted_from", 0), "state_dict counted_from")
        if counted > step:
            raise MirrorflowError(f"state_dict counted_from={counted} is after steps_taken={step}")
        new_base = [_check_decay(b, f"state_dict base_weight_decay[{i}]") for i, b in enumerate(base)]
        new_a = [float("nan") if a is None else _check_a(a, f"state_dict integrated_wd[{i}]")
                 for i, a in enumerate(integ)]
        ref = next((i for i, b in enumerate(new_base) if b > 0), None)
        if ref is None:
            raise MirrorflowError("state_dict has no group with nonzero base decay; nothing to "
                                  "schedule")
        # the factor for the coming step must be valid before anything is written
        probe = GroupState(dict(groups[ref]))
        probe.write(new_base[ref], new_a[ref], step, counted, self.schedule.describe())
        self._factor(probe, _lr(self.optimizer, groups[ref]))
        for g, b, a in zip(groups, new_base, new_a):
            GroupState(g).write(b, a, step, counted, self.schedule.describe())
        self._index()
        self._apply()

    def remove(self) -> None:
        """Detach the hooks (the param groups keep their current decay and the state keys, so a
        new scheduler built on this optimizer continues the schedule)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        ref = getattr(self.optimizer, _OWNER, None)
        if ref is not None and ref() is self:
            delattr(self.optimizer, _OWNER)

    def __repr__(self) -> str:
        return (f"WeightDecayScheduler({self.schedule.describe()}, step={self.steps_taken}, "
                f"a={self.integrated:.6g})")
