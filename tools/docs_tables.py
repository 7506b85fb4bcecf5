"""Numbers in the docs from one place: the stored data of a report.

The docs' number tables live between markers ::

    <!-- generated:NAME -->
    ...  (written by this script; do not edit by hand)
    <!-- /generated -->

and are rendered from ``docs/data/quick-report.json``, a small extract of a report
(``claims.json`` of ``mirrorflow reproduce --quick``) plus the measured time of that run.

    python tools/docs_tables.py collect REPORT_DIR [--wall-s S --cpu-s S --measured TEXT]
        refresh docs/data/quick-report.json from REPORT_DIR/claims.json (keeps the timing
        unless given)
    python tools/docs_tables.py write     re-render every generated block in docs/*.md
    python tools/docs_tables.py check     exit 1 (naming the blocks) when a block differs from
                                          what the data gives; tests/test_docs.py runs it

Block names: ``quick-claims:PREFIX+PREFIX`` (the claims whose id starts with ``PREFIX/``, as a
table) and ``quick-time`` (the one statement of the quick run's time).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DATA = DOCS / "data" / "quick-report.json"
BLOCK = re.compile(r"(<!-- generated:(?P<name>[^\s>]+) -->\n)(?P<body>.*?)(<!-- /generated -->)",
                   re.S)
MISSING = "—"
_VERDICT = {"supported": "**supported**", "contradicted": "**contradicted**",
            "inconclusive": "*inconclusive*", "not evaluated": "not evaluated"}


def _num(x) -> str:
    return MISSING if x is None or not math.isfinite(x) else f"{x:.3g}"


def _ci(ci) -> str:
    if not ci or any(v is None or not math.isfinite(v) for v in ci):
        return f"CI {MISSING}"
    return f"[{_num(ci[0])}, {_num(ci[1])}]"


def _cell(text: str) -> str:
    text = re.sub(r"(?:CI )?\[nan, nan\]", f"CI {MISSING}", str(text))
    return re.sub(r"\bnan\b", MISSING, text).replace("|", "\\|").replace("\n", " ")


def collect(report: Path, data: Path = DATA, timing: dict | None = None) -> dict:
    """The extract of ``report/claims.json`` the docs are rendered from."""
    claims = json.loads((report / "claims.json").read_text(encoding="utf-8"))["claims"]
    old = json.loads(data.read_text(encoding="utf-8")) if data.is_file() else {}
    out = {
        "source": "claims.json of `mirrorflow reproduce --quick` (tools/docs_tables.py collect)",
        "timing": {**old.get("timing", {}), **(timing or {})},
        "claims": [{
            "id": c["id"], "verdict": c["verdict"],
            "pairs": max((e.get("n") or 0 for e in c["effects"]), default=0),
            "effects": [{"label": e["label"], "estimate": e.get("estimate"),
                         "ci": e.get("ci"), "n": e.get("n"), "detail": e.get("detail", "")}
                        for e in c["effects"]],
        } for c in claims],
    }
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(json.dumps(out, indent=1, ensure_ascii=False, allow_nan=False) + "\n",
                    encoding="utf-8")
    return out


def render(name: str, data: dict) -> str:
    """The body of block ``name`` (ends with a newline)."""
    kind, _, arg = name.partition(":")
    if kind == "quick-claims":
        prefixes = tuple(f"{p}/" for p in arg.split("+") if p)
        rows = [c for c in data["claims"] if c["id"].startswith(prefixes)]
        if not rows:
            raise SystemExit(f"block {name}: no claim id starts with {', '.join(prefixes)}")
        lines = ["| claim | pairs | verdict (quick) | effect [95% CI]; arms (mean ± sd) |",
                 "| --- | --- | --- | --- |"]
        for c in rows:
            eff = "<br>".join(
                f"{_cell(e['label'])} = {_num(e['estimate'])} {_ci(e['ci'])}"
                + (f" ({_cell(e['detail'])})" if e.get("detail") else "")
                for e in c["effects"])
            lines.append(f"| `{c['id']}` | {c['pairs']} | {_VERDICT.get(c['verdict'], c['verdict'])}"
                         f" | {eff} |")
        return "\n".join(lines) + "\n"
    if kind == "quick-time":
        t = data["timing"]["quick"]
        wall, cpu = round(t["wall_s"]), round(t["cpu_s"])
        return (f"`mirrorflow reproduce --quick` took {wall // 60} min {wall % 60} s wall "
                f"({cpu // 60} min {cpu % 60} s of CPU, user + sys of the process tree) on "
                f"{t['machine']}, {t['measured']}.\n")
    raise SystemExit(f"unknown generated block {name!r} (known: quick-claims:PREFIX, quick-time)")


def blocks(text: str):
    return [(m.group("name"), m.group("body")) for m in BLOCK.finditer(text)]


def regenerate(text: str, data: dict) -> str:
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("name"), data) + m.group(4), text)


def doc_files(docs: Path = DOCS) -> list[Path]:
    return sorted(p for p in docs.glob("*.md") if "<!-- generated:" in p.read_text("utf-8"))


def stale(docs: Path = DOCS, data_path: Path = DATA) -> list[str]:
    """``file: block`` of every generated block that differs from what the data gives."""
    data = json.loads(data_path.read_text(encoding="utf-8"))
    out = []
    for p in doc_files(docs):
        for name, body in blocks(p.read_text(encoding="utf-8")):
            if body != render(name, data):
                out.append(f"{p.relative_to(docs.parent)}: {name}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="refresh docs/data/quick-report.json from a report")
    c.add_argument("report", type=Path)
    c.add_argument("--wall-s", type=float)
    c.add_argument("--cpu-s", type=float)
    c.add_argument("--measured", help="when and under what load, e.g. '2026-11-28, quiet'")
    c.add_argument("--machine", default=None)
    sub.add_parser("write", help="re-render every generated block in docs/*.md")
    sub.add_parser("check", help="exit 1 when a generated block is stale")
    args = ap.parse_args(argv)
    if args.cmd == "collect":
        timing = None
        if args.wall_s is not None:
            if args.cpu_s is None or not args.measured or not args.machine:
                ap.error("--wall-s needs --cpu-s, --machine and --measured")
            timing = {"quick": {"wall_s": args.wall_s, "cpu_s": args.cpu_s,
                                "machine": args.machine, "measured": args.measured}}
        collect(args.report, timing=timing)
        print(f"wrote {DATA.relative_to(ROOT)}")
        return 0
    if args.cmd == "write":
        data = json.loads(DATA.read_text(encoding="utf-8"))
        for p in doc_files():
            text = p.read_text(encoding="utf-8")
            new = regenerate(text, data)
            if new != text:
                p.write_text(new, encoding="utf-8")
                print(f"updated {p.relative_to(ROOT)}")
        return 0
    bad = stale()
    for b in bad:
        print(f"stale generated block: {b} (run `python tools/docs_tables.py write`)",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
