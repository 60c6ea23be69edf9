"""The custom collector: every status figure of every site, rack and pool, at scrape time.

`StargateCollector` holds no state of its own: on every scrape it reads the current objects of a
`StatusSource` (the engine's per-namespace cache) and computes the metric families from them. So
the reconcile loop pays nothing for metrics, and the series of a deleted object disappear with the
object (there is no per-object gauge to forget to remove). Per-node series are off by default (a
10,000-node site would otherwise export about 150,000 series); the site and rack series carry the
node counts (stale telemetry, maintenance, power-capped nodes, nodes whose agent confirmed their
limit or reported another one in force) either way.

Those counts, and whether a curtailment is in effect, are the core's decisions: the collector reads
them from the source's `counts()` (the engine keeps the last plan's Plan.counts) and decides
nothing itself. A source without counts (a fixed list of objects) gets them from the core's
`counts_from_objects`, which reads the same figures back from the statuses the core wrote.

Naming (Prometheus conventions, checked by `promtool check metrics` in the tests): prefix
`stargate_`, then the level (`cluster`, `rack`, `domain`, `pool`, `node`), base units as suffix
(`_watts`, `_bytes`, `_seconds`, `_ratio` for shares from 0 to 1), `_total` only on counters. Labels:
`namespace`, `cluster` (the StargateCluster's name), `rack`, `pool` (with `tier`), `node`; a
PowerDomain's series carry `domain`, `type` (Electrical, Cooling), `role` and `parent` (the
spec's, empty when unset: directly under the site).

Derived figures, defined here once:

* `stargate_cluster_power_headroom_watts` = budget - allocated: power the site could still hand
  out; negative while the site is overcommitted (the racks' floors exceed the budget).
* `stargate_cluster_power_overcommitted_watts` = max(0, floor - budget): by how much.
* `stargate_cluster_power_curtailment_ratio` = the curtailment share the core applies / 100 (the
  spec's percent while it applies: no `until`, or `until` still ahead; else 0);
  `..._curtailment_requested_ratio` is the spec's figure whether or not it applies, and
  `..._curtailment_until_timestamp_seconds` its end, when it has one.
* `stargate_cluster_carbon_grams_per_second` = status.carbonGramsPerHour / 3600 (base unit of
  time; Grafana shows it back per hour).
* Condition gauges (`stargate_<level>_condition{condition=...}`): 1 when the condition's status is
  True, 0 when False or Unknown; absent when the status does not carry the condition yet. A
  PowerDomain's conditions have one gauge each instead (`stargate_domain_ready`, `..._overcommitted`,
  `..._constrained`, `..._over_limit`), read the same way.
* PowerDomain figures are the status's as the core wrote them, headroom
  included (`stargate_domain_headroom_watts` = status.headroomWatts = usable - allocated, negative
  while overcommitted); `stargate_domain_info` carries the domain's `path` ("/"-joined, top first).
* `stargate_rack_power_limited_info{limited_by=...}` = 1 for a rack whose status.power.limitedBy
  names the constraint (the site or a PowerDomain) that holds its budget below its demand; absent
  for a rack that is not limited.
* GridEvents, labelled `namespace`, `cluster`, `event` (its name) and `domain`
  (the targeted PowerDomain; empty for the whole site): `stargate_grid_event_active` is 1 while
  the event is in effect (status.phase Active and Ready True: it lowers its constraint now), else
  0; `stargate_grid_event_{target,allocated,measured}_watts` are the status's figures while it is
  in effect (absent otherwise, so a graph shows each event over its window only);
  `stargate_grid_event_met` is its condition Met (1 True, 0 False or Unknown) while in effect;
  `..._start_timestamp_seconds` / `..._end_timestamp_seconds` its schedule (the end absent when
  open-ended); `stargate_grid_event_info{source=...}` names who asked. Settlement, whenever the
  status carries it (a completed event's too): `..._baseline_watts`, `..._shed_watts`,
  `..._shed_joules`, `..._facility_shed_joules` and the instants `..._ramp_started_`,
  `..._target_reached_` and `..._measured_met_timestamp_seconds`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stargate_operator.core.counts import (
    CURTAILMENT_PERCENT,
    NODES_LIMIT_CONFIRMED,
    NODES_LIMIT_UNCONFIRMED,
    NODES_MAINTENANCE,
    NODES_POWER_CAPPED,
    NODES_TELEMETRY_STALE,
    RACKS_OVER_BUDGET,
    RACKS_POWER_CAPPED,
    counts_from_objects,
)
from stargate_operator.core.objects import in_maintenance
from stargate_operator.core.types import ObjectKey
from stargate_operator.core.wire import mapping, parse_epoch
from stargate_operator.kinds import (
    DEFAULT_DESIGN_PUE,
    DEFAULT_DOMAIN_TYPE,
    DEFAULT_RACK_PRIORITY,
    DEFAULT_RESERVE_PERCENT,
    GPU_NODE,
    GRID_EVENT,
    KINDS,
    MEMORY_CLAIM,
    MEMORY_POOL,
    POWER_DOMAIN,
    RACK,
    RACKS_FIELD,
    STARGATE_CLUSTER,
)

Counts = Mapping[ObjectKey, Mapping[str, int]]


class SnapshotSource(Protocol):
    """Where the collector reads the current objects from.

    `snapshot()` yields every current stargate object of every watched namespace in wire form
    (`kind`, `metadata.namespace`, `metadata.name`, `spec`, `status`; status missing or partial for
    objects not reconciled yet). It is called from the metrics server's thread, not from the
    asyncio loop: return a copy (e.g. `list(cache.values())`, atomic under the GIL) and replace
    objects rather than mutating them in place.
    """

    def snapshot(self) -> Iterable[Mapping[str, Any]]: ...


class StatusSource(SnapshotSource, Protocol):
    """A snapshot and the core's counts that go with it (the engine: `Engine.counts()`, the last
    plan's Plan.counts of every namespace, by object key; called from the metrics thread too).

    A source with `snapshot()` alone is accepted as well (a test's stand-in): the collector then
    has the core read the counts from the snapshot (`counts_from_objects`)."""

    def counts(self) -> Counts: ...


# Optional on a source: an `active` attribute with `is_set()` (a threading or asyncio Event); while
# it is not set, the collector exports no object series (see StargateCollector._active).


def _mappings(objects: Iterable[Any]) -> list[Mapping[str, Any]]:
    return [o for o in objects if type(o) is dict or isinstance(o, Mapping)]


class StaticSource:
    """A fixed list of objects (for `plan`, tests and benchmarks); `replace` swaps it atomically.
    Its counts are the core's reading of the objects' statuses, the curtailment judged now."""

    def __init__(self, objects: Iterable[Mapping[str, Any]] = ()) -> None:
        self._objects: list[Mapping[str, Any]] = list(objects)

    def replace(self, objects: Iterable[Mapping[str, Any]]) -> None:
        self._objects = list(objects)

    def snapshot(self) -> Iterable[Mapping[str, Any]]:
        return self._objects

    def counts(self) -> Counts:
        return counts_from_objects(_mappings(self._objects), time.time())


# --------------------------------------------------------------------------------------------------
# Reading wire-form objects defensively.


def _get(obj: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = obj
    for key in path:
        # dicts (what JSON gives) first: an isinstance check against the Mapping ABC is slow
        if type(cur) is not dict and not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def _num(obj: Mapping[str, Any] | None, *path: str) -> float | None:
    """A number (ints stay ints: they render exactly and fast), or None for anything else."""
    value = _get(obj, *path)
    kind = type(value)
    if kind is int or kind is float:
        return value  # type: ignore[no-any-return]
    return None


def _str(obj: Mapping[str, Any] | None, *path: str) -> str:
    value = _get(obj, *path)
    return value if type(value) is str else ""


def _timestamp(value: Any) -> float | None:
    # The core's reading of a time, so that a metric and the status agree on what it means.
    return parse_epoch(value)


def _conditions(status: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    conds = status.get("conditions") if type(status) is dict else _get(status, "conditions")
    if type(conds) is list:
        for cond in conds:
            if type(cond) is dict or isinstance(cond, Mapping):
                ctype, cstatus = cond.get("type"), cond.get("status")
                if type(ctype) is str and type(cstatus) is str:
                    out[ctype] = cstatus
    return out


def _ready_state(conds: Mapping[str, str]) -> str:
    return {"True": "true", "False": "false"}.get(conds.get("Ready", ""), "unknown")


# --------------------------------------------------------------------------------------------------
# The families.

CLUSTER_LABELS = ("namespace", "cluster")
RACK_LABELS = ("namespace", "cluster", "rack")
POOL_LABELS = ("namespace", "cluster", "pool", "tier")
NODE_LABELS = ("namespace", "cluster", "rack", "node")
DOMAIN_LABELS = ("namespace", "cluster", "domain", "type", "role", "parent")
GRID_EVENT_LABELS = ("namespace", "cluster", "event", "domain")
_CLUSTER, _RACK, _NODE, _POOL, _CLAIM, _DOMAIN, _GRID_EVENT = (
    STARGATE_CLUSTER.kind, RACK.kind, GPU_NODE.kind, MEMORY_POOL.kind, MEMORY_CLAIM.kind, POWER_DOMAIN.kind,
    GRID_EVENT.kind,
)
# A GridEvent's figures while in effect: (status field, metric, help).
_GRID_EVENT_WATTS = (
    ("targetWatts", "stargate_grid_event_target_watts",
     "The capacity the grid event sets on its constraint (the site's budget or the domain's usable)."),
    ("allocatedWatts", "stargate_grid_event_allocated_watts",
     "Sum of the rack budgets beneath the grid event's constraint."),
    ("measuredWatts", "stargate_grid_event_measured_watts",
     "Measured power beneath the grid event's constraint (nodes with fresh telemetry)."),
)
# A GridEvent's settlement figures, whenever its status carries them (completed events too: the
# record a utility settles on): (status field, metric, help).
_GRID_EVENT_SETTLEMENT = (
    ("baselineWatts", "stargate_grid_event_baseline_watts",
     "Mean measured power beneath the constraint over the 10 minutes before the descent (IT watts)."),
    ("shedWatts", "stargate_grid_event_shed_watts",
     "Baseline minus measured power beneath the constraint while active, as it ended once completed."),
)
_GRID_EVENT_TIMES = (
    ("rampStartedAt", "stargate_grid_event_ramp_started_timestamp_seconds",
     "Unix time at which the capacity began to descend toward the target."),
    ("targetReachedAt", "stargate_grid_event_target_reached_timestamp_seconds",
     "Unix time at which the capacity reached the target."),
    ("measuredMetAt", "stargate_grid_event_measured_met_timestamp_seconds",
     "Unix time at which measured power beneath was first within the target while active."),
)
# A PowerDomain's status figures: (status field, metric, help), each read as the core wrote it.
_DOMAIN_WATTS = (
    ("ratingWatts", "stargate_domain_rating_watts",
     "Rating of the domain (spec, or volts x amperes x phases x power factor)."),
    ("usableWatts", "stargate_domain_usable_watts",
     "Rating after derating (deratePercent): what may be allocated beneath."),
    ("floorWatts", "stargate_domain_floor_watts", "Sum of the floors of the racks beneath the domain."),
    ("demandWatts", "stargate_domain_demand_watts", "Sum of the demands of the racks beneath the domain."),
    ("allocatedWatts", "stargate_domain_allocated_watts",
     "Sum of the budgets of the racks beneath the domain."),
    ("measuredWatts", "stargate_domain_measured_watts",
     "Sum of the measured power of the racks beneath the domain."),
    ("headroomWatts", "stargate_domain_headroom_watts",
     "Usable minus allocated (status.headroomWatts); negative while overcommitted."),
)
# A PowerDomain's conditions: (condition, gauge, what True means).
_DOMAIN_CONDITIONS = (
    ("Ready", "stargate_domain_ready", "the domain is valid and the floors beneath fit"),
    ("Overcommitted", "stargate_domain_overcommitted", "the floors of the racks beneath exceed usable"),
    ("Constrained", "stargate_domain_constrained", "the demand beneath exceeds usable: it limits its racks"),
    ("OverLimit", "stargate_domain_over_limit", "the measured power beneath exceeds usable"),
    ("Capping", "stargate_domain_capping",
     "the domain is capping: it allocates within usable on measured draw"),
)
# The node counts a rack and a site both export, stargate_{rack,cluster}_nodes_<suffix>: (suffix,
# Counts key). The metric names are spelt out once here, not per scrape.
_NODE_COUNTS = (
    ("maintenance", NODES_MAINTENANCE),
    ("telemetry_stale", NODES_TELEMETRY_STALE),
    ("power_capped", NODES_POWER_CAPPED),
    ("limit_confirmed", NODES_LIMIT_CONFIRMED),
    ("limit_unconfirmed", NODES_LIMIT_UNCONFIRMED),
)
_RACK_NODE_COUNTS = tuple((f"stargate_rack_nodes_{suffix}", key) for suffix, key in _NODE_COUNTS)
_CLUSTER_NODE_COUNTS = tuple((f"stargate_cluster_nodes_{suffix}", key) for suffix, key in _NODE_COUNTS)
_NONE: Mapping[str, int] = {}
_NO_COUNTS: Counts = {}

Row = tuple[Sequence[str], float]
T = TypeVar("T")


class Families:
    """The families of one collection, as raw (label values, value) rows per declared name.

    Rows become prometheus_client families for `collect()` (the library renders them in either
    exposition format), or are written straight to the classic text format by the metrics server
    (server.render_text): three to five times faster than going through the library's objects,
    which matters only when per-node series are on for a very large site.
    """

    def __init__(self) -> None:
        self._rows: dict[str, list[Row]] = {}
        self._declared: list[tuple[str, str, Sequence[str]]] = []
        self._counters: set[str] = set()

    def declare(self, name: str, doc: str, labels: Sequence[str], *, counter: bool = False) -> None:
        """A gauge; with `counter`, a counter (its name ends in _total): a figure that only grows,
        such as a count the core keeps in status across restarts."""
        if "\\" in doc or "\n" in doc:
            raise ValueError(f"{name}: help text must not need escaping")
        if counter:
            if not name.endswith("_total"):
                raise ValueError(f"{name}: a counter's name ends in _total")
            self._counters.add(name)
        self._declared.append((name, doc, labels))

    def type_of(self, name: str) -> str:
        return "counter" if name in self._counters else "gauge"

    def add(self, name: str, labels: Sequence[str], value: float | None) -> None:
        if value is None:
            return
        if type(value) is float and value.is_integer() and -1e15 < value < 1e15:
            value = int(value)
        self._rows[name].append((labels, value))

    def begin(self) -> None:
        self._rows = {name: [] for name, _, _ in self._declared}

    @property
    def rows(self) -> dict[str, list[Row]]:
        return self._rows

    @property
    def declared(self) -> list[tuple[str, str, Sequence[str]]]:
        """(name, help, label names) of every family, in exposition order."""
        return self._declared

    def families(self) -> Iterator[Metric]:
        for name, doc, labels in self._declared:
            rows = self._rows[name]
            if rows:
                fam: GaugeMetricFamily | CounterMetricFamily = (
                    CounterMetricFamily(name, doc, labels=list(labels)) if name in self._counters
                    else GaugeMetricFamily(name, doc, labels=list(labels)))
                for values, value in rows:
                    fam.add_metric(values, value)
                yield fam

    def describe(self) -> Iterator[Metric]:
        for name, doc, labels in self._declared:
            if name in self._counters:
                yield CounterMetricFamily(name, doc, labels=list(labels))
            else:
                yield GaugeMetricFamily(name, doc, labels=list(labels))


def _declare_capping(f: Families, level: str, labels: Sequence[str]) -> None:
    """The oversubscription figures of a site or domain with oversubscription, from status.capping."""
    what = "site budget" if level == "cluster" else "domain"
    f.declare(f"stargate_{level}_capping_starts_total",
              f"Times capping of the {what} has started (status.capping.starts, kept across restarts).",
              labels, counter=True)
    f.declare(f"stargate_{level}_capping_draw_watts",
              f"The draw capping of the {what} is decided on: peak (else measured) power of nodes with "
              "fresh telemetry, the allocation of the others.", labels)
    f.declare(f"stargate_{level}_allocatable_watts",
              f"The capacity the allocation beneath the {what} uses: raised by oversubscription, or the "
              "real one while capping.", labels)


def _add_capping(f: Families, level: str, labels: Sequence[str], capping: Any) -> None:
    if type(capping) is not dict:
        return
    f.add(f"stargate_{level}_capping_starts_total", labels, _num(capping, "starts"))
    f.add(f"stargate_{level}_capping_draw_watts", labels, _num(capping, "drawWatts"))
    f.add(f"stargate_{level}_allocatable_watts", labels, _num(capping, "allocatableWatts"))


def _add_nodes_and_gpus(f: Families, node_counts: Sequence[tuple[str, str]], gpus: str,
                        labels: Sequence[str], counts: Mapping[str, int], status: Any) -> None:
    """What a rack and a site export alike: their node counts (`node_counts`: (metric, Counts key)
    pairs) and, where the status has both figures, their GPUs healthy and unhealthy (family `gpus`)."""
    for metric, key in node_counts:
        f.add(metric, labels, counts.get(key, 0))
    total, healthy = _num(status, "gpus", "total"), _num(status, "gpus", "healthy")
    if total is not None and healthy is not None:
        f.add(gpus, (*labels, "healthy"), healthy)
        f.add(gpus, (*labels, "unhealthy"), max(0.0, total - healthy))


def _declare_all(f: Families, per_node: bool) -> None:
    c, r, p, n = CLUSTER_LABELS, RACK_LABELS, POOL_LABELS, NODE_LABELS
    ck = (*c, "condition")
    f.declare("stargate_active", "1 when this operator replica acts and exports the sites' series, "
              "0 on a standby (leader election).", ())
    # Objects
    f.declare("stargate_objects", "Stargate objects by kind and Ready state (true, false, unknown).",
              ("namespace", "kind", "ready"))
    # Site
    f.declare("stargate_cluster_info", "One series per site, with its descriptive labels; value 1.",
              (*c, "region", "site_kind", "cooling"))
    f.declare("stargate_cluster_racks", "Racks of the site.", c)
    f.declare("stargate_cluster_nodes", "GPU nodes of the site.", c)
    f.declare("stargate_cluster_nodes_maintenance", "GPU nodes of the site in maintenance.", c)
    f.declare("stargate_cluster_nodes_telemetry_stale",
              "GPU nodes of the site whose telemetry is stale (TelemetryStale=True).", c)
    f.declare("stargate_cluster_nodes_power_capped",
              "GPU nodes of the site allocated less than their demand (PowerCapped=True).", c)
    f.declare("stargate_cluster_nodes_limit_confirmed",
              "GPU nodes of the site whose agent reports their assigned limit enforced "
              "(PowerLimitApplied=True).", c)
    f.declare("stargate_cluster_nodes_limit_unconfirmed",
              "GPU nodes of the site whose agent reports another limit in force than the one assigned "
              "(PowerLimitApplied=False, NotEnforced); nodes that never reported are neither.", c)
    f.declare("stargate_cluster_racks_power_capped",
              "Racks of the site whose budget is below their demand (PowerCapped=True).", c)
    f.declare("stargate_cluster_racks_over_budget",
              "Racks of the site that measure more than their budget (OverBudget=True).", c)
    f.declare("stargate_cluster_gpus", "GPUs of the site by state (healthy, unhealthy).", (*c, "state"))
    f.declare("stargate_cluster_hbm_bytes", "HBM of the site's healthy GPUs.", c)
    f.declare("stargate_cluster_host_memory_bytes", "Host DRAM of the site's nodes not in maintenance.", c)
    f.declare("stargate_cluster_power_it_capacity_watts",
              "Power the site can deliver to IT equipment (spec).", c)
    f.declare("stargate_cluster_power_reserve_ratio", "Share of the IT capacity held back (spec), 0 to 1.", c)
    f.declare("stargate_cluster_power_curtailment_ratio",
              "Share of the budget shed for demand response, in effect now (0 when none or expired).", c)
    f.declare("stargate_cluster_power_curtailment_requested_ratio",
              "Share of the budget the spec's curtailment asks to shed, whether or not it applies now.", c)
    f.declare("stargate_cluster_power_curtailment_until_timestamp_seconds",
              "Unix time after which the spec's curtailment no longer applies.", c)
    f.declare("stargate_cluster_power_budget_watts",
              "Usable site budget after reserve and curtailment.", c)
    f.declare("stargate_cluster_power_floor_watts", "Sum of the racks' floors.", c)
    f.declare("stargate_cluster_power_demand_watts", "Sum of the racks' demands.", c)
    f.declare("stargate_cluster_power_allocated_watts", "Sum of the racks' budgets.", c)
    f.declare("stargate_cluster_power_measured_watts", "Sum of measured node power (fresh telemetry).", c)
    f.declare("stargate_cluster_power_facility_watts",
              "Facility power: measured (or allocated where nothing is measured) times design PUE.", c)
    f.declare("stargate_cluster_power_headroom_watts",
              "Budget minus allocated: power still to hand out; negative while overcommitted.", c)
    f.declare("stargate_cluster_power_overcommitted_watts",
              "By how much the racks' floors exceed the site budget (0 when not overcommitted).", c)
    f.declare("stargate_cluster_design_pue_ratio", "Design power usage effectiveness (spec).", c)
    f.declare("stargate_cluster_carbon_grams_per_second",
              "Carbon emission rate of the facility power, g CO2e per second (status per hour / 3600).", c)
    f.declare("stargate_cluster_condition", "Site condition: 1 True, 0 False or Unknown.", ck)
    f.declare("stargate_cluster_capping",
              "1 while the site budget is capping (allocating within the real budget on measured draw), "
              "0 while it allocates above it; absent without oversubscription.", c)
    _declare_capping(f, "cluster", c)
    f.declare("stargate_cluster_observe_nodes_over_limit",
              "Shadow mode (spec.power.enforcement Observe): nodes measured above what their limits "
              "would allow; absent while limits are enforced.", c)
    f.declare("stargate_cluster_observe_over_limit_watts",
              "Shadow mode: by how much those nodes draw above their limits, in watts (what enforcing "
              "would cap); absent while limits are enforced.", c)
    # Rack
    rk = (*r, "condition")
    f.declare("stargate_rack_info", "One series per rack, with its location labels; value 1.",
              (*r, "hall", "row", "position"))
    f.declare("stargate_rack_priority", f"{_RACK} priority (spec), 0 to 1000.", r)
    f.declare("stargate_rack_nodes", "GPU nodes in the rack.", r)
    f.declare("stargate_rack_nodes_maintenance", "GPU nodes of the rack in maintenance.", r)
    f.declare("stargate_rack_nodes_telemetry_stale", "GPU nodes of the rack whose telemetry is stale.", r)
    f.declare("stargate_rack_nodes_power_capped", "Nodes of the rack allocated less than their demand.", r)
    f.declare("stargate_rack_nodes_limit_confirmed",
              "Nodes of the rack whose agent reports their assigned limit enforced.", r)
    f.declare("stargate_rack_nodes_limit_unconfirmed",
              "Nodes of the rack whose agent reports another limit in force than the one assigned.", r)
    f.declare("stargate_rack_gpus", "GPUs of the rack by state (healthy, unhealthy).", (*r, "state"))
    f.declare("stargate_rack_power_max_watts", "Feed and cooling rating of the rack (spec).", r)
    f.declare("stargate_rack_power_budget_watts", "Power allocated to the rack.", r)
    f.declare("stargate_rack_power_floor_watts", "Sum of the rack's node floors.", r)
    f.declare("stargate_rack_power_demand_watts", "Sum of the rack's node demands, capped at the rating.", r)
    f.declare("stargate_rack_power_measured_watts", "Sum of measured node power in the rack.", r)
    f.declare("stargate_rack_condition", f"{_RACK} condition: 1 True, 0 False or Unknown.", rk)
    f.declare("stargate_rack_power_limited_info",
              "1 for a rack held below its demand, labelled with what limits it (status.power.limitedBy: "
              f"the site or a {_DOMAIN}).", (*r, "limited_by"))
    # Power domain
    d = DOMAIN_LABELS
    f.declare("stargate_domain_info",
              "One series per power domain, with its path from the top of its tree (/-joined); value 1.",
              (*d, "path"))
    for _, name, help_text in _DOMAIN_WATTS:
        f.declare(name, help_text, d)
    f.declare("stargate_domain_racks", "Racks beneath the domain, at any depth.", d)
    for ctype, name, meaning in _DOMAIN_CONDITIONS:
        f.declare(name, f"1 when {ctype} is True ({meaning}), 0 when False or Unknown.", d)
    _declare_capping(f, "domain", d)
    # Grid event
    e = GRID_EVENT_LABELS
    f.declare("stargate_grid_event_info", "One series per grid event, with who asked (spec.source); value 1.",
              (*e, "source"))
    f.declare("stargate_grid_event_active",
              "1 while the grid event is in effect (phase Active, Ready): it lowers its constraint; "
              "else 0.", e)
    for _, name, help_text in _GRID_EVENT_WATTS:
        f.declare(name, f"{help_text} Only while the event is in effect.", e)
    f.declare("stargate_grid_event_met",
              "1 while the grid event is in effect and Met is True (allocation and measured power within "
              "the target), 0 while it is in effect and not met.", e)
    for _, name, help_text in (*_GRID_EVENT_SETTLEMENT, *_GRID_EVENT_TIMES):
        f.declare(name, help_text, e)
    f.declare("stargate_grid_event_shed_joules",
              "Energy shed against the baseline over the active time (IT; status.shedWattHours x 3600); "
              "frozen when the event completes.", e)
    f.declare("stargate_grid_event_facility_shed_joules",
              "The energy shed at the site's design PUE: what the facility meter saw shed.", e)
    f.declare("stargate_grid_event_start_timestamp_seconds",
              "Unix time from which the grid event applies.", e)
    f.declare("stargate_grid_event_end_timestamp_seconds",
              "Unix time at which the grid event stops applying (absent when open-ended).", e)
    # Pool
    pk = (*p, "condition")
    f.declare("stargate_pool_info", "One series per memory pool (rack empty when site-wide); value 1.",
              (*p, "rack"))
    f.declare("stargate_pool_capacity_bytes", "Capacity of the memory pool.", p)
    f.declare("stargate_pool_allocated_bytes", "Bytes of the pool bound to claims.", p)
    f.declare("stargate_pool_available_bytes", "Capacity minus allocated.", p)
    f.declare("stargate_pool_pending_bytes", "Bytes asked by the pool's claims that are not bound.", p)
    f.declare("stargate_pool_claims", "Claims of the pool by phase (Bound, Pending).", (*p, "phase"))
    f.declare("stargate_pool_condition", "Pool condition: 1 True, 0 False or Unknown.", pk)
    if not per_node:
        return
    nk = (*n, "condition")
    f.declare("stargate_node_info", "One series per GPU node; value 1.", (*n, "gpu_model", "node_name"))
    f.declare("stargate_node_maintenance", "1 when the node is in maintenance.", n)
    f.declare("stargate_node_gpus", "GPUs of the node by state (healthy, unhealthy).", (*n, "state"))
    f.declare("stargate_node_power_limit_watts", "Per-GPU power limit the node agent must enforce.", n)
    f.declare("stargate_node_power_allocated_watts", "Power allocated to the node.", n)
    f.declare("stargate_node_power_floor_watts", "Node floor: base + count x min per-GPU power.", n)
    f.declare("stargate_node_power_demand_watts", "Node demand: base + count x requested per-GPU power.", n)
    f.declare("stargate_node_power_measured_watts", "Node power measured by its agent.", n)
    f.declare("stargate_node_hbm_used_bytes", "HBM in use on the node, as its agent reports.", n)
    f.declare("stargate_node_telemetry_timestamp_seconds", "Unix time of the node agent's last reading.", n)
    f.declare("stargate_node_condition", "Node condition: 1 True, 0 False or Unknown.", nk)


class StargateCollector(Collector):
    """Computes every stargate metric family from the source's objects at scrape time."""

    def __init__(self, source: SnapshotSource, per_node: bool = False) -> None:
        self._source = source
        self.per_node = per_node
        self._lock = threading.Lock()  # the families builder is reused; scrapes may overlap
        self._f = Families()
        _declare_all(self._f, per_node)

    def describe(self) -> Iterable[Metric]:
        return list(self._f.describe())

    def _active(self) -> bool:
        """Whether this replica acts. A source with an `active` event (the engine's: cleared on a
        standby under leader election) exports its objects only while it is set, so that a standby, whose
        cache is just as full, does not double every site's series on the dashboards."""
        active = getattr(self._source, "active", None)
        is_set = getattr(active, "is_set", None)
        return bool(is_set()) if callable(is_set) else True

    def _snapshot(self) -> list[Mapping[str, Any]]:
        if not self._active():
            return []
        for _ in range(3):
            try:
                return _mappings(self._source.snapshot())
            except RuntimeError:  # a dict changed size while copied: try again
                continue
        return _mappings(self._source.snapshot())

    def _counts(self, objects: list[Mapping[str, Any]], now: float) -> Counts:
        if not objects:
            return _NO_COUNTS
        counts = getattr(self._source, "counts", None)
        if callable(counts):
            return counts()  # type: ignore[no-any-return]
        return counts_from_objects(objects, now)

    def collect(self) -> Iterable[Metric]:
        return self.render(lambda f: list(f.families()))

    def render(self, write: Callable[[Families], T]) -> T:
        """Fill the families from a fresh snapshot and hand them to `write` (under the lock: the
        builder is reused by the next scrape)."""
        objects = self._snapshot()
        now = time.time()
        counts = self._counts(objects, now)
        with self._lock:
            self._f.begin()
            self._fill(objects, counts)
            return write(self._f)

    def _fill(self, objects: list[Mapping[str, Any]], counts: Counts) -> None:
        f = self._f
        f.add("stargate_active", (), 1 if self._active() else 0)
        by_kind: dict[str, list[Mapping[str, Any]]] = {k.kind: [] for k in KINDS}
        ready: dict[tuple[str, str, str], int] = {}
        for obj in objects:
            kind = obj.get("kind")
            if kind not in by_kind:
                continue
            by_kind[kind].append(obj)
            ns = _str(obj, "metadata", "namespace")
            state = _ready_state(_conditions(_get(obj, "status")))
            key = (ns, str(kind), state)
            ready[key] = ready.get(key, 0) + 1
        seen_ns_kind = {(ns, kind) for ns, kind, _ in ready}
        for ns, kind in sorted(seen_ns_kind):
            for state in ("true", "false", "unknown"):
                f.add("stargate_objects", (ns, kind, state), float(ready.get((ns, kind, state), 0)))

        if self.per_node:
            # rack -> cluster, for the nodes' labels
            rack_cluster: dict[tuple[str, str], str] = {}
            for rack in by_kind[_RACK]:
                rack_cluster[(_str(rack, "metadata", "namespace"), _str(rack, "metadata", "name"))] = _str(
                    rack, "spec", "clusterRef"
                )
            for node in by_kind[_NODE]:
                ns = _str(node, "metadata", "namespace")
                rack_name = _str(node, "spec", "rackRef")
                status = _get(node, "status")
                self._node(node, ns, rack_cluster.get((ns, rack_name), ""), rack_name, status,
                           _conditions(status), in_maintenance(mapping(_get(node, "spec"))))

        for rack in by_kind[_RACK]:
            ns = _str(rack, "metadata", "namespace")
            name = _str(rack, "metadata", "name")
            cluster = _str(rack, "spec", "clusterRef")
            labels = (ns, cluster, name)
            status = _get(rack, "status")
            conds = _conditions(status)
            f.add("stargate_rack_info", (*labels, _str(rack, "spec", "location", "hall"),
                                         _str(rack, "spec", "location", "row"),
                                         _str(rack, "spec", "location", "position")), 1.0)
            prio = _num(rack, "spec", "priority")
            f.add("stargate_rack_priority", labels, DEFAULT_RACK_PRIORITY if prio is None else prio)
            f.add("stargate_rack_power_max_watts", labels, _num(rack, "spec", "maxPowerWatts"))
            f.add("stargate_rack_nodes", labels, _num(status, "nodes"))
            _add_nodes_and_gpus(f, _RACK_NODE_COUNTS, "stargate_rack_gpus", labels,
                                counts.get((_RACK, ns, name), _NONE), status)
            for field in ("budget", "floor", "demand", "measured"):
                f.add(f"stargate_rack_power_{field}_watts", labels, _num(status, "power", f"{field}Watts"))
            for ctype, cstatus in conds.items():
                f.add("stargate_rack_condition", (*labels, ctype), 1.0 if cstatus == "True" else 0.0)
            limited = _str(status, "power", "limitedBy")
            if limited:
                f.add("stargate_rack_power_limited_info", (*labels, limited), 1.0)

        for domain in by_kind[_DOMAIN]:
            self._domain(domain)

        for event in by_kind[_GRID_EVENT]:
            self._grid_event(event)

        for cl in by_kind[_CLUSTER]:
            self._cluster(cl, counts)

        pending_bytes: dict[tuple[str, str], float] = {}
        for claim in by_kind[_CLAIM]:
            if _str(claim, "status", "phase") == "Bound":
                continue
            size = _num(claim, "spec", "sizeBytes")
            if size is not None:
                pkey = (_str(claim, "metadata", "namespace"), _str(claim, "spec", "poolRef"))
                pending_bytes[pkey] = pending_bytes.get(pkey, 0.0) + size
        for pool in by_kind[_POOL]:
            ns = _str(pool, "metadata", "namespace")
            name = _str(pool, "metadata", "name")
            plabels = (ns, _str(pool, "spec", "clusterRef"), name, _str(pool, "spec", "tier"))
            status = _get(pool, "status")
            f.add("stargate_pool_info", (*plabels, _str(pool, "spec", "rackRef")), 1.0)
            for field in ("capacity", "allocated", "available"):
                f.add(f"stargate_pool_{field}_bytes", plabels, _num(status, f"{field}Bytes"))
            f.add("stargate_pool_pending_bytes", plabels, pending_bytes.get((ns, name), 0.0))
            f.add("stargate_pool_claims", (*plabels, "Bound"), _num(status, "claims", "bound"))
            f.add("stargate_pool_claims", (*plabels, "Pending"), _num(status, "claims", "pending"))
            for ctype, cstatus in _conditions(status).items():
                f.add("stargate_pool_condition", (*plabels, ctype), 1.0 if cstatus == "True" else 0.0)

    def _cluster(self, cl: Mapping[str, Any], counts: Counts) -> None:
        f = self._f
        ns = _str(cl, "metadata", "namespace")
        name = _str(cl, "metadata", "name")
        labels = (ns, name)
        spec = _get(cl, "spec")
        status = _get(cl, "status")
        cc = counts.get((_CLUSTER, ns, name), _NONE)
        f.add("stargate_cluster_info", (*labels, _str(spec, "site", "region"), _str(spec, "site", "kind"),
                                        _str(spec, "site", "cooling")), 1.0)
        f.add("stargate_cluster_racks", labels, _num(status, RACKS_FIELD))
        f.add("stargate_cluster_nodes", labels, _num(status, "nodes"))
        _add_nodes_and_gpus(f, _CLUSTER_NODE_COUNTS, "stargate_cluster_gpus", labels, cc, status)
        f.add("stargate_cluster_racks_power_capped", labels, cc.get(RACKS_POWER_CAPPED, 0))
        f.add("stargate_cluster_racks_over_budget", labels, cc.get(RACKS_OVER_BUDGET, 0))
        f.add("stargate_cluster_hbm_bytes", labels, _num(status, "memory", "hbmBytes"))
        f.add("stargate_cluster_host_memory_bytes", labels, _num(status, "memory", "hostBytes"))
        f.add("stargate_cluster_power_it_capacity_watts", labels, _num(spec, "power", "itCapacityWatts"))
        reserve = _num(spec, "power", "reservePercent")
        f.add("stargate_cluster_power_reserve_ratio", labels,
              (DEFAULT_RESERVE_PERCENT if reserve is None else reserve) / 100.0)
        requested = _num(spec, "power", "curtailment", "percent") or 0.0
        f.add("stargate_cluster_power_curtailment_ratio", labels, cc.get(CURTAILMENT_PERCENT, 0) / 100.0)
        f.add("stargate_cluster_power_curtailment_requested_ratio", labels, requested / 100.0)
        f.add("stargate_cluster_power_curtailment_until_timestamp_seconds", labels,
              _timestamp(_get(spec, "power", "curtailment", "until")))
        figures = {}
        for field in ("budget", "floor", "demand", "allocated", "measured", "facility"):
            figures[field] = _num(status, "power", f"{field}Watts")
            f.add(f"stargate_cluster_power_{field}_watts", labels, figures[field])
        budget, floor, alloc = figures["budget"], figures["floor"], figures["allocated"]
        if budget is not None and alloc is not None:
            f.add("stargate_cluster_power_headroom_watts", labels, budget - alloc)
        if budget is not None and floor is not None:
            f.add("stargate_cluster_power_overcommitted_watts", labels, max(0.0, floor - budget))
        pue = _num(spec, "site", "designPUE")
        f.add("stargate_cluster_design_pue_ratio", labels, DEFAULT_DESIGN_PUE if pue is None else pue)
        carbon = _num(status, "carbonGramsPerHour")
        f.add("stargate_cluster_carbon_grams_per_second", labels, None if carbon is None else carbon / 3600.0)
        for ctype, cstatus in _conditions(status).items():
            f.add("stargate_cluster_condition", (*labels, ctype), 1.0 if cstatus == "True" else 0.0)
        capping = _get(status, "power", "capping")
        if type(capping) is dict:
            f.add("stargate_cluster_capping", labels, 1.0 if capping.get("active") is True else 0.0)
        _add_capping(f, "cluster", labels, capping)
        observe = _get(status, "power", "observe")
        if type(observe) is dict:
            f.add("stargate_cluster_observe_nodes_over_limit", labels, _num(observe, "nodesOverLimit"))
            f.add("stargate_cluster_observe_over_limit_watts", labels, _num(observe, "wattsOverLimit"))


    def _domain(self, domain: Mapping[str, Any]) -> None:
        f = self._f
        spec = _get(domain, "spec")
        status = _get(domain, "status")
        labels = (_str(domain, "metadata", "namespace"), _str(spec, "clusterRef"),
                  _str(domain, "metadata", "name"), _str(spec, "type") or DEFAULT_DOMAIN_TYPE,
                  _str(spec, "role"), _str(spec, "parentRef"))
        path = _get(status, "path")
        names = [p for p in path if type(p) is str] if type(path) is list else []
        f.add("stargate_domain_info", (*labels, "/".join(names)), 1.0)
        for field, name, _ in _DOMAIN_WATTS:
            f.add(name, labels, _num(status, field))
        f.add("stargate_domain_racks", labels, _num(status, RACKS_FIELD))
        conds = _conditions(status)
        for ctype, name, _ in _DOMAIN_CONDITIONS:
            cstatus = conds.get(ctype)
            if cstatus is not None:
                f.add(name, labels, 1.0 if cstatus == "True" else 0.0)
        _add_capping(f, "domain", labels, _get(status, "capping"))

    def _grid_event(self, event: Mapping[str, Any]) -> None:
        f = self._f
        spec = _get(event, "spec")
        status = _get(event, "status")
        labels = (_str(event, "metadata", "namespace"), _str(spec, "clusterRef"),
                  _str(event, "metadata", "name"), _str(spec, "powerDomainRef"))
        f.add("stargate_grid_event_info", (*labels, _str(spec, "source")), 1.0)
        conds = _conditions(status)
        # In effect: the core's verdict, as the status says it (the phase moves by the engine's
        # timers at start and end; an invalid event is Ready=False and lowers nothing).
        active = _str(status, "phase") == "Active" and conds.get("Ready") == "True"
        f.add("stargate_grid_event_active", labels, 1.0 if active else 0.0)
        f.add("stargate_grid_event_start_timestamp_seconds", labels, _timestamp(_get(spec, "start")))
        f.add("stargate_grid_event_end_timestamp_seconds", labels, _timestamp(_get(spec, "end")))
        for field, name, _ in _GRID_EVENT_SETTLEMENT:
            value = _get(status, field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                f.add(name, labels, float(value))
        for field, name, _ in _GRID_EVENT_TIMES:
            if _get(status, field):
                f.add(name, labels, _timestamp(_get(status, field)))
        for hours, name in ((_get(status, "shedWattHours"), "stargate_grid_event_shed_joules"),
                            (_get(_get(status, "facility"), "shedWattHours"),
                             "stargate_grid_event_facility_shed_joules")):
            if isinstance(hours, int | float) and not isinstance(hours, bool):
                f.add(name, labels, float(hours) * 3600)  # base units: joules
        if not active:
            return
        for field, name, _ in _GRID_EVENT_WATTS:
            f.add(name, labels, _num(status, field))
        if "Met" in conds:
            f.add("stargate_grid_event_met", labels, 1.0 if conds["Met"] == "True" else 0.0)

    def _node(
        self,
        node: Mapping[str, Any],
        ns: str,
        cluster: str,
        rack: str,
        status: Any,
        conds: Mapping[str, str],
        maint: bool,
    ) -> None:
        f = self._f
        labels = (ns, cluster, rack, _str(node, "metadata", "name"))
        f.add("stargate_node_info", (*labels, _str(node, "spec", "gpu", "model"),
                                     _str(node, "spec", "nodeName")), 1.0)
        f.add("stargate_node_maintenance", labels, 1.0 if maint else 0.0)
        count, healthy = _num(node, "spec", "gpu", "count"), _num(status, "healthyGPUs")
        if count is not None and healthy is not None:
            f.add("stargate_node_gpus", (*labels, "healthy"), healthy)
            f.add("stargate_node_gpus", (*labels, "unhealthy"), max(0.0, count - healthy))
        st = status if type(status) is dict else {}
        tel = st.get("telemetry")
        tel = tel if type(tel) is dict else {}
        rows = f.rows
        for name, src, key in (
            ("stargate_node_power_limit_watts", st, "powerLimitWatts"),
            ("stargate_node_power_allocated_watts", st, "allocatedWatts"),
            ("stargate_node_power_floor_watts", st, "floorWatts"),
            ("stargate_node_power_demand_watts", st, "demandWatts"),
            ("stargate_node_power_measured_watts", tel, "powerWatts"),
            ("stargate_node_hbm_used_bytes", tel, "hbmUsedBytes"),
        ):
            value = src.get(key)
            if type(value) is int:  # the wire form's figures: add() without its float handling
                rows[name].append((labels, value))
            elif type(value) is float:
                f.add(name, labels, value)
        f.add("stargate_node_telemetry_timestamp_seconds", labels, _timestamp(tel.get("observedAt")))
        for ctype, cstatus in conds.items():
            f.add("stargate_node_condition", (*labels, ctype), 1.0 if cstatus == "True" else 0.0)
