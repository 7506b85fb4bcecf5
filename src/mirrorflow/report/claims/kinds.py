"""The test kinds of a claim and how a claim's verdict is combined (statistics:
:mod:`.statistics`; pairing: :mod:`.pairing`).

Every statistical test has a **boundary** on its effect's axis and two one-sided decisions at
``Rule.alpha_side`` (t test and exact sign-flip test, :func:`.statistics.one_sided`):

* :class:`Compare` — ``d_i`` per pair (``log(m_worse / m_better)`` for ``scale="log"``).
  *supported*: mean ``d`` above the **smallest effect of interest** ``δ`` (H0: effect ≤ δ
  rejected); *contradicted*: mean ``d`` below 0 (the other arm is better; H0: effect ≥ 0
  rejected). Interval: Student's t.
* :class:`Nearer` — ``T = mean(m_none − m_switch) / mean(m_none − m_decayed)``; needs the
  decay to move the metric (``mean(m_none − m_decayed) > 0`` shown first); *supported*:
  ``T > θ`` via ``d_i = (m_none − m_switch)_i − θ·(m_none − m_decayed)_i`` above 0;
  *contradicted*: below 0. Interval: Fieller.
* :class:`SameThroughA` — ``T = mean(q) / |mean(Δ)|``; needs the unequal-``a`` difference
  ``Δ`` detectable; *supported*: ``|T| < margin`` (two one-sided tests of ``q ∓ margin·sΔ``,
  ``s`` the sign of ``mean Δ``); *contradicted*: ``T > margin`` or ``T < −margin`` (each at half
  the level). Interval: Fieller.
* :class:`GeometryCheck` — a deterministic computation (no runs, no p-value).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mirrorflow.report.claims.pairing import Arm, Pairing, _is_number, pair_runs
from mirrorflow.report.claims.statistics import (
    RULE,
    Rule,
    compare_sides,
    fieller_interval,
    holm,
    mean_interval,
    nearer_sides,
    same_sides,
    seeds_for_power,
    signflip_pvalues,
    t_pvalues,
)
from mirrorflow.sweep.store import RunRecord

__all__ = ["CONTRADICTED", "GEOMETRY_METRICS", "INCONCLUSIVE", "NOT_EVALUATED", "SUPPORTED",
           "Claim", "ClaimResult", "Compare", "Effect", "GeometryCheck", "Nearer", "SameThroughA",
           "evaluate_claims", "is_geometry_metric", "learned_predicate"]

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_EVALUATED = (
    "supported", "contradicted", "inconclusive", "not evaluated")

#: default smallest effect of interest of a log-ratio Compare: a factor 1.05
LOG_5PCT = math.log(1.05)

#: metrics that measure the learned weights' geometry (and their per-schedule variants, e.g.
#: ``nuclear_over_fro_none``): a test of one leaves out runs that do not beat their
#: experiment's chance level (:func:`mirrorflow.experiments.chance_verdict`) — the geometry of
#: a run that learned nothing says nothing about weight decay. Loss metrics keep such runs (a
#: run at chance is a legitimate loss outcome). docs/claims.md, "Runs that did not learn".
GEOMETRY_METRICS = ("nuclear_over_fro", "effective_rank", "balancedness")


def is_geometry_metric(metric: str) -> bool:
    """Whether ``metric`` is one of :data:`GEOMETRY_METRICS` (or a per-schedule variant)."""
    return any(metric == g or metric.startswith(g + "_") for g in GEOMETRY_METRICS)


def learned_predicate(experiment: str):
    """``run -> bool | None``: whether a run of ``experiment`` beats its declared chance level
    (``None``: no level declared, or a record this version cannot rebuild)."""
    from mirrorflow.experiments import chance_verdict

    def learned(rec: RunRecord) -> bool | None:
        v = chance_verdict(experiment, rec.config, rec.metrics)
        return None if v is None else v[1]

    return learned


@dataclass(frozen=True)
class Effect:
    """One test's outcome: an effect size with CI, the pairs it used and its verdict.

    ``p_supported`` / ``p_contradicted``: the decision p-values of the two sides (the verdict
    is decided at ``Rule.alpha_side``; 1 where a side cannot be decided). ``power_seeds``: seeds
    needed for 80% power to support at ``power_at`` with the observed spread (``None``: more
    than the power grid's largest; ``-1``: not computed)."""

    label: str
    verdict: str
    reason: str
    estimate: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    n: int = 0
    seeds: tuple = ()
    reference: tuple[float, ...] = (0.0,)  # the decision boundary/boundaries on the effect's axis
    detail: str = ""
    missing: tuple[str, ...] = ()
    short: str = ""  # a short label for the forest plot (default: ``label``)
    p_supported: float = 1.0
    p_contradicted: float = 1.0
    smallest: str = ""  # the smallest effect of interest / boundary, with its reason
    rules_out: str = ""  # what the interval rules out (inconclusive verdicts)
    power_seeds: int | None = -1
    power_at: float = math.nan
    pairing: Mapping[str, Any] = field(default_factory=dict)
    statistical: bool = True

    @property
    def power_note(self) -> str:
        if self.power_seeds is None:
            return "more than 50 seeds for 80% power"
        if self.power_seeds < 0:
            return "not computed (supported, deterministic, one pair or not evaluated)"
        return f"{self.power_seeds} seeds for 80% power at {self.power_at:.3g}"

    def to_json(self) -> dict[str, Any]:
        def num(x):
            return None if x is None or not math.isfinite(x) else float(x)

        return {"label": self.label, "verdict": self.verdict, "reason": self.reason,
                "estimate": num(self.estimate), "ci": [num(self.lo), num(self.hi)],
                "n": self.n, "seeds": list(self.seeds), "reference": list(self.reference),
                "smallest_effect": self.smallest, "rules_out": self.rules_out,
                "p_supported": num(self.p_supported), "p_contradicted": num(self.p_contradicted),
                "seeds_for_80pct_power": (None if self.power_seeds is None or
                                          self.power_seeds < 0 else self.power_seeds),
                "power_at": num(self.power_at),
                "power_note": self.power_note,
                "pairing": dict(self.pairing), "detail": self.detail,
                "missing": list(self.missing)}


# ----------------------------------------------------------------------- shared plumbing
def _values(pairs, arm: Arm, metric: str) -> np.ndarray | None:
    vals = [p[arm.label].metrics.get(metric) for p in pairs]
    if any(not _is_number(v) or not math.isfinite(v) for v in vals):
        return None
    return np.asarray(vals, dtype=np.float64)


def _transform(x: np.ndarray, scale: str) -> np.ndarray | None:
    if scale == "log":
        return None if np.any(x <= 0) else np.log(x)
    return x


def _quick_suffix(quick: bool) -> str:
    return " (quick sweep)" if quick else ""


def _is_quick(pairing: Pairing) -> bool:
    sweeps = {r.sweep for p in pairing.pairs for r in p.values()}
    return bool(sweeps) and all(isinstance(s, str) and s.endswith("-quick") for s in sweeps)


def _pairing_notes(pairing: Pairing) -> list[str]:
    notes = []
    ex = pairing.excluded
    if ex["diverged"] or ex["failed"]:
        notes.append(f"{ex['diverged']} pair(s) with diverged runs and {ex['failed']} with "
                     f"failed runs left out")
    if ex.get("at chance"):
        notes.append(f"{ex['at chance']} pair(s) with runs that do not beat the chance level "
                     f"left out (geometry of a run that learned nothing says nothing about "
                     f"weight decay)")
    if ex.get("not converged"):
        notes.append(f"{ex['not converged']} pair(s) with runs that did not converge (status "
                     f"max-time or similar) left out")
    if pairing.unconverged_kept:
        what = ", ".join(f"{k} {v}" for k, v in sorted(pairing.unconverged_kept.items()))
        notes.append(f"runs ending at their fixed horizon kept (status {what})")
    if pairing.several:
        notes.append(f"{pairing.several} pair(s) had several candidate runs of one arm: "
                     f"{pairing.several - pairing.ambiguous} resolved by the arm's declared "
                     f"setting, {pairing.ambiguous} left out")
    if pairing.older:
        notes.append(f"runs of older mirrorflow versions set aside in {pairing.older} pair(s)")
    if pairing.incomplete:
        notes.append(f"{pairing.incomplete} seed(s)/setting(s) lack a run of some arm")
    return notes


def _paired(test, records, experiment, free, rule: Rule, reference=(0.0,),
            fixed_horizon: bool = False):
    """Pair the runs of ``test.arms``: an :class:`Effect` when the pairing already decides (runs
    missing, none complete), else ``(pairing, quick, notes)``."""
    learned = (learned_predicate(experiment) if experiment and
               is_geometry_metric(getattr(test, "metric", "")) else None)
    pairing = pair_runs(records, test.arms, free, fixed_horizon=fixed_horizon, learned=learned)
    quick = _is_quick(pairing)
    pj = pairing.to_json()
    missing = tuple(f"{experiment} runs with {arm.describe()}" for arm in test.arms
                    if pairing.found[arm.label] == 0)
    if missing:
        return Effect(test.label, NOT_EVALUATED, "runs missing: " + "; ".join(missing),
                      reference=reference, missing=missing, pairing=pj)
    notes = _pairing_notes(pairing)
    n = len(pairing.pairs)
    if n == 0:
        reason = "no complete pair of finished, converged runs"
        if notes:
            reason += " (" + "; ".join(notes) + ")"
        return Effect(test.label, INCONCLUSIVE, reason, reference=reference, pairing=pj)
    if n < rule.min_pairs:
        ex = pairing.excluded
        why = ("runs diverged or did not converge" if ex["diverged"] or ex["not converged"]
               else "runs did not beat the chance level" if ex.get("at chance")
               else "too few seeds")
        notes.insert(0, f"{why}: {n} pair(s) < {rule.min_pairs}" + _quick_suffix(quick))
    return pairing, quick, notes


def _arm_values(test, pairs, arms, reference=(0.0,)):
    vals = [_values(pairs, a, test.metric) for a in arms]
    if any(v is None for v in vals):
        return Effect(test.label, INCONCLUSIVE, f"metric {test.metric!r} missing or "
                      f"non-finite in some runs", n=len(pairs), reference=reference)
    return vals


def _mean_sd(x: np.ndarray) -> str:
    sd = f" ± {np.std(x, ddof=1):.2g}" if len(x) > 1 else ""
    return f"{np.mean(x):.4g}{sd}"


def _p(x) -> float:
    return float(np.asarray(x))


def _pfmt(p: float) -> str:
    return f"{p:.2g}"


def _both(d: np.ndarray, rule: Rule, side: str) -> str:
    """``t p = …, sign-flip p = …`` of ``d`` on one side (for the reasons)."""
    tg, tl = t_pvalues(d)
    fg, fl = signflip_pvalues(d, rule)
    t, f = (tg, fg) if side == "greater" else (tl, fl)
    return f"t p = {_pfmt(_p(t))}, sign-flip p = {_pfmt(_p(f))}"


def _seeds_note(n_power: int | None, at: str) -> str:
    if n_power is None:
        return f"more than 50 seeds for 80% power at {at}"
    return f"{n_power} seeds give 80% power at {at}"


def _finish(effect: Effect, notes: Sequence[str], n: int, rule: Rule) -> Effect:
    """Too few pairs override the statistic's verdict (the effect is shown, not decided);
    pairing notes are appended to the reason."""
    notes = [x for x in notes if x]
    if n < rule.min_pairs:
        if effect.power_seeds != -1:
            notes.append(effect.reason.rsplit("; ", 1)[-1])  # the seeds-for-power note
        return dataclasses.replace(effect, verdict=INCONCLUSIVE, reason="; ".join(notes),
                                   p_supported=1.0, p_contradicted=1.0)
    reason = effect.reason + ("; " + "; ".join(notes) if notes else "")
    return dataclasses.replace(effect, reason=reason)


def _power_reps(rule: Rule) -> int:
    return rule.power_reps


def _power_rule(rule: Rule) -> Rule:
    """The rule the power simulations decide with: fewer random sign patterns (2000) above
    ``exact_up_to`` pairs — the power estimate's own Monte-Carlo error (200 repetitions,
    ±3% at 80%) dominates; exact enumeration up to 10 pairs."""
    return dataclasses.replace(rule, n_flips=min(rule.n_flips, 2000),
                               exact_up_to=min(rule.exact_up_to, 10))


# ------------------------------------------------------------------------------- Compare
@dataclass(frozen=True)
class Compare:
    """``better`` beats ``worse`` on ``metric`` (lower is better unless ``higher_is_better``)
    by more than the smallest effect of interest ``smallest`` (``why``: its reason).

    ``scale="log"``: the effect is the mean of ``log(m_worse / m_better)`` (default smallest
    effect: ``log 1.05``, a 5% change); else of the plain difference (``smallest`` required).
    ``match``: ``(metric, tol)`` — only pairs whose ``metric`` differs by at most ``tol`` between
    the arms count (a comparison at matched reconstruction error).
    """

    metric: str
    better: Arm
    worse: Arm
    higher_is_better: bool = False
    scale: str = "log"
    match: tuple[str, float] | None = None
    smallest: float = LOG_5PCT
    why: str = "a factor 1.05 (5%) of the metric: smaller changes are not what 'lower' means " \
                "in the paper's figures"

    @property
    def arms(self) -> tuple[Arm, ...]:
        return (self.better, self.worse)

    @property
    def label(self) -> str:
        b, w = self.better.label, self.worse.label
        if self.scale == "log":
            num, den = (b, w) if self.higher_is_better else (w, b)
            return f"log({self.metric} {num} / {den})"
        return (f"{self.metric} {b} − {w}" if self.higher_is_better
                else f"{self.metric} {w} − {b}")

    @property
    def smallest_text(self) -> str:
        unit = f" (factor {math.exp(self.smallest):.3g})" if self.scale == "log" else ""
        return f"δ = {self.smallest:.3g}{unit}: {self.why}"

    def evaluate(self, records, experiment, free, rule: Rule = RULE,
                 fixed_horizon: bool = False) -> Effect:
        ref = (0.0, self.smallest)
        start = _paired(self, records, experiment, free, rule, ref, fixed_horizon)
        if isinstance(start, Effect):
            return dataclasses.replace(start, smallest=self.smallest_text)
        pairing, quick, notes = start
        pairs = list(pairing.pairs)
        dropped = 0
        if self.match is not None:
            m, tol = self.match
            ok = [p for p in pairs if _is_number(p[self.better.label].metrics.get(m))
                  and _is_number(p[self.worse.label].metrics.get(m))
                  and abs(p[self.better.label].metrics[m] - p[self.worse.label].metrics[m]) <= tol]
            dropped = len(pairs) - len(ok)
            pairs = ok
            if len(pairs) < rule.min_pairs and dropped:
                return Effect(self.label, INCONCLUSIVE,
                              f"{m} not matched within {tol:g} in {dropped} of "
                              f"{len(pairing.pairs)} pairs: {len(pairs)} left < {rule.min_pairs}"
                              + _quick_suffix(quick), n=len(pairs), reference=ref,
                              smallest=self.smallest_text, pairing=pairing.to_json())
        vals = _arm_values(self, pairs, self.arms, ref)
        if isinstance(vals, Effect):
            return vals
        b, w = vals
        tb, tw = _transform(b, self.scale), _transform(w, self.scale)
        if tb is None or tw is None:
            return Effect(self.label, INCONCLUSIVE, f"{self.metric} ≤ 0 in some run: no log "
                          f"ratio", n=len(pairs), reference=ref)
        d = tb - tw if self.higher_is_better else tw - tb
        seeds = tuple(sorted({p[self.better.label].config.get("seed") for p in pairs}, key=repr))
        detail = (f"{self.better.label}: {_mean_sd(b)}; {self.worse.label}: {_mean_sd(w)}"
                  + (f"; {dropped} pair(s) not matched in {self.match[0]} left out"
                     if dropped else ""))
        eff = decide_compare(d, self.smallest, rule)
        eff = dataclasses.replace(eff, label=self.label, seeds=seeds, detail=detail,
                                  smallest=self.smallest_text, pairing=pairing.to_json())
        return _finish(eff, notes, len(d), rule)


def decide_compare(d: np.ndarray, delta: float, rule: Rule = RULE,
                   power: bool = True) -> Effect:
    """The Compare rule on paired effects ``d`` (claimed side positive) with smallest effect
    ``delta``: an :class:`Effect` without labels (the statistics only)."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    est = float(np.mean(d))
    lo, hi = mean_interval(d, rule)
    if n < 2:
        return Effect("", INCONCLUSIVE, "one pair", est, lo, hi, n, reference=(0.0, delta))
    p_sup, p_con = map(_p, compare_sides(d, delta, rule))
    ci = f"95% CI [{lo:.3g}, {hi:.3g}]"
    k = int(np.sum(d > delta))
    rules_out = f"effects above {hi:.3g} and below {lo:.3g} (95%)"
    if p_sup <= rule.alpha_side:
        verdict = SUPPORTED
        reason = (f"mean {est:.3g}, {ci} above the smallest effect {delta:.3g}; {k}/{n} pairs "
                  f"above it ({_both(d - delta, rule, 'greater')})")
    elif p_con <= rule.alpha_side:
        verdict = CONTRADICTED
        reason = (f"mean {est:.3g}, {ci} below 0: the other arm is better "
                  f"({int(np.sum(d < 0))}/{n} pairs; {_both(d, rule, 'less')})")
    else:
        verdict = INCONCLUSIVE
        if hi < delta:
            reason = (f"{ci} lies below the smallest effect {delta:.3g}: the data rule out an "
                      f"effect of interest (but not a smaller one in the claimed direction)")
        elif lo > delta:
            reason = (f"{ci} is above {delta:.3g} but the sign-flip test is not significant "
                      f"({k}/{n} pairs above it; {_both(d - delta, rule, 'greater')})")
        else:
            reason = f"{ci} contains the smallest effect {delta:.3g}; rules out {rules_out}"
    eff = Effect("", verdict, reason, est, lo, hi, n, reference=(0.0, delta),
                 p_supported=p_sup, p_contradicted=p_con,
                 rules_out=rules_out if verdict == INCONCLUSIVE else "")
    if power and verdict != SUPPORTED and rule.power_reps > 0:
        sd = float(np.std(d, ddof=1))
        at = 2 * delta

        def draw(rng, reps, m):
            return at + sd * rng.standard_normal((reps, m))

        pr = _power_rule(rule)

        def decide(x):
            return compare_sides(x, delta, pr)[0] <= rule.alpha_side

        n80, _ = seeds_for_power(decide, draw, pr, _power_reps(rule)) if sd > 0 else \
            (rule.min_pairs, {})
        eff = dataclasses.replace(eff, power_seeds=n80, power_at=at, reason=eff.reason + "; "
                                  + _seeds_note(n80, f"an effect of 2δ = {at:.3g} (sd "
                                                     f"{sd:.2g} per seed)"))
    return eff


# -------------------------------------------------------------------------- ratio tests
def decide_nearer(x: np.ndarray, y: np.ndarray, theta: float, rule: Rule = RULE,
                  power_at: float = 1.0, power: bool = True) -> Effect:
    """The Nearer rule: ``x = m_none − m_switch``, ``y = m_none − m_decayed`` per pair;
    ``T = mean(x)/mean(y)`` against ``theta``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    my = float(np.mean(y))
    est = float(np.mean(x)) / my if my != 0 else math.nan
    ref = (theta,)
    if n < 2:
        return Effect("", INCONCLUSIVE, "one pair", est, n=n, reference=ref)
    p_sup, p_con, p_gap = map(_p, nearer_sides(x, y, theta, rule))
    ylo, yhi = mean_interval(y, rule)
    lo, hi = fieller_interval(x, y, rule)
    if p_gap > rule.alpha_side:
        return Effect("", INCONCLUSIVE, f"decay does not detectably move the metric (none − "
                      f"decayed: 95% CI [{ylo:.3g}, {yhi:.3g}], p = {_pfmt(p_gap)}), so "
                      f"'nearer' cannot be tested", est, lo, hi, n, reference=ref,
                      rules_out="nothing about T (its interval is unbounded)")
    ci = f"Fieller 95% CI [{lo:.3g}, {hi:.3g}]"
    dd = x - theta * y
    if p_sup <= rule.alpha_side:
        verdict, reason = SUPPORTED, (f"switch-off keeps {est:.2f} of the decay's effect, {ci} "
                                      f"> {theta:g} ({_both(dd, rule, 'greater')})")
    elif p_con <= rule.alpha_side:
        verdict, reason = CONTRADICTED, (f"switch-off keeps only {est:.2f} of the decay's "
                                         f"effect, {ci} < {theta:g} ({_both(dd, rule, 'less')})")
    else:
        verdict = INCONCLUSIVE
        reason = (f"{ci} contains {theta:g}" if lo <= theta <= hi else
                  f"{ci} excludes {theta:g} but the sign-flip test is not significant "
                  f"({_both(dd, rule, 'greater' if lo > theta else 'less')})")
        reason += f"; rules out T below {lo:.3g} and above {hi:.3g} (95%)"
    eff = Effect("", verdict, reason, est, lo, hi, n, reference=ref, p_supported=p_sup,
                 p_contradicted=p_con,
                 rules_out=f"T below {lo:.3g} and above {hi:.3g}" if verdict == INCONCLUSIVE
                 else "")
    if power and verdict != SUPPORTED and rule.power_reps > 0:
        cov = np.cov(x, y, ddof=1)

        def draw(rng, reps, m):
            z = rng.multivariate_normal([power_at * my, my], cov, size=(reps, m),
                                        method="eigh")
            return z

        pr = _power_rule(rule)

        def decide(z):
            return nearer_sides(z[..., 0], z[..., 1], theta, pr)[0] <= rule.alpha_side

        n80, _ = seeds_for_power(decide, draw, pr, _power_reps(rule))
        eff = dataclasses.replace(eff, power_seeds=n80, power_at=power_at,
                                  reason=eff.reason + "; " + _seeds_note(n80, f"T = {power_at:g}"))
    return eff


def decide_same(q: np.ndarray, delta: np.ndarray, margin: float, rule: Rule = RULE,
                power: bool = True) -> Effect:
    """The SameThroughA rule: ``q`` equal-``a`` differences, ``delta`` unequal-``a`` ones;
    ``T = mean(q)/|mean(delta)|`` against ``±margin``."""
    q, delta = np.asarray(q, dtype=np.float64), np.asarray(delta, dtype=np.float64)
    n = len(q)
    md = float(np.mean(delta))
    est = float(np.mean(q)) / abs(md) if md != 0 else math.nan
    ref = (-margin, margin)
    if n < 2:
        return Effect("", INCONCLUSIVE, "one pair", est, n=n, reference=ref)
    s = 1.0 if md >= 0 else -1.0
    y = s * delta
    p_sup, p_con, p_gate = map(_p, same_sides(q, delta, margin, rule))
    dlo, dhi = mean_interval(delta, rule)
    lo, hi = fieller_interval(q, y, rule)
    if p_gate > rule.alpha_side:
        return Effect("", INCONCLUSIVE, f"the metric does not detectably depend on a "
                      f"(unequal-a difference 95% CI [{dlo:.3g}, {dhi:.3g}], p = "
                      f"{_pfmt(p_gate)}), so 'only through a' cannot be tested", est, lo, hi, n,
                      reference=ref, rules_out="nothing about T (its interval is unbounded)")
    ci = f"Fieller 95% CI [{lo:.3g}, {hi:.3g}]"
    if p_sup <= rule.alpha_side:
        verdict, reason = SUPPORTED, (f"equal-a difference is {est:.3g} of the unequal-a one, "
                                      f"{ci} inside ±{margin:.2g}")
    elif p_con <= rule.alpha_side:
        verdict, reason = CONTRADICTED, (f"equal-a runs differ by {est:.3g} of the unequal-a "
                                         f"difference, {ci} outside ±{margin:.2g}")
    else:
        verdict = INCONCLUSIVE
        reason = (f"{ci} overlaps the margin ±{margin:.2g}" if lo <= margin and hi >= -margin
                  and not (-margin < lo and hi < margin) else
                  f"{ci} is decided by the t test but not by the sign-flip test")
        reason += f"; rules out T below {lo:.3g} and above {hi:.3g} (95%)"
    eff = Effect("", verdict, reason, est, lo, hi, n, reference=ref, p_supported=p_sup,
                 p_contradicted=p_con,
                 rules_out=f"T below {lo:.3g} and above {hi:.3g}" if verdict == INCONCLUSIVE
                 else "")
    if power and verdict != SUPPORTED and rule.power_reps > 0:
        cov = np.cov(q, y, ddof=1)
        my = float(np.mean(y))

        def draw(rng, reps, m):
            return rng.multivariate_normal([0.0, my], cov, size=(reps, m), method="eigh")

        pr = _power_rule(rule)

        def decide(z):
            return same_sides(z[..., 0], z[..., 1], margin, pr)[0] <= rule.alpha_side

        n80, _ = seeds_for_power(decide, draw, pr, _power_reps(rule))
        eff = dataclasses.replace(eff, power_seeds=n80, power_at=0.0,
                                  reason=eff.reason + "; " + _seeds_note(n80, "T = 0"))
    return eff


@dataclass(frozen=True)
class SameThroughA:
    """``same`` (equal ``a``, different shapes) end alike; ``different`` (unequal ``a``) do not.

    ``T = mean(m_same0 − m_same1) / |mean(m_diff0 − m_diff1)|`` (on ``log m`` when
    ``scale="log"``); supported when ``|T| < margin`` (``why``: the margin's reason) and the
    unequal-``a`` difference is detectable. Power is stated at the theory's ``T = 0``.
    """

    metric: str
    same: tuple[Arm, Arm]
    different: tuple[Arm, Arm]
    margin: float = 1.0 / 3.0
    scale: str = "linear"
    why: str = ("the equal-a difference at most a third of the difference that the change of a "
                "makes: nearer equal than the two a's are to each other, with room to spare")

    @property
    def arms(self) -> tuple[Arm, ...]:
        return (*self.same, *self.different)

    @property
    def label(self) -> str:
        return (f"{self.metric}: ({self.same[0].label} − {self.same[1].label}) / "
                f"|{self.different[0].label} − {self.different[1].label}|")

    @property
    def short(self) -> str:
        return f"{self.metric}: equal-a difference / unequal-a difference"

    def evaluate(self, records, experiment, free, rule: Rule = RULE,
                 fixed_horizon: bool = False) -> Effect:
        ref = (-self.margin, self.margin)
        smallest = f"margin ±{self.margin:.3g} on T: {self.why}"
        start = _paired(self, records, experiment, free, rule, ref, fixed_horizon)
        if isinstance(start, Effect):
            return dataclasses.replace(start, smallest=smallest)
        pairing, quick, notes = start
        pairs = list(pairing.pairs)
        vals = _arm_values(self, pairs, self.arms, ref)
        if isinstance(vals, Effect):
            return vals
        tv = [_transform(v, self.scale) for v in vals]
        if any(v is None for v in tv):
            return Effect(self.label, INCONCLUSIVE, f"{self.metric} ≤ 0 in some run",
                          n=len(pairs), reference=ref)
        q, delta = tv[0] - tv[1], tv[2] - tv[3]
        detail = ", ".join(f"{a.label}: {_mean_sd(v)}" for a, v in zip(self.arms, vals))
        eff = decide_same(q, delta, self.margin, rule)
        if "cannot be tested" in eff.reason:
            eff = dataclasses.replace(eff, reason=eff.reason + _quick_suffix(quick))
        eff = dataclasses.replace(eff, label=self.label, seeds=tuple(pairing.seeds()),
                                  detail=detail, smallest=smallest, pairing=pairing.to_json())
        return _finish(eff, notes, len(q), rule)


@dataclass(frozen=True)
class Nearer:
    """After switch-off ``metric`` stays nearer the ``decayed`` runs than the ``undecayed`` ones.

    ``T = mean(m_undecayed − m_switched) / mean(m_undecayed − m_decayed)`` (0: like no decay,
    1: like the decayed runs); supported when ``T > threshold`` (``why``: its reason). Power
    is stated at ``power_at`` (default 1: the switch-off runs end like the decayed ones).
    """

    metric: str
    undecayed: Arm
    decayed: Arm
    switched: Arm
    threshold: float = 0.5
    why: str = "½: nearer the decayed runs than the undecayed ones"
    power_at: float = 1.0

    @property
    def arms(self) -> tuple[Arm, ...]:
        return (self.undecayed, self.decayed, self.switched)

    @property
    def label(self) -> str:
        u, d, s = self.undecayed.label, self.decayed.label, self.switched.label
        return f"{self.metric}: ({u} − {s}) / ({u} − {d})"

    @property
    def short(self) -> str:
        return f"{self.metric}: (none − switch-off) / (none − decayed)"

    def evaluate(self, records, experiment, free, rule: Rule = RULE,
                 fixed_horizon: bool = False) -> Effect:
        ref = (self.threshold,)
        smallest = f"threshold θ = {self.threshold:g} on T: {self.why}"
        start = _paired(self, records, experiment, free, rule, ref, fixed_horizon)
        if isinstance(start, Effect):
            return dataclasses.replace(start, smallest=smallest)
        pairing, quick, notes = start
        pairs = list(pairing.pairs)
        vals = _arm_values(self, pairs, self.arms, ref)
        if isinstance(vals, Effect):
            return vals
        u, d, s = vals
        detail = (f"{self.undecayed.label}: {_mean_sd(u)}, {self.decayed.label}: {_mean_sd(d)}, "
                  f"{self.switched.label}: {_mean_sd(s)}")
        eff = decide_nearer(u - s, u - d, self.threshold, rule, self.power_at)
        if "cannot be tested" in eff.reason:
            eff = dataclasses.replace(eff, reason=eff.reason + _quick_suffix(quick))
        eff = dataclasses.replace(eff, label=self.label, seeds=tuple(pairing.seeds()),
                                  detail=detail, smallest=smallest, pairing=pairing.to_json())
        return _finish(eff, notes, len(u), rule)


@dataclass(frozen=True)
class GeometryCheck:
    """A deterministic check computed from :mod:`mirrorflow.geometry` or
    :mod:`mirrorflow.dynamics` (needs no runs; no p-value, outside the Holm family)."""

    label: str
    compute: Callable[[], Effect]

    arms: tuple = ()

    def evaluate(self, records, experiment, free, rule: Rule = RULE,
                 fixed_horizon: bool = False) -> Effect:
        try:
            eff = self.compute()
        except Exception as exc:  # reported, never dropped
            eff = Effect(self.label, INCONCLUSIVE, f"computation failed: {type(exc).__name__}: "
                         f"{exc}")
        return dataclasses.replace(eff, statistical=False)


# --------------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class ClaimResult:
    """The verdict on one claim: combined from its tests' effects; ``verdict_holm`` is the
    verdict after Holm's step-down across the claims evaluated together."""

    claim: Claim
    verdict: str
    reason: str
    effects: tuple[Effect, ...]
    p_supported: float = 1.0
    p_contradicted: float = 1.0
    verdict_holm: str = ""
    statistical: bool = True

    @property
    def seeds(self) -> tuple:
        out: list = []
        for e in self.effects:
            out.extend(s for s in e.seeds if s not in out)
        return tuple(out)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for e in self.effects for m in e.missing))

    @property
    def p_two_sided(self) -> float:
        """The claim's decision p-value on the two-sided scale (Holm's input)."""
        return min(1.0, 2.0 * min(self.p_supported, self.p_contradicted))

    @property
    def power_seeds(self) -> int | None:
        """Seeds for 80% power of every test (``None``: more than the grid's largest; -1:
        not computed — supported, deterministic or not evaluated)."""
        vals = [e.power_seeds for e in self.effects if e.statistical]
        if any(v is None for v in vals):
            return None
        vals = [v for v in vals if v >= 0]
        return max(vals) if vals else -1

    def to_json(self) -> dict[str, Any]:
        c = self.claim
        return {"id": c.id, "statement": c.statement, "source": c.source,
                "experiment": c.experiment, "sweeps": list(c.sweeps), "figure": c.figure,
                "setting": c.setting, "verdict": self.verdict,
                "verdict_holm": self.verdict_holm, "reason": self.reason,
                "p_supported": self.p_supported, "p_contradicted": self.p_contradicted,
                "p_two_sided": self.p_two_sided if self.statistical else None,
                "seeds_for_80pct_power": ("> 50" if self.power_seeds is None else
                                          None if self.power_seeds < 0 else self.power_seeds),
                "fixed_horizon": c.fixed_horizon,
                "seeds": list(self.seeds), "missing": list(self.missing),
                "effects": [e.to_json() for e in self.effects]}


@dataclass(frozen=True)
class Claim:
    """A claim: statement, source, the experiment and built-in sweeps testing it, its tests.

    ``free``: config fields allowed to differ inside a pair (run length, solver numerics).
    ``setting``: the setting in words (init, conventions, data) where it differs from defaults.
    ``fixed_horizon``: non-empty (the reason) when the experiment has no convergence test and
    every run ends with status ``max-time``: such runs are kept (and counted), not left out.

    Verdict: *supported* when every test supports it (p = the largest of the tests'
    supported-side p-values: an intersection–union test); *contradicted* when a test
    contradicts it at the level divided by the number of tests (Bonferroni inside the claim:
    p = k · the smallest contradicted-side p); *not evaluated* when runs are missing; else
    *inconclusive*.
    """

    id: str
    statement: str
    source: str
    experiment: str | None
    tests: tuple[Any, ...]
    sweeps: tuple[str, ...] = ()
    free: tuple[str, ...] = ()
    setting: str = ""
    figure: str | None = None
    fixed_horizon: str = ""

    def evaluate(self, records: Sequence[RunRecord], rule: Rule = RULE) -> ClaimResult:
        recs = [r for r in records if self.experiment is None or r.experiment == self.experiment]
        effects = tuple(dataclasses.replace(t.evaluate(recs, self.experiment or "", self.free,
                                                       rule, bool(self.fixed_horizon)),
                                            short=getattr(t, "short", ""))
                        for t in self.tests)
        statistical = any(e.statistical for e in effects)
        stat = [e for e in effects if e.statistical]
        verdicts = [e.verdict for e in effects]
        if statistical:
            p_sup = max(e.p_supported for e in stat) if stat else 1.0
            p_con = min(1.0, len(stat) * min(e.p_contradicted for e in stat)) if stat else 1.0
            det_con = any(e.verdict == CONTRADICTED for e in effects if not e.statistical)
            det_sup = all(e.verdict == SUPPORTED for e in effects if not e.statistical)
            if p_con <= rule.alpha_side or det_con:
                v = CONTRADICTED
            elif p_sup <= rule.alpha_side and det_sup:
                v = SUPPORTED
            elif NOT_EVALUATED in verdicts:
                v = NOT_EVALUATED
            else:
                v = INCONCLUSIVE
        else:
            p_sup = p_con = 1.0
            if CONTRADICTED in verdicts:
                v = CONTRADICTED
            elif all(x == SUPPORTED for x in verdicts):
                v = SUPPORTED
            else:
                v = INCONCLUSIVE
        if len(effects) == 1:
            reason = effects[0].reason
        else:
            reason = "; ".join(f"{e.label}: {e.verdict} — {e.reason}" for e in effects
                               if v != NOT_EVALUATED or e.verdict == NOT_EVALUATED)
            if v == INCONCLUSIVE and any(e.verdict == CONTRADICTED for e in stat):
                reason = (f"a test contradicts at its own level but not at {rule.alpha_side:g}/"
                          f"{len(stat)} (Bonferroni inside the claim): " + reason)
        if self.fixed_horizon and any(e.pairing.get("unconverged_kept") for e in effects):
            reason += f" (fixed horizon: {self.fixed_horizon})"
        return ClaimResult(self, v, reason, effects, p_sup, p_con, v, statistical)


def evaluate_claims(records: Sequence[RunRecord], claims: Sequence[Claim] | None = None,
                    rule: Rule = RULE) -> list[ClaimResult]:
    """The verdict on every claim (default: the registry's ``CLAIMS``) from ``records``, with
    Holm's step-down across the claims that have runs and a statistical test with at least
    ``rule.min_pairs`` pairs (family-wise level ``rule.family_alpha`` on the two-sided scale):
    ``verdict_holm`` (claims outside the family keep their raw verdict, which is then
    inconclusive, not evaluated, or a deterministic check's)."""
    if claims is None:
        from mirrorflow.report.claims.registry import CLAIMS as claims
    results = [c.evaluate(records, rule) for c in claims]
    family = [i for i, r in enumerate(results) if _in_family(r, rule)]
    keep = holm([results[i].p_two_sided for i in family], rule.family_alpha)
    out = list(results)
    for i, ok in zip(family, keep):
        r = results[i]
        adj = r.verdict if ok or r.verdict == INCONCLUSIVE else INCONCLUSIVE
        out[i] = dataclasses.replace(r, verdict_holm=adj)
    return out


def _in_family(r: ClaimResult, rule: Rule) -> bool:
    """A claim enters Holm's family when it has runs and a statistical test with enough pairs
    to decide (fixed by the design's seed count, not by the outcome)."""
    return (r.statistical and r.verdict != NOT_EVALUATED
            and any(e.statistical and e.n >= rule.min_pairs for e in r.effects))


def family_size(results: Sequence[ClaimResult], rule: Rule = RULE) -> int:
    """How many claims Holm's step-down ran over."""
    return sum(_in_family(r, rule) for r in results)
