"""Weight-decay schedules.

``continuous``: pure schedules in continuous time for simulations (theory §1).
"""

from mirrorflow.schedules.continuous import (
    SCHEDULE_NAMES,
    Budget,
    Constant,
    NoDecay,
    Schedule,
    SwitchOff,
    make_schedule,
)

__all__ = [
    "SCHEDULE_NAMES",
    "Budget",
    "Constant",
    "NoDecay",
    "Schedule",
    "SwitchOff",
    "make_schedule",
]
