"""lora-lm: the cached char-level GPT-2 pretraining, the data split and unigram baseline, the
stacked LoRA path against the plain PEFT loop, diagnostics against numpy SVD, ``a`` by hand.

Everything runs on the ``tiny`` pretraining (about a second) in a temporary cache folder
(tests/conftest.py sets ``MIRRORFLOW_CACHE``); the quick config's learning is a slow test.
"""

from __future__ import annotations

import collections
import copy
import json
import math
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mirrorflow import MirrorflowError
from mirrorflow.experiments import charlm, get_experiment
from mirrorflow.experiments.lora_lm import (
    Config,
    _lora_of,
    _lora_targets,
    _wrap_lora,
    fine_tune_peft,
    load_data,
    run,
    run_batch,
    stacked_forward,
    train_stacked,
    unigram_loss,
)

TINY = dict(pretrain="tiny", n_plays=1, steps=8, batch_size=4, eval_every=4, eval_chars=256,
            lr=0.01, wd=0.5, switch_at=0.04, rank=2)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache folder for the module: the tiny model is pretrained once."""
    return tmp_path_factory.mktemp("lora-lm") / "cache"


@pytest.fixture()
def cache(shared_cache, monkeypatch):
    monkeypatch.setenv("MIRRORFLOW_CACHE", str(shared_cache))
    return shared_cache / "charlm"


# --------------------------------------------------------------------------- pretraining cache


def test_pretraining_is_deterministic_cached_and_rebuilt_when_damaged(tmp_path, monkeypatch,
                                                                      capsys):
    cache = tmp_path / "cache" / "charlm"
    monkeypatch.setenv("MIRRORFLOW_CACHE", str(tmp_path / "cache"))
    first = charlm.load_or_pretrain("tiny")
    assert first.built and first.path.parent == cache and first.path.exists()
    # the hash is of the weights themselves: recomputed here from the model
    assert charlm.weights_hash(first.model.state_dict()) == first.weights_hash
    again = charlm.load_or_pretrain("tiny")  # a cache hit: read, not trained
    assert not again.built and again.weights_hash == first.weights_hash
    for (n, a), (_, b) in zip(first.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), n
    # same spec and seed in a fresh cache folder: trained again, the same weights
    monkeypatch.setenv("MIRRORFLOW_CACHE", str(tmp_path / "other"))
    fresh = charlm.load_or_pretrain("tiny")
    assert fresh.built and fresh.weights_hash == first.weights_hash
    # another seed gives other weights (the hash does see the difference)
    other = charlm.load_or_pretrain(charlm.PretrainSpec(**{**charlm.PRESETS["tiny"].__dict__,
                                                           "seed": 1}))
    assert other.weights_hash != first.weights_hash
    # damaged files: flipped bytes inside the weights, then a truncated file -> rebuilt
    monkeypatch.setenv("MIRRORFLOW_CACHE", str(tmp_path / "cache"))
    raw = bytearray(first.path.read_bytes())
    payload = torch.load(first.path, weights_only=True)
    w = payload["state_dict"]["transformer.h.0.attn.c_attn.weight"]
    payload["state_dict"]["transformer.h.0.attn.c_attn.weight"] = w + 1e-3
    torch.save(payload, first.path)  # loads fine, but the weights no longer match their hash
    capsys.readouterr()
    rebuilt = charlm.load_or_pretrain("tiny")
    assert rebuilt.built and rebuilt.weights_hash == first.weights_hash
    assert "damaged" in capsys.readouterr().err
    first.path.write_bytes(bytes(raw[: len(raw) // 2]))
    rebuilt = charlm.load_or_pretrain("tiny")
    assert rebuilt.built and rebuilt.weights_hash == first.weights_hash
    # no temporary files are left behind by the atomic writes
    assert sorted(p.suffix for p in cache.iterdir()) == [".lock", ".pt"]


def test_pretraining_spec_changes_the_key_and_bad_specs_fail(cache):
    spec = charlm.PRESETS["tiny"]
    digest = "0" * 64
    assert spec.key(digest) != charlm.PretrainSpec(**{**spec.__dict__, "steps": 31}).key(digest)
    assert spec.key(digest) != spec.key("1" * 64)  # other text, other model
    assert spec.key(digest) == charlm.PretrainSpec(**{**spec.__dict__, "name": "x"}).key(digest)
    with pytest.raises(MirrorflowError, match="unknown pretraining"):
        charlm.load_or_pretrain("huge")
    with pytest.raises(MirrorflowError, match="fine-tuning plays"):
        charlm.load_or_pretrain(charlm.PretrainSpec(**{**spec.__dict__, "plays": ("macbeth",)}))


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("MIRRORFLOW_CACHE", str(blocker / "sub"))
    with pytest.raises(MirrorflowError, match="MIRRORFLOW_CACHE"):
        charlm.load_or_pretrain("tiny")


def test_vocab_round_trip_and_unknown_characters():
    v = charlm.Vocab.of("abca\n")
    assert v.chars == "\nabc" and v.size == 5
    assert v.encode("cab\nz").tolist() == [4, 2, 3, 1, 0]
    assert v.decode([4, 2, 3]) == "cab"


# --------------------------------------------------------------------------- data + baseline


def test_unigram_loss_by_hand():
    # train counts a=2, b=1, c=0 over V=3 -> add-one q = (3/6, 2/6, 1/6)
    got = unigram_loss(np.array([0, 0, 1]), np.array([0, 1, 2, 2]), 3)
    want = -(math.log(3 / 6) + math.log(2 / 6) + 2 * math.log(1 / 6)) / 4
    assert got == pytest.approx(want, rel=1e-12)


def test_split_is_disjoint_and_baseline_matches_a_hand_count(cache):
    cfg = Config(**TINY)
    pre = charlm.load_or_pretrain("tiny")
    data = load_data(cfg, pre.vocab)
    text = charlm.play_text(charlm.FINETUNE_PLAYS[0])
    ids = pre.vocab.encode(text)
    chunks = [ids[i:i + 2000] for i in range(0, len(ids), 2000)]
    train = np.concatenate([c for j, c in enumerate(chunks) if j % 10 not in (4, 9)])
    val = np.concatenate([c for j, c in enumerate(chunks) if j % 10 == 4])
    assert len(data.train) == len(train) and np.array_equal(data.train.numpy(), train)
    # held-out windows are pieces of the validation chunks, never of the training text
    joined = val.tobytes()
    for w in data.val[:5].numpy():
        assert w.tobytes() in joined
    # every training window lies inside one run of training chunks
    assert int(data.starts.max()) + cfg.context <= len(train)
    # the baseline: add-one smoothed training frequencies, counted here with collections
    counts = collections.Counter(train.tolist())
    n, V = len(train), pre.vocab.size
    targets = data.val[:, 1:].numpy().ravel().tolist()
    want = -np.mean([math.log((counts.get(t, 0) + 1) / (n + V)) for t in targets])
    assert data.unigram_val == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------------------- stacked vs PEFT


def test_stacked_forward_equals_the_peft_model(cache):
    cfg = Config(**{**TINY, "target_modules": "c_attn,c_proj,c_fc"})
    pre = charlm.load_or_pretrain("tiny")
    models = [_wrap_lora(pre.model, Config(**{**TINY, "target_modules": "c_attn,c_proj,c_fc",
                                                "seed": s})) for s in (0, 1)]
    names = _lora_targets(cfg, pre.model.config.n_layer)
    g = torch.Generator().manual_seed(0)
    for m in models:  # B = 0 at PEFT's init: give every B random values
        for _A, B in _lora_of(m, names).values():
            with torch.no_grad():
                B.copy_(0.3 * torch.randn(B.shape, generator=g))
    ids = torch.randint(pre.vocab.size, (2, 3, cfg.context), generator=g)
    want = torch.stack([m.eval()(input_ids=ids[s]).logits for s, m in enumerate(models)])
    lora = {n: tuple(torch.stack([_lora_of(m, names)[n][j].detach() for m in models])
                     for j in (0, 1)) for n in names}
    base = {k: v.detach() for k, v in pre.model.state_dict().items()}
    got = stacked_forward(base, lora, cfg.lora_alpha / cfg.rank, ids, pre.spec.n_head)
    assert len(lora) == 4  # one block: c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)


def test_stacked_training_equals_separate_peft_runs(cache):
    """Three seeds with three decay schedules stacked in one model against three plain PEFT
    loops (torch AdamW + WeightDecayScheduler on the real optimizer): same losses, same decay
    at every step, same ``a``, same final factors (float32 tolerance)."""
    cfgs = [Config(**{**TINY, "seed": 0, "schedule": "switch-off"}),
            Config(**{**TINY, "seed": 1, "schedule": "constant", "wd": 2.0}),
            Config(**{**TINY, "seed": 2, "schedule": "budget", "budget": 0.03, "wd": 1.0}),
            Config(**{**TINY, "seed": 3, "schedule": "none"})]
    results, lora = train_stacked(cfgs)
    for s, cfg in enumerate(cfgs):
        model, losses, used, a, _ = fine_tune_peft(cfg, evaluate=False)
        r = results[s]
        np.testing.assert_allclose(r.curves["train_loss"], losses, rtol=2e-5)
        np.testing.assert_array_equal(r.curves["wd_used"], used if len(used) else 0.0)
        assert r.integrated_wd == pytest.approx(a, rel=1e-12)
        ref = _lora_of(model, list(lora))
        for n, (A, B) in lora.items():
            torch.testing.assert_close(A[s], ref[n][0].detach(), rtol=1e-4, atol=2e-5)
            torch.testing.assert_close(B[s], ref[n][1].detach(), rtol=1e-4, atol=2e-5)
    assert results[2].integrated_wd == pytest.approx(0.03, rel=1e-12)  # the budget is exact


def test_stacking_does_not_change_any_seed(cache):
    """run_batch (stacked) gives each seed bit for bit what its own run gives."""
    cfgs = [Config(**{**TINY, "seed": s, "schedule": sch})
            for s, sch in ((0, "switch-off"), (1, "none"), (2, "constant"))]
    together = run_batch(cfgs)
    for c, r in zip(cfgs, together):
        alone = run(c)
        np.testing.assert_array_equal(alone.curves["train_loss"], r.curves["train_loss"])
        assert alone.val_loss == r.val_loss and alone.test_loss == r.test_loss
    assert together[0].curves["train_loss"][0] != together[1].curves["train_loss"][0]  # own data


# --------------------------------------------------------------------------- a, diagnostics


def test_switch_off_integrated_decay_by_hand(cache):
    cfg = Config(**TINY)  # lr 0.01, λ 0.5 off at t = 0.04: steps 0..3 decay
    r = run(cfg)
    assert r.curves["wd_used"].tolist() == [0.5] * 4 + [0.0] * 4
    assert r.integrated_wd == pytest.approx(sum(0.01 * lam for lam in [0.5] * 4), rel=1e-12)
    assert 4 in r.curves["step"].tolist()  # evaluated at the switch
    assert r.curves["a"][-1] == pytest.approx(0.02, rel=1e-12)
    c = run(Config(**{**TINY, "schedule": "constant"}))
    assert c.integrated_wd == pytest.approx(8 * 0.01 * 0.5, rel=1e-12)
    # the declared baseline: the unigram loss, beaten 5 % below; the tiny model (pretrained 30
    # steps) is no better than unigram frequencies, so it does not beat it
    from mirrorflow.experiments.base import beats_baseline

    assert r.baseline().value == r.unigram_val and r.baseline().metric == "val_loss"
    assert r.val_loss > 0.95 * r.unigram_val
    assert beats_baseline(r) is False and r.beats_baseline is False


def test_diagnostics_equal_numpy_svd_and_peft_merge(cache):
    cfgs = [Config(**{**TINY, "seed": s}) for s in (0, 1)]
    results, lora = train_stacked(cfgs)
    scale = TINY.get("lora_alpha", 8.0) / TINY["rank"]
    for s, r in enumerate(results):
        ratios, ranks, bals = [], [], []
        for A, B in lora.values():
            a, b = A[s].double().numpy(), B[s].double().numpy()
            sv = np.linalg.svd(scale * b @ a, compute_uv=False)[: TINY["rank"]]
            ratios.append(sv.sum() / np.sqrt((sv ** 2).sum()))
            q = sv / sv.sum()
            ranks.append(np.exp(-(q * np.log(q)).sum()))
            bals.append(np.linalg.norm(b.T @ b - a @ a.T))
        assert r.nuclear_over_fro == pytest.approx(np.mean(ratios), rel=1e-6)
        assert r.effective_rank == pytest.approx(np.mean(ranks), rel=1e-6)
        assert r.balancedness == pytest.approx(np.mean(bals), rel=1e-6)
    # orientation: the update s·B A is what PEFT merges into the Conv1D weight (fan_in_fan_out)
    pre = charlm.load_or_pretrain("tiny")
    model = _wrap_lora(pre.model, cfgs[0])
    for n, (A, B) in _lora_of(model, list(lora)).items():
        with torch.no_grad():
            A.copy_(lora[n][0][0])
            B.copy_(lora[n][1][0])
    merged = dict(copy.deepcopy(model).merge_and_unload().named_parameters())
    for n, (A, B) in lora.items():
        delta = (merged[f"{n}.weight"].detach().double() - pre.model.get_parameter(
            f"{n}.weight").detach().double()).numpy()
        np.testing.assert_allclose(delta.T, scale * B[0].double().numpy() @ A[0].double().numpy(),
                                   atol=1e-6)


# --------------------------------------------------------------------------- inputs, CLI


def test_bad_inputs_give_clear_errors(cache):
    exp = get_experiment("lora-lm")
    with pytest.raises(MirrorflowError, match="block"):
        exp.make_config({"pretrain": "tiny", "block": 64})
    with pytest.raises(MirrorflowError, match="target_modules"):
        exp.make_config({"target_modules": "q_proj"})
    with pytest.raises(MirrorflowError, match="pretrain"):
        exp.make_config({"pretrain": "huge"})
    with pytest.raises(MirrorflowError, match="n_plays"):
        exp.make_config({"n_plays": 9})
    with pytest.raises(MirrorflowError, match="switch_at"):
        exp.make_config({"steps": 10, "switch_at": 5.0})
    with pytest.raises(MirrorflowError, match="differ only"):
        train_stacked([Config(**TINY), Config(**{**TINY, "steps": 9})])


def test_cli_run_json_and_plot(cache, tmp_path):
    from mirrorflow.cli import app

    fig = tmp_path / "lm.png"
    args = ["run", "lora-lm", "--json", "--plot", str(fig)]
    for k, v in TINY.items():
        args += ["--set", f"{k}={v}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["experiment"] == "lora-lm" and out["lora_pairs"] == 1
    assert out["unigram_val"] > 0 and isinstance(out["beats_baseline"], bool)
    assert fig.stat().st_size > 0
    bad = CliRunner().invoke(app, ["run", "lora-lm", "--set", "rank=0"])
    assert bad.exit_code == 2 and "rank" in bad.output


@pytest.mark.slow
def test_quick_config_learns(tmp_path, monkeypatch):
    """The quick config (default Config) ends clearly below the unigram baseline and below the
    pretrained model's own validation loss."""
    monkeypatch.setenv("MIRRORFLOW_CACHE", os.environ.get("MIRRORFLOW_SLOW_CACHE",
                                                          str(tmp_path / "cache")))
    r = run(Config(schedule="none"))
    assert r.beats_baseline and r.val_loss < r.unigram_val - 0.5
    assert r.val_loss < r.pretrained_val_loss and r.test_loss < r.unigram_test - 0.5
