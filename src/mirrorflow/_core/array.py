"""numpy/torch interoperability: compute in float64 numpy, hand back what the caller gave."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

try:  # torch is a core dependency, but keep this module importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]


def is_torch(x: Any) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x: Any) -> np.ndarray:
    """float64 numpy view of ``x`` (numpy array, torch tensor, or scalar).

    >>> to_numpy(torch.tensor([1, 2], dtype=torch.int32))
    array([1., 2.])
    """
    if is_torch(x):
        return x.detach().cpu().to(torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def like(result: np.ndarray, *refs: Any) -> Any:
    """Return ``result`` as a float64 torch tensor if any reference input was a tensor.

    >>> like(np.array(2.5), 1.0), like(np.array([2.5]), torch.zeros(1)).dtype
    (2.5, torch.float64)
    """
    for r in refs:
        if is_torch(r):
            return torch.as_tensor(result, dtype=torch.float64, device=r.device)
    if np.ndim(result) == 0:
        return float(result)
    return result


def array_api(fn: Callable[..., np.ndarray]) -> Callable[..., Any]:
    """Decorate a method computing on float64 numpy arrays so it accepts torch tensors too.

    Positional array arguments are converted with :func:`to_numpy`; the result comes back as a
    tensor when any argument was a tensor.
    """

    def wrapper(self, *args):
        out = fn(self, *(to_numpy(a) for a in args))
        return like(out, *args)

    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    return wrapper

