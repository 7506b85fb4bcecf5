"""Issue 23, item 2: Lightning manual optimization with two optimizers (GAN-style).

Lightning counts every ``opt.step()`` in ``global_step``: with ``max_steps=12`` and both
optimizers stepped every batch, each takes 6 steps. Hand computation: with a constant learning
rate η and base decay λ, a schedule switched off after its own step S gives a = S·η·λ per
optimizer; constant decay gives 6·η·λ.
"""

import lightning as L
import pytest
import torch

from mirrorflow import MirrorflowError
from mirrorflow.schedules import training
from mirrorflow.schedules.integrations.lightning import WeightDecayCallback

G_LR, G_WD = 0.05, 0.2   # generator: AdamW
D_LR, D_WD = 0.1, 0.4    # discriminator: SGD (coupled)
MAX_STEPS = 12           # Lightning's count: both optimizers together


class _Gan(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gen = torch.nn.Linear(2, 3)
        self.disc = torch.nn.Linear(3, 1)
        self.automatic_optimization = False
        self.steps = [0, 0]
        self.logged = []

    def training_step(self, batch, batch_idx):
        (z,) = batch
        g_opt, d_opt = self.optimizers()
        fake = self.gen(z)
        d_loss = torch.nn.functional.softplus(self.disc(fake.detach())).mean()
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        self.steps[1] += 1
        g_loss = torch.nn.functional.softplus(-self.disc(fake)).mean()
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()
        self.steps[0] += 1

    def configure_optimizers(self):
        g = torch.optim.AdamW(self.gen.parameters(), lr=G_LR, weight_decay=G_WD)
        d = torch.optim.SGD(self.disc.parameters(), lr=D_LR, weight_decay=D_WD)
        return [g, d]


def _fit(cb):
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(64, 2, generator=g))
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    module = _Gan()
    trainer = L.Trainer(max_steps=MAX_STEPS, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cb])
    trainer.fit(module, loader)
    return trainer, module


def test_switch_off_with_per_optimizer_length_switches_at_each_optimizers_own_step():
    cb = WeightDecayCallback(training.switch_off(at=0.5), total_steps=[6, 6])
    trainer, module = _fit(cb)
    assert trainer.global_step == MAX_STEPS and module.steps == [6, 6]
    g, d = cb.schedulers
    assert g.steps_taken == 6 and d.steps_taken == 6
    # switched off after each optimizer's own step 3: a = 3·η·λ (hand), not 6·η·λ
    assert g.integrated == pytest.approx(3 * G_LR * G_WD, rel=1e-12)
    assert d.integrated == pytest.approx(3 * D_LR * D_WD, rel=1e-12)
    assert g.last_wd == [0.0] and d.last_wd == [0.0]
    logged = trainer.callback_metrics
    assert float(logged["integrated_wd"]) == pytest.approx(3 * G_LR * G_WD, rel=1e-6)
    assert float(logged["integrated_wd_1"]) == pytest.approx(3 * D_LR * D_WD, rel=1e-6)


def test_an_int_total_is_each_optimizers_own_length():
    cb = WeightDecayCallback(training.switch_off(at=0.5), total_steps=4)
    _fit(cb)
    g, d = cb.schedulers
    assert g.integrated == pytest.approx(2 * G_LR * G_WD, rel=1e-12)
    assert d.integrated == pytest.approx(2 * D_LR * D_WD, rel=1e-12)


def test_schedules_without_a_length_count_each_optimizers_own_steps():
    cb = WeightDecayCallback(training.switch_off(at=2))
    _fit(cb)
    g, d = cb.schedulers
    assert g.integrated == pytest.approx(2 * G_LR * G_WD, rel=1e-12)
    assert d.integrated == pytest.approx(2 * D_LR * D_WD, rel=1e-12)
    cb = WeightDecayCallback(training.constant())
    _fit(cb)
    g, d = cb.schedulers
    assert g.integrated == pytest.approx(6 * G_LR * G_WD, rel=1e-12)
    assert d.integrated == pytest.approx(6 * D_LR * D_WD, rel=1e-12)


def test_fractional_schedule_without_per_optimizer_length_is_refused_in_one_line():
    cb = WeightDecayCallback(training.switch_off(at=0.5))
    with pytest.raises(MirrorflowError) as e:
        _fit(cb)
    msg = str(e.value)
    assert "\n" not in msg and "total_steps=[6, 6]" in msg and "2 optimizers" in msg


def test_per_optimizer_total_of_the_wrong_length_is_refused():
    cb = WeightDecayCallback(training.switch_off(at=0.5), total_steps=[6, 6, 6])
    with pytest.raises(MirrorflowError, match="one step count per optimizer"):
        _fit(cb)
    with pytest.raises(MirrorflowError):
        WeightDecayCallback(training.switch_off(at=0.5), total_steps=[6, 0])


class _GanAdam(_Gan):
    def configure_optimizers(self):
        g = torch.optim.AdamW(self.gen.parameters(), lr=G_LR, weight_decay=G_WD)
        d = torch.optim.AdamW(self.disc.parameters(), lr=D_LR, weight_decay=D_WD)
        return [g, d]


def _fit_resumable(module, steps, cb, tmp_path, ckpt=None):
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(64, 2, generator=g))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, default_root_dir=tmp_path,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cb] if cb else [])
    trainer.fit(module, torch.utils.data.DataLoader(ds, batch_size=4), ckpt_path=ckpt)
    return trainer


@pytest.mark.parametrize("module_cls,ok", [(_GanAdam, True), (_Gan, False)])
def test_resume_without_mirrorflow_state_starts_each_at_its_own_step(module_cls, ok, tmp_path):
    """A checkpoint written without the callback after 12 Lightning steps (6 per optimizer):
    AdamW keeps its own step count, so each schedule starts at 6 and ``a`` counts the 4 steps
    each takes up to max_steps=20 (lower bound); plain SGD keeps none: refused in one line."""
    trainer = _fit_resumable(module_cls(), MAX_STEPS, None, tmp_path)
    ckpt = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(ckpt)
    cb = WeightDecayCallback(training.constant())
    if not ok:
        with pytest.raises(MirrorflowError) as e:
            _fit_resumable(module_cls(), 20, cb, tmp_path, ckpt=str(ckpt))
        assert "\n" not in str(e.value) and "keeps no step count" in str(e.value)
        return
    with pytest.warns(Warning, match="lower bound"):
        _fit_resumable(module_cls(), 20, cb, tmp_path, ckpt=str(ckpt))
    g, d = cb.schedulers
    assert g.counted_from == 6 and d.counted_from == 6
    assert g.steps_taken == 10 and d.steps_taken == 10
    assert g.integrated == pytest.approx(4 * G_LR * G_WD, rel=1e-12)
    assert d.integrated == pytest.approx(4 * D_LR * D_WD, rel=1e-12)
