"""The command line: JSON output, readable table, one-line errors with exit status 2."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mirrorflow.cli import app

runner = CliRunner()
FAST = ["--set", "n=6", "--set", "d=12", "--set", "sparsity=2", "--set", "t_max=30"]


def test_run_json_reports_integrated_decay():
    res = runner.invoke(app, ["run", "sparse-regression", "--schedule", "switch-off", "--wd", "0.5",
                              "--switch-at", "2", "--seed", "1", "--json", *FAST])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["integrated_wd"] == pytest.approx(0.5 * 2)  # a = wd · switch time, by hand
    assert out["status"] == "converged"
    assert out["train_residual"] <= 1e-10


def test_run_table_and_plot(tmp_path):
    png = tmp_path / "fig.png"
    res = runner.invoke(app, ["run", "sparse-regression", "--schedule", "none", "--plot", str(png),
                              *FAST])
    assert res.exit_code == 0, res.output
    assert "recovery_error" in res.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,needle", [
    (["run", "sparse-regression", "--wd", "-1"], "wd"),
    (["run", "sparse-regression", "--wd", "nan"], "wd"),
    (["run", "sparse-regression", "--switch-at", "-3"], "switch_at"),
    (["run", "sparse-regression", "--schedule", "cosine"], "schedule"),
    (["run", "no-such-experiment"], "unknown experiment"),
    (["run", "sparse-regression", "--set", "d"], "key=value"),
    (["run", "sparse-regression", "--plot", "/no/such/dir/f.png"], "does not exist"),
])
def test_bad_input_exits_2_with_one_line_and_no_traceback(args, needle):
    proc = subprocess.run([sys.executable, "-m", "mirrorflow.cli", *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_list_shows_experiments():
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0 and "sparse-regression" in res.stdout
