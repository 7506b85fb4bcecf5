"""Elementwise quadratic parameterizations ``x = g(u, v)`` and their Legendre functions.

Each parameterization knows its forward map, the pull-back ``J_gᵀ ∇f`` of a gradient in ``x``
(what gradient descent on ``(u, v)`` needs) and its closed-form Legendre family (theory §3).
``u²`` ignores ``v`` (it stays 0). Weight decay ``h = ‖(u, v)‖²/2`` commutes with all three
(theory §2: their gradient fields are linear in ``w``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mirrorflow._core.validation import check_choice
from mirrorflow.geometry.legendre import (
    HyperbolicEntropy,
    u_squared,
    u_squared_minus_v_squared,
    uv,
)

__all__ = ["PARAMETERIZATIONS", "Parameterization", "get_parameterization"]


@dataclass(frozen=True)
class Parameterization:
    """A two-factor elementwise parameterization ``x = g(u, v)``.

    Attributes
    ----------
    name : str
    forward : (u, v) -> x
    pullback : (u, v, grad_x) -> (grad_u, grad_v)
        ``J_gᵀ ∇f``: the gradient of ``f(g(u, v))`` with respect to ``u`` and ``v``.
    legendre : (u0, v0) -> HyperbolicEntropy
    """

    name: str
    forward: Callable
    pullback: Callable
    legendre: Callable[..., HyperbolicEntropy]
    description: str = ""


PARAMETERIZATIONS: dict[str, Parameterization] = {
    "uv": Parameterization(
        "uv",
        lambda u, v: u * v,
        lambda u, v, g: (v * g, u * g),
        uv,
        "x = u ⊙ v (hyperbolic entropy, scale |u0² − v0²|)",
    ),
    "u2-v2": Parameterization(
        "u2-v2",
        lambda u, v: u * u - v * v,
        lambda u, v, g: (2 * u * g, -2 * v * g),
        u_squared_minus_v_squared,
        "x = u² − v² (hyperbolic entropy, scale 2|u0 v0|)",
    ),
    "u2": Parameterization(
        "u2",
        lambda u, v: u * u,
        lambda u, v, g: (2 * u * g, 0 * v),
        lambda u0, v0=0.0: u_squared(u0),
        "x = u² (entropy on x > 0; pure positional bias)",
    ),
}


def get_parameterization(name: str) -> Parameterization:
    """Look up a parameterization by name (``uv``, ``u2-v2``, ``u2``).

    >>> p = get_parameterization("u2-v2")
    >>> p.forward(2.0, 1.0), p.pullback(2.0, 1.0, 1.0)          # x = u² − v², J_gᵀ = (2u, −2v)
    (3.0, (4.0, -2.0))
    """
    return PARAMETERIZATIONS[check_choice("parameterization", name, list(PARAMETERIZATIONS))]
