"""The ground floor: small helpers every layer may use; it imports nothing else of mirrorflow.

array       numpy/torch interoperability (compute in float64 numpy, return what came in)
figure      bare matplotlib Figures (no pyplot, no backend switch)
jsonable    plain-Python copies of results for JSON
progress    a rich progress bar that is a no-op when disabled
spectral    effective rank and nuclear/Frobenius ratio of singular values (one definition)
threads     BLAS / torch thread limits for a block
validation  :class:`MirrorflowError` and one-line argument checks

The layers above, bottom up (imports only go down; ``tests/test_layers.py`` checks it)::

    _core  ->  geometry, schedules  ->  dynamics  ->  experiments  ->  sweep  ->  report
           ->  bench, cli
"""
