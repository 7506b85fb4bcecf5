"""Experiments: one module each, ``Config -> run() -> Result``; see :mod:`.base`.

:data:`REGISTRY` maps CLI names (``mirrorflow run NAME``) to :class:`Experiment` entries.
Experiments whose optional dependencies are missing are simply not registered.
"""

from mirrorflow.experiments.base import Experiment, ExperimentResult, Registry, make_config

REGISTRY = Registry()


#: (CLI name, module, optional packages it needs, one-line description)
_BUILTIN = (
    ("sparse-regression", "mirrorflow.experiments.sparse_regression", (),
     "k-sparse least squares with x = u⊙v (theory §5): recovery vs schedule"),
    ("sparse-coding", "mirrorflow.experiments.sparse_coding", ("sklearn",),
     "dictionary learning with u⊙v / u^2k−v^2k / ISTA codes (theory §5): MSE, sparsity"),
    ("matrix-sensing", "mirrorflow.experiments.matrix_sensing", (),
     "low-rank matrix sensing with X = UVᵀ (theory §6): schedules vs nuclear-norm baseline"),
    ("attention", "mirrorflow.experiments.attention", (),
     "attention W_Q W_Kᵀ (theory §6): low-rank teacher or a tiny ViT on digits"),
    ("lora", "mirrorflow.experiments.lora", ("transformers", "peft"),
     "PEFT LoRA fine-tuning (MiniLM offline / GPT-2 online) with decay schedules (theory §6)"),
)


def _register_builtin() -> None:
    """Register the built-in experiments whose optional packages are installed (lazily)."""
    from importlib.util import find_spec

    for name, module, needs, description in _BUILTIN:
        if all(find_spec(pkg) is not None for pkg in needs):
            REGISTRY.register_lazy(name, module, description)


_register_builtin()


def get_experiment(name: str) -> Experiment:
    """Look up a registered experiment by its CLI name."""
    return REGISTRY.get_experiment(name)


__all__ = ["REGISTRY", "Experiment", "ExperimentResult", "get_experiment", "make_config"]
