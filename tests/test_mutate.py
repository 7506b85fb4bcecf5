"""The mutation script's mechanics (tools/mutate.py, issue 28) on a two-line fake package: a
mutant the tests catch is killed, one they do not catch survives, a snippet no longer in the
file is stale, and the file is restored after each run. The real mutation run is not part of
the default suite (docs/testing.md)."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("mutate", ROOT / "tools" / "mutate.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mutate"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _fake(tmp_path, monkeypatch, mutate) -> Path:
    """A package ``mirrorflow.fake`` with ``f(x) = x + 1`` and one test of it, in ``tmp_path``."""
    pkg = tmp_path / "src" / "mirrorflow"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "fake.py").write_text(FAKE)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_fake.py").write_text(
        "from mirrorflow.fake import f\n\ndef test_f():\n    assert f(2) == 3\n")
    monkeypatch.setitem(mutate.TESTS, "fake.py", ["tests/test_fake.py"])
    return pkg / "fake.py"


FAKE = "def f(x):\n    return x + 1\n"


def test_a_caught_mutant_is_killed_a_missing_snippet_stale_and_the_file_restored(
        tmp_path, monkeypatch):
    mutate = _load()
    fake = _fake(tmp_path, monkeypatch, mutate)
    M = mutate.Mutation
    killed = mutate.run_one(M("K", "fake.py", "x + 1", "x - 1", "off by two"), tmp_path, 120)
    assert killed["result"] == "killed" and "test_f" in killed["by"]
    assert fake.read_text() == FAKE  # restored
    stale = mutate.run_one(M("O", "fake.py", "x * 2", "x * 3", "not there"), tmp_path, 120)
    assert stale["result"] == "stale" and fake.read_text() == FAKE
    assert mutate.check(M("O", "fake.py", "x * 2", "", ""), tmp_path) == "stale"
    assert mutate.check(M("K", "fake.py", "x + 1", "", ""), tmp_path) == "ok"


@pytest.mark.slow  # one more pytest process (~10 s on a busy machine)
def test_an_uncaught_mutant_survives(tmp_path, monkeypatch):
    mutate = _load()
    fake = _fake(tmp_path, monkeypatch, mutate)
    out = mutate.run_one(mutate.Mutation("V", "fake.py", "x + 1", "1 + x", "same sum"),
                         tmp_path, 120)
    assert out["result"] == "survived" and fake.read_text() == FAKE


def test_a_missing_file_is_stale_not_a_crash(tmp_path, monkeypatch):
    """A module renamed or split since its mutations were written (report/claims.py became a
    package) makes them stale: --list and a run report it, nothing raises."""
    mutate = _load()
    _fake(tmp_path, monkeypatch, mutate)
    gone = mutate.Mutation("G", "gone.py", "x + 1", "x - 1", "file moved")
    assert mutate.check(gone, tmp_path) == "stale"
    out = mutate.run_one(gone, tmp_path, 120)
    assert out["result"] == "stale" and out["why"] == "file missing"
    monkeypatch.setattr(mutate, "ROOT", tmp_path)
    monkeypatch.setattr(mutate, "MUTATIONS", [gone])
    assert mutate.main(["--list"]) == 0


def test_a_file_inside_a_package_uses_the_package_tests_and_module_name():
    mutate = _load()
    m = mutate.Mutation("P", "report/claims/kinds.py", "a", "b", "")
    assert mutate._module_of(m) == "claims"
    assert mutate._tests_of(m.file) == mutate.TESTS["report/claims"]


def test_the_mutation_list_covers_each_module_with_unique_ids():
    mutate = _load()
    ids = [m.id for m in mutate.MUTATIONS]
    assert len(ids) == len(set(ids))
    per_module = Counter(mutate._module_of(m) for m in mutate.MUTATIONS)
    assert set(per_module) == {"scheduler", "training", "store", "execute", "claims", "simulate"}
    assert min(per_module.values()) >= 8
    for m in mutate.MUTATIONS:
        assert m.find != m.replace
        assert all((ROOT / t.split("::")[0]).is_file() for t in mutate._tests_of(m.file))
        # every snippet still applies: a refactor that moves the code re-targets the mutation
        assert mutate.check(m) == "ok", f"{m.id} is stale: re-target it"
