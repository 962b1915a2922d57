"""The rules of a plan file that span fields or entries and concern what a check measures:
a threshold check's value, a baseline check's value and counts, a statistical check's
counts and test (DESIGN.md §7), and the names they refer to (baselines, stages).

`plan_loader` runs them on every check definition it can read, with the fields that are
valid on their own (`INVALID` marks a field given with a value the schema rejected and
already reported: no follow-up problem is raised about it), and reports every problem with
its field path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from rollout.core.boundaries import boundary_label, nearest_boundary
from rollout.core.plan import BOUNDARY_PLACEHOLDER, CheckKind, StatTest
from rollout.core.plan_schema import (
    CheckModel,
    CountsModel,
    RelativeThreshold,
    did_you_mean,
    missing,
)

INVALID: Final = object()  # a field given with a value the schema rejects (and reported)
Fields = Mapping[str, object]  # a check definition's fields as given: valid value or INVALID
Problem = Callable[[str, str], None]  # (path, message)

# The keys of a statistical check, and those of a threshold check's rule.
STAT_KEYS: Final = ("test", "events", "trials", "control", "baseline", "margin", "limit",
                    "higher_is_worse", "alpha", "alpha_fail", "since", "slower_than")
THRESHOLD_KEYS: Final = ("op", "threshold", "sample_query", "min_sample")
# What a baseline check may carry besides its value: the counts it records, and where the
# slow-answer boundary of those counts lies.
_BASELINE_STAT_KEYS: Final = ("events", "trials", "slower_than")
_LE: Final = BOUNDARY_PLACEHOLDER


def given(fields: Fields, key: str) -> bool:
    """Present with a value (an explicit null counts as absent)."""
    return fields.get(key) is not None


def usable(fields: Fields, key: str) -> bool:
    """Present with a value the schema accepted."""
    return given(fields, key) and fields[key] is not INVALID


def _missing(key: str) -> str:
    return missing(CheckModel.model_fields[key])


# --- one definition ----------------------------------------------------------------------------
def check_rules(path: str, kind: CheckKind, fields: Fields, problem: Problem) -> None:
    """What a check's kind (and, for a statistical check, its test) asks of its fields."""
    if kind is CheckKind.BASELINE:
        _baseline(path, fields, problem)
    elif given(fields, "test"):
        _statistical(path, fields, problem)
    else:
        _threshold(path, kind, fields, problem)


def _value(path: str, fields: Fields, problem: Problem) -> None:
    """A measured value: the query and its window."""
    for key in ("query", "window"):
        if not given(fields, key):
            problem(f"{path}.{key}", _missing(key))


def _baseline(path: str, fields: Fields, problem: Problem) -> None:
    for key in ("op", "threshold"):
        if key in fields:
            problem(f"{path}.{key}", "a baseline check only measures; it has no op or threshold")
    _value(path, fields, problem)
    for key in STAT_KEYS:
        if key not in _BASELINE_STAT_KEYS and given(fields, key):
            problem(f"{path}.{key}", f"a baseline check records a value (and its events and "
                                     f"trials); it takes no {key}")
    if given(fields, "events") != given(fields, "trials"):
        key = "trials" if given(fields, "events") else "events"
        problem(f"{path}.{key}", "missing: a baseline check records events and trials "
                                 "together")
    slower = fields.get("slower_than")
    if isinstance(slower, RelativeThreshold):
        problem(f"{path}.slower_than", "a baseline check's slower_than is a number of seconds "
                                       "(its own baseline is being recorded)")
    _slower_than_value(path, slower, problem)
    _boundary_use(path, fields, ("query", "sample_query", "events", "trials"), problem)


def _threshold(path: str, kind: CheckKind, fields: Fields, problem: Problem) -> None:
    stat_keys = [key for key in STAT_KEYS if given(fields, key)]
    has_rule = given(fields, "op") or given(fields, "threshold")
    if kind is CheckKind.OBJECTIVE or (stat_keys and not has_rule):
        # Meant as a statistical check: say what it lacks, not every threshold key.
        why = ("an objective is measured with a statistical test" if kind is CheckKind.OBJECTIVE
               else f"{', '.join(stat_keys)} belong to a statistical check")
        problem(f"{path}.test", f"{_missing('test')}: {why}")
        return
    for key in stat_keys:
        problem(f"{path}.{key}", f"only a statistical check (with test) has {key}; "
                                 "this one is judged by op and threshold")
    for key in ("op", "threshold"):
        if not given(fields, key):
            problem(f"{path}.{key}", _missing(key))
    _value(path, fields, problem)
    _boundary_use(path, fields, ("query", "sample_query"), problem)


def _statistical(path: str, fields: Fields, problem: Problem) -> None:
    for key in THRESHOLD_KEYS:
        if key in fields:
            problem(f"{path}.{key}", f"a statistical check takes no {key}: it is judged from "
                                     "its events and trials")
    for key in ("events", "trials"):
        if not given(fields, key):
            problem(f"{path}.{key}", _missing(key))
    test = fields.get("test")
    if test is StatTest.NON_INFERIORITY:
        _non_inferiority(path, fields, problem)
    elif test is StatTest.LIMIT:
        _limit_test(path, fields, problem)
    slower = fields.get("slower_than")
    _slower_than_value(path, slower, problem)
    if not given(fields, "slower_than"):
        _boundary_use(path, fields, ("query",), problem)
    elif usable(fields, "query") and _LE in str(fields["query"]) \
            and isinstance(slower, RelativeThreshold):
        problem(f"{path}.query", f"cannot use {_LE}: the boundary depends on baseline "
                                 f"{slower.baseline!r}, which is known only once recorded")
    _boundary_use(path, fields, ("events", "trials"), problem)
    control = fields.get("control")
    if isinstance(control, CountsModel):
        _boundary_use(f"{path}.control", {"slower_than": slower, "events": control.events,
                                          "trials": control.trials},
                      ("events", "trials"), problem)


def _non_inferiority(path: str, fields: Fields, problem: Problem) -> None:
    if given(fields, "control") and given(fields, "baseline"):
        problem(f"{path}.baseline", "a non_inferiority test compares with a control cohort or "
                                    "a baseline, not both")
    elif not (given(fields, "control") or given(fields, "baseline")):
        problem(path, "a non_inferiority test needs control ({events, trials} of a concurrent "
                      "cohort) or baseline (a baseline check that records events and trials)")
    if not given(fields, "margin"):
        problem(f"{path}.margin", _missing("margin"))
    if given(fields, "limit"):
        problem(f"{path}.limit", "a non_inferiority test has a margin, not a limit")


def _limit_test(path: str, fields: Fields, problem: Problem) -> None:
    limit = fields.get("limit")
    if limit is None:
        problem(f"{path}.limit", _missing("limit"))
    elif isinstance(limit, float) and not 0 < limit < 1:
        problem(f"{path}.limit", f"must be a rate strictly between 0 and 1 "
                                 f"(0.001 = 0.1 %), got {limit:g}")
    for key in ("control", "baseline", "margin"):
        if given(fields, key):
            problem(f"{path}.{key}", f"a limit test compares the rate with its limit; it takes "
                                     f"no {key}")


def _nonpositive(slower: object) -> bool:
    return isinstance(slower, float) and slower <= 0


def _slower_than_value(path: str, slower: object, problem: Problem) -> None:
    if isinstance(slower, float) and _nonpositive(slower):
        problem(f"{path}.slower_than", f"must be a number of seconds above 0, got {slower:g}")


def _boundary_use(path: str, fields: Fields, keys: Sequence[str], problem: Problem) -> None:
    """`{le}` appears in the check's templates if and only if it has slower_than."""
    texts = {key: str(fields[key]) for key in keys if usable(fields, key)}
    if not given(fields, "slower_than"):
        for key, text in texts.items():
            if _LE in text:
                problem(f"{path}.{key}", f"uses {_LE}, but the check has no slower_than to "
                                         "place the boundary")
    elif fields["slower_than"] is not INVALID and texts \
            and not any(_LE in text for text in texts.values()):
        problem(f"{path}.{next(iter(texts))}",
                f"must count answers slower than {_LE}: slower_than is set, but none of "
                f"{', '.join(texts)} uses it")


# --- names that checks refer to --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Definition:
    path: str
    name: str
    fields: Fields


@dataclass(slots=True)
class References:
    """What the reference rules need to know about the whole plan."""

    definitions: Sequence[Definition]
    stages: Sequence[str | None]  # by index; None when a stage's name has problems
    first_stage: str  # as people read it in a message: 'off', or stages[0]
    baselines: Mapping[str, Fields]  # baseline checks of the first stage, by name
    # First-stage checks whose kind is unknown: a reference to them raises no problem.
    unknown_in_first: set[str] = field(default_factory=set)
    uses: Mapping[str, Sequence[int]] = field(default_factory=dict)  # check -> stage indices


def reference_rules(refs: References, problem: Problem) -> None:
    for definition in refs.definitions:
        path, fields = definition.path, definition.fields
        threshold = fields.get("threshold")
        if isinstance(threshold, RelativeThreshold):
            _baseline_name(refs, f"{path}.threshold.baseline", threshold.baseline, problem)
        slower = fields.get("slower_than")
        if isinstance(slower, RelativeThreshold):
            _baseline_name(refs, f"{path}.slower_than.baseline", slower.baseline, problem)
        if fields.get("kind") is CheckKind.BASELINE or not given(fields, "test"):
            continue
        baseline = fields.get("baseline")
        if isinstance(baseline, str) and _counting_baseline(refs, f"{path}.baseline", baseline,
                                                            problem):
            _same_boundary(path, slower, baseline, refs.baselines[baseline], problem)
        limit = fields.get("limit")
        if isinstance(limit, RelativeThreshold):
            _counting_baseline(refs, f"{path}.limit.baseline", limit.baseline, problem)
        since = fields.get("since")
        if isinstance(since, str):
            _since(refs, definition, since, problem)


def _known(refs: References, name: str) -> bool:
    return name in refs.baselines or name in refs.unknown_in_first


def _unknown_baseline(refs: References, name: str, known: Iterable[str], which: str) -> str:
    listed = ", ".join(sorted(known)) or "none"
    return (f"unknown baseline {name!r}{did_you_mean(name, refs.baselines)} "
            f"(baseline checks of stage {refs.first_stage}{which}: {listed})")


def _baseline_name(refs: References, path: str, name: str, problem: Problem) -> None:
    if not _known(refs, name):
        problem(path, _unknown_baseline(refs, name, refs.baselines, ""))


def _counting_baseline(refs: References, path: str, name: str, problem: Problem) -> bool:
    """Whether `name` is a baseline check that records counts (reporting why not, if it
    can tell); the rules that compare with its counts run only when it is."""
    counting = [n for n, f in refs.baselines.items() if given(f, "events")]
    if name not in refs.baselines:
        if name not in refs.unknown_in_first:
            problem(path, _unknown_baseline(refs, name, counting,
                                            " that record events and trials"))
        return False
    fields = refs.baselines[name]
    if not (given(fields, "events") or given(fields, "trials")):
        problem(path, f"baseline {name!r} records no counts: give it events and trials "
                      "(compared with them here)")
        return False
    # One of the two missing, or invalid: the baseline's own problem says so.
    return usable(fields, "events") and usable(fields, "trials")


def _same_boundary(path: str, slower: object, name: str, baseline: Fields,
                   problem: Problem) -> None:
    """Slow answers against the baseline's slow answers, counted from the same boundary."""
    theirs = baseline.get("slower_than")
    if slower is INVALID or theirs is INVALID or _nonpositive(slower) or _nonpositive(theirs):
        return  # reported with the field
    if slower is None and theirs is None:
        return
    if slower is None:
        assert isinstance(theirs, float)
        problem(f"{path}.slower_than", f"missing: baseline {name!r} counts answers slower than "
                                       f"{theirs:g} s; count the same here")
    elif theirs is None:
        problem(f"{path}.baseline", f"baseline {name!r} counts no slow answers (it has no "
                                    "slower_than): compare like with like")
    elif isinstance(slower, RelativeThreshold):
        problem(f"{path}.slower_than", f"must be a number of seconds: compared with baseline "
                                       f"{name!r}, the boundary must be the baseline's")
    elif isinstance(slower, float) and isinstance(theirs, float):
        mine, recorded = nearest_boundary(slower), nearest_boundary(theirs)
        if mine != recorded:
            problem(f"{path}.slower_than",
                    f"places the boundary at {boundary_label(mine)} s, baseline {name!r} at "
                    f"{boundary_label(recorded)} s: compare like with like")


def _since(refs: References, definition: Definition, since: str, problem: Problem) -> None:
    path = f"{definition.path}.since"
    names = [name for name in refs.stages if name is not None]
    if since not in names:
        problem(path, f"unknown stage {since!r}{did_you_mean(since, names)}; "
                      f"stages: {', '.join(names)}")
        return
    start = refs.stages.index(since)
    used = refs.uses.get(definition.name, ())
    later = [index for index in used if index < start]
    if later:
        first = refs.stages[min(later)] or f"stages[{min(later)}]"
        problem(path, f"stage {since!r} comes after {first!r}, where the check is used: the "
                      "evidence must start at or before every stage that uses it")
