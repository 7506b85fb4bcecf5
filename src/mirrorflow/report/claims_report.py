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
    evaluate_claims,
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
                   claims: Sequence[Claim] | None = None) -> tuple[list[str], list[str]]:
    """``(markdown lines, notes)``; writes ``claims.json`` and ``claims_forest.png`` to ``out``."""
    results = evaluate_claims(records, CLAIMS if claims is None else claims)
    (out / "claims.json").write_text(json.dumps(
        {"rule": {"min_pairs": RULE.min_pairs, "confidence": RULE.confidence,
                  "alpha": RULE.alpha, "n_resamples": RULE.n_resamples,
                  "bootstrap": "BCa (percentile where BCa is undefined), paired over seeds",
                  "sign_test": "one-sided binomial test on the signs of the paired differences"},
         "claims": [r.to_json() for r in results]}, indent=2, allow_nan=False),
        encoding="utf-8")
    counts = {v: sum(r.verdict == v for r in results) for v in _MARK}
    md = ["## Claims", "",
          f"{len(results)} claims: {counts[SUPPORTED]} supported, {counts[CONTRADICTED]} "
          f"contradicted, {counts[INCONCLUSIVE]} inconclusive, {counts[NOT_EVALUATED]} not "
          f"evaluated (runs missing). Rule, fixed before the runs: paired over seeds; "
          f"*supported* needs ≥ {RULE.min_pairs} pairs, the bootstrap {RULE.confidence:.0%} CI "
          f"of the mean effect on the claimed side of its threshold and a one-sided sign test "
          f"at p < {RULE.alpha:g}; *contradicted* is the same on the other side; anything else "
          f"is *inconclusive*, with the reason. Effects and thresholds per claim are in "
          f"[claims.json](claims.json).", ""]
    rows = []
    for r in results:
        effects = "<br>".join(
            f"{_cell(e.label)}: {_fmt(e.estimate)} {_interval(e.lo, e.hi)}"
            for e in r.effects)
        seeds = f"{max((e.n for e in r.effects), default=0)}"
        fig = f"[figure]({r.claim.figure})" if r.claim.figure else MISSING
        rows.append([f"`{r.claim.id}`: {_cell(r.claim.statement)}", _MARK[r.verdict],
                     effects, seeds, fig, _cell(_detail(r.reason))])
    header = ["claim", "verdict", "effect [95% CI]", "pairs", "figure", "why"]
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
    md += ["<details><summary>claims: sources, settings and per-arm values</summary>", ""]
    for r in results:
        c = r.claim
        md.append(f"- `{c.id}` — source: {c.source}. Setting: {c.setting or 'defaults'}. "
                  f"Tested by: {', '.join(c.sweeps) or 'a computation (no runs)'}.")
        for e in r.effects:
            if e.detail:
                md.append(f"  - {e.label}: {_detail(e.detail)}")
    md += ["", "</details>", ""]
    return md, notes


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
    ax.set_title("claims: effects with 95% bootstrap CIs", fontsize=10)
    fig.savefig(path, dpi=110)
    return True
