"""YAML → validated, frozen `Plan`.

Every problem is reported with the path of the field it concerns
(`stages[3].checks[1].threshold: must be a number`), and all problems of a file are
reported at once, so that `rollout plan validate FILE` is a single round trip for whoever
edits the plan.

`plan_schema` declares the file's shape (pydantic) and `plan_problems` words its errors.
This module parses the YAML, adds the rules that span fields or entries — which check may
go in which stage, references to checks and stages, with `plan_stat_rules` for what a
check's kind and test ask of its fields and the baselines and stages they name — and
builds the `Plan`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import TypeAdapter, ValidationError

from rollout.core.plan import CheckKind, Plan
from rollout.core.plan_build import build_plan
from rollout.core.plan_problems import shape_problems
from rollout.core.plan_schema import (
    CheckModel,
    CheckName,
    PlanDocument,
    StageName,
    did_you_mean,
    field_adapters,
    parse_duration,
)
from rollout.core.plan_stat_rules import (
    INVALID,
    Definition,
    Fields,
    References,
    check_rules,
    reference_rules,
)
from rollout.plans import default_plan_path

__all__ = [
    "PlanError",
    "load_default_plan",
    "load_plan",
    "parse_duration",
    "parse_plan",
    "plan_from_mapping",
]

_CHECK_NAME: Final[TypeAdapter[str]] = TypeAdapter(CheckName)
_STAGE_NAME: Final[TypeAdapter[str]] = TypeAdapter(StageName)
_FIELDS: Final = field_adapters(CheckModel)


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
    try:
        document: PlanDocument | None = PlanDocument.model_validate(data)
        problems: list[str] = []
    except ValidationError as exc:
        document, problems = None, shape_problems(exc)
    # The rules across fields and entries read every field that is valid on its own, so
    # that they run despite problems elsewhere and one run reports everything.
    problems += _CrossCheck(_outline(data)).run()
    if problems or document is None:
        raise PlanError(source, problems or ["the plan is empty"])
    return build_plan(document)


# --- what the cross-checks look at -----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Entry:
    """One item of a stage's or the guardrails' check list: a name, or an inline check."""

    path: str
    name: str
    inline: Fields | None = None  # None: a reference to a library check


@dataclass(frozen=True, slots=True)
class _StageOutline:
    index: int
    name: str | None  # None when the name itself has problems
    entries: tuple[_Entry, ...]


@dataclass(frozen=True, slots=True)
class _Outline:
    library: Mapping[str, Fields]
    guardrails: tuple[_Entry, ...]
    stages: tuple[_StageOutline, ...]


def _outline(data: object) -> _Outline:
    raw = data if isinstance(data, Mapping) else {}
    checks = raw.get("checks")
    library = {
        name: _fields(body)
        for name, body in (checks.items() if isinstance(checks, Mapping) else ())
        if _valid(_CHECK_NAME, name) is not INVALID
    }
    raw_stages = raw.get("stages")
    stages = tuple(
        _StageOutline(index, _name(stage.get("name")),
                      _entries(f"stages[{index}].checks", stage.get("checks")))
        for index, stage in enumerate(raw_stages if isinstance(raw_stages, list) else ())
        if isinstance(stage, Mapping)
    )
    return _Outline(library, _entries("guardrails", raw.get("guardrails")), stages)


def _valid(adapter: TypeAdapter[Any], value: object) -> object:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return INVALID


def _name(value: object) -> str | None:
    name = _valid(_STAGE_NAME, value)
    return name if isinstance(name, str) else None


def _fields(raw: object) -> Fields:
    if not isinstance(raw, Mapping):
        return {}
    return {name: _valid(adapter, raw[name]) for name, adapter in _FIELDS.items() if name in raw}


def _entries(path: str, raw: object) -> tuple[_Entry, ...]:
    entries: list[_Entry] = []
    for index, item in enumerate(raw if isinstance(raw, list) else ()):
        where = f"{path}[{index}]"
        if isinstance(item, str):
            entries.append(_Entry(where, item))
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            entries.append(_Entry(where, item["name"], inline=_fields(item)))
    return tuple(entries)


# --- rules across fields and entries ---------------------------------------------------------
class _CrossCheck:
    def __init__(self, outline: _Outline) -> None:
        self.outline = outline
        self.problems: list[str] = []
        # Every definition, by the path it was defined at; inline ones join as they are met.
        self.definitions = [Definition(f"checks.{name}", name, fields)
                            for name, fields in outline.library.items()]
        self.baselines: dict[str, Fields] = {}  # baseline checks of the first stage
        self.unknown_in_first: set[str] = set()  # first-stage checks of unknown kind
        self.uses: dict[str, list[int]] = {}  # check name -> indices of the stages using it

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def run(self) -> list[str]:
        for definition in self.definitions:
            self.rules(definition.path, definition.fields)
        guardrails = self.guardrails()
        for stage in self.outline.stages:
            self.stage(stage, guardrails)
        for name in guardrails:  # a guardrail applies in every stage after the first
            self.uses[name] = [s.index for s in self.outline.stages if s.index > 0]
        first = next((s for s in self.outline.stages if s.index == 0), None)
        if first is None:
            return self.problems  # no first stage, no baselines: its own problem says why
        names: dict[int, str | None] = {s.index: s.name for s in self.outline.stages}
        reference_rules(References(
            definitions=self.definitions,
            stages=[names.get(index) for index in range(max(names) + 1)],
            first_stage=repr(first.name) if first.name is not None else "stages[0]",
            baselines=self.baselines, unknown_in_first=self.unknown_in_first, uses=self.uses,
        ), self.problem)
        return self.problems

    def rules(self, path: str, fields: Fields) -> None:
        """What a check's kind asks of its other fields."""
        kind = fields.get("kind")
        if not isinstance(kind, CheckKind):
            return  # missing or invalid: the schema said so, and the rules depend on it
        check_rules(path, kind, fields, self.problem)
        if kind is CheckKind.BASELINE:
            if fields.get("critical") is True or fields.get("dry_run") is True:
                self.problem(path, "a baseline check cannot be critical or dry_run")
        elif fields.get("critical") is True and kind is not CheckKind.GUARDRAIL:
            self.problem(f"{path}.critical", "only a guardrail can be critical "
                                             "(critical means: roll back after 1 cycle)")
        self.rollback_target(path, kind, fields.get("rollback_to"))
        min_sample = fields.get("min_sample")
        if isinstance(min_sample, float) and min_sample > 0 and "sample_query" not in fields:
            self.problem(f"{path}.min_sample", "needs a sample_query to count the traffic")

    def rollback_target(self, path: str, kind: CheckKind, target: object) -> None:
        if target is None or target is INVALID:
            return
        if kind is not CheckKind.GUARDRAIL:
            self.problem(f"{path}.rollback_to", "only a guardrail rolls back")
            return
        names = [s.name for s in self.outline.stages if s.name is not None]
        if target not in names:
            self.problem(f"{path}.rollback_to", f"unknown stage {target!r}"
                         f"{did_you_mean(str(target), names)}; stages: {', '.join(names)}")
        elif target == names[-1]:
            self.problem(f"{path}.rollback_to", f"{target!r} is the last stage: a rollback "
                                                "must go to an earlier one")

    def resolve(self, entry: _Entry) -> tuple[CheckKind, Fields] | None:
        """The kind and fields of the check an entry names (None: unknown), reporting bad
        references."""
        library = self.outline.library
        if entry.inline is not None:
            if entry.name in library:
                self.problem(f"{entry.path}.name", f"check {entry.name!r} is already defined "
                                                   f"at checks.{entry.name}; refer to it by name")
                return None
            self.definitions.append(Definition(entry.path, entry.name, entry.inline))
            self.rules(entry.path, entry.inline)
            fields = entry.inline
        elif entry.name in library:
            fields = library[entry.name]
        else:
            hint = did_you_mean(entry.name, library) or (
                f" (defined: {', '.join(sorted(library))})" if library else " (no checks defined)"
            )
            self.problem(entry.path, f"unknown check {entry.name!r}{hint}")
            return None
        kind = fields.get("kind")
        return (kind, fields) if isinstance(kind, CheckKind) else None

    def guardrails(self) -> set[str]:
        names: set[str] = set()
        for entry in self.outline.guardrails:
            resolved = self.resolve(entry)
            if resolved is None:
                continue
            kind = resolved[0]
            if kind is not CheckKind.GUARDRAIL:
                article = "an" if kind is CheckKind.OBJECTIVE else "a"
                self.problem(entry.path, f"check {entry.name!r} is {article} {kind}; "
                                         "only guardrails belong here")
            elif entry.name in names:
                self.problem(entry.path, f"guardrail {entry.name!r} is listed twice")
            else:
                names.add(entry.name)
        return names

    def stage(self, stage: _StageOutline, guardrails: set[str]) -> None:
        path = f"stages[{stage.index}]"
        earlier = next((s.index for s in self.outline.stages
                        if s.name == stage.name and s.index < stage.index), None)
        if stage.name is not None and earlier is not None:
            self.problem(f"{path}.name", f"duplicate stage name {stage.name!r} "
                                         f"(also stages[{earlier}])")
        seen: set[str] = set()
        for entry in stage.entries:
            resolved = self.resolve(entry)
            if resolved is None:
                if stage.index == 0:
                    self.unknown_in_first.add(entry.name)
                continue
            kind, fields = resolved
            self.uses.setdefault(entry.name, []).append(stage.index)
            if entry.name in seen:
                self.problem(entry.path, f"check {entry.name!r} is listed twice in this stage")
            elif entry.name in guardrails:
                self.problem(entry.path, f"{entry.name!r} is already a global guardrail "
                                         "(it applies in every stage after the first)")
            elif kind is CheckKind.BASELINE and stage.index != 0:
                self.problem(entry.path, f"baseline check {entry.name!r} belongs in the first "
                                         "stage, where the baseline is recorded")
            elif kind is CheckKind.GUARDRAIL and stage.index == 0:
                self.problem(entry.path, f"guardrail {entry.name!r} cannot apply in the first "
                                         "stage: there is nothing to roll back to")
            elif kind is CheckKind.BASELINE:
                self.baselines[entry.name] = fields
            seen.add(entry.name)
