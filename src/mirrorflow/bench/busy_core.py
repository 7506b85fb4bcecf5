"""The default thread choice against a busy core: ``python -m mirrorflow.bench.busy_core``.

Not part of the suite (it starts a busy-loop process and its numbers depend on what else runs),
but the measurement behind docs/benchmarks.md, "Threads: the default". Prints one JSON object:

- ``lag``: after a busy loop (``python -c "while True: pass"``) starts, the one-minute load
  average, the free-core reading of :class:`~mirrorflow.dynamics._native.FreeCores` and its
  count of other runnable tasks, at 0.5 … 10 s;
- ``idle`` / ``busy``: ``simulate uv`` (``bench_simulate``'s problem) with one thread, two
  threads and ``"auto"``, medians of interleaved repeats (ms, and CPU ms), and the thread counts
  ``"auto"`` used; without and with the busy loop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from mirrorflow.bench._harness import loadavg, time_interleaved
from mirrorflow.bench.bench_simulate import make_problem, simulate
from mirrorflow.dynamics._native import FreeCores

SIZES = ((64, 2000), (256, 200))


def timings(runs: int, steps: int, repeats: int) -> dict:
    """One / two threads / ``"auto"`` on ``runs`` runs, interleaved (ms)."""
    A, y, u0, decays = make_problem(runs)
    simulate(A, y, u0, decays, 10, 1)
    used: set[int] = set()

    def auto():
        used.update(simulate(A, y, u0, decays, steps, "auto").threads_used)

    t = time_interleaved({"1": lambda: simulate(A, y, u0, decays, steps, 1),
                          "2": lambda: simulate(A, y, u0, decays, steps, 2), "auto": auto}, repeats)
    return {"runs": runs, "steps": steps, "ms": {k: round(v * 1e3, 1) for k, v in t.items()},
            "auto_used": sorted(used), "loadavg": loadavg()}


def run(sizes=SIZES, repeats: int = 7, lag_waits=(0.5, 1, 2, 5, 10)) -> dict:
    out = {"loadavg_start": loadavg(), "idle": [timings(b, s, repeats) for b, s in sizes]}
    reading = FreeCores()
    reading()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        t0, lag = time.monotonic(), []
        for wait in lag_waits:
            time.sleep(max(0.0, wait - (time.monotonic() - t0)))
            lag.append({"t_s": wait, "loadavg1": round(os.getloadavg()[0], 2),
                        "free_cores": round(reading(), 2),
                        "runnable_others": reading.runnable_others()})
        out["lag"] = lag
        out["busy"] = [timings(b, s, repeats) for b, s in sizes]
    finally:
        hog.kill()
        hog.wait()
    out["loadavg_end"] = loadavg()
    return out


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run()))
