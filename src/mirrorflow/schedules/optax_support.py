"""Weight-decay schedules and the integrated decay ``a`` for JAX / optax (docs/training.md,
"JAX / optax").

Import it explicitly (``from mirrorflow.schedules import optax_support``): ``import
mirrorflow.schedules`` never imports jax. Needs the ``[jax]`` extra (jax, optax >= 0.2.7, flax).

* :func:`wd_schedule` turns a training schedule that does not read ``a`` (``constant``,
  ``switch_off``, ``linear``, ``cosine``, ``piecewise``, ``warmup``, ``sequential`` of those) into an
  optax weight-decay schedule ``count -> λ_t = factor_t · λ_base`` (jit-traceable), for
  ``optax.adamw(..., weight_decay=wd_schedule(...))`` and the other aliases that take one.
* :func:`integrated_decay` wraps an optax alias (``adamw``, ``adamaxw``, ``adan``, ``lion``,
  ``lamb``, ``lars``, ``novograd``, ``adadelta``, or any factory with ``learning_rate`` and
  ``weight_decay`` arguments) into one ``GradientTransformation`` whose state keeps the step
  count and the integrated decay ``a = Σ_k η_k λ_k`` (per decay group), and sets the alias's
  learning rate and weight decay for every step from that state — so :func:`~mirrorflow.schedules.
  training.budget` (which needs ``a``) works, whatever the learning-rate schedule. Semantics are
  those of the torch :class:`~mirrorflow.schedules.WeightDecayScheduler`, step for step:
  ``factor_k = schedule.factor(k, a_ref, η_k·λ_base,ref)``, ``λ_k = factor_k·λ_base``,
  ``a += η_k·λ_k``; a budget's last decayed step is scaled so that ``a`` lands on its target.

Precision: ``a`` (and ``η_k``, ``λ_k`` as the schedule computes them) is float64 when
``jax_enable_x64`` is on, float32 otherwise (jax's default; then ``a`` carries float32 rounding,
relative ≈ 6e-8 per step). The alias applies ``η_k`` and ``λ_k`` cast to the parameters' dtype.

Every alias above adds ``λ_k·w`` to the update before its learning-rate scaling, so ``a`` is the
exponent of a zero-gradient weight's shrinkage ``∏(1 − η_k λ_k)`` wherever the rest of the
update is zero for a zero gradient and nothing rescales the decay term: ``adamw``, ``adamaxw``,
``adan``, ``lion`` — and ``lars`` with ``momentum=0`` and the trust ratio masked off. ``lamb``
and ``lars`` rescale the decayed update by a trust ratio, ``novograd`` puts the decay through its
momentum, ``adadelta`` rescales it by its adaptive step: there ``a`` is nominal (checked in
tests/test_optax.py). optax 0.2.8's ``novograd`` takes no weight-decay *schedule* (nor a mask)
itself; :func:`integrated_decay` gives it both.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from mirrorflow._core.validation import MirrorflowError, check_finite_scalar
from mirrorflow.schedules import training as T
from mirrorflow.schedules.diagnostics import FactorDiagnostics, FactorPair, factor_diagnostics

try:
    import jax
    import jax.numpy as jnp
    import optax
except ImportError as exc:  # pragma: no cover - the [jax] extra is part of CI's install
    raise MirrorflowError(f"mirrorflow.schedules.optax_support needs jax and optax ({exc.name} is "
                          "missing): pip install 'mirrorflow[jax]'") from None

__all__ = [
    "ALIASES",
    "MIN_OPTAX",
    "IntegratedDecayState",
    "check_optax_version",
    "dense_pair",
    "diagnose_pytree",
    "integrated",
    "integrated_decay",
    "integrated_per_group",
    "pytree_pair",
    "wd_schedule",
]

#: optax aliases that take a weight decay (a schedule from 0.2.7 on, except novograd's)
ALIASES = ("adamw", "adamaxw", "adan", "lion", "lamb", "lars", "novograd", "adadelta")
#: the oldest optax whose weight-decay schedules advance (0.2.6 kept them at step 0)
MIN_OPTAX = (0, 2, 7)
_SINGLE = "decay"  # the group name of a single (float) weight decay


def check_optax_version() -> str:
    """``optax.__version__`` if it is >= 0.2.7, else a one-line :class:`MirrorflowError`."""
    version = str(getattr(optax, "__version__", "0"))
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    parts = tuple(int(x or 0) for x in m.groups()) if m else (0, 0, 0)
    if parts < MIN_OPTAX:
        raise MirrorflowError(
            f"optax {version} is too old: mirrorflow needs optax >= 0.2.7 (optax 0.2.6 never "
            "advances a weight-decay schedule's step counter, so the decay stays at step 0); "
            "pip install -U 'optax>=0.2.7'")
    return version


def _float_dtype():
    """float64 with ``jax_enable_x64``, float32 otherwise."""
    return jnp.zeros((), dtype=float).dtype


# -- training schedules as jax functions ----------------------------------------------------------

def _factor(s: T.TrainingSchedule, step, a, inc, dt):
    """``s.factor(step, a, inc)`` in jax (``step`` an int array; ``a``, ``inc`` float arrays).

    The same arithmetic as :mod:`mirrorflow.schedules.training`, in the same order, so float64
    results agree with the torch scheduler to the last bit or so (cos may differ by an ulp).
    """
    one, zero = jnp.ones((), dt), jnp.zeros((), dt)
    if isinstance(s, T.Constant):
        return jnp.asarray(s.scale, dt)
    if isinstance(s, T.SwitchOff):
        if s.at_step is None:
            raise MirrorflowError("switch_off with a fractional `at` needs total_steps: pass "
                                  "total_steps=N")
        return jnp.where(step < s.at_step, one, zero)
    if isinstance(s, T.Budget):
        left = jnp.asarray(s.target_a, dt) - a
        last = left / jnp.where(inc > 0, inc, one) if s.exact else one
        return jnp.where(left <= 1e-15 * s.target_a, zero, jnp.where(inc <= left, one, last))
    if isinstance(s, (T.Linear, T.Cosine)):
        if s.end_step is None:
            raise MirrorflowError(f"{type(s).__name__.lower()} with fractions needs total_steps: "
                                  "pass total_steps=N")
        p = jnp.minimum(one, (step - s.start_step).astype(dt) / (s.end_step - s.start_step))
        p = jnp.where(step <= s.start_step, zero, p)
        if isinstance(s, T.Linear):
            return one - p
        return jnp.where(p >= 1.0, zero, 0.5 * (1.0 + jnp.cos(math.pi * p)))
    if isinstance(s, T.Piecewise):
        if s.steps is None:
            raise MirrorflowError("piecewise with fractional boundaries needs total_steps: pass "
                                  "total_steps=N")
        i = sum((step >= b).astype(jnp.int32) for b in s.steps) if s.steps else 0
        return jnp.asarray(s.values, dt)[i]
    if isinstance(s, T.Warmup):
        if s.steps_resolved is None:
            raise MirrorflowError("warmup with a fractional length needs total_steps: pass "
                                  "total_steps=N")
        ramp = s.start + (1.0 - s.start) * step.astype(dt) / s.steps_resolved
        return jnp.where(step >= s.steps_resolved, one, ramp)
    if isinstance(s, T.Sequential):
        if s.steps is None:
            raise MirrorflowError("sequential with fractional milestones needs total_steps: pass "
                                  "total_steps=N")
        starts = (0, *s.steps)
        vals = jnp.stack([_factor(b, step - st, a, inc, dt) for b, st in zip(s.bound, starts)])
        i = sum((step >= m).astype(jnp.int32) for m in s.steps) if s.steps else 0
        return vals[i]
    if isinstance(s, T.FromCallable):  # a jax-traceable fn(step) -> factor (optax's convention)
        return jnp.asarray(s.fn(step), dt)
    raise MirrorflowError(f"no jax version of the schedule {s.describe()}; use one of "
                          "mirrorflow.schedules.training's schedules or a jax-traceable callable")


def _bound(schedule, total_steps) -> T.TrainingSchedule:
    sched = T.as_schedule(schedule).bind(total_steps)
    dt = _float_dtype()
    _factor(sched, jnp.zeros((), jnp.int32), jnp.zeros((), dt), jnp.zeros((), dt), dt)  # validates
    return sched


def _base(value, what: str) -> float:
    return check_finite_scalar(what, value, minimum=0.0)


def wd_schedule(schedule, weight_decay: float, total_steps: int | None = None
                ) -> Callable[[Any], Any]:
    """The optax weight-decay schedule ``count -> factor(count) · weight_decay`` of a training
    schedule that does not read the integrated decay (jit-traceable; float64 under x64).

    >>> import optax
    >>> from mirrorflow.schedules.training import switch_off
    >>> lam = wd_schedule(switch_off(100), 0.1)
    >>> tx = optax.adamw(1e-3, weight_decay=lam)
    >>> [round(float(lam(k)), 6) for k in (0, 99, 100)]  # float32 without x64
    [0.1, 0.1, 0.0]

    :func:`~mirrorflow.schedules.training.budget` needs ``a``, which a ``count -> λ`` function
    cannot see: use :func:`integrated_decay`.
    """
    check_optax_version()
    base = _base(weight_decay, "weight_decay")
    sched = _bound(schedule, total_steps)
    if sched.needs_integrated:
        raise MirrorflowError(f"{sched.describe()} needs the integrated decay a, which an optax "
                              "weight-decay schedule (a function of the step count) cannot see; "
                              "use optax_support.integrated_decay(...), which keeps a in its state")

    def schedule_fn(count):
        dt = _float_dtype()
        zero = jnp.zeros((), dt)
        return _factor(sched, jnp.asarray(count), zero, zero, dt) * base

    return schedule_fn


# -- the integrated decay in an optax transformation ---------------------------------------------

class IntegratedDecayState(NamedTuple):
    """State of :func:`integrated_decay`.

    ``count``: steps taken (int32); ``integrated``: ``a`` of the reference group (the first group
    with a nonzero base decay, as the torch scheduler's ``integrated``); ``per_group``: ``a`` of
    every group with a nonzero base decay, by label (``"decay"`` for a single float weight decay);
    ``inner``: the alias's state. ``a`` is float64 under ``jax_enable_x64``, float32 otherwise.
    """

    count: Any
    integrated: Any
    per_group: Any
    inner: Any


def _resolve_alias(optimizer) -> tuple[str, Callable]:
    if isinstance(optimizer, str):
        fn = getattr(optax, optimizer, None)
        if fn is None or not callable(fn):
            raise MirrorflowError(f"optax has no optimizer {optimizer!r}; use one of "
                                  f"{', '.join(ALIASES)} (or pass the function)")
        name = optimizer
    elif callable(optimizer):
        fn, name = optimizer, getattr(optimizer, "__name__", repr(optimizer))
    else:
        raise MirrorflowError(f"optimizer must be an optax alias (e.g. optax.adamw or 'adamw'), "
                              f"got {type(optimizer).__name__}")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    if "learning_rate" not in params or "weight_decay" not in params:
        raise MirrorflowError(f"optax optimizer {name} takes no learning_rate and weight_decay "
                              f"arguments; use one that does: {', '.join(ALIASES)}")
    return name, fn


def _leaves_dtype(params):
    leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    return jnp.result_type(*leaves) if leaves else _float_dtype()


def integrated_decay(optimizer, learning_rate, weight_decay, schedule, *, mask=None,
                     total_steps: int | None = None, **optimizer_kwargs
                     ) -> optax.GradientTransformationExtraArgs:
    """``optimizer`` (an optax alias) with a mirrorflow weight-decay schedule and ``a`` in its state.

    Parameters
    ----------
    optimizer:
        an optax alias or its name: ``adamw``, ``adamaxw``, ``adan``, ``lion``, ``lamb``,
        ``lars``, ``novograd``, ``adadelta`` (any factory with ``learning_rate`` and
        ``weight_decay`` arguments works).
    learning_rate:
        a number or an optax schedule ``count -> η``.
    weight_decay:
        the base decay ``λ_base`` (a number), or ``{label: λ_base}`` for decay groups; then
        ``mask`` labels every leaf (a pytree of labels, or a function of the params returning
        one, as ``optax.partition``'s ``param_labels``) and ``a`` is kept per label. The factor
        of every group comes from the reference group (the first label with a nonzero base).
    schedule:
        a :mod:`mirrorflow.schedules.training` schedule (``budget`` included) or a jax-traceable
        ``step -> factor``.
    mask:
        with a number ``weight_decay``: the alias's own decay mask (booleans, or a function of
        the params), passed through (novograd, which has none, gets the same effect from
        ``optax.partition``).
    total_steps:
        resolves schedules given as fractions of training (``switch_off(0.5)``, ``cosine()``).
    optimizer_kwargs:
        the alias's other arguments (``b1``, ``momentum``, ...).

    Read ``a`` with :func:`integrated` / :func:`integrated_per_group` (they find the state in
    any optax state pytree, e.g. inside ``optax.chain`` or a flax ``nnx.Optimizer``'s
    ``opt_state``).
    """
    check_optax_version()
    name, alias = _resolve_alias(optimizer)
    for k in ("learning_rate", "weight_decay", "mask", "weight_decay_mask"):
        if k in optimizer_kwargs:
            raise MirrorflowError(f"pass {k} as integrated_decay's own argument, not in the "
                                  f"optimizer's keyword arguments")
    alias_args = inspect.signature(alias).parameters
    unknown = [k for k in optimizer_kwargs if k not in alias_args]
    if unknown:
        raise MirrorflowError(f"optax {name} has no argument {unknown[0]!r}; its arguments: "
                              f"{', '.join(alias_args)}")
    if callable(learning_rate):
        lr_fn = learning_rate
    else:
        lr0 = check_finite_scalar("learning_rate", learning_rate, minimum=0.0, strict=True)
        lr_fn = None
    sched = _bound(schedule, total_steps)
    mask_arg = next((k for k in ("mask", "weight_decay_mask") if k in alias_args), None)

    if isinstance(weight_decay, Mapping):
        if mask is None:
            raise MirrorflowError("a weight_decay per group ({label: decay}) needs mask= labelling "
                                  "every parameter leaf with one of its labels")
        bases = {}
        for label, v in weight_decay.items():
            if not isinstance(label, str):
                raise MirrorflowError(f"weight-decay group labels must be strings, got {label!r}")
            bases[label] = _base(v, f"weight_decay[{label!r}]")
        labels, native = mask, False
    else:
        bases = {_SINGLE: _base(weight_decay, "weight_decay")}
        native = mask is None or mask_arg is not None
        labels = None
        if not native:  # novograd: no decay mask of its own
            labels = (lambda p: jax.tree.map(lambda m: _SINGLE if m else "_no_decay", mask(p))) \
                if callable(mask) else jax.tree.map(lambda m: _SINGLE if m else "_no_decay", mask)
            bases["_no_decay"] = 0.0
    decayed = [k for k, b in bases.items() if b > 0]
    if not decayed:
        raise MirrorflowError("every weight decay is 0, so there is nothing to schedule; give "
                              "weight_decay > 0 (for at least one group)")
    ref = decayed[0]

    def build(eta, lams):
        if native:
            kw = dict(optimizer_kwargs)
            if mask is not None:
                kw[mask_arg] = mask
            return alias(learning_rate=eta, weight_decay=lams[_SINGLE], **kw)
        return optax.partition(
            {g: alias(learning_rate=eta, weight_decay=lams[g], **optimizer_kwargs) for g in bases},
            labels)

    def init_fn(params):
        if labels is not None and not native:
            given = set(jax.tree.leaves(labels(params) if callable(labels) else labels))
            if not given <= set(bases):
                raise MirrorflowError(f"mask labels {sorted(map(str, given - set(bases)))} have no "
                                      f"weight decay; give weight_decay one entry per label "
                                      f"(0.0 for no decay), labels: {sorted(bases)}")
        dt = _float_dtype()
        zero = jnp.zeros((), dt)
        return IntegratedDecayState(
            count=jnp.zeros((), jnp.int32), integrated=zero,
            per_group={g: zero for g in decayed},
            inner=build(1.0, {g: (b if b > 0 else 0.0) for g, b in bases.items()}).init(params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG if hasattr(optax, "NO_PARAMS_MSG") else
                             "integrated_decay needs params: call update(grads, state, params)")
        dt = _float_dtype()
        count = state.count
        # an optax schedule of an int32 count computes in float32 even under x64: give it the
        # count as jax's default int (int64 under x64), so that η is float64 there
        eta = jnp.asarray(lr_fn(count.astype(jnp.asarray(0).dtype)) if lr_fn is not None
                          else lr0, dt)
        f = _factor(sched, count, state.integrated, eta * bases[ref], dt)
        lams = {g: f * b for g, b in bases.items() if b > 0}
        per_group = {g: state.per_group[g] + eta * lams[g] for g in decayed}
        pdt = _leaves_dtype(params)
        applied = {g: (lams[g].astype(pdt) if g in lams else 0.0) for g in bases}
        updates, inner = build(eta.astype(pdt), applied).update(updates, state.inner, params,
                                                                **extra_args)
        return updates, IntegratedDecayState(count=optax.safe_increment(count),
                                             integrated=per_group[ref], per_group=per_group,
                                             inner=inner)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _find_state(state) -> IntegratedDecayState:
    if isinstance(state, IntegratedDecayState):
        return state
    found = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, IntegratedDecayState))
             if isinstance(s, IntegratedDecayState)]
    if len(found) != 1:
        raise MirrorflowError(f"{'no' if not found else len(found)} integrated_decay states in this "
                              "optimizer state; pass the state of one integrated_decay transformation")
    return found[0]


def _unwrap(x):
    """The array inside a flax nnx ``Variable`` (``get_value()``; ``.value`` in older flax)."""
    if hasattr(x, "get_value"):
        return x.get_value()
    return getattr(x, "value", x)


def _value(x) -> float:
    return float(_unwrap(x))


def integrated(state) -> float:
    """``a`` of the reference group from an :func:`integrated_decay` state (or any state pytree
    holding exactly one)."""
    return _value(_find_state(state).integrated)


def integrated_per_group(state) -> dict[str, float]:
    """``a`` of every decayed group, by label (``"decay"`` for a single float weight decay)."""
    return {k: _value(v) for k, v in _find_state(state).per_group.items()}


# -- factor-pair diagnostics on pytrees ------------------------------------------------------------

def _split_path(path) -> tuple:
    if isinstance(path, str):
        return tuple(p for p in path.split("/") if p)
    if isinstance(path, Sequence):
        return tuple(path)
    raise MirrorflowError(f"a leaf path is a 'a/b/kernel' string or a tuple of keys, got {path!r}")


def _leaf(params, path) -> np.ndarray:
    node = params
    keys = _split_path(path)
    for i, key in enumerate(keys):
        where = "/".join(map(str, keys[:i])) or "the top"
        if hasattr(node, "__getitem__") and not isinstance(node, (str, bytes)):
            try:
                node = node[key]
                continue
            except (KeyError, TypeError, IndexError):
                try:
                    node = node[int(key)]
                    continue
                except (KeyError, TypeError, ValueError, IndexError):
                    pass
        if isinstance(key, str) and hasattr(node, key):
            node = getattr(node, key)
            continue
        avail = list(node.keys()) if hasattr(node, "keys") else type(node).__name__
        raise MirrorflowError(f"no {key!r} under {where} of the params pytree (path "
                              f"{'/'.join(map(str, keys))!r}); there: {avail}")
    node = _unwrap(node)
    arr = np.asarray(node, dtype=np.float64)
    if arr.ndim != 2:
        raise MirrorflowError(f"the leaf at {'/'.join(map(str, keys))!r} has shape {arr.shape}; "
                              "a factor must be a 2-D matrix")
    return arr


def pytree_pair(params, u, v, *, name: str | None = None, scale: float = 1.0,
                transpose_u: bool = False, transpose_v: bool = False) -> FactorPair:
    """The pair ``X = scale · U Vᵀ`` with ``U`` (d1×r) and ``V`` (d2×r) the leaves at paths ``u``
    and ``v`` of a pytree (``"layer/kernel"`` or a tuple of keys), copied as float64 numpy
    arrays; ``transpose_*`` to take a leaf stored r×d."""
    U, V = _leaf(params, u), _leaf(params, v)
    U, V = (U.T if transpose_u else U), (V.T if transpose_v else V)
    label = name or f"{'/'.join(map(str, _split_path(u)))}·{'/'.join(map(str, _split_path(v)))}"
    return FactorPair(label, U, V, float(scale), "pytree")


def dense_pair(params, first, second, *, name: str | None = None) -> FactorPair:
    """Two consecutive Flax ``Dense``/``nnx.Linear`` layers ``x ↦ x K₁ K₂`` (kernels in×out):
    the product ``K₁ K₂ = U Vᵀ`` with ``U = K₁``, ``V = K₂ᵀ``. ``first``/``second`` are the paths
    of the layers (their ``kernel`` leaf is used) or of the kernels themselves."""
    def kernel(path):
        keys = _split_path(path)
        return keys if keys and keys[-1] == "kernel" else (*keys, "kernel")
    return pytree_pair(params, kernel(first), kernel(second), transpose_v=True,
                       name=name or f"{'/'.join(map(str, _split_path(first)))}→"
                                    f"{'/'.join(map(str, _split_path(second)))}")


def diagnose_pytree(params, pairs, top_k: int = 5) -> dict[str, FactorDiagnostics]:
    """Balancedness ``‖UᵀU − VᵀV‖_F``, nuclear/Frobenius ratio and effective rank of factor
    pairs in a pytree (:func:`mirrorflow.schedules.diagnostics.factor_diagnostics`, float64).

    ``pairs``: :class:`FactorPair` objects (from :func:`pytree_pair` / :func:`dense_pair`) or a
    mapping ``name -> (u_path, v_path)``.
    """
    if isinstance(pairs, Mapping):
        items = []
        for label, spec in pairs.items():
            if not isinstance(spec, Sequence) or isinstance(spec, str) or len(spec) != 2:
                raise MirrorflowError(f"pair {label!r} must be (u_path, v_path), got {spec!r}")
            items.append(pytree_pair(params, spec[0], spec[1], name=label))
    else:
        items = list(pairs)
    out = {}
    for p in items:
        if not isinstance(p, FactorPair):
            raise MirrorflowError(f"pairs must be FactorPair objects or name -> (u_path, v_path), "
                                  f"got {type(p).__name__}")
        out[p.name] = factor_diagnostics(np.asarray(p.U, np.float64), np.asarray(p.V, np.float64),
                                         scale=p.scale, top_k=top_k, name=p.name)
    return out
