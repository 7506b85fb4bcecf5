"""The experiment pattern: a frozen, validated ``Config`` -> ``run(config)`` -> ``Result``.

Every experiment module defines

* ``Config``: a frozen pydantic dataclass deriving from :class:`ScheduleConfig`, which declares
  the fields every experiment shares — ``schedule``, ``wd``, ``switch_at`` (a time
  ``t = Σ η``), ``budget``, ``seed`` — with their validation and :meth:`~ScheduleConfig.make_schedule`;
  a Config overrides only their defaults (as PEFT's ``LoraConfig(PeftConfig)``). Unknown fields
  and wrong types are rejected with the field's name; strings from the command line are coerced.
* ``run(config, progress=False) -> Result`` (and optionally ``run_batch(configs)``);
* ``Result``: a frozen dataclass (:class:`ExperimentResult`) of scalar metrics plus ``curves``;
* ``plot(results, path)``: a figure of the curves, which also works on results read back from a
  results store (:meth:`ExperimentResult.from_record`);
* ``SWEEPS``: its quick and full built-in sweeps (``mirrorflow reproduce``);

and exposes an :class:`Experiment` named ``EXPERIMENT``; the first line of the module docstring
is its description (:mod:`mirrorflow.experiments` registers it). The CLI, the sweep runner and
the report use only this interface; ``tests/test_experiment_contract.py`` checks it for every
registered experiment.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import typing
from collections.abc import Callable, Hashable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import numpy as np
import pydantic
import pydantic_core
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass as pdataclass

from mirrorflow._core.limits import Limits, RunCost, check_cost
from mirrorflow._core.validation import MirrorflowError, check_choice
from mirrorflow.schedules.continuous import SCHEDULE_NAMES, SCHEDULES, Schedule, make_schedule

__all__ = [
    "CONFIG",
    "RETIRED_FIELDS",
    "Baseline",
    "BudgetTarget",
    "Decay",
    "Experiment",
    "ExperimentResult",
    "RetiredField",
    "RunCost",
    "ScheduleConfig",
    "ScheduleName",
    "Seed",
    "SwitchTime",
    "TimeGrid",
    "beats_baseline",
    "check_limits",
    "config_fields",
    "first_line",
    "make_config",
    "mark_switch",
    "run_grouped",
]

#: pydantic settings shared by every experiment Config: frozen, strict about unknown keys.
CONFIG = pydantic.ConfigDict(extra="forbid", validate_default=True)

# -- reusable field types (scikit-learn's declared constraints, as pydantic annotations) ------
#: One of :data:`mirrorflow.schedules.continuous.SCHEDULE_NAMES`, i.e. a key of the one table
#: :data:`~mirrorflow.schedules.continuous.SCHEDULES` when this module is imported (derived from
#: it: a schedule added to the table needs no edit here; ``tests/test_config_constraints.py``).
ScheduleName = Annotated[Literal[SCHEDULE_NAMES],  # type: ignore[valid-type]
                         Field(description="weight-decay schedule: " + " | ".join(SCHEDULE_NAMES))]
#: A weight decay ``α ≥ 0`` (finite).
Decay = Annotated[float, Field(ge=0, allow_inf_nan=False, description="weight decay α (≥ 0)")]
#: A switch-off time in continuous time ``t = Σ η`` (for optimizers: ``Σ lr``), ``≥ 0``.
SwitchTime = Annotated[float, Field(ge=0, allow_inf_nan=False,
                                    description="switch-off time t = Σ η (continuous time)")]
#: The target integrated decay ``a > 0`` of the ``budget`` schedule (``None``: not used).
BudgetTarget = Annotated[float | None, Field(gt=0, allow_inf_nan=False,
                                             description="target integrated decay a for 'budget'")]
#: A random seed ``≥ 0``.
Seed = Annotated[int, Field(ge=0, description="random seed")]


class TimeGrid(NamedTuple):
    """The steps of a run in continuous time: step length, end of the run, and how the end is
    set (e.g. ``"t_max"``, ``"steps·lr"``), for messages."""

    step: float
    end: float
    horizon: str


@pdataclass(frozen=True, config=CONFIG)
class ScheduleConfig:
    """The fields every experiment Config shares: the weight-decay schedule and the seed.

    ``switch_at`` is always a time ``t = Σ η`` (for AdamW-trained networks ``t = Σ lr``, so step
    ``k`` at a constant learning rate is ``t = k·lr``); ``budget`` is the target ``a = ∫ α`` of
    the ``budget`` schedule. Subclasses override the defaults, never the meaning.

    Shared validation (docs/reliability.md): every float field must be finite, and a subclass
    that declares its :meth:`time_grid` gets its schedule checked against it — a config that
    cannot apply the decay it asks for (switch after the end of the run, a step longer than the
    run, a step grid that misses the switch by more than 1 % of ``a``) is refused up front.
    Subclasses declare :meth:`cost` (steps and memory), which the CLI and sweeps check against
    :class:`mirrorflow._core.limits.Limits` before anything is allocated.
    """

    schedule: Annotated[ScheduleName, Field(description="weight-decay schedule α_t (docs/theory.md §1)")] = "switch-off"
    wd: Decay = 0.1
    switch_at: SwitchTime = 10.0
    budget: BudgetTarget = None
    seed: Seed = 0

    #: How the step grid samples the decay: ``"midpoint"`` (gradient descent: step ``k`` uses
    #: ``α((k + ½) η)``) or ``"start"`` (optimizers: the decay is off from step ``ceil(T / lr)``).
    #: A plain class attribute, not a field: not part of the config or of run ids.
    decay_rule = "midpoint"

    def make_schedule(self) -> Schedule:
        """The continuous-time schedule ``α_t`` of this config (docs/theory.md §1)."""
        return make_schedule(self.schedule, self.wd, self.switch_at, self.budget)

    @property
    def schedule_cls(self) -> type[Schedule]:
        """The class of :meth:`make_schedule` (:data:`~mirrorflow.schedules.continuous.SCHEDULES`
        entry): it answers which options the schedule reads (``options``) without building it.
        """
        return SCHEDULES[self.schedule]

    def time_grid(self) -> TimeGrid | None:
        """The run's step grid in continuous time (``None``: no fixed grid to check)."""
        return None

    def cost(self) -> RunCost | None:
        """Estimated steps and peak memory of one run (``None``: unknown)."""
        return None

    @model_validator(mode="after")
    def _check_schedule(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{f.name} must be finite, got {v}")
        try:  # the schedule says what it needs (e.g. 'budget' needs budget=A)
            self.make_schedule()
        except MirrorflowError as exc:
            raise ValueError(str(exc)) from None
        self._check_time_grid()
        return self

    def _check_time_grid(self) -> None:
        grid = self.time_grid()
        if grid is None:
            return
        step, end, horizon = grid
        if step > end * (1 + 1e-12):
            raise ValueError(f"the step ({step:g}) is longer than the whole run ({horizon} = "
                             f"{end:g}): the run would be one step; use a smaller step")
        sched = self.make_schedule()
        if not sched.breakpoints or self.wd == 0:  # no end of the decay to check
            return
        settle = float(sched.settle_time)
        asked = sched.ends_by or "the schedule"
        if settle > end * (1 + 1e-9):
            raise ValueError(f"the decay ends at t = {settle:g} ({asked}), after the end of the run "
                             f"({horizon} = {end:g}): only part of it would be applied; raise "
                             f"{horizon.split('·')[0]} or end the decay earlier")
        if settle == 0 or (sched.exact_on_steps and self.decay_rule == "start"):
            return  # the optimizers' step form lands on its target a = Σ lr·λ exactly
        shift = 0.5 if self.decay_rule == "midpoint" else 0.0
        n = max(0, math.ceil(settle / step - shift - 1e-9))
        if abs(n * step - settle) > 0.01 * settle:
            raise ValueError(f"with step {step:g} the decay is applied for {n} step(s), a = "
                             f"{self.wd * n * step:g} instead of wd·{settle:g} = "
                             f"{self.wd * settle:g}; use a step that divides {settle:g} or one "
                             f"<= {settle / 50:g}")


def check_limits(config: Any, limits: Limits | None = None, where: str = "") -> None:
    """One-line :class:`MirrorflowError` when the run of ``config`` would exceed the step or
    memory limit (:meth:`ScheduleConfig.cost`); nothing is allocated."""
    cost = getattr(config, "cost", None)
    check_cost(cost() if callable(cost) else None, limits, where)


def _one_line(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            msg = "unknown field"
        elif "input" in err and err["type"] != "missing" and err["loc"] \
                and not isinstance(err["input"], pydantic_core.ArgsKwargs):
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{loc}: {msg}" if loc else msg)  # a whole-config check names its fields
    return "invalid config: " + " ".join(" ".join(parts).split())


@dataclass(frozen=True)
class RetiredField:
    """A Config field that was removed (a deprecation, not a break).

    ``keeps``: the value that means what the experiment does today — given, it is dropped
    with a ``DeprecationWarning``; any other value is a one-line :class:`MirrorflowError`
    saying what to do ``instead`` (an old behaviour silently not done would be a wrong result).
    A stored run (``make_config(..., stored=True)``: the report, the store's migration) loads
    whatever the value: its own metrics do not depend on it. A Config lists the names in its
    plain class attribute ``retired``.
    """

    name: str
    keeps: Any
    instead: str

    def check(self, value: Any, stored: bool = False) -> None:
        """Accept ``value`` for the retired field (and drop it), or raise the one-line error."""
        if stored:
            return
        try:  # as the field read it: "false", "0", 0 from a command line or spec mean False
            same = pydantic.TypeAdapter(type(self.keeps)).validate_python(value) == self.keeps
        except pydantic.ValidationError:
            same = False
        if same:
            import warnings

            warnings.warn(f"config field {self.name!r} was retired and is ignored; drop it",
                          DeprecationWarning, stacklevel=3)
            return
        raise MirrorflowError(f"invalid config: {self.name}={value!r} was retired; {self.instead}")


#: Retired Config fields by name (:class:`RetiredField`). ``compare=True`` trained the
#: experiment's own none/constant side runs next to the main one; a sweep over ``schedule`` does
#: the same with every run its own row (docs/sweeps.md, "Comparing schedules").
RETIRED_FIELDS: dict[str, RetiredField] = {
    "compare": RetiredField(
        "compare", False,
        "compare schedules with a sweep instead: a spec with `[grid] schedule = [\"none\", "
        "\"constant\", \"switch-off\"]` run by `mirrorflow sweep SPEC` (docs/sweeps.md, "
        "'Comparing schedules')"),
}


def make_config(config_cls: type, overrides: Mapping[str, Any] | None = None, *,
                stored: bool = False) -> Any:
    """Build ``config_cls(**overrides)``; validation errors become a one-line MirrorflowError.

    A retired field the class lists in ``retired`` (:data:`RETIRED_FIELDS`) is dropped when it
    has the value that keeps today's behaviour (``DeprecationWarning``) or when the config is a
    ``stored`` run's; any other value is a one-line error.

    >>> from mirrorflow.experiments.attention import Config
    >>> make_config(Config, {"compare": True})
    Traceback (most recent call last):
    ...
    mirrorflow._core.errors.MirrorflowError: invalid config: compare=True was retired; compare schedules with a sweep instead: a spec with `[grid] schedule = ["none", "constant", "switch-off"]` run by `mirrorflow sweep SPEC` (docs/sweeps.md, 'Comparing schedules')
    >>> make_config(Config, {"compare": True, "seed": 3}, stored=True).seed
    3
    """
    overrides = dict(overrides or {})
    for name in getattr(config_cls, "retired", ()):
        if name in overrides:
            RETIRED_FIELDS[name].check(overrides.pop(name), stored)
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise MirrorflowError(
            f"invalid config: unknown field(s) {', '.join(unknown)}; "
            f"valid fields: {', '.join(sorted(names))}"
        )
    overrides = {k: _none_if_allowed(config_cls, k, v) for k, v in overrides.items()}
    hints = typing.get_type_hints(config_cls, include_extras=True)
    for k, v in overrides.items():  # pydantic's lax mode reads True as 1: refuse it here
        if isinstance(v, bool) and not _accepts_bool(hints.get(k, Any)):
            raise MirrorflowError(f"invalid config: {k}: expected a number or text, got the "
                                  f"boolean {str(v).lower()}")
    try:
        return config_cls(**overrides)
    except pydantic.ValidationError as exc:
        raise MirrorflowError(_one_line(exc)) from None
    except (ValueError, TypeError) as exc:
        raise MirrorflowError(f"invalid config: {exc}") from None


def _accepts_bool(hint: Any) -> bool:
    """Whether a field of type ``hint`` takes a boolean as such (``bool``, ``Any``, a Literal of
    booleans, or a union/annotation around one)."""
    if hint is bool or hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _accepts_bool(args[0])
    if origin is Literal:
        return any(isinstance(a, bool) for a in args)
    return any(_accepts_bool(a) for a in args)


def _none_if_allowed(config_cls: type, name: str, value: Any) -> Any:
    """Command-line text ``none``/``null`` means ``None`` for optional fields, unless the field
    takes that very string (e.g. ``schedule="none"``)."""
    if not (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        return value
    hint = typing.get_type_hints(config_cls).get(name)
    try:
        pydantic.TypeAdapter(hint).validate_python(value)
        return value
    except pydantic.ValidationError:
        return None


def config_fields(config_cls: type) -> dict[str, Any]:
    """``{field name: default}`` of a Config class."""
    return {f.name: f.default for f in dataclasses.fields(config_cls)}


@dataclass(frozen=True)
class Baseline:
    """What a run that learned nothing scores: the chance level of one metric.

    ``metric``: a scalar metric of the Result (e.g. ``val_loss``); ``value``: its chance level
    (e.g. ``ln C`` for the cross-entropy of a uniform prediction over ``C`` classes); ``what``:
    how the value arises, for the report. A run *beats* the baseline when its metric is finite
    and at least ``margin`` (relative) better: ``metric ≤ (1 − margin)·value`` for losses
    (``higher_is_better=False``), ``metric ≥ (1 + margin)·value`` otherwise.
    """

    metric: str
    value: float
    what: str
    margin: float = 0.05
    higher_is_better: bool = False

    def beaten_by(self, metrics: Mapping[str, Any]) -> bool:
        """Whether a run with these scalar metrics beats the baseline (NaN/missing: no)."""
        v = metrics.get(self.metric)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if self.higher_is_better:
            return v >= (1 + self.margin) * self.value
        return v <= (1 - self.margin) * self.value


def beats_baseline(result: Any) -> bool | None:
    """Whether ``result`` beats its experiment's chance level (:meth:`ExperimentResult.baseline`);
    ``None`` when the experiment declares none. A diverged run (NaN metric) does not."""
    baseline = getattr(result, "baseline", None)
    b = baseline() if callable(baseline) else None
    return None if b is None else b.beaten_by(result.metrics())


class ExperimentResult:
    """Mixin for Result dataclasses (fields ``config``, scalar metrics, ``curves``).

    :meth:`metrics` gives the scalar metrics as plain Python, :meth:`summary` the same plus the
    config that was run, and :meth:`from_record` rebuilds a Result from a results store.
    :meth:`baseline` is the run's chance level (``None``: not declared); :func:`beats_baseline`
    applies it.
    """

    def baseline(self) -> Baseline | None:
        """The chance level of this run's main metric (experiments override this)."""
        return None

    def metrics(self) -> dict[str, Any]:
        """The scalar metrics (numbers, strings, ``None``; sequences as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("config", "curves"):
                continue
            val = getattr(self, f.name)
            if isinstance(val, np.generic):
                val = val.item()
            if isinstance(val, (int, float, str, bool)) or val is None:
                out[f.name] = val
            elif isinstance(val, (list, tuple, np.ndarray)):
                out[f.name] = np.asarray(val).tolist()
        return out

    def summary(self) -> dict[str, Any]:
        """``{"config": {...}, **metrics}``: what was run and what came out, JSON-ready."""
        config = getattr(self, "config", None)
        cfg = {} if config is None else pydantic.TypeAdapter(type(config)).dump_python(
            config, mode="json")
        return {"config": cfg, **self.metrics()}

    @classmethod
    def from_record(cls, config: Any, metrics: Mapping[str, Any],
                    curves: Mapping[str, Any] | None = None):
        """The Result of a stored run: ``config`` (a Config), its stored metrics and curves.

        Sequences stored as JSON lists come back as tuples where the field is a tuple. A metric
        the record lacks (written by another version) is a one-line :class:`MirrorflowError`.
        """
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "config":
                kwargs["config"] = config
            elif f.name == "curves":
                kwargs["curves"] = dict(curves or {})
            elif f.name in metrics:
                val = metrics[f.name]
                if isinstance(val, list) and typing.get_origin(hints.get(f.name)) is tuple:
                    val = tuple(val)
                kwargs[f.name] = val
            elif f.default is not dataclasses.MISSING:
                continue
            else:
                raise MirrorflowError(f"stored run lacks metric {f.name!r} of {cls.__module__}."
                                      f"{cls.__name__}; it was written by another version — "
                                      f"run it again")
        return cls(**kwargs)


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: name, Config/Result classes, and the functions over them.

    ``sweeps``: ``{"quick": spec, "full": spec}`` in the form of a TOML sweep spec without the
    ``experiment`` key (docs/sweeps.md). ``smoke``: Config overrides for a run of a few seconds
    (the contract test). ``migrate``: maps a config stored by an older mirrorflow (results-store
    schema 1) to ``(experiment name, current config dict)``; ``None`` when nothing changed.
    """

    name: str
    config_cls: type
    run: Callable[..., Any]
    description: str
    result_cls: type | None = None
    plot: Callable[[Sequence[Any], Path], None] | None = None
    run_batch: Callable[..., list[Any]] | None = None
    sweeps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    smoke: Mapping[str, Any] = field(default_factory=dict)
    migrate: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]] | None = None
    #: most runs (seeds of one setting) a sweep gives one task of a batched experiment: the
    #: stacked-seed experiments (vit, lora-lm) train that many seeds as one model
    batch: int = 4
    #: ``prepare(configs)``: the one-time, cached setup these runs share (lora-lm: pretraining
    #: its model), safe to call from another process at the same time as runs (they wait for
    #: it under a lock). ``mirrorflow reproduce`` starts it in the background at the beginning
    #: so that no worker sits idle waiting for it (:func:`mirrorflow.sweep.prepare_ahead`).
    prepare: Callable[[Sequence[Any]], None] | None = None

    def make_config(self, overrides: Mapping[str, Any] | None = None) -> Any:
        return make_config(self.config_cls, overrides)

    def run_many(self, configs: Sequence[Any], progress: bool = False) -> list[Any]:
        """Run several configs, batched when the experiment supports it."""
        if self.run_batch is not None:
            return self.run_batch(list(configs), progress=progress)
        return [self.run(c, progress=progress) for c in configs]

    def result_from_record(self, config: Mapping[str, Any], metrics: Mapping[str, Any],
                           curves: Mapping[str, Any]) -> Any:
        """A ``Result`` rebuilt from what a results store holds (config, metrics, curves)."""
        if self.result_cls is None:
            raise MirrorflowError(f"experiment {self.name!r} declares no result_cls; results "
                                  f"of its stored runs cannot be rebuilt")
        return self.result_cls.from_record(make_config(self.config_cls, dict(config), stored=True),
                                           metrics, curves)


def run_grouped(configs: Sequence[Any], key: Callable[[Any], Hashable],
                run_group: Callable[[list[Any], bool], list[Any]], progress: bool = False) -> list[Any]:
    """Run ``configs`` in groups of equal ``key(config)`` (each group one batched simulation);
    results come back in the order of ``configs``."""
    groups: dict[Hashable, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(key(c), []).append(i)
    results: dict[int, Any] = {}
    for idx in groups.values():
        for i, r in zip(idx, run_group([configs[i] for i in idx], progress), strict=True):
            results[i] = r
    return [results[i] for i in range(len(configs))]


def mark_switch(axes, config: ScheduleConfig, per_unit: float = 1.0) -> None:
    """Dotted vertical line where a ``switch-off``/``budget`` schedule of ``config`` ends.

    ``per_unit`` converts the schedule's continuous time to the x-axis unit (e.g. ``1/step``
    for an axis in iterations).
    """
    sched = config.make_schedule()
    if sched.breakpoints:  # the decay ends
        at = sched.settle_time * per_unit
        for ax in axes:
            ax.axvline(at, color="gray", ls=":", lw=1)


def first_line(docstring: str | None) -> str:
    """The first line of a docstring, without reStructuredText literal markers."""
    line = (docstring or "").strip().splitlines()[0] if (docstring or "").strip() else ""
    return line.replace("``", "").rstrip(".")


def module_description(module: str) -> str:
    """:func:`first_line` of a module's docstring, read from its source without importing it."""
    from importlib.util import find_spec

    spec = find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    return first_line(ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))))


class Registry(MutableMapping):
    """``name -> Experiment``, loaded on first use (a ``Mapping``, not a ``dict`` subclass).

    Built-in experiments are registered by module path (:meth:`register_lazy`), so looking up
    ``sparse-regression`` does not import transformers for ``lora``. Iteration, ``in`` and
    ``len`` see every registered name without importing; every way of reading a value
    (``[]``, ``get``, ``values``, ``items``, ``dict(registry)``, ``pop``) goes through the
    loading. An unknown name gives a one-line error through :meth:`get_experiment`.

    >>> r = Registry()
    >>> r.register_lazy("json-like", "json")          # any module with an EXPERIMENT attribute
    >>> "json-like" in r, len(r), list(r)
    (True, 1, ['json-like'])
    >>> r.copy() is not r, sorted(r.copy())
    (True, ['json-like'])
    """

    def __init__(self) -> None:
        self._entries: dict[str, Experiment | None] = {}
        self._lazy: dict[str, str] = {}

    def register_lazy(self, name: str, module: str) -> None:
        """Register the ``EXPERIMENT`` of ``module`` under ``name`` without importing it."""
        self._lazy[name] = module
        self._entries[name] = None

    def description(self, name: str) -> str:
        """The experiment's description (its module docstring's first line), without importing
        a module that is not loaded yet."""
        if name in self._lazy and self._entries.get(name) is None:
            return module_description(self._lazy[name])
        return self[name].description

    def __getitem__(self, name: str) -> Experiment:
        exp = self._entries[name]
        if exp is None:
            import importlib

            exp = importlib.import_module(self._lazy[name]).EXPERIMENT
            self._entries[name] = exp
        return exp

    def __setitem__(self, name: str, exp: Experiment | None) -> None:
        """Register ``exp`` under ``name`` (``None``: load it from :attr:`_lazy` on first use)."""
        self._entries[name] = exp

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        self._lazy.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({sorted(self._entries)})"

    def copy(self) -> Registry:
        """A new registry with the same entries (lazy ones stay lazy until read)."""
        new = Registry()
        new._entries = dict(self._entries)
        new._lazy = dict(self._lazy)
        return new

    def get_experiment(self, name: str) -> Experiment:
        check_choice("experiment", name, sorted(self))
        return self[name]
