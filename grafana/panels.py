"""Small factories over grafana-foundation-sdk so every panel gets the same datasource,
an explicit id (alerts link to panels by id, so ids must never be reassigned), a size and a
description."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

# The provisioned datasource has this uid (grafana/provisioning/datasources/prometheus.yaml);
# panels go through the `datasource` variable so another Prometheus can be picked.
DATASOURCE_UID = "prometheus"
DATASOURCE_VARIABLE = "datasource"
DATASOURCE = DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE_VARIABLE}}}")

Query = tuple[str, str]  # (expr, legend)


def datasource_variable() -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable(DATASOURCE_VARIABLE)
        .label("Prometheus")
        .type("prometheus")
        .regex("")
    )


def target(
    expr: str,
    legend: str = "",
    ref: str = "A",
    *,
    instant: bool = False,
    table_format: bool = False,
) -> prometheus.Dataquery:
    query = (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend or "__auto")
        .ref_id(ref)
        .datasource(DATASOURCE)
    )
    query = query.instant() if instant else query.range()
    if table_format:
        query = query.format(PromQueryFormat.TABLE)
    return query


def targets(queries: Sequence[Query], **kwargs: Any) -> list[prometheus.Dataquery]:
    refs = "ABCDEFGHIJ"
    return [target(expr, legend, refs[i], **kwargs) for i, (expr, legend) in enumerate(queries)]


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def value_text(mapping: Mapping[int, tuple[str, str]]) -> list[Any]:
    """Numbers shown as words (stage index → stage name, 0/1 → closed/open)."""
    options = {
        str(value): ValueMappingResult(text=text, color=color, index=i)
        for i, (value, (text, color)) in enumerate(sorted(mapping.items()))
    }
    return [ValueMap(options=options)]


def stat_panel(
    panel_id: int,
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    width: int = 4,
    height: int = 4,
    steps: Sequence[tuple[float | None, str]] = ((None, "green"),),
    mapping: Mapping[int, tuple[str, str]] | None = None,
    no_value: str = "no data",
    instant: bool = True,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets(queries, instant=instant))
        .unit(unit)
        .span(width)
        .height(height)
        .no_value(no_value)
        .thresholds(thresholds(*steps))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if mapping:
        panel = panel.mappings(value_text(mapping))
    return panel


def timeseries_panel(
    panel_id: int,
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    threshold: float | None = None,
    stepped: bool = False,
    min_value: float | None = 0,
    max_value: float | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets(queries))
        .unit(unit)
        .span(width)
        .height(height)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .line_interpolation(
            common.LineInterpolation.STEP_AFTER if stepped else common.LineInterpolation.LINEAR
        )
    )
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    if threshold is not None:
        # The alert's threshold drawn as a dashed line, so "how far from paging" is visible.
        panel = panel.thresholds(thresholds((None, "green"), (threshold, "red"))).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.DASHED)
        )
    return panel


def state_panel(
    panel_id: int,
    title: str,
    description: str,
    queries: Sequence[Query],
    mapping: Mapping[int, tuple[str, str]],
    *,
    width: int = 24,
    height: int = 6,
) -> statetimeline.Panel:
    return (
        statetimeline.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets(queries))
        .span(width)
        .height(height)
        .mappings(value_text(mapping))
        .thresholds(thresholds((None, "text")))
        .show_value(common.VisibilityMode.AUTO)
        .merge_values(True)
    )


def table_panel(
    panel_id: int,
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    rename: Mapping[str, str],
    width: int = 12,
    height: int = 8,
) -> table.Panel:
    return (
        table.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(targets(queries, instant=True, table_format=True))
        .span(width)
        .height(height)
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": {"Time": True}, "renameByName": dict(rename)},
            )
        )
    )


def annotation(name: str, expr: str, color: str) -> dash.AnnotationQuery:
    return (
        dash.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color(color)
        .expr(expr)
    )
