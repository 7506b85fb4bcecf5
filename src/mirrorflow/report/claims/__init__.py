"""Claims as data: what the theory and the paper assert, and a calibrated verdict on each from a
results store (docs/claims.md).

A :class:`Claim` has a one-line statement, its source (a docs/theory.md section or the paper's
abstract), the experiment and built-in sweeps that test it, and one or more *tests*. Each test
names the runs it needs by their config fields (:class:`Arm`), pairs them by a fixed rule
(:mod:`.pairing`: same seed, same version, same everything except what the arms fix; never by
insertion order), computes a statistic over the pairs and decides by a rule fixed in code
before any run (:data:`RULE`, :mod:`.statistics`): two one-sided decisions at 2.5% against the
test's boundary, each needing Student's t test (t / Fieller 95% interval) and the exact
sign-flip permutation test. Kinds: :class:`Compare` (against a smallest effect of interest),
:class:`Nearer` and :class:`SameThroughA` (ratio statistics), :class:`GeometryCheck`
(deterministic). :func:`evaluate_claims` adds Holm's step-down across claims.

Modules: :mod:`.statistics` (tests, intervals, power, Holm), :mod:`.pairing` (arms and the
pairing rule), :mod:`.kinds` (test kinds, claims, verdicts), :mod:`.registry` (:data:`CLAIMS`).
"""

from mirrorflow.report.claims.kinds import (
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_EVALUATED,
    SUPPORTED,
    Claim,
    ClaimResult,
    Compare,
    Effect,
    GeometryCheck,
    Nearer,
    SameThroughA,
    decide_compare,
    decide_nearer,
    decide_same,
    evaluate_claims,
    family_size,
)
from mirrorflow.report.claims.pairing import (
    NOT_CONVERGED,
    Arm,
    AtMost,
    IntegratedDecay,
    OneOf,
    Pairing,
    pair_runs,
)
from mirrorflow.report.claims.registry import CLAIMS, simulated_reach, type_index
from mirrorflow.report.claims.statistics import (
    RULE,
    Rule,
    compare_sides,
    fieller_interval,
    holm,
    mean_interval,
    nearer_sides,
    one_sided,
    same_sides,
    sign_test,
    signflip_pvalues,
    t_pvalues,
)

__all__ = [
    "CLAIMS",
    "CONTRADICTED",
    "INCONCLUSIVE",
    "NOT_CONVERGED",
    "NOT_EVALUATED",
    "RULE",
    "SUPPORTED",
    "Arm",
    "AtMost",
    "Claim",
    "ClaimResult",
    "Compare",
    "Effect",
    "GeometryCheck",
    "IntegratedDecay",
    "Nearer",
    "OneOf",
    "Pairing",
    "Rule",
    "SameThroughA",
    "compare_sides",
    "decide_compare",
    "decide_nearer",
    "decide_same",
    "evaluate_claims",
    "family_size",
    "fieller_interval",
    "holm",
    "mean_interval",
    "nearer_sides",
    "one_sided",
    "pair_runs",
    "same_sides",
    "sign_test",
    "signflip_pvalues",
    "simulated_reach",
    "t_pvalues",
    "type_index",
]
