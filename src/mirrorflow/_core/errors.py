"""Every public mirrorflow error type, in one place.

================================  =================  =============================================
class                             base               raised when
================================  =================  =============================================
:class:`MirrorflowError`          ``ValueError``     bad input; one line saying how to fix it
:class:`NonCommutingError`        MirrorflowError    an exact engine would be wrong (theory §2)
:class:`BenchmarkMismatch`        MirrorflowError    a benchmark's two answers disagree
:class:`RunLimitError`            ``RuntimeError``   a run hit its wall-time bound
================================  =================  =============================================

The modules that raise them re-export them under their old paths
(``mirrorflow.geometry.NonCommutingError``, ``mirrorflow._core.limits.RunLimitError``,
``mirrorflow.bench._harness.BenchmarkMismatch``, ``mirrorflow.MirrorflowError``), so these are the
same classes wherever they are imported from.

>>> issubclass(NonCommutingError, MirrorflowError), issubclass(MirrorflowError, ValueError)
(True, True)
>>> issubclass(RunLimitError, MirrorflowError)
False
"""

from __future__ import annotations

__all__ = ["BenchmarkMismatch", "MirrorflowError", "NonCommutingError", "RunLimitError"]


class MirrorflowError(ValueError):
    """Bad input to a mirrorflow function. The message is one line and says how to fix it."""


class NonCommutingError(MirrorflowError):
    """The gradient fields do not commute, so an exact engine would silently be wrong."""


class BenchmarkMismatch(MirrorflowError):
    """mirrorflow and the baseline disagree on the benchmarked problem."""


class RunLimitError(RuntimeError):
    """A run reached a bound on its work (wall time) before it finished. One line."""
