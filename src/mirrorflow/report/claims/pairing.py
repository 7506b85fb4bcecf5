"""Selecting and pairing the runs of a claim's arms (config fields only, never sweep names).

**The pairing rule** (docs/claims.md). Runs of the arms of one test form a *pair* when they
share the seed and every config field that no arm fixes, except the claim's ``free`` fields (run
length, numerics), the fields a run's schedule ignores (:func:`~mirrorflow.schedules.continuous.
unused_options`) and retired fields (``compare``: :data:`~mirrorflow.experiments.base.
RETIRED_FIELDS`). Inside one such *pair cell*:

1. only runs of **one mirrorflow version** are paired: the newest version that has a run of
   every arm (release numbers compared as numbers; the same seed of two versions is one pair,
   never two);
2. an arm with several candidate runs (they differ in a free field, e.g. a quick and a full
   sweep's ``t_max`` in one store) keeps those whose free fields equal the arm's declared
   setting (:attr:`Arm.prefer`);
3. still several: the pair is **left out** (never resolved by insertion order).

How many pairs had several candidates, were resolved by rule 2 or left out by rule 3 is
counted (:class:`Pairing`) and said in the reason and claims.json. The choice never looks at a
run's outcome; after it, a pair with a failed, diverged or not-converged run (the run's own
``status`` metric, e.g. ``max-time``) is left out and counted — unless the claim declares its
experiment fixed-horizon (``max-time`` is then how every run ends: kept, and counted). A test
of a geometry metric also passes ``learned`` (the chance-level predicate): a pair with a run that
does not beat its experiment's chance level is left out and counted (``at chance``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mirrorflow._core.errors import MirrorflowError
from mirrorflow.experiments.base import RETIRED_FIELDS
from mirrorflow.schedules.continuous import SCHEDULES, unused_options
from mirrorflow.sweep.store import RunRecord

__all__ = ["NOT_CONVERGED", "Arm", "AtMost", "IntegratedDecay", "OneOf", "Pairing", "pair_runs"]

#: values of a run's ``status`` metric saying it did not converge (or did not finish)
NOT_CONVERGED = ("max-time", "diverged", "infeasible", "not-converged", "failed")


@dataclass(frozen=True)
class AtMost:
    """Config condition: a number ``≤ value``."""

    value: float

    def __call__(self, v: Any) -> bool:
        return _is_number(v) and v <= self.value

    def __repr__(self) -> str:
        return f"≤ {self.value:g}"


@dataclass(frozen=True)
class OneOf:
    """Config condition: one of ``values``."""

    values: tuple

    def __call__(self, v: Any) -> bool:
        return any(_equal(v, x) for x in self.values)

    def __repr__(self) -> str:
        return " or ".join(map(repr, self.values))


@dataclass(frozen=True)
class IntegratedDecay:
    """Condition on the whole config: the integrated decay ``a`` of the run
    (:func:`integrated_decay`) equals ``value`` (relative tolerance ``rtol``)."""

    value: float
    rtol: float = 1e-6
    on_config = True

    def __call__(self, config: Mapping[str, Any]) -> bool:
        a = integrated_decay(config)
        return a is not None and math.isclose(a, self.value, rel_tol=self.rtol)

    def __repr__(self) -> str:
        return f"= {self.value:g}"


def integrated_decay(config: Mapping[str, Any]) -> float | None:
    """``a`` from a run's config, as its schedule object gives it: the decay's final integral
    when it ends (switch-off: ``wd · switch_at``; budget: its target), else its integral up to
    the end of training ``steps · lr`` (constant decay in the AdamW experiments, whose time is
    ``t = Σ lr``); ``None`` when the config cannot tell.

    >>> integrated_decay({"schedule": "switch-off", "wd": 0.5, "switch_at": 4.0})
    2.0
    >>> integrated_decay({"schedule": "constant", "wd": 0.5, "steps": 100, "lr": 0.01})
    0.5
    >>> integrated_decay({"schedule": "constant", "wd": 0.5}) is None   # no end of training
    True
    """
    cls, wd = SCHEDULES.get(config.get("schedule")), config.get("wd")
    if cls is None or not _is_number(wd):
        return None
    try:
        sched = cls.from_options(float(wd), config.get("switch_at"), config.get("budget"))
    except (MirrorflowError, TypeError, ValueError):
        return None
    if math.isfinite(sched.final_integral):
        return sched.final_integral
    steps, lr = config.get("steps"), config.get("lr")
    if _is_number(steps) and _is_number(lr):
        return float(sched.integral(float(steps) * float(lr)))
    return None


@dataclass(frozen=True)
class Arm:
    """One group of runs: a label, the config fields they must have (value or condition; a
    condition with ``on_config`` sees the whole config and its key is only a name), and
    ``prefer``: the values of free fields that are the claim's declared setting (rule 2 of the
    pairing: used only to choose among several candidates of one pair)."""

    label: str
    where: Mapping[str, Any]
    prefer: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, config: Mapping[str, Any]) -> bool:
        for k, want in self.where.items():
            if getattr(want, "on_config", False):
                if not want(config):
                    return False
                continue
            if k not in config:
                return False
            have = config[k]
            if callable(want):
                if not want(have):
                    return False
            elif not _equal(have, want):
                return False
        return True

    def preferred(self, config: Mapping[str, Any]) -> bool:
        return all(k in config and _equal(config[k], v) for k, v in self.prefer.items())

    def describe(self) -> str:
        return ", ".join(f"{k} {v!r}" if callable(v) else f"{k}={v}"
                         for k, v in self.where.items())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _equal(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
    return a == b


def _canonical(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config without the fields that do not change the run: those its schedule does not
    read, and retired ones (a stored ``compare`` run's own metrics are the same run's)."""
    drop = set(unused_options(config.get("schedule"))) | set(RETIRED_FIELDS)
    return {k: v for k, v in config.items() if k not in drop}


def _key(rec: RunRecord, drop: set[str]) -> tuple:
    cfg = _canonical(rec.config)
    return tuple(sorted((k, repr(v)) for k, v in cfg.items() if k not in drop))


def _version_key(v: Any) -> tuple:
    """Release numbers compare as numbers (0.10 > 0.9); any other text sorts after them."""
    parts = re.split(r"[.+-]", str(v))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _newest(versions: set) -> Any:
    return max(versions, key=_version_key)


def run_converged(rec: RunRecord) -> bool:
    """False when the run's own ``status`` metric says it did not converge (or finish)."""
    return rec.metrics.get("status") not in NOT_CONVERGED


@dataclass(frozen=True)
class Pairing:
    """Runs of several arms matched by seed and every config field the arms do not fix."""

    pairs: tuple[dict[str, RunRecord], ...]  # complete pairs of finished, converged runs
    found: dict[str, int]  # runs matching each arm
    excluded: dict[str, int]  # pairs left out: 'diverged', 'failed', 'not converged'
    #                           (and 'at chance' when the test excludes runs that did not learn)
    incomplete: int  # pair cells lacking a run of some arm (in every version)
    several: int = 0  # pair cells where some arm had several candidate runs
    ambiguous: int = 0  # of those, left out: rule 2 did not leave one run per arm
    older: int = 0  # pair cells where runs of older versions were set aside
    unconverged_kept: dict[str, int] = field(default_factory=dict)  # fixed horizon: status → runs

    def seeds(self) -> list[Any]:
        return sorted({next(iter(p.values())).config.get("seed") for p in self.pairs}, key=repr)

    def to_json(self) -> dict[str, Any]:
        return {"pairs": len(self.pairs), "found": dict(self.found),
                "excluded": dict(self.excluded), "incomplete": self.incomplete,
                "several_candidates": self.several, "ambiguous_left_out": self.ambiguous,
                "older_versions_set_aside": self.older,
                "unconverged_kept": dict(self.unconverged_kept)}


def pair_runs(records: Sequence[RunRecord], arms: Sequence[Arm], free: Sequence[str] = (),
              fixed_horizon: bool = False,
              learned: Callable[[RunRecord], bool | None] | None = None) -> Pairing:
    """Pair the runs of ``arms`` by the rule of this module's docstring.

    ``learned``: when given, a pair with a run for which it returns ``False`` (the run does not
    beat its chance level; ``None``: no verdict, kept) is left out, counted as ``at chance``.
    """
    drop = {k for arm in arms for k in arm.where} | set(free)
    for arm in arms:  # a field one arm's schedule ignores cannot tell the arms' runs apart
        sched = arm.where.get("schedule")
        drop |= set(unused_options(sched))
    by_arm: dict[str, dict[tuple, list[RunRecord]]] = {}
    for arm in arms:
        groups: dict[tuple, list[RunRecord]] = {}
        for r in records:
            if arm.matches(r.config):
                groups.setdefault(_key(r, drop), []).append(r)
        by_arm[arm.label] = groups
    found = {label: sum(len(v) for v in g.values()) for label, g in by_arm.items()}
    keys = set.union(*(set(g) for g in by_arm.values())) if by_arm else set()
    pairs, incomplete, several, ambiguous, older = [], 0, 0, 0, 0
    excluded = {"diverged": 0, "failed": 0, "not converged": 0}
    if learned is not None:
        excluded["at chance"] = 0
    kept: dict[str, int] = {}
    arm_of = {a.label: a for a in arms}
    for key in sorted(keys, key=repr):
        if not all(key in g for g in by_arm.values()):
            incomplete += 1
            continue
        versions = set.intersection(*({r.version for r in g[key]} for g in by_arm.values()))
        if not versions:
            incomplete += 1
            continue
        v = _newest(versions)
        older += any(r.version != v for g in by_arm.values() for r in g[key])
        chosen, multi, unresolved = {}, False, False
        for label, g in by_arm.items():
            runs = [r for r in g[key] if r.version == v]
            if len(runs) > 1:
                multi = True
                runs = [r for r in runs if arm_of[label].preferred(r.config)]
            if len(runs) != 1:
                unresolved = True
                continue
            chosen[label] = runs[0]
        several += multi
        if unresolved:
            ambiguous += 1
            continue
        stats = [r.status for r in chosen.values()]
        if any(s != "done" for s in stats):
            excluded["failed" if "failed" in stats else "diverged"] += 1
            continue
        bad = [r.metrics.get("status") for r in chosen.values() if not run_converged(r)]
        if bad and not (fixed_horizon and set(bad) == {"max-time"}):
            excluded["not converged"] += 1
            continue
        if learned is not None and any(learned(r) is False for r in chosen.values()):
            excluded["at chance"] += 1
            continue
        for s in bad:
            kept[s] = kept.get(s, 0) + 1
        pairs.append(chosen)
    return Pairing(tuple(pairs), found, excluded, incomplete, several, ambiguous, older, kept)
