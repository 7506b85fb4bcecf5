"""JSON conversion shared by the CLI and the results store."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """Plain-Python copy of ``obj`` for JSON: numpy scalars/arrays converted, NaN/inf -> None.

    >>> jsonable({"a": np.array([1.5, np.inf]), 2: (np.int64(3), float("nan"))})
    {'a': [1.5, None], '2': [3, None]}
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
