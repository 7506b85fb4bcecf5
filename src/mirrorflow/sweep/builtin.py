"""The built-in sweeps of ``mirrorflow reproduce``: each experiment's own quick and full spec.

Every experiment module declares its sweeps next to its Config (``Experiment.sweeps``, in the
form of a TOML spec without the ``experiment`` key; see :mod:`mirrorflow.sweep.spec`). This
module only reads them: experiments that are not registered (missing optional dependencies) or
that declare no sweeps are skipped by :func:`builtin_specs`, which says which.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mirrorflow.sweep.spec import SweepSpec, parse_spec

__all__ = ["builtin_spec", "builtin_specs"]


def builtin_spec(experiment: str, quick: bool = True,
                 registry: Mapping[str, Any] | None = None) -> SweepSpec | None:
    """The built-in sweep of ``experiment`` (``None`` when it declares none)."""
    if registry is None:
        from mirrorflow.experiments import REGISTRY as registry
    exp = registry.get(experiment)
    kind = "quick" if quick else "full"
    entry = None if exp is None else getattr(exp, "sweeps", {}).get(kind)
    if entry is None:
        return None
    raw = {"experiment": experiment, "name": f"{experiment}-{kind}", **entry}
    return parse_spec(raw, source=f"built-in {kind} sweep of {experiment}", registry=registry)


def builtin_specs(quick: bool = True, registry: Mapping[str, Any] | None = None
                  ) -> tuple[list[SweepSpec], list[str]]:
    """``(specs, skipped)``: a spec per registered experiment with sweeps, names without."""
    if registry is None:
        from mirrorflow.experiments import REGISTRY as registry
    specs, skipped = [], []
    for name in sorted(registry):
        spec = builtin_spec(name, quick, registry)
        if spec is None:
            skipped.append(name)
        else:
            specs.append(spec)
    return specs, skipped
