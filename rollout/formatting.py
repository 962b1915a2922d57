"""How the CLI, the status page and the notifications write times, counts and the evidence of
a statistical check for people (one spelling each)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from rollout.core.checks import format_count, format_value
from rollout.core.flags import FlagSettings
from rollout.core.plan import Unit, human_duration
from rollout.records import CheckRecord, EvidenceRecord

NOTHING = "\u2014"


def short_time(moment: datetime | None) -> str:
    """UTC to the second: the log's microseconds and offsets only get in the way of a reader."""
    if moment is None:
        return NOTHING
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def count(value: float | None) -> str:
    """A sample size with thin-space thousands (12 345), or a dash when there is none."""
    if value is None:
        return NOTHING
    return f"{round(value):,}".replace(",", "\u202f")


def flags_text(flags: FlagSettings | None) -> str:
    return NOTHING if flags is None else flags.describe()


# --- the evidence of a statistical check -----------------------------------------------------
# One spelling for the status page, the CLI, the notifications and the log's texts: the
# estimate, the bound the verdict rests on, the margin or limit, n, and what more is needed.

MINUS = "\u2212"
AT_MOST, AT_LEAST = "\u2264", "\u2265"
APPROX = "\u2248"
BULLET = "\u2022"
OBJECTIVE_WORDS: Final[Mapping[str, str]] = {"pass": "met", "fail": "missed"}


def verdict_word(check: CheckRecord) -> str:
    """The verdict as people read it: objectives are met or missed, not passed or failed."""
    word = OBJECTIVE_WORDS.get(check.verdict, check.verdict) if check.is_objective \
        else check.verdict
    return word.replace("_", " ")


def evidence_unit(check: CheckRecord) -> Unit:
    """Rates are shown in the check's unit; a unitless check's rate as a percentage (as the
    core's reason lines do)."""
    try:
        unit = Unit(check.unit) if check.unit else Unit.RATIO
    except ValueError:
        return Unit.RATIO
    return Unit.RATIO if unit is Unit.NUMBER else unit


def _rate(evidence: EvidenceRecord, value: float, unit: Unit) -> str:
    """A rate, or a difference of rates with its sign (percentage points for ratios)."""
    if not evidence.is_difference:
        return format_value(value, unit)
    text = format_value(abs(value), unit)
    if unit is Unit.RATIO:
        text = text.replace(" %", " pp")
    return f"{'+' if value >= 0 else MINUS}{text}"


def _confidence(level: float) -> str:
    return f"{(1 - level) * 100:.4g} %"


def estimate_text(check: CheckRecord) -> str | None:
    evidence = check.evidence
    if evidence is None:
        return None
    return _rate(evidence, evidence.estimate, evidence_unit(check))


def bound_text(check: CheckRecord) -> str | None:
    """The one-sided bound the verdict rests on, with its confidence: a failure by the bound
    that proves the harm (`≥ +1.2 pp (99.95 %)`), anything else by the bound that would show
    it safe (`≤ 0.108 % (95 %)`)."""
    evidence = check.evidence
    if evidence is None:
        return None
    proving_harm = check.verdict == "fail"
    if evidence.higher_is_worse != proving_harm:
        relation, bound = AT_MOST, evidence.upper
    else:
        relation, bound = AT_LEAST, evidence.lower
    level = evidence.alpha_fail if proving_harm else evidence.alpha
    return f"{relation} {_rate(evidence, bound, evidence_unit(check))} ({_confidence(level)})"


def interval_text(check: CheckRecord) -> str | None:
    """Both bounds: `8.5 % to 11.6 % (95 %)`; each side's confidence when they differ."""
    evidence = check.evidence
    if evidence is None:
        return None
    unit = evidence_unit(check)
    lower, upper = _rate(evidence, evidence.lower, unit), _rate(evidence, evidence.upper, unit)
    if evidence.alpha == evidence.alpha_fail:
        return f"{lower} to {upper} ({_confidence(evidence.alpha)})"
    # With higher_is_worse the lower bound is the one that proves harm (at alpha_fail).
    lower_level, upper_level = (
        (evidence.alpha_fail, evidence.alpha) if evidence.higher_is_worse
        else (evidence.alpha, evidence.alpha_fail)
    )
    return (f"{lower} ({_confidence(lower_level)}) to {upper} ({_confidence(upper_level)})")


def target_text(check: CheckRecord) -> str | None:
    """What the bound must show: `limit ≤ 1 %`, `margin ≤ +1 pp vs control cohort`."""
    evidence = check.evidence
    if evidence is None:
        return None
    unit = evidence_unit(check)
    relation = AT_MOST if evidence.higher_is_worse else AT_LEAST
    if evidence.is_difference:
        margin = evidence.limit if evidence.higher_is_worse else -evidence.limit
        against = f" vs {evidence.comparison}" if evidence.comparison else ""
        return f"margin {relation} {_rate(evidence, margin, unit)}{against}"
    return f"limit {relation} {format_value(evidence.limit, unit)}"


def n_text(check: CheckRecord) -> str:
    """The sample behind the verdict: `5 000`, or `4 120 vs 20 310` against a control."""
    evidence = check.evidence
    if evidence is None:
        return NOTHING if check.sample is None else format_count(check.sample)
    shown = format_count(evidence.trials)
    if evidence.control_trials is not None:
        shown += f" vs {format_count(evidence.control_trials)}"
    return shown


def counts_text(check: CheckRecord) -> str | None:
    """The counts behind the rates: `3 of 5 000 vs 15 of 25 000 (control cohort)`."""
    evidence = check.evidence
    if evidence is None:
        return None
    shown = f"{format_count(evidence.events)} of {format_count(evidence.trials)}"
    if evidence.control_events is not None and evidence.control_trials is not None:
        shown += (f" vs {format_count(evidence.control_events)} of "
                  f"{format_count(evidence.control_trials)}")
    if evidence.is_difference and evidence.comparison:
        shown += f" ({evidence.comparison})"
    return shown


def more_text(check: CheckRecord) -> str | None:
    """For an inconclusive check: `~3 720 more (≈7m 20s at the current rate)`."""
    evidence = check.evidence
    if evidence is None or evidence.needed_more is None or check.verdict != "inconclusive":
        return None
    text = f"~{format_count(evidence.needed_more)} more"
    if evidence.seconds_more is not None:
        text += f" ({APPROX}{human_duration(timedelta(seconds=evidence.seconds_more))} at the " \
                "current rate)"
    return text


def evidence_line(check: CheckRecord) -> str:
    """One check as one line, for notifications and the log:
    `L1 cohort error rate +0.02 pp, ≤ +0.31 pp (95 %); margin ≤ +1 pp vs control cohort
    (n=4 120 vs 20 310): pass`. A threshold check: `p95 212 ms <= 1 s (n=4 120): pass`."""
    label = check.label or check.check
    word = verdict_word(check)
    if check.evidence is None:
        if check.value_text is None:
            return f"{label}: {word}"
        parts = [label, check.value_text]
        if check.limit_text:
            parts += [check.comparator or "", check.limit_text]
        if check.sample is not None:
            parts.append(f"(n={n_text(check)})")
        return f"{' '.join(p for p in parts if p)}: {word}"
    line = (f"{label} {estimate_text(check)}, {bound_text(check)}; {target_text(check)} "
            f"(n={n_text(check)}): {word}")
    more = more_text(check)
    return f"{line}, {more}" if more else line


def objective_line(check: CheckRecord) -> str:
    """An objective with its interval: `cost 10 %, 8.5 % to 11.6 % (95 %); limit ≤ 20 %
    (n=5 000): met`."""
    label = check.label or check.check
    word = verdict_word(check)
    if check.evidence is None:
        return f"{label}: {word}"
    line = (f"{label} {estimate_text(check)}, {interval_text(check)}; {target_text(check)} "
            f"(n={n_text(check)}): {word}")
    more = more_text(check)
    return f"{line}, {more}" if more else line


def decided(checks: Sequence[CheckRecord]) -> list[CheckRecord]:
    """The gates and guardrails that reached a verdict (pass or fail), failures first; a dry
    run decides nothing."""
    chosen = [c for c in checks if c.kind in ("gate", "guardrail") and not c.dry_run
              and c.verdict in ("pass", "fail")]
    return sorted(chosen, key=lambda c: c.verdict != "fail")


def objectives(checks: Sequence[CheckRecord]) -> list[CheckRecord]:
    return [c for c in checks if c.is_objective]


def transition_evidence(checks: Sequence[CheckRecord], action: str | None) -> tuple[str, ...]:
    """The lines under a transition's reason: each gate and guardrail that decided it, with
    its estimate, bound, margin or limit, n and verdict (for a rollback: the breaches), then
    the stage's objectives with their intervals, met / missed / inconclusive."""
    deciding = decided(checks)
    if action == "rollback":
        deciding = [check for check in deciding if check.verdict == "fail"]
    lines: list[str] = []
    if deciding:
        lines.append("Decided by:")
        lines += [f"{BULLET} {evidence_line(check)}" for check in deciding]
    stage_objectives = objectives(checks)
    if stage_objectives:
        lines.append("Objectives (reported, never blocking):")
        lines += [f"{BULLET} {objective_line(check)}" for check in stage_objectives]
    return tuple(lines)
