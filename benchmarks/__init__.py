"""mirrorflow's benchmark suite (run it with ``mirrorflow bench``; see docs/benchmarks.md).

Each ``bench_*.py`` module exposes ``run(quick: bool = False) -> list[dict]``; every dict has
the keys ``name``, ``baseline_s`` (median), ``mirrorflow_s`` (median), ``ratio``
(``baseline_s / mirrorflow_s``: the speed-up) and extras such as ``gflops`` or
``peak_rss_mb``. :mod:`benchmarks.runner` discovers and runs them.
"""
