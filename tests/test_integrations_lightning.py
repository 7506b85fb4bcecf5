"""Lightning Trainer with a WeightDecayCallback, against a hand-written torch loop.

The reference loop sets each step's decay by hand (no mirrorflow), on the same data and
initialization; the Lightning run must end at the same weights, with ``integrated_wd`` equal to
the hand sum ``Σ η_k λ_k``.
"""

import lightning as L
import pytest
import torch

from mirrorflow import MirrorflowError
from mirrorflow.schedules import training
from mirrorflow.schedules.integrations.lightning import WeightDecayCallback

WD, LR, STEPS, SWITCH = 0.2, 0.1, 6, 3


def _data():
    """One batch of 4, repeated: Lightning may replay a partial epoch on resume, so make the
    batch order irrelevant and test only the schedule's continuation."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(4, 3, generator=g).repeat(STEPS, 1)
    return X, X @ torch.tensor([[1.0], [-2.0], [0.5]])


def _net():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def _optimizer(net):
    return torch.optim.SGD([{"params": [net.weight], "weight_decay": WD},
                            {"params": [net.bias], "weight_decay": 0.0}], lr=LR)


def _lr_sched(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


class _Module(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = _net()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.net(x) - y) ** 2).mean()

    def configure_optimizers(self):
        opt = _optimizer(self.net)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": _lr_sched(opt), "interval": "step"}}


def _fit(module, loader, steps, cb, ckpt_path=None):
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cb])
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return trainer


def _hand_loop(loader):
    """The same training by hand: decay set per step, a summed per step."""
    net = _net()
    opt = _optimizer(net)
    lrs = _lr_sched(opt)
    a_hand = 0.0
    for k, (x, y) in enumerate(loader):
        opt.param_groups[0]["weight_decay"] = WD if k < SWITCH else 0.0
        a_hand += opt.param_groups[0]["lr"] * opt.param_groups[0]["weight_decay"]
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
        lrs.step()
    return net, a_hand


@pytest.mark.parametrize("resume", [False, True])
def test_lightning_run_matches_hand_loop(resume, tmp_path):
    X, Y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=4)
    cb = WeightDecayCallback(training.switch_off(at=SWITCH))
    module = _Module()
    if resume:  # stop after 2 steps, save, and continue in a fresh Trainer/module/callback
        first = _fit(module, loader, 2, WeightDecayCallback(training.switch_off(at=SWITCH),
                                                            total_steps=STEPS))
        first.save_checkpoint(tmp_path / "half.ckpt")
        module = _Module()
        trainer = _fit(module, loader, STEPS, cb, ckpt_path=tmp_path / "half.ckpt")
        assert cb.scheduler.steps_taken == STEPS
    else:
        trainer = _fit(module, loader, STEPS, cb)
    net, a_hand = _hand_loop(loader)
    torch.testing.assert_close(module.net.weight, net.weight)
    torch.testing.assert_close(module.net.bias, net.bias)
    assert cb.scheduler.integrated == pytest.approx(a_hand, rel=1e-12)
    assert float(trainer.callback_metrics["integrated_wd"]) == pytest.approx(a_hand, rel=1e-6)
    assert float(trainer.callback_metrics["weight_decay"]) == 0.0
    assert trainer.optimizers[0].param_groups[1]["weight_decay"] == 0.0


def test_bad_input_rejected_at_construction():
    with pytest.raises(MirrorflowError, match="beyond the training length"):
        WeightDecayCallback(training.switch_off(at=10), total_steps=5)
    with pytest.raises(MirrorflowError, match="budget"):
        WeightDecayCallback(training.budget(0))


# -- issue 13: one callback per trainer; resuming a checkpoint written without mirrorflow ------

class _UsedDecay(L.Callback):
    """Registers a step pre-hook after the scheduler's: the decay each step really uses."""

    def __init__(self):
        self.used = []

    def on_train_start(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        opt.register_step_pre_hook(lambda o, a, k: self.used.append(o.param_groups[0]["weight_decay"]))


def _fit_with(module, loader, steps, callbacks, ckpt_path=None):
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    return trainer


def test_two_callbacks_are_refused_before_training():
    X, Y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=4)
    module = _Module()
    w0 = module.net.weight.detach().clone()
    cbs = [WeightDecayCallback(training.switch_off(at=SWITCH)), WeightDecayCallback(training.constant())]
    with pytest.raises(MirrorflowError, match="2 WeightDecayCallbacks; one per trainer"):
        _fit_with(module, loader, STEPS, cbs)
    torch.testing.assert_close(module.net.weight, w0, rtol=0, atol=0)


def test_resume_from_a_checkpoint_written_without_mirrorflow(tmp_path):
    from mirrorflow.schedules.scheduler import MirrorflowWarning

    X, Y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=4)
    first = _fit_with(_Module(), loader, 2, [])  # plain Lightning: constant decay, no mirrorflow
    first.save_checkpoint(tmp_path / "plain.ckpt")
    module, used = _Module(), _UsedDecay()
    cb = WeightDecayCallback(training.switch_off(at=SWITCH))
    with pytest.warns(MirrorflowWarning, match=r"step 2 is unknown.*lower bound"):
        trainer = _fit_with(module, loader, STEPS, [cb, used], ckpt_path=tmp_path / "plain.ckpt")
    # global steps 2..5: decay on for step 2 only (switch at 3), not for 3 more steps
    assert used.used == [WD, 0.0, 0.0, 0.0]
    # against the hand loop, whose first two steps also had constant decay
    net, a_hand = _hand_loop(loader)
    torch.testing.assert_close(module.net.weight, net.weight)
    lr2 = LR * 0.5  # StepLR(step_size=2, gamma=0.5) at step 2
    assert cb.scheduler.integrated == pytest.approx(lr2 * WD, rel=1e-12)  # steps >= 2 only
    assert cb.scheduler.integrated_is_lower_bound and cb.scheduler.counted_from == 2
    assert a_hand == pytest.approx(LR * WD * 2 + lr2 * WD, rel=1e-12)
    assert float(trainer.callback_metrics["wd_factor"]) == 0.0
    assert float(trainer.callback_metrics["integrated_wd_counted_from"]) == 2.0
