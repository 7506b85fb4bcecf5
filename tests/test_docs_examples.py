"""Runs the worked example of docs/index.md ("Extending"): a new Legendre family and a new
continuous schedule, each in the file that defines it, through effects, simulation and the
implicit bias. Every printed line must equal the ``# ...`` line written under its ``print``."""

import contextlib
import io
import re
from pathlib import Path

from mirrorflow.geometry.family import FAMILIES
from mirrorflow.schedules.continuous import SCHEDULES

DOC = Path(__file__).resolve().parents[1] / "docs" / "index.md"


def _blocks():
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Extending"):]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def _expected(blocks):
    out = []
    for block in blocks:
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if line.lstrip().startswith("print(") and i + 1 < len(lines):
                nxt = lines[i + 1].strip()
                assert nxt.startswith("# "), f"print without its expected output: {line}"
                out.append(nxt[2:].split("   ")[0].strip())
    return out


def test_worked_example_of_a_new_family_and_a_new_schedule_runs_as_documented():
    blocks = _blocks()
    assert len(blocks) == 3
    want = _expected(blocks)
    assert len(want) == 5
    saved_f, saved_s = dict(FAMILIES), dict(SCHEDULES)
    ns: dict = {}
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            for block in blocks:
                exec(compile(block, str(DOC), "exec"), ns)
        assert "shrinking-quadratic" in FAMILIES and "fading" in SCHEDULES
    finally:
        FAMILIES.clear()
        FAMILIES.update(saved_f)
        SCHEDULES.clear()
        SCHEDULES.update(saved_s)
    assert buf.getvalue().splitlines() == want
