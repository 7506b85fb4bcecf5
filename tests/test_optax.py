"""JAX / optax: weight-decay schedules and the integrated decay ``a`` (schedules/optax_support.py).

Independent references: the torch ``WeightDecayScheduler`` (``a`` step by step), hand recursions in
numpy (``a = Σ η_k λ_k``; a zero-gradient weight's shrinkage ``∏(1 − η_k λ_k)``, or the alias's own
law where something rescales the decay), numpy SVDs for the diagnostics.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from mirrorflow import MirrorflowError
from mirrorflow.schedules import WeightDecayScheduler
from mirrorflow.schedules import optax_support as ox
from mirrorflow.schedules.training import (
    budget,
    constant,
    cosine,
    sequential,
    switch_off,
    warmup,
)

K = 24          # steps
BASE = 0.4      # base weight decay
TARGET = 0.12   # budget a*, reached around step 8 (switch_off(10) leaves a = 0.144)
SCHEDULES = {
    "switch_off": lambda: switch_off(10),
    "budget": lambda: budget(TARGET),
    "sequential": lambda: sequential([warmup(3), cosine(), constant(0.0)], milestones=[3, 15]),
}
#: aliases whose zero-gradient update is exactly −η_k λ_k w (with these options): the probe law
PROBE_KW = {"adamw": {}, "adamaxw": {}, "adan": {}, "lion": {},
            "lars": {"momentum": 0.0, "trust_ratio_mask": {"w": True, "probe": False}}}
OTHER = ("lamb", "novograd", "adadelta")


@pytest.fixture
def x64():
    old = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


def lr_schedule():
    """Cosine learning rate with linear warm-up (0 → 0.05 over 4 steps, then down to 0.005)."""
    return optax.warmup_cosine_decay_schedule(0.0, 0.05, 4, K, 0.005)


def hand_lambdas(name: str, etas: np.ndarray) -> np.ndarray:
    """λ_k of each schedule, from its definition (not from mirrorflow's code)."""
    k = np.arange(K)
    if name == "switch_off":
        return np.where(k < 10, BASE, 0.0)
    if name == "sequential":
        f = np.where(k < 3, k / 3, 0.5 * (1 + np.cos(np.pi * np.clip(k - 3, 0, 12) / 12)))
        return BASE * np.where(k >= 15, 0.0, f)
    lam, a = np.zeros(K), 0.0
    for i in range(K):
        left = TARGET - a
        full = etas[i] * BASE
        lam[i] = 0.0 if left <= 1e-15 * TARGET else (BASE if full <= left else left / etas[i])
        a += etas[i] * lam[i]
    return lam


def torch_a(schedule, etas, bases=(BASE,)) -> np.ndarray:
    """``a`` per step (and per group) from the torch WeightDecayScheduler, same lr per step."""
    ps = [torch.zeros(2, dtype=torch.float64, requires_grad=True) for _ in bases]
    opt = torch.optim.AdamW([{"params": [p], "weight_decay": b} for p, b in zip(ps, bases)],
                            lr=float(etas[0]))
    wd = WeightDecayScheduler(opt, schedule, total_steps=K)
    out = []
    for k in range(K):
        for g in opt.param_groups:
            g["lr"] = float(etas[k])
        for p in ps:
            p.grad = torch.zeros_like(p)
        opt.step()
        out.append(wd.integrated_per_group)
    wd.remove()
    return np.array(out)


def run_alias(name: str, kw: dict):
    """All three decay schedules with one alias, in one jitted scan: ``a`` and the probe per step."""
    lr = lr_schedule()
    txs = [ox.integrated_decay(name, lr, BASE, make(), total_steps=K, **kw)
           for make in SCHEDULES.values()]
    rng = np.random.default_rng(0)
    p0 = {"w": jnp.asarray(rng.normal(size=3)), "probe": jnp.asarray([1.0, -2.0])}
    grads = {"w": jnp.asarray(rng.normal(size=(K, 3))), "probe": jnp.zeros((K, 2))}

    def run(p0, grads):
        def body(carry, g):
            new, rec = [], []
            for tx, (p, s) in zip(txs, carry):
                u, s = tx.update(g, s, p)
                p = optax.apply_updates(p, u)
                new.append((p, s))
                rec.append((s.integrated, p["probe"], p["w"]))
            return new, rec
        return jax.lax.scan(body, [(p0, tx.init(p0)) for tx in txs], grads)[1]

    rec = jax.jit(run)(p0, grads)
    return {n: (np.asarray(a), np.asarray(pr), np.asarray(w)) for n, (a, pr, w) in
            zip(SCHEDULES, rec)}


def other_law(name: str, etas, lams) -> np.ndarray:
    """A zero-gradient weight's factor per step where the alias rescales the decayed update."""
    p = np.array([1.0, -2.0])
    out = []
    if name == "lamb":  # trust ratio ‖w‖/‖λ w‖ undoes λ: w ← (1 − η) w while λ > 0
        for e, lam in zip(etas, lams):
            p = p * (1 - e) if lam > 0 else p
            out.append(p.copy())
    elif name == "novograd":  # the decay goes through the momentum: m = b1 m + λ w, w ← w − η m
        m = np.zeros(2)
        for e, lam in zip(etas, lams):
            m = 0.9 * m + lam * p
            p = p - e * m
            out.append(p.copy())
    else:  # adadelta (rho 0.9, eps 1e-6) rescales u = λ w by sqrt(E[Δ²] + eps) / sqrt(E[u²] + eps)
        eg, ex = np.zeros(2), np.zeros(2)
        for e, lam in zip(etas, lams):
            u = lam * p
            eg = 0.1 * u**2 + 0.9 * eg
            d = np.sqrt(ex + 1e-6) / np.sqrt(eg + 1e-6) * u
            ex = 0.1 * d**2 + 0.9 * ex
            p = p - e * d
            out.append(p.copy())
    return np.array(out)


@pytest.fixture(scope="module")
def reference():
    """η_k, hand λ_k and the torch scheduler's a for each schedule (torch needs no x64)."""
    old = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    etas = np.array([float(lr_schedule()(k)) for k in range(K)])
    jax.config.update("jax_enable_x64", old)
    return {n: (etas, hand_lambdas(n, etas), torch_a(make(), etas)[:, 0])
            for n, make in SCHEDULES.items()}


@pytest.mark.parametrize("name", ox.ALIASES)
def test_a_matches_torch_and_the_probe_follows_its_law(x64, reference, name):
    got = run_alias(name, PROBE_KW.get(name, {}))
    for sched, (a, probe, w) in got.items():
        etas, lams, a_torch = reference[sched]
        assert a.dtype == np.float64 and probe.dtype == np.float64
        np.testing.assert_allclose(a, a_torch, rtol=0, atol=1e-12, err_msg=f"{name} {sched}")
        np.testing.assert_allclose(a, np.cumsum(etas * lams), rtol=0, atol=1e-12)
        assert np.all(np.isfinite(w)) and not np.allclose(w[-1], w[0])  # the alias really ran
        if name in PROBE_KW:
            law = np.cumprod(1 - etas * lams)[:, None] * np.array([1.0, -2.0])
        else:
            law = other_law(name, etas, lams)
            # and there the shrinkage is NOT ∏(1 − η λ): a is nominal for this alias
            plain = np.cumprod(1 - etas * lams)[-1] * np.array([1.0, -2.0])
            assert np.max(np.abs(probe[-1] / plain - 1)) > 1e-3
        np.testing.assert_allclose(probe, law, rtol=1e-12, atol=0, err_msg=f"{name} {sched}")
    a_budget = got["budget"][0]
    assert abs(a_budget[-1] - TARGET) <= 4 * np.spacing(TARGET)  # lands on a* (to the last bits)
    stop = int(np.argmax(a_budget >= a_budget[-1]))
    assert 0 < stop < K - 3 and np.all(a_budget[stop:] == a_budget[-1])  # then decay is off


def shrink_per_step(tx, steps=8, lr=0.1):
    """p_{k+1}/p_k of a zero-gradient weight under ``tx``."""
    p = {"probe": jnp.ones(2)}
    s = tx.init(p)
    out = []
    for _ in range(steps):
        u, s = tx.update({"probe": jnp.zeros(2)}, s, p)
        new = optax.apply_updates(p, u)
        out.append(float(new["probe"][0] / p["probe"][0]))
        p = new
    return np.array(out)


def frozen_add_decayed_weights(schedule):
    """optax 0.2.6's bug: the weight-decay schedule's counter never advances (stays at 0)."""
    def init(params):
        return optax.EmptyState()

    def update(updates, state, params):
        lam = schedule(0)
        return jax.tree.map(lambda g, p: g + lam * p, updates, params), state
    return optax.GradientTransformation(init, update)


def test_decay_schedule_advances_with_the_step_count_unlike_optax_026(x64):
    lam = ox.wd_schedule(switch_off(3), 0.5)
    expected = np.array([1 - 0.1 * 0.5] * 3 + [1.0] * 5)
    for tx in (optax.adamw(0.1, weight_decay=lam),
               ox.integrated_decay("adamw", 0.1, 0.5, switch_off(3))):
        np.testing.assert_allclose(shrink_per_step(tx), expected, rtol=1e-14, atol=0)
    frozen = optax.chain(optax.scale_by_adam(), frozen_add_decayed_weights(lam),
                         optax.scale_by_learning_rate(0.1))
    assert not np.allclose(shrink_per_step(frozen), expected)  # the check catches the bug


def test_wd_schedule_values_by_hand(x64):
    lam = ox.wd_schedule(sequential([warmup(3), cosine(), constant(0.0)], milestones=[3, 15]),
                         BASE, total_steps=K)
    got = np.array([float(lam(k)) for k in range(K)])
    np.testing.assert_allclose(got, hand_lambdas("sequential", None), rtol=1e-15, atol=1e-17)
    half = ox.wd_schedule(switch_off(0.5), 0.2, total_steps=10)
    assert [float(half(k)) for k in (0, 4, 5, 9)] == [0.2, 0.2, 0.0, 0.0]
    under_jit = jax.jit(lam)
    assert float(under_jit(jnp.asarray(4))) == pytest.approx(got[4], rel=1e-15)


def test_groups_and_masks_keep_a_per_group_like_torch(x64, reference):
    etas, _, _ = reference["budget"]
    bases = {"big": 0.4, "small": 0.1, "none": 0.0}
    labels = {"w": "big", "v": "small", "b": "none"}
    tx = ox.integrated_decay("adamw", lr_schedule(), bases, budget(TARGET), mask=labels)
    p = {"w": jnp.ones(2), "v": jnp.ones(2), "b": jnp.ones(2)}
    s = tx.init(p)
    upd = jax.jit(tx.update)
    for _ in range(K):
        u, s = upd(jax.tree.map(jnp.zeros_like, p), s, p)
        p = optax.apply_updates(p, u)
    a_torch = torch_a(budget(TARGET), etas, bases=(0.4, 0.1, 0.0))[-1]
    got = ox.integrated_per_group(s)
    assert set(got) == {"big", "small"}
    assert abs(got["big"] - a_torch[0]) <= 1e-12 and abs(got["small"] - a_torch[1]) <= 1e-12
    assert ox.integrated(s) == got["big"] and abs(got["big"] - TARGET) <= 4 * np.spacing(TARGET)
    assert abs(got["small"] - TARGET / 4) <= 1e-12  # the reference group's factor, base 0.1
    assert np.all(np.asarray(p["b"]) == 1.0)  # the undecayed group is untouched
    np.testing.assert_allclose(np.asarray(p["v"]), np.prod(1 - etas * 0.1 *
                               hand_lambdas("budget", etas) / BASE), rtol=1e-12)


@pytest.mark.parametrize("name", ["adamw", "novograd"])  # alias's own mask / partition
def test_a_boolean_mask_leaves_masked_weights_alone(x64, name):
    mask = {"w": True, "b": False}
    for m in (mask, lambda params: mask):
        tx = ox.integrated_decay(name, 0.1, 0.5, switch_off(2), mask=m)
        p = {"w": jnp.ones(2), "b": jnp.ones(2)}
        s = tx.init(p)
        upd = jax.jit(tx.update)
        for _ in range(3):
            u, s = upd({"w": jnp.zeros(2), "b": jnp.zeros(2)}, s, p)
            p = optax.apply_updates(p, u)
        assert np.all(np.asarray(p["b"]) == 1.0)
        assert ox.integrated(s) == pytest.approx(2 * 0.1 * 0.5, rel=1e-15)
        if name == "adamw":
            assert float(p["w"][0]) == pytest.approx((1 - 0.05) ** 2, rel=1e-14)


def test_float32_params_stay_float32_and_a_is_float32_without_x64():
    assert not jax.config.jax_enable_x64
    tx = ox.integrated_decay("adamw", lr_schedule(), BASE, budget(TARGET))
    p = {"w": jnp.ones(3, jnp.float32)}
    s = tx.init(p)
    upd = jax.jit(tx.update)
    for _ in range(K):
        u, s = upd({"w": jnp.full(3, 0.1, jnp.float32)}, s, p)
        p = optax.apply_updates(p, u)
    assert s.integrated.dtype == jnp.float32 and p["w"].dtype == jnp.float32
    assert abs(ox.integrated(s) - TARGET) <= 1e-7  # float32 precision


def test_float32_params_with_x64_are_not_promoted(x64):
    tx = ox.integrated_decay("lion", 0.01, 0.1, switch_off(2))
    p = {"w": jnp.ones(3, jnp.float32)}
    s = tx.init(p)
    u, s = tx.update({"w": jnp.ones(3, jnp.float32)}, s, p)
    assert u["w"].dtype == jnp.float32 and s.integrated.dtype == jnp.float64


def test_old_optax_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(optax, "__version__", "0.2.6")
    for call in (lambda: ox.integrated_decay("adamw", 0.1, 0.1, switch_off(2)),
                 lambda: ox.wd_schedule(switch_off(2), 0.1)):
        with pytest.raises(MirrorflowError, match=r"optax 0\.2\.6 is too old.*>= 0\.2\.7") as e:
            call()
        assert "\n" not in str(e.value)
    for ok in ("0.2.7", "0.2.8", "0.3.0.dev0", "1.0"):
        monkeypatch.setattr(optax, "__version__", ok)
        assert ox.check_optax_version() == ok


@pytest.mark.parametrize("call, match", [
    (lambda: ox.wd_schedule(budget(1.0), 0.1), "needs the integrated decay"),
    (lambda: ox.integrated_decay("sgd", 0.1, 0.1, switch_off(2)), "no learning_rate and weight_decay"),
    (lambda: ox.integrated_decay("adamz", 0.1, 0.1, switch_off(2)), "no optimizer 'adamz'"),
    (lambda: ox.integrated_decay("adamw", 0.1, -0.1, switch_off(2)), "weight_decay"),
    (lambda: ox.integrated_decay("adamw", 0.1, 0.0, switch_off(2)), "nothing to schedule"),
    (lambda: ox.integrated_decay("adamw", -1.0, 0.1, switch_off(2)), "learning_rate"),
    (lambda: ox.integrated_decay("adamw", 0.1, {"a": 0.1}, switch_off(2)), "needs mask="),
    (lambda: ox.integrated_decay("adamw", 0.1, 0.1, switch_off(0.5)), "total_steps"),
    (lambda: ox.integrated_decay("adamw", 0.1, 0.1, switch_off(2), b3=0.9), "no argument 'b3'"),
    (lambda: ox.integrated_decay("adamw", 0.1, 0.1, switch_off(2),
                                         weight_decay_mask={"w": True}),
     "integrated_decay's own argument"),
])
def test_bad_input_is_refused_in_one_line(call, match):
    with pytest.raises(MirrorflowError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


def test_budget_inside_sequential_counts_the_whole_run(x64):
    """No decay for 2 steps, then a budget of 0.05 on a = Σ η λ of the whole run (by hand:
    η λ = 0.1·0.25 = 0.025 per full step → 0.025, 0.05, then off)."""
    sched = sequential([constant(0.0), budget(0.05)], milestones=[2])
    tx = ox.integrated_decay("adan", 0.1, 0.25, sched)
    p = {"w": jnp.ones(2)}
    s = tx.init(p)
    got = []
    for _ in range(6):
        u, s = tx.update({"w": jnp.zeros(2)}, s, p)
        p = optax.apply_updates(p, u)
        got.append(ox.integrated(s))
    np.testing.assert_allclose(got, [0, 0, 0.025, 0.05, 0.05, 0.05], rtol=0, atol=1e-17)
    assert ox.integrated((optax.EmptyState(), {"opt": s})) == got[-1]  # found inside a chain
    with pytest.raises(MirrorflowError, match="2 integrated_decay states"):
        ox.integrated((s, s))
    np.testing.assert_allclose(got, torch_a(sched, np.full(K, 0.1), bases=(0.25,))[:6, 0],
                               rtol=0, atol=1e-15)


def test_a_label_without_a_decay_is_refused_at_init():
    tx = ox.integrated_decay("adamw", 0.1, {"big": 0.4}, switch_off(2),
                             mask={"w": "big", "b": "bais"})
    with pytest.raises(MirrorflowError, match=r"labels \['bais'\] have no weight decay") as e:
        tx.init({"w": jnp.ones(2), "b": jnp.ones(2)})
    assert "\n" not in str(e.value)


def test_twice_in_a_row_and_resumed_state_continue_exactly(x64):
    """The state is the whole story: a state carried to a fresh transformation continues."""
    make = lambda: ox.integrated_decay("adamw", 0.05, BASE, budget(0.03))  # noqa: E731
    p = {"w": jnp.ones(2)}
    tx = make()
    s = tx.init(p)
    for _ in range(3):
        u, s = tx.update({"w": jnp.zeros(2)}, s, p)
        p = optax.apply_updates(p, u)
    s_first, p_first = s, p
    tx2 = make()  # "resumed": a new transformation, the saved state
    for _ in range(3):
        u, s = tx2.update({"w": jnp.zeros(2)}, s, p)
        p = optax.apply_updates(p, u)
    # by hand: 0.05·0.4 = 0.02 per step: 0.02, then 0.01 (the budget's last, clipped), then 0
    assert ox.integrated(s_first) == pytest.approx(0.03, abs=1e-17) and int(s.count) == 6
    assert ox.integrated(s) == ox.integrated(s_first)
    assert np.all(np.asarray(p["w"]) == np.asarray(p_first["w"]))


def test_importing_schedules_does_not_import_jax():
    code = ("import sys, mirrorflow.schedules, mirrorflow.schedules.training; "
            "assert 'jax' not in sys.modules and 'optax' not in sys.modules, 'jax imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


# -- diagnostics --------------------------------------------------------------------------------

def hand_diag(U, V, scale=1.0):
    s = np.linalg.svd(scale * U @ V.T, compute_uv=False)
    p = s / s.sum()
    return {"balancedness": np.linalg.norm(U.T @ U - V.T @ V), "nuclear": s.sum(),
            "frobenius": np.sqrt((s**2).sum()), "nuclear_over_fro": s.sum() / np.sqrt((s**2).sum()),
            "effective_rank": np.exp(-np.sum(p * np.log(p)))}


def check(d, ref):
    for k, v in ref.items():
        assert getattr(d, k) == pytest.approx(v, rel=1e-10), k


def test_pytree_diagnostics_match_numpy_svd():
    rng = np.random.default_rng(3)
    U, V = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    params = {"params": {"lora": {"B": jnp.asarray(U, jnp.float32), "A": jnp.asarray(V.T, jnp.float32)}}}
    U32, V32 = np.asarray(U, np.float32).astype(np.float64), np.asarray(V, np.float32).astype(np.float64)
    pair = ox.pytree_pair(params, "params/lora/B", ("params", "lora", "A"), transpose_v=True,
                          scale=2.0, name="lora")
    check(ox.diagnose_pytree(params, [pair])["lora"], hand_diag(U32, V32, 2.0))
    d = ox.diagnose_pytree({"u": U, "v": V}, {"uv": ("u", "v")})["uv"]
    check(d, hand_diag(U, V))
    with pytest.raises(MirrorflowError, match="no 'C' under params/lora") as e:
        ox.pytree_pair(params, "params/lora/C", "params/lora/A")
    assert "\n" not in str(e.value)


def test_flax_dense_pair_is_the_product_of_the_kernels():
    import flax.linen as nn
    from flax import nnx

    class Two(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4, use_bias=False, name="down")(nn.Dense(3, use_bias=False, name="up")(x))

    x = jnp.ones((1, 6))
    params = Two().init(jax.random.PRNGKey(0), x)
    k1 = np.asarray(params["params"]["up"]["kernel"], np.float64)
    k2 = np.asarray(params["params"]["down"]["kernel"], np.float64)
    d = ox.diagnose_pytree(params, [ox.dense_pair(params, "params/up", "params/down")])
    (only,) = d.values()
    s = np.linalg.svd(k1 @ k2, compute_uv=False)
    assert only.nuclear == pytest.approx(s.sum(), rel=1e-6)  # float32 kernels
    check(only, {"balancedness": np.linalg.norm(k1.T @ k1 - k2 @ k2.T)})

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(6, 3, use_bias=False, rngs=rngs)
            self.b = nnx.Linear(3, 4, use_bias=False, rngs=rngs)

    net = Net(nnx.Rngs(0))
    st = nnx.state(net, nnx.Param)
    (d,) = ox.diagnose_pytree(st, [ox.dense_pair(st, "a", "b")]).values()
    ka, kb = np.asarray(net.a.kernel[...], np.float64), np.asarray(net.b.kernel[...], np.float64)
    check(d, hand_diag(ka, kb.T))


# -- the worked example in docs/training.md -----------------------------------------------------

def test_module_doctests_pass():
    import doctest

    result = doctest.testmod(ox, verbose=False)
    assert result.attempted >= 3 and result.failed == 0


def test_docs_example_runs():
    text = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text(encoding="utf-8")
    section = text.split("## JAX / optax", 1)[1].split("### Worked example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    old = bool(jax.config.jax_enable_x64)
    try:
        exec(compile(code, "docs/training.md", "exec"), {"__name__": "docs_example"})
    finally:
        jax.config.update("jax_enable_x64", old)


@pytest.mark.slow
def test_bench_optax_parity_prints_small_errors():
    import json
    r = subprocess.run([sys.executable, "-m", "mirrorflow.bench.optax_parity"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert set(out["aliases"]) == set(ox.ALIASES) and max(out["aliases"].values()) <= 1e-12
    assert max(out["probe"][n] for n in PROBE_KW) <= 1e-12
    assert min(out["probe"][n] for n in OTHER) > 1e-3  # a nominal there, by design
    assert max(out["probe_own_law"].values()) <= 1e-12
    assert max(out["budget_landing"].values()) <= 4 * np.spacing(0.3)
    assert math.isfinite(out["config"]["steps"])


def test_nnx_optimizer_carries_a(x64):
    from flax import nnx

    m = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(m, ox.integrated_decay("adamw", 0.1, 0.5, budget(0.12)), wrt=nnx.Param)

    @nnx.jit
    def step(m, opt):
        opt.update(m, nnx.grad(lambda m: jnp.sum(m(jnp.ones((1, 3))) ** 2))(m))

    for _ in range(4):
        step(m, opt)
    # by hand: η λ = 0.05 per full step: 0.05, 0.10, then the clipped last step to 0.12, then off
    assert abs(ox.integrated(opt.opt_state) - 0.12) <= 4 * np.spacing(0.12)
    assert m.kernel[...].dtype == jnp.float32
