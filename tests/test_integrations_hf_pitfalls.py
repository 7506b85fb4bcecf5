"""Issue 13 workflows in a real Hugging Face Trainer: MiniLM (offline weights) + PEFT LoRA.

A recorder registers an optimizer step pre-hook *after* the scheduler's, so it sees the decay and
learning rate each step really uses; the checks compare the callback's log rows and the switch
point against that record (a hand sum), never against the scheduler's own numbers.
"""

import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from mirrorflow import MirrorflowError
from mirrorflow.experiments.data import minilm_path
from mirrorflow.schedules import training
from mirrorflow.schedules.integrations.hf import WeightDecayCallback
from mirrorflow.schedules.scheduler import MirrorflowWarning, unwrap_optimizer

WD, STEPS = 0.1, 20


class _Data(torch.utils.data.Dataset):
    def __init__(self, n=40, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1000, 2000, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] > 1500).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long),
                "labels": self.labels[i]}


class _Recorder(TrainerCallback):
    """Records (lr, weight_decay) of the LoRA group as each optimizer step uses them."""

    def __init__(self):
        self.used, self.logs, self._hook = [], [], None

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        if self._hook is not None:
            self._hook.remove()
        self.global_start = state.global_step

        def hook(opt, a, k):
            g = opt.param_groups[0]
            self.used.append((float(g["lr"]), float(g["weight_decay"])))
        self._hook = unwrap_optimizer(optimizer).register_step_pre_hook(hook)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def _minilm_lora():
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm_path()), num_labels=2)
    model.bert.encoder.layer = model.bert.encoder.layer[:1]  # one block: fast on CPU
    model.config.num_hidden_layers = 1
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                            task_type="SEQ_CLS"))


def _trainer(out, callbacks=(), save_steps=7, steps=STEPS):
    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-2,
        lr_scheduler_type="linear", weight_decay=WD, logging_steps=1, save_steps=save_steps,
        save_strategy="steps", report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
    )
    return Trainer(model=_minilm_lora(), args=args, train_dataset=_Data(), callbacks=list(callbacks))


def _decay_steps(rec):
    return [k for k, (_, wd) in enumerate(rec.used) if wd > 0]


def test_attach_twice_is_one_callback_and_a_second_callback_is_refused(tmp_path):
    rec = _Recorder()
    tr = _trainer(tmp_path, [rec])
    cb = WeightDecayCallback(training.switch_off(at=5))
    cb.attach(tr)
    cb.attach(tr)  # the same cell run again: still one callback
    assert sum(isinstance(c, WeightDecayCallback) for c in tr.callback_handler.callbacks) == 1
    with pytest.raises(MirrorflowError, match=r"already has a WeightDecayCallback.*replace=True"):
        WeightDecayCallback(training.switch_off(at=5)).attach(tr)
    cb2 = WeightDecayCallback(training.switch_off(at=5)).attach(tr, replace=True)
    assert [c for c in tr.callback_handler.callbacks if isinstance(c, WeightDecayCallback)] == [cb2]
    tr.train()
    assert _decay_steps(rec) == [0, 1, 2, 3, 4]  # switched off at step 5, not after 2-3 steps
    assert cb2.scheduler.steps_taken == STEPS


def test_two_callbacks_in_the_constructor_fail_loudly_before_any_step(tmp_path):
    rec = _Recorder()
    cbs = [WeightDecayCallback(training.switch_off(at=5)), WeightDecayCallback(training.budget(0.01))]
    tr = _trainer(tmp_path, [*cbs, rec])
    with pytest.raises(MirrorflowError, match=r"already scheduled.*one WeightDecayScheduler per optimizer"):
        tr.train()
    assert rec.used == []


def test_log_rows_describe_the_last_step_taken(tmp_path):
    rec = _Recorder()
    tr = _trainer(tmp_path, [rec])
    cb = WeightDecayCallback(training.switch_off(at=5)).attach(tr)
    tr.train()
    rows = [h for h in tr.state.log_history if "loss" in h]
    assert [h["step"] for h in rows] == list(range(1, STEPS + 1))
    a = 0.0
    for h in rows:
        lr, wd = rec.used[h["step"] - 1]  # the step that brought global_step to h["step"]
        a += lr * wd
        assert h["weight_decay"] == wd
        assert h["wd_factor"] == (1.0 if h["step"] <= 5 else 0.0)
        assert h["integrated_wd"] == pytest.approx(a, rel=1e-12)
    switch_row = next(h for h in rows if h["step"] == 5)
    assert (switch_row["weight_decay"], switch_row["wd_factor"]) == (WD, 1.0)
    assert "integrated_wd_counted_from" not in rows[-1]
    assert cb.scheduler.integrated == pytest.approx(a, rel=1e-12)


def test_resume_from_a_checkpoint_written_without_mirrorflow(tmp_path):
    plain = _trainer(tmp_path / "plain", save_steps=7)
    plain.train()  # constant decay, no mirrorflow: checkpoint-7 has no scheduler state
    rec = _Recorder()
    tr = _trainer(tmp_path / "resumed", [rec])
    cb = WeightDecayCallback(training.switch_off(at=0.5)).attach(tr)
    with pytest.warns(MirrorflowWarning, match=r"step 7 is unknown.*lower bound"):
        tr.train(resume_from_checkpoint=str(tmp_path / "plain" / "checkpoint-7"))
    assert rec.global_start == 7 and len(rec.used) == STEPS - 7
    # decay on for global steps 7, 8, 9 (switch at 0.5 · 20 = 10), off from step 10
    assert [wd for _, wd in rec.used] == [WD] * 3 + [0.0] * (STEPS - 10)
    hand = sum(lr * wd for lr, wd in rec.used)
    assert cb.scheduler.integrated == pytest.approx(hand, rel=1e-12)
    rows = [h for h in tr.state.log_history if "loss" in h and h["step"] > 7]
    assert all(h["integrated_wd_counted_from"] == 7.0 for h in rows)
    assert rows[-1]["integrated_wd"] == pytest.approx(hand, rel=1e-12)


def test_resume_from_a_mirrorflow_checkpoint_stays_exact_and_silent(tmp_path):
    first = _trainer(tmp_path / "a", save_steps=7)
    WeightDecayCallback(training.switch_off(at=0.5)).attach(first)
    first.train()
    rec = _Recorder()
    tr = _trainer(tmp_path / "b", [rec])
    cb = WeightDecayCallback(training.switch_off(at=0.5)).attach(tr)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MirrorflowWarning)
        tr.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-7"))
    assert [wd for _, wd in rec.used] == [WD] * 3 + [0.0] * (STEPS - 10)
    full = {h["step"]: h for h in first.state.log_history if "loss" in h}
    assert cb.scheduler.integrated == full[STEPS]["integrated_wd"]
    assert not cb.scheduler.integrated_is_lower_bound
