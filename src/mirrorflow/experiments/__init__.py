"""Experiments: one module each, ``Config -> run() -> Result``; see :mod:`.base`.

:data:`REGISTRY` maps CLI names (``mirrorflow run NAME``) to :class:`Experiment` entries.
Experiments whose optional dependencies are missing are simply not registered.
"""

from mirrorflow.experiments.base import Experiment, ExperimentResult, Registry, make_config

REGISTRY = Registry()


def _register_builtin() -> None:
    from mirrorflow.experiments import sparse_regression

    REGISTRY[sparse_regression.EXPERIMENT.name] = sparse_regression.EXPERIMENT


_register_builtin()


def get_experiment(name: str) -> Experiment:
    """Look up a registered experiment by its CLI name."""
    return REGISTRY.get_experiment(name)


__all__ = ["REGISTRY", "Experiment", "ExperimentResult", "get_experiment", "make_config"]
