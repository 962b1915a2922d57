"""YAML → validated, frozen `Plan`.

Every problem is reported with the path of the field it concerns
(`stages[3].checks[1].threshold: must be a number`), and all problems of a file are
reported at once, so that `rollout plan validate FILE` is a single round trip for whoever
edits the plan.

The file's shape:

    version: 1                       # optional
    settings: {passes_to_advance, failures_to_rollback, cooldown,
               auto_resume_after_rollback, time_scale, min_window,
               evaluation_interval, hold_too_long}
    checks:                          # reusable definitions, by name
      NAME: {kind, query, window, op, threshold, sample_query, min_sample,
             critical, dry_run, unit, label, description}
    guardrails: [NAME | inline check, ...]   # apply in every stage after the first
    stages:
      - {name, flags: {shadow, l2, l1_percent}, bake, checks: [NAME | inline check, ...]}

A threshold is a number, or `{baseline: NAME, factor: F, margin: M}` meaning
`baseline[NAME] * F + M`, where NAME is a `kind: baseline` check of the first stage.
Durations are `30s`, `10m`, `1h30m`, `7d`, `500ms`, or a number of seconds.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final, TypeVar

import yaml

from rollout.core.flags import FlagSettings
from rollout.core.plan import (
    WINDOW_PLACEHOLDER,
    CheckKind,
    CheckSpec,
    Comparator,
    Plan,
    PlanSettings,
    Stage,
    Threshold,
    Unit,
)
from rollout.plans import default_plan_path

SUPPORTED_VERSION: Final = 1
_Choice = TypeVar("_Choice", CheckKind, Comparator, Unit)

_TOP_FIELDS: Final = ("version", "settings", "checks", "guardrails", "stages")
_SETTINGS_FIELDS: Final = (
    "passes_to_advance", "failures_to_rollback", "cooldown", "auto_resume_after_rollback",
    "time_scale", "min_window", "evaluation_interval", "hold_too_long",
)
_STAGE_FIELDS: Final = ("name", "flags", "bake", "checks", "description")
_FLAG_FIELDS: Final = ("shadow", "l2", "l1_percent")
_CHECK_FIELDS: Final = (
    "kind", "query", "window", "op", "threshold", "sample_query", "min_sample",
    "critical", "dry_run", "unit", "label", "description",
)
_THRESHOLD_FIELDS: Final = ("baseline", "factor", "margin")
_CHECK_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS: Final = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


class PlanError(ValueError):
    """A plan that does not validate; `problems` holds one `path: message` per problem."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source}: invalid rollout plan ({count} {noun}):\n{listing}")


def load_plan(path: str | os.PathLike[str]) -> Plan:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(str(file), [f"cannot read the file: {exc.strerror or exc}"]) from exc
    return parse_plan(text, source=str(file))


def load_default_plan() -> Plan:
    return load_plan(default_plan_path())


def parse_plan(text: str, source: str = "<plan>") -> Plan:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise PlanError(source, [f"{where}not valid YAML: {exc}"]) from exc
    return plan_from_mapping(data, source=source)


def plan_from_mapping(data: object, source: str = "<plan>") -> Plan:
    reader = _Reader()
    plan = reader.plan(data)
    if reader.problems or plan is None:
        raise PlanError(source, reader.problems or ["the plan is empty"])
    return plan


@dataclass(frozen=True, slots=True)
class _Defined:
    spec: CheckSpec | None  # None when the definition itself had problems
    path: str


class _Reader:
    """Walks the raw YAML, collecting problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)

    # --- top level ----------------------------------------------------------------------
    def plan(self, data: object) -> Plan | None:
        if not isinstance(data, Mapping):
            self.problem("", "the plan must be a mapping with `stages` (and optionally "
                             "`settings`, `checks`, `guardrails`)")
            return None
        self.known_fields(data, "", _TOP_FIELDS)
        version = data.get("version", SUPPORTED_VERSION)
        if version != SUPPORTED_VERSION:
            self.problem("version", f"unsupported plan version {version!r} "
                                    f"(this controller reads version {SUPPORTED_VERSION})")
        settings = self.settings(data.get("settings", {}))
        library = self.library(data.get("checks", {}))
        guardrails = self.guardrails(data.get("guardrails", []), library)
        stages = self.stages(data.get("stages"), library, guardrails)
        if stages is None or settings is None:
            return None
        self.cross_check(stages, guardrails, library)
        if self.problems:
            return None
        return Plan(
            stages=tuple(stage for stage, _ in stages),
            guardrails=tuple(d.spec for d in guardrails if d.spec is not None),
            settings=settings,
        )

    def settings(self, raw: object) -> PlanSettings | None:
        path = "settings"
        if not isinstance(raw, Mapping):
            self.problem(path, "must be a mapping")
            return None
        self.known_fields(raw, path, _SETTINGS_FIELDS)
        defaults = PlanSettings()
        before = len(self.problems)
        passes = self.integer(raw, path, "passes_to_advance", defaults.passes_to_advance, 1)
        failures = self.integer(
            raw, path, "failures_to_rollback", defaults.failures_to_rollback, 1
        )
        cooldown = self.duration_field(raw, path, "cooldown", defaults.cooldown)
        auto_resume = self.boolean(
            raw, path, "auto_resume_after_rollback", defaults.auto_resume_after_rollback
        )
        time_scale = self.number(raw, path, "time_scale", defaults.time_scale)
        if time_scale is not None and time_scale <= 0:
            self.problem(f"{path}.time_scale", "must be greater than 0")
        min_window = self.duration_field(
            raw, path, "min_window", defaults.min_window, positive=True
        )
        interval = self.duration_field(
            raw, path, "evaluation_interval", defaults.evaluation_interval, positive=True
        )
        hold_too_long: timedelta | None = defaults.hold_too_long
        if "hold_too_long" in raw and raw["hold_too_long"] is None:
            hold_too_long = None  # explicitly disabled
        else:
            hold_too_long = self.duration_field(
                raw, path, "hold_too_long", defaults.hold_too_long or timedelta(0)
            )
        if len(self.problems) > before:
            return None
        assert passes is not None and failures is not None and cooldown is not None
        assert auto_resume is not None and time_scale is not None
        assert min_window is not None and interval is not None
        return PlanSettings(
            passes_to_advance=passes,
            failures_to_rollback=failures,
            cooldown=cooldown,
            auto_resume_after_rollback=auto_resume,
            time_scale=time_scale,
            min_window=min_window,
            evaluation_interval=interval,
            hold_too_long=hold_too_long,
        )

    # --- checks -------------------------------------------------------------------------
    def library(self, raw: object) -> dict[str, _Defined]:
        path = "checks"
        if not isinstance(raw, Mapping):
            self.problem(path, "must be a mapping from check name to its definition")
            return {}
        library: dict[str, _Defined] = {}
        for name, definition in raw.items():
            where = f"{path}.{name}"
            if not isinstance(name, str) or not _CHECK_NAME.match(name):
                self.problem(where, "a check name is lower_snake_case (it becomes a metric "
                                    "label and appears in every log line)")
                continue
            library[name] = _Defined(self.check(definition, where, name), where)
        return library

    def guardrails(self, raw: object, library: Mapping[str, _Defined]) -> list[_Defined]:
        path = "guardrails"
        if not isinstance(raw, list):
            self.problem(path, "must be a list of check names or inline checks")
            return []
        guardrails: list[_Defined] = []
        seen: set[str] = set()
        for position, item in enumerate(raw):
            where = f"{path}[{position}]"
            defined = self.check_item(item, where, library)
            if defined is None:
                continue
            if defined.spec is not None:
                if defined.spec.kind is not CheckKind.GUARDRAIL:
                    self.problem(where, f"check {defined.spec.name!r} is a "
                                        f"{defined.spec.kind}; only guardrails belong here")
                    continue
                if defined.spec.name in seen:
                    self.problem(where, f"guardrail {defined.spec.name!r} is listed twice")
                    continue
                seen.add(defined.spec.name)
            guardrails.append(defined)
        return guardrails

    def check_item(
        self, item: object, where: str, library: Mapping[str, _Defined]
    ) -> _Defined | None:
        """A stage's or the guardrails' list entry: a library name or an inline check."""
        if isinstance(item, str):
            if item in library:
                return library[item]
            self.problem(where, f"unknown check {item!r}{_suggest(item, library)}")
            return None
        if isinstance(item, Mapping):
            name = item.get("name")
            if not isinstance(name, str) or not _CHECK_NAME.match(name):
                self.problem(f"{where}.name", "an inline check needs a lower_snake_case name")
                return None
            if name in library:
                self.problem(f"{where}.name", f"check {name!r} is already defined at "
                                              f"{library[name].path}; refer to it by name")
                return None
            body = {key: value for key, value in item.items() if key != "name"}
            return _Defined(self.check(body, where, name), where)
        self.problem(where, "must be a check name or an inline check (a mapping with a name)")
        return None

    def check(self, raw: object, path: str, name: str) -> CheckSpec | None:
        if not isinstance(raw, Mapping):
            self.problem(path, "a check definition must be a mapping")
            return None
        self.known_fields(raw, path, _CHECK_FIELDS)
        before = len(self.problems)
        kind = self.choice(raw, path, "kind", CheckKind, required=True)
        query = self.template(raw, path, "query", required=True)
        window = self.duration_field(raw, path, "window", None, positive=True)
        sample_query = self.template(raw, path, "sample_query", required=False)
        min_sample = self.number(raw, path, "min_sample", 0.0)
        if min_sample is not None and min_sample < 0:
            self.problem(f"{path}.min_sample", "must not be negative")
        if min_sample and sample_query is None and "sample_query" not in raw:
            self.problem(f"{path}.min_sample", "needs a sample_query to count the traffic")
        critical = self.boolean(raw, path, "critical", False)
        dry_run = self.boolean(raw, path, "dry_run", False)
        unit = self.choice(raw, path, "unit", Unit, required=False) or Unit.NUMBER
        label = self.text(raw, path, "label")
        description = self.text(raw, path, "description")

        comparator: Comparator | None = None
        threshold: Threshold | None = None
        if kind is CheckKind.BASELINE:
            for field_name in ("op", "threshold"):
                if field_name in raw:
                    self.problem(f"{path}.{field_name}", "a baseline check only measures; "
                                                         "it has no op or threshold")
            if raw.get("critical") or raw.get("dry_run"):
                self.problem(path, "a baseline check cannot be critical or dry_run")
        elif kind is not None:
            comparator = self.choice(raw, path, "op", Comparator, required=True)
            threshold = self.threshold(raw, path)
            if critical and kind is not CheckKind.GUARDRAIL:
                self.problem(f"{path}.critical", "only a guardrail can be critical "
                                                 "(critical means: roll back after 1 cycle)")
        if len(self.problems) > before:
            return None
        assert kind is not None and query is not None and window is not None
        return CheckSpec(
            name=name,
            kind=kind,
            query=query,
            window=window,
            comparator=comparator,
            threshold=threshold,
            sample_query=sample_query,
            min_sample=min_sample or 0.0,
            critical=bool(critical),
            dry_run=bool(dry_run),
            unit=unit,
            label=label,
            description=description,
        )

    def threshold(self, raw: Mapping[object, object], path: str) -> Threshold | None:
        where = f"{path}.threshold"
        if "threshold" not in raw:
            self.problem(where, "missing (a number, or {baseline: NAME, factor, margin})")
            return None
        value = raw["threshold"]
        if isinstance(value, Mapping):
            self.known_fields(value, where, _THRESHOLD_FIELDS)
            baseline = value.get("baseline")
            if not isinstance(baseline, str) or not baseline:
                self.problem(f"{where}.baseline", "must name a baseline check")
                return None
            factor = self.number(value, where, "factor", 1.0)
            margin = self.number(value, where, "margin", 0.0)
            if factor is None or margin is None:
                return None
            return Threshold(baseline=baseline, factor=factor, margin=margin)
        number = _as_number(value)
        if number is None:
            self.problem(where, "must be a number (or {baseline: NAME, factor, margin})")
            return None
        return Threshold(absolute=number)

    # --- stages -------------------------------------------------------------------------
    def stages(
        self, raw: object, library: Mapping[str, _Defined], guardrails: Sequence[_Defined]
    ) -> list[tuple[Stage, list[_Defined]]] | None:
        if raw is None:
            self.problem("stages", "missing: a plan needs at least one stage")
            return None
        if not isinstance(raw, list) or not raw:
            self.problem("stages", "must be a non-empty list")
            return None
        global_names = {d.spec.name for d in guardrails if d.spec is not None}
        parsed: list[tuple[Stage, list[_Defined]]] = []
        first_seen: dict[str, int] = {}
        complete = True
        for index, item in enumerate(raw):
            path = f"stages[{index}]"
            if not isinstance(item, Mapping):
                self.problem(path, "a stage must be a mapping")
                complete = False
                continue
            self.known_fields(item, path, _STAGE_FIELDS)
            name = item.get("name")
            if not isinstance(name, str) or not name:
                hint = (" (quote it: YAML reads off/no/yes/on as booleans)"
                        if isinstance(name, bool) else "")
                self.problem(f"{path}.name", f"must be a non-empty string{hint}")
                name = None
            elif name in first_seen:
                self.problem(f"{path}.name", f"duplicate stage name {name!r} "
                                             f"(also stages[{first_seen[name]}])")
            else:
                first_seen[name] = index
            flags = self.flags(item.get("flags"), f"{path}.flags")
            bake = self.duration_field(item, path, "bake", None)
            self.text(item, path, "description")
            checks = self.stage_checks(item.get("checks", []), path, index, library,
                                       global_names)
            if name is None or flags is None or bake is None or checks is None:
                complete = False
                continue
            specs = tuple(d.spec for d in checks if d.spec is not None)
            parsed.append((Stage(name=name, flags=flags, bake=bake, checks=specs), checks))
        return parsed if complete else None

    def stage_checks(
        self,
        raw: object,
        stage_path: str,
        stage_index: int,
        library: Mapping[str, _Defined],
        global_names: set[str],
    ) -> list[_Defined] | None:
        path = f"{stage_path}.checks"
        if not isinstance(raw, list):
            self.problem(path, "must be a list of check names or inline checks")
            return None
        checks: list[_Defined] = []
        seen: set[str] = set()
        for position, item in enumerate(raw):
            where = f"{path}[{position}]"
            defined = self.check_item(item, where, library)
            if defined is None or defined.spec is None:
                continue
            spec = defined.spec
            if spec.name in seen:
                self.problem(where, f"check {spec.name!r} is listed twice in this stage")
                continue
            seen.add(spec.name)
            if spec.name in global_names:
                self.problem(where, f"{spec.name!r} is already a global guardrail "
                                    "(it applies in every stage after the first)")
                continue
            if spec.kind is CheckKind.BASELINE and stage_index != 0:
                self.problem(where, f"baseline check {spec.name!r} belongs in the first "
                                    "stage, where the baseline is recorded")
                continue
            if spec.kind is CheckKind.GUARDRAIL and stage_index == 0:
                self.problem(where, f"guardrail {spec.name!r} cannot apply in the first "
                                    "stage: there is nothing to roll back to")
                continue
            checks.append(defined)
        return checks

    def flags(self, raw: object, path: str) -> FlagSettings | None:
        if not isinstance(raw, Mapping):
            self.problem(path, "missing or not a mapping {shadow, l2, l1_percent}")
            return None
        self.known_fields(raw, path, _FLAG_FIELDS)
        before = len(self.problems)
        for field_name in _FLAG_FIELDS:
            if field_name not in raw:
                self.problem(f"{path}.{field_name}", "missing (every stage states all flags)")
        shadow = self.boolean(raw, path, "shadow", False)
        l2 = self.boolean(raw, path, "l2", False)
        percent = raw.get("l1_percent", 0)
        if isinstance(percent, bool) or not isinstance(percent, int):
            self.problem(f"{path}.l1_percent", "must be a whole number from 0 to 100")
        elif not 0 <= percent <= 100:
            self.problem(f"{path}.l1_percent", f"must be within 0..100, got {percent}")
        if len(self.problems) > before:
            return None
        return FlagSettings(shadow=bool(shadow), l2=bool(l2), l1_percent=int(percent))

    # --- cross references ---------------------------------------------------------------
    def cross_check(
        self,
        stages: Sequence[tuple[Stage, list[_Defined]]],
        guardrails: Sequence[_Defined],
        library: Mapping[str, _Defined],
    ) -> None:
        first_stage, first_checks = stages[0]
        baselines = {
            d.spec.name for d in first_checks
            if d.spec is not None and d.spec.kind is CheckKind.BASELINE
        }
        used: list[_Defined] = list(guardrails)
        for _, checks in stages:
            used.extend(checks)
        # A library check used nowhere can still be wrong; it would be used one day.
        used.extend(library.values())
        reported: set[str] = set()
        for defined in used:
            spec = defined.spec
            if spec is None or spec.threshold is None or spec.threshold.baseline is None:
                continue
            if spec.threshold.baseline in baselines or defined.path in reported:
                continue
            reported.add(defined.path)
            known = ", ".join(sorted(baselines)) or "none"
            self.problem(
                f"{defined.path}.threshold.baseline",
                f"unknown baseline {spec.threshold.baseline!r} (baseline checks of stage "
                f"{first_stage.name!r}: {known})",
            )

    # --- scalar fields ------------------------------------------------------------------
    def known_fields(
        self, raw: Mapping[object, object], path: str, allowed: Sequence[str]
    ) -> None:
        for key in raw:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                hint = _suggest(str(key), allowed)
                self.problem(where, f"unknown field{hint} (allowed: {', '.join(allowed)})")

    def integer(
        self, raw: Mapping[object, object], path: str, key: str, default: int, minimum: int
    ) -> int | None:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(f"{path}.{key}", "must be a whole number")
            return None
        if value < minimum:
            self.problem(f"{path}.{key}", f"must be at least {minimum}, got {value}")
            return None
        return value

    def number(
        self, raw: Mapping[object, object], path: str, key: str, default: float
    ) -> float | None:
        value = _as_number(raw.get(key, default))
        if value is None:
            self.problem(f"{path}.{key}", "must be a number")
        return value

    def boolean(
        self, raw: Mapping[object, object], path: str, key: str, default: bool
    ) -> bool | None:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.problem(f"{path}.{key}", "must be true or false")
            return None
        return value

    def text(self, raw: Mapping[object, object], path: str, key: str) -> str:
        value = raw.get(key, "")
        if not isinstance(value, str):
            self.problem(f"{path}.{key}", "must be a string")
            return ""
        return value.strip()

    def template(
        self, raw: Mapping[object, object], path: str, key: str, *, required: bool
    ) -> str | None:
        if key not in raw:
            if required:
                self.problem(f"{path}.{key}", "missing (a PromQL expression)")
            return None
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            self.problem(f"{path}.{key}", "must be a non-empty PromQL expression")
            return None
        if WINDOW_PLACEHOLDER not in value:
            self.problem(f"{path}.{key}", f"must use the {WINDOW_PLACEHOLDER} placeholder "
                                          "for its range, e.g. rate(metric[{window}])")
            return None
        return " ".join(value.split())

    def choice(
        self,
        raw: Mapping[object, object],
        path: str,
        key: str,
        enum: type[_Choice],
        *,
        required: bool,
    ) -> _Choice | None:
        if key not in raw:
            if required:
                self.problem(f"{path}.{key}", f"missing (one of {_options(enum)})")
            return None
        value = raw[key]
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return enum(value)
        except ValueError:
            self.problem(f"{path}.{key}", f"must be one of {_options(enum)}, got {value!r}")
            return None

    def duration_field(
        self,
        raw: Mapping[object, object],
        path: str,
        key: str,
        default: timedelta | None,
        *,
        positive: bool = False,
    ) -> timedelta | None:
        where = f"{path}.{key}"
        if key not in raw:
            if default is None:
                self.problem(where, "missing (a duration such as 30s, 10m, 1h, 7d)")
            return default
        value = raw[key]
        try:
            duration = parse_duration(value)
        except ValueError as exc:
            self.problem(where, str(exc))
            return None
        if duration < timedelta(0):
            self.problem(where, f"must not be negative, got {value!r}")
            return None
        if positive and duration == timedelta(0):
            self.problem(where, "must be greater than 0")
            return None
        return duration


def parse_duration(value: object) -> timedelta:
    """`1h30m`, `7d`, `500ms`, `-1d` (negative, rejected by the caller), or seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 10m, 1h, 7d")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("must be a finite duration")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError("must be a duration such as 30s, 10m, 1h, 7d")
    text = value.strip()
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if not body or _DURATION_PART.sub("", body) != "":
        raise ValueError(f"must be a duration such as 30s, 10m, 1h, 7d, got {value!r}")
    total = timedelta(0)
    for amount, unit in _DURATION_PART.findall(body):
        total += _DURATION_UNITS[unit] * float(amount)
    return total * sign


def _as_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _options(enum: type[CheckKind] | type[Comparator] | type[Unit]) -> str:
    return ", ".join(str(member.value) for member in enum)


def _suggest(given: str, known: Mapping[str, object] | Sequence[str]) -> str:
    close = difflib.get_close_matches(given, list(known), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if isinstance(known, Mapping):
        return f" (defined: {', '.join(sorted(known))})" if known else " (no checks defined)"
    return ""
