"""The experiment pattern: a frozen, validated ``Config`` -> ``run(config)`` -> ``Result``.

Every experiment module defines

* ``Config``: a frozen pydantic dataclass (unknown fields and wrong types are rejected with the
  field's name; strings from the command line are coerced);
* ``run(config, progress=False) -> Result`` (and optionally ``run_batch(configs)``);
* ``Result``: a frozen dataclass of scalar metrics plus ``curves`` (time series, arrays), with
  :meth:`ExperimentResult.summary` for the scalars;
* ``plot(results, path)``: a figure of the curves;

and registers an :class:`Experiment` in :data:`mirrorflow.experiments.REGISTRY`. The CLI, the
sweep runner and the report use only this interface.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydantic

from mirrorflow._validation import MirrorflowError, check_choice

__all__ = [
    "CONFIG",
    "Experiment",
    "ExperimentResult",
    "config_fields",
    "make_config",
]

#: pydantic settings shared by every experiment Config: frozen, strict about unknown keys.
CONFIG = pydantic.ConfigDict(extra="forbid", validate_default=True)


def _one_line(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"]
        if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            msg = "unknown field"
        elif "input" in err and err["type"] != "missing":
            msg = f"{msg} (got {err['input']!r})"
        parts.append(f"{loc}: {msg}")
    return "invalid config: " + "; ".join(parts)


def make_config(config_cls: type, overrides: Mapping[str, Any] | None = None) -> Any:
    """Build ``config_cls(**overrides)``; validation errors become a one-line MirrorflowError."""
    overrides = dict(overrides or {})
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise MirrorflowError(
            f"invalid config: unknown field(s) {', '.join(unknown)}; "
            f"valid fields: {', '.join(sorted(names))}"
        )
    overrides = {k: _none_if_allowed(config_cls, k, v) for k, v in overrides.items()}
    try:
        return config_cls(**overrides)
    except pydantic.ValidationError as exc:
        raise MirrorflowError(_one_line(exc)) from None
    except (ValueError, TypeError) as exc:
        raise MirrorflowError(f"invalid config: {exc}") from None


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


class ExperimentResult:
    """Mixin for Result dataclasses: ``summary()`` returns the scalar metrics as plain Python."""

    def summary(self) -> dict[str, Any]:
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


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: name, Config class, and the functions over it."""

    name: str
    config_cls: type
    run: Callable[..., Any]
    description: str
    plot: Callable[[Sequence[Any], Path], None] | None = None
    run_batch: Callable[..., list[Any]] | None = None

    def make_config(self, overrides: Mapping[str, Any] | None = None) -> Any:
        return make_config(self.config_cls, overrides)

    def run_many(self, configs: Sequence[Any], progress: bool = False) -> list[Any]:
        """Run several configs, batched when the experiment supports it."""
        if self.run_batch is not None:
            return self.run_batch(list(configs), progress=progress)
        return [self.run(c, progress=progress) for c in configs]


class Registry(dict):
    """``name -> Experiment``, loaded on first use.

    Built-in experiments are registered by module path (:meth:`register_lazy`), so looking up
    ``sparse-regression`` does not import transformers for ``lora``. Iteration, ``in`` and
    ``len`` see every registered name; reading a value imports its module. An unknown name gives
    a one-line error through :meth:`get_experiment`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lazy: dict[str, tuple[str, str]] = {}

    def register_lazy(self, name: str, module: str, description: str) -> None:
        """Register the ``EXPERIMENT`` of ``module`` under ``name`` without importing it."""
        self._lazy[name] = (module, description)
        super().__setitem__(name, None)

    def description(self, name: str) -> str:
        if name in self._lazy and super().__getitem__(name) is None:
            return self._lazy[name][1]
        return self[name].description

    def __getitem__(self, name: str) -> Experiment:
        exp = super().__getitem__(name)
        if exp is None:
            import importlib

            exp = importlib.import_module(self._lazy[name][0]).EXPERIMENT
            super().__setitem__(name, exp)
        return exp

    def get(self, name, default=None):
        return self[name] if name in self else default

    def values(self):
        return [self[k] for k in self]

    def items(self):
        return [(k, self[k]) for k in self]

    def get_experiment(self, name: str) -> Experiment:
        check_choice("experiment", name, sorted(self))
        return self[name]
