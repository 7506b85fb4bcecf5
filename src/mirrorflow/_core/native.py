"""Loading the optional compiled C kernels through ctypes.

mirrorflow's C kernels are optional extensions (``setup.py``: ``optional=True``): where one was
not built (no C compiler at install time), is older than the bindings that call it, or
``MIRRORFLOW_NATIVE=0`` is set, :func:`load_library` returns ``None`` and the callers use their
torch path, which computes the same numbers up to float rounding (each caller's tests compare the
two paths).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os

__all__ = ["load_library", "native_disabled"]


def native_disabled() -> bool:
    """Whether ``MIRRORFLOW_NATIVE=0`` turns the compiled kernels off."""
    return os.environ.get("MIRRORFLOW_NATIVE", "1").strip() == "0"


def load_library(module: str, abi_symbol: str, abi: int) -> ctypes.CDLL | None:
    """The shared library of extension ``module`` (e.g. ``"mirrorflow.experiments._nnkernels"``)
    as a :class:`ctypes.CDLL`, or ``None`` when it is not built, not loadable, disabled, or a
    stale build whose ``abi_symbol()`` does not return ``abi``.

    >>> load_library("mirrorflow.no_such_module", "abi", 1) is None
    True
    """
    if native_disabled():
        return None
    return _load(module, abi_symbol, abi)


@functools.cache
def _load(module: str, abi_symbol: str, abi: int) -> ctypes.CDLL | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith((".so", ".pyd", ".dylib")):
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    fn = getattr(lib, abi_symbol, None)
    if fn is None:
        return None
    fn.restype, fn.argtypes = ctypes.c_int, []
    return lib if fn() == abi else None
