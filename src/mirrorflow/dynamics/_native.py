"""ctypes bindings to the fused C kernels of ``_kernels.c`` (docs/benchmarks.md, "What was optimized").

The kernels are an optional compiled extension: where it was not built (no C compiler at
install time), or ``MIRRORFLOW_NATIVE=0`` is set, :func:`kernels` returns ``None`` and the
simulators use their torch path. Both paths compute the same steps (tests compare them with
each other and with a per-run numpy loop).

The BLAS is scipy's: the kernels receive the address of its Fortran ``dgemm`` from
``scipy.linalg.cython_blas`` (the capsule table scipy documents for compiled callers). ctypes
releases the GIL during a call, so ``threads > 1`` runs disjoint row ranges in parallel threads,
each with a one-thread BLAS.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mirrorflow._core.threads import blas_threads, torch_threads
from mirrorflow._core.validation import MirrorflowError

__all__ = ["BACKENDS", "Kernels", "kernels", "use_native"]

BACKENDS = ("auto", "native", "torch")

_c_int, _c_long, _c_double, _ptr = ctypes.c_int, ctypes.c_long, ctypes.c_double, ctypes.c_void_p


def _shrink(c: np.ndarray) -> tuple[np.ndarray, int]:
    """Shrink factors ``(K, B)`` as the kernels take them: one ``(B,)`` row (step stride 0)
    when the decay is constant over the chunk, else all rows (stride ``B``)."""
    if np.all(c == c[0]):
        return np.ascontiguousarray(c[0]), 0
    return np.ascontiguousarray(c), c.shape[1]


@dataclass(frozen=True)
class Kernels:
    """The loaded kernel library and the address of scipy's ``dgemm``."""

    lib: ctypes.CDLL
    dgemm: int

    def mult_steps(self, p: np.ndarray, q: np.ndarray | None, grad: tuple, c: np.ndarray,
                   ge: np.ndarray, steps: int, run_parts: Callable, block: int = 64) -> None:
        """``steps`` multiplicative steps in place on ``p, q`` (``(B, d)``; see ``_kernels.c``).

        ``grad``: ``("G", κG, −b)`` with ``−b`` of shape ``(d,)`` or ``(B, d)``, or
        ``("lowrank", A, y, κ)`` with ``y`` of shape ``(n,)`` or ``(B, n)``. ``c``: shrink
        factors ``1 − ηα`` of shape ``(steps, B)``.
        """
        B, d = p.shape
        x, h = np.empty_like(p), np.empty_like(p)
        c, ck = _shrink(c)
        if grad[0] == "G":
            _, G, nb = grad
            A = yv = None
            n, ys, kappa, r = 0, 0, 1.0, None
        else:
            _, A, yv, kappa = grad
            G, nb = None, np.zeros(d)
            n = A.shape[0]
            ys = 0 if yv.ndim == 1 else n
            r = np.empty((B, n))
        nbs = 0 if nb.ndim == 1 else d
        row = d * 8

        def ptr(arr, offset=0):
            return None if arr is None else arr.ctypes.data + offset

        def part(lo: int, hi: int) -> None:
            self.lib.mf_mult_steps(
                self.dgemm, hi - lo, d, steps, block, ptr(G), ptr(A), n, ptr(yv, 8 * ys * lo),
                ys, kappa, ptr(r, 8 * n * lo),
                nb.ctypes.data + 8 * nbs * lo, nbs, c.ctypes.data + 8 * lo, ck, 1, ge.ctypes.data + 8 * lo,
                p.ctypes.data + row * lo, None if q is None else q.ctypes.data + row * lo,
                x.ctypes.data + row * lo, h.ctypes.data + row * lo)

        run_parts(part, B)

    def matrix_steps(self, U: np.ndarray, V: np.ndarray, Af: np.ndarray, y: np.ndarray,
                     runs_per_problem: int, eta: float, c: np.ndarray, steps: int,
                     run_parts: Callable, block: int = 32) -> None:
        """``steps`` matrix-sensing steps in place on ``U, V`` (``(B, d, k)``; ``V is U``: X = U Uᵀ).

        ``c``: shrink factors ``1 − ηα`` of shape ``(steps, B)``.
        """
        B, d, k = U.shape
        m = Af.shape[1]
        c, ck = _shrink(c)
        fac = d * k * 8
        sym = V is U

        def part(lo: int, hi: int) -> None:
            work = np.empty(block * (2 * d * d + m) + 2 * d * k)
            u = U.ctypes.data + fac * lo
            self.lib.mf_matrix_steps(
                self.dgemm, hi - lo, lo, runs_per_problem, d, k, m, steps, block,
                Af.ctypes.data, y.ctypes.data, eta, c.ctypes.data + 8 * lo, ck, 1, u,
                u if sym else V.ctypes.data + fac * lo, work.ctypes.data)

        run_parts(part, B)


def _scipy_dgemm() -> int:
    from scipy.linalg import cython_blas

    capsule = cython_blas.__pyx_capi__["dgemm"]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return int(get_ptr(capsule, get_name(capsule)))


@functools.lru_cache(maxsize=1)
def _load() -> Kernels | None:
    spec = importlib.util.find_spec("mirrorflow.dynamics._kernels")
    if spec is None or not spec.origin:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
        dgemm = _scipy_dgemm()
    except (OSError, AttributeError, KeyError, ImportError):
        return None
    lib.mf_mult_steps.restype = None
    lib.mf_mult_steps.argtypes = [_ptr, _c_int, _c_int, _c_int, _c_int, _ptr, _ptr, _c_int,
                                  _ptr, _c_long, _c_double, _ptr, _ptr, _c_long, _ptr, _c_long,
                                  _c_long, _ptr, _ptr, _ptr, _ptr, _ptr]
    lib.mf_matrix_steps.restype = None
    lib.mf_matrix_steps.argtypes = [_ptr, _c_int, _c_int, _c_int, _c_int, _c_int, _c_int, _c_int,
                                    _c_int, _ptr, _ptr, _c_double, _ptr, _c_long, _c_long, _ptr,
                                    _ptr, _ptr]
    return Kernels(lib, dgemm)


def kernels() -> Kernels | None:
    """The compiled kernels, or ``None`` if not built or disabled with ``MIRRORFLOW_NATIVE=0``."""
    if os.environ.get("MIRRORFLOW_NATIVE", "1").strip() == "0":
        return None
    return _load()


def use_native(backend: str, applicable: bool, why_not: str = "") -> Kernels | None:
    """Resolve ``backend`` (``"auto" | "native" | "torch"``) to the kernels to use, or ``None``.

    ``applicable``: whether the problem is one the kernels cover (``why_not`` says why not).
    """
    if backend not in BACKENDS:
        raise MirrorflowError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "torch":
        return None
    k = kernels()
    if backend == "native":
        if k is None:
            raise MirrorflowError(
                "backend='native' but the C kernels are not available (built without a C "
                "compiler, or MIRRORFLOW_NATIVE=0); reinstall with a compiler or use backend='torch'")
        if not applicable:
            raise MirrorflowError(f"backend='native' does not cover {why_not}; use backend='auto' or 'torch'")
        return k
    return k if applicable else None


@contextlib.contextmanager
def row_parallel(threads: int | None) -> Iterator[Callable[[Callable[[int, int], None], int], None]]:
    """``run_parts(fn, B)`` calls ``fn(lo, hi)`` on ``threads`` contiguous row ranges in parallel.

    Inside the block BLAS runs on one thread (each part calls it from its own thread), and so
    does torch: its OpenMP workers spin-wait after every parallel op (the small bookkeeping
    between chunks) and would steal the cores from the kernel's threads (measured: 41 instead
    of 21–28 µs per step at ``B = 64`` with two threads).
    """
    T = 1 if threads is None else threads
    with blas_threads(1), torch_threads(1), \
            (ThreadPoolExecutor(T) if T > 1 else contextlib.nullcontext()) as pool:
        def run_parts(fn: Callable[[int, int], None], B: int) -> None:
            n = max(1, min(T, B))
            bounds = [(i * B // n, (i + 1) * B // n) for i in range(n)]
            if n == 1:
                fn(0, B)
            else:
                for f in [pool.submit(fn, lo, hi) for lo, hi in bounds]:
                    f.result()

        yield run_parts
