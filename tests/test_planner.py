"""Issue 23, item 6: the planner against hand computations, transformers' LR schedules, and a
measured training run (the scheduler's ``integrated`` and a zero-gradient probe weight)."""

import math

import numpy as np
import pytest
import torch

from mirrorflow import MirrorflowError
from mirrorflow.schedules import WeightDecayScheduler, plan, training


def test_constant_lr_by_hand():
    p = plan("constant", peak_lr=0.01, total_steps=100, weight_decay=0.5, steps_per_epoch=10,
             target_a=0.1)
    np.testing.assert_allclose(p.a, 0.005 * np.arange(101), rtol=1e-12, atol=1e-15)
    assert p.switch_step == 20 and p.a_at_switch == pytest.approx(0.1, rel=1e-12)
    assert p.tau_steps_at_peak == pytest.approx(200.0) and p.tau_epochs_at_peak == pytest.approx(20.0)
    assert p.summary()["switch_epoch"] == pytest.approx(2.0)
    assert p.a_constant == pytest.approx(0.5, rel=1e-12)
    # n timescales elapsed = a; a reference run with constant λ_ref = 0.1: a = 0.1 · Σ η = 0.1
    assert plan("constant", peak_lr=0.01, total_steps=100, weight_decay=0.5,
                target_timescales=0.1).switch_step == 20
    assert plan("constant", peak_lr=0.01, total_steps=100, weight_decay=0.5,
                reference_weight_decay=0.1).switch_step == 20
    # a target between two steps: the first step at or past it
    assert plan("constant", peak_lr=0.01, total_steps=100, weight_decay=0.5,
                target_a=0.1001).switch_step == 21


def test_linear_warmup_by_hand():
    p = plan("linear", peak_lr=1.0, total_steps=10, warmup_steps=4, weight_decay=1.0)
    hand = [0, 0.25, 0.5, 0.75, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]
    np.testing.assert_allclose(p.lr, hand, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p.a, np.concatenate([[0], np.cumsum(hand)]), rtol=1e-12)
    assert math.isinf(p.tau_steps[0]) and p.tau_steps[4] == pytest.approx(1.0)


def test_cosine_by_hand_with_a_floor():
    p = plan("cosine", peak_lr=2.0, total_steps=4, weight_decay=0.25, min_lr_ratio=0.1)
    c = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    np.testing.assert_allclose(p.lr, [2.0 * (0.1 + 0.9 * x) for x in c], rtol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_lr_matches_transformers_schedules(kind):
    import transformers

    make = {"linear": transformers.get_linear_schedule_with_warmup,
            "cosine": transformers.get_cosine_schedule_with_warmup,
            "constant": lambda o, w, t: transformers.get_constant_schedule_with_warmup(o, w)}[kind]
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=3e-3)
    sched = make(opt, 7, 50)
    seen = []
    for _ in range(50):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    p = plan(kind, peak_lr=3e-3, total_steps=50, warmup_steps=7, weight_decay=0.1)
    np.testing.assert_allclose(p.lr, seen, rtol=1e-12, atol=1e-18)


@pytest.mark.parametrize("bad,match", [
    (dict(target_a=0.6), "more than constant decay"),
    (dict(target_a=0.1, reference_weight_decay=0.1), "one target"),
    (dict(target_a=-1), "target_a"),
    (dict(warmup_steps=100), "warmup_steps"),
    (dict(min_lr_ratio=2.0), "min_lr_ratio"),
    (dict(steps_per_epoch=0), "steps_per_epoch"),
    (dict(peak_lr=float("nan")), "peak_lr"),
])
def test_bad_input_is_one_line(bad, match):
    kw = dict(peak_lr=0.01, total_steps=100, weight_decay=0.5)
    kw.update(bad)
    with pytest.raises(MirrorflowError, match=match) as e:
        plan("constant", **kw)
    assert "\n" not in str(e.value)
    with pytest.raises(MirrorflowError, match="lr_schedule"):
        plan("step", peak_lr=0.01, total_steps=100, weight_decay=0.5)


# the worked example of docs/training.md ("Planning the switch-off")
EXAMPLE = dict(peak_lr=2e-3, total_steps=1000, warmup_steps=100, weight_decay=0.5,
               steps_per_epoch=100, reference_weight_decay=0.2)


def measured_run(switch_step, steps=1000, budget=None):
    """A tiny regression trained with AdamW under transformers' cosine schedule with warm-up
    (not the planner's), the scheduler switching the decay off at ``switch_step``; a probe
    weight with zero gradient in the decay group measures the shrinkage ∏(1 − η_k λ_k)."""
    import transformers

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 8, generator=g)
    Y = X @ torch.randn(8, 2, generator=g)
    net = torch.nn.Linear(8, 2)
    probe = torch.nn.Parameter(torch.ones(1, dtype=torch.float64))
    opt = torch.optim.AdamW([{"params": [net.weight, probe], "weight_decay": 0.5},
                             {"params": [net.bias], "weight_decay": 0.0}], lr=2e-3)
    lrs = transformers.get_cosine_schedule_with_warmup(opt, 100, steps)
    sched = training.budget(budget) if budget is not None else training.switch_off(at=switch_step)
    wd = WeightDecayScheduler(opt, sched, total_steps=steps)
    for k in range(steps):
        i = (k * 32) % 256
        opt.zero_grad()
        loss = ((net(X[i:i + 32]) - Y[i:i + 32]) ** 2).mean() + 0.0 * probe.sum()
        loss.backward()
        opt.step()
        lrs.step()
    return wd, float(probe.detach())


def test_measured_run_reaches_the_planned_a():
    p = plan("cosine", **EXAMPLE)
    assert p.switch_step == 255 and p.tau_epochs_at_peak == pytest.approx(10.0)  # docs' example
    wd, probe = measured_run(p.switch_step)
    assert wd.integrated == pytest.approx(p.a_at_switch, rel=1e-9)
    assert wd.integrated == pytest.approx(0.20081, abs=5e-6)  # docs: a = 0.20081
    # the weights say the same: a zero-gradient weight shrank by exactly ∏_{k<K}(1 − η_k λ), and
    # −log of it is a to first order (a + Σ(η_k λ)²/2 + …)
    shrink = np.prod(1 - p.lr[:p.switch_step] * 0.5)
    assert probe == pytest.approx(shrink, rel=1e-12)
    assert -math.log(probe) == pytest.approx(p.a_at_switch, rel=1e-3)
    # the reference: constant λ_ref = 0.2 through the whole run (a = 0.2 measured by the scheduler)
    assert p.target_a == pytest.approx(0.2 * p.lr.sum(), rel=1e-12)
    wd_b, _ = measured_run(None, budget=p.target_a)
    assert wd_b.integrated == pytest.approx(p.target_a, rel=1e-12)


# -- the CLI ------------------------------------------------------------------------------------

def _cli(*args, cwd=None):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(__import__("pathlib").Path(__file__).resolve().parents[1] / "src"),
         os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "mirrorflow.cli", "plan", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=env)


def test_cli_plan_json_and_figure(tmp_path):
    import json

    from typer.testing import CliRunner

    from mirrorflow.cli import app

    png = tmp_path / "plan.png"
    r = CliRunner().invoke(app, [
        "plan", "--lr-schedule", "cosine", "--peak-lr", "2e-3", "--steps", "1000", "--warmup",
        "100", "--weight-decay", "0.5", "--steps-per-epoch", "100", "--reference-wd", "0.2",
        "--plot", str(png), "--json"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["switch_step"] == 255 and out["switch_epoch"] == pytest.approx(2.55)
    assert out["tau_epochs_at_peak"] == pytest.approx(10.0)
    assert out["rows"][-1] == {"step": 1000, "lr": None, "a": pytest.approx(0.5, rel=1e-12)}
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,needle", [
    (["--peak-lr", "2e-3", "--steps", "1000", "--weight-decay", "0.5", "--target-a", "5"],
     "more than constant decay"),
    (["--peak-lr", "2e-3", "--steps", "1000"], "--weight-decay"),
    (["--peak-lr", "2e-3", "--steps", "1000", "--weight-decay", "0.5", "--plot", "x.txt"],
     "unknown format"),
    (["--peak-lr", "2e-3", "--steps", "1000", "--weight-decay", "0.5", "--lr-schedule", "step"],
     "lr_schedule"),
    (["--peak-lr", "2e-3", "--steps", "1000", "--weight-decay", "0.5", "--target-a", "0.1",
      "--reference-wd", "0.1"], "one target"),
    (["--peak-lr", "2e-3", "--steps", "1000", "--weight-decay", "0.5", "--every", "0"], "--every"),
])
def test_cli_misuse_is_one_line_exit_2(args, needle, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mirrorflow.cli import app

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["plan", *args])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_misuse_in_a_real_process_has_no_traceback(tmp_path):
    r = _cli("--peak-lr", "2e-3", "--steps", "1000", "--weight-decay", "0.5", "--target-a", "5",
             cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
