"""prepare_ahead: an experiment's one-time setup (lora-lm's pretraining) in a background process,
started before the sweeps, cached for the runs; stopped early, it leaves nothing behind."""

from __future__ import annotations

import time

import pytest

from mirrorflow.experiments import charlm, get_experiment
from mirrorflow.sweep import builtin_spec, parse_spec, prepare_ahead

pytest.importorskip("peft")


def _spec(pretrain: str, seeds: int = 2):
    return parse_spec({"experiment": "lora-lm", "name": "t",
                       "base": {"pretrain": pretrain, "n_plays": 1, "steps": 4, "eval_every": 2,
                                "switch_at": 0.02, "batch_size": 4, "eval_chars": 256},
                       "grid": {"seed": list(range(seeds))}})


def _cached(folder, name):
    return sorted(p.name for p in (folder / "charlm").glob(f"{name}-*.pt"))


def test_background_pretraining_is_cached_and_then_read(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRRORFLOW_CACHE", str(tmp_path))
    spec = _spec("tiny")
    with prepare_ahead([spec]) as started:
        assert started == ["lora-lm"]
        deadline = time.monotonic() + 120
        while not _cached(tmp_path, "tiny") and time.monotonic() < deadline:
            time.sleep(0.2)
    assert len(_cached(tmp_path, "tiny")) == 1
    # the run reads it: the cache says it was not pretrained again (seconds: just the read)
    got = charlm.load_or_pretrain("tiny")
    assert got.path.name == _cached(tmp_path, "tiny")[0]
    assert not list((tmp_path / "charlm").glob("*.tmp"))


def test_stopped_early_leaves_no_cache_and_no_lock_held(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRRORFLOW_CACHE", str(tmp_path))
    with prepare_ahead([_spec("quick")]) as started:  # a minute of pretraining: cut short
        assert started == ["lora-lm"]
        time.sleep(3)
    assert _cached(tmp_path, "quick") == []
    assert not list((tmp_path / "charlm").glob("*.tmp"))
    # the lock died with the process: the tiny model is pretrained here without waiting
    t0 = time.monotonic()
    charlm.load_or_pretrain("tiny")
    assert time.monotonic() - t0 < 60


def test_nothing_pending_or_nothing_to_prepare_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MIRRORFLOW_CACHE", str(tmp_path))
    with prepare_ahead([_spec("tiny")], pending=[]) as started:
        assert started == []
    assert get_experiment("vit").prepare is None
    with prepare_ahead([builtin_spec("vit", quick=True)]) as started:
        assert started == []
    assert not (tmp_path / "charlm").exists()


def test_ctrl_c_is_the_parents_to_handle(tmp_path, monkeypatch):
    # a terminal's Ctrl-C reaches the whole process group: the background process ignores it
    # (no traceback of its own; the parent stops it on the way out) and goes on meanwhile
    import multiprocessing
    import os
    import signal

    monkeypatch.setenv("MIRRORFLOW_CACHE", str(tmp_path))
    with prepare_ahead([_spec("tiny")]):
        (proc,) = [p for p in multiprocessing.active_children() if p.name == "mirrorflow-prepare"]
        time.sleep(1.0)  # past its start-up, with its handler set
        os.kill(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 120
        while not _cached(tmp_path, "tiny") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.exitcode in (None, 0)
    assert len(_cached(tmp_path, "tiny")) == 1
