"""Claims as data: what the theory and the paper assert, and a verdict on each from a results store.

A :class:`Claim` has a one-line statement, its source (a docs/theory.md section or the paper's
abstract), the experiment and built-in sweeps that test it, and one or more *tests*. Each test
names the runs it needs by their config fields (:class:`Arm`), pairs them (same seed, same
data, same everything except what the arms fix), computes a statistic over the pairs, and
applies a decision rule that is fixed here, in code, before any run (:data:`RULE`):

* :class:`Compare` — arm ``better`` beats arm ``worse`` on a metric. Per pair the difference
  ``d_i`` (of ``log metric`` for positive error-like metrics), oriented so that ``d > 0`` is
  the claim. *supported*: at least ``RULE.min_pairs`` pairs, the bootstrap 95% CI of the mean
  ``d`` (BCa, ``scipy.stats.bootstrap``) above 0 **and** a one-sided sign test
  (``scipy.stats.binomtest``) significant at ``RULE.alpha``; *contradicted*: the same in the
  other direction; else *inconclusive* with the reason (too few seeds, CI crosses zero, sign
  test not significant, runs diverged, runs missing).
* :class:`SameThroughA` — the lasting effect depends on the schedule only through ``a``: two
  arms with equal ``a`` (different shapes) and two with different ``a``. ``Δ`` is the mean
  paired difference between the different-``a`` arms; ``T = mean(q)/|mean(Δ)|`` the equal-``a``
  difference relative to it (paired bootstrap CI). Needs ``Δ``'s CI to exclude 0 (else ``a``
  has no detectable effect and the claim cannot be tested). *supported*: CI of ``T`` inside
  ``(−margin, margin)``; *contradicted*: outside ``[−margin, margin]``.
* :class:`Nearer` — after switch-off the metric stays nearer the decayed runs than the
  undecayed ones: ``T = mean(m_none − m_switch) / mean(m_none − m_decayed)``; needs the decay
  to move the metric (CI of ``mean(m_none − m_decayed)`` excludes 0); *supported*: CI of ``T``
  above ``threshold`` (½), *contradicted*: below.
* :class:`GeometryCheck` — a deterministic computation from :mod:`mirrorflow.geometry` (no
  runs): the type and range effects of ``R_a``.

:func:`evaluate_claims` runs every registered claim (:data:`CLAIMS`) on a list of run records
and returns one :class:`ClaimResult` each; a claim whose runs are not in the store is
*not evaluated*, with the runs it would need. Runs are matched by config fields, never by sweep
name; diverged and failed runs never enter a statistic (they are counted and reported).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mirrorflow.sweep.store import RunRecord

__all__ = [
    "CLAIMS",
    "CONTRADICTED",
    "INCONCLUSIVE",
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
    "Nearer",
    "OneOf",
    "Rule",
    "SameThroughA",
    "evaluate_claims",
    "pair_runs",
]

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_EVALUATED = (
    "supported", "contradicted", "inconclusive", "not evaluated")


@dataclass(frozen=True)
class Rule:
    """The decision rule shared by every claim, fixed before the runs.

    ``min_pairs``: fewest independent pairs (seeds) for a supported/contradicted verdict — with
    5 pairs all of one sign the one-sided sign test gives p = 1/32 < 0.05, with 4 it cannot
    reach 0.05. ``confidence``: level of the bootstrap CI. ``alpha``: one-sided sign-test level.
    """

    min_pairs: int = 5
    confidence: float = 0.95
    alpha: float = 0.05
    n_resamples: int = 9999
    seed: int = 0


RULE = Rule()


# ------------------------------------------------------------------------- selecting runs
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
class Arm:
    """One group of runs: a label and the config fields they must have (value or condition)."""

    label: str
    where: Mapping[str, Any]

    def matches(self, config: Mapping[str, Any]) -> bool:
        for k, want in self.where.items():
            if k not in config:
                return False
            have = config[k]
            if callable(want):
                if not want(have):
                    return False
            elif not _equal(have, want):
                return False
        return True

    def describe(self) -> str:
        return ", ".join(f"{k} {v!r}" if callable(v) else f"{k}={v}"
                         for k, v in self.where.items())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _equal(a: Any, b: Any) -> bool:
    if _is_number(a) and _is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)
    return a == b


#: config fields that do not change a run under its schedule (dropped before pairing)
_IRRELEVANT = {"none": ("wd", "switch_at", "budget"), "constant": ("switch_at", "budget"),
               "switch-off": ("budget",), "budget": ("switch_at",)}


def _canonical(config: Mapping[str, Any]) -> dict[str, Any]:
    drop = _IRRELEVANT.get(config.get("schedule"), ())
    return {k: v for k, v in config.items() if k not in drop}


def _key(rec: RunRecord, drop: set[str]) -> tuple:
    cfg = _canonical(rec.config)
    return (rec.version, tuple(sorted((k, repr(v)) for k, v in cfg.items() if k not in drop)))


@dataclass(frozen=True)
class Pairing:
    """Runs of several arms matched by seed and every config field the arms do not fix."""

    pairs: tuple[dict[str, RunRecord], ...]  # complete pairs of done runs
    found: dict[str, int]  # runs matching each arm
    excluded: dict[str, int]  # pairs dropped: 'diverged', 'failed'
    incomplete: int  # keys present in some arms but not all
    ambiguous: int  # keys with several runs in one arm (free fields differ): the last is used

    def seeds(self) -> list[Any]:
        return sorted({next(iter(p.values())).config.get("seed") for p in self.pairs}, key=repr)


def pair_runs(records: Sequence[RunRecord], arms: Sequence[Arm],
              free: Sequence[str] = ()) -> Pairing:
    """Match the runs of ``arms``: same version, seed and config except the fields any arm fixes,
    the ``free`` fields (run length, numerics) and fields the run's schedule ignores."""
    drop = {k for arm in arms for k in arm.where} | set(free)
    for arm in arms:  # a field one arm's schedule ignores cannot tell the arms' runs apart
        sched = arm.where.get("schedule")
        drop |= set(_IRRELEVANT.get(sched, ())) if isinstance(sched, str) else set()
    by_arm: dict[str, dict[tuple, list[RunRecord]]] = {}
    for arm in arms:
        groups: dict[tuple, list[RunRecord]] = {}
        for r in records:
            if arm.matches(r.config):
                groups.setdefault(_key(r, drop), []).append(r)
        by_arm[arm.label] = groups
    found = {label: sum(len(v) for v in g.values()) for label, g in by_arm.items()}
    keys = set.union(*(set(g) for g in by_arm.values())) if by_arm else set()
    pairs, incomplete, ambiguous = [], 0, 0
    excluded = {"diverged": 0, "failed": 0}
    for key in sorted(keys, key=repr):
        if not all(key in g for g in by_arm.values()):
            incomplete += 1
            continue
        chosen = {}
        for label, g in by_arm.items():
            runs = g[key]
            ambiguous += len(runs) > 1
            chosen[label] = runs[-1]
        bad = [r.status for r in chosen.values() if r.status != "done"]
        if bad:
            excluded["failed" if "failed" in bad else "diverged"] += 1
            continue
        pairs.append(chosen)
    return Pairing(tuple(pairs), found, excluded, incomplete, ambiguous)


# ------------------------------------------------------------------------------ statistics
def bootstrap_ci(samples: Sequence[np.ndarray], statistic: Callable[..., Any],
                 rule: Rule = RULE) -> tuple[float, float]:
    """Paired bootstrap CI (BCa; percentile when BCa is undefined) of ``statistic(*samples)``.

    Degenerate data (every resample gives the same value) give the point value twice.
    """
    from scipy import stats

    samples = tuple(np.asarray(s, dtype=np.float64) for s in samples)
    point = float(statistic(*samples))
    if all(np.ptp(s) == 0 for s in samples):
        return point, point
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap(samples, statistic, paired=True, vectorized=True,
                                  confidence_level=rule.confidence, method=method,
                                  n_resamples=rule.n_resamples,
                                  rng=np.random.default_rng(rule.seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return lo, hi
    return math.nan, math.nan


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def sign_test(d: np.ndarray) -> tuple[int, int, float, float]:
    """``(k positive, n nonzero, p one-sided 'greater', p one-sided 'less')`` of ``d``."""
    from scipy import stats

    d = np.asarray(d)
    k, n = int(np.sum(d > 0)), int(np.sum(d != 0))
    if n == 0:
        return 0, 0, 1.0, 1.0
    return (k, n, float(stats.binomtest(k, n, 0.5, alternative="greater").pvalue),
            float(stats.binomtest(k, n, 0.5, alternative="less").pvalue))


@dataclass(frozen=True)
class Effect:
    """One test's outcome: an effect size with CI, the pairs it used and its verdict."""

    label: str  # what the effect is, e.g. "log(err none / err switch-off)"
    verdict: str
    reason: str
    estimate: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    n: int = 0
    seeds: tuple = ()
    reference: tuple[float, ...] = (0.0,)  # the decision threshold(s) on the effect's axis
    detail: str = ""
    missing: tuple[str, ...] = ()
    short: str = ""  # a short label for the forest plot (default: ``label``)

    def to_json(self) -> dict[str, Any]:
        def num(x):
            return None if not math.isfinite(x) else float(x)

        return {"label": self.label, "verdict": self.verdict, "reason": self.reason,
                "estimate": num(self.estimate), "ci": [num(self.lo), num(self.hi)],
                "n": self.n, "seeds": list(self.seeds), "reference": list(self.reference),
                "detail": self.detail, "missing": list(self.missing)}


def _values(pairs, arm: Arm, metric: str) -> np.ndarray | None:
    vals = [p[arm.label].metrics.get(metric) for p in pairs]
    if any(not _is_number(v) or not math.isfinite(v) for v in vals):
        return None
    return np.asarray(vals, dtype=np.float64)


def _transform(x: np.ndarray, scale: str) -> np.ndarray | None:
    if scale == "log":
        return None if np.any(x <= 0) else np.log(x)
    return x


def _pairing_problems(pairing: Pairing, arms: Sequence[Arm], experiment: str,
                      rule: Rule, quick: bool) -> tuple[str | None, str, tuple[str, ...]]:
    """``(verdict, reason, missing)``: verdict ``not evaluated`` / ``inconclusive`` when there
    is nothing to compute; else ``None`` and the notes (and why the pairs cannot decide, when
    they are too few: the effect is still computed and shown)."""
    missing = tuple(f"{experiment} runs with {arm.describe()}" for arm in arms
                    if pairing.found[arm.label] == 0)
    if missing:
        return NOT_EVALUATED, "runs missing: " + "; ".join(missing), missing
    n = len(pairing.pairs)
    notes = []
    if pairing.excluded["diverged"] or pairing.excluded["failed"]:
        notes.append(f"{pairing.excluded['diverged']} pair(s) with diverged runs and "
                     f"{pairing.excluded['failed']} with failed runs left out")
    if pairing.incomplete:
        notes.append(f"{pairing.incomplete} seed(s)/setting(s) lack a run of some arm")
    if n == 0:
        reason = "no complete pair of finished runs"
        if notes:
            reason += " (" + "; ".join(notes) + ")"
        return INCONCLUSIVE, reason, ()
    if n < rule.min_pairs:
        why = "runs diverged" if pairing.excluded["diverged"] else "too few seeds"
        notes.insert(0, f"{why}: {n} pair(s) < {rule.min_pairs}" + _quick_suffix(quick))
    return None, "; ".join(notes), ()


def _too_few(n: int, rule: Rule) -> bool:
    return n < rule.min_pairs


def _finish(verdict: str, reason: str, note: str, n: int, rule: Rule) -> tuple[str, str]:
    """Too few pairs override the statistic's verdict: the effect is shown, not decided."""
    if _too_few(n, rule):
        return INCONCLUSIVE, note
    return verdict, reason + (f"; {note}" if note else "")


def _is_quick(pairing: Pairing) -> bool:
    sweeps = {r.sweep for p in pairing.pairs for r in p.values()}
    return bool(sweeps) and all(isinstance(s, str) and s.endswith("-quick") for s in sweeps)


def _quick_suffix(quick: bool) -> str:
    return " (quick sweep)" if quick else ""


def _paired(test, records, experiment, free, rule: Rule, reference=(0.0,)):
    """Pair the runs of ``test.arms``: an :class:`Effect` when the pairing already decides (runs
    missing, too few, diverged), else ``(pairing, quick, note)``."""
    pairing = pair_runs(records, test.arms, free)
    quick = _is_quick(pairing)
    verdict, note, missing = _pairing_problems(pairing, test.arms, experiment, rule, quick)
    if verdict is not None:
        return Effect(test.label, verdict, note or "", n=len(pairing.pairs),
                      seeds=tuple(pairing.seeds()), reference=reference, missing=missing)
    return pairing, quick, note


def _arm_values(test, pairs, arms, reference=(0.0,)):
    """``test.metric`` of each arm over ``pairs``, or an inconclusive :class:`Effect` when it is
    missing or non-finite in some run."""
    vals = [_values(pairs, a, test.metric) for a in arms]
    if any(v is None for v in vals):
        return Effect(test.label, INCONCLUSIVE, f"metric {test.metric!r} missing or "
                      f"non-finite in some runs", n=len(pairs), reference=reference)
    return vals


@dataclass(frozen=True)
class Compare:
    """``better`` beats ``worse`` on ``metric`` (lower is better unless ``higher_is_better``).

    ``scale="log"``: the effect is the mean of ``log(m_worse / m_better)`` (a factor); else of
    the plain difference. ``match``: ``(metric, tol)`` — only pairs whose ``metric`` differs by
    at most ``tol`` between the arms count (a comparison at matched reconstruction error).
    """

    metric: str
    better: Arm
    worse: Arm
    higher_is_better: bool = False
    scale: str = "log"
    match: tuple[str, float] | None = None

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

    def evaluate(self, records, experiment, free, rule: Rule = RULE) -> Effect:
        start = _paired(self, records, experiment, free, rule)
        if isinstance(start, Effect):
            return start
        pairing, quick, note = start
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
                              + _quick_suffix(quick), n=len(pairs))
        vals = _arm_values(self, pairs, self.arms)
        if isinstance(vals, Effect):
            return vals
        b, w = vals
        tb, tw = _transform(b, self.scale), _transform(w, self.scale)
        if tb is None or tw is None:
            return Effect(self.label, INCONCLUSIVE, f"{self.metric} ≤ 0 in some run: no log "
                          f"ratio", n=len(pairs))
        d = tb - tw if self.higher_is_better else tw - tb
        seeds = tuple(sorted({p[self.better.label].config.get("seed") for p in pairs}, key=repr))
        detail = (f"{self.better.label}: {_mean_sd(b)}; {self.worse.label}: {_mean_sd(w)}"
                  + (f"; {dropped} pair(s) not matched in {self.match[0]} left out"
                     if dropped else ""))
        verdict, reason, est, lo, hi = _decide_positive(d, rule)
        verdict, reason = _finish(verdict, reason, note, len(d), rule)
        return Effect(self.label, verdict, reason, est, lo, hi, len(d), seeds, (0.0,), detail)


def _mean_sd(x: np.ndarray) -> str:
    sd = f" ± {np.std(x, ddof=1):.2g}" if len(x) > 1 else ""
    return f"{np.mean(x):.4g}{sd}"


def _decide_positive(d: np.ndarray, rule: Rule) -> tuple[str, str, float, float, float]:
    """The rule for a paired difference whose claimed sign is positive."""
    est = float(np.mean(d))
    lo, hi = bootstrap_ci([d], _mean, rule) if len(d) > 1 else (math.nan, math.nan)
    k, n, p_gt, p_lt = sign_test(d)
    ci = f"CI [{lo:.3g}, {hi:.3g}]"
    if lo > 0 and p_gt < rule.alpha:
        return SUPPORTED, f"{ci} > 0; {k}/{n} pairs positive (sign test p = {p_gt:.3g})", \
            est, lo, hi
    if hi < 0 and p_lt < rule.alpha:
        return CONTRADICTED, f"{ci} < 0; {n - k}/{n} pairs negative (sign test p = " \
                             f"{p_lt:.3g})", est, lo, hi
    if lo <= 0 <= hi:
        return INCONCLUSIVE, f"{ci} crosses zero ({k}/{n} pairs positive)", est, lo, hi
    p = p_gt if lo > 0 else p_lt
    return INCONCLUSIVE, f"{ci} excludes zero but the sign test is not significant " \
                         f"({k}/{n} positive, p = {p:.3g})", est, lo, hi


@dataclass(frozen=True)
class SameThroughA:
    """``same`` (equal ``a``, different shapes) end alike; ``different`` (unequal ``a``) do not.

    ``T = mean(m_same0 − m_same1) / |mean(m_diff0 − m_diff1)|`` (on ``log m`` when
    ``scale="log"``); supported when the CI of ``T`` lies inside ``(−margin, margin)`` and the
    different-``a`` difference is detectable (its CI excludes 0).
    """

    metric: str
    same: tuple[Arm, Arm]
    different: tuple[Arm, Arm]
    margin: float = 1.0 / 3.0
    scale: str = "linear"

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

    def evaluate(self, records, experiment, free, rule: Rule = RULE) -> Effect:
        ref = (-self.margin, self.margin)
        start = _paired(self, records, experiment, free, rule, ref)
        if isinstance(start, Effect):
            return start
        pairing, quick, note = start
        pairs = list(pairing.pairs)
        vals = _arm_values(self, pairs, self.arms, ref)
        if isinstance(vals, Effect):
            return vals
        tv = [_transform(v, self.scale) for v in vals]
        if any(v is None for v in tv):
            return Effect(self.label, INCONCLUSIVE, f"{self.metric} ≤ 0 in some run",
                          n=len(pairs), reference=ref)
        q, delta = tv[0] - tv[1], tv[2] - tv[3]
        seeds = tuple(pairing.seeds())
        dlo, dhi = bootstrap_ci([delta], _mean, rule) if len(q) > 1 else (math.nan, math.nan)
        dmean = float(np.mean(delta))
        detail = ", ".join(f"{a.label}: {_mean_sd(v)}" for a, v in zip(self.arms, vals))
        detail += f"; unequal-a difference {dmean:.3g} CI [{dlo:.3g}, {dhi:.3g}]"

        def ratio(q, delta, axis=-1):
            return np.mean(q, axis=axis) / np.abs(np.mean(delta, axis=axis))

        est = float(ratio(q, delta)) if dmean != 0 else math.nan
        if _too_few(len(q), rule):
            lo, hi = (bootstrap_ci([q, delta], ratio, rule) if len(q) > 1 and dmean != 0
                      else (math.nan, math.nan))
            return Effect(self.label, INCONCLUSIVE, note, est, lo, hi, len(q), seeds, ref,
                          detail)
        if dlo <= 0 <= dhi:
            return Effect(self.label, INCONCLUSIVE,
                          f"the metric does not detectably depend on a (unequal-a difference "
                          f"CI [{dlo:.3g}, {dhi:.3g}] crosses zero), so 'only through a' cannot "
                          f"be tested" + _quick_suffix(quick), est, n=len(q), seeds=seeds,
                          reference=ref, detail=detail)
        lo, hi = bootstrap_ci([q, delta], ratio, rule)
        ci = f"CI [{lo:.3g}, {hi:.3g}]"
        if -self.margin < lo and hi < self.margin:
            verdict, reason = SUPPORTED, (f"equal-a difference is {est:.3g} of the unequal-a "
                                          f"one, {ci} inside ±{self.margin:.2g}")
        elif hi < -self.margin or lo > self.margin:
            verdict, reason = CONTRADICTED, (f"equal-a runs differ by {est:.3g} of the unequal-a "
                                             f"difference, {ci} outside ±{self.margin:.2g}")
        else:
            verdict, reason = INCONCLUSIVE, f"{ci} overlaps the margin ±{self.margin:.2g}"
        verdict, reason = _finish(verdict, reason, note, len(q), rule)
        return Effect(self.label, verdict, reason, est, lo, hi, len(q), seeds, ref, detail)


@dataclass(frozen=True)
class Nearer:
    """After switch-off ``metric`` stays nearer the ``decayed`` runs than the ``undecayed`` ones.

    ``T = mean(m_undecayed − m_switched) / mean(m_undecayed − m_decayed)`` (0: like no decay,
    1: like the decayed runs); supported when its CI lies above ``threshold``.
    """

    metric: str
    undecayed: Arm
    decayed: Arm
    switched: Arm
    threshold: float = 0.5

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

    def evaluate(self, records, experiment, free, rule: Rule = RULE) -> Effect:
        ref = (self.threshold,)
        start = _paired(self, records, experiment, free, rule, ref)
        if isinstance(start, Effect):
            return start
        pairing, quick, note = start
        pairs = list(pairing.pairs)
        vals = _arm_values(self, pairs, self.arms, ref)
        if isinstance(vals, Effect):
            return vals
        u, d, s = vals
        gap, moved = u - d, u - s
        seeds = tuple(pairing.seeds())
        glo, ghi = bootstrap_ci([gap], _mean, rule) if len(u) > 1 else (math.nan, math.nan)
        detail = (f"{self.undecayed.label}: {_mean_sd(u)}, {self.decayed.label}: {_mean_sd(d)}, "
                  f"{self.switched.label}: {_mean_sd(s)}")

        def ratio(moved, gap, axis=-1):
            return np.mean(moved, axis=axis) / np.mean(gap, axis=axis)

        if _too_few(len(u), rule):
            est = float(ratio(moved, gap)) if np.mean(gap) != 0 else math.nan
            lo, hi = (bootstrap_ci([moved, gap], ratio, rule) if len(u) > 1 and math.isfinite(est)
                      else (math.nan, math.nan))
            return Effect(self.label, INCONCLUSIVE, note, est, lo, hi, len(u), seeds, ref,
                          detail)
        if glo <= 0 <= ghi:
            return Effect(self.label, INCONCLUSIVE,
                          f"decay does not detectably move {self.metric} (CI of "
                          f"{self.undecayed.label} − {self.decayed.label} [{glo:.3g}, {ghi:.3g}] "
                          f"crosses zero)" + _quick_suffix(quick), n=len(u), seeds=seeds,
                          reference=ref, detail=detail)
        est = float(ratio(moved, gap))
        lo, hi = bootstrap_ci([moved, gap], ratio, rule)
        ci = f"CI [{lo:.3g}, {hi:.3g}]"
        if lo > self.threshold:
            verdict, reason = SUPPORTED, f"switch-off keeps {est:.2f} of the decay's effect, {ci} > {self.threshold:g}"
        elif hi < self.threshold:
            verdict, reason = CONTRADICTED, (f"switch-off keeps only {est:.2f} of the decay's "
                                             f"effect, {ci} < {self.threshold:g}")
        else:
            verdict, reason = INCONCLUSIVE, f"{ci} contains {self.threshold:g}"
        verdict, reason = _finish(verdict, reason, note, len(u), rule)
        return Effect(self.label, verdict, reason, est, lo, hi, len(u), seeds, ref, detail)


@dataclass(frozen=True)
class GeometryCheck:
    """A deterministic check computed from :mod:`mirrorflow.geometry` (needs no runs)."""

    label: str
    compute: Callable[[], Effect]

    arms: tuple = ()

    def evaluate(self, records, experiment, free, rule: Rule = RULE) -> Effect:
        try:
            return self.compute()
        except Exception as exc:  # reported, never dropped
            return Effect(self.label, INCONCLUSIVE, f"computation failed: {type(exc).__name__}: "
                          f"{exc}")


# --------------------------------------------------------------------------------- claims
@dataclass(frozen=True)
class ClaimResult:
    """The verdict on one claim: combined from its tests' effects."""

    claim: Claim
    verdict: str
    reason: str
    effects: tuple[Effect, ...]

    @property
    def seeds(self) -> tuple:
        out: list = []
        for e in self.effects:
            out.extend(s for s in e.seeds if s not in out)
        return tuple(out)

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for e in self.effects for m in e.missing))

    def to_json(self) -> dict[str, Any]:
        c = self.claim
        return {"id": c.id, "statement": c.statement, "source": c.source,
                "experiment": c.experiment, "sweeps": list(c.sweeps), "figure": c.figure,
                "setting": c.setting, "verdict": self.verdict, "reason": self.reason,
                "seeds": list(self.seeds), "missing": list(self.missing),
                "effects": [e.to_json() for e in self.effects]}


@dataclass(frozen=True)
class Claim:
    """A claim: statement, source, the experiment and built-in sweeps testing it, its tests.

    ``free``: config fields allowed to differ inside a pair (run length, solver numerics).
    ``setting``: the setting in words (init, conventions, data) where it differs from defaults.
    The verdict is *supported* when every test supports it, *contradicted* when any test
    contradicts it, *not evaluated* when runs are missing, else *inconclusive*.
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

    def evaluate(self, records: Sequence[RunRecord], rule: Rule = RULE) -> ClaimResult:
        recs = [r for r in records if self.experiment is None or r.experiment == self.experiment]
        effects = tuple(dataclasses.replace(t.evaluate(recs, self.experiment or "", self.free,
                                                       rule), short=getattr(t, "short", ""))
                        for t in self.tests)
        verdicts = [e.verdict for e in effects]
        if CONTRADICTED in verdicts:
            v = CONTRADICTED
        elif all(x == SUPPORTED for x in verdicts):
            v = SUPPORTED
        elif NOT_EVALUATED in verdicts:
            v = NOT_EVALUATED
        else:
            v = INCONCLUSIVE
        if len(effects) == 1:
            reason = effects[0].reason
        else:
            reason = "; ".join(f"{e.label}: {e.verdict} — {e.reason}" for e in effects
                               if e.verdict == v or v == SUPPORTED)
        return ClaimResult(self, v, reason, effects)


def evaluate_claims(records: Sequence[RunRecord], claims: Sequence[Claim] | None = None,
                    rule: Rule = RULE) -> list[ClaimResult]:
    """The verdict on every claim (default: :data:`CLAIMS`) from ``records``."""
    return [c.evaluate(records, rule) for c in (CLAIMS if claims is None else claims)]


# ------------------------------------------------------------------ the geometry claims
#: integrated decays at which the geometry claims are evaluated
_GEOMETRY_A = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0)


def _uv_effects(name: str = "uv"):
    from mirrorflow.geometry.effects import family_from_name, measure_effects

    return measure_effects(family_from_name(name, 1.0, 0.0), list(_GEOMETRY_A))


def type_index(report) -> np.ndarray:
    """The L1-likeness of ``R_a`` per ``a`` from an EffectsReport (0: L2-like, 1: L1-like).

    Kept in this one function: the field name follows :mod:`mirrorflow.geometry.effects`.
    """
    return np.asarray(report.type_index, dtype=np.float64)


def _type_check() -> Effect:
    rep = _uv_effects()
    idx = type_index(rep)
    label = "L1-likeness ι(a_max) − ι(0), u ⊙ v"
    est = float(idx[-1] - idx[0])
    detail = ", ".join(f"ι({a:g}) = {i:.3f}" for a, i in zip(_GEOMETRY_A, idx))
    monotone = bool(np.all(np.diff(idx) >= -1e-9))
    # control: x = u² is the pure positional case (R_a = R_0 + (a/2)·x, theory §3); a type
    # measure that moves there mixes in position and cannot decide the claim
    control = type_index(_uv_effects("u2"))
    if np.ptp(control) > 1e-6:
        return Effect(label, INCONCLUSIVE, f"the type measure moves by {np.ptp(control):.2g} for "
                      f"u², whose type does not change: it mixes in position", est, est, est,
                      len(idx), detail=detail)
    if monotone and idx[0] < 0.5 < idx[-1]:
        return Effect(label, SUPPORTED, f"ι rises monotonically from {idx[0]:.2f} (L2-like) to "
                      f"{idx[-1]:.2f} (L1-like) over a ∈ [0, {_GEOMETRY_A[-1]:g}]; control u²: "
                      f"ι = {control[0]:.3f} at every a", est,
                      est, est, len(idx), reference=(0.0,), detail=detail)
    if est < 0:
        return Effect(label, CONTRADICTED, f"ι falls from {idx[0]:.2f} to {idx[-1]:.2f}", est,
                      est, est, len(idx), detail=detail)
    return Effect(label, INCONCLUSIVE, f"ι goes from {idx[0]:.2f} to {idx[-1]:.2f} "
                  f"({'monotone' if monotone else 'not monotone'}); the rule needs ι(0) < 0.5 < "
                  f"ι(a_max) and monotone", est, est, est, len(idx), detail=detail)


def _range_check() -> Effect:
    rep = _uv_effects()
    a = np.asarray(_GEOMETRY_A)
    width = np.asarray(rep.reach_hi - rep.reach_lo)[:, 0]
    label = "d log(reach width) / da, u ⊙ v (theory: −2)"
    slopes = np.diff(np.log(width)) / np.diff(a)
    fit = float(np.polyfit(a, np.log(width), 1)[0])
    detail = ", ".join(f"width({x:g}) = {w:.3g}" for x, w in zip(a, width))
    if rep.scale is not None:
        detail += "; scale β(a): " + ", ".join(f"{s:.3g}" for s in np.asarray(rep.scale)[:, 0])
    lo, hi = float(slopes.min()), float(slopes.max())
    if np.all(np.abs(slopes + 2.0) <= 0.04):
        return Effect(label, SUPPORTED, f"every local slope in [{lo:.4f}, {hi:.4f}] is within 2% "
                      f"of −2: the reach shrinks as e^(−2a)", fit, lo, hi, len(a),
                      reference=(-2.0,), detail=detail)
    if abs(fit + 2.0) > 0.5:
        return Effect(label, CONTRADICTED, f"fitted slope {fit:.3f}, not −2", fit, lo, hi,
                      len(a), reference=(-2.0,), detail=detail)
    return Effect(label, INCONCLUSIVE, f"fitted slope {fit:.3f}; local slopes [{lo:.3f}, "
                  f"{hi:.3f}] not all within 2% of −2", fit, lo, hi, len(a), reference=(-2.0,),
                  detail=detail)


# --------------------------------------------------------------------------- the registry
def _sw(wd: float, at: float, label: str | None = None, **extra) -> Arm:
    a = wd * at
    return Arm(label or f"switch-off λ={wd:g} t={at:g} (a={a:g})",
               {"schedule": "switch-off", "wd": wd, "switch_at": at, **extra})


def _const(wd: float, label: str | None = None, **extra) -> Arm:
    return Arm(label or f"constant λ={wd:g}", {"schedule": "constant", "wd": wd, **extra})


_NONE = Arm("none", {"schedule": "none"})
_ABSTRACT = "the paper's abstract"


def _switch_off_wins(experiment: str, metric: str, wd: float, at: float, source: str,
                     setting: str, free: tuple[str, ...] = (), **extra) -> Claim:
    sw = _sw(wd, at, "switch-off", **extra)
    const = _const(wd, "constant", **extra)
    none = Arm("none", {"schedule": "none", **extra})
    return Claim(
        id=f"{experiment}/switch-off-wins",
        statement=f"{experiment}: decay {wd:g} switched off at t = {at:g} ends with a lower "
                  f"{metric} than constant decay {wd:g} and than no decay",
        source=source, experiment=experiment,
        tests=(Compare(metric, sw, none), Compare(metric, sw, const)),
        sweeps=(f"{experiment}-quick", f"{experiment}-full"), free=free, setting=setting,
        figure=f"{experiment}_summary.png")


_SR_FREE = ("t_max", "tail", "gd_after_settle", "tol")

CLAIMS: tuple[Claim, ...] = (
    # -- switch-off beats constant decay and no decay: one claim per experiment ---------------
    _switch_off_wins("sparse-regression", "recovery_error", 0.2, 20.0,
                     "docs/theory.md §5 (reference case); " + _ABSTRACT,
                     "theory §5: n = 40, d = 100, 5-sparse, u0 = 1, v0 = 0 (a = 4)", _SR_FREE),
    _switch_off_wins("matrix-sensing", "recovery_error", 0.1, 100.0, "docs/theory.md §6",
                     "d = 20, rank 2, 160 measurements (a = 10)", ("baseline", "compare")),
    _switch_off_wins("attention", "test_loss", 0.05, 40.0, "docs/theory.md §6; " + _ABSTRACT,
                     "one attention layer, rank-1 teacher (a = 2)", ("compare",)),
    _switch_off_wins("vit", "val_loss", 1.0, 0.6, _ABSTRACT,
                     "TinyViT on scikit-learn digits, AdamW (a = 0.6 vs 1.2 constant)",
                     ("compare", "eval_every")),
    _switch_off_wins("lora", "val_loss", 5.0, 0.16, _ABSTRACT,
                     "LoRA on all-MiniLM-L6-v2, Shakespeare play classification, AdamW",
                     ("eval_every", "threads"), dataset="shakespeare"),
    # -- the limit depends on the schedule only through a -------------------------------------
    Claim(
        id="sparse-regression/only-through-a",
        statement="sparse regression: switch-off schedules of different shape with equal a end "
                  "at the same limit; different a end at different limits",
        source="docs/theory.md §2, §5 (the limit is argmin R_a over Ax = y)",
        experiment="sparse-regression",
        tests=(SameThroughA("recovery_error", (_sw(0.2, 20.0), _sw(0.4, 10.0)),
                            (_sw(0.2, 10.0), _sw(0.2, 20.0)), scale="log"),),
        sweeps=("sparse-regression-quick", "sparse-regression-full"), free=_SR_FREE,
        setting="theory §5 setting; λ = 0.2 to t = 20 vs λ = 0.4 to t = 10 (a = 4), "
                "against λ = 0.2 to t = 10 (a = 2)",
        figure="sparse-regression_summary.png"),
    Claim(
        id="vit/only-through-a",
        statement="ViT (AdamW): equal a from different (λ, switch point) ends with a similar "
                  "nuclear/Frobenius ratio of W_Q W_Kᵀ; unequal a differs",
        source=_ABSTRACT + " (curves crossing where the integrated decays match)",
        experiment="vit",
        tests=(SameThroughA("nuclear_over_fro", (_sw(1.0, 0.6), _sw(2.0, 0.3)),
                            (_sw(1.0, 0.6), _sw(2.0, 0.6))),),
        sweeps=("vit-quick", "vit-full"), free=("compare", "eval_every"),
        setting="λ = 1 to t = 0.6 vs λ = 2 to t = 0.3 (a = 0.6), against λ = 2 to t = 0.6 "
                "(a = 1.2)", figure="vit_summary.png"),
    Claim(
        id="lora/only-through-a",
        statement="LoRA (AdamW): equal a from different (λ, switch point) ends with a similar "
                  "nuclear/Frobenius ratio of BA; unequal a differs",
        source=_ABSTRACT + " (curves crossing where the integrated decays match)",
        experiment="lora",
        tests=(SameThroughA("nuclear_over_fro",
                            (_sw(5.0, 0.16, dataset="shakespeare"),
                             _sw(10.0, 0.08, dataset="shakespeare")),
                            (_sw(5.0, 0.16, dataset="shakespeare"),
                             _sw(10.0, 0.16, dataset="shakespeare"))),),
        sweeps=("lora-quick", "lora-full"), free=("eval_every", "threads"),
        setting="λ = 5 to t = 0.16 vs λ = 10 to t = 0.08 (a = 0.8), against λ = 10 to "
                "t = 0.16 (a = 1.6)", figure="lora_summary.png"),
    # -- larger decay lowers the nuclear/Frobenius ratio; switch-off keeps it low -------------
    Claim(
        id="vit/decay-lowers-ratio",
        statement="ViT: larger constant decay lowers the nuclear/Frobenius ratio of W_Q W_Kᵀ "
                  "(published small ViT: 3.77 at λ = 1e-4 → 1.21 at λ = 0.5)",
        source=_ABSTRACT + "; docs/theory.md §6", experiment="vit",
        tests=(Compare("nuclear_over_fro", _const(1.0), _const(1e-4)),),
        sweeps=("vit-quick", "vit-full"), free=("compare", "eval_every"),
        setting="constant λ = 1e-4 vs λ = 1 (the full sweep adds 0.1, 0.5, 2)",
        figure="vit_summary.png"),
    Claim(
        id="lora/decay-lowers-ratio",
        statement="LoRA: larger constant decay lowers the nuclear/Frobenius ratio of BA",
        source=_ABSTRACT + "; docs/theory.md §6", experiment="lora",
        tests=(Compare("nuclear_over_fro", _const(5.0, dataset="shakespeare"),
                       _const(0.5, dataset="shakespeare")),),
        sweeps=("lora-quick", "lora-full"), free=("eval_every", "threads"),
        setting="constant λ = 0.5 vs λ = 5", figure="lora_summary.png"),
    Claim(
        id="vit/switch-off-keeps-low-ratio",
        statement="ViT: after switch-off the nuclear/Frobenius ratio stays nearer the decayed "
                  "runs than the undecayed ones",
        source="docs/theory.md §6 (after switch-off: small, balanced factors, low-rank bias)",
        experiment="vit",
        tests=(Nearer("nuclear_over_fro", _NONE, _const(1.0), _sw(1.0, 0.6)),),
        sweeps=("vit-quick", "vit-full"), free=("compare", "eval_every"),
        setting="λ = 1; switch-off at t = 0.6 (half of training)", figure="vit_summary.png"),
    Claim(
        id="lora/switch-off-keeps-low-ratio",
        statement="LoRA: after switch-off the nuclear/Frobenius ratio stays nearer the decayed "
                  "runs than the undecayed ones",
        source="docs/theory.md §6 (after switch-off: small, balanced factors, low-rank bias)",
        experiment="lora",
        tests=(Nearer("nuclear_over_fro", Arm("none", {"schedule": "none",
                                                       "dataset": "shakespeare"}),
                      _const(5.0, dataset="shakespeare"),
                      _sw(5.0, 0.16, dataset="shakespeare")),),
        sweeps=("lora-quick", "lora-full"), free=("eval_every", "threads"),
        setting="λ = 5; switch-off at t = 0.16", figure="lora_summary.png"),
    # -- sparse coding ------------------------------------------------------------------------
    Claim(
        id="sparse-coding/switch-off-sparser-at-matched-error",
        statement="sparse coding (u ⊙ v codes): switch-off codes reach the same reconstruction "
                  "error as undecayed codes with a smaller ‖C‖₁ (the limit is argmin R_a, more "
                  "L1-like for larger a); constant decay instead shrinks (Lasso) and fits worse",
        source="docs/theory.md §3 (type of bias), §5 (limit argmin R_a; Lasso under constant "
               "decay)",
        experiment="sparse-coding",
        tests=(Compare("l1_norm",
                       Arm("switch-off", {"schedule": "switch-off", "codes": "uv",
                                          "normalize": "centre-scale"}),
                       Arm("none", {"schedule": "none", "codes": "uv",
                                    "normalize": "centre-scale"}),
                       match=("train_mse", 1e-4)),),
        sweeps=("sparse-coding-quick", "sparse-coding-full"),
        setting="u ⊙ v codes, centred and rescaled patches of the sample images; pairs count "
                "only when the train MSE per pixel differs by ≤ 1e-4 (0.4% of the mean pixel "
                "energy)", figure="sparse-coding_summary.png"),
    Claim(
        id="sparse-coding/larger-k-faster-matched-speed",
        statement="sparse coding, power codes u^{2k} − v^{2k} started at equal initial speed: "
                  "larger k lowers the reconstruction error faster early in training (train "
                  "MSE after ≤ 200 iterations: k = 2 below k = 1, k = 3 below k = 2)",
        source="docs/theory.md §7 (power parameterization: the mirror map's speed grows like "
               "|c|^{2−1/k})",
        experiment="sparse-coding",
        tests=tuple(Compare("train_mse",
                            Arm(f"k={hi}", {"codes": "power", "k": hi, "init": "matched-speed",
                                            "iterations": AtMost(200)}),
                            Arm(f"k={lo}", {"codes": "power", "k": lo, "init": "matched-speed",
                                            "iterations": AtMost(200)}))
                    for lo, hi in ((1, 2), (2, 3))),
        sweeps=("sparse-coding-quick", "sparse-coding-full"),
        setting="init='matched-speed' (dc/dt = −∇f at c = 0 for every k); raw digits, their "
                "α convention, constant α = 1e-3 (inert), step 0.01, 100 iterations",
        figure="sparse-coding_summary.png"),
    Claim(
        id="sparse-coding/larger-k-faster-authors-init",
        statement="sparse coding with the authors' init u^{2k} = v^{2k} = ½: larger k lowers "
                  "the reconstruction error faster early in training (their code: MSE 0.0133 / "
                  "0.0083 / 0.0063 at iteration 100 for k = 1, 2, 3 on Olivetti faces)",
        source="the authors' public dictionary-learning code (Olivetti faces)",
        experiment="sparse-coding",
        tests=tuple(Compare("train_mse",
                            Arm(f"k={hi}", {"codes": "power", "k": hi, "init": "authors",
                                            "iterations": AtMost(200)}),
                            Arm(f"k={lo}", {"codes": "power", "k": lo, "init": "authors",
                                            "iterations": AtMost(200)}))
                    for lo, hi in ((1, 2), (2, 3))),
        sweeps=("sparse-coding-quick", "sparse-coding-full"),
        setting="init='authors' (initial speed 2k²·2^{1/k}: 4, 11.3, 22.7 for k = 1, 2, 3 — "
                "part of the effect is this speed); raw digits, their α convention, constant "
                "α = 1e-3, step 0.01, 100 iterations", figure="sparse-coding_summary.png"),
    # -- the effects on the geometry (no runs: computed from mirrorflow.geometry) -------------
    Claim(
        id="geometry/type-l2-to-l1",
        statement="u ⊙ v: as a grows, R_a changes type from L2-like to L1-like",
        source="docs/theory.md §3 (type of bias), §4",
        experiment=None,
        tests=(GeometryCheck("L1-likeness of R_a", _type_check),),
        setting=f"u0 = 1, v0 = 0, a ∈ {{{', '.join(f'{a:g}' for a in _GEOMETRY_A)}}}; "
                "measure_effects' type index"),
    Claim(
        id="geometry/reach-shrinks-e-2a",
        statement="u ⊙ v: the primal reach of a bounded dual movement shrinks as e^(−2a)",
        source="docs/theory.md §3 (β(a) = β0 e^(−2a)), §4 (range)",
        experiment=None,
        tests=(GeometryCheck("reach width", _range_check),),
        setting=f"u0 = 1, v0 = 0, |μ| ≤ 1, a ∈ {{{', '.join(f'{a:g}' for a in _GEOMETRY_A)}}}"),
)
