"""Hugging Face Trainer + PEFT LoRA with a WeightDecayCallback: a real (tiny) training run.

Checks: the optimizer's weight_decay before and after the switch (decay group only; the no-decay
group stays 0), ``integrated_wd`` against a hand sum over the logged learning rates, logged values
seen by a later callback, and resume-from-checkpoint continuing the schedule exactly.
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from mirrorflow import MirrorflowError
from mirrorflow.schedules import training
from mirrorflow.schedules.integrations.hf import WeightDecayCallback

WD, SWITCH, STEPS = 0.1, 5, 8


class _Data(torch.utils.data.Dataset):
    def __init__(self, n=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 50, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] > 25).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long),
                "labels": self.labels[i]}


class _Recorder(TrainerCallback):
    """Reads the optimizer's param groups right before each step, and the logs it is shown."""

    def __init__(self):
        self.wd, self.logs = [], []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.wd.append([g["weight_decay"] for g in optimizer.param_groups])

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def _model():
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    base = BertForSequenceClassification(cfg)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                           task_type="SEQ_CLS"))


def _trainer(out, recorder, cb):
    args = TrainingArguments(
        output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=4, learning_rate=5e-2,
        lr_scheduler_type="linear", weight_decay=WD, logging_steps=1, save_steps=4,
        save_strategy="steps", report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
    )
    tr = Trainer(model=_model(), args=args, train_dataset=_Data(), callbacks=[recorder])
    cb.attach(tr)
    return tr


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    rec, cb = _Recorder(), WeightDecayCallback(training.switch_off(at=SWITCH), diagnostics_every=2)
    tr = _trainer(out, rec, cb)
    tr.train()
    return out, rec, cb, tr


def test_weight_decay_before_and_after_switch(full_run):
    _, rec, _, _ = full_run
    assert len(rec.wd) == STEPS
    for k, groups in enumerate(rec.wd):
        decay, no_decay = groups[0], groups[1]
        assert decay == (WD if k < SWITCH else 0.0)
        assert no_decay == 0.0


def test_integrated_wd_matches_hand_sum_over_logged_lr(full_run):
    _, rec, _, tr = full_run
    logs = [h for h in tr.state.log_history if "loss" in h]
    assert [h["step"] for h in logs] == list(range(1, STEPS + 1))
    hand = 0.0
    for k, h in enumerate(logs):
        hand += h["learning_rate"] * (WD if k < SWITCH else 0.0)
        assert h["integrated_wd"] == pytest.approx(hand, rel=1e-12)
        assert h["weight_decay"] == (WD if k < SWITCH else 0.0)
    # a callback after ours (a reporter's position) sees the values too, and the diagnostics
    seen = [entry for entry in rec.logs if "loss" in entry]
    assert seen[-1]["integrated_wd"] == pytest.approx(hand, rel=1e-12)
    assert any("diag/balancedness_mean" in entry for entry in seen)


def test_resume_from_checkpoint_continues_schedule_exactly(full_run, tmp_path):
    out, _, _, tr_full = full_run
    rec2, cb2 = _Recorder(), WeightDecayCallback(training.switch_off(at=SWITCH))
    tr = _trainer(tmp_path, rec2, cb2)
    tr.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    full = {h["step"]: h for h in tr_full.state.log_history if "loss" in h}
    resumed = [h for h in tr.state.log_history if "loss" in h and h["step"] > 4]
    assert [h["step"] for h in resumed] == [5, 6, 7, 8]
    for h in resumed:
        assert h["integrated_wd"] == full[h["step"]]["integrated_wd"]
        assert h["weight_decay"] == full[h["step"]]["weight_decay"]
        assert h["loss"] == pytest.approx(full[h["step"]]["loss"], rel=1e-5)
    assert rec2.wd == [[WD, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    for (n, p), (_, q) in zip(tr.model.named_parameters(), tr_full.model.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)


def test_bad_input_rejected_at_construction():
    with pytest.raises(MirrorflowError, match="beyond the training length"):
        WeightDecayCallback(training.switch_off(at=100), total_steps=10)
    with pytest.raises(MirrorflowError, match="callable"):
        WeightDecayCallback(3.0)
    with pytest.raises(MirrorflowError, match="pairs"):
        WeightDecayCallback(training.constant(), pairs="mlp")


def test_train_called_twice_warns_and_clear_state_restarts(tmp_path):
    """A second trainer.train() on the same Trainer keeps the optimizer (and its schedule
    state) but restarts global_step: say so, and offer a clean restart."""
    from mirrorflow.schedules.scheduler import MirrorflowWarning, clear_scheduler_state

    rec, cb = _Recorder(), WeightDecayCallback(training.switch_off(at=SWITCH))
    tr = _trainer(tmp_path, rec, cb)
    tr.train()
    with pytest.warns(MirrorflowWarning, match="at step 8 but the Trainer starts at global_step 0"):
        tr.train()
    assert rec.wd[STEPS:] == [[0.0, 0.0]] * STEPS  # continued: the switch was long past
    cb.scheduler.remove()
    clear_scheduler_state(tr.optimizer)
    rec.wd.clear()
    tr.train()
    assert [w[0] for w in rec.wd] == [WD] * SWITCH + [0.0] * (STEPS - SWITCH)
