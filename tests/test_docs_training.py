"""Every ``python`` code block of docs/training.md runs as written (issue 23, item 4)."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
HEAVY = ("transformers", "lightning", "peft")


def _params():
    for i, b in enumerate(BLOCKS):
        heavy = any(f"import {h}" in b or f"from {h}" in b for h in HEAVY)
        yield pytest.param(b, id=f"block{i}", marks=[pytest.mark.slow] if heavy else [])


def test_the_doc_has_code_blocks():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("block", list(_params()))
def test_code_block_runs(block, tmp_path, monkeypatch, capsys):
    import torch

    torch.manual_seed(0)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(DOC), "exec"), {"__name__": "__docs__"})
    out = capsys.readouterr().out
    if "plan(" in block:  # the worked example prints the numbers the prose quotes
        assert out.split()[:1] == ["255"] and out.split()[1].startswith("0.2008")
    if "training.budget(0.05)" in block:
        assert abs(float(out.split()[-1]) - 0.05) < 1e-12
