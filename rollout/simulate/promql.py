"""The PromQL the plans use, evaluated over simulated counters at every cycle at once.

Not Prometheus: a small evaluator of the subset the rollout plans are written in, so that a
check reads the simulated traffic through its own query text, as `rollout/observe.py` reads
Prometheus. A value is an instant vector evaluated at many times at once: a mapping from a
label set to an array over evaluation times, NaN where the vector has no sample (a `> 0`
filter that dropped it). Supported:

  selectors with =, !=, =~, !~ matchers; range selectors as the argument of increase(),
  rate(), max_over_time(), count_over_time() (the range written in the query is ignored:
  the caller says where each evaluation's range starts); sum/min/max [by (labels)];
  histogram_quantile(); vector(); scalar numbers; + - * / between vectors with identical
  label sets or with a scalar; the comparison filters > < >= <= == != ; `or`.

`increase()` is the exact difference of the counter between the range's ends (the cycles'
counts are exact; Prometheus's extrapolation at the edges of a range is not modelled).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt

Array: TypeAlias = npt.NDArray[np.float64]
Labels: TypeAlias = frozenset[tuple[str, str]]
Vector: TypeAlias = dict[Labels, Array]

SCRAPE_SECONDS: Final = 15.0  # count_over_time of a gauge: one sample per scrape


class PromQLError(ValueError):
    """A query outside the supported subset, or one that names no simulated series."""


# --- the simulated time series ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    labels: Labels


def metric(name: str, **labels: str) -> Metric:
    return Metric(name, frozenset(labels.items()))


@dataclass(frozen=True, slots=True)
class Frame:
    """Where the queries of one batch of evaluations look.

    `counters[m][i]` is the counter m after cycle i (index 0: before the first cycle);
    `gauges` are constant. Evaluation k covers the range (starts[k], ends[k]] of cycle
    indices, `seconds[k]` long (for rate()).
    """

    counters: Mapping[Metric, Array]
    gauges: Mapping[Metric, float]
    starts: npt.NDArray[np.int64]
    ends: npt.NDArray[np.int64]
    seconds: Array

    @property
    def size(self) -> int:
        return int(self.ends.shape[0])


# --- the parsed query -------------------------------------------------------------------------
_TOKEN: Final = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)|(?P<string>\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)|(?P<op>=~|!~|!=|>=|<=|==|[-+*/(){}\[\],=<>]))"
)
_DURATION: Final = re.compile(r"\s*(\[[^\]]*\])")


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    text = text.strip()
    while position < len(text):
        if text[position] == "[":
            found = _DURATION.match(text, position)
            if found is None:
                raise PromQLError(f"unterminated range in {text!r}")
            tokens.append(found.group(1))
            position = found.end()
            continue
        found = _TOKEN.match(text, position)
        if found is None or found.end() == position:
            raise PromQLError(f"cannot read {text[position:position + 20]!r} in {text!r}")
        tokens.append(found.group(found.lastgroup or "op"))
        position = found.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return tokens


Matcher: TypeAlias = tuple[str, str, str]  # label, operator, value


@dataclass(frozen=True, slots=True)
class Selector:
    name: str
    matchers: tuple[Matcher, ...]
    ranged: bool


@dataclass(frozen=True, slots=True)
class Call:
    function: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Aggregate:
    operator: str
    by: tuple[str, ...] | None
    arg: Node


@dataclass(frozen=True, slots=True)
class Binary:
    operator: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Number:
    value: float


Node: TypeAlias = Selector | Call | Aggregate | Binary | Number

_AGGREGATES: Final = frozenset({"sum", "min", "max"})
_FUNCTIONS: Final = frozenset(
    {"increase", "rate", "max_over_time", "count_over_time", "histogram_quantile", "vector"}
)
_COMPARISONS: Final = frozenset({">", "<", ">=", "<=", "==", "!="})


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise PromQLError(f"expected {expected or 'more'} at {token!r} in {self.text!r}")
        self.position += 1
        return token

    def parse(self) -> Node:
        node = self.or_expr()
        if self.peek() is not None:
            raise PromQLError(f"unexpected {self.peek()!r} in {self.text!r}")
        return node

    def or_expr(self) -> Node:
        node = self.comparison()
        while self.peek() == "or":
            self.take()
            node = Binary("or", node, self.comparison())
        return node

    def comparison(self) -> Node:
        node = self.additive()
        while self.peek() in _COMPARISONS:
            operator = self.take()
            node = Binary(operator, node, self.additive())
        return node

    def additive(self) -> Node:
        node = self.multiplicative()
        while self.peek() in {"+", "-"}:
            operator = self.take()
            node = Binary(operator, node, self.multiplicative())
        return node

    def multiplicative(self) -> Node:
        node = self.unary()
        while self.peek() in {"*", "/"}:
            operator = self.take()
            node = Binary(operator, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.peek() == "-":
            self.take()
            return Binary("*", Number(-1.0), self.unary())
        return self.primary()

    def primary(self) -> Node:
        token = self.take()
        if token == "(":  # noqa: S105  (a parenthesis, not a password)
            node = self.or_expr()
            self.take(")")
            return node
        if re.fullmatch(r"\d.*", token):
            return Number(float(token))
        if token in _AGGREGATES:
            by = self.by_clause()
            self.take("(")
            arg = self.or_expr()
            self.take(")")
            return Aggregate(token, by if by is not None else self.by_clause(), arg)
        if token in _FUNCTIONS and self.peek() == "(":
            self.take("(")
            args = [self.or_expr()]
            while self.peek() == ",":
                self.take()
                args.append(self.or_expr())
            self.take(")")
            return Call(token, tuple(args))
        if re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", token):
            return self.selector(token)
        raise PromQLError(f"unexpected {token!r} in {self.text!r}")

    def by_clause(self) -> tuple[str, ...] | None:
        if self.peek() != "by":
            return None
        self.take()
        self.take("(")
        labels = [self.take()]
        while self.peek() == ",":
            self.take()
            labels.append(self.take())
        self.take(")")
        return tuple(labels)

    def selector(self, name: str) -> Selector:
        matchers: list[Matcher] = []
        if self.peek() == "{":
            self.take()
            while self.peek() != "}":
                label, operator, value = self.take(), self.take(), self.take()
                if operator not in {"=", "!=", "=~", "!~"} or not value.startswith('"'):
                    raise PromQLError(f"bad matcher {label}{operator}{value} in {self.text!r}")
                matchers.append((label, operator, value[1:-1]))
                if self.peek() == ",":
                    self.take()
            self.take("}")
        token = self.peek()
        ranged = token is not None and token.startswith("[")
        if ranged:
            self.take()
        return Selector(name, tuple(matchers), ranged)


@cache
def parse(text: str) -> Node:
    return _Parser(text).parse()


# --- evaluation ---------------------------------------------------------------------------------
Value: TypeAlias = Vector | float


def evaluate(text: str, frame: Frame) -> Value:
    return _eval(parse(text), frame)


def single(text: str, frame: Frame) -> Array:
    """A query expected to give at most one series (every count and ratio in the plans):
    its values over the evaluations, NaN where it has none."""
    value = evaluate(text, frame)
    if isinstance(value, float):
        return np.full(frame.size, value)
    if len(value) > 1:
        raise PromQLError(f"{text!r} gives {len(value)} series, expected one")
    return next(iter(value.values())) if value else np.full(frame.size, math.nan)


def _matches(labels: Labels, matchers: Sequence[Matcher]) -> bool:
    have = dict(labels)
    for label, operator, expected in matchers:
        value = have.get(label, "")
        if operator == "=":
            ok = value == expected
        elif operator == "!=":
            ok = value != expected
        elif operator == "=~":
            ok = re.fullmatch(expected, value) is not None
        else:
            ok = re.fullmatch(expected, value) is None
        if not ok:
            return False
    return True


_SELECTED: dict[tuple[Selector, int], list[Metric]] = {}


def _select(selector: Selector, frame: Frame) -> list[Metric]:
    # The series a run simulates never change: remember each selector's matches per
    # (long-lived) mapping of counters.
    key = (selector, id(frame.counters))
    found = _SELECTED.get(key)
    if found is None or any(m not in frame.counters and m not in frame.gauges for m in found):
        found = [
            m for m in (*frame.counters, *frame.gauges)
            if m.name == selector.name and _matches(m.labels, selector.matchers)
        ]
        if len(_SELECTED) > 10_000:
            _SELECTED.clear()
        _SELECTED[key] = found
    return found


def _eval(node: Node, frame: Frame) -> Value:
    if isinstance(node, Number):
        return node.value
    if isinstance(node, Selector):
        if node.ranged:
            raise PromQLError(f"range selector {node.name} outside a function")
        gauges = [m for m in _select(node, frame) if m in frame.gauges]
        return {m.labels: np.full(frame.size, frame.gauges[m]) for m in gauges}
    if isinstance(node, Call):
        return _call(node, frame)
    if isinstance(node, Aggregate):
        return _aggregate(node, frame)
    return _binary(node, frame)


def _call(node: Call, frame: Frame) -> Value:
    name = node.function
    if name == "vector":
        scalar = _eval(node.args[0], frame)
        if not isinstance(scalar, float):
            raise PromQLError("vector() takes a number")
        return {frozenset(): np.full(frame.size, scalar)}
    if name == "histogram_quantile":
        phi, buckets = _eval(node.args[0], frame), _eval(node.args[1], frame)
        if not isinstance(phi, float) or isinstance(buckets, float):
            raise PromQLError("histogram_quantile(number, vector)")
        return histogram_quantile(phi, buckets)
    (arg,) = node.args
    if not isinstance(arg, Selector) or not arg.ranged:
        raise PromQLError(f"{name}() takes a range selector")
    matched = _select(arg, frame)
    if name in {"max_over_time", "count_over_time"}:
        gauges = [m for m in matched if m in frame.gauges]
        if name == "max_over_time":
            return {m.labels: np.full(frame.size, frame.gauges[m]) for m in gauges}
        return {m.labels: frame.seconds / SCRAPE_SECONDS for m in gauges}
    out: Vector = {}
    for m in matched:
        counter = frame.counters.get(m)
        if counter is None:
            continue
        increase = counter[frame.ends] - counter[frame.starts]
        out[m.labels] = increase / frame.seconds if name == "rate" else increase
    return out


def _aggregate(node: Aggregate, frame: Frame) -> Vector:
    value = _eval(node.arg, frame)
    if isinstance(value, float):
        raise PromQLError(f"{node.operator}() of a number")
    groups: dict[Labels, list[Array]] = {}
    for labels, series in value.items():
        key = frozenset((k, v) for k, v in labels if node.by is not None and k in node.by)
        groups.setdefault(key, []).append(series)
    out: Vector = {}
    for key, members in groups.items():
        stacked = np.vstack(members)
        missing = np.isnan(stacked)
        if not missing.any():  # the usual case: every series has a sample everywhere
            out[key] = _REDUCE[node.operator](stacked, axis=0)
            continue
        present = ~np.all(missing, axis=0)
        result = np.full(frame.size, math.nan)
        if present.any():
            result[present] = _NAN_REDUCE[node.operator](stacked[:, present], axis=0)
        out[key] = result
    return out


_REDUCE: Final[dict[str, Callable[..., Array]]] = {"sum": np.sum, "min": np.min, "max": np.max}
_NAN_REDUCE: Final[dict[str, Callable[..., Array]]] = {
    "sum": np.nansum, "min": np.nanmin, "max": np.nanmax,
}


_ARITHMETIC: Final[dict[str, Callable[[Array, Array], Array]]] = {
    "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide,
}
_COMPARE: Final[dict[str, Callable[[Array, Array], npt.NDArray[np.bool_]]]] = {
    ">": np.greater, "<": np.less, ">=": np.greater_equal, "<=": np.less_equal,
    "==": np.equal, "!=": np.not_equal,
}


def _binary(node: Binary, frame: Frame) -> Value:
    left, right = _eval(node.left, frame), _eval(node.right, frame)
    if node.operator == "or":
        if isinstance(left, float) or isinstance(right, float):
            raise PromQLError("`or` joins two vectors")
        # A right-hand series fills in where the left has no series of its label set.
        out = dict(left)
        for labels, series in right.items():
            out[labels] = (
                np.where(np.isnan(out[labels]), series, out[labels]) if labels in out else series
            )
        return out
    if isinstance(left, float) and isinstance(right, float):
        if node.operator in _COMPARISONS:
            raise PromQLError("comparison of two numbers needs `bool`")
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(_ARITHMETIC[node.operator](np.array(left), np.array(right)))
    pairs = _pairs(left, right, frame.size)
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for labels, a, b, value_from_left in pairs:
            if node.operator in _COMPARISONS:
                kept = value_from_left if value_from_left is not None else a
                out[labels] = np.where(_COMPARE[node.operator](a, b), kept, math.nan)
            else:
                out[labels] = _ARITHMETIC[node.operator](a, b)
    return out


def _pairs(
    left: Value, right: Value, size: int
) -> list[tuple[Labels, Array, Array, Array | None]]:
    """One-to-one matching on identical label sets; a number pairs with every series. The
    fourth item is the sample a comparison filter keeps (the vector side's)."""
    if isinstance(left, float):
        assert not isinstance(right, float)
        return [(k, np.full(size, left), v, v) for k, v in right.items()]
    if isinstance(right, float):
        return [(k, v, np.full(size, right), v) for k, v in left.items()]
    return [(k, v, right[k], v) for k, v in left.items() if k in right]


def histogram_quantile(phi: float, buckets: Vector) -> Vector:
    """Prometheus's histogram_quantile over cumulative `le` buckets, at every evaluation:
    linear interpolation inside the bucket holding rank phi x count; the highest finite
    bound when the rank falls in the +Inf bucket; a first bucket starts at 0."""
    groups: dict[Labels, list[tuple[float, Array]]] = {}
    for labels, series in buckets.items():
        le = dict(labels).get("le")
        if le is None:
            raise PromQLError("histogram_quantile needs an `le` label")
        rest = frozenset((k, v) for k, v in labels if k != "le")
        groups.setdefault(rest, []).append((float(le), series))
    out: Vector = {}
    for rest, members in groups.items():
        members.sort(key=lambda item: item[0])
        bounds = np.array([b for b, _ in members])
        counts = np.vstack([s for _, s in members])  # (buckets, evaluations), cumulative
        total = counts[-1]
        rank = phi * total
        reached = counts >= rank
        index = np.argmax(reached, axis=0)
        columns = np.arange(counts.shape[1])
        upper = bounds[index]
        lower = np.where(index > 0, bounds[np.maximum(index - 1, 0)], 0.0)
        below = np.where(index > 0, counts[np.maximum(index - 1, 0), columns], 0.0)
        inside = counts[index, columns] - below
        with np.errstate(divide="ignore", invalid="ignore"):
            value = lower + (upper - lower) * np.where(inside > 0, (rank - below) / inside, 0.0)
        highest_finite = bounds[-2] if math.isinf(bounds[-1]) and len(bounds) > 1 else bounds[-1]
        value = np.where(np.isinf(upper), highest_finite, value)
        value = np.where(total > 0, value, math.nan)
        out[rest] = value
    return out
