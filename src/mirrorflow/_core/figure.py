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

__all__ = ["FIGURE_FORMATS", "check_figure_path", "colormaps", "new_figure", "save_figure"]


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
