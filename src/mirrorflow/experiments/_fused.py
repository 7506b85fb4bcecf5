"""Fused float32 kernels for the batched network experiments, with their torch fallbacks.

The C kernels (``_nnkernels.c``, an optional extension) compute the same functions as the torch
operations they replace, up to float rounding; where they are not built, or
``MIRRORFLOW_NATIVE=0`` is set, or a tensor is not a contiguous float32 CPU tensor, the torch
operation runs instead (tests/test_fused.py compares both with a float64 reference).

- :func:`gelu_tanh`: ``torch.nn.functional.gelu(x, approximate="tanh")`` (GPT-2's ``gelu_new``),
  forward and backward each one vectorized pass (torch's CPU kernel for the tanh form is a scalar
  loop, about 35 % of a stacked lora-lm step; docs/benchmarks.md).

>>> import torch
>>> x = torch.linspace(-3, 3, 7)
>>> torch.allclose(gelu_tanh(x), torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-6)
True
"""

from __future__ import annotations

import ctypes

import torch

from mirrorflow._core.native import load_library

__all__ = ["gelu_tanh", "native_kernels"]

_ABI = 1  # nn_abi() of the _nnkernels.c these bindings match
_ptr, _long = ctypes.c_void_p, ctypes.c_long


def native_kernels() -> ctypes.CDLL | None:
    """The compiled ``_nnkernels`` library with its signatures set, or ``None`` (not built,
    stale, or ``MIRRORFLOW_NATIVE=0``)."""
    lib = load_library("mirrorflow.experiments._nnkernels", "nn_abi", _ABI)
    if lib is not None and lib.nn_gelu_tanh_fwd.argtypes is None:
        lib.nn_gelu_tanh_fwd.restype = None
        lib.nn_gelu_tanh_fwd.argtypes = [_ptr, _ptr, _long]
        lib.nn_gelu_tanh_bwd.restype = None
        lib.nn_gelu_tanh_bwd.argtypes = [_ptr, _ptr, _ptr, _long]
    return lib


def _fits(*ts: torch.Tensor) -> bool:
    return all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()
               for t in ts)


class _GeluTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        y = torch.empty_like(x)
        native_kernels().nn_gelu_tanh_fwd(x.data_ptr(), y.data_ptr(), x.numel())
        return y

    @staticmethod
    def backward(ctx, gy):
        (x,) = ctx.saved_tensors
        gy = gy.contiguous()
        gx = torch.empty_like(x)
        native_kernels().nn_gelu_tanh_bwd(x.data_ptr(), gy.data_ptr(), gx.data_ptr(), x.numel())
        return gx


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """``gelu(x, approximate="tanh")`` (differentiable once): the fused C kernel on a
    contiguous float32 CPU tensor when it is built, else torch's."""
    if _fits(x) and native_kernels() is not None:
        return _GeluTanh.apply(x)
    return torch.nn.functional.gelu(x, approximate="tanh")
