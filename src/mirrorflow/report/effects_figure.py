"""Figure of the three effects: one panel each for position, type and range (docs/effects.md).

Draws coordinate 0 of a Legendre family ``R_a`` for several ``a`` (docs/theory.md §4, §7):

1. *positional* — ``R_a(x)`` with its minimizer ``x̄(a)`` marked;
2. *type* — the curvature ``∂²R_a/∂x_0²`` against ``|x_0|`` on log-log axes (solid ``x_0 > 0``,
   dotted ``x_0 < 0``; the same curves for every ``a`` when only the position moves), with a flat guide (L2: constant curvature) and a
   ``1/|x|`` guide (L1-like); the legend gives the type index at ``|x| = t`` (docs/effects.md), which
   is minus the curve's slope between ``t`` and ``2t`` (marked);
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


def _curvature_0(family, a: float, P: np.ndarray) -> np.ndarray:
    """``∂²R_a/∂x_0²`` at the rows of ``P``: the family's Hessian, else a difference of ``∇R_a``."""
    if hasattr(family, "hessian"):
        H = to_numpy(family.hessian(P, a))
        return H[:, 0] if H.shape == P.shape else H[:, 0, 0]
    h = 1e-4 * np.abs(P[:, 0])
    up, dn = P.copy(), P.copy()
    up[:, 0] += h
    dn[:, 0] -= h
    return (to_numpy(family.grad(up, a))[:, 0] - to_numpy(family.grad(dn, a))[:, 0]) / (2 * h)


def plot_effects(family, a_values: Sequence[float], path, *, dual_step: float = 1.0, t: float = 0.1,
                 report: EffectsReport | None = None) -> EffectsReport:
    """Draw the three-effect figure for ``family`` at ``a_values`` into ``path``; return the numbers.

    ``t`` is the problem's scale of ``x`` at which the type index is read (see
    :func:`mirrorflow.geometry.effects.measure_effects`); ignored when ``report`` is given.
    """
    path = check_figure_path(path)
    rep = report if report is not None else measure_effects(family, a_values, dual_step=dual_step, t=t)
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
        # type: the curvature along coordinate 0 at |x_0| from 10⁻⁵ t to 10² t (other coordinates
        # at x̄(0), which does not depend on a), on log-log axes; x_0 < 0 dotted where allowed
        mags = np.logspace(np.log10(rep.t) - 5, np.log10(rep.t) + 2, 300)
        for sgn in ([float(np.sign(base[0, 0]))] if half else [1.0, -1.0]):
            cp = np.tile(base[0], (mags.size, 1))
            cp[:, 0] = sgn * mags
            curv = _curvature_0(family, a, cp)
            ok = np.isfinite(curv) & (curv > 0)
            first = sgn == 1.0 or half
            axes[1].loglog(mags[ok], curv[ok], color=col, ls="-" if first else ":",
                           label=f"a = {a:g}: ι = {rep.type_index[i]:.3f}" if first else None)
            at_t = np.tile(base[0], (2, 1))
            at_t[:, 0] = sgn * np.array([rep.t, 2 * rep.t])
            axes[1].loglog([rep.t, 2 * rep.t], _curvature_0(family, a, at_t), "o", color=col,
                           ms=4 if first else 2)
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
    lo, hi = axes[1].get_ylim()
    mags = np.logspace(np.log10(rep.t) - 5, np.log10(rep.t) + 2, 10)
    ref_c = np.sqrt(lo * hi)
    axes[1].loglog(mags, np.full(mags.size, ref_c), "k:", lw=1, label="flat: L2-like (ι = 0)")
    axes[1].loglog(mags, ref_c * rep.t / mags, "k--", lw=1, label="∝ 1/|x|: L1-like (ι = 1)")
    axes[1].axvline(rep.t, color="0.6", lw=0.8)
    axes[0].set(xlabel="x (coordinate 0)", ylabel="R_a(x)", title="positional: R_a and its minimizer x̄(a)")
    axes[1].set(xlabel="|x| (coordinate 0)", ylabel="∂²R_a/∂x²",
                title=f"type: curvature of R_a (ι at |x| = t = {rep.t:g}, grey line)")
    axes[2].set(xlabel="x (coordinate 0)", ylabel="∇R_a(x)",
                title=f"range: ∇R_a (dashed: its ends; dots: |μ| = {rep.dual_step:g})")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"three effects of weight decay on the geometry: {rep.name} (a = ∫α dt ≥ 0)")
    save_figure(fig, path)
    return rep
