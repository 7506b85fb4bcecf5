"""Sweep specifications: a TOML grid/zip over any experiment's Config fields.

A spec names one registered experiment and the values of its Config fields::

    experiment = "sparse-regression"
    name = "schedules"                 # optional, defaults to the file name

    [base]                             # fixed values for every run
    n = 40

    [grid]                             # cartesian product of these lists
    seed = [0, 1, 2]

    [zip]                              # lists of equal length, taken together (row by row)
    schedule = ["none", "constant", "switch-off"]
    t_max = [5000.0, 200.0, 5000.0]

    [[case]]                           # optional: several blocks, each with its own
    base.wd = 0.1                      # base / grid / zip tables that override the
                                       # top-level ones key by key; runs = union of the cases

Runs of one block are ``product(grid) × rows(zip)``. Every run is validated against the
experiment's Config (pydantic) *before* anything runs, so an unknown field, a wrong type or an
empty list fails at once with a one-line :class:`MirrorflowError` naming the key. The number of
runs is counted before the grid is expanded: above ``max_runs`` (default
:attr:`mirrorflow._core.limits.Limits.max_runs`) the spec is refused.

Each run has a stable id: a hash of the experiment name, the full validated config (defaults
included) and the code version ``mirrorflow.__version__``; equal configs give equal ids, so a
re-run of a sweep recognises the runs that are already in the results store.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

import mirrorflow
from mirrorflow._core.limits import current_limits
from mirrorflow._core.validation import MirrorflowError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10: the same API as the tomli package
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "RunSpec",
    "SweepSpec",
    "config_to_dict",
    "expand_spec",
    "load_spec",
    "parse_spec",
    "run_id",
]

_TOP_KEYS = ("experiment", "name", "base", "grid", "zip", "case")
_BLOCK_KEYS = ("base", "grid", "zip")


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its stable id, experiment, and validated config (plus its JSON form)."""

    run_id: str
    experiment: str
    config: Any
    config_dict: Mapping[str, Any]


@dataclass(frozen=True)
class SweepSpec:
    """A validated, expanded sweep: every run is checked against the experiment's Config."""

    name: str
    experiment: str
    runs: tuple[RunSpec, ...]

    @property
    def run_ids(self) -> tuple[str, ...]:
        return tuple(r.run_id for r in self.runs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a (pydantic dataclass) Config, every field included."""
    return pydantic.TypeAdapter(type(config)).dump_python(config, mode="json")


def run_id(experiment: str, config_dict: Mapping[str, Any], version: str | None = None) -> str:
    """Stable id of a run: sha256 of experiment + canonical config JSON + code version (16 hex)."""
    payload = {
        "experiment": experiment,
        "config": dict(config_dict),
        "version": mirrorflow.__version__ if version is None else version,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_spec(path: str | Path, registry: Mapping[str, Any] | None = None,
              max_runs: int | None = -1) -> SweepSpec:
    """Read a TOML spec file and expand it (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise MirrorflowError(f"spec file {path} does not exist; pass the path of a .toml spec")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MirrorflowError(f"spec {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
                              f"at offset {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise MirrorflowError(f"cannot read spec {path} ({exc.strerror or exc})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MirrorflowError(f"spec {path} is not valid TOML: {' '.join(str(exc).split())}"
                              ) from None
    raw.setdefault("name", path.stem)
    return parse_spec(raw, source=str(path), registry=registry, max_runs=max_runs)


def parse_spec(raw: Mapping[str, Any], source: str = "spec",
               registry: Mapping[str, Any] | None = None,
               max_runs: int | None = -1) -> SweepSpec:
    """Validate a spec given as a dict (the parsed TOML) and expand it into runs.

    ``max_runs``: refuse a spec of more runs (counted before expanding); ``-1``: the current
    limit (:func:`mirrorflow._core.limits.current_limits`), ``None``: no limit.
    """
    if max_runs == -1:
        max_runs = current_limits().max_runs
    if registry is None:
        from mirrorflow.experiments import REGISTRY as registry
    if not isinstance(raw, Mapping):
        raise MirrorflowError(f"{source}: a spec must be a table of keys, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise MirrorflowError(f"{source}: unknown key(s) {', '.join(unknown)}; "
                              f"allowed: {', '.join(_TOP_KEYS)}")
    exp_name = raw.get("experiment")
    if not isinstance(exp_name, str):
        raise MirrorflowError(f"{source}: 'experiment' must be given as a string, e.g. "
                              f"experiment = \"sparse-regression\"")
    if exp_name not in registry:
        raise MirrorflowError(f"{source}: unknown experiment {exp_name!r}; choose one of: "
                              f"{', '.join(sorted(registry))}")
    name = raw.get("name", exp_name)
    if not isinstance(name, str) or not name:
        raise MirrorflowError(f"{source}: 'name' must be a non-empty string")
    experiment = registry[exp_name]
    cases = raw.get("case", [{}])
    if not isinstance(cases, list) or not cases or not all(isinstance(c, dict) for c in cases):
        raise MirrorflowError(f"{source}: 'case' must be an array of tables ([[case]] ...)")
    top = _block(raw, source)
    blocks = []
    for i, case in enumerate(cases):
        where = source if len(cases) == 1 and not case else f"{source} case[{i}]"
        bad = sorted(set(case) - set(_BLOCK_KEYS))
        if bad:
            raise MirrorflowError(f"{where}: unknown key(s) {', '.join(bad)}; "
                                  f"a case holds only: {', '.join(_BLOCK_KEYS)}")
        blocks.append((where, {**top, **_block(case, where)}))
    total = sum(_count(merged) for _, merged in blocks)
    if max_runs is not None and total > max_runs:
        raise MirrorflowError(f"{source}: the spec has {total:,} runs, more than the limit of "
                              f"{max_runs:,}; split it, or raise the limit with --max-runs")
    runs: list[RunSpec] = []
    seen: set[str] = set()
    for where, merged in blocks:
        for r in expand_spec(experiment, merged, where):
            if r.run_id not in seen:  # equal configs are one run
                seen.add(r.run_id)
                runs.append(r)
    return SweepSpec(name=name, experiment=exp_name, runs=tuple(runs))


def _count(fields: Mapping[str, tuple[str, Any]]) -> int:
    """Runs of one block before expansion: product of the grid lists × the zip rows."""
    n = 1
    for kind, value in fields.values():
        if kind == "grid":
            n *= len(value)
    zips = [len(v) for kind, v in fields.values() if kind == "zip"]
    return n * (max(zips) if zips else 1)


def _block(table: Mapping[str, Any], where: str) -> dict[str, tuple[str, Any]]:
    """``{field: (kind, value)}`` for the base/grid/zip tables of one block."""
    out: dict[str, tuple[str, Any]] = {}
    for kind in _BLOCK_KEYS:
        sub = table.get(kind, {})
        if not isinstance(sub, dict):
            raise MirrorflowError(f"{where}: [{kind}] must be a table of field = value")
        for key, value in sub.items():
            if key in out:
                raise MirrorflowError(f"{where}: field {key!r} appears in both [{out[key][0]}] "
                                      f"and [{kind}]; give it in one place")
            if kind != "base":
                if not isinstance(value, list):
                    raise MirrorflowError(f"{where}: {kind}.{key} must be a list of values, "
                                          f"got {value!r}; write {key} = [{value!r}]")
                if not value:
                    raise MirrorflowError(f"{where}: {kind}.{key} is an empty list; "
                                          f"give at least one value")
            out[key] = (kind, value)
    return out


def expand_spec(experiment: Any, fields: Mapping[str, tuple[str, Any]],
                where: str = "spec") -> list[RunSpec]:
    """Expand one block ``{field: (kind, value)}`` into validated runs (grid × zip rows)."""
    from mirrorflow.experiments.base import make_config

    valid = set(getattr(experiment.config_cls, "__dataclass_fields__", {}))
    for key, (kind, _) in fields.items():
        if key not in valid:
            raise MirrorflowError(f"{where}: {kind}.{key}: unknown field of {experiment.name}'s "
                                  f"Config; valid fields: {', '.join(sorted(valid))}")
    base = {k: v for k, (kind, v) in fields.items() if kind == "base"}
    grid = {k: v for k, (kind, v) in fields.items() if kind == "grid"}
    zipped = {k: v for k, (kind, v) in fields.items() if kind == "zip"}
    lengths = {k: len(v) for k, v in zipped.items()}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise MirrorflowError(f"{where}: [zip] lists must have equal lengths ({desc})")
    n_rows = next(iter(lengths.values()), 1)
    zip_rows = [{k: v[j] for k, v in zipped.items()} for j in range(n_rows)]
    kinds = {k: kind for k, (kind, _) in fields.items()}
    runs = []
    for combo in itertools.product(*grid.values()):
        for row in zip_rows:
            overrides = {**base, **dict(zip(grid, combo)), **row}
            try:
                config = make_config(experiment.config_cls, overrides)
            except MirrorflowError as exc:
                msg = str(exc).removeprefix("invalid config: ")
                for key, kind in kinds.items():  # say which table the bad field came from
                    if msg.startswith(f"{key}:"):
                        msg = f"{kind}.{msg}"
                        break
                varying = {k: overrides[k] for k in (*grid, *zipped)}
                at = f" (run {varying})" if varying else ""
                raise MirrorflowError(f"{where}: {msg}{at}") from None
            cfg = config_to_dict(config)
            runs.append(RunSpec(run_id=run_id(experiment.name, cfg), experiment=experiment.name,
                                config=config, config_dict=cfg))
    return runs
