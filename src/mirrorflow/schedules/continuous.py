"""Weight-decay schedules in continuous time ``t = Σ_k η_k`` (docs/theory.md §1).

A schedule is a pure, frozen object: ``rate(t)`` gives the decay ``α_t`` and ``integral(t)`` the
integrated decay ``a_t = ∫_0^t α_s ds`` — the single number that carries the lasting effect.
Both are vectorized over ``t``. ``breakpoints`` lists the times where ``α`` jumps (ODE solvers
integrate piecewise between them) and ``settle_time`` the time after which ``α`` is constant.

Names: these describe the decay ``α_t`` itself (``ConstantDecay(wd)``, ``SwitchOffDecay(wd, at)``,
``BudgetDecay(wd, target_a)``); the step schedules of :mod:`mirrorflow.schedules.training`
describe a *factor* on an optimizer's own decay (``training.constant()``, ``training.switch_off``)
and :func:`mirrorflow.schedules.training.from_continuous` converts one into the other. The old
names ``Constant``, ``SwitchOff``, ``Budget`` still work here, with a ``DeprecationWarning``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirrorflow._core.validation import MirrorflowError, check_choice, check_finite_scalar

__all__ = [
    "SCHEDULE_NAMES",
    "BudgetDecay",
    "ConstantDecay",
    "NoDecay",
    "Schedule",
    "SwitchOffDecay",
    "make_schedule",
]


@dataclass(frozen=True)
class Schedule:
    """Base class: subclasses implement :meth:`rate` and :meth:`integral`."""

    def rate(self, t) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def integral(self, t) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return ()

    @property
    def settle_time(self) -> float:
        """Time after which the decay no longer changes."""
        return max(self.breakpoints, default=0.0)

    @property
    def final_rate(self) -> float:
        return float(self.rate(np.inf if not self.breakpoints else self.settle_time + 1.0))

    @property
    def final_integral(self) -> float:
        """``a_∞``: the integrated decay at ``t → ∞`` (``inf`` if decay never stops)."""
        return float("inf") if self.final_rate > 0 else float(self.integral(self.settle_time))

    def describe(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class NoDecay(Schedule):
    """``α_t = 0``."""

    def rate(self, t):
        return np.zeros_like(np.asarray(t, dtype=np.float64))

    def integral(self, t):
        return np.zeros_like(np.asarray(t, dtype=np.float64))

    def describe(self) -> str:
        return "none"


@dataclass(frozen=True)
class ConstantDecay(Schedule):
    """``α_t = wd`` for all ``t``."""

    wd: float

    def __post_init__(self):
        object.__setattr__(self, "wd", check_finite_scalar("wd", self.wd, minimum=0.0))

    def rate(self, t):
        return np.full_like(np.asarray(t, dtype=np.float64), self.wd)

    def integral(self, t):
        return self.wd * np.maximum(np.asarray(t, dtype=np.float64), 0.0)

    def describe(self) -> str:
        return f"constant(wd={self.wd:g})"


@dataclass(frozen=True)
class SwitchOffDecay(Schedule):
    """``α_t = wd`` for ``t < at``, then 0: leaves ``a = wd · at`` behind."""

    wd: float
    at: float

    def __post_init__(self):
        object.__setattr__(self, "wd", check_finite_scalar("wd", self.wd, minimum=0.0))
        object.__setattr__(self, "at", check_finite_scalar("switch time", self.at, minimum=0.0))

    def rate(self, t):
        t = np.asarray(t, dtype=np.float64)
        return np.where(t < self.at, self.wd, 0.0)

    def integral(self, t):
        return self.wd * np.clip(np.asarray(t, dtype=np.float64), 0.0, self.at)

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return (self.at,)

    def describe(self) -> str:
        return f"switch-off(wd={self.wd:g}, at={self.at:g})"


@dataclass(frozen=True)
class BudgetDecay(SwitchOffDecay):
    """Decay ``wd`` until the integrated decay reaches ``target_a``, then off.

    In continuous time this is :class:`SwitchOffDecay` at ``target_a / wd``; the point of the budget
    form is that the lasting geometry depends on ``a`` only.
    """

    wd: float
    at: float = 0.0
    target_a: float = 0.0

    def __post_init__(self):
        wd = check_finite_scalar("wd", self.wd, minimum=0.0, strict=True)
        a = check_finite_scalar("budget (target a)", self.target_a, minimum=0.0, strict=True)
        object.__setattr__(self, "wd", wd)
        object.__setattr__(self, "target_a", a)
        object.__setattr__(self, "at", a / wd)

    def describe(self) -> str:
        return f"budget(wd={self.wd:g}, a={self.target_a:g})"


SCHEDULE_NAMES = ("none", "constant", "switch-off", "budget")


def make_schedule(name: str, wd: float = 0.0, switch_at: float | None = None,
                  budget: float | None = None) -> Schedule:
    """Build a continuous-time schedule from its CLI name.

    ``none``; ``constant`` (needs ``wd``); ``switch-off`` (needs ``wd`` and ``switch_at``);
    ``budget`` (needs ``wd`` and ``budget``, the target integrated decay ``a``).
    """
    check_choice("schedule", name, SCHEDULE_NAMES)
    if name == "none":
        return NoDecay()
    if name == "constant":
        return ConstantDecay(wd)
    if name == "switch-off":
        if switch_at is None:
            raise MirrorflowError("schedule 'switch-off' needs a switch time: pass --switch-at T")
        return SwitchOffDecay(wd, switch_at)
    if budget is None:
        raise MirrorflowError("schedule 'budget' needs a target integrated decay: pass budget=A")
    return BudgetDecay(wd, target_a=budget)


_DEPRECATED = {"Constant": ConstantDecay, "SwitchOff": SwitchOffDecay, "Budget": BudgetDecay}


def __getattr__(name: str):
    if name in _DEPRECATED:
        import warnings

        new = _DEPRECATED[name]
        warnings.warn(f"mirrorflow.schedules.continuous.{name} is now {new.__name__} (distinct "
                      f"from the step schedule training.{name}); the old name will be removed",
                      DeprecationWarning, stacklevel=2)
        return new
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
