"""Helpers for the reliability tests: real CLI processes, their children, a plugin experiment."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

TINY = {"n": 10, "d": 20, "sparsity": 2, "step": 0.05, "tail": "gd"}

# an experiment a user could register from their own package: 'toy' with an `action` per run
TOY_MODULE = '''
"""toy: a test experiment; action "kill" kills its own process, "sleep" never returns, "gate"
marks that it started (file ``started-SEED`` in the folder $MF_TOY_GATE) and waits until the
file ``open`` appears there: a run a test holds in flight as long as it needs, no timing guess."""
import os
import signal
import time
from dataclasses import dataclass

from pydantic.dataclasses import dataclass as pdataclass

from mirrorflow.experiments.base import CONFIG, Experiment, ExperimentResult, ScheduleConfig


@pdataclass(frozen=True, config=CONFIG)
class Config(ScheduleConfig):
    action: str = "ok"
    seconds: float = 0.2


@dataclass(frozen=True)
class Result(ExperimentResult):
    config: Config
    value: float


def run(config, progress=False):
    if config.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if config.action == "sleep":
        time.sleep(1000)  # stuck where no deadline check can see it
    if config.action == "gate":
        gate = os.environ["MF_TOY_GATE"]
        open(os.path.join(gate, f"started-{config.seed}"), "w").close()
        for _ in range(30000):  # 10 minutes at most: a test that forgets the gate still ends
            if os.path.exists(os.path.join(gate, "open")):
                break
            time.sleep(0.02)
        else:
            raise RuntimeError("the gate was never opened")
    time.sleep(config.seconds)
    return Result(config=config, value=float(config.seed) ** 2)


EXPERIMENT = Experiment(name="toy", config_cls=Config, result_cls=Result, run=run,
                        description="test experiment")
'''
SITECUSTOMIZE = '''
from mirrorflow.experiments import REGISTRY

REGISTRY.register_lazy("toy", "mf_toy")
'''


def plugin_env(folder: Path) -> dict[str, str]:
    """Write the toy plugin into ``folder``; the environment that registers it in every Python
    process started with it (CLI, spawned workers, Dask workers). Its gate folder (for action
    "gate") is ``folder / "gate"``: see :func:`gate_started` and :func:`open_gate`."""
    folder.mkdir(exist_ok=True)
    (folder / "mf_toy.py").write_text(TOY_MODULE)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (folder / "gate").mkdir(exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])
    env["MF_TOY_GATE"] = str(folder / "gate")
    return env


def gate_started(env: dict[str, str]) -> bool:
    """Whether a toy run with action "gate" has started (and now waits for :func:`open_gate`)."""
    return any(Path(env["MF_TOY_GATE"]).glob("started-*"))


def open_gate(env: dict[str, str]) -> None:
    """Let every toy run with action "gate" (waiting now or started later) return."""
    (Path(env["MF_TOY_GATE"]) / "open").touch()


def write_spec(path: Path, seeds=(0, 1), t_max: float = 20.0, extra: str = "",
               experiment: str = "sparse-regression") -> Path:
    path.write_text(
        f'experiment = "{experiment}"\n[base]\n'
        + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in TINY.items())
        + f"t_max = {t_max}\n{extra}"
        + f"[grid]\nseed = {list(seeds)}\n"
        + '[zip]\nschedule = ["none", "switch-off"]\nswitch_at = [0.0, 5.0]\n')
    return path


def cli(*args, env=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mirrorflow.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, **kw)


class _Done:
    def __init__(self, result):
        self.returncode = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr


def cli_here(*args) -> _Done:
    """The CLI run in this process (typer's CliRunner): same code path from argument parsing
    to exit status, without the seconds of a new interpreter; for the variants of a case
    whose first instance runs in a real process."""
    from typer.testing import CliRunner

    from mirrorflow.cli import app

    return _Done(CliRunner().invoke(app, [str(a) for a in args]))


def _default_sigint() -> None:
    # a process started in the background by a non-interactive shell (`cmd &` in a script, a CI
    # step) inherits SIGINT *ignored*, and Python then keeps it ignored: the CLI would never see
    # the test's Ctrl-C. A terminal's foreground command has the default action: restore it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(*args, env=None, new_session=False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mirrorflow.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=new_session, preexec_fn=_default_sigint)


def one_error_line(proc: subprocess.CompletedProcess, needle: str) -> str:
    """The single stderr line of a refused command (exit 2, no traceback), checked."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (read from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(d.name))
    return out


def workers_of(pid: int) -> list[int]:
    """The mirrorflow worker processes of ``pid`` (not multiprocessing's resource tracker)."""
    out = []
    for k in children(pid):
        try:
            cmd = Path(f"/proc/{k}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(k)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def rows(db: Path) -> list[tuple]:
    """The rows of ``db``; never creates the file (a 0-byte file made by polling too early
    would be refused by the CLI as 'an empty file, not a results database')."""
    if not Path(db).is_file():
        return []
    try:
        with sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True,
                             timeout=30) as con:
            return con.execute("SELECT id, status, message FROM runs").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def wait_for(cond, timeout: float = 120.0, every: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(every)
    return False


def kill_tree(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        for k in children(proc.pid):
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
    proc.communicate(timeout=30)
