"""Docs that cannot drift: the number tables in docs/*.md are generated from the committed
report data (docs/data/quick-report.json) by tools/docs_tables.py, and the quick run's time is
stated in one place."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "tools" / "docs_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


docs_tables = _tool()


def test_committed_docs_match_the_committed_report_data():
    assert docs_tables.doc_files(), "no generated blocks found in docs/"
    assert docs_tables.stale() == [], "run `python tools/docs_tables.py write`"


def test_every_claim_of_the_data_is_in_some_doc_table():
    data = json.loads(docs_tables.DATA.read_text(encoding="utf-8"))
    text = "\n".join(p.read_text(encoding="utf-8") for p in docs_tables.doc_files())
    tabled = [c["id"] for c in data["claims"] if not c["id"].startswith(("geometry/", "lora/"))]
    for cid in tabled:
        assert f"`{cid}`" in text, f"{cid} is in no generated table"


def _claims_json(tmp_path, effects):
    report = tmp_path / "report"
    report.mkdir()
    (report / "claims.json").write_text(json.dumps({"claims": [
        {"id": "toy/claim", "verdict": "supported", "effects": effects}]}), encoding="utf-8")
    return report


def test_collect_and_render_by_hand(tmp_path):
    report = _claims_json(tmp_path, [
        {"label": "log(err none / switch-off)", "estimate": 2.5277, "ci": [1.8567, 2.9202],
         "n": 5, "detail": "switch-off: 0.14 ± 0.085; none: 1.6 ± 0.45"},
        {"label": "ratio | a", "estimate": 0.455, "ci": None, "n": 1,
         "detail": "unequal-a difference 0.25 CI [nan, nan]"}])
    data = docs_tables.collect(report, tmp_path / "data.json",
                               {"quick": {"wall_s": 216.4, "cpu_s": 361, "machine": "M",
                                          "measured": "today"}})
    assert json.loads((tmp_path / "data.json").read_text()) == data
    table = docs_tables.render("quick-claims:toy", data)
    assert table.splitlines()[2] == (
        "| `toy/claim` | 5 | **supported** | log(err none / switch-off) = 2.53 [1.86, 2.92] "
        "(switch-off: 0.14 ± 0.085; none: 1.6 ± 0.45)<br>ratio \\| a = 0.455 CI — "
        "(unequal-a difference 0.25 CI —) |")
    assert docs_tables.render("quick-time", data) == (
        "`mirrorflow reproduce --quick` took 3 min 36 s wall (6 min 1 s of CPU, user + sys of "
        "the process tree) on M, today.\n")
    with pytest.raises(SystemExit):
        docs_tables.render("quick-claims:nothing", data)


def test_regenerate_replaces_only_the_blocks_and_is_idempotent(tmp_path):
    data = {"claims": [], "timing": {"quick": {"wall_s": 61, "cpu_s": 120, "machine": "M",
                                                "measured": "today"}}}
    text = "before\n<!-- generated:quick-time -->\nold text\n<!-- /generated -->\nafter\n"
    once = docs_tables.regenerate(text, data)
    assert once == ("before\n<!-- generated:quick-time -->\n`mirrorflow reproduce --quick` took "
                    "1 min 1 s wall (2 min 0 s of CPU, user + sys of the process tree) on M, "
                    "today.\n<!-- /generated -->\nafter\n")
    assert docs_tables.regenerate(once, data) == once


def test_check_fails_on_a_hand_edited_block(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"claims": [], "timing": {"quick": {
        "wall_s": 61, "cpu_s": 120, "machine": "M", "measured": "today"}}}))
    page = docs / "page.md"
    page.write_text("<!-- generated:quick-time -->\nabout 4 min\n<!-- /generated -->\n")
    assert docs_tables.stale(docs, data) == ["docs/page.md: quick-time"]


def test_the_quick_runs_time_is_stated_once():
    # a duration on a line about `reproduce --quick`: only in the generated block of sweeps.md
    # (docs/claims.md is left to its own rewrite and checked there)
    pattern = re.compile(r"\b\d+(\.\d+)? ?(min|minutes)\b")
    where = []
    files = [ROOT / "README.md", ROOT / "src" / "mirrorflow" / "cli.py",
             *sorted((ROOT / "docs").glob("*.md"))]
    for path in files:
        if path.name == "claims.md":
            continue
        for ln in path.read_text(encoding="utf-8").splitlines():
            if "quick" in ln and "reproduce" in ln and pattern.search(ln):
                where.append(f"{path.name}: {ln.strip()[:80]}")
    assert len(where) == 1 and where[0].startswith("sweeps.md"), where
