"""Sweep specs: expansion, stable run ids, and malformed specs rejected with the field's name."""

from __future__ import annotations

import hashlib
import json

import pytest

import mirrorflow
from mirrorflow import MirrorflowError
from mirrorflow.experiments import REGISTRY
from mirrorflow.sweep import builtin_specs, load_spec, parse_spec, run_id

EXP = "sparse-regression"


def _spec(**tables):
    return {"experiment": EXP, **tables}


def test_grid_times_zip_expands_to_hand_listed_runs():
    spec = parse_spec(_spec(base={"n": 10, "d": 20},
                            grid={"seed": [0, 1], "wd": [0.1, 0.3]},
                            zip={"schedule": ["none", "switch-off"], "switch_at": [0.0, 5.0]}))
    got = {(r.config.seed, r.config.wd, r.config.schedule, r.config.switch_at) for r in spec.runs}
    expected = {(s, w, sch, sw) for s in (0, 1) for w in (0.1, 0.3)
                for sch, sw in (("none", 0.0), ("switch-off", 5.0))}
    assert got == expected and len(spec.runs) == 8
    assert all(r.config.n == 10 and r.config.d == 20 for r in spec.runs)
    assert len(set(spec.run_ids)) == 8


def test_run_id_is_sha256_of_canonical_config_and_version():
    spec = parse_spec(_spec(base={"seed": 3, "n": 12, "d": 30}))
    (run,) = spec.runs
    # recompute by hand: every field of the Config (defaults included), sorted keys, + version
    cfg = {f: getattr(run.config, f) for f in run.config.__dataclass_fields__}
    payload = {"experiment": EXP, "config": cfg, "version": mirrorflow.__version__}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert run.run_id == hashlib.sha256(text.encode()).hexdigest()[:16]
    # defaults given explicitly or implicitly: the same run; other version: another id
    explicit = parse_spec(_spec(base={"seed": 3, "n": 12, "d": 30, "wd": 0.2, "u0": 1}))
    assert explicit.run_ids == spec.run_ids
    assert run_id(EXP, run.config_dict, version="0.0.0-other") != run.run_id


def test_cases_are_a_union_and_equal_runs_count_once():
    spec = parse_spec(_spec(grid={"seed": [0, 1]},
                            case=[{"base": {"schedule": "none"}},
                                  {"base": {"schedule": "constant"}, "grid": {"wd": [0.1, 0.2]}},
                                  {"base": {"schedule": "none"}}]))  # duplicate of case 0
    got = sorted((r.config.schedule, r.config.wd, r.config.seed) for r in spec.runs)
    assert got == sorted([("none", 0.2, 0), ("none", 0.2, 1)]
                         + [("constant", w, s) for w in (0.1, 0.2) for s in (0, 1)])


@pytest.mark.parametrize("raw, words", [
    (_spec(grid={"not_a_field": [1, 2]}), ["grid.not_a_field", "unknown field"]),
    (_spec(base={"wd": "lots"}), ["base.wd", "lots"]),
    (_spec(grid={"seed": [0, "one"]}), ["grid.seed", "one"]),
    (_spec(grid={"seed": []}), ["grid.seed", "empty"]),
    (_spec(zip={"seed": [0, 1], "wd": [0.1]}), ["seed has 2", "wd has 1"]),
    (_spec(grid={"seed": 3}), ["grid.seed", "list"]),
    (_spec(base={"seed": 1}, grid={"seed": [1]}), ["'seed'", "[base]", "[grid]"]),
    (_spec(gird={"seed": [1]}), ["gird"]),
    ({"experiment": "no-such-experiment"}, ["no-such-experiment"]),
    (_spec(case=[{"base": {"schedule": "sometimes"}}]), ["case[0]", "base.schedule", "sometimes"]),
    (_spec(base={"sparsity": 50, "d": 10}), ["sparsity", "d"]),
])
def test_malformed_specs_name_the_field(raw, words):
    with pytest.raises(MirrorflowError) as info:
        parse_spec(raw)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_load_spec_reads_toml_and_reports_bad_files(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('experiment = "sparse-regression"\n[grid]\nseed = [0, 1, 2]\n'
                    '[zip]\nschedule = ["none", "constant"]\nt_max = [10, 20.5]\n')
    spec = load_spec(path)
    assert spec.name == "grid" and spec.experiment == EXP
    assert sorted((r.config.seed, r.config.schedule, r.config.t_max) for r in spec.runs) == sorted(
        (s, sch, t) for s in (0, 1, 2) for sch, t in (("none", 10.0), ("constant", 20.5)))
    bad = tmp_path / "bad.toml"
    bad.write_text("experiment = \n")
    with pytest.raises(MirrorflowError, match="not valid TOML"):
        load_spec(bad)
    with pytest.raises(MirrorflowError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")


def test_builtin_quick_sweeps_compare_the_three_schedules():
    specs, skipped = builtin_specs(quick=True)
    assert {s.experiment for s in specs} | set(skipped) == set(REGISTRY)
    assert EXP in {s.experiment for s in specs}
    for spec in specs:
        schedules = {r.config_dict.get("schedule") for r in spec.runs}
        assert {"none", "constant", "switch-off"} <= schedules, spec.name
        assert len({r.config_dict.get("seed") for r in spec.runs}) >= 2, spec.name
    full, _ = builtin_specs(quick=False)
    assert all(len(f.runs) >= len(q.runs) for f, q in zip(full, specs))
