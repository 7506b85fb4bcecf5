"""Discover and run the benchmark suite: ``python -m mirrorflow.bench.runner [--quick] [--json]``.

The suite is the ``bench_*.py`` modules of this package, or of a folder given as ``path`` (a
suite of one's own: its modules are imported as top-level modules from that folder). Each module
runs in its own subprocess (``python -m mirrorflow.bench.runner --one NAME [--path DIR]``), which
prints its rows as one JSON line. The subprocess gives every benchmark a clean
peak-RSS reading (``getrusage`` of a process that ran only that benchmark; torch's CPU
allocations are invisible to ``tracemalloc``) and keeps one benchmark's threads, caches and
allocator state from skewing the next. ``import_rss_mb`` is the child's current RSS after its
imports, so ``peak_rss_mb − import_rss_mb`` is roughly what the benchmark itself added (the
peak also covers transient memory of the imports, so small benchmarks may show no increase).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from mirrorflow import MirrorflowError
from mirrorflow._core.jsonable import jsonable

REQUIRED_KEYS = ("name", "baseline_s", "mirrorflow_s", "ratio")


SUITE = Path(__file__).resolve().parent  # the built-in suite: this package


def discover(path: Path | None = None) -> list[str]:
    """Names of the ``bench_*.py`` modules in the suite folder ``path`` (default: built in)."""
    path = SUITE if path is None else Path(path)
    if not path.is_dir():
        raise MirrorflowError(f"benchmark folder {path} does not exist; pass --path to a folder "
                              "of bench_*.py modules, or leave it out for the built-in suite")
    names = sorted(p.stem for p in path.glob("bench_*.py"))
    if not names:
        raise MirrorflowError(f"no bench_*.py modules in {path}; pass --path to the suite folder")
    return names


def validate_rows(name: str, rows) -> list[dict]:
    """Check a module's output against the suite contract."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise MirrorflowError(f"{name}.run() must return a list of dicts")
    for r in rows:
        missing = [k for k in REQUIRED_KEYS if k not in r]
        if missing:
            raise MirrorflowError(f"{name}.run() row lacks keys {missing}")
    return rows


def machine() -> dict:
    """A short description of this machine (CPU model, cores, torch/numpy versions)."""
    import numpy as np
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import scipy

    from mirrorflow.dynamics._native import cache_sizes, cpu_set, kernels

    k = kernels()
    return {"cpu": cpu, "cores": os.cpu_count(), "cpu_set": len(cpu_set()),
            "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "torch_threads": torch.get_num_threads(),
            # the simulators' C kernel (docs/benchmarks.md); without it they run in torch
            "native_kernels": k is not None,
            "kernel_variants": [] if k is None else list(k.available),
            "kernel_variant": None if k is None else k.variant(),
            "cache_bytes": {f"L{lvl}": size for lvl, size in sorted(cache_sizes().items())},
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_one(name: str, quick: bool, path: Path | None = None) -> list[dict]:
    """Run one benchmark module in this process (used by the subprocess)."""
    from mirrorflow.bench._harness import current_rss_mb, peak_rss_mb

    if path is None:
        mod = importlib.import_module(f"mirrorflow.bench.{name}")
    else:
        sys.path.insert(0, str(Path(path).resolve()))
        mod = importlib.import_module(name)
    import_rss = current_rss_mb()
    rows = validate_rows(name, mod.run(quick=quick))
    for r in rows:
        r.setdefault("peak_rss_mb", peak_rss_mb())
        r["import_rss_mb"] = import_rss
        r["module"] = name
    return rows


def run_suite(path: Path | None = None, quick: bool = False, only: list[str] | None = None,
              progress=None) -> list[dict]:
    """Run every (or the ``only``) benchmark module of the suite, each in a subprocess.

    ``path``: a folder of ``bench_*.py`` modules (default: the built-in suite).

    ``progress(name)`` is called before each module. Raises MirrorflowError when a module fails
    (its last stderr line is in the message).
    """
    names = discover(path)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise MirrorflowError(f"unknown benchmark {unknown[0]!r}; choose from: {', '.join(names)}")
        names = [n for n in names if n in only]
    rows: list[dict] = []
    for name in names:
        if progress is not None:
            progress(name)
        cmd = [sys.executable, "-m", "mirrorflow.bench.runner", "--one", name]
        if path is not None:
            cmd += ["--path", str(Path(path).resolve())]
        if quick:
            cmd.append("--quick")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise MirrorflowError(f"benchmark {name} failed: {last}")
        rows.extend(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - exercised via the CLI
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one", default=None, help="run one module in-process, print JSON rows")
    ap.add_argument("--path", default=None, help="a folder of bench_*.py modules (default: built in)")
    args = ap.parse_args(argv)
    path = None if args.path is None else Path(args.path)
    if args.one:
        print(json.dumps(jsonable(run_one(args.one, args.quick, path))))
        return
    rows = run_suite(path, args.quick)
    print(json.dumps(jsonable({"machine": machine(), "results": rows}), indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
