"""Maths only: Legendre functions of reparameterizations, their effects, the implicit bias.

See docs/theory.md. Everything here is float64 and free of training-loop state.
"""

from mirrorflow.geometry.implicit_bias import ImplicitBiasResult, implicit_bias
from mirrorflow.geometry.legendre import (
    HyperbolicEntropy,
    u_squared,
    u_squared_minus_v_squared,
    uv,
)
from mirrorflow.geometry.parameterizations import (
    PARAMETERIZATIONS,
    Parameterization,
    get_parameterization,
)

__all__ = [
    "PARAMETERIZATIONS",
    "HyperbolicEntropy",
    "ImplicitBiasResult",
    "Parameterization",
    "get_parameterization",
    "implicit_bias",
    "u_squared",
    "u_squared_minus_v_squared",
    "uv",
]
