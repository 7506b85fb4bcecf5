"""Fused float32 kernels for the batched network experiments, with their torch fallbacks.

The C kernels (``_nnkernels.c``, an optional extension) compute the same functions as the torch
operations they replace, up to float rounding; where they are not built, or
``MIRRORFLOW_NATIVE=0`` is set, or a tensor is not a contiguous float32 CPU tensor, the torch
operation runs instead (tests/test_fused.py and tests/test_fused_gelu.py compare both with a
float64 reference).

- :func:`gelu_tanh`: ``torch.nn.functional.gelu(x, approximate="tanh")`` (GPT-2's ``gelu_new``),
  forward and backward each one vectorized pass (torch's CPU kernel for the tanh form is a scalar
  loop, about 35 % of a stacked lora-lm step; docs/experiments-lora-sparse-coding.md, "Batched
  seeds: speed").
- :func:`fused_attention`: the multi-head attention core ``softmax(q kᵀ/√dh) v`` of
  :class:`~mirrorflow.experiments.nn.StackedTinyViT` on its ``qkv`` layout, forward and backward
  each one C pass over the sequences (``_nn_attention.c``), in place of a few dozen small torch
  operations per layer (bmm on ``[N, 17, 4]``, softmax over 17 keys, views and copies).
- :func:`layer_norm`: ``torch.nn.functional.layer_norm`` over the last dim without affine,
  forward and backward each one pass vectorized across rows (``_nn_layernorm.c``; torch's CPU
  kernel goes row by row, slow at StackedTinyViT's 8 features).

>>> import torch
>>> x = torch.linspace(-3, 3, 7)
>>> torch.allclose(gelu_tanh(x), torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-6)
True
"""

from __future__ import annotations

import ctypes

import torch
from torch.autograd.function import once_differentiable

from mirrorflow._core.native import load_library
from mirrorflow._core.validation import MirrorflowError

__all__ = ["fused_attention", "gelu_tanh", "layer_norm", "native_kernels"]

_ABI = 2  # nn_abi() of the _nnkernels.c these bindings match
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
        lib.nn_attention_pad.restype = _long
        lib.nn_attention_pad.argtypes = [_long]
        lib.nn_attention_fwd.restype = None
        lib.nn_attention_fwd.argtypes = [_ptr, _ptr, _ptr, _long, _long, _long, _long]
        lib.nn_attention_bwd.restype = None
        lib.nn_attention_bwd.argtypes = [_ptr, _ptr, _ptr, _ptr, _long, _long, _long, _long]
        lib.nn_layernorm_fwd.restype = None
        lib.nn_layernorm_fwd.argtypes = [_ptr, _ptr, _ptr, _ptr, _long, _long, ctypes.c_float]
        lib.nn_layernorm_bwd.restype = None
        lib.nn_layernorm_bwd.argtypes = [_ptr, _ptr, _ptr, _ptr, _ptr, _long, _long]
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


#: largest sequence length and head width the attention kernel takes (its local arrays)
ATTENTION_MAX = 64


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, heads):
        N, T, W = qkv.shape
        D = W // 3
        lib = native_kernels()
        o = qkv.new_empty(N, T, D)
        # the probabilities, [key, query] per head, queries padded (nn_attention_pad)
        pt = qkv.new_empty(N, heads, T, lib.nn_attention_pad(T))
        lib.nn_attention_fwd(qkv.data_ptr(), o.data_ptr(), pt.data_ptr(),
                                          N, T, D, heads)
        ctx.save_for_backward(qkv, pt)
        ctx.heads = heads
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        qkv, pt = ctx.saved_tensors
        do = do.contiguous()
        N, T, W = qkv.shape
        dqkv = torch.empty_like(qkv)
        native_kernels().nn_attention_bwd(qkv.data_ptr(), pt.data_ptr(), do.data_ptr(),
                                          dqkv.data_ptr(), N, T, W // 3, ctx.heads)
        return dqkv, None


def _attention_torch(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """The torch path of :func:`fused_attention`: each head's q/k/v are strided views of
    ``qkv``; the scores are computed transposed (``[key, query]``) so that the softmax runs
    over dim 1, faster than over a short last dim."""
    N, T, W = qkv.shape
    dh = W // (3 * heads)
    parts = qkv.view(N, T, 3 * heads, dh).unbind(2)
    outs = []
    for j in range(heads):
        q, k, v = parts[j], parts[heads + j], parts[2 * heads + j]
        att_t = torch.softmax(torch.baddbmm(qkv.new_zeros(()), k, q.transpose(1, 2),
                                            beta=0.0, alpha=dh ** -0.5), dim=1)
        outs.append(torch.bmm(att_t.transpose(1, 2), v))
    return outs[0] if heads == 1 else torch.cat(outs, -1)


def fused_attention(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head self-attention core: ``qkv [N, T, 3D]`` (columns ``[Q | K | V]``, each split
    into ``heads`` heads of width ``dh = D/heads``) → ``o [N, T, D]``, head ``j``'s
    ``softmax(q_j k_jᵀ/√dh) v_j`` in columns ``j dh … (j+1) dh`` (differentiable once).

    The C kernel runs on a contiguous float32 CPU tensor with ``T, dh ≤ 64`` when it is built;
    otherwise the same math in torch operations.
    """
    if qkv.dim() != 3 or qkv.shape[-1] % 3 or heads < 1 or (qkv.shape[-1] // 3) % heads:
        raise MirrorflowError(f"fused_attention needs qkv [N, T, 3D] with D divisible by heads="
                              f"{heads}; got shape {tuple(qkv.shape)}")
    T, dh = qkv.shape[1], qkv.shape[-1] // (3 * heads)
    if (_fits(qkv) and 0 < T <= ATTENTION_MAX and 0 < dh <= ATTENTION_MAX and qkv.shape[0] > 0
            and native_kernels() is not None):
        return _Attention.apply(qkv, heads)
    return _attention_torch(qkv, heads)


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, eps):
        D = x.shape[-1]
        R = x.numel() // D
        y = torch.empty_like(x)
        mean, rstd = x.new_empty(R), x.new_empty(R)
        native_kernels().nn_layernorm_fwd(x.data_ptr(), y.data_ptr(), mean.data_ptr(),
                                          rstd.data_ptr(), R, D, eps)
        ctx.save_for_backward(x, mean, rstd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, mean, rstd = ctx.saved_tensors
        g = g.contiguous()
        dx = torch.empty_like(x)
        native_kernels().nn_layernorm_bwd(x.data_ptr(), mean.data_ptr(), rstd.data_ptr(),
                                          g.data_ptr(), dx.data_ptr(), mean.numel(), x.shape[-1])
        return dx, None


def layer_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``torch.nn.functional.layer_norm(x, (x.shape[-1],), eps=eps)`` (no affine;
    differentiable once): the fused C kernel on a non-empty contiguous float32 CPU tensor when it
    is built, else torch's."""
    if _fits(x) and x.dim() >= 1 and x.numel() > 0 and native_kernels() is not None:
        return _LayerNorm.apply(x, float(eps))
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), eps=eps)
