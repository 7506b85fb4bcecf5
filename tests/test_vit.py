"""ViT experiment (docs/theory.md §6 in practice): the model, the data loaders, the schedule.

Checks against independent computations: hand-built patches, numpy SVDs of the real query/key
weights, and the integrated decay computed by hand from the learning rate and the switch step.
"""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mirrorflow import MirrorflowError
from mirrorflow.cli import app
from mirrorflow.experiments import get_experiment, make_config
from mirrorflow.experiments.base import beats_baseline
from mirrorflow.experiments.data import images_from_hf, load_image_dataset
from mirrorflow.experiments.nn import patchify, score_ratios
from mirrorflow.experiments.vit import Config, split, train_vit, train_vit_seeds
from mirrorflow.schedules import ConstantDecay, SwitchOffDecay


def test_patchify_by_hand():
    img = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    p = patchify(img, 2)
    assert p.shape == (2, 4, 12)
    for n in range(2):
        for i in range(2):
            for j in range(2):
                expected = img[n, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(-1)
                assert torch.equal(p[n, 2 * i + j], expected)
    with pytest.raises(MirrorflowError, match="does not divide"):
        patchify(img, 3)


def _head_ratios_numpy(model):
    out = []
    for blk in model.blocks:
        Wq = blk.attn.query.weight.detach().double().numpy()
        Wk = blk.attn.key.weight.detach().double().numpy()
        h = blk.attn.num_heads
        dh = Wq.shape[0] // h
        vals = []
        for j in range(h):
            M = Wq[j * dh:(j + 1) * dh].T @ Wk[j * dh:(j + 1) * dh]
            s = np.linalg.svd(M, compute_uv=False)
            vals.append(s.sum() / np.sqrt((s**2).sum()))
        out.append(np.mean(vals))
    return np.array(out)


def test_vit_switch_changes_optimizer_decay_and_ratios_are_real():
    lr, wd = 1e-3, 0.5
    cfg = Config(steps=6, eval_every=1, lr=lr, wd=wd, max_samples=120, switch_at=3 * lr,
                 batch_size=32, dim=8, heads=2, depth=2)
    res = train_vit(cfg, SwitchOffDecay(wd, 3 * lr))
    # decay seen by the optimizer before each step: on for steps 0-2, off from step 3
    np.testing.assert_array_equal(res["curves"]["weight_decay"], [wd] * 3 + [0.0] * 4)
    assert res["optimizer"].param_groups[0]["weight_decay"] == 0.0
    assert res["optimizer"].param_groups[1]["weight_decay"] == 0.0  # biases/norms never decayed
    assert res["a"] == pytest.approx(3 * lr * wd, rel=1e-12)
    np.testing.assert_allclose(res["ratios"], _head_ratios_numpy(res["model"]), rtol=1e-6)
    np.testing.assert_allclose(score_ratios(res["model"]), _head_ratios_numpy(res["model"]), rtol=1e-6)
    # constant decay keeps it on; a = steps·lr·wd
    res_c = train_vit(cfg, ConstantDecay(wd))
    assert res_c["optimizer"].param_groups[0]["weight_decay"] == wd
    assert res_c["a"] == pytest.approx(6 * lr * wd, rel=1e-12)
    # the decay really acts on the weights: the runs differ after the first step
    w_s = res["model"].blocks[0].attn.query.weight
    w_c = res_c["model"].blocks[0].attn.query.weight
    assert not torch.equal(w_s, w_c)


def test_digits_loader_and_hf_conversion():
    X, y = load_image_dataset("digits", max_samples=50, seed=0)
    assert X.shape == (50, 1, 8, 8) and X.dtype == np.float32
    assert 0.0 <= X.min() and X.max() <= 1.0
    from sklearn.datasets import load_digits

    ref = load_digits()
    row = np.flatnonzero((ref.images / 16.0 == X[0, 0]).all(axis=(1, 2)))
    assert ref.target[row[0]] == y[0]
    # an in-memory, column-addressable dataset of PIL images, as datasets.Dataset serves CIFAR-10
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8)
    ds = {"img": [Image.fromarray(a) for a in raw], "label": [3, 1, 4]}
    Xh, yh = images_from_hf(ds)
    assert Xh.shape == (3, 3, 4, 4)
    np.testing.assert_allclose(Xh[1, 2], raw[1, :, :, 2] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(yh, [3, 1, 4])
    with pytest.raises(MirrorflowError, match="no columns"):
        images_from_hf({"image": [], "label": []})
    with pytest.raises(MirrorflowError, match="unknown dataset 'mnist'"):
        load_image_dataset("mnist")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [({"dataset": "mnist"}, "unknown dataset 'mnist'"),
     ({"patch_size": 3}, "patch_size 3 does not divide"),
     ({"dim": 6, "heads": 4}, "dim (6) must be divisible by heads (4)")],
)
def test_bad_config(overrides, needle):
    with pytest.raises(MirrorflowError, match="invalid config") as err:
        make_config(get_experiment("vit").config_cls, overrides)
    assert needle in str(err.value)


def test_cli_bad_vit_config_is_one_line():
    bad = CliRunner().invoke(app, ["run", "vit", "--set", "patch_size=3"])
    assert bad.exit_code == 2
    assert "patch_size 3 does not divide" in bad.output
    assert "Traceback" not in bad.output and len(bad.output.strip().splitlines()) == 1


def test_switch_time_is_learning_rate_time():
    """switch_at is t = Σ lr: at lr = 2e-3, t = 0.6 is step 300 (the decay is on for steps 0-299)."""
    cfg = Config()
    from mirrorflow.schedules import training

    ts = training.from_continuous(cfg.make_schedule(), cfg.lr, cfg.steps)
    assert ts.at == 300 and ts.factor(299) == 1.0 and ts.factor(300) == 0.0
    assert json.loads(json.dumps(cfg.switch_at)) == 0.6


# ------------------------------------------------------------------ batched seeds, splits, chance
def _seed_cfgs(seeds, **kw):
    base = dict(steps=30, eval_every=10, lr=2e-3, wd=1.0, switch_at=0.03,
                max_samples=400, batch_size=64, test_fraction=0.2)
    return [Config(seed=s, **{**base, **kw}) for s in seeds]


def test_stacked_seeds_equal_separate_runs():
    """The seeds of one arm trained as one StackedTinyViT equal train_vit per seed (float32)."""
    cfgs = _seed_cfgs((0, 1, 2))
    sched = cfgs[0].make_schedule()
    stacked = train_vit_seeds(cfgs, sched)
    assert stacked[0]["optimizer"].param_groups[0]["weight_decay"] == 0.0  # switched off
    for cfg, got in zip(cfgs, stacked):
        ref = train_vit(cfg, sched)
        for (name, p), (_, q) in zip(got["model"].named_parameters(),
                                     ref["model"].named_parameters()):
            np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-4,
                                       atol=1e-6, err_msg=name)
        for key in ("val_loss", "val_accuracy", "a", "weight_decay", "time"):
            np.testing.assert_allclose(got["curves"][key], ref["curves"][key], rtol=1e-5,
                                       err_msg=key)
        np.testing.assert_allclose(got["ratios"], ref["ratios"], rtol=1e-5)
        # a per seed, by hand: decay on for 15 steps of lr·wd
        assert got["a"] == pytest.approx(15 * 2e-3 * 1.0, rel=1e-12)
        # the test loss is the seed's own model on its own test split
        X, y = split(cfg)["test"]
        with torch.no_grad():
            want = float(torch.nn.functional.cross_entropy(ref["model"].eval()(X), y))
        assert got["test_loss"] == pytest.approx(want, rel=1e-5)


def test_run_batch_is_run_per_seed_and_order_kept():
    exp = get_experiment("vit")
    cfgs = _seed_cfgs((4, 2), steps=12, eval_every=6, switch_at=0.012)
    cfgs.append(Config(**{**dataclasses.asdict(cfgs[0]), "schedule": "none"}))  # another arm
    batch = exp.run_many(cfgs)
    for cfg, got in zip(cfgs, batch):
        alone = exp.run(cfg)
        assert got.config == cfg
        assert got.val_loss == pytest.approx(alone.val_loss, rel=1e-5)
        assert got.test_loss == pytest.approx(alone.test_loss, rel=1e-5)
        assert got.nuclear_over_fro == pytest.approx(alone.nuclear_over_fro, rel=1e-5)
    assert batch[0].val_loss != batch[1].val_loss  # the seeds really differ


def test_diverging_seeds_in_a_batch_are_recorded_like_alone():
    cfgs = _seed_cfgs((0, 1), lr=1e10, switch_at=0.0, steps=8, eval_every=4, schedule="none")
    stacked = train_vit_seeds(cfgs, cfgs[0].make_schedule())
    for cfg, got in zip(cfgs, stacked):
        ref = train_vit(cfg, cfg.make_schedule())
        assert ref["diverged_step"] is not None
        assert got["diverged_step"] == ref["diverged_step"]
        assert len(got["curves"]["time"]) == len(ref["curves"]["time"])
        assert got["curves"]["time"][-1] == ref["curves"]["time"][-1]


def test_split_is_deterministic_disjoint_and_old_without_test():
    cfg = Config(max_samples=300, seed=3, test_fraction=0.2)
    a, b = split(cfg), split(cfg)
    for k in a:
        assert torch.equal(a[k][0], b[k][0])
    sizes = {k: len(v[1]) for k, v in a.items()}
    assert sizes == {"val": 75, "test": 60, "train": 165}
    X, y = load_image_dataset("digits", max_samples=300, seed=3)
    perm = np.random.default_rng(3).permutation(300)
    assert torch.equal(a["test"][0], torch.as_tensor(X[perm[75:135]]))
    flat = {k: {tuple(x.flatten().tolist()) for x in v[0]} for k, v in a.items()}
    assert not (flat["val"] & flat["test"]) and not (flat["train"] & flat["test"])
    old = split(Config(max_samples=300, seed=3))  # test_fraction = 0: the earlier split
    assert len(old["test"][1]) == 0
    assert torch.equal(old["train"][0], torch.as_tensor(X[perm[75:]]))
    with pytest.raises(MirrorflowError, match="fewer than batch_size"):
        make_config(Config, {"max_samples": 100, "test_fraction": 0.5, "batch_size": 64})


def test_chance_level_separates_learned_from_untrained_runs():
    exp = get_experiment("vit")
    untrained, trained = exp.run_many([
        Config(steps=1, switch_at=0.0, schedule="none", max_samples=600),
        Config(steps=300, switch_at=0.3, max_samples=600)])
    assert untrained.baseline().value == pytest.approx(np.log(10))
    assert untrained.val_loss == pytest.approx(np.log(10), abs=0.1)  # really near chance
    assert beats_baseline(untrained) is False
    assert beats_baseline(trained) is True and trained.val_accuracy > 0.5
    # a record read back gives the same answer; a diverged run never beats it
    back = exp.result_from_record(trained.summary()["config"], trained.metrics(), {})
    assert beats_baseline(back) is True
    assert beats_baseline(dataclasses.replace(trained, val_loss=float("nan"))) is False


@pytest.mark.parametrize("heads,depth,channels", [(1, 1, 1), (2, 2, 1), (4, 2, 3)])
def test_stacked_vit_forward_and_gradients_equal_each_tinyvit(heads, depth, channels):
    """The copy-free stacked layout (cls as a zero patch, per-head strided views, transposed
    scores, value bias folded into the output bias, norm affines folded into the next
    weights) gives each seed its own TinyViT's logits
    and parameter gradients (float32 rounding), for any head count."""
    from mirrorflow.experiments.nn import StackedTinyViT, TinyViT

    torch.manual_seed(3)
    S, B = 3, 5
    models = [TinyViT(channels, 8, 2, 8, depth, heads, 4) for _ in range(S)]
    with torch.no_grad():  # non-zero cls and biases, norm gains ≠ 1: every folded term matters
        for m in models:
            for n, p in m.named_parameters():
                if n == "cls" or n.endswith("bias"):
                    p.normal_(0.0, 0.5)
                elif "norm" in n:
                    p.normal_(1.0, 0.5)
    stacked = StackedTinyViT(models)
    X = torch.randn(S, B, channels, 8, 8)
    y = torch.randint(0, 4, (S, B))
    out = stacked(X)
    torch.nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="sum").backward()
    for i, m in enumerate(models):
        ref = m(X[i])
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-5)
        torch.nn.functional.cross_entropy(ref, y[i], reduction="sum").backward()
        params = list(stacked.parameters())
        saved = [p.data.clone() for p in params]
        for p in params:  # seed i's gradients, read through seed_state as a TinyViT state
            p.data.copy_(p.grad)
        grads = stacked.seed_state(i)
        for p, v in zip(params, saved):
            p.data.copy_(v)
        for name, p in m.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_stacked_score_ratios_equal_per_model_diagnostics():
    """The batched per-seed nuclear/Frobenius ratios equal nn.score_ratios of each TinyViT
    (Gram/QR route of factor_diagnostics, float64); a seed with a non-finite weight gets NaN
    while the others keep their values."""
    from mirrorflow.experiments.nn import StackedTinyViT, TinyViT, score_ratios

    torch.manual_seed(5)
    models = [TinyViT(1, 8, 2, 8, 2, heads, 10) for heads in (2, 2, 2)]
    stacked = StackedTinyViT(models)
    got = stacked.score_ratios()
    for i, m in enumerate(models):
        np.testing.assert_allclose(got[i], score_ratios(m), rtol=1e-9)
        assert all(1.0 <= r <= 2.0 for r in got[i])  # rank ≤ 4 products: 1 ≤ nuc/fro ≤ 2
    with torch.no_grad():
        stacked.blocks[1]["fc1_b"][1, 0] = float("nan")  # not a q/k weight: still NaN
    bad = stacked.score_ratios()
    assert all(math.isnan(r) for r in bad[1])
    np.testing.assert_allclose(bad[0], got[0], rtol=1e-12)
    np.testing.assert_allclose(bad[2], got[2], rtol=1e-12)
