"""Figures without pyplot: no global backend switch, no figure registry to leak.

Library code draws on a bare :class:`matplotlib.figure.Figure` (which renders with Agg when
saved), so calling a ``plot`` function never changes the backend of the user's session.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from mirrorflow._core.validation import MirrorflowError, check_writable_folder

__all__ = ["FIGURE_FORMATS", "LINESTYLES", "MARKERS", "check_figure_path", "colormaps", "figure_legend",
           "figure_problems", "legend_height", "new_figure", "save_figure", "series_style",
           "switch_note", "unique_labels"]


def new_figure(nrows: int, ncols: int, figsize: tuple[float, float], squeeze: bool = True):
    """``(fig, axes)`` like ``plt.subplots(..., constrained_layout=True)``, pyplot-free."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


#: File formats the library writes figures in (matplotlib's Agg/PDF/SVG writers).
FIGURE_FORMATS = (".png", ".pdf", ".svg")


def check_figure_path(path) -> Path:
    """Check, before any work, that a figure can be written to ``path``; return it as a Path.

    One-line :class:`MirrorflowError` for an unknown format, a missing or unwritable folder, or
    a path that is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise MirrorflowError(f"cannot write figure {path}: it is a folder; pass a file name "
                              f"ending in {', '.join(FIGURE_FORMATS)}")
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise MirrorflowError(f"cannot write figure {path}: unknown format "
                              f"{path.suffix or '(no suffix)'}; use one of {', '.join(FIGURE_FORMATS)}")
    check_writable_folder(path.parent, what=f"figure {path}")
    return path


def save_figure(fig: Figure, path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically: on any error nothing is left at ``path``."""
    path = check_figure_path(path)
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, dir=path.parent, prefix=f".{path.stem}-")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


# --- figure rules (tests/test_figures.py checks every experiment's figures with these) -------
#: Line styles and markers that tell series apart beyond colour (a curve drawn exactly on
#: another one stays visible: its markers and dashes show).
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


def series_style(i: int, n_points: int | None = None) -> dict:
    """Keyword arguments for series ``i`` of a panel: its own colour, dash and marker, so that
    no two of the first 40 series look alike even where their data coincide."""
    # open markers: a curve drawn on top of another leaves the other's markers visible
    style = {"color": f"C{i % 10}", "ls": LINESTYLES[(i // 10 + i) % len(LINESTYLES)],
             "marker": MARKERS[i % len(MARKERS)], "ms": 5, "mfc": "none", "mew": 1.1,
             "lw": 1.4}
    if n_points is not None and n_points > 12:
        # markers at staggered points: coinciding curves show both marker sets
        step = max(1, n_points // 8)
        style["markevery"] = (i % step, step)
    return style


def unique_labels(labels: list[str], extra: list[str]) -> list[str]:
    """``labels``, with ``extra[i]`` appended to each label that is not unique (e.g. the seed)."""
    return [f"{lab}, {x}" if labels.count(lab) > 1 else lab for lab, x in zip(labels, extra)]


def switch_note(configs) -> str:
    """``" (dotted vertical line: weight decay switched off)"`` when a config's schedule ends its decay
    (``mark_switch`` draws that line), else ``""``: a title names only what is drawn."""
    ends = any(bool(c.make_schedule().breakpoints) for c in configs
               if callable(getattr(c, "make_schedule", None)))  # the same test as mark_switch
    return " (dotted vertical line: weight decay switched off)" if ends else ""


def legend_height(n_labels: int, ncols: int = 3) -> float:
    """Inches a :func:`figure_legend` of ``n_labels`` entries in ``ncols`` columns takes."""
    return 0.3 + 0.2 * -(-n_labels // ncols)


def figure_legend(fig: Figure, axes, ncols: int | None = None, fontsize: float = 7.5) -> None:
    """One legend for the whole figure, below the panels (never on the data): each label once,
    from the handles of all ``axes``."""
    handles, labels = [], []
    for ax in list(getattr(axes, "flat", axes)):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if not handles:
        return
    if ncols is None:
        longest = max(len(lab) for lab in labels)
        ncols = max(1, min(len(labels), int(fig.get_figwidth() * 12 / max(longest + 6, 10))))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=fontsize,
               frameon=False)


def _renderer(fig: Figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _texts(fig: Figure, renderer) -> list[tuple[str, str, object]]:
    """``(owner, text, bbox)`` of every visible, non-empty text of the figure; ``owner`` names
    the element (tick labels of one axis share one owner)."""
    out = []

    def add(owner, t):
        if t.get_visible() and t.get_text().strip():
            out.append((owner, t.get_text(), t.get_window_extent(renderer)))

    if fig._suptitle is not None:
        add("suptitle", fig._suptitle)
    for k, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        for t in (ax.title, ax._left_title, ax._right_title):
            add(f"axes{k}.title", t)
        for j, (name, axis) in enumerate((("x", ax.xaxis), ("y", ax.yaxis))):
            add(f"axes{k}.{name}label", axis.label)
            lo, hi = sorted(axis.get_view_interval())
            tol = 1e-9 * max(abs(lo), abs(hi), 1e-300)
            for t in axis.get_ticklabels(which="both"):
                if lo - tol <= t.get_position()[j] <= hi + tol:  # ticks outside are not drawn
                    add(f"axes{k}.{name}ticks", t)
            add(f"axes{k}.{name}offset", axis.get_offset_text())
    for k, leg in enumerate(_legends(fig)):
        out.append((f"legend{k}", "legend", leg.get_window_extent(renderer)))
    return out


def _legends(fig: Figure) -> list:
    legs = list(fig.legends)
    legs += [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return legs


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)


def figure_problems(fig: Figure, max_covered: float = 0.02, renderer=None) -> list[str]:
    """What breaks the figure rules, as sentences (empty: none).

    * overlapping text: tick labels, titles, axis labels and legends whose bounding boxes
      (matplotlib's renderer, display pixels) overlap by more than 1 px² — among one axis's tick
      labels, and between any two different elements;
    * a legend that names a label twice, or that covers more than ``max_covered`` of the data
      points of its axes (lines and scatter points, in display coordinates);
    * a labelled series no legend of the figure names;
    * two labelled series of one panel drawn alike (same colour, dash and marker);
    * a labelled line with points outside its panel (axis limits that cut a series off);
    * a title that promises a dashed or dotted series that is not drawn.

    ``renderer``: the one of a draw in progress (a ``draw_event`` of ``savefig``: the figure is
    checked as saved, without drawing it again); default: draw it with Agg.
    """
    import numpy as np
    from matplotlib.collections import PathCollection
    from matplotlib.lines import Line2D

    renderer = renderer or _renderer(fig)
    problems: list[str] = []
    texts = _texts(fig, renderer)
    for i, (oa, ta, ba) in enumerate(texts):
        for ob, tb, bb in texts[i + 1:]:
            same_ticks = oa == ob and oa.endswith("ticks")
            if (oa != ob or same_ticks) and _overlap(ba, bb) > 1.0:
                problems.append(f"text overlaps: {oa} {ta!r} and {ob} {tb!r}")
    legend_labels: set[str] = set()
    for leg in _legends(fig):
        labels = [t.get_text() for t in leg.get_texts()]
        legend_labels.update(labels)
        dups = sorted({lab for lab in labels if labels.count(lab) > 1})
        if dups:
            problems.append(f"legend names {', '.join(map(repr, dups))} more than once")
        box = leg.get_window_extent(renderer)
        ax = leg.axes if leg.axes is not None and leg in [a.get_legend() for a in fig.axes] \
            else None
        for a in ([ax] if ax is not None else fig.axes):
            pts = []
            for line in a.get_lines():
                xy = np.asarray(line.get_xydata(), float)
                if len(xy) > 1:  # display coordinates, whatever the line's transform
                    pts.append(line.get_transform().transform(xy[np.isfinite(xy).all(axis=1)]))
            for coll in a.collections:
                if isinstance(coll, PathCollection) and len(coll.get_offsets()):
                    pts.append(coll.get_offset_transform().transform(coll.get_offsets()))
            if not pts:
                continue
            p = np.concatenate(pts)
            inside = ((p[:, 0] >= box.x0) & (p[:, 0] <= box.x1)
                      & (p[:, 1] >= box.y0) & (p[:, 1] <= box.y1))
            if inside.mean() > max_covered:
                problems.append(f"legend covers {inside.mean():.0%} of the data points of "
                                f"panel {a.get_title()!r}")
    for ax in fig.axes:
        seen: dict[tuple, str] = {}
        artists = [*ax.get_lines(), *[c for c in ax.collections if isinstance(c, PathCollection)]]
        for art in artists:
            lab = art.get_label()
            if not lab or lab.startswith("_"):
                continue
            if lab not in legend_labels:
                problems.append(f"series {lab!r} of panel {ax.get_title()!r} is in no legend")
            if isinstance(art, Line2D):
                xy = np.asarray(art.get_xydata(), float)
                xy = xy[np.isfinite(xy).all(axis=1)] if xy.ndim == 2 else xy[:0]
                if len(xy):  # display pixels against the panel's box (1 px of slack)
                    d = art.get_transform().transform(xy)
                    bb = ax.get_window_extent(renderer)
                    out = ((d[:, 0] < bb.x0 - 1) | (d[:, 0] > bb.x1 + 1)
                           | (d[:, 1] < bb.y0 - 1) | (d[:, 1] > bb.y1 + 1))
                    if out.any():
                        problems.append(f"series {lab!r} of panel {ax.get_title()!r} has "
                                        f"{int(out.sum())} of {len(d)} points outside the axes")
                key = (str(art.get_color()), art.get_linestyle(), str(art.get_marker()))
                if key in seen and seen[key] != lab:
                    problems.append(f"series {lab!r} and {seen[key]!r} of panel "
                                    f"{ax.get_title()!r} are drawn alike")
                seen.setdefault(key, lab)
    titles = [t for o, t, _ in texts if o == "suptitle" or o.endswith(".title")]
    styles = {line.get_linestyle() for ax in fig.axes for line in ax.get_lines()
              if len(line.get_xdata())} | {"--" for ax in fig.axes for c in ax.collections
                                           if "dashed" in str(c.get_linestyle())}
    for word, ls in (("dashed", "--"), ("dotted", ":")):
        for t in titles:
            if word in t and ls not in styles:
                problems.append(f"title {t!r} promises a {word} series; none is drawn")
    return problems
