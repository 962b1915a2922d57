"""The controller's persistent state, frozen, with one method per transition (as in kopf).

Nothing here decides anything: `decide` chooses the transition, these methods only make
sure that every transition resets exactly what it must (streaks, flag confirmation, ...).
`to_dict`/`from_dict` give a JSON-ready form so that the store adapter and this module
cannot disagree about the field names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, Self, TypeVar

CONTROLLER: str = "controller"  # the `by` of automatic transitions


_V = TypeVar("_V")


def _frozen_map(values: Mapping[str, _V] | None = None) -> Mapping[str, _V]:
    return MappingProxyType(dict(values or {}))


def _require_aware(name: str, moment: datetime | None) -> None:
    # Naive datetimes would compare wrongly against the UTC clock of another process.
    if moment is not None and moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment!r}")


@dataclass(frozen=True, slots=True)
class PauseInfo:
    by: str
    why: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RollbackInfo:
    from_stage: str
    to_stage: str
    at: datetime
    reason: str
    by: str = CONTROLLER


@dataclass(frozen=True, slots=True)
class RolloutState:
    stage_index: int
    stage_name: str
    entered_at: datetime
    pass_streak: int = 0
    # Consecutive failing cycles per guardrail; a guardrail absent from the map is at 0.
    failure_streaks: Mapping[str, int] = field(default_factory=_frozen_map)
    baseline: Mapping[str, float] = field(default_factory=_frozen_map)
    # (events, trials) a baseline check counted in the first stage, for the comparisons
    # with the baseline before a control cohort exists.
    baseline_counts: Mapping[str, tuple[float, float]] = field(default_factory=_frozen_map)
    # When each stage of the current ascent had its flags confirmed: evidence that
    # accumulates across stages (`since` in the plan) starts there. A rollback forgets the
    # stages it leaves.
    ascent: tuple[tuple[str, datetime], ...] = ()
    pause_info: PauseInfo | None = None
    cooldown_until: datetime | None = None
    # Set by a rollback when the plan does not auto-resume: hold until a person resumes.
    awaiting_resume: bool = False
    last_rollback: RollbackInfo | None = None
    # When the service was first seen reporting this stage's flags (None: not yet).
    flags_confirmed_at: datetime | None = None
    completed_at: datetime | None = None
    # Hold-too-long is notified once per stage visit.
    overdue_notified_at: datetime | None = None

    def __post_init__(self) -> None:
        # Callers may pass plain dicts; store read-only copies so the state stays immutable.
        object.__setattr__(self, "failure_streaks", _frozen_map(self.failure_streaks))
        object.__setattr__(self, "baseline", _frozen_map(self.baseline))
        object.__setattr__(self, "baseline_counts", _frozen_map(self.baseline_counts))
        object.__setattr__(self, "ascent", tuple((str(n), t) for n, t in self.ascent))
        for _, moment in self.ascent:
            _require_aware("ascent", moment)
        for name in ("entered_at", "cooldown_until", "flags_confirmed_at", "completed_at",
                     "overdue_notified_at"):
            _require_aware(name, getattr(self, name))
        if self.stage_index < 0:
            raise ValueError(f"stage_index must not be negative, got {self.stage_index}")

    @classmethod
    def initial(cls, first_stage: str, now: datetime) -> Self:
        return cls(stage_index=0, stage_name=first_stage, entered_at=now)

    @property
    def is_paused(self) -> bool:
        return self.pause_info is not None

    def in_cooldown(self, now: datetime) -> bool:
        return self.cooldown_until is not None and now < self.cooldown_until

    # --- transitions ----------------------------------------------------------------------
    def _entered(self, stage_index: int, stage_name: str, now: datetime) -> Self:
        """A new stage visit: everything measured in the old stage stops counting."""
        return replace(
            self,
            stage_index=stage_index,
            stage_name=stage_name,
            entered_at=now,
            pass_streak=0,
            failure_streaks=_frozen_map(),
            flags_confirmed_at=None,
            completed_at=None,
            overdue_notified_at=None,
        )

    def advanced(
        self,
        stage_index: int,
        stage_name: str,
        now: datetime,
        baseline: Mapping[str, float] | None = None,
        baseline_counts: Mapping[str, tuple[float, float]] | None = None,
    ) -> Self:
        """Moved forward (by the controller or promoted by a person). Moving forward ends a
        post-rollback hold and its cooldown: someone or something decided to go on."""
        entered = self._entered(stage_index, stage_name, now)
        return replace(
            entered,
            baseline=_frozen_map(self.baseline if baseline is None else baseline),
            baseline_counts=_frozen_map(
                self.baseline_counts if baseline_counts is None else baseline_counts
            ),
            cooldown_until=None,
            awaiting_resume=False,
        )

    def rolled_back(
        self,
        stage_index: int,
        stage_name: str,
        now: datetime,
        reason: str,
        *,
        cooldown_until: datetime | None,
        await_resume: bool,
        by: str = CONTROLLER,
    ) -> Self:
        info = RollbackInfo(
            from_stage=self.stage_name, to_stage=stage_name, at=now, reason=reason, by=by
        )
        entered = self._entered(stage_index, stage_name, now)
        return replace(
            entered,
            ascent=self._ascent_before(stage_name),
            cooldown_until=cooldown_until,
            awaiting_resume=await_resume,
            last_rollback=info,
        )

    def _ascent_before(self, stage_name: str) -> tuple[tuple[str, datetime], ...]:
        """The ascent up to (not including) `stage_name`; empty if it was not part of it."""
        names = [name for name, _ in self.ascent]
        if stage_name not in names:
            return ()
        return self.ascent[: names.index(stage_name)]

    def confirmed_at_of(self, stage_name: str) -> datetime | None:
        """When `stage_name`'s flags were confirmed in the current ascent."""
        return dict(self.ascent).get(stage_name)

    def paused(self, by: str, why: str, now: datetime) -> Self:
        return replace(self, pause_info=PauseInfo(by=by, why=why, at=now))

    def resumed(self) -> Self:
        """Clears a pause and a post-rollback hold. Streaks restart so that the first cycle
        after a resume cannot act on counts gathered before a person stepped in."""
        return replace(
            self,
            pause_info=None,
            awaiting_resume=False,
            pass_streak=0,
            failure_streaks=_frozen_map(),
        )

    def completed(self, now: datetime) -> Self:
        return replace(self, completed_at=now, pass_streak=0)

    def with_cycle(
        self,
        *,
        pass_streak: int,
        failure_streaks: Mapping[str, int],
        flags_confirmed_at: datetime | None,
    ) -> Self:
        """The bookkeeping of a cycle that did not change the stage."""
        return replace(
            self,
            pass_streak=pass_streak,
            failure_streaks=_frozen_map({k: v for k, v in failure_streaks.items() if v > 0}),
            flags_confirmed_at=flags_confirmed_at,
            ascent=self._ascent_with(flags_confirmed_at),
        )

    def _ascent_with(self, confirmed_at: datetime | None) -> tuple[tuple[str, datetime], ...]:
        """The ascent with this stage's confirmation recorded (or moved, after a mismatch)."""
        if confirmed_at is None:
            return self.ascent
        earlier = self._ascent_before(self.stage_name) if self.confirmed_at_of(
            self.stage_name) is not None else self.ascent
        return (*earlier, (self.stage_name, confirmed_at))

    def with_flags_confirmed_at(self, flags_confirmed_at: datetime | None) -> Self:
        return replace(
            self, flags_confirmed_at=flags_confirmed_at,
            ascent=self._ascent_with(flags_confirmed_at),
        )

    def overdue_notified(self, now: datetime) -> Self:
        return replace(self, overdue_notified_at=now)

    # --- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "stage_index": self.stage_index,
            "stage_name": self.stage_name,
            "entered_at": _iso(self.entered_at),
            "pass_streak": self.pass_streak,
            "failure_streaks": dict(self.failure_streaks),
            "baseline": dict(self.baseline),
            "baseline_counts": {k: list(v) for k, v in self.baseline_counts.items()},
            "ascent": [[name, _iso(moment)] for name, moment in self.ascent],
            "pause": None if self.pause_info is None else {
                "by": self.pause_info.by,
                "why": self.pause_info.why,
                "at": _iso(self.pause_info.at),
            },
            "cooldown_until": _iso(self.cooldown_until),
            "awaiting_resume": self.awaiting_resume,
            "last_rollback": None if self.last_rollback is None else {
                "from_stage": self.last_rollback.from_stage,
                "to_stage": self.last_rollback.to_stage,
                "at": _iso(self.last_rollback.at),
                "reason": self.last_rollback.reason,
                "by": self.last_rollback.by,
            },
            "flags_confirmed_at": _iso(self.flags_confirmed_at),
            "completed_at": _iso(self.completed_at),
            "overdue_notified_at": _iso(self.overdue_notified_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        pause = data.get("pause")
        rollback = data.get("last_rollback")
        return cls(
            stage_index=int(data["stage_index"]),
            stage_name=str(data["stage_name"]),
            entered_at=_required_time(data["entered_at"]),
            pass_streak=int(data.get("pass_streak", 0)),
            failure_streaks={str(k): int(v) for k, v in data.get("failure_streaks", {}).items()},
            baseline={str(k): float(v) for k, v in data.get("baseline", {}).items()},
            baseline_counts={
                str(k): (float(v[0]), float(v[1]))
                for k, v in data.get("baseline_counts", {}).items()
            },
            ascent=tuple(
                (str(name), _required_time(moment)) for name, moment in data.get("ascent", [])
            ),
            pause_info=None if pause is None else PauseInfo(
                by=str(pause["by"]), why=str(pause["why"]), at=_required_time(pause["at"])
            ),
            cooldown_until=_time(data.get("cooldown_until")),
            awaiting_resume=bool(data.get("awaiting_resume", False)),
            last_rollback=None if rollback is None else RollbackInfo(
                from_stage=str(rollback["from_stage"]),
                to_stage=str(rollback["to_stage"]),
                at=_required_time(rollback["at"]),
                reason=str(rollback["reason"]),
                by=str(rollback.get("by", CONTROLLER)),
            ),
            flags_confirmed_at=_time(data.get("flags_confirmed_at")),
            completed_at=_time(data.get("completed_at")),
            overdue_notified_at=_time(data.get("overdue_notified_at")),
        )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _time(text: object) -> datetime | None:
    return None if text is None else datetime.fromisoformat(str(text))


def _required_time(text: object) -> datetime:
    return datetime.fromisoformat(str(text))
