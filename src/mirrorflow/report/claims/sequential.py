"""Seeds until decided: a group-sequential design for ``mirrorflow reproduce --until-decided``.

At most ``K`` looks (rounds). Look ``k`` evaluates every claim on the seeds stored so far with
the rule of :func:`look_rule`: each side's level ``alpha_side / K`` (and the sign-flip level
``alpha_signflip / K``, Holm's family level ``family_alpha / K``). A claim decided at a look is
final; the undecided ones' experiments get more seeds (:func:`seeds_schedule`: doubling, every
stored run reused) and are looked at again. By Bonferroni over the looks (the simplest
correct alpha spending: an equal share per look), the chance of a false verdict of a claim at
ANY look is at most ``K · alpha_side / K = alpha_side`` per side, whatever the dependence
between looks — tests/test_claims_calibration.py measures it at the boundaries.

The price: a verdict at look 1 needs p ≤ alpha_side / K, so a plain ``reproduce`` (one look at
the full level) decides more at its fixed seed count; ``--until-decided`` decides more claims
overall because it can add seeds.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from mirrorflow.report.claims.kinds import INCONCLUSIVE, ClaimResult
from mirrorflow.report.claims.statistics import RULE, Rule

__all__ = ["look_rule", "seeds_schedule", "undecided_experiments", "with_seeds"]


def look_rule(looks: int, rule: Rule = RULE) -> Rule:
    """The rule of every look of a ``looks``-look design (Bonferroni split of each level)."""
    if looks < 1:
        from mirrorflow._core import MirrorflowError

        raise MirrorflowError(f"the number of looks must be ≥ 1, got {looks}")
    return dataclasses.replace(rule, alpha_side=rule.alpha_side / looks,
                               alpha_signflip=rule.alpha_signflip / looks,
                               family_alpha=rule.family_alpha / looks, looks=looks)


def seeds_schedule(first: int, looks: int, rule: Rule = RULE) -> list[int]:
    """Seeds per experiment at each look: the built-in sweep's count, then doubling (at least
    ``min_pairs + 1``: with the split level, 5 pairs cannot reach the sign-flip level)."""
    out = [first]
    for _ in range(looks - 1):
        out.append(max(2 * out[-1], rule.min_pairs + 1))
    return out


def undecided_experiments(results: Sequence[ClaimResult]) -> list[str]:
    """Experiments with a claim that has runs, a statistical test and no verdict yet."""
    return sorted({r.claim.experiment for r in results
                   if r.statistical and r.verdict == INCONCLUSIVE and r.claim.experiment})


def with_seeds(entry: Mapping[str, Any], n: int) -> dict[str, Any]:
    """A copy of a sweep entry (the ``sweeps`` dict of an experiment) whose every ``seed``
    grid holds at least seeds ``0 … n−1`` (existing seeds are kept; runs already stored are
    the same runs, by config, and are not run again)."""
    out = copy.deepcopy(dict(entry))

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            grid = node.get("grid")
            if isinstance(grid, dict) and "seed" in grid:
                old = list(grid["seed"])
                grid["seed"] = old + [s for s in range(n) if s not in old]
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(out)
    return out
