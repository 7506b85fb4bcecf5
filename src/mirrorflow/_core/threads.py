"""Thread limits for small, latency-bound linear algebra.

On a busy machine, multi-threaded BLAS and torch spin-wait on every tiny operation; the small
matrices of our simulators and solvers run many times faster on one thread. These context
managers set a limit for a block and restore the previous setting afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from threadpoolctl import threadpool_limits


def set_worker_threads(n: int) -> None:
    """Set torch's threads for the rest of this process: a sweep worker (pool process or Dask
    worker) that runs one run per core. Everywhere else use the context managers below."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def blas_threads(n: int | None):
    """Limit BLAS (numpy/scipy) threads to ``n`` inside the block; ``None`` leaves them alone."""
    return contextlib.nullcontext() if n is None else threadpool_limits(limits=n, user_api="blas")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Set ``torch.set_num_threads(n)`` inside the block; ``None`` leaves it alone."""
    import torch

    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)
