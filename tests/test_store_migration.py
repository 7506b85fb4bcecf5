"""A results store written by mirrorflow 0.1 (schema 1) is migrated to today's experiments.

The rows below are copied from a store that mirrorflow 0.1.0's ``reproduce --quick`` wrote (the
attention teacher and ViT were one experiment with ``setting``; LoRA's ``switch_at`` was a step).
After opening, each row must carry the id that today's built-in sweep gives the same run, so a
rerun recognises it instead of running it again.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np

from mirrorflow.experiments import make_config
from mirrorflow.experiments.lora import Config as LoraConfig
from mirrorflow.sweep import ResultStore, builtin_spec, run_id
from mirrorflow.sweep.spec import config_to_dict
from mirrorflow.sweep.store import _SCHEMA

OLD_ATTENTION = {"batch_size": 128, "budget": None, "compare": False, "dataset": "digits",
                 "depth": 2, "dim": 8, "eval_every": 50, "heads": 2, "init_scale": 1.0,
                 "lr": 0.002, "max_samples": None, "n_test": 500, "n_train": 12, "patch_size": 2,
                 "schedule": "switch-off", "seed": 0, "setting": "teacher", "step": 0.5,
                 "steps": 600, "switch_at": None, "t_max": 300.0, "teacher_norm": 4.0,
                 "teacher_rank": 1, "tokens": 8, "val_fraction": 0.25, "wd": None}
OLD_LORA = {"batch_size": 8, "budget": None, "dataset": "pydoc", "eval_every": 20, "layers": 2,
            "lora_alpha": 8.0, "lr": 0.002, "max_length": 32, "model": "minilm", "n_classes": 4,
            "rank": 4, "schedule": "switch-off", "seed": 0, "steps": 200, "switch_at": 80.0,
            "target_modules": None, "threads": 1, "wd": 5.0}


def _v1_store(path, rows):
    conn = sqlite3.connect(path)
    conn.execute(_SCHEMA)
    for rid, exp, cfg, curves in rows:
        conn.execute("INSERT INTO runs (id, experiment, version, config, status, metrics, curves) "
                     "VALUES (?, ?, '0.1.0', ?, 'done', '{}', ?)", (rid, exp, json.dumps(cfg), curves))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def _builtin_id(experiment, **match):
    spec = builtin_spec(experiment, quick=True)
    run = next(r for r in spec.runs if all(r.config_dict[k] == v for k, v in match.items()))
    return run_id(experiment, run.config_dict, version="0.1.0")


def test_v1_rows_get_todays_ids_and_curves_follow(tmp_path):
    db = tmp_path / "old.sqlite"
    (tmp_path / "old.curves").mkdir()
    np.savez(tmp_path / "old.curves" / "9185533889f8e134.npz", time=np.arange(3.0))
    vit = {**OLD_ATTENTION, "setting": "vit", "schedule": "none", "seed": 1}
    _v1_store(db, [("9185533889f8e134", "attention", OLD_ATTENTION, "9185533889f8e134.npz"),
                   ("9623d64ec25071ed", "lora", OLD_LORA, None),
                   ("aaaa", "attention", vit, None),
                   ("bbbb", "toy", {"seed": 0}, None)])
    with ResultStore(db) as store:
        recs = {r.experiment: r for r in store.records()}
        att, lora, v = recs["attention"], recs["lora"], recs["vit"]
        assert att.run_id == _builtin_id("attention", seed=0, schedule="switch-off")
        assert att.config["wd"] == 0.05 and att.config["switch_at"] == 40.0
        assert "setting" not in att.config and "patch_size" not in att.config
        # today's LoRA sweeps use another task: the id is that of today's Config of the run
        lora_cfg = config_to_dict(make_config(LoraConfig, {**OLD_LORA, "switch_at": 0.16}))
        assert lora.run_id == run_id("lora", lora_cfg, version="0.1.0")
        assert lora.config["switch_at"] == 0.16  # step 80 at lr 2e-3
        assert v.config["wd"] == 1.0 and v.config["switch_at"] == 0.6 and "teacher_rank" not in v.config
        assert recs["toy"].run_id == "bbbb"  # unknown experiments are left alone
        np.testing.assert_array_equal(store.load_curves(att)["time"], np.arange(3.0))
    assert not (tmp_path / "old.curves" / "9185533889f8e134.npz").exists()
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 2
    with ResultStore(db) as store:  # opening again changes nothing
        assert {r.run_id for r in store.records()} == {att.run_id, lora.run_id, v.run_id, "bbbb"}
