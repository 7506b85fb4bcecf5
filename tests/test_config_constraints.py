"""Generated checks of every experiment Config's declared fields (scikit-learn's common checks).

For every registered experiment and every Config field, invalid values are generated from the
field's *declared* type and constraints alone (its annotation and its pydantic ``ge``/``gt``/
``le``/``lt`` metadata): a value of the wrong type, the nearest value outside each bound, a
choice not in a ``Literal``, NaN / inf for floats. Each must be refused

* by the Config class itself (the constraint is declared, not only checked by the CLI),
* by ``Experiment.make_config`` — what ``mirrorflow run NAME --set FIELD=VALUE`` calls — as a
  one-line :class:`MirrorflowError` naming the field,
* and, for a seeded sample of fields per experiment, by the CLI: exit 2, one line on stderr,
  no traceback.

Every field has a description, and the ``schedule`` field's choices are the schedule table's
names (``ScheduleName`` is derived from ``SCHEDULES``).
"""

from __future__ import annotations

import math
import random
import types
import typing

import annotated_types as at
import pytest
from typer.testing import CliRunner

from mirrorflow._core.validation import MirrorflowError
from mirrorflow.cli import app
from mirrorflow.experiments import REGISTRY
from mirrorflow.experiments.base import ScheduleConfig, ScheduleName
from mirrorflow.schedules.continuous import SCHEDULE_NAMES, SCHEDULES

NAMES = sorted(REGISTRY)
NOT_A_CHOICE = "not-a-choice"


def _fields(name: str) -> dict:
    """``{field name: pydantic FieldInfo}`` of an experiment's Config."""
    return dict(REGISTRY[name].config_cls.__pydantic_fields__)


def _bounds(info) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in info.metadata:
        for key, kind in (("ge", at.Ge), ("gt", at.Gt), ("le", at.Le), ("lt", at.Lt)):
            if isinstance(m, kind):
                out[key] = getattr(m, key)
    return out


def invalid_values(info) -> list[tuple[object, str | None, str]]:
    """``(python value, command-line text or None, why)`` that the declared type and bounds of
    a field refuse (derived from the declaration only)."""
    ann = info.annotation
    members = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) \
        else (ann,)
    kinds = [m for m in members if m is not type(None)]
    assert len(kinds) == 1, f"extend the generator for the union {ann}"
    kind = kinds[0]
    bounds = _bounds(info)
    out: list[tuple[object, str | None, str]] = []
    if typing.get_origin(kind) is typing.Literal:
        assert NOT_A_CHOICE not in typing.get_args(kind)
        out += [(NOT_A_CHOICE, NOT_A_CHOICE, "not a choice"), (3.5, None, "wrong type")]
    elif kind is bool:
        out += [("maybe", "maybe", "wrong type"), (2, "2", "not a boolean")]
    elif kind is int:
        out += [("abc", "abc", "wrong type"), (1.5, "1.5", "not an integer")]
        for key, value in (("ge", bounds.get("ge", math.nan) - 1), ("gt", bounds.get("gt")),
                           ("le", bounds.get("le", math.nan) + 1), ("lt", bounds.get("lt"))):
            if key in bounds:
                out.append((int(value), str(int(value)), f"outside {key}={bounds[key]}"))
    elif kind is float:
        out += [("abc", "abc", "wrong type"), (math.nan, "nan", "not finite"),
                (math.inf, "inf", "not finite")]
        for key, value in (("ge", math.nextafter(bounds.get("ge", 0.0), -math.inf)),
                           ("gt", bounds.get("gt")),
                           ("le", math.nextafter(bounds.get("le", 0.0), math.inf)),
                           ("lt", bounds.get("lt"))):
            if key in bounds:  # the nearest float outside the bound
                out.append((float(value), repr(float(value)), f"outside {key}={bounds[key]}"))
    elif kind is str:
        out.append((3, None, "wrong type"))  # any text is a str: only the API can send a number
    else:
        raise AssertionError(f"extend the generator for the field type {kind!r}")
    return out


CASES = [(name, field, value, text, why)
         for name in NAMES for field, info in _fields(name).items()
         for value, text, why in invalid_values(info)]


def test_the_generator_refuses_what_it_should_and_not_valid_values():
    """The generator itself: hand-written fields, their invalid values, and no valid one."""
    from pydantic import Field
    from pydantic.fields import FieldInfo

    ints = FieldInfo.from_annotated_attribute(int, Field(3, ge=1, lt=10))
    assert {(v, why) for v, _, why in invalid_values(ints)} == {
        ("abc", "wrong type"), (1.5, "not an integer"), (0, "outside ge=1"), (10, "outside lt=10")}
    floats = FieldInfo.from_annotated_attribute(float | None, Field(0.5, gt=0, le=1))
    got = {why: v for v, _, why in invalid_values(floats)}
    assert got["outside gt=0"] == 0.0 and 1.0 < got["outside le=1"] < 1.0 + 1e-15
    assert math.isnan(got["not finite"]) or got["not finite"] == math.inf
    lit = FieldInfo.from_annotated_attribute(typing.Literal["a", "b"], Field("a"))
    assert [v for v, _, _ in invalid_values(lit)] == [NOT_A_CHOICE, 3.5]


def test_every_field_of_every_config_gets_invalid_values():
    per_field = {(n, f) for n, f, *_ in CASES}
    every = {(n, f) for n in NAMES for f in _fields(n)}
    assert per_field == every
    assert len(NAMES) >= 6 and len(every) >= 88


@pytest.mark.parametrize("name,field,value,text,why", CASES,
                         ids=[f"{n}-{f}-{w.replace(' ', '_')}" for n, f, _, _, w in CASES])
def test_an_invalid_value_is_a_one_line_error(name, field, value, text, why):
    exp = REGISTRY[name]
    with pytest.raises(ValueError):  # declared on the Config: refused by the class itself
        exp.config_cls(**{field: value})
    with pytest.raises(MirrorflowError) as info:
        exp.make_config({field: value})
    message = str(info.value)
    assert "\n" not in message and message.startswith("invalid config"), message
    assert field in message, message


def _cli_sample(per_experiment: int = 3) -> list[tuple[str, str, str]]:
    rng = random.Random(2026)
    out = []
    for name in NAMES:
        cases = sorted({(f, t) for n, f, _, t, _ in CASES if n == name and t is not None})
        for field, text in rng.sample(cases, min(per_experiment, len(cases))):
            out.append((name, field, text))
    return out


@pytest.mark.parametrize("name,field,text", _cli_sample())
def test_cli_set_of_an_invalid_value_exits_2_with_one_line(name, field, text):
    r = CliRunner().invoke(app, ["run", name, "--set", f"{field}={text}"])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in r.output, r.stderr
    assert r.stdout.strip() == ""  # nothing ran


@pytest.mark.parametrize("name", NAMES)
def test_every_config_field_has_a_description(name):
    missing = [f for f, info in _fields(name).items() if not (info.description or "").strip()]
    assert not missing, f"{name}: fields without a description: {missing}"


def test_schedule_choices_are_the_schedule_table():
    (choices,) = [typing.get_args(a) for a in typing.get_args(ScheduleName)
                  if typing.get_origin(a) is typing.Literal]
    assert choices == SCHEDULE_NAMES
    for key in SCHEDULE_NAMES:  # built-in names are table keys whose class carries that name
        assert SCHEDULES[key].name == key
    base = ScheduleConfig.__pydantic_fields__["schedule"]
    for name in NAMES:
        info = _fields(name)["schedule"]
        assert info.annotation == base.annotation and info.description == base.description


#: numeric fields that declare no bound on purpose: ``{(experiment, field): why}``
UNBOUNDED = {
    ("sparse-regression", "u0"): "initial u of every coordinate: any sign",
    ("sparse-regression", "v0"): "initial v of every coordinate: any sign",
}


def test_every_numeric_field_declares_a_bound_or_says_why_not():
    """A new int/float field without ge/gt/le/lt (so absurd values such as steps = 0 would
    pass) fails here until it declares one or is listed in UNBOUNDED with a reason."""
    unbounded = set()
    for name in NAMES:
        for field, info in _fields(name).items():
            kinds = set(typing.get_args(info.annotation) or (info.annotation,)) - {type(None)}
            if kinds & {int, float} and not _bounds(info):
                unbounded.add((name, field))
    assert unbounded == set(UNBOUNDED)
