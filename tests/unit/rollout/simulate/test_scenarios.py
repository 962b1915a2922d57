"""Scenarios: defaults, the options each takes, placing them in a plan, their effects."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from rollout.core.plan import Plan
from rollout.core.plan_loader import load_plan
from rollout.plans import default_plan_path
from rollout.simulate.scenarios import (
    NAMES,
    ScenarioError,
    bind,
    scenario_spec,
)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return load_plan(default_plan_path())


def test_every_scenario_has_defaults_that_bind_to_the_default_plan(plan: Plan) -> None:
    for name in NAMES:
        scenario = bind(scenario_spec(name), plan)
        assert scenario.name == name
        assert scenario.spec.describe()
    error = scenario_spec("l1-error")
    assert (error.from_stage, error.size) == ("l1-10", 0.03)
    outage = scenario_spec("outage", duration=timedelta(hours=2))
    assert (outage.after, outage.duration) == (timedelta(hours=12), timedelta(hours=2))


@pytest.mark.parametrize(
    ("kwargs", "option", "text"),
    [
        pytest.param({"name": "flood"}, "--scenario", "unknown scenario 'flood'", id="name"),
        pytest.param({"name": "healthy", "size": 0.1}, "--size", "takes no --size",
                     id="healthy-size"),
        pytest.param({"name": "latency", "after": timedelta(hours=1)}, "--after",
                     "takes no --after", id="latency-after"),
        pytest.param({"name": "l1-error", "size": 0.005}, "--size",
                     "above the healthy 0.01", id="error-below-healthy"),
        pytest.param({"name": "l1-error", "size": 1.0}, "--size", "below 1", id="error-1"),
        pytest.param({"name": "stale", "size": 0.0}, "--size", "between 0 and 1",
                     id="stale-0"),
        pytest.param({"name": "latency", "size": 0.6}, "--size", "at most 0.5",
                     id="latency-high"),
        pytest.param({"name": "low-traffic", "size": 1.5}, "--size", "fraction",
                     id="low-traffic"),
        pytest.param({"name": "outage", "duration": timedelta()}, "--duration",
                     "longer than 0", id="outage-0"),
        pytest.param({"name": "outage", "after": -timedelta(hours=1)}, "--after",
                     "not be negative", id="outage-negative"),
    ],
)
def test_bad_parameters_name_their_option(kwargs: dict[str, object], option: str,
                                          text: str) -> None:
    name = kwargs.pop("name")
    assert isinstance(name, str)
    with pytest.raises(ScenarioError) as raised:
        scenario_spec(name, **kwargs)  # type: ignore[arg-type]
    assert raised.value.option == option
    assert str(raised.value).startswith(f"{option}: ") and text in str(raised.value)


def test_the_stage_must_exist_and_serve_what_the_scenario_breaks(plan: Plan) -> None:
    with pytest.raises(ScenarioError, match=r"--from-stage: mine.yaml has no stage 'l1-1O' "
                                            r"\(did you mean 'l1-10'\?\)"):
        bind(scenario_spec("l1-error", from_stage="l1-1O"), plan, "mine.yaml")
    with pytest.raises(ScenarioError, match="l2 serves no L1 cohort"):
        bind(scenario_spec("l1-error", from_stage="l2"), plan)
    with pytest.raises(ScenarioError, match="neither serves nor shadows L1"):
        bind(scenario_spec("stale", from_stage="off"), plan)
    bind(scenario_spec("stale", from_stage="dark-launch"), plan)  # shadow hits are verified


def test_effects_start_in_the_scenario_stage(plan: Plan) -> None:
    error = bind(scenario_spec("l1-error"), plan)
    index = plan.index_of("l1-10")
    assert index is not None
    assert not error.effects(index - 1).errors
    assert error.effects(index).errors and error.effects(index + 1).errors
    assert not error.effects(index).whole_service
    assert error.regression.error == 0.03 and error.regression.stale is None
    # A latency regression from a stage without an L1 cohort slows every answer.
    latency = bind(scenario_spec("latency", from_stage="l2"), plan)
    assert latency.effects(plan.index_of("l2") or 0).whole_service
    # An outage changes no traffic; the run places it.
    outage = bind(scenario_spec("outage"), plan)
    assert not any(vars_ for vars_ in (outage.effects(index).errors, outage.effects(index).slow))
    assert outage.outage == (timedelta(hours=12), timedelta(hours=6))
    assert bind(scenario_spec("healthy"), replace(plan)).from_index is None
