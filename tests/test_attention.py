"""Attention experiment (docs/theory.md §6): teacher side and ViT side.

Checks against independent computations: a numpy softmax-attention, the closed form e^{−2a} for
the balancedness, numpy SVDs of the real query/key weights, hand-built patches, and the
integrated decay computed by hand from the learning rate and the switch step.
"""

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
from mirrorflow.experiments.attention import (
    Config,
    attention_forward,
    images_from_hf,
    load_image_dataset,
    patchify,
    run,
    score_ratios,
    train_vit,
)
from mirrorflow.schedules import Constant, SwitchOff


def test_attention_forward_matches_numpy():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(3, 4, 5))
    M = rng.normal(size=(5, 5))
    out = attention_forward(torch.tensor(Z), torch.tensor(M)).numpy()
    for n in range(3):
        S = Z[n] @ M @ Z[n].T
        P = np.exp(S - S.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        np.testing.assert_allclose(out[n], P @ Z[n], rtol=1e-12, atol=1e-14)


def test_teacher_balancedness_decays_like_exp_minus_2a():
    cfg = Config(dim=4, tokens=4, n_train=6, n_test=10, step=0.01, t_max=4.0, wd=0.5,
                 switch_at=2.0, teacher_norm=2.0)
    r = run(cfg)
    a_exact = 0.5 * 2.0  # hand-computed integral of the switch-off schedule
    assert r.integrated_wd == pytest.approx(a_exact, rel=1e-9)
    bal = r.curves["balancedness"]
    assert bal[-1] / bal[0] == pytest.approx(math.exp(-2 * a_exact), rel=0.02)
    # no decay: balancedness conserved (up to O(η²) per step)
    b0 = r.curves["none/balancedness"]
    assert abs(b0[-1] / b0[0] - 1) < 0.01
    # constant decay: e^{−2 α t} at every recorded time
    bc, tc = r.curves["constant/balancedness"], r.curves["constant/time"]
    np.testing.assert_allclose(bc / bc[0], np.exp(-2 * 0.5 * tc), rtol=0.03)


def test_teacher_switch_off_finds_low_rank_teacher():
    r = run(Config(seed=1))
    assert r.teacher_distance < r.teacher_distance_none < r.teacher_distance_constant
    assert r.test_loss < r.test_loss_none < r.test_loss_constant
    # rank-1 teacher: the ratio ‖M‖_*/‖M‖_F of the learned matrix is near 1
    assert r.nuclear_over_fro < 1.05 < r.nuclear_over_fro_none
    # same seed, same numbers
    assert run(Config(seed=1)).teacher_distance == r.teacher_distance
    r2 = run(Config(seed=1, compare=False))  # batching does not change the run (up to rounding)
    assert r2.teacher_distance == pytest.approx(r.teacher_distance, rel=1e-9)


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
    cfg = Config(setting="vit", steps=6, eval_every=1, lr=lr, wd=wd, max_samples=120,
                 batch_size=32, dim=8, heads=2, depth=2, compare=False)
    res = train_vit(cfg, SwitchOff(wd, 3 * lr))
    # decay seen by the optimizer before each step: on for steps 0-2, off from step 3
    np.testing.assert_array_equal(res["curves"]["weight_decay"], [wd] * 3 + [0.0] * 4)
    assert res["optimizer"].param_groups[0]["weight_decay"] == 0.0
    assert res["optimizer"].param_groups[1]["weight_decay"] == 0.0  # biases/norms never decayed
    assert res["a"] == pytest.approx(3 * lr * wd, rel=1e-12)
    np.testing.assert_allclose(res["ratios"], _head_ratios_numpy(res["model"]), rtol=1e-6)
    np.testing.assert_allclose(score_ratios(res["model"]), _head_ratios_numpy(res["model"]), rtol=1e-6)
    # constant decay keeps it on; a = steps·lr·wd
    res_c = train_vit(cfg, Constant(wd))
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
    [({"dataset": "mnist", "setting": "vit"}, "unknown dataset 'mnist'"),
     ({"patch_size": 3, "setting": "vit"}, "patch_size 3 does not divide"),
     ({"teacher_rank": 9}, "teacher_rank (9) must be <= dim (8)"),
     ({"n_train": 0}, "n_train")],
)
def test_bad_config(overrides, needle):
    with pytest.raises(MirrorflowError, match="invalid config") as err:
        make_config(get_experiment("attention").config_cls, overrides)
    assert needle in str(err.value)


def test_cli_json_and_error(tmp_path):
    runner = CliRunner()
    out = tmp_path / "att.png"
    res = runner.invoke(app, ["run", "attention", "--json", "--seed", "2", "--set", "t_max=5",
                              "--set", "n_test=20", "--plot", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["setting"] == "teacher"
    assert data["integrated_wd"] == pytest.approx(0.05 * 5)  # default wd, switch time beyond t_max
    assert out.stat().st_size > 1000
    bad = runner.invoke(app, ["run", "attention", "--set", "setting=vit", "--set", "patch_size=3"])
    assert bad.exit_code == 2
    assert "patch_size 3 does not divide" in bad.output
    assert "Traceback" not in bad.output
