"""Attention experiment (docs/theory.md §6): the teacher side (the ViT side is tests/test_vit.py).

Checks against independent computations: a numpy softmax-attention, the closed form e^{−2a} for
the balancedness, numpy SVDs of the real query/key weights, hand-built patches, and the
integrated decay computed by hand from the learning rate and the switch step.
"""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mirrorflow import MirrorflowError
from mirrorflow.cli import app
from mirrorflow.experiments import get_experiment, make_config
from mirrorflow.experiments.attention import Config, attention_forward, run


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
    r, r_none, r_const = (run(dataclasses.replace(cfg, schedule=s))
                          for s in ("switch-off", "none", "constant"))
    a_exact = 0.5 * 2.0  # hand-computed integral of the switch-off schedule
    assert r.integrated_wd == pytest.approx(a_exact, rel=1e-9)
    bal = r.curves["balancedness"]
    assert bal[-1] / bal[0] == pytest.approx(math.exp(-2 * a_exact), rel=0.02)
    # no decay: balancedness conserved (up to O(η²) per step)
    b0 = r_none.curves["balancedness"]
    assert abs(b0[-1] / b0[0] - 1) < 0.01
    # constant decay: e^{−2 α t} at every recorded time
    bc, tc = r_const.curves["balancedness"], r_const.curves["time"]
    np.testing.assert_allclose(bc / bc[0], np.exp(-2 * 0.5 * tc), rtol=0.03)


def test_teacher_switch_off_finds_low_rank_teacher():
    # the three schedules as a sweep runs them: one run each, same data and initialization
    r, none, const = (run(Config(seed=1, schedule=s)) for s in ("switch-off", "none", "constant"))
    assert r.teacher_distance < none.teacher_distance < const.teacher_distance
    assert r.test_loss < none.test_loss < const.test_loss
    # rank-1 teacher: the ratio ‖M‖_*/‖M‖_F of the learned matrix is near 1
    assert r.nuclear_over_fro < 1.05 < none.nuclear_over_fro
    # same seed, same numbers
    assert run(Config(seed=1)).teacher_distance == r.teacher_distance


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [({"teacher_rank": 9}, "teacher_rank (9) must be <= dim (8)"),
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
                              "--schedule", "constant", "--set", "n_test=20", "--plot", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["experiment"] == "attention" and data["config"]["wd"] == 0.05
    assert data["integrated_wd"] == pytest.approx(0.05 * 5)  # default wd, on until t_max
    # the default switch (t = 40) after the end of a run of t_max = 5: refused, not half applied
    half = runner.invoke(app, ["run", "attention", "--set", "t_max=5"])
    assert half.exit_code == 2 and "after the end of the run (t_max = 5)" in half.output
    assert out.stat().st_size > 1000
    bad = runner.invoke(app, ["run", "attention", "--set", "teacher_rank=9"])
    assert bad.exit_code == 2
    assert "teacher_rank (9) must be <= dim (8)" in bad.output
    assert "Traceback" not in bad.output
