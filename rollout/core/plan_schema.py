"""The shape of a rollout plan file, declared as pydantic models.

These models say which fields exist, their types, ranges and defaults; `plan_loader` adds
the rules that span fields or entries (references between checks and stages, which check
kind may go where) and builds the frozen `plan` dataclasses from the validated models.

    version: 1                       # optional
    settings: {passes_to_advance, failures_to_rollback, cooldown,
               auto_resume_after_rollback, time_scale, min_window,
               evaluation_interval, hold_too_long,
               gate_alpha, guardrail_alpha_fail, objective_alpha}
    checks:                          # reusable definitions, by name
      NAME: {kind, label, unit, description, critical, dry_run, rollback_to,
             # a threshold check (and a baseline check's value):
             query, window, op, threshold, sample_query, min_sample,
             # a statistical check (DESIGN.md §7), judged from counts:
             test, events, trials, control: {events, trials}, baseline, margin, limit,
             higher_is_worse, alpha, alpha_fail, since, slower_than}
    guardrails: [NAME | inline check, ...]   # apply in every stage after the first
    stages:
      - {name, flags: {shadow, l2, l1_percent}, bake, checks: [NAME | inline check, ...]}

A threshold is a number, or `{baseline: NAME, factor: F, margin: M}` meaning
`baseline[NAME] * F + M`, where NAME is a `kind: baseline` check of the first stage.
A statistical check's `limit` and `slower_than` take the same two forms.
Durations are `30s`, `10m`, `1h30m`, `7d`, `500ms`, or a number of seconds.
Which keys go together (a statistical check takes no op/threshold, a non-inferiority test
needs a control or a baseline, ...) is checked by `plan_stat_rules` and `plan_loader`.

A field's `description` is what it expects, phrased to complete `missing (...)`;
a model's `title` names it in `... must be a mapping` (see `plan_problems`, which turns
pydantic's errors into the `path: message` lines of `PlanError`).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from datetime import timedelta
from enum import Enum
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    StringConstraints,
    Tag,
    TypeAdapter,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from rollout.core.plan import (
    WINDOW_PLACEHOLDER,
    CheckKind,
    Comparator,
    PlanSettings,
    StatTest,
    Unit,
)

SUPPORTED_VERSION: Final = 1
CHECK_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS: Final = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_DURATION_HINT: Final = "a duration such as 30s, 10m, 1h, 7d"
_SETTINGS: Final = PlanSettings()  # the dataclass owns the defaults; the schema reuses them


def parse_duration(value: object) -> timedelta:
    """`1h30m`, `7d`, `500ms`, `-1d` (negative, rejected by the caller), or seconds."""
    if isinstance(value, bool):
        raise ValueError(f"must be {_DURATION_HINT}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("must be a finite duration")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"must be {_DURATION_HINT}")
    text = value.strip()
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if not body or _DURATION_PART.sub("", body) != "":
        raise ValueError(f"must be {_DURATION_HINT}, got {value!r}")
    total = timedelta(0)
    for amount, unit in _DURATION_PART.findall(body):
        total += _DURATION_UNITS[unit] * float(amount)
    return total * sign


def options(enum: type[Enum]) -> str:
    return ", ".join(str(member.value) for member in enum)


def did_you_mean(given: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(given, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _problem(message: str) -> PydanticCustomError:
    # No context: the message is final, and braces in it ({window}) must stay as written.
    return PydanticCustomError("plan", message)


# --- scalar types --------------------------------------------------------------------------
def _duration(value: object) -> timedelta:
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        raise _problem(str(exc)) from None
    if duration < timedelta(0):
        raise _problem(f"must not be negative, got {value!r}")
    return duration


def _positive_duration(value: object) -> timedelta:
    duration = _duration(value)
    if duration == timedelta(0):
        raise _problem("must be greater than 0")
    return duration


def _promql(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _problem("must be a non-empty PromQL expression")
    if WINDOW_PLACEHOLDER not in value:
        raise _problem(f"must use the {WINDOW_PLACEHOLDER} placeholder for its range, "
                       f"e.g. rate(metric[{WINDOW_PLACEHOLDER}])")
    # One line per query in logs and in the API, however the YAML folded it.
    return " ".join(value.split())


def _check_name(value: object) -> str:
    if isinstance(value, str) and CHECK_NAME.match(value):
        return value
    raise _problem("a check name is lower_snake_case (it becomes a metric label and appears "
                   "in every log line)")


def _stage_name(value: object) -> str:
    if isinstance(value, str) and value:
        return value
    hint = " (quote it: YAML reads off/no/yes/on as booleans)" if isinstance(value, bool) else ""
    raise _problem(f"must be a non-empty string{hint}")


def _version(value: object) -> int:
    if value == SUPPORTED_VERSION and not isinstance(value, bool):
        return SUPPORTED_VERSION
    raise _problem(f"unsupported plan version {value!r} "
                   f"(this controller reads version {SUPPORTED_VERSION})")


Duration = Annotated[timedelta, PlainValidator(_duration), Field(description=_DURATION_HINT)]
PositiveDuration = Annotated[
    timedelta, PlainValidator(_positive_duration), Field(description=_DURATION_HINT)
]
PromQL = Annotated[str, PlainValidator(_promql), Field(description="a PromQL expression")]
# Optional, yet an explicit null is a mistake (a query lost in editing), not "no query".
OptionalPromQL = Annotated[str | None, PlainValidator(_promql)]
CheckName = Annotated[str, PlainValidator(_check_name)]


def _alpha(value: float) -> float:
    if not 0 < value < 0.5:
        raise _problem(f"must lie between 0 and 0.5 (exclusive), got {value:g}")
    return value


# An error level of a statistical test: the chance of ever deciding wrongly on that side.
Alpha = Annotated[float, AfterValidator(_alpha),
                  Field(description="a probability between 0 and 0.5")]
StageName = Annotated[str, PlainValidator(_stage_name), Field(description="a non-empty string")]
Text = Annotated[str, StringConstraints(strip_whitespace=True)]


_STRICT: Final = ConfigDict(strict=True, allow_inf_nan=False)


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, **_STRICT)


def field_adapters(model: type[BaseModel]) -> dict[str, TypeAdapter[Any]]:
    """A validator per field of `model`, for judging the fields of an entry one by one."""
    return {
        name: TypeAdapter(_annotated(field), config=_STRICT)
        for name, field in model.model_fields.items()
    }


def _annotated(field: FieldInfo) -> Any:
    # The field's type with its constraints and validators, as pydantic declared it.
    return Annotated[field.annotation, field]


# --- checks --------------------------------------------------------------------------------
class RelativeThreshold(_Shape):
    """`baseline[baseline] * factor + margin`."""

    baseline: str = Field(min_length=1, description="the name of a baseline check")
    factor: float = 1.0
    margin: float = 0.0


def _threshold_tag(value: object) -> str:
    return "relative" if isinstance(value, dict) else "absolute"


ThresholdValue = Annotated[
    Annotated[float, Tag("absolute")] | Annotated[RelativeThreshold, Tag("relative")],
    Discriminator(_threshold_tag),
]


class CountsModel(_Shape):
    """The events and trials of a concurrent control cohort."""

    model_config = ConfigDict(title="control")

    events: PromQL = Field(description="a PromQL template counting the control's events")
    trials: PromQL = Field(description="a PromQL template counting the control's trials")


class CheckModel(_Shape):
    # Everything but `kind` is optional here: which kind and which test need what is a rule
    # across fields, checked by the loader (plan_loader, plan_stat_rules).
    model_config = ConfigDict(title="a check definition")

    # Enums are matched by value (strict=False): strict mode wants enum instances, which
    # YAML never produces.
    kind: CheckKind = Field(description=f"one of {options(CheckKind)}", strict=False)
    # A threshold check (and a baseline check's recorded value).
    query: OptionalPromQL = Field(default=None, description="a PromQL expression")
    window: PositiveDuration | None = Field(default=None, description=_DURATION_HINT)
    op: Comparator | None = Field(
        default=None, description=f"one of {options(Comparator)}", strict=False
    )
    threshold: ThresholdValue | None = Field(
        default=None, description="a number, or {baseline: NAME, factor, margin}"
    )
    sample_query: OptionalPromQL = None
    min_sample: float = Field(default=0.0, ge=0)
    # A statistical check: counts since the evidence began, an anytime-valid test.
    test: StatTest | None = Field(
        default=None, description=f"one of {options(StatTest)}", strict=False
    )
    events: OptionalPromQL = Field(
        default=None, description="a PromQL template counting the events (errors, slow "
                                  "answers, stale audits, ...) over {window}")
    trials: OptionalPromQL = Field(
        default=None, description="a PromQL template counting the trials the events are "
                                  "among (queries, audits, ...) over {window}")
    control: CountsModel | None = Field(
        default=None, description="{events, trials} of a concurrent control cohort")
    baseline: str | None = Field(
        default=None, min_length=1,
        description="the name of a baseline check that records events and trials")
    margin: float | None = Field(
        default=None, ge=0,
        description="the harm tolerated, in rate units: 0.005 = 0.5 percentage points")
    limit: ThresholdValue | None = Field(
        default=None, description="a rate between 0 and 1, or {baseline: NAME, factor, margin}")
    higher_is_worse: bool = True
    alpha: Alpha | None = None
    alpha_fail: Alpha | None = None
    since: StageName | None = Field(
        default=None, description="the name of the stage whose confirmation starts the evidence")
    slower_than: ThresholdValue | None = Field(
        default=None, description="seconds, or {baseline: NAME, factor, margin}")
    critical: bool = False
    dry_run: bool = False
    unit: Unit = Field(default=Unit.NUMBER, strict=False)
    label: Text = ""
    description: Text = ""
    rollback_to: StageName | None = Field(
        default=None, description="the name of an earlier stage to roll back to on a breach")


class InlineCheck(CheckModel):
    """A check defined where it is used (a stage's or the guardrails' list)."""

    name: CheckName = Field(description="an inline check needs a lower_snake_case name")


def _item_tag(value: object) -> str | None:
    if isinstance(value, str):
        return "reference"
    return "inline" if isinstance(value, dict) else None


CheckItem = Annotated[
    Annotated[str, Tag("reference")] | Annotated[InlineCheck, Tag("inline")],
    Discriminator(
        _item_tag,
        custom_error_type="plan",
        custom_error_message="must be a check name or an inline check (a mapping with a name)",
    ),
]


# --- stages, settings, the file ------------------------------------------------------------
class FlagsModel(_Shape):
    shadow: bool = Field(description="every stage states all flags")
    l2: bool = Field(description="every stage states all flags")
    l1_percent: int = Field(ge=0, le=100, description="every stage states all flags")


class StageModel(_Shape):
    model_config = ConfigDict(title="a stage")

    name: StageName
    flags: FlagsModel = Field(description="a mapping {shadow, l2, l1_percent}")
    bake: Duration
    checks: list[CheckItem] = Field(default_factory=list)
    description: Text = ""


class SettingsModel(_Shape):
    passes_to_advance: int = Field(default=_SETTINGS.passes_to_advance, ge=1)
    failures_to_rollback: int = Field(default=_SETTINGS.failures_to_rollback, ge=1)
    cooldown: Duration = _SETTINGS.cooldown
    auto_resume_after_rollback: bool = _SETTINGS.auto_resume_after_rollback
    time_scale: float = Field(default=_SETTINGS.time_scale, gt=0)
    min_window: PositiveDuration = _SETTINGS.min_window
    evaluation_interval: PositiveDuration = _SETTINGS.evaluation_interval
    hold_too_long: Duration | None = _SETTINGS.hold_too_long  # null: never notify
    gate_alpha: Alpha = _SETTINGS.gate_alpha
    guardrail_alpha_fail: Alpha = _SETTINGS.guardrail_alpha_fail
    objective_alpha: Alpha = _SETTINGS.objective_alpha


class PlanDocument(_Shape):
    version: Annotated[int, PlainValidator(_version)] = SUPPORTED_VERSION
    settings: SettingsModel = Field(default_factory=SettingsModel)
    checks: dict[CheckName, CheckModel] = Field(default_factory=dict)
    guardrails: list[CheckItem] = Field(default_factory=list)
    stages: list[StageModel] = Field(min_length=1, description="a plan needs at least one stage")


def missing(field: FieldInfo | None) -> str:
    return f"missing ({field.description})" if field and field.description else "missing"

