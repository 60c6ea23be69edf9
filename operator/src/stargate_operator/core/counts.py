"""Plan.counts: figures the core decides that no status field carries, by object.

Per Rack: its GPU nodes in maintenance, with stale telemetry, allocated less than their demand, and
those whose limit the agent confirmed (PowerLimitApplied True) or reported as not enforced (False).
Per StargateCluster: the same summed over its racks, its racks whose budget is below their demand
and those measuring above it, and the curtailment share in effect. Metrics export them
(`stargate_{cluster,rack}_nodes_*`, `stargate_cluster_racks_*`, `..._curtailment_ratio`), so that a
dashboard counts what the core decided rather than deciding it again.

Two ways to the same figures:
- `rack_counts` / `cluster_counts` over the core's records while it plans (`plan_namespace` fills
  Plan.counts with them; the engine keeps them for the metrics thread);
- `counts_from_objects` over wire-form objects whose statuses the core wrote, for a metrics source
  that holds no Plan (`plan`, tests, benchmarks). It reads the conditions the same predicates set
  (status.py: PowerCapped, OverBudget, TelemetryStale, PowerLimitApplied) and the one curtailment
rule (power.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stargate_operator.core.objects import ClusterIn, RackIn, in_maintenance, parse_cluster
from stargate_operator.core.power import curtailment_in_effect
from stargate_operator.core.status import (
    node_limit_confirmed,
    node_limit_not_enforced,
    node_power_capped,
    rack_over_budget,
    rack_power_capped,
)
from stargate_operator.core.types import ObjectKey
from stargate_operator.kinds import GPU_NODE, RACK, STARGATE_CLUSTER

NODES_MAINTENANCE = "nodesMaintenance"
NODES_TELEMETRY_STALE = "nodesTelemetryStale"
NODES_POWER_CAPPED = "nodesPowerCapped"
# PowerLimitApplied True: the agent reports the assigned limit enforced (status: power.limitsConfirmed).
NODES_LIMIT_CONFIRMED = "nodesLimitConfirmed"
# PowerLimitApplied False: the agent reports another limit in force. Nodes that never reported (or
# whose report is stale) are neither: nodes - confirmed - unconfirmed.
NODES_LIMIT_UNCONFIRMED = "nodesLimitUnconfirmed"
RACKS_POWER_CAPPED = "racksPowerCapped"
RACKS_OVER_BUDGET = "racksOverBudget"
CURTAILMENT_PERCENT = "curtailmentPercent"  # the share in effect: 0 when none applies

Counts = dict[ObjectKey, dict[str, int]]

_RACK, _NODE, _CLUSTER = RACK.kind, GPU_NODE.kind, STARGATE_CLUSTER.kind
_LIMIT_APPLIED = "PowerLimitApplied"


def rack_counts(rack: RackIn) -> dict[str, int]:
    """A rack's node counts, once its nodes are allocated (or found unpowered)."""
    maintenance = stale = capped = confirmed = unconfirmed = 0
    for n in rack.nodes:
        maintenance += n.maintenance
        stale += n.stale
        capped += node_power_capped(n)
        confirmed += node_limit_confirmed(n)
        unconfirmed += node_limit_not_enforced(n)
    return {NODES_MAINTENANCE: maintenance, NODES_TELEMETRY_STALE: stale, NODES_POWER_CAPPED: capped,
            NODES_LIMIT_CONFIRMED: confirmed, NODES_LIMIT_UNCONFIRMED: unconfirmed}


def cluster_counts(cluster: ClusterIn, counts: Mapping[ObjectKey, Mapping[str, int]]) -> dict[str, int]:
    """A site's counts from its racks' (already in `counts`) and their budgets."""
    maintenance = stale = capped = confirmed = unconfirmed = racks_capped = racks_over = 0
    for r in cluster.racks:
        rc = counts[_RACK, r.namespace, r.name]
        maintenance += rc[NODES_MAINTENANCE]
        stale += rc[NODES_TELEMETRY_STALE]
        capped += rc[NODES_POWER_CAPPED]
        confirmed += rc[NODES_LIMIT_CONFIRMED]
        unconfirmed += rc[NODES_LIMIT_UNCONFIRMED]
        racks_capped += rack_power_capped(r)
        racks_over += rack_over_budget(r)
    return {
        NODES_MAINTENANCE: maintenance,
        NODES_TELEMETRY_STALE: stale,
        NODES_POWER_CAPPED: capped,
        NODES_LIMIT_CONFIRMED: confirmed,
        NODES_LIMIT_UNCONFIRMED: unconfirmed,
        RACKS_POWER_CAPPED: racks_capped,
        RACKS_OVER_BUDGET: racks_over,
        CURTAILMENT_PERCENT: cluster.curtailment_percent if cluster.curtailment_active else 0,
    }


def _str(obj: Mapping[str, Any], section: str, key: str) -> str:
    part = obj.get(section)
    value = part.get(key) if type(part) is dict or isinstance(part, Mapping) else None
    return value if type(value) is str else ""


def _true(obj: Mapping[str, Any], status_: str = "True") -> set[str]:
    """The condition types whose status is True (or `status_`; the wire form is read defensively:
    metrics hand over whatever the API or a test holds, partial and malformed objects included)."""
    status = obj.get("status")
    conds = status.get("conditions") if type(status) is dict or isinstance(status, Mapping) else None
    out: set[str] = set()
    if type(conds) is list:
        for c in conds:
            if (type(c) is dict or isinstance(c, Mapping)) and c.get("status") == status_:
                ctype = c.get("type")
                if type(ctype) is str:
                    out.add(ctype)
    return out


def counts_from_objects(objects: Iterable[Mapping[str, Any]], now_epoch: float) -> Counts:
    """Plan.counts' figures from wire-form objects as they stand (statuses the core wrote; the
    curtailment judged at `now_epoch`). Every Rack and StargateCluster gets its entry; nodes of a
    missing rack and racks of a missing site count nowhere, as in a plan. Keys carry the namespace
    as the object spells it ("" when it has none)."""
    racks: dict[tuple[str, str], tuple[str, list[int], set[str]]] = {}
    nodes: list[tuple[str, str, bool, set[str], bool]] = []
    clusters: list[Mapping[str, Any]] = []
    for obj in objects:
        kind = obj.get("kind")
        if kind == _NODE:
            spec = obj.get("spec")
            maintenance = isinstance(spec, Mapping) and in_maintenance(spec)
            nodes.append((_str(obj, "metadata", "namespace"), _str(obj, "spec", "rackRef"), maintenance,
                          _true(obj), _LIMIT_APPLIED in _true(obj, "False")))
        elif kind == _RACK:
            key = (_str(obj, "metadata", "namespace"), _str(obj, "metadata", "name"))
            racks[key] = (_str(obj, "spec", "clusterRef"), [0, 0, 0, 0, 0], _true(obj))
        elif kind == _CLUSTER:
            clusters.append(obj)
    for ns, rack_ref, maintenance, true, not_enforced in nodes:
        rack = racks.get((ns, rack_ref))
        if rack is not None:
            tally = rack[1]
            tally[0] += maintenance
            tally[1] += "TelemetryStale" in true
            tally[2] += "PowerCapped" in true
            tally[3] += _LIMIT_APPLIED in true
            tally[4] += not_enforced
    out: Counts = {}
    sites: dict[tuple[str, str], list[int]] = {}
    for (ns, name), (cluster_ref, (m, s, c, lc, lu), true) in racks.items():
        out[_RACK, ns, name] = {NODES_MAINTENANCE: m, NODES_TELEMETRY_STALE: s, NODES_POWER_CAPPED: c,
                                NODES_LIMIT_CONFIRMED: lc, NODES_LIMIT_UNCONFIRMED: lu}
        site = sites.setdefault((ns, cluster_ref), [0, 0, 0, 0, 0, 0, 0])
        for i, n in enumerate((m, s, c, "PowerCapped" in true, "OverBudget" in true, lc, lu)):
            site[i] += n
    for obj in clusters:
        ns, name = _str(obj, "metadata", "namespace"), _str(obj, "metadata", "name")
        m, s, c, rc, ro, lc, lu = sites.get((ns, name), (0, 0, 0, 0, 0, 0, 0))
        parsed = parse_cluster(obj)
        applies = curtailment_in_effect(parsed.curtailment_percent, parsed.curtailment_until, now_epoch)
        out[_CLUSTER, ns, name] = {
            NODES_MAINTENANCE: m,
            NODES_TELEMETRY_STALE: s,
            NODES_POWER_CAPPED: c,
            NODES_LIMIT_CONFIRMED: lc,
            NODES_LIMIT_UNCONFIRMED: lu,
            RACKS_POWER_CAPPED: rc,
            RACKS_OVER_BUDGET: ro,
            CURTAILMENT_PERCENT: parsed.curtailment_percent if applies else 0,
        }
    return out
