"""Batched seeds: train S seeds of one arm in one process as one stacked model.

An *arm* is one config up to its seed (same schedule, decay, learning rate, sizes). Its S seeds
differ in initialization and data order only, so they can train as one model whose every
parameter has a leading seed dimension ``[S, ...]``: one forward, one backward and one
optimizer step per training step for all seeds, instead of S small ones.

Why it equals S separate runs
-----------------------------
* The loss is ``Σ_s loss_s``; seed ``s``'s slice of every gradient is ``∂ loss_s / ∂ θ_s``
  (no term couples the seeds).
* AdamW is elementwise, so one ``torch.optim.AdamW`` over the stacked tensors is S separate
  ones — with the same ``lr``, ``betas``, ``eps`` and ``weight_decay`` for every seed, which is
  what one arm means.
* :class:`mirrorflow.schedules.WeightDecayScheduler` works on the stacked optimizer unchanged:
  its factor depends on the step and on ``a``, both the same for every seed of an arm, so each
  seed's integrated decay is the scheduler's ``integrated`` (:func:`per_seed_integrated`).
* Gradient clipping must be *per seed*: ``torch.nn.utils.clip_grad_norm_`` on the stacked
  gradients would clip all seeds by their joint norm. Use :func:`clip_grad_norm_per_seed_`.
* Data order per seed: :class:`SeedBatches` draws each seed's batches from its own
  ``torch.Generator`` exactly as the per-seed loop does (``randperm`` epochs).
* Dropout: not supported (``torch.vmap(randomness="error")`` refuses it); build the model with
  dropout 0. ``randomness="different"`` would draw from the global generator, which no separate
  run reproduces.

``tests/test_batched.py`` checks stacked against separate runs (float32, with a switch-off
decay schedule, per-seed clipping and ``a`` per seed).

API
---
``stack_modules(models) -> (params, buffers)``
    S modules of one architecture → ``{name: tensor [S, ...]}``; params are fresh leaves with
    ``requires_grad``, buffers plain tensors.
``vmapped_loss(model, loss_fn) -> f(params, buffers, inputs, targets) -> losses [S]``
    ``loss_fn(model(inputs_s), targets_s)`` per seed through ``torch.func.functional_call`` and
    ``torch.vmap``; ``inputs``/``targets`` carry the seed dimension first. Train with
    ``f(...).sum().backward()``.
``make_adamw(params, lr, weight_decay, decay=default_decay, **adamw_kwargs) -> AdamW``
    Two param groups, ``decay`` (``weight_decay``) and no decay (0); ``decay(name, tensor)``
    sees the *per-seed* tensor shape (``tensor[0]``). Put a ``WeightDecayScheduler`` on it as on
    any optimizer.
``clip_grad_norm_per_seed_(params, max_norm) -> norms [S]``
    ``clip_grad_norm_``'s rule (``coef = min(1, max_norm / (norm + 1e-6))``) per seed.
``SeedBatches(n, batch_size, seeds)``
    ``next(batches) -> LongTensor [S, batch_size]``: seed ``s``'s indices into its own training
    set, the same as ``gen = torch.Generator().manual_seed(seed)`` with ``randperm(n, gen)``
    epochs (a new permutation when the next batch would run past ``n``).
``gather(data, index) -> data[s, index[s]]`` per seed (``data`` is ``[S, n, ...]``).
``unstack(params, i) -> {name: tensor}`` and ``load_seed(model, params, buffers, i)``
    Seed ``i``'s weights, detached; ``load_seed`` copies them into a module of the same
    architecture, for the per-seed diagnostics (``score_ratios``,
    :func:`mirrorflow.schedules.diagnostics.factor_diagnostics`).
``per_seed_integrated(scheduler, S) -> list[float]``
    ``a`` of every seed (``[0.0] * S`` without a scheduler).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from mirrorflow._core.validation import MirrorflowError

__all__ = [
    "SeedBatches",
    "clip_grad_norm_per_seed_",
    "default_decay",
    "gather",
    "load_seed",
    "make_adamw",
    "per_seed_integrated",
    "stack_modules",
    "unstack",
    "vmapped_loss",
]


def stack_modules(models: Sequence[torch.nn.Module]
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(params, buffers)``: each model's parameters and buffers stacked along a new first
    dimension (seed ``s`` = ``models[s]``). Params are new leaf tensors that require grad."""
    models = list(models)
    if not models:
        raise MirrorflowError("stack_modules needs at least one model")
    names = [tuple(n for n, _ in m.named_parameters()) for m in models]
    shapes = [tuple(tuple(p.shape) for _, p in m.named_parameters()) for m in models]
    if len(set(names)) != 1 or len(set(shapes)) != 1:
        raise MirrorflowError("stack_modules needs models of one architecture (same parameter "
                              "names and shapes); build every seed's model with the same sizes")
    params = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models])
              .requires_grad_(True) for n in names[0]}
    buffers = {n: torch.stack([dict(m.named_buffers())[n] for m in models])
               for n, _ in models[0].named_buffers()}
    return params, buffers


def vmapped_loss(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                 ) -> Callable[..., torch.Tensor]:
    """``f(params, buffers, inputs, targets) -> [S]``: ``loss_fn(model_s(inputs[s]), targets[s])``
    for every seed at once. ``model`` only supplies the architecture (its own weights are not
    used). Dropout or other randomness inside is refused by ``torch.vmap``."""
    from torch.func import functional_call

    def one(p, b, x, y):
        return loss_fn(functional_call(model, (p, b), (x,)), y)

    return torch.vmap(one, in_dims=(0, 0, 0, 0), randomness="error")


def default_decay(name: str, tensor: torch.Tensor) -> bool:
    """Decay matrices, not biases, norms or embeddings-as-vectors: per-seed ``ndim >= 2``."""
    return tensor.ndim >= 2


def make_adamw(params: Mapping[str, torch.Tensor], lr: float, weight_decay: float,
               decay: Callable[[str, torch.Tensor], bool] = default_decay,
               **kwargs) -> torch.optim.AdamW:
    """One AdamW over stacked ``params``: group 0 the decayed tensors (``weight_decay``), group 1
    the rest (0). ``decay(name, per_seed_tensor)`` chooses; ``kwargs`` go to AdamW."""
    dec = [p for n, p in params.items() if decay(n, p[0])]
    rest = [p for n, p in params.items() if not decay(n, p[0])]
    return torch.optim.AdamW([{"params": dec, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, **kwargs)


@torch.no_grad()
def clip_grad_norm_per_seed_(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip each seed's gradient to total 2-norm ``max_norm`` (torch's rule, per seed).

    Returns the norms before clipping, ``[S]``. Parameters without a gradient are skipped, as
    ``torch.nn.utils.clip_grad_norm_`` does.
    """
    if not (isinstance(max_norm, (int, float)) and math.isfinite(max_norm) and max_norm > 0):
        raise MirrorflowError(f"max_norm must be a finite number > 0, got {max_norm!r}")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        raise MirrorflowError("no parameter has a gradient; call backward() before clipping")
    S = grads[0].shape[0]
    sq = torch.zeros(S, dtype=grads[0].dtype, device=grads[0].device)
    for g in grads:
        sq += g.reshape(S, -1).pow(2).sum(1)
    norms = sq.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(S, *([1] * (g.ndim - 1))))
    return norms


class SeedBatches:
    """Per-seed batch indices ``[S, batch_size]``, each seed from its own generator.

    Reproduces the per-seed loop ``gen = torch.Generator().manual_seed(seed)``;
    ``order = torch.randperm(n, generator=gen)``; batches ``order[ptr:ptr + B]``, a new
    permutation when ``ptr + B > n``. ``n`` is the training-set size (the same for every seed);
    ``generators`` may be passed instead of ``seeds`` when the caller has drawn from them first.
    """

    def __init__(self, n: int, batch_size: int, seeds: Sequence[int] | None = None, *,
                 generators: Sequence[torch.Generator] | None = None):
        if batch_size > n:
            raise MirrorflowError(f"batch_size {batch_size} is larger than the training set "
                                  f"({n}); use a smaller batch")
        if generators is None:
            if seeds is None:
                raise MirrorflowError("SeedBatches needs seeds or generators")
            generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.n, self.batch_size = n, batch_size
        self.gens = list(generators)
        self.order = torch.stack([torch.randperm(n, generator=g) for g in self.gens])
        self.ptr = 0

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if self.ptr + self.batch_size > self.n:
            self.order = torch.stack([torch.randperm(self.n, generator=g) for g in self.gens])
            self.ptr = 0
        idx = self.order[:, self.ptr:self.ptr + self.batch_size]
        self.ptr += self.batch_size
        return idx


def gather(data: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out[s] = data[s, index[s]]`` for ``data [S, n, ...]`` and ``index [S, B]``."""
    rows = torch.arange(data.shape[0], device=data.device).unsqueeze(1)
    return data[rows, index]


def unstack(stacked: Mapping[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Seed ``i``'s slice of every stacked tensor (detached)."""
    return {n: t[i].detach() for n, t in stacked.items()}


@torch.no_grad()
def load_seed(model: torch.nn.Module, params: Mapping[str, torch.Tensor],
              buffers: Mapping[str, torch.Tensor] | None, i: int) -> torch.nn.Module:
    """Copy seed ``i``'s weights into ``model`` (same architecture) and return it."""
    state = {**unstack(params, i), **unstack(buffers or {}, i)}
    model.load_state_dict(state, strict=True)
    return model


def per_seed_integrated(scheduler, n_seeds: int) -> list[float]:
    """Each seed's integrated decay ``a``: the scheduler's (all seeds of an arm share the
    learning rate, base decay and schedule, so the same ``Σ η_k λ_k``); 0 without one."""
    a = 0.0 if scheduler is None else float(scheduler.integrated)
    return [a] * n_seeds
