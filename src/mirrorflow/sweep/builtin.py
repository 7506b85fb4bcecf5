"""The built-in sweeps of ``mirrorflow reproduce``: a quick and a full spec per experiment.

Each entry is a spec in the same form as a TOML file (see :mod:`mirrorflow.sweep.spec`); every
quick sweep compares the schedules ``none`` / ``constant`` / ``switch-off`` over a few seeds.
Experiments that are not registered (missing optional dependencies, not written yet) or that
have no entry here are skipped by :func:`builtin_specs`, which says which.

The quick sweeps are sized so that ``mirrorflow reproduce --quick`` finishes in about ten
minutes on a 2-core CPU for all experiments together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mirrorflow.sweep.spec import SweepSpec, parse_spec

__all__ = ["BUILTIN", "builtin_spec", "builtin_specs"]

_SCHEDULES = ["none", "constant", "switch-off"]

#: ``{experiment: {"quick": spec dict, "full": spec dict}}``
BUILTIN: dict[str, dict[str, dict[str, Any]]] = {
    # docs/theory.md §5: n = 40, d = 100, 5-sparse, u0 = 1, v0 = 0, decay 0.2 switched off at
    # t = 20 (a = 4). Constant decay never settles: cap its time (it is near stationary by then).
    # Without decay plain gradient descent converges by t ≈ 60, so 'none' uses tail = "gd"
    # (the implicit-ODE tail stalled on seed 3 of the 'none' schedule).
    "sparse-regression": {
        "quick": {
            "grid": {"seed": [0, 1, 2, 3, 4]},
            "zip": {"schedule": _SCHEDULES, "t_max": [5000.0, 300.0, 5000.0],
                    "tail": ["gd", "ode", "ode"]},
        },
        "full": {
            "grid": {"seed": list(range(10))},
            "case": [
                {"base": {"schedule": "none", "tail": "gd"}},
                {"base": {"schedule": "constant", "t_max": 2000.0},
                 "grid": {"wd": [0.1, 0.2, 0.4]}},
                {"grid": {"wd": [0.1, 0.2, 0.4]},
                 "zip": {"schedule": ["switch-off"] * 3, "switch_at": [40.0, 20.0, 10.0]}},
            ],
        },
    },
    # docs/theory.md §6: d = 20, rank 2, 160 measurements, decay 0.1 switched off at t = 100.
    # The sweep varies the schedule itself, so the experiment's own side runs are off.
    "matrix-sensing": {
        "quick": {
            "base": {"compare": False, "baseline": "none"},
            "grid": {"seed": [0, 1, 2]},
            "zip": {"schedule": _SCHEDULES},
        },
        "full": {
            "base": {"compare": False, "baseline": "cvxpy", "t_max": 800.0},
            "grid": {"seed": list(range(5)), "schedule": _SCHEDULES},
        },
    },
    # attention scores W_Q W_Kᵀ fitted to a low-rank teacher (the 'teacher' setting)
    "attention": {
        "quick": {
            "base": {"setting": "teacher", "compare": False},
            "grid": {"seed": [0, 1, 2]},
            "zip": {"schedule": _SCHEDULES},
        },
        "full": {
            "base": {"setting": "teacher", "compare": False},
            "grid": {"seed": list(range(10)), "schedule": _SCHEDULES},
        },
    },
    # dictionary learning with u ⊙ v codes on patches of scikit-learn's sample images (offline)
    "sparse-coding": {
        "quick": {
            "grid": {"seed": [0, 1, 2]},
            "zip": {"schedule": _SCHEDULES},
        },
        "full": {
            "grid": {"seed": list(range(5)), "schedule": _SCHEDULES},
        },
    },
    # LoRA on the offline all-MiniLM-L6-v2 (the experiment's defaults: 2 blocks, 200 AdamW
    # steps, lr 2e-3, λ = 5 switched off at step 80, so a = 0.8 vs 2.0 for constant decay;
    # AdamW's decoupled decay integrates to a = Σ lr·λ, so λ must be large for a visible a).
    "lora": {
        "quick": {
            "base": {"eval_every": 20},
            "grid": {"seed": [0, 1]},
            "zip": {"schedule": _SCHEDULES},
        },
        "full": {
            "grid": {"seed": [0, 1, 2], "schedule": _SCHEDULES},
        },
    },
}


def builtin_spec(experiment: str, quick: bool = True,
                 registry: Mapping[str, Any] | None = None) -> SweepSpec | None:
    """The built-in sweep of ``experiment`` (``None`` when it has none)."""
    entry = BUILTIN.get(experiment)
    if entry is None:
        return None
    kind = "quick" if quick else "full"
    raw = {"experiment": experiment, "name": f"{experiment}-{kind}", **entry[kind]}
    return parse_spec(raw, source=f"built-in {kind} sweep of {experiment}", registry=registry)


def builtin_specs(quick: bool = True, registry: Mapping[str, Any] | None = None
                  ) -> tuple[list[SweepSpec], list[str]]:
    """``(specs, skipped)``: a spec per registered experiment with an entry, names without one."""
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
