"""ctypes bindings to the fused C kernels of ``_kernels.c`` (docs/benchmarks.md, "What was optimized").

The kernels are an optional compiled extension: where it was not built (no C compiler at
install time), or ``MIRRORFLOW_NATIVE=0`` is set, :func:`kernels` returns ``None`` and the
simulators use their torch path. Both paths compute the same steps (tests compare them with
each other and with a per-run numpy loop).

Variants of the simulator kernel (``VARIANTS``): ``"generic"`` and ``"avx2"`` call scipy's BLAS
for the GEMMs and run the elementwise pass compiled portably or for AVX2+FMA; ``"avx512"``
does the GEMMs itself in AVX-512 register tiles with the elementwise pass fused in. The best
one this CPU runs is used; ``MIRRORFLOW_KERNEL=generic|avx2|avx512`` overrides it.

The BLAS is scipy's: the kernels receive the address of its Fortran ``dgemm`` from
``scipy.linalg.cython_blas`` (the capsule table scipy documents for compiled callers). ctypes
releases the GIL during a call, so several threads run disjoint row blocks in parallel, each
with a one-thread BLAS. How many threads: :func:`choose_threads` (``threads="auto"``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mirrorflow._core.native import load_library, native_disabled
from mirrorflow._core.threads import torch_threads
from mirrorflow._core.validation import MirrorflowError

__all__ = ["BACKENDS", "VARIANTS", "Kernels", "choose_threads", "cpu_set", "free_cores", "kernels",
           "use_native"]

BACKENDS = ("auto", "native", "torch")
VARIANTS = ("generic", "avx2", "avx512")

_c_int, _c_long, _c_double, _ptr = ctypes.c_int, ctypes.c_long, ctypes.c_double, ctypes.c_void_p
_ABI = 2  # mf_kernel_abi() of the _kernels.c these bindings match


def _shrink(c: np.ndarray) -> tuple[np.ndarray, int]:
    """Shrink factors ``(K, B)`` as the kernels take them: one ``(B,)`` row (step stride 0)
    when the decay is constant over the chunk, else all rows (stride ``B``)."""
    if np.all(c == c[0]):
        return np.ascontiguousarray(c[0]), 0
    return np.ascontiguousarray(c), c.shape[1]


# ----------------------------------------------------------------------------- cache sizes
_DEFAULT_CACHE = {1: 32 * 1024, 2: 512 * 1024}


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * mult


@functools.lru_cache(maxsize=1)
def cache_sizes() -> dict[int, int]:
    """Per-core data cache sizes in bytes by level, ``{1: L1d, 2: L2}`` (and 3 when known),
    read from ``/sys/devices/system/cpu/cpu0/cache``; 32 KiB / 512 KiB where unreadable."""
    out: dict[int, int] = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            with open(f"{base}/{entry}/type") as fh:
                if fh.read().strip() == "Instruction":
                    continue
            with open(f"{base}/{entry}/level") as fh:
                level = int(fh.read())
            with open(f"{base}/{entry}/size") as fh:
                out[level] = _parse_size(fh.read())
    except (OSError, ValueError):
        out = {}
    return {**_DEFAULT_CACHE, **out}


def kernel_block(variant: str, B: int, d: int, n: int, lowrank: bool, cpus: int) -> int:
    """Rows per block of the simulator kernel: a block runs all steps of a chunk while its rows
    stay in the core's L2 cache, and blocks are what threads share out.

    Working set per row (float64): ``p, q, x, h`` and ``r`` (``4d + n``) for the BLAS variants,
    ``p, q, x, x'`` and ``r`` for ``avx512``; the block gets half of L2 after the shared
    operand (``A`` and ``Aᵀ``, or ``G``). The BLAS variants keep at most 64 rows (tuned on
    Zen 3) and at most ``ceil(B / cpus)`` (rounded up to a multiple of 8, at least 8), so every
    core of the process's CPU set can get a block; ``avx512`` keeps at most 256 rows and at
    most ``ceil(B / (4 cpus))`` (at least 16; its speed is the same from 16 to 256 rows), so
    that threads take blocks one at a time and one that another process slows down takes
    fewer. The block depends on the machine and the problem only, never on the load, so a run
    gives the same numbers whatever thread count ``"auto"`` picks (each row's arithmetic is
    fixed by its block).
    """
    l2 = cache_sizes()[2]
    operand = 8 * (2 * n * d if lowrank else d * d)
    row = 8 * (4 * d + n)
    cap = 256 if variant == "avx512" else 64
    fit = max(8, (l2 // 2 - operand) // row // 8 * 8) if l2 // 2 > operand else 8
    if variant == "avx512":  # ~4 blocks per core, at least 16 rows: threads share them out
        per_cpu, least = -(-B // (4 * max(1, cpus))), 16
    else:
        per_cpu, least = -(-B // max(1, cpus)), 8
    share = max(least, -(-per_cpu // 8) * 8)
    return int(min(cap, fit, share))


# ----------------------------------------------------------------------------- thread choice
def cpu_set() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


class FreeCores:
    """Cores of this process's CPU set that other processes leave free, now (Linux ``/proc``).

    Two readings, the smaller wins (the thread choice must not overrate the free cores):

    - *now*: the number of runnable tasks other than the reader (``/proc/loadavg``, 4th field,
      three reads), scaled to the CPU set. It sees a busy process the moment it starts.
    - *window*: the busy time of the CPU set (``/proc/stat``: all but idle and iowait, so
      time the hypervisor steals counts as busy) minus this process's own CPU time, over the
      time since the previous reading, when that is 0.1–10 s (calls in between reuse the last
      window). It sees load that comes and goes between the instants of *now*.

    ``os.getloadavg()`` is not used: a one-minute average, it lags a process that just started
    (docs/benchmarks.md, "Threads"). Without ``/proc`` the answer is ``1.0`` (one thread).
    ``proc``, ``clock``, ``own_cpu``, ``cpus`` and ``online`` are injectable for tests.
    """

    WINDOW_MIN_S, WINDOW_MAX_S = 0.1, 10.0

    def __init__(self, proc: str = "/proc", clock: Callable[[], float] = time.monotonic,
                 own_cpu: Callable[[], float] = time.process_time,
                 cpus: Callable[[], list[int]] | None = None,
                 online: Callable[[], int | None] = os.cpu_count) -> None:
        self.proc, self.clock, self.own_cpu = proc, clock, own_cpu
        self.cpus, self.online = cpus or cpu_set, online
        self._lock = threading.Lock()
        self._last: tuple | None = None    # (time, busy ticks, own cpu s) of the window start
        self._window: tuple | None = None  # (time, free cores) of the last complete window

    def _busy_ticks(self, cpus: Sequence[int]) -> int | None:
        want = {f"cpu{c}" for c in cpus}
        busy = seen = 0
        try:
            with open(f"{self.proc}/stat") as fh:
                for line in fh:
                    parts = line.split()
                    if parts and parts[0] in want:
                        v = [int(x) for x in parts[1:9]]
                        busy += sum(v) - v[3] - v[4]
                        seen += 1
        except (OSError, ValueError):
            return None
        return busy if seen else None

    def runnable_others(self, reads: int = 3) -> float | None:
        """Mean number of runnable tasks other than the reader, over ``reads`` reads."""
        total = 0
        try:
            for _ in range(reads):
                with open(f"{self.proc}/loadavg") as fh:
                    total += int(fh.read().split()[3].split("/")[0]) - 1
        except (OSError, ValueError, IndexError):
            return None
        return max(0.0, total / reads)

    def __call__(self) -> float:
        cpus = self.cpus()
        ncpu = len(cpus)
        others = self.runnable_others()
        if others is None:
            return 1.0
        free = ncpu - others * ncpu / max(self.online() or ncpu, ncpu)
        now, busy, own = self.clock(), self._busy_ticks(cpus), self.own_cpu()
        with self._lock:
            if busy is not None:
                age = None if self._last is None else now - self._last[0]
                if age is not None and self.WINDOW_MIN_S <= age <= self.WINDOW_MAX_S:
                    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
                    other_s = (busy - self._last[1]) / tick - (own - self._last[2])
                    self._window = (now, ncpu - other_s / age)
                    self._last = (now, busy, own)
                elif age is None or age > self.WINDOW_MAX_S:
                    self._last, self._window = (now, busy, own), None
            window = self._window
        if window is not None and now - window[0] <= self.WINDOW_MAX_S:
            free = min(free, window[1])
        return float(min(max(free, 0.0), ncpu))


free_cores = FreeCores()


# a core counts as free when others leave ≥ 70 % of it (docs/benchmarks.md, "Threads")
_FREE_SLACK = 0.3
# below this many flops per thread and chunk, a thread's start-up and join cost more than it saves
MIN_FLOPS_PER_THREAD = 2e7


def choose_threads(threads: int | str | None, blocks: int, flops: float,
                   free: Callable[[], float] | None = None) -> int:
    """Threads for one kernel call of ``flops`` flops over ``blocks`` row blocks.

    An integer is taken as given (at most one thread per block); ``None`` is one thread.
    ``"auto"``: as many as the work allows (one block each and at least
    ``MIN_FLOPS_PER_THREAD`` flops each), the cores of the process's CPU set, and the cores
    that other processes leave free (``free()``, default ``free_cores``) — a core counts
    when at least 70 % of it is free — and never fewer than one. Sharing a core with a busy
    process halves the thread that lands there, and the call waits for its slowest thread, so
    a busy core makes two threads no faster than one.
    """
    if threads is None:
        return 1
    if threads != "auto":
        return max(1, min(int(threads), blocks))
    cap = min(blocks, len(cpu_set()), int(flops // MIN_FLOPS_PER_THREAD))
    if cap <= 1:
        return 1
    return max(1, min(cap, int((free or free_cores)() + _FREE_SLACK)))


def check_threads(threads) -> int | str | None:
    """``threads`` as the simulators take it: a positive int, ``None`` or ``"auto"``."""
    if threads is None or threads == "auto":
        return threads
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise MirrorflowError(f"threads must be a positive integer, None or 'auto', got {threads!r}")
    return int(threads)


def _padded(a: np.ndarray) -> np.ndarray:
    """``a`` (2-D) with its rows zero-padded to a multiple of 8 entries, C-contiguous."""
    rows, cols = a.shape
    out = np.zeros((rows, -(-cols // 8) * 8))
    out[:, :cols] = a
    return out


def _block_starts(B: int, block: int) -> list[int]:
    return [*range(0, B, block), B]


@dataclass(frozen=True)
class Kernels:
    """The loaded kernel library, the address of scipy's ``dgemm`` and the variants this CPU runs."""

    lib: ctypes.CDLL
    dgemm: int
    available: tuple[str, ...]

    def variant(self) -> str:
        """The simulator kernel variant to use: ``MIRRORFLOW_KERNEL`` if set, else the best."""
        want = os.environ.get("MIRRORFLOW_KERNEL", "").strip()
        if not want:
            return self.available[-1]
        if want not in VARIANTS:
            raise MirrorflowError(f"MIRRORFLOW_KERNEL must be one of {', '.join(VARIANTS)}, got {want!r}")
        if want not in self.available:
            raise MirrorflowError(f"MIRRORFLOW_KERNEL={want} but this CPU runs only "
                                  f"{', '.join(self.available)}; unset it or pick one of those")
        return want

    def mult_steps(self, p: np.ndarray, q: np.ndarray | None, grad: tuple, c: np.ndarray,
                   ge: np.ndarray, steps: int, run_parts: Callable) -> int:
        """``steps`` multiplicative steps in place on ``p, q`` (``(B, d)``; see ``_kernels.c``).

        ``grad``: ``("G", κG, −b)`` with ``−b`` of shape ``(d,)`` or ``(B, d)``, or
        ``("lowrank", A, y, κ)`` with ``y`` of shape ``(n,)`` or ``(B, n)``. ``c``: shrink
        factors ``1 − ηα`` of shape ``(steps, B)``. Returns the number of threads used.
        """
        B, d = p.shape
        variant = self.variant()
        x, h = np.empty_like(p), np.empty_like(p)
        c, ck = _shrink(c)
        # avx512 reads its operands in whole 8-wide vectors: zero-pad their rows
        pad = _padded if variant == "avx512" else (lambda a: a)
        if grad[0] == "G":
            _, G, nb = grad
            G = pad(G)
            A = At = yv = None
            n, ys, kappa, r = 0, 0, 1.0, None
            flops = 2.0 * d * d
        else:
            _, A, yv, kappa = grad
            G = nb = None
            n = A.shape[0]
            A, At = pad(A), pad(np.ascontiguousarray(A.T))
            ys = 0 if yv.ndim == 1 else n
            r = np.empty((B, n))
            flops = 4.0 * n * d
        lda = (A if G is None else G).shape[1]
        ldat = 0 if At is None else At.shape[1]
        nbs = 0 if nb is None or nb.ndim == 1 else d
        row = d * 8
        block = kernel_block(variant, B, d, n, G is None, len(cpu_set()))
        code = VARIANTS.index(variant)

        def ptr(arr, offset=0):
            return None if arr is None else arr.ctypes.data + offset

        def part(lo: int, hi: int) -> None:
            self.lib.mf_mult_steps(
                code, self.dgemm, hi - lo, d, steps, block, ptr(G), ptr(A), lda, ptr(At), ldat, n,
                ptr(yv, 8 * ys * lo), ys, kappa, ptr(r, 8 * n * lo), ptr(nb, 8 * nbs * lo), nbs,
                c.ctypes.data + 8 * lo, ck, 1, ge.ctypes.data + 8 * lo,
                p.ctypes.data + row * lo, None if q is None else q.ctypes.data + row * lo,
                x.ctypes.data + row * lo, h.ctypes.data + row * lo)

        return run_parts(part, _block_starts(B, block), B * steps * (flops + 8.0 * d))

    def matrix_steps(self, U: np.ndarray, V: np.ndarray, Af: np.ndarray, y: np.ndarray,
                     runs_per_problem: int, eta: float, c: np.ndarray, steps: int,
                     run_parts: Callable, block: int = 32) -> int:
        """``steps`` matrix-sensing steps in place on ``U, V`` (``(B, d, k)``; ``V is U``: X = U Uᵀ).

        ``c``: shrink factors ``1 − ηα`` of shape ``(steps, B)``. Returns the threads used.
        """
        B, d, k = U.shape
        m = Af.shape[1]
        c, ck = _shrink(c)
        fac = d * k * 8
        sym = V is U
        # the kernel's blocks: ``block`` runs, cut at problem boundaries; threads take whole ones
        starts, i0 = [], 0
        while i0 < B:
            starts.append(i0)
            i0 += min(block, B - i0, (i0 // runs_per_problem + 1) * runs_per_problem - i0)
        starts.append(B)

        def part(lo: int, hi: int) -> None:
            work = np.empty(block * (2 * d * d + m) + 2 * d * k)
            u = U.ctypes.data + fac * lo
            self.lib.mf_matrix_steps(
                self.dgemm, hi - lo, lo, runs_per_problem, d, k, m, steps, block,
                Af.ctypes.data, y.ctypes.data, eta, c.ctypes.data + 8 * lo, ck, 1, u,
                u if sym else V.ctypes.data + fac * lo, work.ctypes.data)

        return run_parts(part, starts, B * steps * (4.0 * m * d * d + 6.0 * d**3))


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
    # not built, not loadable, or a stale build (another mf_kernel_abi): None
    lib = load_library("mirrorflow.dynamics._kernels", "mf_kernel_abi", _ABI)
    if lib is None:
        return None
    try:
        dgemm = _scipy_dgemm()
    except (OSError, AttributeError, KeyError, ImportError):
        return None
    lib.mf_variants.restype, lib.mf_variants.argtypes = _c_int, []
    lib.mf_mult_steps.restype = None
    lib.mf_mult_steps.argtypes = [_c_int, _ptr, _c_int, _c_int, _c_int, _c_int, _ptr, _ptr,
                                  _c_long, _ptr, _c_long, _c_int, _ptr, _c_long, _c_double, _ptr,
                                  _ptr, _c_long, _ptr, _c_long, _c_long, _ptr, _ptr, _ptr, _ptr,
                                  _ptr]
    lib.mf_matrix_steps.restype = None
    lib.mf_matrix_steps.argtypes = [_ptr, _c_int, _c_int, _c_int, _c_int, _c_int, _c_int, _c_int,
                                    _c_int, _ptr, _ptr, _c_double, _ptr, _c_long, _c_long, _ptr,
                                    _ptr, _ptr]
    bits = lib.mf_variants()
    return Kernels(lib, dgemm, tuple(v for i, v in enumerate(VARIANTS) if bits >> i & 1))


def kernels() -> Kernels | None:
    """The compiled kernels, or ``None`` if not built or disabled with ``MIRRORFLOW_NATIVE=0``."""
    if native_disabled():
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
                "compiler, a build older than this code, or MIRRORFLOW_NATIVE=0); reinstall with "
                "a compiler (pip install -e .) or use backend='torch'")
        if not applicable:
            raise MirrorflowError(f"backend='native' does not cover {why_not}; use backend='auto' or 'torch'")
        return k
    return k if applicable else None


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries, made once (scanning them costs ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextlib.contextmanager
def row_parallel(threads: int | str | None) -> Iterator[Callable[[Callable[[int, int], None], Sequence[int], float], int]]:
    """``run_parts(fn, starts, flops)`` calls ``fn(lo, hi)`` on each row block (``starts``:
    where they begin, the last entry is the end) in parallel threads (the calling thread and a
    pool kept for the process), each taking the next block when done with one, and returns
    how many threads it used: ``threads`` as :func:`choose_threads` resolves it for ``flops``, decided
    anew on each call (so ``"auto"`` follows the load chunk by chunk).

    Inside the block BLAS runs on one thread (each part calls it from its own thread), and so
    does torch: its OpenMP workers spin-wait after every parallel op (the small bookkeeping
    between chunks) and would steal the cores from the kernel's threads (measured: 41 instead
    of 21–28 µs per step at ``B = 64`` with two threads).
    """
    limit = _blas_controller().limit(limits=1, user_api="blas")
    with limit, torch_threads(1):
        def run_parts(fn: Callable[[int, int], None], starts: Sequence[int], flops: float) -> int:
            blocks = len(starts) - 1
            n = choose_threads(threads, blocks, flops)
            if n == 1:
                fn(starts[0], starts[-1])
                return 1
            lock, nxt = threading.Lock(), [0]

            def worker() -> None:  # takes the next block until none is left
                while True:
                    with lock:
                        i = nxt[0]
                        nxt[0] += 1
                    if i >= blocks:
                        return
                    fn(starts[i], starts[i + 1])

            futures = [_pool(n - 1).submit(worker) for _ in range(n - 1)]
            try:
                worker()  # the calling thread works too
            finally:
                for f in futures:
                    f.result()
            return n

        yield run_parts


_pool_lock = threading.Lock()
_pools: list[tuple[int, ThreadPoolExecutor]] = []


def _pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool of at least ``workers`` threads, kept for the life of the process (its
    threads wait idle between calls; starting them anew cost ~0.3 ms per call)."""
    with _pool_lock:
        if not _pools or _pools[-1][0] < workers:
            _pools.append((workers, ThreadPoolExecutor(workers, thread_name_prefix="mirrorflow-kernel")))
        return _pools[-1][1]
