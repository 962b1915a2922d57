"""What happens next, from a `StatusView`: where the rollout goes, when, and what stands in
the way — for `rollout status`, the status page and the transition notices (issue 13).

Pure: it reads only the snapshot (the last cycle's checks with their evidence, the plan's
checks of this stage with the moment each is judged from, the bake and the streak) and
computes no statistics; an inconclusive check's "how many more samples, about how long"
is the one rollout.core.decide recorded in its evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final, Literal

from rollout.formatting import BULLET, evidence_line, more_text
from rollout.records import CheckRecord
from rollout.status import PlanCheckView, StatusView, View

BlockerState = Literal["waiting", "inconclusive", "failing", "no data", "error"]
WAITING: Final = "waiting"
_UNITS: Final = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


class Blocker(View):
    check: str
    label: str
    state: BlockerState
    needs: str


class NextStep(View):
    """The next transition and its conditions. `headline` is the sentence people read;
    the rest is there for whoever renders it differently."""

    headline: str
    target: str | None = None
    bake_left_seconds: float | None = None
    passes_left: int | None = None
    blockers: tuple[Blocker, ...] = ()

    def lines(self) -> list[str]:
        """The headline, then one line per blocker: for the terminal and the webhook."""
        return [self.headline] + [f"{BULLET} {b.label}: {b.state} \u2014 {b.needs}"
                                  for b in self.blockers]


def duration_words(seconds: float) -> str:
    """`3 h 10 min`, `45 s`, `2 d 4 h`: the two most significant units."""
    whole = round(abs(seconds))
    parts: list[str] = []
    for suffix, size in _UNITS:
        amount, whole = divmod(whole, size)
        if amount:
            parts.append(f"{amount} {suffix}")
    return " ".join(parts[:2]) or "0 s"


def relative(moment: datetime | None, now: datetime) -> str:
    """`12 min ago`, `in 3 h 10 min`, `just now`."""
    if moment is None:
        return "never"
    seconds = (moment - now).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    return f"in {duration_words(seconds)}" if seconds > 0 else f"{duration_words(seconds)} ago"


def is_waiting(plan_check: PlanCheckView | None, now: datetime) -> bool:
    """Not judged yet: the service has not reported the flags, or the window it needs since
    then has not passed. Its last verdict, whatever it says, decides nothing yet."""
    if plan_check is None:
        return False
    return plan_check.judged_from is None or plan_check.judged_from > now


def shown_verdict(status: StatusView, check: CheckRecord) -> str:
    """The verdict to show for a check of the last cycle: `waiting` when not judged yet."""
    plan_check = next((c for c in status.plan_checks if c.check == check.check), None)
    return WAITING if is_waiting(plan_check, status.now) else check.verdict


def next_step(status: StatusView) -> NextStep:
    now = status.now
    if not status.initialised:
        return NextStep(headline="not evaluated yet: the controller's first cycle decides")
    if status.pause is not None:
        return NextStep(headline=f"paused by {status.pause.by} {relative(status.pause.at, now)}: "
                                 "nothing changes until someone runs `rollout resume`")
    if status.completed_at is not None:
        return NextStep(headline="complete: nothing more to do; the guardrails are still "
                                 "watched")
    if status.awaiting_resume:
        return NextStep(headline=f"holds at {status.stage} after the rollback until someone "
                                 "runs `rollout resume`")
    index = status.stage_index
    if index is None:
        return NextStep(headline=f"stage {status.stage} is not in the plan: nothing happens "
                                 "until someone promotes or rolls back")
    last = index == len(status.stages) - 1
    target = None if last else status.stages[index + 1].name
    blockers = tuple(_blockers(status))
    passes_left = (status.passes_to_advance if blockers
                   else max(0, status.passes_to_advance - status.pass_streak))
    bake_left = status.bake_remaining_seconds or 0.0
    conditions = []
    if bake_left > 0:
        conditions.append(f"when the bake ends {relative_seconds(bake_left)}")
    if passes_left:
        cycles = "cycle" if passes_left == 1 else "cycles"
        conditions.append(f"after {passes_left} more passing {cycles}")
    verb = "completes" if last else f"advances to {target}"
    headline = f"{verb} {' and '.join(conditions) or 'at the next cycle'}"
    if status.in_cooldown and status.cooldown_until is not None:
        headline = (f"cooling down after a rollback until "
                    f"{relative(status.cooldown_until, now)}; then {headline}")
    if blockers:
        headline += f"; blocked by {_names(b.label for b in blockers)}"
    return NextStep(headline=headline, target=target, bake_left_seconds=bake_left,
                    passes_left=passes_left, blockers=blockers)


def relative_seconds(seconds: float) -> str:
    return f"in {duration_words(seconds)}"


def _blockers(status: StatusView) -> list[Blocker]:
    records = {check.check: check for check in status.checks}
    found = []
    for plan_check in status.plan_checks:
        if plan_check.dry_run or plan_check.kind == "objective":
            continue  # reported, never standing in the way
        blocker = _blocker(status, plan_check, records.get(plan_check.check))
        if blocker is not None:
            found.append(blocker)
    # Failures first: they are what someone may need to act on.
    order = {"failing": 0, "error": 1, "no data": 2, "inconclusive": 3, "waiting": 4}
    return sorted(found, key=lambda b: order[b.state])


def _blocker(status: StatusView, plan_check: PlanCheckView,
             record: CheckRecord | None) -> Blocker | None:
    name, label = plan_check.check, plan_check.label
    # A statistical guardrail only proves harm (rollout.core.decide): it blocks an advance
    # by failing or erring, never by waiting, being inconclusive or having no data.
    statistical_guardrail = plan_check.kind == "guardrail" and plan_check.statistical
    if is_waiting(plan_check, status.now) and not statistical_guardrail:
        if plan_check.judged_from is None:
            needs = "judged once the service reports this stage's flags"
        else:
            needs = f"judged from {relative(plan_check.judged_from, status.now)}"
        return Blocker(check=name, label=label, state="waiting", needs=needs)
    if record is None:
        if statistical_guardrail:
            return None
        return Blocker(check=name, label=label, state="no data",
                       needs="not measured yet: the next cycle measures it")
    return _verdict_blocker(status, plan_check, record, statistical_guardrail)


def _verdict_blocker(status: StatusView, plan_check: PlanCheckView, record: CheckRecord,
                     statistical_guardrail: bool) -> Blocker | None:
    name, label = plan_check.check, plan_check.label
    verdict = record.verdict.replace("_", " ")
    if verdict == "pass":
        return None
    if statistical_guardrail and (verdict in ("inconclusive", "no data")
                                  or is_waiting(plan_check, status.now)):
        return None
    if verdict == "inconclusive":
        needs = more_text(record) or "more samples for a verdict"
        return Blocker(check=name, label=label, state="inconclusive", needs=needs)
    if verdict == "fail":
        needs = evidence_line(record)
        streak = status.failure_streaks.get(name)
        if streak:
            needs += f" ({streak} failing cycles in a row)"
        return Blocker(check=name, label=label, state="failing", needs=needs)
    state: BlockerState = "error" if verdict == "error" else "no data"
    return Blocker(check=name, label=label, state=state,
                   needs=record.error or record.message or "no measurement")


def _names(names: Iterable[str], shown: int = 3) -> str:
    listed = list(names)
    extra = f" and {len(listed) - shown} more" if len(listed) > shown else ""
    return ", ".join(listed[:shown]) + extra
