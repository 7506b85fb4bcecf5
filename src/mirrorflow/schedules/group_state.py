"""The weight-decay scheduler's state of one param group (issue 26).

:class:`~mirrorflow.schedules.WeightDecayScheduler` keeps, per param group, the base decay, the
integrated decay ``a``, the step count, the step from which ``a`` is counted and the schedule's
name. They live in the group dict itself under ``mf_*`` keys, so they travel with
``optimizer.state_dict()`` (plain torch, Hugging Face Trainer and Lightning checkpoints) and a
scheduler built on a restored optimizer continues exactly. :class:`GroupState` is a view of those
keys: it owns their names, their defaults and their validation; the dict stays the storage.
"""

from __future__ import annotations

import math

from mirrorflow._core.validation import MirrorflowError

__all__ = ["KEYS", "GroupState"]

BASE = "mf_base_weight_decay"
INTEGRATED = "mf_integrated_wd"
STEP = "mf_wd_step"
COUNTED_FROM = "mf_wd_counted_from"
SCHEDULE = "mf_wd_schedule"
KEYS = (BASE, INTEGRATED, STEP, COUNTED_FROM, SCHEDULE)


class GroupState:
    """A view of one param group's scheduler state (``mf_*`` keys of the group dict)."""

    __slots__ = ("group",)

    def __init__(self, group: dict):
        self.group = group

    @staticmethod
    def carried(group: dict) -> bool:
        """Whether ``group`` carries scheduler state (a restored mirrorflow checkpoint)."""
        return BASE in group

    # -- fields -----------------------------------------------------------------------------
    @property
    def base(self) -> float:
        return self.group[BASE]

    @base.setter
    def base(self, value: float) -> None:
        self.group[BASE] = value

    @property
    def integrated(self) -> float:
        return self.group[INTEGRATED]

    @integrated.setter
    def integrated(self, value: float) -> None:
        self.group[INTEGRATED] = value

    @property
    def step(self) -> int:
        return int(self.group[STEP])

    @property
    def counted_from(self) -> int:
        return int(self.group.get(COUNTED_FROM, 0))

    @property
    def schedule(self) -> str | None:
        return self.group.get(SCHEDULE)

    @schedule.setter
    def schedule(self, value: str) -> None:
        self.group[SCHEDULE] = value

    @property
    def decays(self) -> bool:
        """Whether the group is scheduled (nonzero base decay)."""
        return self.group[BASE] > 0

    # -- updates ----------------------------------------------------------------------------
    def write(self, base: float, integrated: float, step: int, counted_from: int,
              schedule: str) -> None:
        """Set every field (a new or restored state)."""
        g = self.group
        g[BASE], g[INTEGRATED], g[STEP], g[COUNTED_FROM] = base, integrated, step, counted_from
        g[SCHEDULE] = schedule

    def add(self, increment: float) -> None:
        """Add one step's ``η_k λ_k`` to ``a``."""
        self.group[INTEGRATED] += increment

    def advance(self) -> None:
        """Count one optimizer step taken."""
        self.group[STEP] += 1

    def ensure_counted_from(self) -> None:
        """States written before ``counted_from`` existed count ``a`` from step 0."""
        self.group.setdefault(COUNTED_FROM, 0)

    def clear(self) -> None:
        """Restore ``weight_decay`` to the base decay and drop the state keys."""
        g = self.group
        if BASE in g:
            g["weight_decay"] = g[BASE]
        for k in KEYS:
            g.pop(k, None)

    def checked_integrated(self, i: int) -> float:
        """The stored ``a``, refused in one line when negative or infinite (NaN is allowed: not
        one number, Adafactor with ``scale_parameter=True``)."""
        v = float(self.group[INTEGRATED])
        if not (math.isnan(v) or (math.isfinite(v) and v >= 0)):
            raise MirrorflowError(f"param group {i}'s stored integrated decay is {v!r}; the "
                                  "checkpoint is corrupt")
        return v
