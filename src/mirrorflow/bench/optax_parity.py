"""Parity of :func:`mirrorflow.schedules.optax_support.integrated_decay` with the torch scheduler.

``python -m mirrorflow.bench.optax_parity [--steps K]`` prints one JSON object:

* ``aliases``: per optax alias, ``max |a_optax − a_torch|`` over every step of three decay
  schedules (``switch_off``, ``budget``, ``sequential`` warm-up → cosine → off), with the same
  cosine learning rate with warm-up, ``a_torch`` from :class:`~mirrorflow.schedules.
  WeightDecayScheduler` on a torch ``AdamW`` given the same learning rate at every step;
* ``probe``: per alias, the largest relative error of a zero-gradient weight against
  ``∏(1 − η_k λ_k)`` (float64, x64 on). ``lars`` runs with ``momentum=0`` and its trust ratio
  masked off for the probe; ``lamb``, ``novograd`` and ``adadelta`` rescale the decayed update
  (trust ratio, momentum, adaptive step), so their error here is large by design;
* ``probe_own_law``: for those three, the error against their own zero-gradient law computed by
  hand (``lamb``: ``w ← (1 − η) w`` while ``λ > 0``; ``novograd``: ``m ← 0.9 m + λ w``,
  ``w ← w − η m``; ``adadelta``: its rescaling of ``u = λ w``), relative and absolute
  (``probe_own_law_abs``; novograd's momentum carries the weight through zero in long runs, where
  a relative error means little);
* ``budget_landing``: ``|a_end − a*|`` of the budget runs, per alias.

Not part of ``mirrorflow bench`` (no timing; needs the ``[jax]`` extra).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from mirrorflow.schedules import WeightDecayScheduler
from mirrorflow.schedules.training import budget, constant, cosine, sequential, switch_off, warmup

BASE = 0.4
TARGET = 0.3


def _schedules(steps: int) -> dict:
    return {
        "switch_off": switch_off(round(0.4 * steps)),
        "budget": budget(TARGET),
        "sequential": sequential([warmup(max(1, steps // 10)), cosine(), constant(0.0)],
                                 milestones=[max(1, steps // 10), round(2 * steps / 3)]),
    }


def _torch_a(schedule, etas) -> np.ndarray:
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.AdamW([p], lr=float(etas[0]), weight_decay=BASE)
    wd = WeightDecayScheduler(opt, schedule, total_steps=len(etas))
    out = []
    for eta in etas:
        opt.param_groups[0]["lr"] = float(eta)
        p.grad = torch.zeros_like(p)
        opt.step()
        out.append(wd.integrated)
    wd.remove()
    return np.array(out)


def _own_law(name: str, etas, lams, p0) -> np.ndarray:
    p, out = np.array(p0, dtype=np.float64), []
    m, eg, ex = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for e, lam in zip(etas, lams):
        if name == "lamb":
            p = p * (1 - e) if lam > 0 else p
        elif name == "novograd":
            m = 0.9 * m + lam * p
            p = p - e * m
        else:  # adadelta, rho 0.9, eps 1e-6
            u = lam * p
            eg = 0.1 * u**2 + 0.9 * eg
            d = np.sqrt(ex + 1e-6) / np.sqrt(eg + 1e-6) * u
            ex = 0.1 * d**2 + 0.9 * ex
            p = p - e * d
        out.append(p.copy())
    return np.array(out)


def parity(steps: int = 60) -> dict:
    """The parity numbers (x64 on while it runs; JAX's previous setting restored after)."""
    import jax

    old = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    try:
        return _parity(steps)
    finally:
        jax.config.update("jax_enable_x64", old)


def _parity(steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import optax

    from mirrorflow.schedules import optax_support as ox

    lr = optax.warmup_cosine_decay_schedule(0.0, 0.05, max(1, steps // 10), steps, 0.005)
    etas = np.array([float(lr(k)) for k in range(steps)])
    scheds = _schedules(steps)
    torch_a = {n: _torch_a(s, etas) for n, s in scheds.items()}
    rng = np.random.default_rng(0)
    p0 = {"w": jnp.asarray(rng.normal(size=4)), "probe": jnp.asarray([1.0, -2.0])}
    grads = {"w": jnp.asarray(rng.normal(size=(steps, 4))), "probe": jnp.zeros((steps, 2))}
    out: dict = {"aliases": {}, "probe": {}, "probe_own_law": {}, "probe_own_law_abs": {},
                 "budget_landing": {},
                 "config": {"steps": steps, "base_decay": BASE, "budget_target": TARGET,
                            "lr": "warmup_cosine_decay_schedule(0, 0.05, steps/10, steps, 0.005)",
                            "schedules": {n: s.describe() for n, s in scheds.items()},
                            "optax": optax.__version__, "jax": jax.__version__}}
    for name in ox.ALIASES:
        kw = {"momentum": 0.0, "trust_ratio_mask": {"w": True, "probe": False}} \
            if name == "lars" else {}
        txs = [ox.integrated_decay(name, lr, BASE, s, total_steps=steps, **kw)
               for s in scheds.values()]

        def run(p0, grads, txs=txs):
            def body(carry, g):
                new, rec = [], []
                for tx, (p, s) in zip(txs, carry):
                    u, s = tx.update(g, s, p)
                    p = optax.apply_updates(p, u)
                    new.append((p, s))
                    rec.append((s.integrated, p["probe"]))
                return new, rec
            return jax.lax.scan(body, [(p0, tx.init(p0)) for tx in txs], grads)[1]

        rec = jax.jit(run)(p0, grads)
        da, dp, do, dabs = 0.0, 0.0, 0.0, 0.0
        for sname, (a, probe) in zip(scheds, rec):
            a, probe = np.asarray(a), np.asarray(probe)
            da = max(da, float(np.max(np.abs(a - torch_a[sname]))))
            lams = np.diff(np.concatenate([[0.0], torch_a[sname]])) / np.where(etas > 0, etas, 1.0)
            lams[etas == 0] = BASE * scheds[sname].factor(0)  # η = 0: λ from the schedule
            law = np.cumprod(1 - etas * lams)[:, None] * np.array([1.0, -2.0])
            dp = max(dp, float(np.max(np.abs(probe / law - 1))))
            if name in ("lamb", "novograd", "adadelta"):
                own = _own_law(name, etas, lams, [1.0, -2.0])
                do = max(do, float(np.max(np.abs(probe / own - 1))))
                dabs = max(dabs, float(np.max(np.abs(probe - own))))
            target = getattr(scheds[sname], "target_a", None)  # a schedule with a target a
            if target is not None:
                out["budget_landing"][name] = abs(float(a[-1]) - target)
        out["aliases"][name] = da
        out["probe"][name] = dp
        if name in ("lamb", "novograd", "adadelta"):
            out["probe_own_law"][name] = do
            out["probe_own_law_abs"][name] = dabs
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args(argv)
    if args.steps < 10:
        ap.error("--steps must be >= 10")
    print(json.dumps(parity(args.steps), indent=1))


if __name__ == "__main__":
    main()
