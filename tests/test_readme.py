"""The README's code blocks work as written: its Python blocks run (their printed numbers checked
against hand computations), every `mirrorflow ...` command of its shell blocks parses (run with
``--help`` appended), and the extras its pip commands name exist."""

from __future__ import annotations

import contextlib
import io
import math
import re
import shlex
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON = re.findall(r"```python\n(.*?)```", README, re.S)
SHELL = re.findall(r"```bash\n(.*?)```", README, re.S)


def _commands(prefix: str) -> list[list[str]]:
    out = []
    for block in SHELL:
        for line in block.splitlines():
            for part in line.split("#", 1)[0].split("&&"):
                words = shlex.split(part)
                if words[:len(prefix.split())] == prefix.split():
                    out.append(words)
    return out


def _run(block: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    return buf.getvalue()


def test_readme_has_the_blocks_this_test_runs():
    assert len(PYTHON) == 2 and _commands("mirrorflow")


def test_implicit_bias_block_prints_the_scale_e_minus_2a():
    (block,) = [b for b in PYTHON if "implicit_bias" in b]
    rows = [ln.split() for ln in _run(block).strip().splitlines()]
    assert [float(r[0]) for r in rows] == [0.0, 4.0]
    for a, err, scale in ((float(x) for x in r) for r in rows):
        # x = u⊙v from u0 = 1, v0 = 0: the scale of R_a is u0² e^{−2a} (theory §3)
        assert scale == pytest.approx(math.exp(-2 * a), rel=1e-9)
        assert err >= 0
    # decay makes the minimizer sparser, closer to the sparse teacher (theory §5)
    assert float(rows[1][1]) < float(rows[0][1])


def test_training_block_runs_and_spends_the_budget():
    (block,) = [b for b in PYTHON if "WeightDecayScheduler" in b]
    assert "import torch" in block  # copied alone, it must run
    a, last = _run(block).split(maxsplit=1)
    # 1000 AdamW steps of lr 1e-3 at λ = 0.1 could integrate 0.1; the budget stops it at 0.05
    assert float(a) == pytest.approx(0.05, rel=1e-9)
    assert last.strip() == "[0.0]"


@pytest.mark.parametrize("words", _commands("mirrorflow"), ids=" ".join)
def test_every_mirrorflow_command_parses(words):
    proc = subprocess.run([sys.executable, "-m", "mirrorflow.cli", *words[1:], "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and words[1] in proc.stdout


def test_pip_commands_name_existing_extras():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                 ["optional-dependencies"])
    named = {e for words in _commands("pip install") for w in words
             for e in re.findall(r'\.\[([\w,]+)\]', w) for e in e.split(",")}
    assert named and named <= extras, named - extras
    # the tests' command must find pytest-xdist through the test extra (addopts use -n)
    test_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["test"]
    assert any(d.startswith("pytest-xdist") for d in test_extra)
