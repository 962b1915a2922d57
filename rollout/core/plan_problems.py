"""Pydantic's validation errors of a plan file as the `path: message` lines of `PlanError`.

Paths are written as people read the YAML (`stages[1].checks[2].threshold`), and the
messages say what the field expects in the plan's words rather than pydantic's
("must be a duration such as 30s, ...", "unknown field (did you mean 'bake'?)").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from types import NoneType, UnionType
from typing import Annotated, Any, Final, Union, get_args, get_origin

from annotated_types import Ge, Le
from pydantic import BaseModel, Tag, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from rollout.core.plan_schema import PlanDocument, did_you_mean, missing, options

_ROOT_PROBLEM: Final = (
    "the plan must be a mapping with `stages` (and optionally `settings`, `checks`, "
    "`guardrails`)"
)
_MESSAGES: Final = {
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "list_type": "must be a list",
    "too_short": "must be a non-empty list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
}


@dataclass(frozen=True, slots=True)
class _Spot:
    """Where an error points: its path as people write it, and the schema found there."""

    path: str
    owner: type[BaseModel] | None = None  # the model holding the field (or unknown key)
    field: FieldInfo | None = None
    expected: Any = None  # the type expected at the path, Optional and Annotated removed


def shape_problems(error: ValidationError) -> list[str]:
    return [_problem_line(detail) for detail in error.errors(include_url=False)]


def _problem_line(detail: ErrorDetails) -> str:
    if not detail["loc"] and detail["type"] == "model_type":
        return _ROOT_PROBLEM
    spot = _locate(detail["loc"])
    explain = _EXPLAIN.get(detail["type"])
    message = (explain(detail, spot) if explain else None) or _MESSAGES.get(
        detail["type"], detail["msg"]  # our own errors (type "plan") are worded already
    )
    return f"{spot.path}: {message}" if spot.path else message


# --- messages that need the schema at the error's spot ---------------------------------------
def _missing(_: ErrorDetails, spot: _Spot) -> str:
    return missing(spot.field)


def _unknown_field(detail: ErrorDetails, spot: _Spot) -> str | None:
    if spot.owner is None:
        return None
    allowed = list(spot.owner.model_fields)
    hint = did_you_mean(str(detail["loc"][-1]), allowed)
    return f"unknown field{hint} (allowed: {', '.join(allowed)})"


def _not_a_member(detail: ErrorDetails, spot: _Spot) -> str | None:
    if not (isinstance(spot.expected, type) and issubclass(spot.expected, Enum)):
        return None
    return f"must be one of {options(spot.expected)}, got {detail['input']!r}"


def _not_a_mapping(_: ErrorDetails, spot: _Spot) -> str | None:
    title = spot.expected.model_config.get("title") if _is_model(spot.expected) else None
    return f"{title} must be a mapping" if title else None


def _out_of_range(detail: ErrorDetails, spot: _Spot) -> str | None:
    if spot.field is None:
        return None
    ctx, got = detail.get("ctx", {}), detail["input"]
    low = next((m.ge for m in spot.field.metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in spot.field.metadata if isinstance(m, Le)), None)
    if low is not None and high is not None:
        return f"must be within {low}..{high}, got {got}"
    if detail["type"] == "less_than_equal":
        return f"must be at most {ctx.get('le')}, got {got}"
    if ctx.get("ge") == 0:
        return f"must not be negative, got {got}"
    return f"must be at least {ctx.get('ge')}, got {got}"


def _not_above(detail: ErrorDetails, _: _Spot) -> str:
    return f"must be greater than {detail.get('ctx', {}).get('gt'):g}"


_EXPLAIN: Final[dict[str, Callable[[ErrorDetails, _Spot], str | None]]] = {
    "missing": _missing,
    "extra_forbidden": _unknown_field,
    "enum": _not_a_member,
    "model_type": _not_a_mapping,
    "greater_than_equal": _out_of_range,
    "less_than_equal": _out_of_range,
    "greater_than": _not_above,
}


# --- from an error's location to the schema ----------------------------------------------------
def _locate(loc: Sequence[int | str]) -> _Spot:
    """Follow an error's location through the models, leaving out union tags (pydantic
    puts the chosen branch of a discriminated union into the location)."""
    path = ""
    owner: type[BaseModel] | None = None
    field: FieldInfo | None = None
    expected: Any = PlanDocument
    for part in loc:
        expected = _bare(expected)
        if part == "[key]":  # a dict key's own error: the path already ends at the key
            break
        tagged = _tagged_member(expected, part)
        if tagged is not None:
            expected = tagged
            continue
        in_list = get_origin(expected) is list
        if _is_model(expected):
            owner, field = expected, expected.model_fields.get(str(part))
            expected = field.annotation if field is not None else None
        else:
            owner, field = None, None
            args = get_args(expected)
            expected = args[-1] if get_origin(expected) in {list, dict} else None
        path += f"[{part}]" if in_list else (f".{part}" if path else str(part))
    return _Spot(path, owner, field, _bare(expected))


def _bare(annotation: Any) -> Any:
    """`X` from `Annotated[X, ...]` and from `X | None`."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if get_origin(annotation) in {Union, UnionType}:
            members = [arg for arg in get_args(annotation) if arg is not NoneType]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _tagged_member(annotation: Any, part: int | str) -> Any:
    if get_origin(annotation) not in {Union, UnionType}:
        return None
    for member in get_args(annotation):
        if get_origin(member) is Annotated and Tag(str(part)) in get_args(member)[1:]:
            return member
    return None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
