"""Experiments: one module each, ``Config -> run() -> Result``; see :mod:`.base`.

:data:`REGISTRY` maps CLI names (``mirrorflow run NAME``) to :class:`Experiment` entries.
Experiments whose optional dependencies are missing are simply not registered.
"""

from mirrorflow.experiments.base import Experiment, ExperimentResult, Registry, make_config

REGISTRY = Registry()


def _register_builtin() -> None:
    from mirrorflow.experiments import sparse_regression

    REGISTRY[sparse_regression.EXPERIMENT.name] = sparse_regression.EXPERIMENT

    from mirrorflow.experiments import sparse_coding

    REGISTRY[sparse_coding.EXPERIMENT.name] = sparse_coding.EXPERIMENT
    try:  # LoRA needs transformers + peft
        from mirrorflow.experiments import lora
    except ImportError:  # pragma: no cover - optional dependency missing
        pass
    else:
        REGISTRY[lora.EXPERIMENT.name] = lora.EXPERIMENT

    from mirrorflow.experiments import matrix_sensing

    REGISTRY[matrix_sensing.EXPERIMENT.name] = matrix_sensing.EXPERIMENT
    try:  # the ViT side of the attention experiment needs only torch; register defensively
        from mirrorflow.experiments import attention
    except ImportError:  # pragma: no cover - optional dependency missing
        pass
    else:
        REGISTRY[attention.EXPERIMENT.name] = attention.EXPERIMENT


_register_builtin()


def get_experiment(name: str) -> Experiment:
    """Look up a registered experiment by its CLI name."""
    return REGISTRY.get_experiment(name)


__all__ = ["REGISTRY", "Experiment", "ExperimentResult", "get_experiment", "make_config"]
