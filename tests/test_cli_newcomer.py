"""What a newcomer meets first: --version, the fields of `run NAME --help`, a folder given as
the results database, bench output in a file, help text, `list` piped, progress in a log."""

import io
import re
import subprocess
import sys
import time

import pytest
from rich.console import Console
from typer.testing import CliRunner

import mirrorflow
from mirrorflow._core.progress import LineProgress, format_seconds, progress_bar
from mirrorflow.cli import app, bench_table, print_unfolded
from mirrorflow.experiments import REGISTRY

runner = CliRunner()


def _cli(*args, columns=80, timeout=120):
    """The installed command as a newcomer pipes it: stdout and stderr not terminals."""
    env = {**__import__("os").environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "mirrorflow.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_version_prints_the_package_version_and_exits_0():
    proc = _cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"mirrorflow {mirrorflow.__version__}"
    # the version in pyproject comes from the same attribute (one place)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", mirrorflow.__version__)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_run_name_help_lists_every_config_field_with_a_description(name):
    res = runner.invoke(app, ["run", name, "--help"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    fields = REGISTRY[name].config_cls.__pydantic_fields__
    for fname, info in fields.items():
        # every field has a description of its own, shown on the field's row
        assert info.description, f"{name}.{fname} has no Field(description=...)"
        row = next((ln for ln in out.splitlines() if ln.split()[:1] == [fname]), None)
        assert row is not None, f"{fname} not listed in `run {name} --help`"
        assert " ".join(info.description.split()[:3]) in " ".join(row.split()), row


def test_run_help_without_name_says_how_to_see_the_fields():
    res = runner.invoke(app, ["run", "--help"])
    assert res.exit_code == 0
    assert "mirrorflow run NAME --help" in res.stdout


def test_report_of_a_folder_says_it_is_a_folder_and_names_the_database(tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "results.sqlite").write_bytes(b"")
    proc = _cli("report", str(folder), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a folder" in lines[0], proc.stderr
    assert str(folder / "results.sqlite") in lines[0]
    assert not (tmp_path / "out").exists()  # nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli("report", str(empty))
    assert proc.returncode == 2 and "is a folder" in proc.stderr and "results.sqlite" in proc.stderr


def test_bench_table_keeps_every_number_when_a_note_is_long():
    rows = [dict(name="simulate_uv", baseline_s=1.234, mirrorflow_s=0.1234, ratio=10.0,
                 ratio_at_peak=55.5, gflops=3.21, peak_fraction=0.12, peak_rss_mb=512.0,
                 threads_chosen=[2], free_cores=1.5, kernel="C avx2"),
            dict(name="gpu_sim", baseline_s=None, mirrorflow_s=None, ratio=None,
                 skipped="no CUDA device here: torch.cuda.is_available() is False; " * 4)]
    buf = io.StringIO()
    # what `bench > out.txt` prints: as wide as the table needs
    print_unfolded(bench_table(rows, {"cpu": "x86_64", "cores": 2}, quick=True), file=buf)
    text = buf.getvalue()
    assert "…" not in text
    row = next(ln for ln in text.splitlines() if "simulate_uv" in ln)
    for number in ("1.23", "0.123", "10.0×", "55.5", "3.21 (12% peak)", "512", "2 (1.5)"):
        assert number in row, row
    assert rows[1]["skipped"].strip() in text  # the note on one line, whole
    # on a narrow terminal the note folds, the numbers stay whole
    buf = io.StringIO()
    Console(file=buf, width=170).print(bench_table(rows, {"cpu": "x", "cores": 2}))
    row = next(ln for ln in buf.getvalue().splitlines() if "simulate_uv" in ln)
    assert "…" not in buf.getvalue() and "3.21 (12% peak)" in row and "512" in row


def test_help_shows_no_bool_for_flags_no_python_list_types_and_no_midsentence_breaks():
    for cmd in (["--help"], ["run", "--help"], ["effects", "--help"], ["bench", "--help"],
                ["sweep", "--help"], ["reproduce", "--help"]):
        res = runner.invoke(app, cmd, env={"COLUMNS": "100"})
        assert res.exit_code == 0, (cmd, res.output)
        assert "<bool>" not in res.stdout and "list[" not in res.stdout, (cmd, res.stdout)
        if cmd[0] == "effects":
            # its docstring breaks a line inside the second sentence: the help joins it, so
            # at 100 columns the sentence is not cut after "at |x| = t,"
            assert "|x| = t," in res.stdout
            assert not re.search(r"\|x\| = t,\s*\n", res.stdout), res.stdout


def test_list_piped_is_one_line_per_experiment():
    proc = _cli("list", columns=80)
    assert proc.returncode == 0
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == len(REGISTRY)
    for name, line in zip(sorted(REGISTRY), lines):
        assert line.startswith(name) and line.endswith(REGISTRY.description(name))


# --- progress when stderr is not a terminal -----------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_line_progress_counts_elapsed_and_eta_by_hand():
    clock = FakeClock()
    prog = LineProgress(40, "lora-quick", io.StringIO(), clock=clock)
    assert prog.line() == "lora-quick: 0/40 (0%), elapsed 0s, ETA ?"
    clock.t += 30.0
    prog.advance(10, status="done 10 · failed 0")
    # 10 of 40 in 30 s -> 30 more in 90 s
    assert prog.line() == "lora-quick: 10/40 (25%), done 10 · failed 0, elapsed 30s, ETA 1m30s"
    clock.t += 3600.0
    prog.advance(30)
    assert prog.line().endswith("40/40 (100%), done 10 · failed 0, elapsed 1h00m, ETA 0s")


@pytest.mark.parametrize("s,text", [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (3599, "59m59s"),
                                    (3600, "1h00m"), (7325, "2h02m")])
def test_format_seconds(s, text):
    assert format_seconds(s) == text


def test_progress_writes_periodic_lines_when_not_a_terminal():
    buf = io.StringIO()  # isatty() is False, like a pipe or a CI log
    with progress_bar(5, "sweep", True, interval=0.05, stream=buf) as advance:
        advance(2)
        time.sleep(0.4)
    lines = buf.getvalue().splitlines()
    assert len(lines) >= 3, lines  # several periodic lines, then the closing one
    assert all(ln.startswith("sweep: 2/5 (40%)") for ln in lines)
    assert "ETA" in lines[-1]


def test_progress_is_silent_when_disabled_or_quick():
    buf = io.StringIO()
    with progress_bar(5, "sweep", False, interval=0.01, stream=buf) as advance:
        advance(5)
        time.sleep(0.05)
    with progress_bar(5, "sweep", True, interval=60, stream=buf) as advance:
        advance(5)  # finished before the first interval: nothing to say
    assert buf.getvalue() == ""


# --- report rendering: missing intervals, settings of schedule=none ------------------------
def test_missing_interval_is_one_mark_in_table_and_details():
    from mirrorflow.report import claims_report

    nan = float("nan")
    assert claims_report._interval(nan, nan) == "CI —"
    assert claims_report._interval(0.5, nan) == "CI —"
    assert claims_report._interval(0.12345, 2.0) == "[0.123, 2]"
    assert claims_report._detail("a: 1.2; unequal-a difference 0.3 CI [nan, nan]") == \
        "a: 1.2; unequal-a difference 0.3 CI —"
    assert claims_report._detail("ratio [nan, nan], sd nan; nanometre") == \
        "ratio CI —, sd —; nanometre"


def test_settings_of_schedule_none_are_not_labelled_by_decay_fields():
    from mirrorflow.report.report import _setting_labels

    varying = ["schedule", "switch_at", "wd"]
    settings = [("none", 0.16, 5.0), ("constant", 0.16, 5.0), ("switch-off", 0.08, 10.0)]
    assert list(_setting_labels(varying, settings).values()) == [
        "schedule=none", "schedule=constant, wd=5.0",
        "schedule=switch-off, switch_at=0.08, wd=10.0"]
    # two settings that differ only in a field their schedule ignores keep it, to stay apart
    both = [("none", 0.16, 5.0), ("none", 0.16, 1.0)]
    assert list(_setting_labels(varying, both).values()) == [
        "schedule=none, switch_at=0.16, wd=5.0", "schedule=none, switch_at=0.16, wd=1.0"]
