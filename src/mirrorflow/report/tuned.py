"""Tuned comparisons with equal tuning budgets: is switch-off better once every schedule is tuned?

A practitioner compares schedules *tuned* on validation data, not one fixed (λ, switch point).
The protocol (issue 22, docs/claims.md):

* each schedule *family* gets the same number ``K`` of configurations per seed — constant decay
  a grid of ``K`` values of λ, switch-off ``K`` (λ, switch point) pairs, no decay ``K``
  learning rates (the only knob it has) — all on the same seed, so on the same data split,
  initialization and batch order;
* per seed and family, the configuration with the lowest **validation** loss is selected
  (:func:`select_per_seed`); a diverged configuration counts against the budget but cannot be
  selected; a seed whose family lacks runs or has a failed one is left out (reported);
* the selected configurations are compared on the held-out **test** split, paired by seed:
  ``d_s = log(test_worse / test_better)`` with :class:`~mirrorflow.report.claims.Compare`'s
  decision rule (bootstrap CI of the mean and sign test, ``RULE``).

:class:`Tuned` is a claim test with ``Compare``'s interface
(``evaluate(records, experiment, free, rule) -> Effect``); :func:`vit_tuned_claim` builds the
claim ``<experiment>/tuned-switch-off-wins`` of any experiment whose sweeps declare tuned cases
(:func:`tuned_claim`, families from :func:`schedule_families`); :func:`vit_tuned_claim` and
:func:`lora_lm_tuned_claim` are the ViT's and lora-lm's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from mirrorflow.sweep.store import RunRecord


class _Claims:
    """:mod:`mirrorflow.report.claims`, looked up when used: claims.py imports this module for
    its registry, so this module never imports it while loading."""

    def __getattr__(self, name: str) -> Any:
        from mirrorflow.report import claims

        return getattr(claims, name)


_c = _Claims()

if TYPE_CHECKING:
    from mirrorflow.report.claims import Arm, Effect, Rule

__all__ = ["Family", "Selection", "Tuned", "lora_lm_tuned_claim", "schedule_families",
           "select_per_seed", "tuned_claim", "vit_tuned_claim"]

#: fields a schedule family may tune (dropped from the pairing key of every family)
_SCHEDULE_FIELDS = ("schedule", "wd", "switch_at", "budget")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Family:
    """One schedule family: its label, the config fields its runs share (``where``, values or
    conditions as in :class:`~mirrorflow.report.claims.Arm`) and the fields it tunes."""

    label: str
    where: Mapping[str, Any]
    tuned: tuple[str, ...]

    @property
    def arm(self) -> Arm:
        return _c.Arm(self.label, self.where)


@dataclass(frozen=True)
class Selection:
    """A family's pick for one seed: the selected run, its selection and test metric, and how
    many configurations it was chosen from (``tried``; ``diverged`` of them could not win)."""

    record: RunRecord
    selected_on: float
    metric: float
    tried: int
    diverged: int

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.record.config)


def _pair_key(rec: RunRecord, drop: set[str]) -> tuple:
    return (rec.version, tuple(sorted((k, repr(v)) for k, v in rec.config.items()
                                      if k not in drop)))


def select_per_seed(records: Sequence[RunRecord], family: Family, drop: Sequence[str],
                    select: str = "val_loss", metric: str = "test_loss"
                    ) -> tuple[dict[tuple, Selection], dict[str, int]]:
    """Per pairing key (the seed and every config field not in ``drop``): the family's run with
    the lowest ``select`` among its configurations, with its ``metric``.

    Returns ``(selections, problems)``; ``problems`` counts keys left out: ``failed`` (a run of
    the family failed or lacks the metrics: the budget was not spent), ``diverged`` (no run
    finished). Keys map to :class:`Selection`, whose ``tried`` is the number of distinct
    configurations found (the caller checks it against the budget).
    """
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        if family.arm.matches(r.config):
            groups.setdefault(_pair_key(r, set(drop)), []).append(r)
    out: dict[tuple, Selection] = {}
    problems = {"failed": 0, "diverged": 0}
    for key, runs in groups.items():
        by_config = {repr(sorted(r.config.items())): r for r in runs}  # reruns: the last
        runs = list(by_config.values())
        if any(r.status == "failed" for r in runs):
            problems["failed"] += 1
            continue
        ok = [r for r in runs if r.status == "done" and _finite(r.metrics.get(select))
              and _finite(r.metrics.get(metric))]
        if not ok:
            problems["diverged"] += 1
            continue
        best = min(ok, key=lambda r: r.metrics[select])
        out[key] = Selection(best, float(best.metrics[select]), float(best.metrics[metric]),
                             tried=len(runs), diverged=len(runs) - len(ok))
    return out, problems


def _finite(v: Any) -> bool:
    return _is_num(v) and math.isfinite(v)


@dataclass(frozen=True)
class Tuned:
    """Tuned ``better`` beats tuned ``worse`` on ``metric`` (test loss) after each family picked
    its best of ``budget`` configurations per seed on ``select`` (validation loss).

    ``scale="log"``: per seed ``d = log(m_worse / m_better)`` (``d > 0``: the claim), decided as
    :class:`~mirrorflow.report.claims.Compare` decides. A seed counts only when both families
    spent the same number of configurations on it (exactly ``budget`` when given; at least 2
    otherwise — so the quick sweep's smaller budget and the full sweep's are both equal).
    """

    better: Family
    worse: Family
    budget: int | None = None
    metric: str = "test_loss"
    select: str = "val_loss"
    scale: str = "log"
    smallest: float = math.log(1.05)
    why: str = ("a factor 1.05 of the test loss (5%): a smaller gain is not what 'ends with a "
                "lower loss' means for a schedule choice")

    @property
    def smallest_text(self) -> str:
        unit = f" (factor {math.exp(self.smallest):.3g})" if self.scale == "log" else ""
        return f"δ = {self.smallest:.3g}{unit}: {self.why}"

    @property
    def arms(self) -> tuple[Arm, ...]:
        return (self.better.arm, self.worse.arm)

    @property
    def label(self) -> str:
        b, w = f"tuned {self.better.label}", f"tuned {self.worse.label}"
        if self.scale == "log":
            return f"log({self.metric} {w} / {b})"
        return f"{self.metric} {w} − {b}"

    @property
    def short(self) -> str:
        k = self.budget or "K"
        return f"{self.metric}: tuned {self.worse.label} vs tuned {self.better.label} " \
               f"(best of {k} on {self.select})"

    def _equal_budget(self, a: int, b: int) -> bool:
        return a == b == self.budget if self.budget else a == b >= 2

    def evaluate(self, records, experiment, free, rule: Rule | None = None,
                 fixed_horizon: bool = False) -> Effect:
        """Select per seed and family, then decide as :class:`Compare` does (the calibrated
        rule of :func:`~mirrorflow.report.claims.kinds.decide_compare`, smallest effect
        ``smallest``). ``fixed_horizon`` is accepted for the claim-test interface (unused)."""
        from mirrorflow.report.claims.kinds import _finish, decide_compare

        rule = _c.RULE if rule is None else rule
        drop = set(_SCHEDULE_FIELDS) | set(free) | set(self.better.tuned) | set(self.worse.tuned)
        drop |= set(self.better.where) | set(self.worse.where)
        sel, problems = {}, {}
        for fam in (self.better, self.worse):
            sel[fam.label], problems[fam.label] = select_per_seed(
                records, fam, sorted(drop), self.select, self.metric)
        missing = tuple(f"{experiment} runs with {f.arm.describe()}"
                        for f in (self.better, self.worse) if not sel[f.label]
                        and not any(problems[f.label].values()))
        if missing:
            return _c.Effect(self.label, _c.NOT_EVALUATED, "runs missing: " + "; ".join(missing),
                          missing=missing)
        b_sel, w_sel = sel[self.better.label], sel[self.worse.label]
        keys = sorted(set(b_sel) & set(w_sel), key=repr)
        short = [k for k in keys if not self._equal_budget(b_sel[k].tried, w_sel[k].tried)]
        keys = [k for k in keys if k not in short]
        notes = []
        unpaired = len(set(b_sel) ^ set(w_sel))
        for label, p in problems.items():
            if p["failed"] or p["diverged"]:
                notes.append(f"{label}: {p['failed']} seed(s) with failed runs, {p['diverged']} "
                             f"with no finished run left out")
        if short:
            want = f"exactly {self.budget}" if self.budget else "the same number (≥ 2) of"
            notes.append(f"{len(short)} seed(s) without {want} configurations per family left "
                         "out (unequal budget)")
        if unpaired:
            notes.append(f"{unpaired} seed(s) lack a selection of one family")
        quick = bool(keys) and all(
            isinstance(s.record.sweep, str) and s.record.sweep.endswith("-quick")
            for k in keys for s in (b_sel[k], w_sel[k]))
        if not keys:
            return _c.Effect(self.label, _c.INCONCLUSIVE, "no seed with both families tuned"
                          + (" (" + "; ".join(notes) + ")" if notes else ""))
        b = np.array([b_sel[k].metric for k in keys])
        w = np.array([w_sel[k].metric for k in keys])
        if self.scale == "log":
            if np.any(b <= 0) or np.any(w <= 0):
                return _c.Effect(self.label, _c.INCONCLUSIVE,
                             f"{self.metric} ≤ 0 in some run: no log ratio", n=len(keys))
            d = np.log(w) - np.log(b)
        else:
            d = w - b
        seeds = tuple(sorted({b_sel[k].record.config.get("seed") for k in keys}, key=repr))
        if len(keys) < rule.min_pairs:
            notes.insert(0, f"too few seeds: {len(keys)} pair(s) < {rule.min_pairs}"
                         + (" (quick sweep)" if quick else ""))
        detail = (f"tuned {self.better.label}: {_mean_sd(b)} "
                  f"({_picks(b_sel, keys, self.better)}); tuned {self.worse.label}: "
                  f"{_mean_sd(w)} ({_picks(w_sel, keys, self.worse)})")
        eff = decide_compare(d, self.smallest, rule)
        eff = replace(eff, label=self.label, seeds=seeds, detail=detail,
                      smallest=self.smallest_text, reference=(0.0, self.smallest))
        return _finish(eff, notes, len(d), rule)


def _mean_sd(x: np.ndarray) -> str:
    sd = f" ± {np.std(x, ddof=1):.2g}" if len(x) > 1 else ""
    return f"{np.mean(x):.4g}{sd}"


def _picks(sel: Mapping[tuple, Selection], keys, family: Family) -> str:
    """How often each configuration was selected, e.g. ``wd=2, switch_at=0.3: 12/20``."""
    counts: dict[str, int] = {}
    for k in keys:
        c = sel[k].config
        name = ", ".join(f"{f}={c.get(f):g}" if _is_num(c.get(f)) else f"{f}={c.get(f)!r}"
                         for f in family.tuned)
        counts[name] = counts.get(name, 0) + 1
    return "picked " + "; ".join(f"{n}: {c}/{len(keys)}"
                                 for n, c in sorted(counts.items(), key=lambda x: -x[1]))


def schedule_families(**where: Any) -> tuple[Family, Family, Family]:
    """The three schedule families of the protocol — switch-off (tunes λ and the switch point),
    constant decay (λ), no decay (the learning rate) — each restricted by ``where`` (e.g. the
    ViT's ``test_fraction``)."""
    return (Family("switch-off", {"schedule": "switch-off", **where}, ("wd", "switch_at")),
            Family("constant", {"schedule": "constant", **where}, ("wd",)),
            Family("none", {"schedule": "none", **where}, ("lr",)))


def tuned_claim(experiment: str, *, statement: str, source: str, setting: str,
                families: tuple[Family, Family, Family] | None = None,
                free: tuple[str, ...] = (), select: str = "val_loss",
                metric: str = "test_loss", figure: str | None = None,
                sweeps: tuple[str, ...] | None = None):
    """The claim ``<experiment>/tuned-switch-off-wins``: tuned switch-off beats tuned no decay
    and tuned constant decay (two :class:`Tuned` tests) on ``metric``, each family selecting
    per seed on ``select``. ``families``: ``(switch-off, constant, none)`` (default:
    :func:`schedule_families` without restriction); ``sweeps``: default the experiment's quick
    and full sweeps; ``figure``: default ``<experiment>_summary.png``."""
    from mirrorflow.report.claims.kinds import Claim

    sw, const, none = families or schedule_families()
    return Claim(
        id=f"{experiment}/tuned-switch-off-wins", statement=statement, source=source,
        experiment=experiment,
        tests=(Tuned(sw, none, metric=metric, select=select),
               Tuned(sw, const, metric=metric, select=select)),
        sweeps=sweeps or (f"{experiment}-quick", f"{experiment}-full"), free=free,
        setting=setting, figure=figure or f"{experiment}_summary.png")


_ABSTRACT = "the paper's abstract"


def vit_tuned_claim():
    """The claim ``vit/tuned-switch-off-wins`` over the tuned runs of the ViT sweeps (those with
    the test split of :data:`mirrorflow.experiments.vit.TUNED`)."""
    from mirrorflow.experiments.vit import TUNED

    full = TUNED["full"]
    k = len(full["constant"]["wd"])
    return tuned_claim(
        "vit",
        statement="ViT: with equal tuning budgets (the same number of configurations per "
                  "schedule family, selected per seed on validation loss) switch-off ends with a "
                  "lower test loss than tuned constant decay and than tuned no decay",
        source=_ABSTRACT + " (a practitioner compares tuned schedules)",
        families=schedule_families(test_fraction=TUNED["test_fraction"]),
        free=("eval_every",),
        setting=f"test split: {TUNED['test_fraction']:g} of the images; full sweep: {k} "
                f"configurations per family and {full['seeds']} seeds — switch-off λ "
                f"{full['switch-off']['wd']} × t {full['switch-off']['switch_at']}, constant λ "
                f"{full['constant']['wd']}, none lr {full['none']['lr']}")


def lora_lm_tuned_claim():
    """The claim ``lora-lm/tuned-switch-off-wins`` over the tuned cases of the lora-lm sweeps
    (:data:`mirrorflow.experiments.charlm.TUNED_LORA_LM`; every run scores the held-out test
    plays). Reads the grids without importing transformers / peft."""
    from mirrorflow.experiments.charlm import TUNED_LORA_LM as TUNED
    from mirrorflow.experiments.charlm import TUNED_LORA_LM_SEEDS as _SEEDS

    full = TUNED["full"]
    k = len(full["constant"]["wd"])
    pairs = ", ".join(f"({w:g}, {t:g})" for w, t in zip(full["switch-off"]["wd"],
                                                        full["switch-off"]["switch_at"]))
    return tuned_claim(
        "lora-lm",
        statement="lora-lm: with equal tuning budgets (the same number of configurations per "
                  "schedule family, selected per seed on validation loss) switch-off ends with a "
                  "lower test loss (nats per character, held-out plays) than tuned constant "
                  "decay and than tuned no decay",
        source=_ABSTRACT + " (its LoRA experiment; a practitioner compares tuned schedules)",
        free=("eval_every", "threads"),
        setting=f"full sweep: {k} configurations per family and {len(_SEEDS['full']['seed'])} "
                f"seeds — switch-off (λ, t) {pairs}, constant λ {full['constant']['wd']}, none "
                f"lr {full['none']['lr']}; quick: {len(TUNED['quick']['constant']['wd'])} per "
                f"family")
