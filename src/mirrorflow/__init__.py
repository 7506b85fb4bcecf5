"""mirrorflow: the lasting geometry of weight decay, as time-dependent mirror flows.

Gradient descent on an overparameterized model ``x = g(w)`` with weight decay ``α_t`` moves
``x`` along a *time-dependent mirror flow* ``d/dt ∇R_{a_t}(x_t) = -∇f(x_t)`` whose Legendre
function depends on the schedule only through the integrated decay ``a_t = ∫ α``.
See ``docs/theory.md``.

Subpackages
-----------
geometry     Legendre functions, implicit-bias solver (maths only).
dynamics     batched simulators in parameter and mirror space; theorem verification.
schedules    weight-decay schedules (continuous time and training time).
experiments  one module per experiment: ``Config -> run() -> Result``.
"""

from mirrorflow._core.validation import MirrorflowError

__version__ = "0.2.0"  # the one place: pyproject.toml reads it; run ids include it
__all__ = ["MirrorflowError", "__version__"]
