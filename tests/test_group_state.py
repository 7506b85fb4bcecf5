"""Issue 26 (via 23, item 7): the per-group state class keeps the checkpoint format unchanged."""

import pytest
import torch

from mirrorflow.schedules import WeightDecayScheduler, training
from mirrorflow.schedules.group_state import GroupState

KEYS = {"mf_base_weight_decay", "mf_integrated_wd", "mf_wd_step", "mf_wd_counted_from",
        "mf_wd_schedule"}


def _opt():
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    return torch.optim.SGD([{"params": [w], "weight_decay": 0.5},
                            {"params": [b], "weight_decay": 0.0}], lr=0.1), w, b


def _step(opt, w, b):
    opt.zero_grad()
    (0.0 * (w.sum() + b.sum())).backward()
    opt.step()


def test_state_keys_and_values_in_the_param_groups_are_the_checkpoint_format():
    opt, w, b = _opt()
    WeightDecayScheduler(opt, training.switch_off(at=2))
    for _ in range(3):
        _step(opt, w, b)
    g0, g1 = opt.param_groups
    assert KEYS <= set(g0) and KEYS <= set(g1)
    assert g0["mf_integrated_wd"] == pytest.approx(2 * 0.1 * 0.5, rel=1e-12)  # hand: 2 steps
    assert g0["mf_wd_step"] == 3 and g1["mf_integrated_wd"] == 0.0
    assert g0["mf_wd_schedule"] == "switch_off(at=2)"
    torch.testing.assert_close(w.detach(), torch.full((3,), 0.95 ** 2, dtype=torch.float64))


def test_a_state_written_before_counted_from_existed_continues_from_step_0():
    opt, w, b = _opt()
    wd = WeightDecayScheduler(opt, training.constant())
    _step(opt, w, b)
    sd = opt.state_dict()
    wd.remove()
    for g in sd["param_groups"]:
        g.pop("mf_wd_counted_from")  # an older checkpoint
    opt2, w2, b2 = _opt()
    opt2.load_state_dict(sd)
    wd2 = WeightDecayScheduler(opt2, training.constant())
    assert wd2.counted_from == 0 and wd2.steps_taken == 1
    _step(opt2, w2, b2)
    assert wd2.integrated == pytest.approx(2 * 0.05, rel=1e-12)


def test_clear_restores_the_base_decay_and_drops_every_key():
    g = {"weight_decay": 0.0}
    st = GroupState(g)
    st.write(0.3, 0.1, 4, 0, "constant")
    st.clear()
    assert g == {"weight_decay": 0.3}
