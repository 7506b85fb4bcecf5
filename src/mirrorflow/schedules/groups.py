"""Parameter groups with and without weight decay (docs/training.md, "Parameter groups").

    groups, summary = decay_param_groups(model, weight_decay=0.1)
    opt = torch.optim.AdamW(groups, lr=3e-4)
    print(summary)            # counts, and summary.decayed / summary.not_decayed name lists

The standard recipe: decay the weight matrices, not biases, normalization layers or embeddings.
What counts as which (``no_decay`` selects the categories, default all three):

* ``"bias"``: parameters whose (lower-cased) name contains ``bias`` — the Hugging Face
  Trainer's rule;
* ``"norm"``: parameters of normalization modules (``LayerNorm``, ``GroupNorm``, ``BatchNorm*``,
  ``InstanceNorm*``, ``RMSNorm`` and any module class whose name contains ``Norm``, e.g.
  ``LlamaRMSNorm``) and parameters whose name matches the Trainer's patterns ``layernorm``,
  ``rmsnorm``, ``(^|.)norm($|.)``, ``_norm($|.)``;
* ``"embedding"``: parameters of ``nn.Embedding`` / ``nn.EmbeddingBag`` (a weight tied to an
  embedding, like GPT-2's ``lm_head``, counts as one) and parameters registered directly on a
  module under a name containing ``embed`` (ViT's ``position_embeddings``).

``no_decay=("bias", "norm")`` reproduces the Hugging Face Trainer's decay set exactly (it decays
embeddings; tested against ``Trainer.get_decay_parameter_names`` on tiny GPT-2 and BERT).
``include`` / ``exclude`` override the categories by name pattern (a regular expression searched
in the full parameter name) or module type: ``include`` forces decay, ``exclude`` forces no decay;
a parameter matched by both is refused. Frozen parameters (``requires_grad=False``) are left out,
as the Trainer does, and listed in ``summary.frozen``.

Each group carries a ``"name"`` (``"decay"`` / ``"no_decay"``) that the
:class:`~mirrorflow.schedules.WeightDecayScheduler` uses to report ``a`` per group
(``integrated_by_group``; ``integrated_wd/<name>`` in the HF and Lightning logs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from mirrorflow._core.validation import MirrorflowError

__all__ = ["DecayGroupsSummary", "decay_param_groups"]

CATEGORIES = ("bias", "norm", "embedding")
_NORM_TYPES = tuple(t for t in (
    torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.LocalResponseNorm,
    getattr(torch.nn, "RMSNorm", None),
    torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm,
) if t is not None)
_NORM_NAMES = [re.compile(p) for p in
               (r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")]
_EMB_TYPES = (torch.nn.Embedding, torch.nn.EmbeddingBag)


@dataclass
class DecayGroupsSummary:
    """What :func:`decay_param_groups` decided, parameter by parameter (names as in
    ``model.named_parameters()``, shared parameters once)."""

    weight_decay: float
    decayed: list[str] = field(default_factory=list)
    not_decayed: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # not-decayed name -> why
    decayed_numel: int = 0
    not_decayed_numel: int = 0

    def __str__(self) -> str:
        tot = self.decayed_numel + self.not_decayed_numel
        share = self.decayed_numel / tot if tot else 0.0
        why: dict[str, int] = {}
        for r in self.reasons.values():
            why[r] = why.get(r, 0) + 1
        whys = ", ".join(f"{k} {v}" for k, v in sorted(why.items()))
        return (f"weight_decay={self.weight_decay:g} on {len(self.decayed)} tensors "
                f"({self.decayed_numel} elements, {share:.1%}); none on {len(self.not_decayed)} "
                f"({self.not_decayed_numel} elements: {whys or '-'}); {len(self.frozen)} frozen")


def _matchers(spec, what: str):
    """Name patterns and module types from ``include`` / ``exclude``."""
    if spec is None:
        return [], ()
    if isinstance(spec, (str, type)):
        spec = [spec]
    if not isinstance(spec, Iterable):
        raise MirrorflowError(f"{what} must be name patterns (str) and/or module types, got {spec!r}")
    pats, types = [], []
    for s in spec:
        if isinstance(s, type) and issubclass(s, torch.nn.Module):
            types.append(s)
        elif isinstance(s, str):
            try:
                pats.append(re.compile(s))
            except re.error as e:
                raise MirrorflowError(f"{what} pattern {s!r} is not a regular expression ({e})") from None
        else:
            raise MirrorflowError(f"{what} entries must be name patterns (str) or nn.Module "
                                  f"subclasses, got {s!r}")
    return pats, tuple(types)


def _is_norm_module(m: torch.nn.Module) -> bool:
    return isinstance(m, _NORM_TYPES) or "norm" in type(m).__name__.lower()


def decay_param_groups(model: torch.nn.Module, weight_decay: float, *,
                       no_decay: Sequence[str] = CATEGORIES,
                       include: Sequence | str | type | None = None,
                       exclude: Sequence | str | type | None = None,
                       ) -> tuple[list[dict], DecayGroupsSummary]:
    """Param groups ``[{"params": decayed, "weight_decay": weight_decay, "name": "decay"},
    {"params": the rest, "weight_decay": 0.0, "name": "no_decay"}]`` (empty groups left out) and
    a :class:`DecayGroupsSummary`. See the module docstring for the rules."""
    if not isinstance(model, torch.nn.Module):
        raise MirrorflowError(f"decay_param_groups needs a torch.nn.Module, got {type(model).__name__}")
    try:
        wd = float(weight_decay)
    except (TypeError, ValueError):
        raise MirrorflowError(f"weight_decay must be a number, got {weight_decay!r}") from None
    if not (wd >= 0 and wd < float("inf")):
        raise MirrorflowError(f"weight_decay is {wd!r}; it must be finite and >= 0")
    if isinstance(no_decay, str):
        no_decay = (no_decay,)
    bad = [c for c in no_decay if c not in CATEGORIES]
    if bad:
        raise MirrorflowError(f"no_decay has unknown categories {bad}; choose from {list(CATEGORIES)} "
                              "(use exclude= for name patterns or module types)")
    inc_p, inc_t = _matchers(include, "include")
    exc_p, exc_t = _matchers(exclude, "exclude")

    # every (full name, owning module) of each parameter object, tied weights included
    owners: dict[int, list[tuple[str, str, torch.nn.Module]]] = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        for pname, p in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            owners.setdefault(id(p), []).append((full, pname, mod))

    summary = DecayGroupsSummary(weight_decay=wd)
    decay, rest = [], []
    for name, p in model.named_parameters():
        entries = owners.get(id(p), [(name, name.rsplit(".", 1)[-1], model)])
        names = [e[0].lower() for e in entries]
        if not p.requires_grad:
            summary.frozen.append(name)
            continue
        forced_in = any(r.search(n) for r in inc_p for n in (e[0] for e in entries)) or \
            any(isinstance(e[2], inc_t) for e in entries)
        forced_out = any(r.search(n) for r in exc_p for n in (e[0] for e in entries)) or \
            any(isinstance(e[2], exc_t) for e in entries)
        if forced_in and forced_out:
            raise MirrorflowError(f"parameter {name!r} is matched by both include and exclude; "
                                  "make the patterns/types disjoint")
        reason = None
        if forced_out:
            reason = "excluded"
        elif not forced_in:
            if "bias" in no_decay and any("bias" in n for n in names):
                reason = "bias"
            elif "norm" in no_decay and (any(_is_norm_module(e[2]) for e in entries)
                                         or any(r.search(n) for r in _NORM_NAMES for n in names)):
                reason = "norm"
            elif "embedding" in no_decay and (any(isinstance(e[2], _EMB_TYPES) for e in entries)
                                              or any("embed" in e[1].lower() for e in entries)):
                reason = "embedding"
        if reason is None:
            decay.append(p)
            summary.decayed.append(name)
            summary.decayed_numel += p.numel()
        else:
            rest.append(p)
            summary.not_decayed.append(name)
            summary.reasons[name] = reason
            summary.not_decayed_numel += p.numel()
    if not decay and not rest:
        raise MirrorflowError("the model has no trainable parameters (all frozen or none); "
                              "nothing to put in param groups")
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": wd, "name": "decay"})
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0, "name": "no_decay"})
    return groups, summary
