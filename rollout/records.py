"""What the controller stores and shows, as typed models: the decision log's entries, the
last-cycle summary, the transition intent, and their parts.

They cross every module boundary of the runtime (the cycle writes them, the state store
keeps them as JSON, the HTTP API, the CLI, the page and the demo read them), so they are
pydantic models: one schema, validated on the way in from Redis, documented in OpenAPI.
Reading is lenient about what older controllers wrote (unknown keys are ignored, every
part but `kind` has a default), so an upgrade never makes the log unreadable.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, computed_field

from rollout.core.flags import FlagSettings

EntryKind = Literal[
    "cycle",  # a scheduled evaluation that acted (or held)
    "command",  # a person's pause/resume/promote/rollback
    "dry-run",  # `rollout evaluate --dry-run`: computed, never stored
    "flag-write-failed",  # the decision's flags could not be written: state unchanged
    "recovered",  # an interrupted stage change found complete and recorded once
    "intent-abandoned",  # an interrupted stage change found not to have happened
    "recovery-blocked",  # an interrupted stage change that cannot be judged yet
    "flags-set",  # flags written by hand with `rollout flags set`
    "unreadable",  # a log entry this version cannot parse (kept, shown raw)
]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class EvidenceRecord(Record):
    """What a statistical verdict rests on (rollout.core.observations.Evidence), as stored.

    `estimate`, `lower` and `upper` are the rate (a limit test) or the difference stage minus
    comparison (non-inferiority). With `higher_is_worse` the upper bound is at `alpha` and the
    lower at `alpha_fail` (the other way round otherwise). `limit` is the absolute limit or the
    margin. `needed_more` trials until a verdict, about `seconds_more` at the current traffic.
    """

    test: str
    comparison: str = ""
    estimate: float
    lower: float
    upper: float
    limit: float
    higher_is_worse: bool = True
    alpha: float
    alpha_fail: float
    events: float
    trials: float
    control_events: float | None = None
    control_trials: float | None = None
    needed_more: float | None = None
    seconds_more: float | None = None

    @property
    def is_difference(self) -> bool:
        """Non-inferiority: the numbers are a difference of rates, not a rate."""
        return self.test == "non_inferiority"


class CheckRecord(Record):
    """One check of one cycle as people read it: verdict, value and limit, in its unit, and
    for a statistical check the evidence behind the verdict."""

    check: str
    label: str
    # The check's role: gate | guardrail | objective | baseline.
    kind: str | None = None
    verdict: str
    value: float | None = None
    limit: float | None = None
    sample: float | None = None
    comparator: str | None = None
    value_text: str | None = None
    limit_text: str | None = None
    critical: bool = False
    dry_run: bool = False
    message: str = ""
    error: str | None = None
    unit: str | None = None  # rollout.core.plan.Unit: how the values are shown
    # Entries written before decisions had evidence (and threshold checks) have none.
    evidence: EvidenceRecord | None = None

    @property
    def is_objective(self) -> bool:
        return self.kind == "objective"


class FlagsRecord(Record):
    """What the cycle wanted of the flag store, found there, and wrote."""

    desired: FlagSettings | None = None
    before: FlagSettings | None = None
    writes: tuple[str, ...] = ()
    applied: bool = False
    error: str | None = None
    error_kind: Literal["temporary", "permanent"] | None = None
    drift: bool = False
    note: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def result(self) -> Literal["failed", "skipped", "written", "unchanged"]:
        if self.error is not None:
            return "failed"
        if not self.applied:
            return "skipped"
        return "written" if self.writes else "unchanged"

    def with_note(self, note: str) -> FlagsRecord:
        return self.model_copy(update={"note": f"{note}; {self.note}" if self.note else note})


class ReportedFlagsRecord(Record):
    """What the service instances said they run (`ai_agent_flag_state`)."""

    settings: FlagSettings | None = None
    instances: int = 0
    consistent: bool = True
    error: str | None = None


class CommandRecord(Record):
    name: Literal["pause", "resume", "promote", "rollback"]
    who: str
    why: str
    full: bool = False
    to: str | None = None


class IntentRecord(Record):
    """A stage change whose flags are being written (see rollout.recovery)."""

    at: datetime
    instance: str | None = None
    fence: int | None = None
    action: str
    by: str
    from_stage: str
    to_stage: str
    reason: str = ""
    kind: str | None = None
    flags: FlagSettings
    # RolloutState.to_dict(): the state owns its own storage format.
    state: dict[str, Any]

    def summary(self) -> str:
        return (f"{self.from_stage} \u2192 {self.to_stage} "
                f"({self.action} by {self.by} at {self.at.isoformat()})")


class CycleSummary(Record):
    """The last evaluation, kept beside the log so the status needs one read, not a scan."""

    kind: EntryKind
    at: datetime | None = None  # only an unreadable entry has none
    instance: str | None = None
    action: str | None = None
    from_stage: str | None = None
    to_stage: str | None = None
    reason: str | None = None
    overdue: bool = False
    checks: tuple[CheckRecord, ...] = ()
    flags: FlagsRecord | None = None
    flags_match: bool | None = None
    reported_flags: ReportedFlagsRecord | None = None


class LogEntry(CycleSummary):
    """One entry of the append-only decision log. `id` is the store's (the Redis stream id)."""

    id: str | None = None
    fence: int | None = None
    by: str | None = None
    transition: str | None = None
    paused: bool | None = None
    command: CommandRecord | None = None
    recovery: str | None = None
    pending_intent: IntentRecord | None = None
    intent: IntentRecord | None = None
    state_stage: str | None = None
    note: str | None = None
    error: str | None = None
    raw: str | None = None

    @property
    def moved(self) -> bool:
        return self.to_stage is not None and self.to_stage != self.from_stage

    def summary(self) -> CycleSummary:
        return CycleSummary.model_validate(self.model_dump(include=set(CycleSummary.model_fields)))

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_json(cls, raw: str | None, *, entry_id: str | None = None) -> LogEntry:
        """Parse a stored entry; anything this version cannot read becomes `unreadable`."""
        try:
            entry = cls.model_validate_json(raw or "")
        except ValidationError:
            return cls(kind="unreadable", raw=raw, id=entry_id)
        return entry.model_copy(update={"id": entry_id}) if entry_id is not None else entry


class CycleResult(LogEntry):
    """A cycle's entry with what became of it (the dry run and the API print this)."""

    committed: bool = False
    log_id: str | None = None
    state: dict[str, Any] | None = None
