"""Sparse coding: codes vs scikit-learn's Lasso, dictionary learning, data loaders, CLI."""

import json

import numpy as np
import pytest
from sklearn.decomposition import sparse_encode
from sklearn.linear_model import Lasso
from typer.testing import CliRunner

from mirrorflow import MirrorflowError
from mirrorflow.cli import app
from mirrorflow.experiments import get_experiment
from mirrorflow.experiments.data import image_patches, load_olivetti_faces
from mirrorflow.experiments.sparse_coding import Config, encode, learn_dictionary
from mirrorflow.schedules.continuous import ConstantDecay, SwitchOffDecay


def _problem(seed=0, n=12, m=10, K=16):
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(m, K))
    D /= np.linalg.norm(D, axis=0)
    P = rng.normal(size=(n, m))
    return P, D


def _lasso_reference(P, D, lam):
    # sklearn's Lasso minimizes (1/(2 n)) ||p - D c||² + alpha ||c||₁ with n = rows of D
    m = D.shape[0]
    model = Lasso(alpha=lam / m, fit_intercept=False, tol=1e-12, max_iter=200_000)
    return np.stack([model.fit(D, p).coef_.copy() for p in P])


def test_ista_matches_sklearn_sparse_encode():
    P, D = _problem()
    lam = 0.3
    step = 1.0 / np.linalg.norm(D, 2) ** 2
    C, a = encode(P, D, "ista", ConstantDecay(lam), step=step, n_steps=20_000)
    ref = sparse_encode(P, D.T, algorithm="lasso_cd", alpha=lam, max_iter=100_000)
    assert np.abs(C - ref).max() < 1e-6
    assert np.abs(C - _lasso_reference(P, D, lam)).max() < 1e-6
    assert a == pytest.approx(lam * step * 20_000, rel=1e-12)
    assert (C == 0).mean() > 0.2  # the Lasso codes are genuinely sparse here


# power k >= 2 is left out on purpose: u = 0 is then a (degenerate) stationary point of every
# coordinate, and a code that shrank early cannot regrow in reasonable time (see the docs page)
@pytest.mark.parametrize(("codes", "k"), [("uv", 1), ("power", 1)])
def test_reparameterized_codes_with_constant_decay_converge_to_lasso(codes, k):
    # theory §5: decay always on -> stationary point of the Lasso with λ = decay
    P, D = _problem(seed=1, n=6)
    lam = 0.3
    ref = _lasso_reference(P, D, lam)
    step = 0.2 / np.linalg.norm(D, 2) ** 2
    C, _ = encode(P, D, codes, ConstantDecay(lam), step=step, n_steps=40_000, k=k)
    assert np.abs(C - ref).max() < 2e-3
    big = np.abs(ref) > 0.05
    assert np.array_equal(np.sign(C[big]), np.sign(ref[big]))


def test_switch_off_codes_interpolate_with_smaller_l1_than_no_decay():
    # overcomplete D (K > m): after the switch the codes fit p exactly; the decay phase leaves a
    # sparser (smaller-L1) interpolant behind than no decay (theory §3: bias moves L2 -> L1)
    P, D = _problem(seed=2, n=20, m=8, K=20)
    step = 0.1 / np.linalg.norm(D, 2) ** 2
    C0, a0 = encode(P, D, "uv", None, step=step, n_steps=60_000)
    C1, a1 = encode(P, D, "uv", SwitchOffDecay(0.5, 200 * step), step=step, n_steps=60_000)
    for C in (C0, C1):
        assert np.abs(C @ D.T - P).max() < 1e-4
    assert a0 == 0.0
    assert a1 == pytest.approx(0.5 * 200 * step, rel=1e-9)
    assert np.abs(C1).sum() < np.abs(C0).sum()


def _small_cfg(**kw):
    base = dict(n_train=120, n_test=40, atoms=12, iterations=300, batch_size=32, log_every=50,
                switch_at=5.0, wd=0.05, step=0.05)
    base.update(kw)
    return Config(**base)


def test_learn_dictionary_is_seeded_and_consistent():
    P = image_patches(160, 4, seed=3)
    cfg = _small_cfg(seed=3)
    r1 = learn_dictionary(P[:120], P[120:], cfg)
    r2 = learn_dictionary(P[:120], P[120:], cfg)
    assert r1.train_mse == r2.train_mse and r1.l1_norm == r2.l1_norm
    assert r1.status == "ok" and r1.iterations == 300
    assert r1.integrated_wd == pytest.approx(0.05 * 5.0, rel=1e-9)  # a = wd · switch time
    mse = r1.curves["train_mse"]
    assert mse[-1] < 0.1 * mse[0]  # codes start at 0: initial MSE is the data's mean square
    assert mse[0] == pytest.approx(np.mean(P[:120] ** 2), rel=1e-12)


def test_learn_dictionary_ista_constant_has_sparse_codes_and_nuclear_norm():
    P = image_patches(160, 4, seed=4)
    r = learn_dictionary(P[:120], P[120:], _small_cfg(codes="ista", schedule="constant", wd=0.1))
    assert r.sparsity > 0.3
    assert r.nuclear_norm > 0 and np.isfinite(r.test_mse)


def test_power_codes_diverge_reported_not_raised():
    P = image_patches(160, 4, seed=5)
    r = learn_dictionary(P[:120], P[120:], _small_cfg(codes="power", k=6, step=5.0))
    assert r.status == "diverged" and r.iterations < 300


def test_bad_inputs_give_clear_errors():
    exp = get_experiment("sparse-coding")
    with pytest.raises(MirrorflowError, match="k"):
        exp.make_config({"k": 0})
    with pytest.raises(MirrorflowError, match="atoms"):
        exp.make_config({"atoms": 0})
    with pytest.raises(MirrorflowError, match="non-empty"):
        learn_dictionary(np.zeros((0, 16)), np.ones((3, 16)), _small_cfg())
    with pytest.raises(MirrorflowError, match="non-empty"):
        encode(np.zeros((0, 4)), np.eye(4))
    with pytest.raises(MirrorflowError, match="k must be"):
        encode(np.ones((2, 4)), np.eye(4), "power", k=0)
    with pytest.raises(MirrorflowError, match="patch_size=8"):
        image_patches(10, 6, source="digits")


def test_image_patches_are_normalized_and_seeded():
    P = image_patches(50, 5, seed=0)
    assert P.shape == (50, 25)
    assert np.allclose(P.mean(axis=1), 0, atol=1e-12)
    assert np.mean(np.sum(P**2, axis=1)) == pytest.approx(1.0)
    assert np.array_equal(P, image_patches(50, 5, seed=0))
    assert not np.array_equal(P, image_patches(50, 5, seed=1))
    assert image_patches(30, 8, source="digits").shape == (30, 64)


def test_olivetti_loader_offline(tmp_path):
    with pytest.raises(MirrorflowError, match="not available offline"):
        load_olivetti_faces(tmp_path / "empty", download_if_missing=False)
    # a fake cache in scikit-learn's own format is read by the real fetcher
    import joblib
    from sklearn.datasets._base import _pkl_filepath

    faces = np.random.default_rng(0).integers(0, 256, size=(4096, 400)).astype(np.uint8)
    joblib.dump(faces, _pkl_filepath(str(tmp_path), "olivetti.pkz"))
    X = load_olivetti_faces(tmp_path, download_if_missing=False)
    assert X.shape == (400, 4096)
    assert X.min() == 0.0 and X.max() == 1.0
    P = image_patches(20, 64, source="olivetti", data_home=tmp_path)
    assert P.shape == (20, 4096)


def test_cli_json_and_errors(tmp_path):
    runner = CliRunner()
    fig = tmp_path / "sc.png"
    res = runner.invoke(app, ["run", "sparse-coding", "--json", "--seed", "1", "--wd", "0.05",
                              "--switch-at", "1.5", "--set", "iterations=60", "--set", "n_train=60", "--set", "n_test=20",
                              "--set", "atoms=10", "--set", "patch_size=4", "--plot", str(fig)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["experiment"] == "sparse-coding" and out["iterations"] == 60
    assert fig.stat().st_size > 0
    bad = runner.invoke(app, ["run", "sparse-coding", "--set", "k=0"])
    assert bad.exit_code == 2 and "k" in bad.output and "Traceback" not in bad.output


def test_setting_fields_authors_init_alpha_convention_and_raw_data():
    """The authors' setting, checked against hand computations: raw digits are the pixel values
    / 16; their init has u^{2k} = v^{2k} = ½; their α is twice ours for power codes (the
    integrated decay halves) and equal for u ⊙ v codes."""
    from sklearn.datasets import load_digits

    raw = image_patches(20, 8, source="digits", seed=3, normalize=False)
    data = load_digits().data / 16.0
    idx = np.random.default_rng(3).permutation(len(data))[:20]
    assert np.array_equal(raw, data[idx])
    base = dict(source="digits", patch_size=8, n_train=40, n_test=10, atoms=8, iterations=5,
                step=0.01, schedule="constant", wd=0.2, normalize="raw", log_every=5)
    for k in (1, 2, 3):
        c = Config(**base, codes="power", k=k, init="authors")
        assert c.power_u0 ** (2 * k) == pytest.approx(0.5, rel=1e-12)
        # matched speed: 8k² u0^{4k−2} = init_scale² at c = 0 (module docstring)
        m = Config(**base, codes="power", k=k, init_scale=1.5)
        assert 8 * k * k * m.power_u0 ** (4 * k - 2) == pytest.approx(1.5**2, rel=1e-12)
    exp = get_experiment("sparse-coding")
    ours = exp.run(exp.make_config({**base, "codes": "power", "k": 2}))
    theirs = exp.run(exp.make_config({**base, "codes": "power", "k": 2,
                                      "wd_convention": "authors"}))
    assert ours.integrated_wd == pytest.approx(5 * 0.01 * 0.2, rel=1e-12)
    assert theirs.integrated_wd == pytest.approx(ours.integrated_wd / 2, rel=1e-12)
    uv = exp.run(exp.make_config({**base, "codes": "uv", "wd_convention": "authors"}))
    assert uv.integrated_wd == pytest.approx(ours.integrated_wd, rel=1e-12)
    with pytest.raises(MirrorflowError, match="init='authors'"):
        exp.make_config({"codes": "uv", "init": "authors"})
