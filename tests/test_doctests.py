"""Runs the doctest examples of the public API (each prints a value checkable by hand).

Collected here rather than with ``--doctest-modules`` so that pytest's configuration stays as it
is. ``NUMBER_OF_EXAMPLES`` guards against examples silently disappearing.
"""

import doctest
import importlib

import pytest

MODULES = [
    "mirrorflow._core.errors",
    "mirrorflow._core.validation",
    "mirrorflow._core.array",
    "mirrorflow._core.jsonable",
    "mirrorflow._core.spectral",
    "mirrorflow.geometry.family",
    "mirrorflow.geometry.legendre",
    "mirrorflow.geometry.power",
    "mirrorflow.geometry.quadratic",
    "mirrorflow.geometry.parameterizations",
    "mirrorflow.geometry.commutation",
    "mirrorflow.geometry.effects",
    "mirrorflow.geometry.implicit_bias",
    "mirrorflow.schedules.continuous",
    "mirrorflow.schedules.training",
    "mirrorflow.dynamics.mirror",
    "mirrorflow.dynamics._chunks",
    "mirrorflow.dynamics.simulate",
    "mirrorflow.dynamics.matrix",
    "mirrorflow.dynamics.verify",
    "mirrorflow.experiments.base",
    "mirrorflow.report.claims.pairing",
]

#: At least this many examples across MODULES (issue 26 asks for 40; there are 115).
NUMBER_OF_EXAMPLES = 100


def _examples(module) -> int:
    tests = doctest.DocTestFinder().find(module)
    return sum(len(t.examples) for t in tests)


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_pass(name):
    module = importlib.import_module(name)
    assert _examples(module) > 0, f"{name} lost its examples"
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples in {name} failed (see output)"


def test_there_are_enough_examples():
    total = sum(_examples(importlib.import_module(n)) for n in MODULES)
    assert total >= NUMBER_OF_EXAMPLES, total
