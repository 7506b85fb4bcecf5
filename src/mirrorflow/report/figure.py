"""Figures without pyplot: no global backend switch, no figure registry to leak.

Library code draws on a bare :class:`matplotlib.figure.Figure` (which renders with Agg when
saved), so calling a ``plot`` function never changes the backend of the user's session.
"""

from __future__ import annotations

from matplotlib import colormaps
from matplotlib.figure import Figure

__all__ = ["colormaps", "new_figure"]


def new_figure(nrows: int, ncols: int, figsize: tuple[float, float], squeeze: bool = True):
    """``(fig, axes)`` like ``plt.subplots(..., constrained_layout=True)``, pyplot-free."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)
