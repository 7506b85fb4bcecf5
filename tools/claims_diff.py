"""Compare two ``claims.json`` files (``mirrorflow reproduce`` / ``report``) for a refactoring.

    python tools/claims_diff.py BEFORE/claims.json AFTER/claims.json [--ignore KEY ...]

A step that should change no result (docs/index.md's acceptance: "the quick report's
claims.json byte-identical before and after") is checked by running the quick report before
and after it and comparing the two files. This prints ``identical (N bytes)`` when the bytes
are equal; otherwise every JSON path whose value differs (``claims[vit/only-through-a].
effects[0].estimate: 0.12 -> 0.13``; claims are addressed by id, not position), after leaving
out the keys named by ``--ignore`` at any depth (e.g. a field whose change is intended).
Exit status: 0 when nothing but ignored keys differs, 1 otherwise, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _label(item: Any, i: int) -> str:
    return f"[{item['id']}]" if isinstance(item, dict) and "id" in item else f"[{i}]"


def differences(a: Any, b: Any, ignore: frozenset[str] = frozenset(), path: str = ""
                ) -> list[str]:
    """``"path: old -> new"`` for every leaf that differs (lists of dicts with an ``id`` are
    matched by id; keys in ``ignore`` are skipped at any depth)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k in ignore:
                continue
            sub = f"{path}.{k}" if path else str(k)
            if k not in a or k not in b:
                out.append(f"{sub}: {'missing' if k not in a else json.dumps(a[k])[:80]} -> "
                           f"{'missing' if k not in b else json.dumps(b[k])[:80]}")
            else:
                out += differences(a[k], b[k], ignore, sub)
        return out
    if isinstance(a, list) and isinstance(b, list):
        la = {_label(x, i): x for i, x in enumerate(a)}
        lb = {_label(x, i): x for i, x in enumerate(b)}
        if list(la) != list(lb) and set(la) == set(lb):
            return [f"{path}: same items in another order"]
        out = []
        for k in list(la) + [k for k in lb if k not in la]:
            if k not in la or k not in lb:
                out.append(f"{path}{k}: {'missing' if k not in la else 'present'} -> "
                           f"{'missing' if k not in lb else 'present'}")
            else:
                out += differences(la[k], lb[k], ignore, f"{path}{k}")
        return out
    if a != b or type(a) is not type(b):
        return [f"{path}: {json.dumps(a)[:80]} -> {json.dumps(b)[:80]}"]
    return []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--ignore", action="append", default=[], metavar="KEY",
                    help="a key whose value may differ (any depth; repeatable)")
    args = ap.parse_args(argv)
    try:
        raw = [p.read_bytes() for p in (args.before, args.after)]
        data = [json.loads(r) for r in raw]
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if raw[0] == raw[1]:
        print(f"identical ({len(raw[0])} bytes)")
        return 0
    diff = differences(data[0], data[1], frozenset(args.ignore))
    if not diff:
        print(f"bytes differ ({len(raw[0])} vs {len(raw[1])}), but only in the ignored keys "
              f"{', '.join(args.ignore) or '(none: formatting)'}")
        return 0 if args.ignore else 1
    print(f"{len(diff)} difference(s):")
    for line in diff:
        print("  " + line)
    return 1


if __name__ == "__main__":
    sys.exit(main())
