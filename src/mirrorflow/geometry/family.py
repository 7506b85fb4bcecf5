"""The Legendre-family contract: what a time-dependent ``R_a`` must provide (docs/theory.md §2–§5).

A *family* is one object describing ``R_a`` for every integrated decay ``a ≥ 0``. The core
(:class:`LegendreFamily`'s abstract members) is what every consumer needs:

=====================  =====================================================================
``dim``                number of coordinates of ``x``
``grad(x, a)``         mirror map ``∇R_a(x)`` (elementwise over the last axis of ``x``)
``inverse(mu, a)``     inverse mirror map ``(∇R_a)^{-1}(μ) = ∇R_a*(μ)``
``potential(x, a)``    ``R_a(x)`` summed over the last axis, ``R_a(x̄(a)) = 0``
``reference(a)``       ``x̄(a) = argmin R_a``
=====================  =====================================================================

Optional capabilities (:data:`CAPABILITIES`) unlock more: ``conjugate`` and
``inverse_derivative`` or ``dual_hessian`` let :func:`~mirrorflow.geometry.implicit_bias` solve
``argmin_{Ax=y} R_a``; ``hessian`` makes the type index exact; ``scale``, ``dual_interval``,
``half_line``, ``explain_frozen`` and ``dual_unit`` refine the effects and the feasibility
messages. Consumers ask with :func:`provides` and :func:`require`; a family that lacks what is
needed is refused with one line naming the missing method.

A family may subclass :class:`LegendreFamily` (the abstract methods are then enforced at
construction) or be any object with the same methods (duck typing: :func:`require` checks
methods, not ancestry). :data:`FAMILIES` is the name table behind ``mirrorflow effects``;
:func:`register_family` adds to it.

>>> from mirrorflow.geometry import uv
>>> f = uv(1.0, 0.0)
>>> isinstance(f, LegendreFamily), provides(f, "conjugate"), provides(f, "dual_hessian")
(True, True, False)
>>> missing(f, "conjugate", ("inverse_derivative", "dual_hessian"))
[]
>>> sorted(FAMILIES)[:4]
['power', 'u2', 'u2-v2', 'uv']
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import numpy as np

from mirrorflow._core.errors import MirrorflowError

__all__ = [
    "CAPABILITIES",
    "CORE",
    "FAMILIES",
    "LegendreFamily",
    "check_family",
    "missing",
    "provides",
    "register_family",
    "require",
]

#: Core methods every family has (name -> what it returns).
CORE: dict[str, str] = {
    "dim": "number of coordinates of x",
    "grad": "grad(x, a): the mirror map ∇R_a(x)",
    "inverse": "inverse(mu, a): (∇R_a)^{-1}(μ) = ∇R_a*(μ)",
    "potential": "potential(x, a): R_a(x) summed over the last axis, 0 at reference(a)",
    "reference": "reference(a): x̄(a) = argmin R_a",
}

#: Optional capabilities (name -> signature and meaning); each is a method of the family.
CAPABILITIES: dict[str, str] = {
    "conjugate": "conjugate(mu, a): R_a*(μ) summed over the last axis, 0 at μ = 0",
    "hessian": "hessian(x, a): ∇²R_a(x), its diagonal elementwise or the full (..., d, d) matrix",
    "inverse_derivative": "inverse_derivative(mu, a): diagonal of ∇²R_a*(μ), elementwise",
    "dual_hessian": "dual_hessian(mu, a): the full (..., d, d) matrix ∇²R_a*(μ)",
    "scale": "scale(a): the family's shape parameter per coordinate",
    "dual_interval": "dual_interval(a): (lo, hi) range of ∇R_a per coordinate",
    "half_line": "half_line(a): mask of coordinates whose x keeps the sign of reference(a)",
    "explain_frozen": "explain_frozen(idx, a): (why, fix) for frozen-sign coordinates idx",
    "dual_unit": "dual_unit(): dual movement per e-fold of the map (Newton trust region)",
}


class LegendreFamily(abc.ABC):
    """Abstract base of a time-dependent Legendre family ``R_a`` (module docstring, :data:`CORE`).

    Subclasses implement the five core members; optional capabilities (:data:`CAPABILITIES`) are
    plain methods that a subclass defines when it can. :meth:`bregman` comes for free.
    """

    name: str = "family"

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Number of coordinates of ``x``."""

    @abc.abstractmethod
    def grad(self, x, a):
        """Mirror map ``∇R_a(x)``."""

    @abc.abstractmethod
    def inverse(self, mu, a):
        """Inverse mirror map ``∇R_a*(μ)``."""

    @abc.abstractmethod
    def potential(self, x, a):
        """``R_a(x)`` summed over the last axis, normalized so ``R_a(x̄(a)) = 0``."""

    @abc.abstractmethod
    def reference(self, a):
        """``x̄(a) = argmin R_a``."""

    def bregman(self, x, z, a):
        """Bregman divergence ``D_{R_a}(x, z) = R_a(x) − R_a(z) − ⟨∇R_a(z), x − z⟩`` (≥ 0)."""
        from mirrorflow._core.array import to_numpy

        x_, z_ = to_numpy(x), to_numpy(z)
        rx = to_numpy(self.potential(x, a))
        rz = to_numpy(self.potential(z, a))
        gz = to_numpy(self.grad(z, a))
        return np.maximum(rx - rz - np.sum(gz * (x_ - z_), axis=-1), 0.0)


def provides(family: Any, capability: str) -> bool:
    """Whether ``family`` has ``capability`` (a core member or a :data:`CAPABILITIES` name).

    >>> from mirrorflow.geometry import power
    >>> provides(power(2, 1.0, 0.5), "hessian"), provides(power(2, 1.0, 0.5), "scale")
    (True, False)
    """
    if capability == "dim":
        return hasattr(family, "dim")
    return callable(getattr(family, capability, None))


def _label(cap: str | tuple[str, ...]) -> str:
    if isinstance(cap, str):
        return CAPABILITIES.get(cap, CORE.get(cap, cap)).split(":")[0]
    return " or ".join(_label(c) for c in cap)


def missing(family: Any, *capabilities: str | tuple[str, ...]) -> list[str]:
    """The capabilities ``family`` lacks; a tuple entry means any one of its names will do.

    >>> from mirrorflow.geometry import quadratic_uv
    >>> missing(quadratic_uv(1.0, 0.5), "conjugate", ("inverse_derivative", "dual_hessian"))
    []
    >>> missing(object(), "grad", ("inverse_derivative", "dual_hessian"))
    ['grad(x, a)', 'inverse_derivative(mu, a) or dual_hessian(mu, a)']
    """
    out = []
    for cap in capabilities:
        alts = (cap,) if isinstance(cap, str) else cap
        if not any(provides(family, c) for c in alts):
            out.append(_label(cap))
    return out


def require(family: Any, *capabilities: str | tuple[str, ...], purpose: str) -> None:
    """Raise a one-line :class:`MirrorflowError` if ``family`` lacks any of ``capabilities``.

    >>> try:
    ...     require(object(), "conjugate", purpose="implicit_bias")
    ... except MirrorflowError as e:
    ...     print(e)
    implicit_bias needs a Legendre family with conjugate(mu, a); object lacks it: implement that method (see mirrorflow.geometry.family.CAPABILITIES)
    """
    lack = missing(family, *capabilities)
    if lack:
        what = ", ".join(lack)
        raise MirrorflowError(
            f"{purpose} needs a Legendre family with {what}; {type(family).__name__} lacks "
            f"{'it' if len(lack) == 1 else 'them'}: implement "
            f"{'that method' if len(lack) == 1 else 'those methods'} "
            "(see mirrorflow.geometry.family.CAPABILITIES)"
        )


def check_family(family: Any, purpose: str, *extra: str | tuple[str, ...]) -> None:
    """:func:`require` the :data:`CORE` members plus ``extra`` capabilities."""
    require(family, *CORE, *extra, purpose=purpose)


def _underflow_a(v: np.ndarray) -> float:
    """Smallest ``a`` at which ``|v| e^{−2a}`` underflows to 0 in float64 (≈ ``(log|v| + 744)/2``)."""
    v = np.abs(v[v != 0])
    return float(np.min((np.log(v) + 744.4) / 2)) if v.size else 0.0


def _uv(u0: float = 1.0, v0: float = 0.5, k: int = 2):
    from mirrorflow.geometry.legendre import uv

    return uv(u0, v0)


def _u2mv2(u0: float = 1.0, v0: float = 0.5, k: int = 2):
    from mirrorflow.geometry.legendre import u_squared_minus_v_squared

    return u_squared_minus_v_squared(u0, v0)


def _u2(u0: float = 1.0, v0: float = 0.5, k: int = 2):
    from mirrorflow.geometry.legendre import u_squared

    return u_squared(u0)


def _power(u0: float = 1.0, v0: float = 0.5, k: int = 2):
    from mirrorflow.geometry.power import power

    return power(k, u0, v0)


#: Name table: family name -> factory ``(u0, v0, k) -> family`` (the ``mirrorflow effects`` names).
FAMILIES: dict[str, Callable[..., Any]] = {
    "uv": _uv,
    "u2-v2": _u2mv2,
    "u2": _u2,
    "power": _power,
}


def register_family(name: str, factory: Callable[..., Any], *, replace: bool = False) -> None:
    """Add ``factory(u0, v0, k) -> family`` to :data:`FAMILIES` under ``name``.

    >>> register_family("uv", _uv)
    Traceback (most recent call last):
    ...
    mirrorflow._core.errors.MirrorflowError: a family named 'uv' is already registered; pick another name or pass replace=True
    """
    if not isinstance(name, str) or not name:
        raise MirrorflowError(f"a family name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise MirrorflowError(f"the factory for family {name!r} must be callable, got {factory!r}")
    if name in FAMILIES and not replace:
        raise MirrorflowError(
            f"a family named {name!r} is already registered; pick another name or pass replace=True"
        )
    FAMILIES[name] = factory
