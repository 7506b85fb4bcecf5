"""Figures without pyplot: no global backend switch, no figure registry to leak.

Library code draws on a bare :class:`matplotlib.figure.Figure` (which renders with Agg when
saved), so calling a ``plot`` function never changes the backend of the user's session.
"""

from __future__ import annotations

from matplotlib import colormaps
from matplotlib.figure import Figure

__all__ = ["colormaps", "mark_switch", "new_figure"]


def new_figure(nrows: int, ncols: int, figsize: tuple[float, float], squeeze: bool = True):
    """``(fig, axes)`` like ``plt.subplots(..., constrained_layout=True)``, pyplot-free."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def mark_switch(axes, config, per_unit: float = 1.0) -> None:
    """Dotted vertical line where a ``switch-off``/``budget`` schedule of ``config`` ends.

    ``per_unit`` converts the schedule's continuous time to the x-axis unit (e.g. ``1/step``
    for an axis in iterations).
    """
    if config.schedule in ("switch-off", "budget"):
        at = config.make_schedule().settle_time * per_unit
        for ax in axes:
            ax.axvline(at, color="gray", ls=":", lw=1)
