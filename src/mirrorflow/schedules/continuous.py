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

Each schedule object answers the schedule questions itself: its ``name`` (the key of the table
:data:`SCHEDULES` that the CLI and configs use), ``rate(t)``, the closed-form ``integral(t)``,
``final_integral`` and its step form for an optimizer (:meth:`Schedule.step_form`, what
:func:`~mirrorflow.schedules.training.from_continuous` returns). A new schedule is one subclass
plus :func:`register_schedule` (docs/index.md shows one).

>>> s = SwitchOffDecay(0.5, at=2.0)
>>> s.name, float(s.rate(1.0)), float(s.rate(3.0)), float(s.integral(10.0)), s.final_integral
('switch-off', 0.5, 0.0, 1.0, 1.0)
>>> SCHEDULE_NAMES
('none', 'constant', 'switch-off', 'budget')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mirrorflow._core.validation import MirrorflowError, check_choice, check_finite_scalar

__all__ = [
    "OPTIONS",
    "SCHEDULES",
    "SCHEDULE_NAMES",
    "BudgetDecay",
    "ConstantDecay",
    "NoDecay",
    "Schedule",
    "SwitchOffDecay",
    "make_schedule",
    "register_schedule",
    "unused_options",
]

#: The schedule options every experiment Config carries: the arguments of
#: :meth:`Schedule.from_options`.
OPTIONS = ("wd", "switch_at", "budget")


@dataclass(frozen=True)
class Schedule:
    """Base class: subclasses implement :meth:`rate` and :meth:`integral` (closed form).

    Optional: ``name`` (table key), :meth:`from_options` (build from the CLI/config options),
    ``options`` (which of them it reads), :meth:`step_form` (the optimizer-step schedule),
    ``breakpoints`` (where ``α`` jumps).
    """

    #: Key in :data:`SCHEDULES` (``""`` for a schedule not in the table).
    name: ClassVar[str] = ""
    #: The options of :data:`OPTIONS` that :meth:`from_options` reads; a config differing only
    #: in another one is the same run (the report's labels and the claims' pairing use it).
    options: ClassVar[tuple[str, ...]] = OPTIONS
    #: The option(s) that set :attr:`settle_time`, for messages (``""``: the decay never ends).
    ends_by: ClassVar[str] = ""
    #: Whether :meth:`step_form` ends the decay when the integrated decay reaches its target,
    #: exactly on any step grid (so no grid can miss the end of the decay).
    exact_on_steps: ClassVar[bool] = False

    @classmethod
    def from_options(cls, wd: float = 0.0, switch_at: float | None = None,
                     budget: float | None = None) -> Schedule:  # pragma: no cover - abstract
        """Build from the options every config carries (``wd``, ``switch_at``, ``budget``)."""
        raise MirrorflowError(f"{cls.__name__} cannot be built from a name; construct it directly")

    def step_form(self, lr: float, total_steps: int | None = None) -> Any:
        """The :mod:`~mirrorflow.schedules.training` step schedule applying this decay to an
        optimizer at constant learning rate ``lr`` (``None``: nothing to schedule)."""
        raise MirrorflowError(f"cannot convert {type(self).__name__} to a step schedule; use a "
                              f"ConstantDecay, SwitchOffDecay or BudgetDecay, or pass a training "
                              f"schedule")

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
    """``α_t = 0``.

    >>> NoDecay().final_integral, NoDecay().step_form(lr=0.1) is None
    (0.0, True)
    """

    name: ClassVar[str] = "none"
    options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_options(cls, wd=0.0, switch_at=None, budget=None) -> NoDecay:
        return cls()

    def step_form(self, lr, total_steps=None):
        return None

    def rate(self, t):
        return np.zeros_like(np.asarray(t, dtype=np.float64))

    def integral(self, t):
        return np.zeros_like(np.asarray(t, dtype=np.float64))

    def describe(self) -> str:
        return "none"


@dataclass(frozen=True)
class ConstantDecay(Schedule):
    """``α_t = wd`` for all ``t``: ``a_t = wd·t`` grows without end.

    >>> c = ConstantDecay(0.2)
    >>> float(c.integral(5.0)), c.final_integral, c.describe()
    (1.0, inf, 'constant(wd=0.2)')
    >>> type(c.step_form(lr=0.01)).__name__, ConstantDecay(0.0).step_form(lr=0.01)
    ('Constant', None)
    """

    wd: float
    name: ClassVar[str] = "constant"
    options: ClassVar[tuple[str, ...]] = ("wd",)

    @classmethod
    def from_options(cls, wd=0.0, switch_at=None, budget=None) -> ConstantDecay:
        return cls(wd)

    def step_form(self, lr, total_steps=None):
        from mirrorflow.schedules import training

        return None if self.wd == 0 else training.constant()

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
    """``α_t = wd`` for ``t < at``, then 0: leaves ``a = wd · at`` behind.

    >>> s = SwitchOffDecay(0.2, at=5.0)
    >>> float(s.integral(2.5)), s.final_integral, s.breakpoints
    (0.5, 1.0, (5.0,))
    >>> s.step_form(lr=0.01).at                   # off from step ceil(5.0 / 0.01)
    500
    >>> type(s.step_form(lr=0.01, total_steps=400)).__name__   # never reached: stays on
    'Constant'
    """

    wd: float
    at: float
    name: ClassVar[str] = "switch-off"
    options: ClassVar[tuple[str, ...]] = ("wd", "switch_at")
    ends_by: ClassVar[str] = "switch_at"

    @classmethod
    def from_options(cls, wd=0.0, switch_at=None, budget=None) -> SwitchOffDecay:
        if switch_at is None:
            raise MirrorflowError("schedule 'switch-off' needs a switch time: pass --switch-at T")
        return cls(wd, switch_at)

    def step_form(self, lr, total_steps=None):
        from mirrorflow.schedules import training

        at = math.ceil(self.at / lr - 1e-9)
        if total_steps is not None and at >= total_steps:
            return training.constant()
        return training.switch_off(at)

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

    >>> b = BudgetDecay(0.5, target_a=2.0)
    >>> b.at, b.final_integral, b.step_form(lr=0.1).target_a
    (4.0, 2.0, 2.0)
    """

    wd: float
    at: float = 0.0
    target_a: float = 0.0
    name: ClassVar[str] = "budget"
    options: ClassVar[tuple[str, ...]] = ("wd", "budget")
    ends_by: ClassVar[str] = "budget/wd"
    exact_on_steps: ClassVar[bool] = True

    @classmethod
    def from_options(cls, wd=0.0, switch_at=None, budget=None) -> BudgetDecay:
        if budget is None:
            raise MirrorflowError("schedule 'budget' needs a target integrated decay: pass budget=A")
        return cls(wd, target_a=budget)

    def step_form(self, lr, total_steps=None):
        from mirrorflow.schedules import training

        return training.budget(self.target_a)

    def __post_init__(self):
        wd = check_finite_scalar("wd", self.wd, minimum=0.0, strict=True)
        a = check_finite_scalar("budget (target a)", self.target_a, minimum=0.0, strict=True)
        object.__setattr__(self, "wd", wd)
        object.__setattr__(self, "target_a", a)
        object.__setattr__(self, "at", a / wd)

    def describe(self) -> str:
        return f"budget(wd={self.wd:g}, a={self.target_a:g})"


#: The one table of schedule names: name -> schedule class (``cls.name == key``).
SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (NoDecay, ConstantDecay, SwitchOffDecay, BudgetDecay)
}

#: The built-in names, in the table's order (the ``Config.schedule`` literal checks against it).
SCHEDULE_NAMES = tuple(SCHEDULES)


def register_schedule(cls: type[Schedule], *, replace: bool = False) -> type[Schedule]:
    """Add a :class:`Schedule` subclass to :data:`SCHEDULES` under ``cls.name`` (usable as a
    class decorator), so that :func:`make_schedule` builds it by name.

    >>> register_schedule(NoDecay)
    Traceback (most recent call last):
    ...
    mirrorflow._core.errors.MirrorflowError: a schedule named 'none' is already registered; pick another name or pass replace=True
    """
    if not (isinstance(cls, type) and issubclass(cls, Schedule)) or not cls.name:
        raise MirrorflowError(f"register a Schedule subclass with a non-empty name, got {cls!r}")
    if cls.name in SCHEDULES and not replace:
        raise MirrorflowError(f"a schedule named {cls.name!r} is already registered; pick another "
                              "name or pass replace=True")
    SCHEDULES[cls.name] = cls
    return cls


def make_schedule(name: str, wd: float = 0.0, switch_at: float | None = None,
                  budget: float | None = None) -> Schedule:
    """Build a continuous-time schedule from its name in :data:`SCHEDULES`.

    ``none``; ``constant`` (needs ``wd``); ``switch-off`` (needs ``wd`` and ``switch_at``);
    ``budget`` (needs ``wd`` and ``budget``, the target integrated decay ``a``).

    >>> make_schedule("budget", wd=0.5, budget=1.0).at   # on for a / wd
    2.0
    >>> make_schedule("switch-off", wd=0.1)
    Traceback (most recent call last):
    ...
    mirrorflow._core.errors.MirrorflowError: schedule 'switch-off' needs a switch time: pass --switch-at T
    """
    check_choice("schedule", name, tuple(SCHEDULES))
    return SCHEDULES[name].from_options(wd, switch_at, budget)


def unused_options(name: Any) -> tuple[str, ...]:
    """The options of :data:`OPTIONS` that the schedule named ``name`` does not read (``()``
    for a name not in :data:`SCHEDULES`: nothing is known to be unused).

    >>> unused_options("none"), unused_options("switch-off"), unused_options("cosine")
    (('wd', 'switch_at', 'budget'), ('budget',), ())
    """
    cls = SCHEDULES.get(name) if isinstance(name, str) else None
    return () if cls is None else tuple(o for o in OPTIONS if o not in cls.options)


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
