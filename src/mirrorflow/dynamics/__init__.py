"""Batched simulators in parameter space and mirror space; theorem verification."""

from mirrorflow.dynamics.mirror import MirrorResult, integrate_mirror
from mirrorflow.dynamics.simulate import GDResult, simulate_gd
from mirrorflow.dynamics.verify import VerifyReport, verify_theorem

__all__ = [
    "GDResult",
    "MirrorResult",
    "VerifyReport",
    "integrate_mirror",
    "simulate_gd",
    "verify_theorem",
]
