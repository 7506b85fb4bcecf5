"""Maths only: Legendre functions of reparameterizations, their effects, the implicit bias.

See docs/theory.md. Everything here is float64 and free of training-loop state.
"""

from mirrorflow.geometry.commutation import (
    CommutationReport,
    NonCommutingError,
    check_commutation,
    lie_bracket,
)
from mirrorflow.geometry.effects import EffectsReport, family_from_name, measure_effects
from mirrorflow.geometry.family import FAMILIES, LegendreFamily, register_family
from mirrorflow.geometry.implicit_bias import ImplicitBiasResult, implicit_bias
from mirrorflow.geometry.legendre import (
    HyperbolicEntropy,
    u_squared,
    u_squared_minus_v_squared,
    uv,
)
from mirrorflow.geometry.numeric import NumericLegendre
from mirrorflow.geometry.parameterizations import (
    PARAMETERIZATIONS,
    Parameterization,
    get_parameterization,
)
from mirrorflow.geometry.power import PowerParameterization, matched_constant, power
from mirrorflow.geometry.quadratic import (
    CommutingQuadratic,
    SpectralSensing,
    matrix_sensing,
    quadratic_u2,
    quadratic_u2_minus_v2,
    quadratic_uv,
)

__all__ = [
    "FAMILIES",
    "PARAMETERIZATIONS",
    "CommutationReport",
    "CommutingQuadratic",
    "EffectsReport",
    "HyperbolicEntropy",
    "ImplicitBiasResult",
    "LegendreFamily",
    "NonCommutingError",
    "NumericLegendre",
    "Parameterization",
    "PowerParameterization",
    "SpectralSensing",
    "check_commutation",
    "family_from_name",
    "get_parameterization",
    "implicit_bias",
    "lie_bracket",
    "matched_constant",
    "matrix_sensing",
    "measure_effects",
    "power",
    "quadratic_u2",
    "quadratic_u2_minus_v2",
    "quadratic_uv",
    "register_family",
    "u_squared",
    "u_squared_minus_v_squared",
    "uv",
]
