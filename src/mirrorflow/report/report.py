"""Turn a results store into a report: Markdown + CSV tables and PNG figures per experiment.

For each experiment in the store, runs are grouped by their *setting*: every config field that
varies across the experiment's runs, except ``seed`` (for a schedule sweep, the setting is the
schedule). Per setting and metric the tables give mean ± sample standard deviation (ddof = 1)
over the ``done`` runs (one per seed), with the number of values; ``diverged`` and ``failed``
runs are counted separately and never enter the means. The settings stand side by side as the
columns of the Markdown table.

Files written to ``OUT``::

    report.md                    the claims table (verdicts, effects, CIs), then all experiments:
                                 run counts, metric tables, figures, failures
    claims.json                  every claim's verdict, reason, effects with CIs, missing runs
    claims_forest.png            forest plot of the claims' effect sizes
    <experiment>.csv             tidy table: setting fields, metric, mean, sd, n, run counts
    runs.csv                     one row per run: id, experiment, status, seed, setting, metrics
    <experiment>_summary.png     per metric: mean ± sd per setting with the seeds as dots
    <experiment>_curves.png      the experiment's own ``plot`` of one run (lowest seed) per setting

The report is built in a temporary folder and moved into ``OUT`` only when complete; temporary
folders that a killed report left behind are removed by the next one.

Only runs of one mirrorflow version are reported (default: the installed version, or the one
version in the store when it holds no other); runs of other versions are counted and named in the
notes, never averaged in (docs/reliability.md).
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mirrorflow._core.figure import new_figure
from mirrorflow._core.validation import MirrorflowError, check_writable_folder
from mirrorflow.schedules.continuous import SCHEDULE_NAMES, unused_options
from mirrorflow.sweep.store import ResultStore, RunRecord

__all__ = ["GroupStats", "ReportFiles", "group_runs", "metric_stats", "write_report"]

_MAX_SUMMARY_METRICS = 8


@dataclass(frozen=True)
class GroupStats:
    """Statistics of one metric over the ``done`` runs of one setting."""

    mean: float
    sd: float  # sample standard deviation (ddof = 1); NaN with fewer than 2 values
    n: int
    values: tuple[float, ...]


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote (paths inside ``out``) and what it skipped."""

    out: Path
    files: tuple[str, ...]
    notes: tuple[str, ...]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def group_runs(records: Sequence[RunRecord]) -> tuple[list[str], dict[tuple, list[RunRecord]]]:
    """``(varying fields, {setting: runs})``: group one experiment's runs by all fields but seed.

    A setting is the tuple of the varying fields' values (schedules in the order none, constant,
    switch-off, budget; numbers ascending). Fields
    that vary only together with others are left out (they would not change the groups).
    """
    keys: list[str] = []
    for r in records:
        keys.extend(k for k in r.config if k not in keys)
    varying = [k for k in keys if k != "seed"
               and len({repr(r.config.get(k)) for r in records}) > 1]

    def n_settings(fields):
        return len({tuple(repr(r.config.get(k)) for k in fields) for r in records})

    # drop fields that only follow the others (e.g. t_max zipped with schedule): same groups,
    # shorter labels; 'schedule' is kept as long as possible
    n_all = n_settings(varying)
    for k in sorted(varying, key=lambda k: k == "schedule"):
        trial = [x for x in varying if x != k]
        if trial and n_settings(trial) == n_all:
            varying = trial
    groups: dict[tuple, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(tuple(r.config.get(k) for k in varying), []).append(r)
    order = sorted(groups, key=lambda s: tuple(_sort_key(k, v) for k, v in zip(varying, s)))
    return varying, {s: groups[s] for s in order}


_SCHEDULE_ORDER = {name: i for i, name in enumerate(SCHEDULE_NAMES)}  # the one name table


def _sort_key(field: str, value: Any) -> tuple:
    """Settings in a stable order: schedules none, constant, switch-off, budget; numbers by value."""
    if field == "schedule" and value in _SCHEDULE_ORDER:
        return (0, _SCHEDULE_ORDER[value], "")
    if _is_number(value):
        return (1, float(value), "")
    return (2, 0.0, repr(value))


def metric_stats(runs: Sequence[RunRecord], metric: str) -> GroupStats:
    """mean ± sd (ddof = 1) of ``metric`` over the ``done`` runs with a finite value."""
    vals = [float(r.metrics[metric]) for r in runs if r.status == "done"
            and _is_number(r.metrics.get(metric)) and math.isfinite(r.metrics[metric])]
    if not vals:
        return GroupStats(math.nan, math.nan, 0, ())
    arr = np.asarray(vals)
    sd = float(arr.std(ddof=1)) if len(arr) > 1 else math.nan
    return GroupStats(float(arr.mean()), sd, len(vals), tuple(vals))


def _metrics_of(records: Sequence[RunRecord]) -> list[str]:
    out: list[str] = []
    for r in records:
        if r.status == "done":
            out.extend(k for k, v in r.metrics.items() if _is_number(v) and k not in out)
    return out


def _label(varying: Sequence[str], setting: tuple, full: bool = False) -> str:
    """``schedule=switch-off, wd=0.1``; a field the setting's schedule does not use (``wd`` of
    ``schedule=none``) is left out unless ``full``."""
    if not varying:
        return "all runs"
    if len(varying) == 1:
        return str(setting[0])
    pairs = list(zip(varying, setting))
    # the options the setting's schedule does not read do not label it (the schedule object says)
    unused = () if full else unused_options(dict(pairs).get("schedule"))
    return ", ".join(f"{k}={v}" for k, v in pairs if k not in unused)


def _setting_labels(varying: Sequence[str], settings: Sequence[tuple]) -> dict[tuple, str]:
    """The label of each setting; in full where leaving out unused fields would make two
    labels equal."""
    short = {s: _label(varying, s) for s in settings}
    if len(set(short.values())) == len(short):
        return short
    return {s: _label(varying, s, full=True) for s in settings}


def _fmt(st: GroupStats) -> str:
    if st.n == 0:
        return "—"
    sd = "—" if math.isnan(st.sd) else f"{st.sd:.2g}"
    return f"{st.mean:.4g} ± {sd} (n={st.n})"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    esc = [str(h).replace("|", "\\|") for h in header]
    lines = ["| " + " | ".join(esc) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_report(db: str | Path | ResultStore, out: str | Path,
                 version: str | None = None, rule=None) -> ReportFiles:
    """Write the report of every experiment in the results database ``db`` to folder ``out``.

    Only runs written by mirrorflow ``version`` enter it (default: this version, or the only
    version in the store); the others are counted in the notes. ``rule``: the claims' decision
    rule (default :data:`mirrorflow.report.claims.RULE`; ``reproduce --until-decided`` passes
    its per-look rule).
    """
    out = Path(out)
    if not out.parent.is_dir():
        raise MirrorflowError(f"cannot write report to {out}: folder {out.parent} does not exist")
    if out.exists() and not out.is_dir():
        raise MirrorflowError(f"--out {out} is a file; pass a folder")
    check_writable_folder(out if out.is_dir() else out.parent, what=f"report to {out}")
    if isinstance(db, ResultStore):
        return _write(db, out, version, rule)
    with ResultStore(db, create=False) as store:
        return _write(store, out, version, rule)


def _one_version(records: list[RunRecord], version: str | None,
                 path: Path) -> tuple[str, list[RunRecord], list[str]]:
    """``(version, its records, notes)``: the runs of one mirrorflow version and a note on
    the runs of other versions left out (``version=None``: this one, or the only one)."""
    import mirrorflow

    versions = Counter(r.version for r in records)
    notes = []
    if version is None:
        version = mirrorflow.__version__
        if version not in versions and len(versions) == 1:
            (version,) = versions
            notes.append(f"all runs were written by mirrorflow {version or '(unknown)'}, not "
                         f"by this version ({mirrorflow.__version__})")

    def listed(vs):
        return ", ".join(f"{v or '(unknown)'}: {versions[v]}" for v in sorted(vs))

    if version not in versions:
        raise MirrorflowError(f"{path} holds no runs of mirrorflow {version} (runs by version: "
                              f"{listed(versions)}); pass --version V to report one of those")
    others = [v for v in versions if v != version]
    if others:
        notes.append(f"left out {sum(versions[v] for v in others)} runs of other mirrorflow "
                     f"versions ({listed(others)}); results of different code are never "
                     f"mixed: `mirrorflow report --version V` reports them")
    return version, [r for r in records if r.version == version], notes


def _stale_tmp(out: Path) -> None:
    """Remove temporary folders of reports to ``out`` whose process is gone (killed)."""
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(p.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


def _write(store: ResultStore, out: Path, version: str | None, rule=None) -> ReportFiles:
    records = store.records()
    if not records:
        raise MirrorflowError(f"{store.path} holds no runs; run a sweep into it first")
    version, records, version_note = _one_version(records, version, store.path)
    by_exp: dict[str, list[RunRecord]] = {}
    for r in records:
        by_exp.setdefault(r.experiment, []).append(r)
    _stale_tmp(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        notes: list[str] = list(version_note)
        md = ["# mirrorflow report", "",
              f"Results database: `{store.path.name}` — {len(records)} runs of mirrorflow "
              f"{version or '(unknown version)'}, "
              f"{len(by_exp)} experiment(s). Tables: mean ± sample sd over seeds of the "
              f"`done` runs (n = number of values); diverged and failed runs are counted, "
              f"not averaged.", ""]
        md += _claims(records, tmp, notes, rule)
        run_rows = []
        for exp_name, recs in sorted(by_exp.items()):
            md += _experiment_section(store, exp_name, recs, tmp, notes, run_rows)
        _write_runs_csv(tmp / "runs.csv", run_rows)
        if notes:
            md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
        (tmp / "report.md").write_text("\n".join(md), encoding="utf-8")
        out.mkdir(exist_ok=True)
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:
            (tmp / name).replace(out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ReportFiles(out=out, files=tuple(files), notes=tuple(notes))


def _claims(records: list[RunRecord], tmp: Path, notes: list[str], rule=None) -> list[str]:
    """The claims table, forest plot and claims.json (:mod:`mirrorflow.report.claims_report`)."""
    from mirrorflow.report.claims_report import claims_section

    md, claim_notes = claims_section(records, tmp, rule=rule)
    notes.extend(claim_notes)
    return [*md, "## Experiments", ""]


def _chance_level(exp_name: str, recs: list[RunRecord]):
    """``(baseline, finished runs that do not beat it)`` when the experiment declares a chance
    level for its runs (:func:`mirrorflow.experiments.chance_verdict`, the predicate the
    geometry claims use too), else ``None``."""
    from mirrorflow.experiments import chance_verdict

    baseline, below = None, []
    for r in recs:
        if r.status != "done":
            continue
        verdict = chance_verdict(exp_name, r.config, r.metrics)
        if verdict is None:
            continue
        baseline = baseline or verdict[0]
        if not verdict[1]:
            below.append(r)
    return None if baseline is None else (baseline, below)


def _experiment_section(store: ResultStore, exp_name: str, recs: list[RunRecord], tmp: Path,
                        notes: list[str], run_rows: list[dict]) -> list[str]:
    varying, groups = group_runs(recs)
    metrics = _metrics_of(recs)
    names = _setting_labels(varying, list(groups))
    labels = [names[s] for s in groups]
    counts = {s: {st: sum(r.status == st for r in g) for st in ("done", "diverged", "failed")}
              for s, g in groups.items()}
    stats = {s: {m: metric_stats(g, m) for m in metrics} for s, g in groups.items()}
    md = [f"## {exp_name}", ""]
    const = {k: v for k, v in recs[0].config.items()
             if len({repr(r.config.get(k)) for r in recs}) == 1}
    follow = [k for k in recs[0].config if k not in const and k not in varying and k != "seed"]
    seeds = sorted({r.config.get("seed") for r in recs}, key=repr)
    md += [f"Setting varies over: {', '.join(varying) or '(nothing)'}; seeds: "
           f"{', '.join(map(str, seeds))}."
           + (f" Also varying with the setting: {', '.join(follow)}." if follow else ""), "",
           "<details><summary>fixed config fields</summary>", "",
           ", ".join(f"`{k}={v}`" for k, v in const.items()), "", "</details>", ""]
    header = ["", *labels]
    rows = [["runs done / diverged / failed",
             *(f"{c['done']} / {c['diverged']} / {c['failed']}" for c in counts.values())]]
    rows += [[m, *(_fmt(stats[s][m]) for s in groups)] for m in metrics]
    md += [*_md_table(header, rows), ""]
    chance = _chance_level(exp_name, recs)
    if chance is not None:
        baseline, below = chance
        done = sum(r.status == "done" for r in recs)
        line = (f"Chance level: `{baseline.metric}` = {baseline.value:.4g} ({baseline.what}); a "
                f"run beats it at ≤ {1 - baseline.margin:g}× that value. ")
        if below:
            where = ", ".join(f"{names[tuple(r.config.get(k) for k in varying)]} seed "
                              f"{r.config.get('seed')}" for r in below[:8])
            more = f" and {len(below) - 8} more" if len(below) > 8 else ""
            line += (f"**{len(below)} of {done} finished runs do not beat it** ({where}{more}): "
                     f"they learned nothing measurable, and their geometry says nothing about "
                     f"weight decay.")
            notes.append(f"{exp_name}: {len(below)} of {done} finished runs do not beat the "
                         f"chance level ({baseline.metric} {baseline.value:.4g})")
        else:
            line += f"All {done} finished runs beat it."
        md += [line, ""]

    # tidy CSV
    csv_name = f"{_safe(exp_name)}.csv"
    with (tmp / csv_name).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*varying, "metric", "mean", "sd", "n", "runs_done", "runs_diverged",
                    "runs_failed"])
        for s in groups:
            c = counts[s]
            for m in metrics:
                st = stats[s][m]
                w.writerow([*s, m, _num(st.mean), _num(st.sd), st.n, c["done"], c["diverged"],
                            c["failed"]])
    md += [f"Table as CSV: [{csv_name}]({csv_name})", ""]

    for r in recs:
        run_rows.append({"id": r.run_id, "experiment": exp_name, "status": r.status,
                         "seed": r.config.get("seed"),
                         "setting": names[tuple(r.config.get(k) for k in varying)],
                         "diverged_step": r.diverged_step, "message": r.message or "",
                         **{f"metric.{k}": v for k, v in r.metrics.items() if _is_number(v)}})

    fig = f"{_safe(exp_name)}_summary.png"
    # the figure shows the metrics that vary (a metric equal in every run carries no comparison)
    shown = [m for m in metrics
             if len({v for s in groups for v in stats[s][m].values}) > 1]
    if shown and _summary_figure(tmp / fig, exp_name, labels, [stats[s] for s in groups],
                                 shown[:_MAX_SUMMARY_METRICS]):
        md += [f"![{exp_name} summary]({fig})", ""]
    curves_fig = f"{_safe(exp_name)}_curves.png"
    note = _curves_figure(store, exp_name, groups, tmp / curves_fig)
    if note is None:
        md += [f"![{exp_name} curves: one run (lowest seed) per setting]({curves_fig})", ""]
    else:  # said where the figure would be, in the notes, and by the CLI
        md += [f"**No curves figure:** {note}", ""]
        notes.append(f"{exp_name}: no curves figure ({note})")

    bad = [r for r in recs if r.status != "done"]
    if bad:
        md += ["Runs that did not finish normally:", ""]
        for r in bad[:20]:
            step = f" at step {r.diverged_step}" if r.diverged_step is not None else ""
            md.append(f"- `{r.run_id}` ({names[tuple(r.config.get(k) for k in varying)]}"
                      f", seed {r.config.get('seed')}): **{r.status}**{step} — {r.message or ''}")
        if len(bad) > 20:
            md.append(f"- … and {len(bad) - 20} more (see runs.csv)")
        md.append("")
    return md


def _num(x: float) -> str:
    return "" if math.isnan(x) else repr(float(x))


def _write_runs_csv(path: Path, rows: list[dict]) -> None:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, restval="")
        w.writeheader()
        w.writerows(rows)


def _summary_figure(path: Path, exp_name: str, labels: list[str],
                    stats: list[dict[str, GroupStats]], metrics: list[str]) -> bool:
    """Per metric a panel of horizontal bars (mean ± sd) with the seeds as dots; the settings
    are rows, named once at the left of each row of panels, so long names never overlap."""
    from matplotlib.ticker import MaxNLocator

    n = len(labels)
    ncols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    label_w = min(0.065 * max(len(lab) for lab in labels), 6.0) + 0.4  # inches at 7 pt
    panel_h = 0.26 * n + 1.1
    fig, axes = new_figure(nrows, ncols, figsize=(label_w + 2.9 * ncols, panel_h * nrows + 0.5),
                           squeeze=False)
    y = np.arange(n)[::-1].astype(float)  # the first setting at the top
    for k, (ax, m) in enumerate(zip(axes.flat, metrics)):
        means = np.array([s[m].mean for s in stats])
        sds = np.nan_to_num(np.array([s[m].sd for s in stats]))
        ax.barh(y, np.nan_to_num(means), xerr=sds, color="C0", alpha=0.45, capsize=3,
                height=0.7)
        for i, s in enumerate(stats):
            if s[m].n:
                jitter = np.linspace(-0.2, 0.2, s[m].n) if s[m].n > 1 else [0.0]
                ax.plot(s[m].values, y[i] + np.asarray(jitter), "o", color="C3", ms=3)
        vals = [v for s in stats for v in s[m].values]
        if vals and min(vals) > 0 and max(vals) / min(vals) > 100:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_title(m, fontsize=9)
        ax.set_ylim(-0.6, n - 0.4)
        ax.set_yticks(y, labels if k % ncols == 0 else [], fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(f"{exp_name}: mean ± sd over seeds (bars), seeds (dots)", fontsize=10)
    fig.savefig(path, dpi=110)
    return True


def _curves_figure(store: ResultStore, exp_name: str, groups: dict[tuple, list[RunRecord]],
                   path: Path) -> str | None:
    """The experiment's own plot of one run per setting; a reason string when not possible."""
    from mirrorflow.experiments import REGISTRY

    exp = REGISTRY.get(exp_name)
    if exp is None:
        return "experiment not registered in this installation"
    if exp.plot is None:
        return "the experiment has no plot function"
    shown = []
    for runs in groups.values():
        done = sorted((r for r in runs if r.status == "done"), key=lambda r: repr(r.config.get("seed")))
        if done:
            shown.append(done[0])
    if not shown:
        return "no run finished"
    try:  # the declared contract: Results rebuilt from the store, then the experiment's plot
        results = [exp.result_from_record(r.config, r.metrics, store.load_curves(r)) for r in shown]
        exp.plot(results, path)
    except Exception as exc:  # reported in report.md and by the CLI, never dropped
        return f"{exp_name}'s plot failed on stored runs: {type(exc).__name__}: {exc}"
    return None if path.is_file() else "the plot wrote no file"
