"""Imports only go down the layers (docs/index.md, Architecture).

Every ``import mirrorflow.X`` / ``from mirrorflow.X import`` in the package, at module level or
inside a function, is read from the source with ``ast`` and checked against the layer table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mirrorflow

PKG = Path(mirrorflow.__file__).resolve().parent

#: layer of each top-level part of the package; a module may import its own layer and below
LAYERS = {
    "_core": 0,
    "geometry": 1,
    "schedules": 1,
    "dynamics": 2,
    "experiments": 3,
    "sweep": 4,
    "report": 5,
    "bench": 6,
    "cli": 7,
    "__init__": 0,
}
#: parts of one layer that must not import each other (maths stays independent of training)
INDEPENDENT = {("geometry", "schedules"), ("schedules", "geometry")}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "mirrorflow":  # from mirrorflow import X
                names = [f"mirrorflow.{a.name}" for a in node.names]
            out += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return [(ln, n) for ln, n in out if n == "mirrorflow" or n.startswith("mirrorflow.")]


def test_imports_only_go_down():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        part = rel.parts[0].removesuffix(".py")
        assert part in LAYERS, f"{rel}: add its part to LAYERS"
        for line, target in _imports(path):
            if target == "mirrorflow":
                continue
            tpart = _part(target)
            if tpart not in LAYERS:
                continue  # e.g. mirrorflow.MirrorflowError via 'from mirrorflow import'
            if LAYERS[tpart] > LAYERS[part] or (part, tpart) in INDEPENDENT:
                bad.append(f"{rel}:{line} ({part}, layer {LAYERS[part]}) imports {target} "
                           f"({tpart}, layer {LAYERS[tpart]})")
    assert not bad, "imports that run up the layers:\n" + "\n".join(bad)


def test_checker_sees_upward_imports(tmp_path):
    """The check itself can fail: a module that imports upwards is reported."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from mirrorflow.report import write_report\n")
    (line, target), = _imports(f)
    assert (line, target) == (2, "mirrorflow.report") and LAYERS[_part(target)] > LAYERS["experiments"]


def test_core_is_the_ground_floor():
    for path in (PKG / "_core").glob("*.py"):
        for _, target in _imports(path):
            assert _part(target) == "_core", f"{path.name} imports {target}"
