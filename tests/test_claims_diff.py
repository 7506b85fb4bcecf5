"""tools/claims_diff.py: the before/after check of a refactoring's claims.json.

Hand-built pairs of files whose differences are known: equal bytes, a changed number addressed
by claim id, a reordering, an ignored key, and unreadable input.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("claims_diff", ROOT / "tools" / "claims_diff.py")
claims_diff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(claims_diff)

BEFORE = {"rule": {"seed": 0}, "claims": [
    {"id": "a/x", "verdict": "supported", "effects": [{"estimate": 0.5, "n": 5}]},
    {"id": "b/y", "verdict": "inconclusive", "effects": [], "free": ["compare"]},
]}


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(json.dumps(data, indent=2))
    return p


def test_identical_bytes_exit_0(tmp_path, capsys):
    a, b = _write(tmp_path, "a.json", BEFORE), _write(tmp_path, "b.json", BEFORE)
    assert claims_diff.main([str(a), str(b)]) == 0
    assert capsys.readouterr().out.startswith("identical (")


def test_a_changed_number_is_named_by_claim_id(tmp_path, capsys):
    after = json.loads(json.dumps(BEFORE))
    after["claims"][0]["effects"][0]["estimate"] = 0.25
    a, b = _write(tmp_path, "a.json", BEFORE), _write(tmp_path, "b.json", after)
    assert claims_diff.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "1 difference(s)" in out and "claims[a/x].effects[0].estimate: 0.5 -> 0.25" in out


def test_reordered_claims_and_ignored_keys(tmp_path, capsys):
    swapped = {**BEFORE, "claims": BEFORE["claims"][::-1]}
    a, b = _write(tmp_path, "a.json", BEFORE), _write(tmp_path, "b.json", swapped)
    assert claims_diff.main([str(a), str(b)]) == 1
    assert "same items in another order" in capsys.readouterr().out
    dropped = json.loads(json.dumps(BEFORE))
    dropped["claims"][1]["free"] = []
    c = _write(tmp_path, "c.json", dropped)
    assert claims_diff.main([str(a), str(c)]) == 1
    assert claims_diff.main([str(a), str(c), "--ignore", "free"]) == 0
    assert "only in the ignored keys free" in capsys.readouterr().out.splitlines()[-1]


def test_unreadable_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert claims_diff.main([str(bad), str(bad)]) == 2
    assert claims_diff.main([str(tmp_path / "missing.json"), str(bad)]) == 2
    assert capsys.readouterr().err.startswith("error:")
