"""Input validation with one-line, actionable error messages (scikit-learn style).

Every public entry point checks its arguments with these helpers, so that bad input fails
early with a single line naming the argument, what is wrong, and how to fix it.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mirrorflow._core.errors import MirrorflowError


def check_finite_scalar(name: str, value: Any, *, minimum: float | None = None,
                        strict: bool = False, maximum: float | None = None) -> float:
    """Return ``value`` as a float after checking it is finite and within bounds.

    >>> check_finite_scalar("wd", "0.25", minimum=0.0)
    0.25
    >>> check_finite_scalar("step", 0, minimum=0.0, strict=True)
    Traceback (most recent call last):
    ...
    mirrorflow._core.errors.MirrorflowError: step must be > 0, got 0
    """
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise MirrorflowError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise MirrorflowError(f"{name} must be finite, got {out!r}")
    if minimum is not None:
        if strict and out <= minimum:
            raise MirrorflowError(f"{name} must be > {minimum:g}, got {out:g}")
        if not strict and out < minimum:
            raise MirrorflowError(f"{name} must be >= {minimum:g}, got {out:g}")
    if maximum is not None and out > maximum:
        raise MirrorflowError(f"{name} must be <= {maximum:g}, got {out:g}")
    return out


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as an int after checking ``value >= minimum``.

    >>> check_positive_int("n_test", 16), check_positive_int("k", 2, minimum=2)
    (16, 2)
    >>> check_positive_int("n_test", 2.5)
    Traceback (most recent call last):
    ...
    mirrorflow._core.errors.MirrorflowError: n_test must be an integer, got 2.5
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise MirrorflowError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise MirrorflowError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of ``choices``.

    >>> check_choice("schedule", "budget", ("none", "budget"))
    'budget'
    >>> check_choice("schedule", "cosine", ("none", "budget"))
    Traceback (most recent call last):
    ...
    mirrorflow._core.errors.MirrorflowError: unknown schedule 'cosine'; choose one of: none, budget
    """
    if value not in choices:
        raise MirrorflowError(
            f"unknown {name} {value!r}; choose one of: {', '.join(map(str, choices))}"
        )
    return value


def check_finite_array(name: str, arr: np.ndarray) -> np.ndarray:
    """Check that every entry of ``arr`` is finite.

    >>> check_finite_array("y", np.array([1.0, 2.0])).sum()
    np.float64(3.0)
    >>> check_finite_array("y", np.array([1.0, np.nan]))
    Traceback (most recent call last):
    ...
    mirrorflow._core.errors.MirrorflowError: y contains NaN or inf; pass finite values
    """
    if not np.all(np.isfinite(arr)):
        raise MirrorflowError(f"{name} contains NaN or inf; pass finite values")
    return arr


def check_writable_folder(folder, what: str = "output") -> None:
    """One-line error unless ``folder`` exists, is a folder and can be written to."""
    folder = Path(folder) if str(folder) else Path(".")
    if not folder.exists():
        raise MirrorflowError(f"cannot write {what}: folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise MirrorflowError(f"cannot write {what}: {folder} is not a folder")
    try:  # try it: access() says yes to root even where writing fails (read-only mounts)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".mirrorflow-probe-")
    except OSError as exc:
        raise MirrorflowError(f"cannot write {what}: folder {folder} is not writable "
                              f"({exc.strerror or type(exc).__name__})") from None
    os.close(fd)
    os.remove(probe)
