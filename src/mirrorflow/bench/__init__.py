"""mirrorflow's benchmark suite (run it with ``mirrorflow bench``; see docs/benchmarks.md).

Each ``bench_*.py`` module exposes ``run(quick: bool = False) -> list[dict]``; every dict has
the keys ``name``, ``baseline_s`` (median), ``mirrorflow_s`` (median), ``ratio``
(``baseline_s / mirrorflow_s``: the speed-up) and extras such as ``gflops`` or
``peak_rss_mb``. :mod:`mirrorflow.bench.runner` discovers and runs them, each in a subprocess.

It ships inside the package, so ``mirrorflow bench`` works from any install (the ``bench`` extra
adds cvxpy for the implicit-bias baseline). Only the CLI imports it.
"""
