"""Weight-decay schedules.

``continuous``: pure schedules in continuous time for simulations (theory §1).
``training``: step-based schedules for real optimizers; ``WeightDecayScheduler`` applies them to
any ``torch.optim.Optimizer`` and tracks the integrated decay ``a = Σ η_k λ_k``;
``diagnostics``: factor-pair diagnostics (LoRA, attention). See docs/training.md.
"""

from mirrorflow.schedules import training
from mirrorflow.schedules.continuous import (
    SCHEDULE_NAMES,
    SCHEDULES,
    BudgetDecay,
    ConstantDecay,
    NoDecay,
    Schedule,
    SwitchOffDecay,
    make_schedule,
    register_schedule,
)
from mirrorflow.schedules.groups import decay_param_groups
from mirrorflow.schedules.planner import Plan, plan
from mirrorflow.schedules.scheduler import (
    MirrorflowWarning,
    WeightDecayScheduler,
    decay_coupling,
    decay_semantics,
)

__all__ = [
    "SCHEDULES",
    "SCHEDULE_NAMES",
    "BudgetDecay",
    "ConstantDecay",
    "MirrorflowWarning",
    "NoDecay",
    "Plan",
    "Schedule",
    "SwitchOffDecay",
    "WeightDecayScheduler",
    "decay_coupling",
    "decay_param_groups",
    "decay_semantics",
    "make_schedule",
    "plan",
    "register_schedule",
    "training",
]


def __getattr__(name: str):  # the old continuous-time names, deprecated
    from mirrorflow.schedules import continuous

    return continuous.__getattr__(name)
