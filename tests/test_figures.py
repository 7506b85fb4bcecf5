"""Figure rules, checked on every registered experiment's figures.

For each experiment: one real run of its ``smoke`` config (with its comparison runs) gives
curves and metrics of the right shape; a results store then holds one record per run of the experiment's *quick* sweep (its
settings and seeds, as the quick report has them), with those curves and metrics varied per
setting and seed — some settings' curves are left exactly equal, as the ViT's ``none`` and
``λ = 1e-4`` nearly are. The report is written from that store, and every figure it saves (the
summary and the experiment's own curves plot), plus the plot of a single compared run, must pass
:func:`mirrorflow._core.figure.figure_problems`: no overlapping text, no duplicate legend labels,
no legend over the data, every series in a legend and drawn distinguishably, titles that match
what is drawn.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib.figure import Figure

import mirrorflow
from mirrorflow._core.figure import figure_problems, new_figure
from mirrorflow.experiments import REGISTRY
from mirrorflow.report import write_report
from mirrorflow.sweep import ResultStore, RunRecord
from mirrorflow.sweep.builtin import builtin_spec

NAMES = sorted(REGISTRY)
AXES_KEYS = ("time", "step", "iteration")


@pytest.fixture
def saved_figures(monkeypatch):
    """``(path, figure, problems)`` of every Figure saved while the test runs: the rules are
    checked on the draw that writes the file (savefig still writes it)."""
    figs: list[tuple[str, Figure, list[str]]] = []
    original = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        found: list[list[str]] = []
        cid = self.canvas.mpl_connect(
            "draw_event", lambda ev: found.append(figure_problems(self, renderer=ev.renderer)))
        try:
            return original(self, fname, *args, **kwargs)
        finally:
            self.canvas.mpl_disconnect(cid)
            figs.append((str(fname), self, found[-1] if found else ["never drawn"]))

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figs


def _final_name(path: str) -> str:
    """The file a figure ends up in (save_figure writes ``.STEM-XXXX.png`` and renames it)."""
    base = path.rsplit("/", 1)[-1]
    return re.sub(r"^\.(.*)-[^-.]+(\.\w+)$", r"\1\2", base)


def _vary(curves, factor):
    out = {}
    for k, v in curves.items():
        arr = np.asarray(v)
        axis = k.rsplit("/", 1)[-1] in AXES_KEYS
        out[k] = arr if axis or arr.dtype.kind != "f" else arr * factor
    return out


def _vary_metrics(metrics, factor):
    return {k: (v * factor if isinstance(v, float) else v) for k, v in metrics.items()}


@pytest.mark.parametrize("name", NAMES)
def test_every_figure_of_the_quick_report_follows_the_rules(name, tmp_path, saved_figures,
                                                          monkeypatch):
    exp = REGISTRY[name]
    # the claims (bootstrap CIs of synthetic numbers) are not this test's subject: skip them
    monkeypatch.setattr("mirrorflow.report.report._claims", lambda records, tmp, notes, rule=None: [])
    spec = builtin_spec(name, True)
    # one smoke run, with the experiment's own comparison runs (none, constant) where it has
    # them: the report then draws those too, more series than the quick report (stricter)
    result = exp.run(exp.make_config(dict(exp.smoke)))
    metrics, curves = result.metrics(), dict(result.curves)
    settings: dict[tuple, int] = {}
    with ResultStore(tmp_path / "r.sqlite") as store:
        for r in spec.runs:
            cfg = dict(r.config_dict)
            key = tuple(sorted((k, repr(v)) for k, v in cfg.items() if k != "seed"))
            i = settings.setdefault(key, len(settings))
            curve_factor = 1.0 if i % 3 == 0 else 1.0 + 0.15 * i  # some settings coincide
            store.write(RunRecord(
                run_id=r.run_id, experiment=name, config=cfg, status="done",
                metrics=_vary_metrics(metrics, 1.0 + 0.1 * i + 0.02 * cfg.get("seed", 0)),
                sweep=spec.name, version=mirrorflow.__version__), _vary(curves, curve_factor))
        files = write_report(store, tmp_path / "report")
    assert f"{name}_curves.png" in files.files, files.notes
    checked = {_final_name(p): problems for p, _, problems in saved_figures}
    assert {f"{name}_summary.png", f"{name}_curves.png"} <= set(checked)
    problems = {p: found for p, found in checked.items() if p.startswith(name)}
    assert all(not v for v in problems.values()), problems

    # a single run as `mirrorflow run NAME --plot` draws it
    saved_figures.clear()
    exp.plot([result], tmp_path / "one.png")
    ((_, _, found),) = saved_figures
    assert found == []


# --- the rules themselves: each one fires on a figure that breaks it ------------------------
def _fig(n=1):
    fig, axes = new_figure(1, n, figsize=(4 * n, 3))
    return fig, axes


def test_rules_pass_a_clean_figure():
    fig, ax = _fig()
    x = np.linspace(0, 1, 50)
    ax.plot(x, x, label="a")
    ax.plot(x, x**2, "--", label="b")
    ax.set_title("two series")
    fig.legend(loc="outside lower center", ncols=2)
    assert figure_problems(fig) == []


def test_rule_overlapping_tick_labels():
    fig, ax = _fig()
    ax.bar(range(8), np.ones(8))
    ax.set_xticks(range(8), [f"schedule=switch-off, wd={i}" for i in range(8)])
    assert any("text overlaps" in p for p in figure_problems(fig))


def test_rule_duplicate_legend_labels_and_alike_series():
    fig, ax = _fig()
    x = np.linspace(0, 1, 20)
    ax.plot(x, x, color="C0", label="k=1")
    ax.plot(x, 2 * x, color="C0", label="k=1")
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
    problems = figure_problems(fig)
    assert any("more than once" in p for p in problems), problems
    fig, ax = _fig()
    ax.plot(x, x, color="C0", label="none")
    ax.plot(x, x, color="C0", label="constant")
    fig.legend(loc="outside lower center")
    assert any("drawn alike" in p for p in figure_problems(fig))


def test_rule_legend_covering_data():
    fig, ax = _fig()
    x = np.linspace(0, 1, 200)
    for k in range(6):
        ax.plot(x, np.full_like(x, 0.5 + 0.01 * k), label=f"series number {k}")
    ax.legend(loc="center")
    assert any("covers" in p for p in figure_problems(fig))


def test_rule_series_cut_off_by_the_axis_limits():
    """A limit that hides part of a labelled series is a problem (the full report's lora-lm
    validation panel cut off its lr = 0.02 run this way); a horizontal reference line spanning
    the panel, and the same series with limits that show it, are not."""
    x = np.arange(5.0)
    fig, ax = _fig()
    ax.plot(x, 1.80 + 0.005 * x, label="kept")  # 1.80 ... 1.82, inside
    ax.plot(x, 1.82 + 0.01 * x, label="cut")  # 1.82 ... 1.86, above the limit
    ax.axhline(1.81, color="k", ls="--", label="baseline")
    ax.set_ylim(1.79, 1.835)
    fig.legend(loc="outside lower center", ncols=3)
    problems = figure_problems(fig)
    assert any("'cut'" in p and "3 of 5 points outside" in p for p in problems), problems
    assert not any("'kept'" in p or "'baseline'" in p for p in problems), problems
    ax.set_ylim(1.79, 1.87)
    assert figure_problems(fig) == []


def test_rule_series_without_legend_and_title_promising_dashes():
    fig, axes = _fig(2)
    axes[0].plot([0, 1], [0, 1], label="shown")
    axes[0].legend(loc="upper left", bbox_to_anchor=(0, -0.2))
    axes[1].scatter([1.0], [0.5], label="unlisted")
    fig.suptitle("dashed = convex baseline")
    problems = figure_problems(fig)
    assert any("'unlisted'" in p and "no legend" in p for p in problems), problems
    assert any("promises a dashed" in p for p in problems), problems


def test_rules_are_checked_on_the_saved_draw(tmp_path, saved_figures):
    fig, ax = _fig()
    ax.bar(range(8), np.ones(8))
    ax.set_xticks(range(8), [f"schedule=switch-off, wd={i}" for i in range(8)])
    fig.savefig(tmp_path / "bad.png", dpi=120)
    ((_, _, found),) = saved_figures
    assert any("text overlaps" in p for p in found), found
