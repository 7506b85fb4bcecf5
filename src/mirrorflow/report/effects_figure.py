"""Figure of the three effects: one panel each for position, type and range (docs/effects.md).

Draws coordinate 0 of a Legendre family ``R_a`` for several ``a`` (docs/theory.md §4, §7):

1. *positional* — ``R_a(x)`` with its minimizer ``x̄(a)`` marked;
2. *type* — ``R_a(x̄(a) + t)`` against ``t`` on log-log axes, with ``t`` (‖·‖₁-like) and ``t²``
   (‖·‖₂²-like) guides; the legend gives the L1-likeness index;
3. *range* — the mirror map ``∇R_a(x)``, with the interval of ``∇R_a`` (dashed, where finite) and
   the primal reach for ``|μ| ≤ m`` (dots).

The file is written atomically: on any error nothing is left at ``path``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mirrorflow._core.array import to_numpy
from mirrorflow._core.figure import check_figure_path, colormaps, new_figure, save_figure
from mirrorflow.geometry.effects import EffectsReport, measure_effects

__all__ = ["plot_effects"]

def plot_effects(family, a_values: Sequence[float], path, *, dual_step: float = 1.0,
                 report: EffectsReport | None = None) -> EffectsReport:
    """Draw the three-effect figure for ``family`` at ``a_values`` into ``path``; return the numbers."""
    path = check_figure_path(path)
    rep = report if report is not None else measure_effects(family, a_values, dual_step=dual_step)
    d = family.dim
    e0 = np.zeros(d)
    e0[0] = 1.0
    colors = colormaps["viridis"](np.linspace(0.0, 0.85, rep.a.size))
    # x grid for coordinate 0: the primal reach at a = 0 for a dual movement of 2m
    mu_span = 1.5 * rep.dual_step
    dlo0, dhi0 = rep.dual_lo[0, 0], rep.dual_hi[0, 0]
    x_lo = to_numpy(family.inverse(-min(mu_span, 0.9 * abs(dlo0)) * e0, 0.0))[0]
    x_hi = to_numpy(family.inverse(min(mu_span, 0.9 * abs(dhi0)) * e0, 0.0))[0]
    half = np.sign(x_lo) == np.sign(x_hi) and x_lo != 0
    if half:
        x_lo = min(x_lo, x_hi) * 1e-3 if x_hi > 0 else x_lo
        x_hi = max(x_hi, x_lo) if x_hi > 0 else max(x_hi, x_lo) * 1e-3
    xs = np.linspace(x_lo, x_hi, 400)
    xs = xs[xs != 0] if half else xs

    fig, axes = new_figure(1, 3, figsize=(15, 4.4))
    base = np.tile(to_numpy(family.reference(0.0)), (xs.size, 1))
    for i, (a, col) in enumerate(zip(rep.a, colors)):
        ref = rep.reference[i]
        pts = base.copy()
        pts[:, 1:] = ref[1:]
        pts[:, 0] = xs
        R = to_numpy(family.potential(pts, a))
        axes[0].plot(xs, R, color=col, label=f"a = {a:g}: x̄ = {ref[0]:.3g}")
        axes[0].plot([ref[0]], [0.0], "o", color=col)
        # type: R_a(x̄ + t e_0) on log-log
        sgn = 1.0 if not half else np.sign(ref[0])
        ts = np.logspace(-4, 2, 200)
        tp = np.tile(ref, (ts.size, 1))
        tp[:, 0] = ref[0] + sgn * ts
        Rt = to_numpy(family.potential(tp, a))
        ok = Rt > 0
        axes[1].loglog(ts[ok], Rt[ok], color=col, label=f"a = {a:g}: ι = {rep.l1_index[i]:.2f}")
        # range: ∇R_a(x) = μ, drawn from μ ↦ x
        dlo, dhi = rep.dual_lo[i, 0], rep.dual_hi[i, 0]
        mlo = max(-mu_span, dlo) if np.isfinite(dlo) else -mu_span
        mhi = min(mu_span, dhi) if np.isfinite(dhi) else mu_span
        mus = np.linspace(mlo, mhi, 400)[1:-1]
        mm = np.zeros((mus.size, d))
        mm[:, 0] = mus
        xm = to_numpy(family.inverse(mm, a))[:, 0]
        keep = np.isfinite(xm) & (xm >= xs.min() - 0.5 * np.ptp(xs)) & (xm <= xs.max() + 0.5 * np.ptp(xs))
        axes[2].plot(xm[keep], mus[keep], color=col,
                     label=f"a = {a:g}: reach [{rep.reach_lo[i, 0]:.3g}, {rep.reach_hi[i, 0]:.3g}]")
        for bound in (dlo, dhi):
            if np.isfinite(bound) and abs(bound) <= 2 * mu_span:
                axes[2].axhline(bound, color=col, ls="--", lw=1)
        for xr, mr in ((rep.reach_lo[i, 0], -rep.dual_step), (rep.reach_hi[i, 0], rep.dual_step)):
            if np.isfinite(xr) and xs.min() - 0.5 * np.ptp(xs) <= xr <= xs.max() + 0.5 * np.ptp(xs):
                axes[2].plot([xr], [mr], "o", color=col, ms=4)
    ts = np.logspace(-4, 2, 10)
    axes[1].loglog(ts, ts, "k--", lw=1, label="∝ t  (‖·‖₁-like)")
    axes[1].loglog(ts, ts**2, "k:", lw=1, label="∝ t²  (‖·‖₂²-like)")
    axes[0].set(xlabel="x (coordinate 0)", ylabel="R_a(x)", title="positional: R_a and its minimizer x̄(a)")
    axes[1].set(xlabel="distance t from x̄(a)", ylabel="R_a(x̄(a) + t)",
                title="type: L2-like (slope 2) → L1-like (slope 1)")
    axes[2].set(xlabel="x (coordinate 0)", ylabel="∇R_a(x)",
                title=f"range: ∇R_a (dashed: its ends; dots: |μ| = {rep.dual_step:g})")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"three effects of weight decay on the geometry: {rep.name} (a = ∫α dt ≥ 0)")
    save_figure(fig, path)
    return rep
