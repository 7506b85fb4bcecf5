"""The minor items of issue 24: SIGTERM says what is stored like Ctrl-C; an ``A`` of strings or
complex numbers is a one-line error; ``a = 1e308`` is handled without overflow warnings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from mirrorflow._core.validation import MirrorflowError
from mirrorflow.geometry import uv
from mirrorflow.geometry.implicit_bias import implicit_bias
from reliability_helpers import (
    alive,
    cli,
    plugin_env,
    rows,
    start_cli,
    wait_for,
    workers_of,
)


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigterm_says_what_is_stored_and_how_to_resume(tmp_path, workers):
    """SIGTERM to the CLI (as `kill PID`, a batch system or systemd send it) of a sweep, in
    process or on two worker processes (*slow*: spawned workers boot for tens of seconds on a
    loaded machine): exit 143, the same one line as Ctrl-C, no worker left; the command it names
    finishes the sweep. Before: it died silently (exit -15)."""
    env = plugin_env(tmp_path / "plugin")
    spec = tmp_path / "t.toml"
    spec.write_text('experiment = "toy"\n[base]\nseconds = 1.0\n[grid]\nseed = [0, 1, 2, 3, 4, 5, 6, 7]\n')
    db = spec.with_suffix(".sqlite")
    proc = start_cli("sweep", spec, "--workers", workers, env=env)
    try:
        assert wait_for(lambda: len(rows(db)) >= 1, timeout=300)
        workers_before = workers_of(proc.pid)
        assert bool(workers_before) == (workers > 1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, (proc.returncode, out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), err
    stored = len(rows(db))
    assert 1 <= stored < 8 and f"{stored} of 8 runs have a result in {db}" in lines[0]
    assert f"mirrorflow sweep {spec}" in lines[0] and "again to resume" in lines[0]
    assert wait_for(lambda: not any(alive(w) for w in workers_before), timeout=10)
    done = cli("sweep", spec, "--workers", 1, env=env)
    assert done.returncode == 0 and f"{stored} already stored" in done.stdout, done.stderr
    assert len(rows(db)) == 8


_A = np.random.default_rng(0).normal(size=(3, 8))
_Y = _A @ np.r_[1.0, np.zeros(7)]
BAD_A = {"strings": _A.astype(str), "complex": _A + 1e-3j, "objects": _A.astype(object),
         "nested lists of strings": [["a"] * 8] * 3, "complex y": None}


@pytest.mark.parametrize("kind", sorted(BAD_A))
def test_an_a_that_is_not_real_numbers_is_one_line(kind):
    """Before: strings raised a bare ValueError; a complex A was cut to its real part and the
    solve reported converged."""
    L = uv(np.ones(8), np.full(8, 0.5))
    A, y = (BAD_A[kind], _Y) if BAD_A[kind] is not None else (_A, _Y + 1e-3j)
    with pytest.raises(MirrorflowError) as err:
        implicit_bias(A, y, L, 1.0)
    text = str(err.value)
    assert "\n" not in text and ("complex" in text or "real numbers" in text), text
    # the real problem next to it solves (the check refuses only what is not real)
    assert implicit_bias(_A, _Y, L, 1.0).converged


HUGE_A = r'''
import numpy as np
from mirrorflow.geometry import uv
from mirrorflow.geometry.implicit_bias import implicit_bias
A = np.random.default_rng(0).normal(size=(3, 8))
y = A @ np.r_[1.0, np.zeros(7)]
for a in (1e308, 1.7976931348623157e308, 1e200):
    r = implicit_bias(A, y, uv(np.ones(8), np.full(8, 0.5)), a)
    print(r.status, "|", r.message)
'''


def test_a_huge_a_gives_a_one_line_status_and_no_warning():
    """`-W error` turns any warning into a failure. Before: 'overflow encountered in
    multiply' at a = 1e308. e^(−2a) is 0 in float64 for every such a: the reference point
    underflows, a one-line 'infeasible' naming the largest usable a (about 372)."""
    proc = subprocess.run([sys.executable, "-W", "error", "-c", HUGE_A], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    out = proc.stdout.strip().splitlines()
    assert len(out) == 3
    for line in out:
        status, message = line.split(" | ")
        assert status == "infeasible" and "underflows to 0" in message and "a < 372" in message
