"""The claims part of the report: the claims table, a forest plot of the effects, claims.json.

:func:`claims_section` evaluates every claim of :data:`mirrorflow.report.claims.CLAIMS` on the
runs of a results store, writes ``claims.json`` (one object per claim: statement, source,
setting, verdict, reason, seeds, missing runs, and per test the effect with its 95% CI) and
``claims_forest.png`` into the report folder, and returns the Markdown that opens
``report.md``. A claim that is not supported says so, and why, in the table itself.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mirrorflow._core.figure import new_figure
from mirrorflow.report.claims import (
    CLAIMS,
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_EVALUATED,
    RULE,
    SUPPORTED,
    Claim,
    ClaimResult,
    Rule,
    evaluate_claims,
    family_size,
)
from mirrorflow.sweep.store import RunRecord

__all__ = ["claims_section", "forest_plot"]

_COLORS = {SUPPORTED: "C2", CONTRADICTED: "C3", INCONCLUSIVE: "C1", NOT_EVALUATED: "0.6"}
_MARK = {SUPPORTED: "**supported**", CONTRADICTED: "**contradicted**",
         INCONCLUSIVE: "*inconclusive*", NOT_EVALUATED: "not evaluated"}


#: How the report writes a number or an interval that is missing (too few values): the same
#: mark in the claims table and in the details, never ``nan``.
MISSING = "—"


def _fmt(x: float) -> str:
    return MISSING if not math.isfinite(x) else f"{x:.3g}"


def _interval(lo: float, hi: float) -> str:
    """``[lo, hi]``, or ``CI —`` when either end is missing."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"CI {MISSING}"
    return f"[{_fmt(lo)}, {_fmt(hi)}]"


_NAN_INTERVAL = re.compile(r"(?:CI )?\[nan, nan\]")


def _detail(text: str) -> str:
    """A claim's detail line with missing intervals written as in the table."""
    return re.sub(r"\bnan\b", MISSING, _NAN_INTERVAL.sub(f"CI {MISSING}", text))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claims_section(records: Sequence[RunRecord], out: Path,
                   claims: Sequence[Claim] | None = None,
                   rule: Rule | None = None) -> tuple[list[str], list[str]]:
    """``(markdown lines, notes)``; writes ``claims.json`` and ``claims_forest.png`` to ``out``."""
    rule = RULE if rule is None else rule
    results = evaluate_claims(records, CLAIMS if claims is None else claims, rule)
    m = family_size(results, rule)
    (out / "claims.json").write_text(json.dumps(
        {"rule": rule_json(m, rule), "claims": [r.to_json() for r in results]}, indent=2,
        allow_nan=False), encoding="utf-8")
    counts = {v: sum(r.verdict == v for r in results) for v in _MARK}
    fam = [r for r in results if r.statistical and r.verdict != NOT_EVALUATED
           and any(e.statistical and e.n >= rule.min_pairs for e in r.effects)]
    holm_counts = {v: sum(r.verdict_holm == v for r in fam) for v in _MARK}
    det = [r for r in results if not r.statistical]
    md = ["## Claims", "",
          f"{len(results)} claims: {counts[SUPPORTED]} supported, {counts[CONTRADICTED]} "
          f"contradicted, {counts[INCONCLUSIVE]} inconclusive, {counts[NOT_EVALUATED]} not "
          f"evaluated (runs missing). After Holm's step-down across the {m} claims with "
          f"enough pairs to decide: {holm_counts[SUPPORTED]} of them supported, "
          f"{holm_counts[CONTRADICTED]} contradicted"
          + (f"; the {len(det)} deterministic checks are outside the family "
             f"({sum(r.verdict == SUPPORTED for r in det)} supported)." if det else "."), "",
          *rule_markdown(m, rule), ""]
    rows = []
    for r in results:
        effects = "<br>".join(
            f"{_cell(e.label)}: {_fmt(e.estimate)} {_interval(e.lo, e.hi)}"
            for e in r.effects)
        smallest = "<br>".join(_cell(e.smallest.split(":")[0]) for e in r.effects
                               if e.smallest) or MISSING
        seeds = f"{max((e.n for e in r.effects), default=0)}"
        ps = r.power_seeds
        power = "> 50" if ps is None else (MISSING if ps < 0 else str(ps))
        fig = f"[figure]({r.claim.figure})" if r.claim.figure else MISSING
        holm_v = _MARK[r.verdict_holm] if r.statistical else "(no test)"
        rows.append([f"`{r.claim.id}`: {_cell(r.claim.statement)}", _MARK[r.verdict], holm_v,
                     effects, smallest, seeds, power, fig, _cell(_detail(r.reason))])
    header = ["claim", "verdict", "after Holm", "effect [95% CI]", "boundary",
              "pairs", "seeds for 80% power", "figure", "why"]
    md += ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    md.append("")
    notes = []
    if forest_plot(results, out / "claims_forest.png"):
        md += ["![forest plot of the claims' effects with 95% CIs](claims_forest.png)", ""]
    plain = [r for r in results if r.verdict in (CONTRADICTED, INCONCLUSIVE, NOT_EVALUATED)]
    if plain:
        md += ["**Where the claims do not hold (or cannot be decided here):**", ""]
        for r in plain:
            md.append(f"- `{r.claim.id}` is **{r.verdict}**: {_detail(r.reason)}")
        md.append("")
    missing = [r for r in results if r.verdict == NOT_EVALUATED]
    for r in missing:
        notes.append(f"claim {r.claim.id} not evaluated: needs " + "; ".join(r.missing))
    md += ["<details><summary>claims: sources, settings, boundaries and per-arm values"
           "</summary>", ""]
    for r in results:
        c = r.claim
        md.append(f"- `{c.id}` — source: {c.source}. Setting: {c.setting or 'defaults'}. "
                  f"Tested by: {', '.join(c.sweeps) or 'a computation (no runs)'}.")
        for e in r.effects:
            if e.smallest:
                md.append(f"  - {e.label}: boundary {e.smallest}")
            if e.detail:
                md.append(f"  - {e.label}: {_detail(e.detail)}")
    md += ["", "</details>", ""]
    return md, notes


def rule_json(family: int, rule: Rule = RULE) -> dict:
    """The ``rule`` block of claims.json: the decision rule per test kind, as applied."""
    a = rule.alpha_side
    both = (f"both Student's one-sided t test at {a:g} and the exact sign-flip permutation "
            f"test at {rule.alpha_signflip:g} (all 2^n sign patterns up to {rule.exact_up_to} "
            f"pairs, {rule.n_flips} seeded random ones above)")
    return {**rule.to_json(),
            "decision": f"each side of a test decides when {both} reject; a verdict needs ≥ "
                        f"{rule.min_pairs} pairs",
            "kinds": {
                "Compare": "d = log(m_worse / m_better) per pair (difference for linear "
                           "scale); supported: mean d > δ, the claim's smallest effect of "
                           "interest (H0: mean d ≤ δ rejected); contradicted: mean d < 0 (H0: "
                           "mean d ≥ 0 rejected); interval: Student t 95%",
                "Nearer": "T = mean(none − switch) / mean(none − decayed); needs mean(none − "
                          "decayed) > 0 shown at the same level; supported: T > θ via d = "
                          "(none − switch) − θ(none − decayed) > 0; contradicted: d < 0; "
                          "interval: Fieller 95%",
                "SameThroughA": "T = mean(q) / |mean(Δ)|; needs Δ ≠ 0 shown; supported: "
                                "|T| < margin (two one-sided tests of q ∓ margin·sΔ); "
                                "contradicted: T > margin or T < −margin, each at half the "
                                "level; interval: Fieller 95%",
                "GeometryCheck": "deterministic computation; no p-value, outside Holm"},
            "claim": "supported: every test supported (p = the largest supported-side p); "
                     "contradicted: the smallest contradicted-side p times the number of "
                     "tests ≤ alpha_side (Bonferroni inside the claim)",
            "holm": f"Holm's step-down over the {family} claims with runs and a statistical "
                    f"test of at least {rule.min_pairs} pairs, on p_two_sided = 2·min(p_supported, p_contradicted), at "
                    f"family-wise level {rule.family_alpha:g}: the probability that any "
                    f"'after Holm' verdict is false is at most {rule.family_alpha:g} (under "
                    f"the tests' assumptions)",
            "sequential": ("" if rule.looks == 1 else
                           f"one look of a {rule.looks}-look group-sequential design "
                           f"(reproduce --until-decided): every level is the single-look level "
                           f"divided by {rule.looks} (Bonferroni over looks), so the error "
                           f"rates hold over all looks together"),
            "power": f"seeds for {rule.power:.0%} power: simulated (normal per-seed values "
                     f"with the observed spread) at 2δ for Compare, T = 1 for Nearer, T = 0 "
                     f"for SameThroughA; the fewest seeds from which the power stays ≥ "
                     f"{rule.power:.0%} at every larger seed count tried"}


def rule_markdown(family: int, rule: Rule = RULE) -> list[str]:
    """The report's statement of the rule (the same as claims.json's ``rule`` block)."""
    a = rule.alpha_side
    return [
        f"**Rule, fixed before the runs** (docs/claims.md): pairs over seeds (same version; "
        f"several candidate runs are resolved by the arm's declared setting or left out, "
        f"never by order; runs that did not converge are left out and counted, and so are runs "
        f"that do not beat their experiment's chance level in tests of a geometry metric — "
        f"loss tests keep them). Each test has "
        f"a boundary and two one-sided decisions at {a:g}, each needing Student's t test "
        f"**and** the exact sign-flip permutation test (p < {rule.alpha_signflip:g}), "
        f"with ≥ {rule.min_pairs} pairs. `Compare`: *supported* when the mean effect is above "
        f"the claim's smallest effect of interest δ, *contradicted* when below 0 (t interval). "
        f"`Nearer`: T above / below its threshold θ (Fieller interval), once the decay is "
        f"shown to move the metric. `SameThroughA`: |T| inside / outside its margin (Fieller "
        f"interval), once a is shown to matter. A claim is supported when all its tests are, "
        f"contradicted when one is at {a:g}/k (k tests). *After Holm*: Holm's step-down over "
        f"the {family} claims with enough pairs to decide, at family-wise level "
        f"{rule.family_alpha:g} — the chance "
        f"that any verdict of that column is false is at most {rule.family_alpha:g}. "
        f"Inconclusive verdicts say what the 95% interval rules out, and the seeds that would "
        f"give {rule.power:.0%} power. Effects and boundaries per claim are in "
        f"[claims.json](claims.json)."
        + ("" if rule.looks == 1 else
           f" **Sequential design**: this is one look of at most {rule.looks} (`reproduce "
           f"--until-decided`); every level above is the single-look level divided by "
           f"{rule.looks}, so the error rates hold over all looks together.")]


def forest_plot(results: Sequence[ClaimResult], path: Path) -> bool:
    """One row per evaluated test: effect with its 95% CI, colored by verdict; the decision
    threshold(s) of each row as short black ticks. Returns False when nothing to draw."""
    rows = [(r, e) for r in results for e in r.effects if math.isfinite(e.estimate)]
    if not rows:
        return False
    n = len(rows)
    fig, ax = new_figure(1, 1, figsize=(11, 0.42 * n + 1.8), squeeze=True)
    for i, (_r, e) in enumerate(rows):
        y = n - 1 - i
        col = _COLORS[e.verdict]
        lo = e.lo if math.isfinite(e.lo) else e.estimate
        hi = e.hi if math.isfinite(e.hi) else e.estimate
        ax.plot([lo, hi], [y, y], color=col, lw=2)
        ax.plot([e.estimate], [y], "o", color=col, ms=6)
        for ref in e.reference:
            ax.plot([ref, ref], [y - 0.35, y + 0.35], color="k", lw=1)
    labels = [f"{r.claim.id}\n{e.short or e.label}" for r, e in rows]
    ax.set_yticks(np.arange(n)[::-1], labels, fontsize=6.5)
    ax.set_ylim(-0.7, n - 0.3)
    ax.axvline(0.0, color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("effect, each row in its own unit (log ratio, relative difference, slope)\n"
                  "black ticks: the row's decision threshold(s); colour: verdict", fontsize=8)
    handles = [ax.plot([], [], "o-", color=c, label=v)[0] for v, c in _COLORS.items()]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_title("claims: effects with 95% CIs (t / Fieller)", fontsize=10)
    fig.savefig(path, dpi=110)
    return True
