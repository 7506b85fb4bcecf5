"""The chunked driver shared by the parameter-space simulators (``simulate.py``, ``matrix.py``).

Both run ``B`` problems side by side for ``total`` steps of size ``step``, in chunks that end at
``chunk`` steps or at the next snapshot. Per chunk the driver evaluates each distinct schedule
once at the steps' midpoints, hands the chunk to the simulator (which does the steps and its own
checks), accumulates the integrated decay ``a = Σ η α_k`` of every run, advances the progress
bar, checks the run's wall-time bound and records the snapshots that the chunk reached. What
differs between the simulators (the update, what counts as diverged or converged, what a
snapshot holds) stays in them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mirrorflow._core.limits import check_deadline
from mirrorflow._core.progress import progress_bar
from mirrorflow._core.validation import MirrorflowError
from mirrorflow.schedules.continuous import Schedule

__all__ = ["Chunk", "ChunkDriver", "as_schedules", "broadcast_schedules", "distinct_schedules",
           "snapshot_grid"]


def distinct_schedules(schedules: Sequence[Schedule]) -> tuple[list[Schedule], np.ndarray]:
    """The distinct schedules among ``schedules`` and, per run, the index of its schedule.

    Equal schedules (same class and attributes) have equal rates, so each distinct one is
    evaluated once per chunk: a seeds × decays grid of ``B`` runs has only as many as decays.
    Schedules with an unhashable attribute count as distinct.

    >>> from mirrorflow.schedules.continuous import ConstantDecay, NoDecay
    >>> kinds, which = distinct_schedules([NoDecay(), ConstantDecay(0.1), NoDecay()])
    >>> len(kinds), which.tolist()
    (2, [0, 1, 0])
    """
    by_value: dict = {}
    by_id: dict[int, int] = {}
    distinct: list[Schedule] = []
    which = np.empty(len(schedules), dtype=np.intp)
    for i, s in enumerate(schedules):
        j = by_id.get(id(s))
        if j is None:
            # class and attributes as the key: hashed in C, unlike a dataclass's __hash__
            attrs = getattr(s, "__dict__", None)
            key = None if attrs is None else (type(s), *attrs.items())
            try:
                j = by_value.get(key) if key is not None else None
            except TypeError:  # an unhashable attribute
                key = None
            if j is None:
                j = len(distinct)
                distinct.append(s)
                if key is not None:
                    by_value[key] = j
            by_id[id(s)] = j
        which[i] = j
    return distinct, which


def as_schedules(schedules: Schedule | Sequence[Schedule]) -> list[Schedule]:
    """One schedule or a sequence of them, as a non-empty list."""
    if isinstance(schedules, Schedule):
        schedules = [schedules]
    schedules = list(schedules)
    if not schedules:
        raise MirrorflowError("pass at least one schedule (e.g. mirrorflow.schedules.NoDecay())")
    return schedules


def broadcast_schedules(schedules: list[Schedule], B: int) -> list[Schedule]:
    """One schedule for every run, or exactly ``B`` of them."""
    if len(schedules) == 1:
        schedules = schedules * B
    if len(schedules) != B:
        raise MirrorflowError(f"got {len(schedules)} schedules for a batch of {B} runs; pass 1 or {B}")
    return schedules


def snapshot_grid(step: float, t_max: float, snapshot_times) -> tuple[int, np.ndarray]:
    """``(total steps, snapshot steps)``: ``0``, ``t_max`` and the requested times on the grid.

    >>> snapshot_grid(0.1, 1.0, [0.25, 5.0])     # 0.25 rounds to step 2; 5.0 is past the end
    (10, array([ 0,  2, 10]))
    """
    total = int(np.ceil(t_max / step - 1e-9))
    req = np.asarray([] if snapshot_times is None else snapshot_times, dtype=np.float64).ravel()
    if np.any(~np.isfinite(req)) or np.any(req < 0):
        raise MirrorflowError("snapshot_times must be finite and >= 0")
    snaps = np.unique(np.round(np.concatenate([[0.0, t_max], req]) / step).astype(np.int64))
    return total, snaps[snaps <= total]


@dataclass
class Chunk:
    """Steps ``start .. end − 1``; ``alphas (K, B)``: each run's decay at the steps' midpoints."""

    start: int
    end: int
    alphas: np.ndarray

    @property
    def steps(self) -> int:
        return self.end - self.start


class ChunkDriver:
    """Iterate over the chunks of a batched run (module docstring).

    ``for c in driver.chunks(): ...`` yields a :class:`Chunk`; the body runs its steps and sets
    ``driver.applied`` (the ``(K, B)`` torch decays actually applied, e.g. zero for frozen runs;
    default: ``c.alphas``) and may call ``driver.stop()``. After the body the driver adds
    ``step · Σ_k applied`` to :attr:`a` (``(B,)`` torch) and calls ``record(i, k)`` for each
    snapshot ``i`` at or before step ``k``. ``record`` is called for snapshot 0 at the start when
    it is step 0. :attr:`recorded` counts the snapshots taken.
    """

    def __init__(self, *, total: int, chunk: int, step: float, snaps: np.ndarray,
                 schedules: list[Schedule], B: int, f64: dict, record: Callable[[int, int], None],
                 label: str, where: str, t_max: float, progress: bool,
                 keep_going: Callable[[], bool] | None = None) -> None:
        self.total, self.chunk, self.step, self.snaps = total, chunk, step, snaps
        self.distinct, self.which = distinct_schedules(schedules)
        self.f64 = f64
        self.record = record
        self.label, self.where, self.t_max, self.progress = label, where, t_max, progress
        self.keep_going = keep_going
        self.a = torch.zeros(B, **f64)
        self.recorded = 0
        self.applied: torch.Tensor | None = None
        self._stopped = False

    def alphas(self, mid: np.ndarray) -> np.ndarray:
        """``(K, B)`` decay of every run at times ``mid`` (each distinct schedule once)."""
        return np.stack([s.rate(mid) for s in self.distinct], axis=1)[:, self.which]

    def stop(self) -> None:
        self._stopped = True

    def chunks(self) -> Iterator[Chunk]:
        snaps, step = self.snaps, self.step
        if snaps[0] == 0:
            self.record(0, 0)
            self.recorded = 1
        k = 0
        with progress_bar(self.total, self.label, self.progress) as advance:
            while k < self.total and not self._stopped and (
                    self.keep_going is None or self.keep_going()):
                k_end = min(k + self.chunk, self.total)
                if self.recorded < len(snaps):
                    k_end = min(k_end, int(snaps[self.recorded]))
                mid = (np.arange(k, k_end) + 0.5) * step
                c = Chunk(k, k_end, self.alphas(mid))
                self.applied = None
                yield c
                applied = (torch.as_tensor(c.alphas, **self.f64) if self.applied is None
                           else self.applied)
                self.a += step * applied.sum(0)
                advance(c.steps)
                k = k_end
                check_deadline(f"{self.where} at t = {k * step:g} of {self.t_max:g}")
                while self.recorded < len(snaps) and snaps[self.recorded] <= k:
                    self.record(self.recorded, k)
                    self.recorded += 1
