#!/usr/bin/env python3
"""Write the chart's Grafana dashboards, built with grafana-foundation-sdk (or --check them).

Each dashboard is one function below that returns the SDK's dashboard builder; DASHBOARDS maps the
file name under helm/stargate-operator/dashboards/ to it. To add a dashboard, write the function
with the helpers of the first section (variables, row, stat, timeseries, table, bargauge) and add
it to DASHBOARDS. The chart ships every dashboards/*.json as a ConfigMap (templates/dashboards.yaml)
and tests/integration/test_prometheus.py evaluates every variable and panel query of them against a
real Prometheus, so a new dashboard is shipped and checked without touching either.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "helm" / "stargate-operator" / "dashboards"

# Every query goes to the Prometheus the viewer picks in the `datasource` variable.
PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")

# =================================================================================================
# Helpers: what a Stargate dashboard is made of


@dataclass(frozen=True)
class Scope:
    """The dashboard variables a selector is filtered by: Scope(("namespace", "cluster"))("m",
    'state="up"') is m{namespace=~"$namespace", cluster=~"$cluster", state="up"}. Regex matchers,
    because every variable is multi-valued with All as `.*`."""

    labels: tuple[str, ...] = ()

    def __call__(self, metric: str, *matchers: str) -> str:
        inner = [f'{label}=~"${label}"' for label in self.labels] + list(matchers)
        return f"{metric}{{{', '.join(inner)}}}" if inner else metric


UNSCOPED = Scope()
NAMESPACE = Scope(("namespace",))
SITE = Scope(("namespace", "cluster"))


class _QueryVariableModel(dm.VariableModel):
    """The SDK's variable plus `definition`, the query text Grafana's variable list shows and its
    editor saves; the SDK's schema leaves that frontend field out."""

    definition: str | None = None

    def to_json(self) -> dict[str, object]:
        out = super().to_json()
        if self.definition is not None:
            out["definition"] = self.definition
        return out


class QueryVariable(db.QueryVariable):
    """db.QueryVariable that can carry `definition`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._model = _QueryVariableModel(name=name, type_val=dm.VariableType.QUERY)
        self._internal = self._model

    def definition(self, text: str) -> Self:
        self._model.definition = text
        return self


def datasource_variable() -> db.DatasourceVariable:
    return (
        db.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .hide(dm.VariableHide.DONT_HIDE)
    )  # Grafana refreshes a data source variable on load: the SDK has no `refresh` for it


def query_variable(name: str, label: str, metric: str, scope: Scope = UNSCOPED) -> QueryVariable:
    """A multi-valued variable (All = `.*`) over the values of label `name` of `metric`, narrowed by
    the variables of `scope` (which must come before it)."""
    query = f"label_values({scope(metric)}, {name})"
    return (
        QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query({"query": query, "refId": f"{name}-var"})
        .definition(query)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .options([])
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .hide(dm.VariableHide.DONT_HIDE)
        .regex("")
    )


def site_variables() -> list[Builder[dm.VariableModel]]:
    """Data source, namespace and site (cluster): what every Stargate dashboard starts with."""
    return [
        datasource_variable(),
        query_variable("namespace", "Namespace", "stargate_cluster_info"),
        query_variable("cluster", "Site", "stargate_cluster_info", NAMESPACE),
    ]


def call(function: str, *args: str) -> str:
    """function(arg, ...) in PromQL; for arguments that are selectors with quoted values."""
    return f"{function}({', '.join(args)})"


Steps = Sequence[tuple[float | None, str]]


def thresholds(base: str, *steps: tuple[float, str]) -> Steps:
    """Colour `base` from -inf, then each (value, colour) from that value up."""
    return [(None, base), *steps]


OK = thresholds("green")
WARN_FROM_1 = thresholds("green", (1, "orange"))
BAD_FROM_1 = thresholds("green", (1, "red"))


def _thresholds(steps: Steps) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=color) for value, color in steps])
    )


@dataclass(frozen=True)
class Series:
    """One query of a graph: a PromQL expression and its legend (Grafana's {{label}} template)."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Column:
    """One query of a table. Its value becomes the column `header`; header None hides the value and
    keeps only the labels, for an info series (value 1) that names the rows. `unit`, for a column
    whose unit is not the table's (a count or a 0/1 condition in a table of watts)."""

    expr: str
    header: str | None
    unit: str | None = None


def _ref(i: int) -> str:
    return chr(ord("A") + i)


def _query(i: int, expr: str, legend: str) -> prometheus.Dataquery:
    """Query `i` of a panel (refId A, B, ...) to the chosen Prometheus."""
    return prometheus.Dataquery().ref_id(_ref(i)).datasource(PROMETHEUS).expr(expr).legend_format(legend)


def _range_query(i: int, s: Series) -> prometheus.Dataquery:
    return _query(i, s.expr, s.legend).range()


def _table_query(i: int, c: Column) -> prometheus.Dataquery:
    return _query(i, c.expr, "").instant().format(pm.PromQueryFormat.TABLE)


Panel = stat.Panel | timeseries.Panel | table.Panel | bargauge.Panel | statetimeline.Panel
P = TypeVar("P", stat.Panel, timeseries.Panel, table.Panel, bargauge.Panel, statetimeline.Panel)


def _common(panel: P, title: str, description: str, width: int, height: int) -> P:
    return panel.title(title).description(description).datasource(PROMETHEUS).span(width).height(height)


def _standard(
    panel: P,
    unit: str | None = None,
    decimals: int | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> P:
    """The panel's standard field options, each set only when given (else Grafana's default)."""
    if unit is not None:
        panel = panel.unit(unit)
    if decimals is not None:
        panel = panel.decimals(decimals)
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    return panel


def _last_value() -> common.ReduceDataOptions:
    """Reduce each series to its last non-null value (a stat's number, a bar's length)."""
    return common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def _legend(mode: cm.LegendDisplayMode) -> common.VizLegendOptions:
    """A legend shown (the SDK's default is hidden) below the graph."""
    return common.VizLegendOptions().show_legend(True).display_mode(mode).placement(cm.LegendPlacement.BOTTOM)


def row(title: str) -> db.Row:
    return db.Row(title).collapsed(False)


def stat_panel(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str | None = None,
    decimals: int | None = None,
    steps: Steps = OK,
    width: int = 4,
    height: int = 4,
) -> stat.Panel:
    """One number: the last value of `expr` (which should return one series), coloured by `steps`,
    with its recent history drawn behind it."""
    p = _common(stat.Panel(), title, description, width, height).with_target(_range_query(0, Series(expr)))
    return (
        _standard(p, unit, decimals)
        .thresholds(_thresholds(steps))
        .reduce_options(_last_value())
        .color_mode(cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .text_mode(cm.BigValueTextMode.AUTO)
    )


def timeseries_panel(
    title: str,
    description: str,
    *series: Series,
    unit: str | None = None,
    minimum: float | None = 0,
    width: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    """A graph of one or more queries, legend as a table of last and max values; the axis starts
    at `minimum` (None: let Grafana choose, for series that go negative)."""
    p = _common(timeseries.Panel(), title, description, width, height)
    for i, s in enumerate(series):
        p = p.with_target(_range_query(i, s))
    return (
        _standard(p, unit, minimum=minimum)
        .draw_style(cm.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(10)
        .show_points(cm.VisibilityMode.NEVER)
        .span_nulls(True)
        .stacking(common.StackingConfig().mode(cm.StackingMode.NONE).group("A"))
        .legend(_legend(cm.LegendDisplayMode.TABLE).calcs(["lastNotNull", "max"]))
        .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )


def table_panel(
    title: str,
    description: str,
    *columns: Column,
    unit: str | None = None,
    rename: Mapping[str, str] | None = None,
    sort_by: str | None = None,
    descending: bool = False,
    width: int = 24,
    height: int = 10,
) -> table.Panel:
    """One row per series now: the instant queries merged on their common labels, each query's
    value a column. `rename` renames label columns too (e.g. {"site_kind": "kind"}); `sort_by`
    names the column the rows are sorted by (ascending, or `descending`)."""
    p = _common(table.Panel(), title, description, width, height)
    for i, c in enumerate(columns):
        p = p.with_target(_table_query(i, c))
    # Grafana names a query's value field "Value" when the panel has one query, else "Value #<refId>".
    values = ["Value"] if len(columns) == 1 else [f"Value #{_ref(i)}" for i in range(len(columns))]
    # An instant query's time and the metric name say nothing in a table of now.
    hidden = {v: True for v, c in zip(values, columns, strict=True) if c.header is None}
    exclude = {"Time": True, **hidden, "__name__": True}
    names = {v: c.header for v, c in zip(values, columns, strict=True) if c.header is not None}
    names |= dict(rename or {})
    p = _standard(p, unit)
    for c in columns:
        if c.unit is not None and c.header is not None:
            p = p.override_by_name(c.header, [dm.DynamicConfigValue(id_val="unit", value=c.unit)])
    if sort_by is not None:
        order = common.TableSortByFieldState().display_name(sort_by)
        p = p.sort_by([order.desc(True) if descending else order])
    return (
        p.show_header(True)
        .cell_height(cm.TableCellHeight.SM)
        .footer(common.TableFooterOptions().show(False))
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize", options={"excludeByName": exclude, "renameByName": names}
            )
        )
    )


def bargauge_panel(
    title: str,
    description: str,
    series: Series,
    *,
    unit: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    steps: Steps = OK,
    width: int = 12,
    height: int = 8,
) -> bargauge.Panel:
    """Horizontal bars, one per series of an instant query, coloured by `steps`."""
    p = (
        _common(bargauge.Panel(), title, description, width, height)
        .with_target(_query(0, series.expr, series.legend).instant())
    )
    return (
        _standard(p, unit, minimum=minimum, maximum=maximum)
        .thresholds(_thresholds(steps))
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(_last_value())
        .show_unfilled(True)
    )


def state_timeline_panel(
    title: str,
    description: str,
    series: Series,
    states: Mapping[int, tuple[str, str]],
    *,
    width: int = 24,
    height: int = 8,
) -> statetimeline.Panel:
    """One lane per series over the time range, each stretch coloured and named by its value:
    `states` maps a value to (text, colour), e.g. {0: ("not active", "transparent")}."""
    mappings: list[dm.ValueMapping] = [dm.ValueMap(options={
        str(value): dm.ValueMappingResult(text=text, color=colour, index=i)
        for i, (value, (text, colour)) in enumerate(sorted(states.items()))})]
    return (
        _common(statetimeline.Panel(), title, description, width, height)
        .with_target(_range_query(0, series))
        .mappings(mappings)
        .thresholds(_thresholds(thresholds("transparent")))
        .show_value(cm.VisibilityMode.AUTO)
        .merge_values(True)
        .row_height(0.8)
        .fill_opacity(70)
        .line_width(0)
        .legend(_legend(cm.LegendDisplayMode.LIST))
        .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.SINGLE).sort(cm.SortOrder.NONE))
    )


def dashboard(
    uid: str,
    title: str,
    description: str,
    tags: list[str],
    variables: Sequence[Builder[dm.VariableModel]],
    panels: Sequence[db.Row | Panel],
) -> db.Dashboard:
    """A Stargate dashboard: the shared settings, `panels` laid out left to right and top to bottom
    by the SDK (a row starts a new line), and a dropdown of every dashboard tagged `stargate` that
    keeps the time range and the variables."""
    d = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["stargate", *tags])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .version(1)
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("")  # the viewer's own preference
        .fiscal_year_start_month(0)
        .live_now(False)
        .week_start("")
        .annotation(
            db.AnnotationQuery()
            .built_in(1)
            .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .name("Annotations & Alerts")
            .type("dashboard")
        )
        .link(
            db.DashboardLink("Stargate")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(["stargate"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .variables(list(variables))
    )
    for p in panels:
        d = d.with_row(p) if isinstance(p, db.Row) else d.with_panel(p)
    return d


def render(builder: db.Dashboard) -> str:
    """The dashboard as the chart ships it: the SDK's JSON, panels numbered 1, 2, ... in order
    (Grafana wants ids unique within a dashboard; the SDK leaves them to the caller)."""
    model = builder.build()
    for i, panel in enumerate(model.panels or [], start=1):
        panel.id_val = i
    return json.dumps(model, cls=JSONEncoder, indent=2) + "\n"


# =================================================================================================
# The dashboards


def site_overview() -> db.Dashboard:
    s = SITE
    healthy = s("stargate_cluster_gpus", 'state="healthy"')
    return dashboard(
        "stargate-site-overview",
        "Stargate / Site overview",
        "Capacity, health and power of every Stargate site at a glance.",
        ["overview"],
        site_variables(),
        [
            row("Sites"),
            stat_panel("Sites", "StargateClusters selected.", f"count({s('stargate_cluster_info')})"),
            stat_panel("Racks", "Racks of the selected sites.", f"sum({s('stargate_cluster_racks')})"),
            stat_panel("GPU nodes", "GPU nodes of the selected sites.",
                       f"sum({s('stargate_cluster_nodes')})"),
            stat_panel("Healthy GPUs", "GPUs counted healthy (fresh telemetry, not in maintenance).",
                       f"sum({healthy})"),
            stat_panel("Unhealthy GPUs",
                       "GPUs not counted healthy: in maintenance, stale telemetry or reported bad.",
                       call("sum", s("stargate_cluster_gpus", 'state="unhealthy"')), steps=WARN_FROM_1),
            stat_panel("Healthy share", "Healthy GPUs over all GPUs.",
                       f"sum({healthy}) / sum({s('stargate_cluster_gpus')})", unit="percentunit",
                       decimals=1, steps=thresholds("red", (0.9, "orange"), (0.98, "green"))),
            stat_panel("HBM (healthy GPUs)", "HBM of healthy GPUs.",
                       f"sum({s('stargate_cluster_hbm_bytes')})", unit="bytes"),
            stat_panel("Host memory", "Host DRAM of nodes not in maintenance.",
                       f"sum({s('stargate_cluster_host_memory_bytes')})", unit="bytes"),
            stat_panel("Power budget", "Usable budget after reserve and curtailment.",
                       f"sum({s('stargate_cluster_power_budget_watts')})", unit="watt"),
            stat_panel("Power allocated", "Sum of rack budgets.",
                       f"sum({s('stargate_cluster_power_allocated_watts')})", unit="watt"),
            stat_panel("Power measured", "Measured IT power (fresh telemetry).",
                       f"sum({s('stargate_cluster_power_measured_watts')})", unit="watt"),
            stat_panel("Facility power", "Measured (or allocated) IT power times design PUE.",
                       f"sum({s('stargate_cluster_power_facility_watts')})", unit="watt"),
            row("Problems"),
            stat_panel("Overcommitted sites",
                       "Sites whose racks' floors exceed the budget (alert StargateSiteOvercommitted).",
                       f"count({s('stargate_cluster_power_overcommitted_watts')} > 0) or vector(0)",
                       steps=BAD_FROM_1),
            stat_panel("Racks over budget", "Racks measuring more than their budget (OverBudget=True).",
                       f"sum({s('stargate_cluster_racks_over_budget')})", steps=BAD_FROM_1),
            stat_panel("Racks power-capped", "Racks whose budget is below their demand (PowerCapped=True).",
                       f"sum({s('stargate_cluster_racks_power_capped')})", steps=WARN_FROM_1),
            stat_panel("Stale telemetry", "Nodes whose agent has not reported within the stale threshold.",
                       f"sum({s('stargate_cluster_nodes_telemetry_stale')})", steps=WARN_FROM_1),
            stat_panel("In maintenance", "Nodes with spec.maintenance true.",
                       f"sum({s('stargate_cluster_nodes_maintenance')})"),
            stat_panel("Objects not Ready", "Stargate objects whose Ready condition is False or Unknown.",
                       call("sum", NAMESPACE("stargate_objects", 'ready!="true"')), steps=WARN_FROM_1),
            row("Per site"),
            table_panel(
                "Sites", "One row per site: capacity, health and power now.",
                Column(s("stargate_cluster_info"), None),
                Column(f"sum by (namespace, cluster) ({healthy})", "Healthy GPUs"),
                Column(f"sum by (namespace, cluster) ({s('stargate_cluster_gpus')})", "GPUs"),
                Column(s("stargate_cluster_power_budget_watts"), "Budget"),
                Column(s("stargate_cluster_power_allocated_watts"), "Allocated"),
                Column(s("stargate_cluster_power_measured_watts"), "Measured"),
                Column(s("stargate_cluster_power_overcommitted_watts"), "Overcommitted by"),
                rename={"site_kind": "kind"},
            ),
            timeseries_panel("GPUs by state", "Healthy and unhealthy GPUs per site.",
                             Series(f"sum by (namespace, cluster, state) ({s('stargate_cluster_gpus')})",
                                    "{{cluster}} {{state}}")),
            timeseries_panel("Power per site", "Budget, allocated and measured IT power per site.",
                             Series(s("stargate_cluster_power_budget_watts"), "{{cluster}} budget"),
                             Series(s("stargate_cluster_power_allocated_watts"), "{{cluster}} allocated"),
                             Series(s("stargate_cluster_power_measured_watts"), "{{cluster}} measured"),
                             unit="watt"),
            timeseries_panel("Nodes with stale telemetry or in maintenance", "Per site.",
                             Series(s("stargate_cluster_nodes_telemetry_stale"),
                                    "{{cluster}} stale telemetry"),
                             Series(s("stargate_cluster_nodes_maintenance"), "{{cluster}} maintenance")),
            timeseries_panel("Objects by kind and Ready", "Stargate objects per kind, by Ready state.",
                             Series(f"sum by (kind, ready) ({NAMESPACE('stargate_objects')})",
                                    "{{kind}} ready={{ready}}")),
        ],
    )


def power() -> db.Dashboard:
    s, r = SITE, Scope(("namespace", "cluster", "rack"))
    carbon = s("stargate_cluster_carbon_grams_per_second")
    # The agents' proof of the limits (telemetry.enforcedLimitWatts, condition PowerLimitApplied):
    # confirmed, another limit in force (unconfirmed), or neither (no fresh report).
    confirmed = "stargate_cluster_nodes_limit_confirmed"
    unconfirmed = "stargate_cluster_nodes_limit_unconfirmed"
    not_confirmed = f"{r('stargate_rack_nodes')} - {r('stargate_rack_nodes_limit_confirmed')} > 0"

    def of_not_confirmed(metric: str) -> str:
        return f"{r(metric)} and on (namespace, cluster, rack) ({not_confirmed})"
    return dashboard(
        "stargate-power",
        "Stargate / Power",
        "Budgets, demand and measured power of sites and racks; curtailment, headroom, carbon.",
        ["power"],
        [*site_variables(), query_variable("rack", "Rack", "stargate_rack_info", SITE)],
        [
            row("Site"),
            timeseries_panel(
                "Site power",
                "Budget (after reserve and curtailment), floor, demand, allocated and measured IT power.",
                *(Series(s(f"stargate_cluster_power_{f}_watts"), f"{{{{cluster}}}} {f}")
                  for f in ("budget", "floor", "demand", "allocated", "measured")),
                unit="watt", width=16,
            ),
            stat_panel("Curtailment in effect",
                       "Share of the budget shed for demand response now (0 when none or past its `until`).",
                       f"max({s('stargate_cluster_power_curtailment_ratio')})", unit="percentunit",
                       steps=thresholds("green", (0.01, "orange"))),
            stat_panel("Headroom",
                       "Budget minus allocated, summed over the selected sites; negative when overcommitted.",
                       f"sum({s('stargate_cluster_power_headroom_watts')})", unit="watt",
                       steps=thresholds("red", (0, "green"))),
            timeseries_panel(
                "Curtailment",
                "Curtailment requested by the spec and in effect, per site (ratio of the budget).",
                Series(s("stargate_cluster_power_curtailment_ratio"), "{{cluster}} in effect"),
                Series(s("stargate_cluster_power_curtailment_requested_ratio"), "{{cluster}} requested"),
                unit="percentunit", width=8,
            ),
            timeseries_panel(
                "Headroom and overcommitment",
                "Budget minus allocated (negative when overcommitted), and by how much the racks' floors "
                "exceed the budget.",
                Series(s("stargate_cluster_power_headroom_watts"), "{{cluster}} headroom"),
                Series(s("stargate_cluster_power_overcommitted_watts"), "{{cluster}} overcommitted by"),
                unit="watt", minimum=None, width=8,
            ),
            timeseries_panel(
                "Facility power and PUE", "Facility power (IT times design PUE) and IT capacity per site.",
                Series(s("stargate_cluster_power_facility_watts"), "{{cluster}} facility"),
                Series(s("stargate_cluster_power_it_capacity_watts"), "{{cluster}} IT capacity"),
                unit="watt", width=8,
            ),
            timeseries_panel("Carbon", "Carbon emission rate of the facility power, kilograms CO2e per hour.",
                             Series(f"{carbon} * 3600 / 1000", "{{cluster}}"), unit="suffix:kg/h"),
            stat_panel("Carbon over the time range",
                       "Kilograms CO2e emitted over the dashboard's time range, from the rate.",
                       f"sum(avg_over_time({carbon}[$__range])) * $__range_s / 1000", unit="suffix:kg",
                       width=12, height=8),
            row("Racks"),
            timeseries_panel(
                "Rack budget vs demand vs measured", "Per rack (choose racks with the Rack variable).",
                *(Series(r(f"stargate_rack_power_{f}_watts"), f"{{{{rack}}}} {f}")
                  for f in ("budget", "demand", "measured")),
                unit="watt", width=24, height=10,
            ),
            timeseries_panel(
                "Racks closest to their budget", "Top 10 racks by measured over budget (1 = at budget).",
                Series(f"topk(10, {r('stargate_rack_power_measured_watts')} / "
                       f"{r('stargate_rack_power_budget_watts')})", "{{cluster}}/{{rack}}"),
                unit="percentunit",
            ),
            timeseries_panel(
                "Racks capped or over budget",
                "Racks whose budget is below demand, and racks measuring above budget.",
                Series(s("stargate_cluster_racks_power_capped"), "{{cluster}} power-capped"),
                Series(s("stargate_cluster_racks_over_budget"), "{{cluster}} over budget"),
            ),
            table_panel(
                "Racks", "Every selected rack now: priority, rating, floor, demand, budget, measured.",
                Column(r("stargate_rack_priority"), "Priority"),
                Column(r("stargate_rack_power_max_watts"), "Rating"),
                Column(r("stargate_rack_power_floor_watts"), "Floor"),
                Column(r("stargate_rack_power_demand_watts"), "Demand"),
                Column(r("stargate_rack_power_budget_watts"), "Budget"),
                Column(r("stargate_rack_power_measured_watts"), "Measured"),
                Column(r("stargate_rack_nodes_power_capped"), "Nodes capped"),
                unit="watt",
            ),
            row("Power limits enforced (the agents' reports)"),
            stat_panel("Limits confirmed",
                       "Nodes whose agent reports the assigned per-GPU limit in force "
                       "(enforcedLimitWatts; PowerLimitApplied=True).",
                       f"sum({s(confirmed)})", width=4, height=8),
            stat_panel("Limits not applied",
                       "Nodes whose agent reports another limit in force than the assigned one "
                       "(PowerLimitApplied=False; stargate_cluster_nodes_limit_unconfirmed): for seconds "
                       "after every change of limits, a problem when it lasts (alert "
                       "StargatePowerLimitsNotApplied after 5 min).",
                       f"sum({s(unconfirmed)})", steps=WARN_FROM_1, width=4, height=8),
            timeseries_panel(
                "Power limits confirmed and not applied",
                "Per site: nodes whose agent reports the assigned limit in force (confirmed), another one "
                "(not applied), and neither (no fresh report: never reported, stale telemetry or an agent "
                "that does not say).",
                Series(s(confirmed), "{{cluster}} confirmed"),
                Series(s(unconfirmed), "{{cluster}} not applied"),
                Series(f"{s('stargate_cluster_nodes')} - {s(confirmed)} - {s(unconfirmed)}",
                       "{{cluster}} no report"),
                width=16,
            ),
            table_panel(
                "Racks with limits not confirmed",
                "Racks with nodes whose limit no agent report confirms, those with another limit in force "
                "(not applied) first; the rest have no fresh report (stale telemetry, maintenance, never "
                "reported). Empty while every node is confirmed.",
                Column(not_confirmed, "Not confirmed"),
                Column(of_not_confirmed("stargate_rack_nodes_limit_unconfirmed"), "Not applied"),
                Column(of_not_confirmed("stargate_rack_nodes_limit_confirmed"), "Confirmed"),
                Column(of_not_confirmed("stargate_rack_nodes"), "Nodes"),
                Column(of_not_confirmed("stargate_rack_nodes_telemetry_stale"), "Stale telemetry"),
                Column(of_not_confirmed("stargate_rack_nodes_maintenance"), "Maintenance"),
                sort_by="Not applied", descending=True,
            ),
            row("Nodes (needs operator.perNodeMetrics=true)"),
            table_panel(
                "Nodes drawing most above their allocation",
                "Top 20 nodes by measured minus allocated power; empty when per-node metrics are off.",
                Column(f"topk(20, {r('stargate_node_power_measured_watts')} - "
                       f"{r('stargate_node_power_allocated_watts')})", "Measured - allocated"),
                unit="watt", width=12,
            ),
            timeseries_panel(
                "Per-GPU power limits", "Distribution of the per-GPU power limits the agents enforce.",
                *(Series(f"{agg} by (namespace, cluster) ({r('stargate_node_power_limit_watts')})",
                         f"{{{{cluster}}}} {agg}") for agg in ("min", "avg", "max")),
                unit="watt", minimum=None, height=10,
            ),
        ],
    )


def memory_pools() -> db.Dashboard:
    p = Scope(("namespace", "cluster", "tier", "pool"))
    s = SITE
    return dashboard(
        "stargate-memory-pools",
        "Stargate / Memory pools",
        "HBM, DRAM and CXL pools: capacity, allocation, claims by phase.",
        ["memory"],
        [
            *site_variables(),
            query_variable("tier", "Tier", "stargate_pool_info", SITE),
            query_variable("pool", "Pool", "stargate_pool_info", Scope(("namespace", "cluster", "tier"))),
        ],
        [
            row("Totals"),
            stat_panel("Capacity", "Capacity of the selected pools.",
                       f"sum({p('stargate_pool_capacity_bytes')})", unit="bytes"),
            stat_panel("Allocated", "Bytes bound to claims.",
                       f"sum({p('stargate_pool_allocated_bytes')})", unit="bytes"),
            stat_panel("Available", "Capacity minus allocated.",
                       f"sum({p('stargate_pool_available_bytes')})", unit="bytes"),
            stat_panel("Pending bytes", "Bytes asked by claims not bound.",
                       f"sum({p('stargate_pool_pending_bytes')})", unit="bytes", steps=WARN_FROM_1),
            stat_panel("Bound claims", "Claims bound.",
                       call("sum", p("stargate_pool_claims", 'phase="Bound"'))),
            stat_panel("Pending claims",
                       "Claims waiting for room (alert StargatePoolClaimsPending after 15 min).",
                       call("sum", p("stargate_pool_claims", 'phase="Pending"')), steps=WARN_FROM_1),
            bargauge_panel(
                "Pool usage",
                "Allocated over capacity per pool (alert StargatePoolNearlyExhausted above 90 %).",
                Series(f"{p('stargate_pool_allocated_bytes')} / {p('stargate_pool_capacity_bytes')}",
                       "{{cluster}}/{{pool}} ({{tier}})"),
                unit="percentunit", minimum=0, maximum=1,
                steps=thresholds("green", (0.8, "orange"), (0.9, "red")),
            ),
            timeseries_panel(
                "Capacity by tier", "Capacity of the selected pools per tier and site.",
                Series(f"sum by (namespace, cluster, tier) ({p('stargate_pool_capacity_bytes')})",
                       "{{cluster}} {{tier}}"),
                unit="bytes",
            ),
            row("Per pool"),
            timeseries_panel(
                "Capacity, allocated and available", "Per pool.",
                *(Series(p(f"stargate_pool_{f}_bytes"), f"{{{{pool}}}} {f}")
                  for f in ("capacity", "allocated", "available")),
                unit="bytes",
            ),
            timeseries_panel("Claims by phase", "Bound and Pending claims per pool.",
                             Series(f"sum by (namespace, cluster, pool, phase) ({p('stargate_pool_claims')})",
                                    "{{pool}} {{phase}}")),
            timeseries_panel("Pending bytes", "Bytes asked by claims that are not bound, per pool.",
                             Series(p("stargate_pool_pending_bytes"), "{{pool}}"), unit="bytes"),
            timeseries_panel(
                "Site memory",
                "HBM of healthy GPUs and host DRAM of nodes not in maintenance, per site: what derived "
                "pools are sized from.",
                Series(s("stargate_cluster_hbm_bytes"), "{{cluster}} HBM"),
                Series(s("stargate_cluster_host_memory_bytes"), "{{cluster}} host DRAM"),
                unit="bytes",
            ),
            table_panel(
                "Pools", "Every selected pool now, with its conditions (1 = True).",
                Column(p("stargate_pool_info"), None),
                Column(p("stargate_pool_capacity_bytes"), "Capacity"),
                Column(p("stargate_pool_allocated_bytes"), "Allocated"),
                Column(p("stargate_pool_available_bytes"), "Available"),
                *(Column(call("sum without (condition) ", p("stargate_pool_condition", f'condition="{c}"')),
                         c) for c in ("Ready", "Exhausted")),
                unit="bytes",
            ),
        ],
    )


def operator_health() -> db.Dashboard:
    j = Scope(("job", "instance"))
    ns = NAMESPACE
    since = f"time() - {ns('stargate_last_successful_reconcile_timestamp_seconds')}"
    errors = j("stargate_reconciles_total", 'result="error"')

    def rate(metric: str, by: str) -> str:
        return f"sum by ({by}) (rate({j(metric)}[$__rate_interval]))"

    def quantile(q: str, metric: str, by: str) -> str:
        return f"histogram_quantile({q}, {rate(metric, by)})"

    return dashboard(
        "stargate-operator-health",
        "Stargate / Operator health",
        "The operator itself: up, reconciliations, latency, API writes, scrape cost, resources.",
        ["operator"],
        [
            *site_variables(),
            query_variable("job", "Job", "stargate_build_info"),
            query_variable("instance", "Instance", "stargate_build_info", Scope(("job",))),
        ],
        [
            row("Operator"),
            stat_panel(
                "Up", "Targets of the operator Prometheus scrapes successfully (alert StargateOperatorDown).",
                f"sum({j('up')})", steps=thresholds("red", (1, "green")),
            ),
            table_panel(
                "Replicas",
                "Version of each operator instance, and whether it is the active one (1) or a standby (0); "
                "only the active replica exports the sites' series.",
                Column(j("stargate_build_info"), None),
                Column(j("stargate_active"), "Active"),
                width=8, height=4,
            ),
            stat_panel("Reconcile errors (1h)", "Failed reconciliations over the last hour.",
                       f"sum(increase({errors}[1h])) or vector(0)",
                       decimals=0, steps=WARN_FROM_1),
            stat_panel("Slowest site since success",
                       "Longest time since a namespace was last reconciled successfully.",
                       f"max({since})", unit="s", width=8),
            row("Reconciliation"),
            timeseries_panel("Reconciliations", "Per second, by kind and result.",
                             Series(rate("stargate_reconciles_total", "kind, result"), "{{kind}} {{result}}"),
                             unit="ops"),
            timeseries_panel(
                "Reconcile duration",
                "Quantiles of one coalesced recomputation (status writes included); alert "
                "StargateReconcileSlow above 2 s at p99.",
                *(Series(quantile(q, "stargate_reconcile_duration_seconds_bucket", "kind, le"),
                         f"{{{{kind}}}} p{q[2:].ljust(2, '0')}") for q in ("0.5", "0.9", "0.99")),
                unit="s",
            ),
            timeseries_panel(
                "Allocation duration", "Quantiles of the core's computation of one namespace.",
                *(Series(quantile(q, "stargate_allocation_duration_seconds_bucket", "le"),
                         f"p{q[2:].ljust(2, '0')}") for q in ("0.5", "0.99")),
                unit="s",
            ),
            timeseries_panel("API writes", "Status patches and Events per second, by kind and verb.",
                             Series(rate("stargate_api_writes_total", "kind, verb"), "{{kind}} {{verb}}"),
                             unit="wps"),
            timeseries_panel("Time since last successful reconcile", "Per namespace.",
                             Series(since, "{{namespace}}"), unit="s"),
            timeseries_panel("Objects by kind and Ready", "What the operator holds per namespace.",
                             Series(f"sum by (namespace, kind, ready) ({ns('stargate_objects')})",
                                    "{{namespace}} {{kind}} ready={{ready}}")),
            row("Cost"),
            timeseries_panel(
                "Scrape duration and series",
                "How long Prometheus takes to scrape the operator, and how many series it returns "
                "(per-node metrics multiply them).",
                Series(j("scrape_duration_seconds"), "{{instance}} scrape seconds"),
                Series(j("scrape_samples_scraped"), "{{instance}} samples"),
                minimum=None, width=8,
            ),
            timeseries_panel("CPU", "CPU seconds per second of the operator process.",
                             Series(f"rate({j('process_cpu_seconds_total')}[$__rate_interval])",
                                    "{{instance}}"),
                             unit="percentunit", width=8),
            timeseries_panel("Memory", "Resident memory of the operator process.",
                             Series(j("process_resident_memory_bytes"), "{{instance}}"),
                             unit="bytes", width=8),
        ],
    )


def power_tree() -> db.Dashboard:
    """The site's power and cooling tree: every PowerDomain's usable,
    allocated and measured power, its headroom and conditions, and the racks held below their
    demand with what holds them; and the grid events that lower the site or a feed:
    on a timeline, with their target against the measured power."""
    d = Scope(("namespace", "cluster", "type", "domain"))
    s = SITE

    def domain(field: str) -> str:
        return d(f"stargate_domain_{field}")

    share = f"{domain('headroom_watts')} / {domain('usable_watts')}"
    limited = s("stargate_rack_power_limited_info")

    def of_limited(metric: str) -> str:
        return f"{s(metric)} and on (namespace, cluster, rack) {limited}"

    def event(field: str) -> str:
        return s(f"stargate_grid_event_{field}")

    return dashboard(
        "stargate-power-tree",
        "Stargate / Power tree",
        "The power and cooling tree of every site: usable, allocated and measured power per domain, "
        "headroom, overcommitted and constrained domains, the racks they limit, and the grid events "
        "that lower the site or a feed.",
        ["power"],
        [
            *site_variables(),
            query_variable("type", "Type", "stargate_domain_info", SITE),
            query_variable("domain", "Domain", "stargate_domain_info",
                           Scope(("namespace", "cluster", "type"))),
        ],
        [
            row("Tree"),
            stat_panel("Domains", "PowerDomains selected (both types unless the Type variable narrows).",
                       f"count({domain('info')})"),
            stat_panel("Overcommitted",
                       "Domains whose racks' floors exceed usable (alert StargateDomainOvercommitted).",
                       f"sum({domain('overcommitted')})", steps=BAD_FROM_1),
            stat_panel("Constrained", "Domains whose demand beneath exceeds usable: they limit their racks.",
                       f"sum({domain('constrained')})", steps=WARN_FROM_1),
            stat_panel("Over limit",
                       "Domains measuring more than usable beneath them (alert StargateDomainOverLimit).",
                       f"sum({domain('over_limit')})", steps=BAD_FROM_1),
            stat_panel("Lowest headroom",
                       "The smallest share of usable power still unallocated among the selected domains "
                       "(alert StargateDomainHeadroomLow below 5 %).",
                       f"min({share})", unit="percentunit", decimals=1,
                       steps=thresholds("red", (0.05, "orange"), (0.2, "green"))),
            stat_panel("Racks limited",
                       "Racks of the selected sites held below their demand (by the site or a domain).",
                       f"count({limited}) or vector(0)", steps=WARN_FROM_1),
            row("Per domain"),
            timeseries_panel(
                "Usable, allocated and measured",
                "Per domain (choose domains with the Domain variable): usable (rating after derating), "
                "the racks' budgets beneath it and their measured power.",
                *(Series(domain(f"{f}_watts"), f"{{{{domain}}}} {f}")
                  for f in ("usable", "allocated", "measured")),
                unit="watt", width=24, height=10,
            ),
            timeseries_panel(
                "Headroom", "Usable minus allocated per domain; negative while overcommitted.",
                Series(domain("headroom_watts"), "{{domain}}"), unit="watt", minimum=None,
            ),
            timeseries_panel(
                "Demand and floors against usable",
                "Demand and floors beneath each domain over its usable power: above 1, the demand is "
                "Constrained, or the floors Overcommitted.",
                Series(f"{domain('demand_watts')} / {domain('usable_watts')}", "{{domain}} demand"),
                Series(f"{domain('floor_watts')} / {domain('usable_watts')}", "{{domain}} floors"),
                unit="percentunit",
            ),
            bargauge_panel(
                "Load", "Measured power over usable, per domain (alert StargateDomainOverLimit above 1).",
                Series(f"{domain('measured_watts')} / {domain('usable_watts')}", "{{domain}}"),
                unit="percentunit", minimum=0, maximum=1.2,
                steps=thresholds("green", (0.8, "orange"), (1, "red")),
            ),
            bargauge_panel(
                "Allocated share", "Allocated over usable, per domain: 1 is full.",
                Series(f"{domain('allocated_watts')} / {domain('usable_watts')}", "{{domain}}"),
                unit="percentunit", minimum=0, maximum=1.2,
                steps=thresholds("green", (0.95, "orange"), (1.0001, "red")),
            ),
            row("Headroom"),
            table_panel(
                "Domains",
                "Every selected domain now, in tree order (path): usable, allocated, headroom, measured, "
                "racks beneath and conditions (1 = True).",
                Column(domain("info"), None),
                Column(domain("usable_watts"), "Usable"),
                Column(domain("allocated_watts"), "Allocated"),
                Column(domain("headroom_watts"), "Headroom"),
                Column(share, "Headroom share", unit="percentunit"),
                Column(domain("measured_watts"), "Measured"),
                Column(domain("racks"), "Racks", unit="none"),
                Column(domain("ready"), "Ready", unit="none"),
                Column(domain("overcommitted"), "Overcommitted", unit="none"),
                Column(domain("constrained"), "Constrained", unit="none"),
                Column(domain("over_limit"), "Over limit", unit="none"),
                unit="watt", sort_by="path", height=12,
            ),
            row("Limited racks"),
            table_panel(
                "Racks limited and by what",
                "Racks whose budget is below their demand, and the constraint that closed on them first "
                "(status.power.limitedBy: the site, or a domain of the tree).",
                Column(limited, None),
                Column(of_limited("stargate_rack_priority"), "Priority", unit="none"),
                Column(of_limited("stargate_rack_power_demand_watts"), "Demand"),
                Column(of_limited("stargate_rack_power_budget_watts"), "Budget"),
                Column(f"{s('stargate_rack_power_demand_watts')} - {s('stargate_rack_power_budget_watts')} "
                       f"and on (namespace, cluster, rack) {limited}", "Short by"),
                unit="watt", rename={"limited_by": "limited by"}, sort_by="limited by", width=16,
            ),
            timeseries_panel(
                "Racks limited, by constraint",
                "How many racks each site or domain holds below their demand.",
                Series(f"count by (namespace, cluster, limited_by) ({limited})",
                       "{{cluster}}: {{limited_by}}"),
                width=8, height=10,
            ),
            row("Grid events"),
            stat_panel("Grid events in effect",
                       "GridEvents of the selected sites lowering the site's budget or a feed's usable now.",
                       f"count({event('active')} == 1) or vector(0)", steps=WARN_FROM_1),
            stat_panel("Grid events not met",
                       "GridEvents in effect whose allocation or measured power is above their target "
                       "(alert StargateGridEventNotMet after a minute).",
                       f"count({event('met')} == 0) or vector(0)", steps=BAD_FROM_1),
            state_timeline_panel(
                "Grid events",
                "Every GridEvent of the selected sites on a timeline: when it was in effect (from its "
                "start to its end, by the operator's timers), on the site or on its feed.",
                Series(event("active"), "{{event}}"),
                {0: ("not in effect", "transparent"), 1: ("in effect", "orange")},
                width=16, height=6,
            ),
            timeseries_panel(
                "Grid event target and measured",
                "While each event is in effect: its target (the capacity it sets), the measured power "
                "beneath its site or feed, and the budgets allocated there. Measured above target: "
                "not met.",
                *(Series(event(f"{f}_watts"), f"{{{{event}}}} {f}")
                  for f in ("target", "measured", "allocated")),
                unit="watt", width=24, height=10,
            ),
        ],
    )


# File name under helm/stargate-operator/dashboards/ -> the function that builds it.
DASHBOARDS: dict[str, Callable[[], db.Dashboard]] = {
    "site-overview.json": site_overview,
    "power.json": power,
    "power-tree.json": power_tree,
    "memory-pools.json": memory_pools,
    "operator-health.json": operator_health,
}


def render_all() -> dict[str, str]:
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true",
                   help="exit 1 if a committed file differs or is not generated")
    p.add_argument("--dir", type=Path, default=TARGET, help="the dashboards folder (default: the chart's)")
    args = p.parse_args()
    target: Path = args.dir
    rendered = render_all()
    if args.check:
        stale = [n for n, text in rendered.items()
                 if not (target / n).exists() or (target / n).read_text() != text]
        extra = sorted(f.name for f in target.glob("*.json") if f.name not in rendered)
        if stale or extra:
            if stale:
                print(f"out of date (run hack/gen-dashboards.py): {', '.join(stale)}", file=sys.stderr)
            if extra:
                print(f"not generated by hack/gen-dashboards.py: {', '.join(extra)}", file=sys.stderr)
            return 1
        return 0
    target.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (target / name).write_text(text)
        print(f"wrote {target / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
