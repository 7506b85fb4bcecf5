"""Weight-decay schedules in *training steps*, for real optimizers (docs/theory.md §1, docs/training.md).

A training schedule returns, for optimizer step ``k`` (0-based), a non-negative **factor** that
multiplies each parameter group's own base decay: ``λ_k = factor_k · λ_base``. Groups whose base
decay is zero (biases, norms) therefore stay at zero.

The lasting effect of a schedule is carried by the integrated decay (theory §1)

    a_K = Σ_{k<K} η_k λ_k,

with ``η_k`` the learning rate the optimizer really used at step ``k`` (read from the param group,
so learning-rate schedules are accounted for). :class:`budget` uses it directly: decay stays on
until ``a`` reaches a target, then goes off, so the same geometry is left behind whatever the
learning rate or number of steps.

Every schedule is a frozen dataclass. Schedules that refer to the length of training
(``switch_off(at=0.5)``, ``linear()``, ``cosine()``, fractional ``piecewise`` boundaries) are
resolved against ``total_steps`` by :meth:`TrainingSchedule.bind`; bad input fails there, at
construction of the scheduler, with a one-line :class:`~mirrorflow.MirrorflowError`.

``factor(step, integrated, increment)`` receives the step index, the integrated decay ``a`` so far
(before this step) and ``increment = η_k · λ_base`` (what a full-strength step would add to ``a``).

Schedules compose like ``torch.optim.lr_scheduler.SequentialLR`` / optax ``join_schedules``:
:func:`sequential` runs one schedule per segment between milestones, each seeing the step count
from the start of its segment (and bound to the segment's length), e.g. warm-up, then cosine,
then off::

    sequential([warmup(100), cosine(), constant(0.0)], milestones=[100, 900])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mirrorflow._core.validation import MirrorflowError, check_finite_scalar

__all__ = [
    "Budget",
    "Constant",
    "Cosine",
    "FromCallable",
    "Linear",
    "Piecewise",
    "Sequential",
    "SwitchOff",
    "TrainingSchedule",
    "Warmup",
    "as_schedule",
    "budget",
    "constant",
    "cosine",
    "from_callable",
    "from_continuous",
    "linear",
    "piecewise",
    "sequential",
    "switch_off",
    "warmup",
]


def _check_factor(value, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise MirrorflowError(f"{where} must return a number (decay factor), got {value!r}") from None
    if not math.isfinite(out) or out < 0:
        raise MirrorflowError(
            f"{where} returned decay factor {out!r}; factors must be finite and >= 0 (0 = off)"
        )
    return out


def _resolve_step(name: str, at, total_steps: int | None, schedule: str) -> int:
    """``at`` is an int step, or a float fraction in [0, 1] of ``total_steps``."""
    if isinstance(at, bool):
        raise MirrorflowError(f"{name} must be a step (int) or a fraction (float in [0, 1]), got {at!r}")
    if isinstance(at, int) or (hasattr(at, "__index__") and not isinstance(at, float)):
        step = int(at)
        if step < 0:
            raise MirrorflowError(f"{name} must be a step >= 0, got {step}")
        if total_steps is not None and step > total_steps:
            raise MirrorflowError(
                f"{schedule}: {name}={step} is beyond the training length total_steps={total_steps}; "
                f"pass a step <= {total_steps} or a fraction in [0, 1]"
            )
        return step
    frac = check_finite_scalar(name, at)
    if not 0.0 <= frac <= 1.0:
        raise MirrorflowError(
            f"{schedule}: {name}={frac:g} is a float, read as a fraction of training, and must be in "
            f"[0, 1]; pass an int to give a step number"
        )
    if total_steps is None:
        raise MirrorflowError(
            f"{schedule}: {name}={frac:g} is a fraction of training; pass total_steps=N to the "
            f"scheduler (or give an int step)"
        )
    return round(frac * total_steps)


def _check_total(total_steps) -> int | None:
    if total_steps is None:
        return None
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise MirrorflowError(f"total_steps must be a positive integer, got {total_steps!r}")
    return int(total_steps)


@dataclass(frozen=True)
class TrainingSchedule:
    """Base class. Subclasses implement :meth:`factor`; :meth:`bind` resolves lengths."""

    #: whether :meth:`factor` reads the integrated decay ``a`` (then ``a`` must be known)
    needs_integrated = False

    def factor(self, step: int, integrated: float = 0.0, increment: float = 0.0) -> float:
        raise NotImplementedError  # pragma: no cover - abstract

    def bind(self, total_steps: int | None) -> TrainingSchedule:
        """Return the schedule resolved against ``total_steps`` (validates; default: itself)."""
        _check_total(total_steps)
        return self

    def __call__(self, step: int, integrated: float = 0.0, increment: float = 0.0) -> float:
        return self.factor(step, integrated, increment)

    def describe(self) -> str:
        return type(self).__name__.lower()


@dataclass(frozen=True)
class Constant(TrainingSchedule):
    """``factor = scale`` at every step (``scale=1``: the optimizer's own decay, unchanged)."""

    scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "scale", check_finite_scalar("constant decay scale", self.scale,
                                                              minimum=0.0))

    def factor(self, step, integrated=0.0, increment=0.0):
        return self.scale

    def describe(self):
        return f"constant(scale={self.scale:g})"


@dataclass(frozen=True)
class SwitchOff(TrainingSchedule):
    """Full decay for steps ``k < at``, zero from step ``at`` on; leaves ``a = Σ_{k<at} η_k λ``.

    ``at`` is an int step, or a float fraction of ``total_steps`` (resolved by :meth:`bind`).
    """

    at: int | float
    total_steps: int | None = None
    at_step: int | None = field(default=None, init=False)

    def __post_init__(self):
        total = _check_total(self.total_steps)
        object.__setattr__(self, "total_steps", total)
        if isinstance(self.at, float) and total is None:
            frac = check_finite_scalar("switch_off at", self.at)
            if not 0.0 <= frac <= 1.0:
                _resolve_step("at", self.at, 1, "switch_off")
            return
        object.__setattr__(self, "at_step", _resolve_step("at", self.at, total, "switch_off"))

    def bind(self, total_steps):
        total = _check_total(total_steps)
        if total is None or total == self.total_steps:
            if self.at_step is None:
                _resolve_step("at", self.at, None, "switch_off")
            return self
        return SwitchOff(self.at, total)

    def factor(self, step, integrated=0.0, increment=0.0):
        if self.at_step is None:
            raise MirrorflowError("switch_off with a fractional `at` needs total_steps; call bind(N)")
        return 1.0 if step < self.at_step else 0.0

    def describe(self):
        return f"switch_off(at={self.at!r})"


@dataclass(frozen=True)
class Budget(TrainingSchedule):
    """Decay on until the integrated decay ``a`` reaches ``target_a``, then off (theory §1).

    With ``exact=True`` (default) the last decayed step is scaled down so that ``a`` lands on
    ``target_a`` exactly: ``factor = (target_a − a) / (η_k λ_base)`` on that step.
    """

    target_a: float
    exact: bool = True
    needs_integrated = True

    def __post_init__(self):
        object.__setattr__(self, "target_a", check_finite_scalar(
            "budget target_a", self.target_a, minimum=0.0, strict=True))

    def factor(self, step, integrated=0.0, increment=0.0):
        left = self.target_a - integrated
        if left <= 1e-15 * self.target_a:
            return 0.0
        if increment <= left:
            return 1.0
        return left / increment if self.exact else 1.0

    def describe(self):
        return f"budget(target_a={self.target_a:g})"


@dataclass(frozen=True)
class _Ramp(TrainingSchedule):
    """Shared by :class:`Linear` and :class:`Cosine`: from 1 at ``start`` to 0 at ``end``."""

    end: int | float = 1.0
    start: int | float = 0
    total_steps: int | None = None
    start_step: int | None = field(default=None, init=False)
    end_step: int | None = field(default=None, init=False)

    def __post_init__(self):
        total = _check_total(self.total_steps)
        object.__setattr__(self, "total_steps", total)
        name = type(self).__name__.lower()
        needs_total = isinstance(self.end, float) or isinstance(self.start, float)
        if needs_total and total is None:
            for k, v in (("end", self.end), ("start", self.start)):
                if isinstance(v, float):
                    check_finite_scalar(f"{name} {k}", v, minimum=0.0, maximum=1.0)
            return
        s = _resolve_step("start", self.start, total, name)
        e = _resolve_step("end", self.end, total, name)
        if e <= s:
            raise MirrorflowError(f"{name}: end step ({e}) must be after start step ({s})")
        object.__setattr__(self, "start_step", s)
        object.__setattr__(self, "end_step", e)

    def bind(self, total_steps):
        total = _check_total(total_steps)
        if total is None or total == self.total_steps:
            if self.end_step is None:
                _resolve_step("end", 1.0, None, type(self).__name__.lower())
            return self
        return type(self)(self.end, self.start, total)

    def _progress(self, step) -> float:
        if self.end_step is None:
            raise MirrorflowError(f"{type(self).__name__.lower()} with fractions needs total_steps; "
                                  "call bind(N)")
        if step <= self.start_step:
            return 0.0
        return min(1.0, (step - self.start_step) / (self.end_step - self.start_step))


@dataclass(frozen=True)
class Linear(_Ramp):
    """``factor`` falls linearly from 1 (step ``start``) to 0 (step ``end``; default: end of training)."""

    def factor(self, step, integrated=0.0, increment=0.0):
        return 1.0 - self._progress(step)

    def describe(self):
        return f"linear(start={self.start!r}, end={self.end!r})"


@dataclass(frozen=True)
class Cosine(_Ramp):
    """``factor = ½(1 + cos(π p))`` with ``p`` going from 0 (step ``start``) to 1 (step ``end``)."""

    def factor(self, step, integrated=0.0, increment=0.0):
        p = self._progress(step)
        return 0.0 if p >= 1.0 else 0.5 * (1.0 + math.cos(math.pi * p))

    def describe(self):
        return f"cosine(start={self.start!r}, end={self.end!r})"


@dataclass(frozen=True)
class Piecewise(TrainingSchedule):
    """``values[i]`` on ``[boundaries[i-1], boundaries[i])``; ``len(values) = len(boundaries) + 1``.

    Boundaries are int steps or float fractions of training (all of one kind), strictly increasing.
    """

    boundaries: tuple = ()
    values: tuple = (1.0,)
    total_steps: int | None = None
    steps: tuple | None = field(default=None, init=False)

    def __post_init__(self):
        total = _check_total(self.total_steps)
        object.__setattr__(self, "total_steps", total)
        b, v = tuple(self.boundaries), tuple(self.values)
        if len(v) != len(b) + 1:
            raise MirrorflowError(
                f"piecewise needs one more value than boundaries; got {len(b)} boundaries and "
                f"{len(v)} values"
            )
        v = tuple(check_finite_scalar(f"piecewise value #{i}", x, minimum=0.0) for i, x in enumerate(v))
        object.__setattr__(self, "boundaries", b)
        object.__setattr__(self, "values", v)
        if any(isinstance(x, float) for x in b) and total is None:
            for x in b:
                check_finite_scalar("piecewise boundary", x, minimum=0.0, maximum=1.0)
            return
        steps = tuple(_resolve_step("piecewise boundary", x, total, "piecewise") for x in b)
        if any(s1 >= s2 for s1, s2 in zip(steps, steps[1:])):
            raise MirrorflowError(f"piecewise boundaries must be strictly increasing, got {steps}")
        object.__setattr__(self, "steps", steps)

    def bind(self, total_steps):
        total = _check_total(total_steps)
        if total is None or total == self.total_steps:
            if self.steps is None:
                _resolve_step("piecewise boundary", 0.5, None, "piecewise")
            return self
        return Piecewise(self.boundaries, self.values, total)

    def factor(self, step, integrated=0.0, increment=0.0):
        if self.steps is None:
            raise MirrorflowError("piecewise with fractional boundaries needs total_steps; call bind(N)")
        i = 0
        while i < len(self.steps) and step >= self.steps[i]:
            i += 1
        return self.values[i]

    def describe(self):
        return f"piecewise(boundaries={list(self.boundaries)}, values={list(self.values)})"


@dataclass(frozen=True)
class FromCallable(TrainingSchedule):
    """Any callable ``fn(step) -> factor`` (factor >= 0), checked at every call."""

    fn: Callable[[int], float]

    def __post_init__(self):
        if not callable(self.fn):
            raise MirrorflowError(
                f"schedule must be callable (step -> decay factor) or a TrainingSchedule, got "
                f"{type(self.fn).__name__} {self.fn!r}"
            )

    def factor(self, step, integrated=0.0, increment=0.0):
        name = getattr(self.fn, "__name__", self.fn)
        return _check_factor(self.fn(step), f"schedule {name!r} at step {step}")

    def describe(self):
        return f"callable({getattr(self.fn, '__name__', repr(self.fn))})"


@dataclass(frozen=True)
class Warmup(TrainingSchedule):
    """``factor`` rises linearly from ``start`` (step 0) to 1 (step ``steps``), then stays 1 —
    as ``torch.optim.lr_scheduler.LinearLR(start_factor=start, end_factor=1, total_iters=steps)``.

    ``steps`` is an int step count or a float fraction of ``total_steps``.
    """

    steps: int | float
    start: float = 0.0
    total_steps: int | None = None
    steps_resolved: int | None = field(default=None, init=False)

    def __post_init__(self):
        total = _check_total(self.total_steps)
        object.__setattr__(self, "total_steps", total)
        object.__setattr__(self, "start", check_finite_scalar("warmup start", self.start,
                                                              minimum=0.0, maximum=1.0))
        if isinstance(self.steps, float) and total is None:
            check_finite_scalar("warmup steps", self.steps, minimum=0.0, maximum=1.0, strict=True)
            return
        n = _resolve_step("steps", self.steps, total, "warmup")
        if n < 1:
            raise MirrorflowError(f"warmup: steps must be >= 1, got {self.steps!r}")
        object.__setattr__(self, "steps_resolved", n)

    def bind(self, total_steps):
        total = _check_total(total_steps)
        if total is None or total == self.total_steps:
            if self.steps_resolved is None:
                _resolve_step("steps", self.steps, None, "warmup")
            return self
        return Warmup(self.steps, self.start, total)

    def factor(self, step, integrated=0.0, increment=0.0):
        if self.steps_resolved is None:
            raise MirrorflowError("warmup with a fractional length needs total_steps; call bind(N)")
        if step >= self.steps_resolved:
            return 1.0
        return self.start + (1.0 - self.start) * step / self.steps_resolved

    def describe(self):
        return f"warmup(steps={self.steps!r}, start={self.start:g})"


@dataclass(frozen=True)
class Sequential(TrainingSchedule):
    """One schedule per segment: ``schedules[i]`` on ``[milestones[i-1], milestones[i])``
    (``torch.optim.lr_scheduler.SequentialLR``, optax ``join_schedules``).

    Each schedule sees the step count from the start of its segment and is bound to the
    segment's length (the last segment: up to ``total_steps``), so ``cosine()`` inside a segment
    ramps over that segment. Milestones are int steps or float fractions of training (all of one
    kind), strictly increasing and ``> 0``. A :func:`budget` inside counts the integrated decay
    ``a`` of the whole run (``a`` is never reset).
    """

    schedules: tuple = ()
    milestones: tuple = ()
    total_steps: int | None = None
    steps: tuple | None = field(default=None, init=False)
    bound: tuple | None = field(default=None, init=False)

    def __post_init__(self):
        total = _check_total(self.total_steps)
        object.__setattr__(self, "total_steps", total)
        if isinstance(self.schedules, (str, bytes)) or not isinstance(self.schedules, Sequence):
            raise MirrorflowError("sequential needs a list of schedules, e.g. "
                                  "sequential([warmup(100), cosine()], milestones=[100])")
        scheds = tuple(as_schedule(x) for x in self.schedules)
        ms = tuple(self.milestones) if isinstance(self.milestones, Sequence) else (self.milestones,)
        if len(scheds) != len(ms) + 1:
            raise MirrorflowError(f"sequential needs one milestone fewer than schedules; got "
                                  f"{len(scheds)} schedules and {len(ms)} milestones")
        object.__setattr__(self, "schedules", scheds)
        object.__setattr__(self, "milestones", ms)
        if any(isinstance(x, float) for x in ms) and total is None:
            for x in ms:
                check_finite_scalar("sequential milestone", x, minimum=0.0, maximum=1.0, strict=True)
            return
        steps = tuple(_resolve_step("milestone", x, total, "sequential") for x in ms)
        if (steps and steps[0] <= 0) or any(a >= b for a, b in zip(steps, steps[1:])):
            raise MirrorflowError(f"sequential milestones must be > 0 and strictly increasing, "
                                  f"got {list(steps)}")
        starts = (0, *steps)
        bound = []
        for i, sch in enumerate(scheds):
            end = steps[i] if i < len(steps) else total
            length = None if end is None else end - starts[i]
            if length is not None and length < 1:
                raise MirrorflowError(f"sequential: the last segment starts at step {starts[i]}, "
                                      f"at or after the end of training ({total}); drop it or "
                                      f"move the milestone")
            try:
                bound.append(sch.bind(length))
            except MirrorflowError as exc:
                raise MirrorflowError(f"sequential segment {i} (steps {starts[i]}–"
                                      f"{'end' if end is None else end}, length "
                                      f"{'unknown' if length is None else length}): {exc}") from None
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "bound", tuple(bound))

    @property
    def needs_integrated(self) -> bool:  # type: ignore[override]
        return any(s.needs_integrated for s in self.schedules)

    def bind(self, total_steps):
        total = _check_total(total_steps)
        if total is None or total == self.total_steps:
            if self.steps is None:
                _resolve_step("milestone", 0.5, None, "sequential")
            return self
        return Sequential(self.schedules, self.milestones, total)

    def factor(self, step, integrated=0.0, increment=0.0):
        if self.steps is None:
            raise MirrorflowError("sequential with fractional milestones needs total_steps; "
                                  "call bind(N)")
        i = 0
        while i < len(self.steps) and step >= self.steps[i]:
            i += 1
        start = self.steps[i - 1] if i else 0
        return self.bound[i].factor(step - start, integrated, increment)

    def describe(self):
        inner = ", ".join(s.describe() for s in self.schedules)
        return f"sequential([{inner}], milestones={list(self.milestones)})"


# -- lowercase constructors (the public spelling) ------------------------------------------------

def constant(scale: float = 1.0) -> Constant:
    """Keep the optimizer's decay (times ``scale``) for the whole run: ``a`` grows without end."""
    return Constant(scale)


def switch_off(at: int | float, total_steps: int | None = None) -> SwitchOff:
    """Decay on for steps ``< at`` (int step, or float fraction of training), then off."""
    return SwitchOff(at, total_steps)


def budget(target_a: float, exact: bool = True) -> Budget:
    """Decay on until ``a = Σ η_k λ_k`` reaches ``target_a`` (> 0), then off."""
    return Budget(target_a, exact)


def linear(end: int | float = 1.0, start: int | float = 0, total_steps: int | None = None) -> Linear:
    """Linear ramp of the decay factor from 1 to 0 between ``start`` and ``end``."""
    return Linear(end, start, total_steps)


def cosine(end: int | float = 1.0, start: int | float = 0, total_steps: int | None = None) -> Cosine:
    """Cosine ramp of the decay factor from 1 to 0 between ``start`` and ``end``."""
    return Cosine(end, start, total_steps)


def piecewise(boundaries: Sequence, values: Sequence[float],
              total_steps: int | None = None) -> Piecewise:
    """Piecewise-constant factors: ``values[i]`` between consecutive ``boundaries``."""
    return Piecewise(tuple(boundaries), tuple(values), total_steps)


def warmup(steps: int | float, start: float = 0.0, total_steps: int | None = None) -> Warmup:
    """Linear warm-up of the decay factor from ``start`` to 1 over ``steps`` (then 1)."""
    return Warmup(steps, start, total_steps)


def sequential(schedules: Sequence, milestones: Sequence, total_steps: int | None = None) -> Sequential:
    """``schedules[i]`` between consecutive ``milestones`` (steps counted from each segment's start).

    >>> s = sequential([warmup(2), constant(), constant(0.0)], milestones=[2, 4])
    >>> [s.factor(k) for k in range(6)]
    [0.0, 0.5, 1.0, 1.0, 0.0, 0.0]
    """
    if isinstance(schedules, (str, bytes)) or not isinstance(schedules, Sequence):
        raise MirrorflowError("sequential needs a list of schedules, e.g. "
                              "sequential([warmup(100), cosine()], milestones=[100])")
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        raise MirrorflowError(f"sequential milestones must be a list of steps or fractions, got "
                              f"{milestones!r}")
    return Sequential(tuple(schedules), tuple(milestones), total_steps)


def from_callable(fn: Callable[[int], float]) -> FromCallable:
    """Wrap ``fn(step) -> factor``."""
    return FromCallable(fn)


def as_schedule(obj) -> TrainingSchedule:
    """A :class:`TrainingSchedule` as is; any other callable wrapped in :class:`FromCallable`."""
    if isinstance(obj, TrainingSchedule):
        return obj
    return FromCallable(obj)


def from_continuous(schedule, lr: float, total_steps: int | None = None) -> TrainingSchedule | None:
    """The step schedule that applies a continuous-time ``schedule`` (``α_t``, with ``t = Σ η``)
    to an optimizer run at a constant learning rate ``lr`` whose base decay is ``α``.

    Step ``k`` covers the time ``[k·lr, (k+1)·lr)``. ``NoDecay`` (or zero constant decay) →
    ``None`` (nothing to schedule); ``ConstantDecay`` → :func:`constant`; ``SwitchOffDecay`` at
    time ``T`` → off from step ``ceil(T / lr)`` (a switch at or beyond ``total_steps`` keeps the
    decay on for the whole run, as in continuous time); ``BudgetDecay`` → :func:`budget` (exact
    in ``a = Σ lr·λ``, whatever the learning rate does).

    >>> from mirrorflow.schedules.continuous import SwitchOffDecay
    >>> from_continuous(SwitchOffDecay(1.0, at=0.6), lr=2e-3).at
    300
    """
    from mirrorflow.schedules.continuous import Schedule

    lr = check_finite_scalar("lr", lr, minimum=0.0, strict=True)
    total_steps = _check_total(total_steps)
    if isinstance(schedule, Schedule):  # the schedule object knows its own step form
        return schedule.step_form(lr, total_steps)
    raise MirrorflowError(f"cannot convert {schedule!r} to a step schedule; use a ConstantDecay, "
                          f"SwitchOffDecay or BudgetDecay, or pass a training schedule")
