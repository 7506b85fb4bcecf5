"""Issue 23, item 5: ``decay_param_groups`` against hand-counted models and the HF Trainer's rule."""

import pytest
import torch

from mirrorflow import MirrorflowError
from mirrorflow.schedules import WeightDecayScheduler, training
from mirrorflow.schedules.groups import decay_param_groups


class _Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(10, 4)          # 40, embedding
        self.lin1 = torch.nn.Linear(4, 8)             # 32 decayed + 8 bias
        self.ln = torch.nn.LayerNorm(8)               # 8 + 8 norm
        self.lin2 = torch.nn.Linear(8, 2, bias=False)  # 16 decayed
        self.bn = torch.nn.BatchNorm1d(8)             # 8 + 8 norm
        self.pos_embedding = torch.nn.Parameter(torch.zeros(5, 4))  # 20, embedding (by name)
        self.frozen = torch.nn.Linear(2, 2)           # frozen: 2 tensors
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight            # tied: one tensor, counted once


def _names(groups, which):
    return [g for g in groups if g["name"] == which]


def test_hand_counted_small_model():
    m = _Small()
    groups, s = decay_param_groups(m, 0.1)
    assert sorted(s.decayed) == ["lin1.weight", "lin2.weight"]
    assert s.decayed_numel == 32 + 16
    assert sorted(s.not_decayed) == sorted(["emb.weight", "lin1.bias", "ln.weight", "ln.bias",
                                            "bn.weight", "bn.bias", "pos_embedding"])
    assert s.not_decayed_numel == 40 + 8 + 16 + 16 + 20
    assert sorted(s.frozen) == ["frozen.bias", "frozen.weight"]
    assert s.reasons["emb.weight"] == "embedding" and s.reasons["pos_embedding"] == "embedding"
    assert s.reasons["ln.weight"] == "norm" and s.reasons["bn.weight"] == "norm"
    assert s.reasons["lin1.bias"] == "bias"
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert {id(p) for p in groups[0]["params"]} == {id(m.lin1.weight), id(m.lin2.weight)}
    n_trainable = len({id(p) for p in m.parameters() if p.requires_grad})
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == n_trainable == 9
    assert "on 2 tensors (48 elements" in str(s) and "2 frozen" in str(s)


def test_hf_rule_decays_embeddings():
    _, s = decay_param_groups(_Small(), 0.1, no_decay=("bias", "norm"))
    assert sorted(s.decayed) == ["emb.weight", "lin1.weight", "lin2.weight", "pos_embedding"]


def test_include_and_exclude_by_pattern_and_type():
    m = _Small()
    _, s = decay_param_groups(m, 0.1, include=[r"^emb\."])
    assert "emb.weight" in s.decayed and "pos_embedding" not in s.decayed
    _, s = decay_param_groups(m, 0.1, exclude=torch.nn.Linear)
    # lin1/lin2 weights excluded; emb.weight is tied to the Linear head, so it is excluded too
    assert s.decayed == [] and s.reasons["lin1.weight"] == "excluded"
    assert s.reasons["emb.weight"] == "excluded"
    _, s = decay_param_groups(m, 0.1, exclude="lin2")
    assert s.decayed == ["lin1.weight"]
    with pytest.raises(MirrorflowError, match="both include and exclude"):
        decay_param_groups(m, 0.1, include="lin1", exclude=torch.nn.Linear)


@pytest.mark.parametrize("bad", [dict(weight_decay=-1), dict(weight_decay=float("nan")),
                                 dict(weight_decay=0.1, no_decay=("biases",)),
                                 dict(weight_decay=0.1, exclude=["("]),
                                 dict(weight_decay=0.1, include=[3])])
def test_bad_input_is_one_line(bad):
    with pytest.raises(MirrorflowError) as e:
        decay_param_groups(_Small(), **bad)
    assert "\n" not in str(e.value)


def test_scheduler_reports_a_per_group_by_name():
    m = _Small()
    groups, _ = decay_param_groups(m, 0.5)
    opt = torch.optim.AdamW(groups, lr=0.1)
    wd = WeightDecayScheduler(opt, training.switch_off(at=3))
    x = torch.randint(0, 10, (6,))
    for _ in range(5):
        opt.zero_grad()
        h = m.bn(m.ln(m.lin1(m.emb(x))))
        (m.lin2(h).sum() + m.pos_embedding.sum()).backward()
        opt.step()
    assert wd.integrated_by_group == {"decay": pytest.approx(3 * 0.1 * 0.5, rel=1e-12),
                                      "no_decay": 0.0}


def _hf_decay_names(model):
    from transformers import Trainer

    allowed = set(Trainer.get_decay_parameter_names(None, model))
    return sorted(n for n, p in model.named_parameters() if n in allowed and p.requires_grad)


def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20, n_positions=16))


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        vocab_size=20, max_position_embeddings=16))


@pytest.mark.parametrize("make,embeddings", [
    (_tiny_gpt2, ["transformer.wpe.weight", "transformer.wte.weight"]),
    (_tiny_bert, ["bert.embeddings.position_embeddings.weight",
                  "bert.embeddings.token_type_embeddings.weight",
                  "bert.embeddings.word_embeddings.weight"]),
])
def test_matches_the_hf_trainer_rule_and_drops_only_embeddings_by_default(make, embeddings):
    model = make()
    hf = _hf_decay_names(model)
    _, s = decay_param_groups(model, 0.1, no_decay=("bias", "norm"))
    assert sorted(s.decayed) == hf
    _, s = decay_param_groups(model, 0.1)
    assert sorted(s.decayed) == sorted(set(hf) - set(embeddings))
    assert all(s.reasons[e] == "embedding" for e in embeddings)


def test_lightning_logs_a_per_named_group():
    import lightning as L

    from mirrorflow.schedules.integrations.lightning import WeightDecayCallback

    class _M(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4),
                                           torch.nn.Linear(4, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return ((self.net(x) - y) ** 2).mean()

        def configure_optimizers(self):
            groups, _ = decay_param_groups(self, 0.5)
            return torch.optim.SGD(groups, lr=0.1)

    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(32, 3, generator=g), torch.randn(32, 1, generator=g))
    trainer = L.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[WeightDecayCallback(training.switch_off(at=3))])
    trainer.fit(_M(), torch.utils.data.DataLoader(ds, batch_size=4))
    m = trainer.callback_metrics
    assert float(m["integrated_wd/decay"]) == pytest.approx(3 * 0.1 * 0.5, rel=1e-6)
    assert float(m["integrated_wd/no_decay"]) == 0.0
