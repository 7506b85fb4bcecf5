"""The fused float32 kernels of mirrorflow.experiments._fused against independent float64 math.

Attention (``test_attention_*``): :func:`fused_attention` against multi-head attention written
out here in float64 (each head's ``softmax(q kᵀ/√dh) v`` from its columns of ``qkv``), forward
and gradients; the ``MIRRORFLOW_NATIVE=0`` path against the native one; the inputs the kernel
does not take (float64, non-contiguous, T > 64) falling back to torch. CI builds the extension,
so ``test_attention_kernel_is_built`` fails rather than letting these pass on the torch path.
"""

from __future__ import annotations

import math

import pytest
import torch

from mirrorflow import MirrorflowError
from mirrorflow.experiments import _fused
from mirrorflow.experiments._fused import fused_attention, native_kernels


def _reference(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention on ``qkv [N, T, 3D]`` in float64, one head at a time."""
    x = qkv.double()
    D = x.shape[-1] // 3
    dh = D // heads
    outs = []
    for j in range(heads):
        q = x[..., j * dh:(j + 1) * dh]
        k = x[..., D + j * dh:D + (j + 1) * dh]
        v = x[..., 2 * D + j * dh:2 * D + (j + 1) * dh]
        p = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dh), dim=-1)  # [N, query, key]
        outs.append(p @ v)
    return torch.cat(outs, -1)


def _native_used(o: torch.Tensor) -> bool:
    return type(o.grad_fn).__name__ == "_AttentionBackward"


def _value_and_grad(f, qkv: torch.Tensor, g: torch.Tensor):
    x = qkv.detach().clone().requires_grad_()
    o = f(x)
    (gx,) = torch.autograd.grad(o, x, g)
    return o, gx


def _inputs(N, T, dh, h, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    qkv = scale * torch.randn(N, T, 3 * h * dh, generator=gen)
    g = torch.randn(N, T, h * dh, generator=gen)
    return qkv, g


def test_attention_kernel_is_built():
    assert native_kernels() is not None, "build the extension: python setup.py build_ext --inplace"
    o = fused_attention(torch.randn(2, 17, 24, requires_grad=True), 2)
    assert _native_used(o)


# (N, T, dh, heads): the ViT's (17 tokens, 2 heads of 4), one head, non-powers of two, lengths
# on both sides of the kernel's padding of queries to multiples of 8, and its largest sizes
@pytest.mark.parametrize("N,T,dh,h", [(6, 17, 4, 2), (4, 5, 3, 1), (3, 13, 5, 3), (5, 8, 4, 2),
                                      (5, 9, 6, 2), (3, 16, 8, 1), (2, 64, 64, 1), (2, 33, 2, 4)])
def test_attention_forward_and_gradients_equal_float64_reference(N, T, dh, h):
    qkv, g = _inputs(N, T, dh, h, seed=N * 1000 + T * 10 + dh)
    o, gx = _value_and_grad(lambda x: fused_attention(x, h), qkv, g)
    assert _native_used(o)
    ref, gref = _value_and_grad(lambda x: _reference(x, h), qkv.double(), g.double())
    assert o.dtype == torch.float32 and o.shape == (N, T, h * dh)
    torch.testing.assert_close(o.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx.double(), gref, rtol=1e-5, atol=1e-6 * gref.abs().max().item())


def test_attention_large_scores_are_stable():
    """Scores of order 1e3 (the softmax's max shift): finite, and as close to float64 as
    torch's own float32 attention is (at such scores float32 rounding of the scores, about
    1e-4, sets the error of either)."""
    qkv, g = _inputs(4, 17, 4, 2, seed=7, scale=30.0)
    o, gx = _value_and_grad(lambda x: fused_attention(x, 2), qkv, g)
    ref, gref = _value_and_grad(lambda x: _reference(x, 2), qkv.double(), g.double())
    _, gx32 = _value_and_grad(lambda x: _fused._attention_torch(x, 2), qkv, g)
    o32 = _fused._attention_torch(qkv, 2)
    assert torch.isfinite(o).all() and torch.isfinite(gx).all()
    assert (o.double() - ref).abs().max() <= 2 * (o32.double() - ref).abs().max() + 1e-6
    assert (gx.double() - gref).abs().max() <= 2 * (gx32.double() - gref).abs().max() + 1e-6


def test_attention_one_token_is_the_value():
    """T = 1: the only key gets probability 1, so o = v and no gradient reaches q or k."""
    qkv, g = _inputs(3, 1, 4, 2, seed=3)
    o, gx = _value_and_grad(lambda x: fused_attention(x, 2), qkv, g)
    assert torch.equal(o, qkv[..., 16:])
    assert torch.equal(gx[..., 16:], g)
    assert torch.equal(gx[..., :16], torch.zeros_like(gx[..., :16]))


def test_attention_nan_stays_in_its_query():
    """A non-finite query (a diverged seed) gives NaN in that query's output only."""
    qkv, _ = _inputs(3, 17, 4, 2, seed=5)
    qkv[1, 4, 0] = math.nan  # head 0's query 4 of sequence 1
    o = fused_attention(qkv, 2)
    assert torch.isnan(o[1, 4, :4]).all()
    mask = torch.ones_like(o, dtype=torch.bool)
    mask[1, 4, :4] = False
    assert torch.isfinite(o[mask]).all()


def test_attention_native_off_equals_native(monkeypatch):
    qkv, g = _inputs(8, 17, 4, 2, seed=11)
    o, gx = _value_and_grad(lambda x: fused_attention(x, 2), qkv, g)
    assert _native_used(o)
    monkeypatch.setenv("MIRRORFLOW_NATIVE", "0")
    assert native_kernels() is None
    o0, gx0 = _value_and_grad(lambda x: fused_attention(x, 2), qkv, g)
    assert not _native_used(o0)
    torch.testing.assert_close(o0, o, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx0, gx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["float64", "noncontiguous", "long"])
def test_attention_falls_back_where_the_kernel_does_not_apply(case):
    h, tol, stride = 2, 1e-5, 1
    if case == "float64":
        qkv, g = _inputs(3, 17, 4, 2, seed=1)
        qkv, g, tol = qkv.double(), g.double(), 1e-12
    elif case == "noncontiguous":  # every other column of a wider tensor
        qkv, g = _inputs(3, 17, 8, 2, seed=2)
        g = g[..., ::2].contiguous()
        stride = 2
        assert not qkv[..., ::stride].is_contiguous()
    else:  # more tokens than the kernel's local arrays hold
        qkv, g = _inputs(2, _fused.ATTENTION_MAX + 1, 3, 2, seed=3)
    o, gx = _value_and_grad(lambda x: fused_attention(x[..., ::stride], h), qkv, g)
    assert not _native_used(o) and o.dtype == qkv.dtype
    ref, gref = _value_and_grad(lambda x: _reference(x[..., ::stride], h), qkv.double(), g.double())
    torch.testing.assert_close(o.double(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gx.double(), gref, rtol=tol, atol=tol * gref.abs().max().item())


def test_attention_twice_gives_the_same_numbers():
    qkv, g = _inputs(4, 17, 4, 2, seed=13)
    a = _value_and_grad(lambda x: fused_attention(x, 2), qkv, g)
    b = _value_and_grad(lambda x: fused_attention(x, 2), qkv, g)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("shape,heads", [((2, 5, 25), 2), ((2, 5, 24), 5), ((10, 24), 2),
                                         ((2, 5, 24), 0)])
def test_attention_bad_shapes_are_one_line_errors(shape, heads):
    with pytest.raises(MirrorflowError, match="fused_attention needs qkv") as e:
        fused_attention(torch.zeros(shape), heads)
    assert "\n" not in str(e.value)


# --- layer norm (no affine) ---------------------------------------------------------------


def _ln_reference(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.double()
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def _ln_native_used(y: torch.Tensor) -> bool:
    return type(y.grad_fn).__name__ == "_LayerNormBackward"


@pytest.mark.parametrize("shape", [(3, 50, 8), (7, 4), (5, 16), (2, 9, 32), (4, 5), (3, 33), (1, 64)])
def test_layer_norm_forward_and_gradients_equal_float64_reference(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    x = 3.0 + 2.0 * torch.randn(shape, generator=gen)
    g = torch.randn(shape, generator=gen)
    y, gx = _value_and_grad(lambda t: _fused.layer_norm(t, 1e-5), x, g)
    assert _ln_native_used(y)
    ref, gref = _value_and_grad(lambda t: _ln_reference(t, 1e-5), x.double(), g.double())
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx.double(), gref, rtol=1e-4, atol=1e-5 * gref.abs().max().item())


def test_layer_norm_constant_rows_give_zero():
    """A constant row has variance 0: the output is 0 (eps keeps it finite), and so is the
    gradient's projection (the derivative of x̂ at a constant row is (g - mean g)/sqrt(eps))."""
    x = torch.full((4, 8), 2.5)
    g = torch.arange(32.0).view(4, 8)
    y, gx = _value_and_grad(lambda t: _fused.layer_norm(t, 1e-5), x, g)
    assert torch.equal(y, torch.zeros_like(y))
    torch.testing.assert_close(gx, (g - g.mean(-1, keepdim=True)) / math.sqrt(1e-5), rtol=1e-5, atol=1e-3)


def test_layer_norm_native_off_and_fallbacks(monkeypatch):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(6, 10, 16, generator=gen)
    g = torch.randn(6, 10, 8, generator=gen)
    y, gx = _value_and_grad(lambda t: _fused.layer_norm(t[..., ::2], 1e-5), x, g)  # strided
    assert not _ln_native_used(y)
    ref, gref = _value_and_grad(lambda t: _ln_reference(t[..., ::2], 1e-5), x.double(), g.double())
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    y64 = _fused.layer_norm(x.double(), 1e-5)  # float64: torch's
    assert not _ln_native_used(y64) and y64.dtype == torch.float64
    torch.testing.assert_close(y64, _ln_reference(x, 1e-5), rtol=1e-12, atol=1e-12)
    xc, gc = x[..., :8].contiguous(), g
    y1, g1 = _value_and_grad(lambda t: _fused.layer_norm(t, 1e-5), xc, gc)
    monkeypatch.setenv("MIRRORFLOW_NATIVE", "0")
    y0, g0 = _value_and_grad(lambda t: _fused.layer_norm(t, 1e-5), xc, gc)
    assert _ln_native_used(y1) and not _ln_native_used(y0)
    torch.testing.assert_close(y0, y1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g0, g1, rtol=1e-5, atol=1e-5)
