"""`plan_namespace`: the one entry point. Parse, link, compute, and build every status.

The order of the input never matters: objects are indexed by name, sums and max-min levels do not
depend on order, and the few sorts there are (priority levels, claims, events) have total keys.
Objects with the same kind and name in one namespace are a caller error; the last one wins.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stargate_operator.core.allocation import allocate_site, roll_up_rack, roll_up_site
from stargate_operator.core.capacity import assess_node
from stargate_operator.core.memory import bind_claims, derived_capacity
from stargate_operator.core.objects import (
    ClaimIn,
    ClusterIn,
    NodeIn,
    PoolIn,
    RackIn,
    parse_claim,
    parse_cluster,
    parse_node,
    parse_pool,
    parse_rack,
)
from stargate_operator.core.power import node_floor_demand
from stargate_operator.core.status import (
    claim_status,
    cluster_status,
    node_status,
    pool_status,
    rack_status,
)
from stargate_operator.core.types import CoreSettings, Plan
from stargate_operator.core.wire import EpochMemo, as_utc, format_time, from_epoch


@dataclass(slots=True)
class _Namespace:
    clusters: dict[str, ClusterIn] = field(default_factory=dict)
    racks: dict[str, RackIn] = field(default_factory=dict)
    nodes: dict[str, NodeIn] = field(default_factory=dict)
    pools: dict[str, PoolIn] = field(default_factory=dict)
    claims: dict[str, ClaimIn] = field(default_factory=dict)


def plan_namespace(
    objects: Iterable[Mapping[str, Any]], now: datetime, settings: CoreSettings
) -> Plan:
    """Every operator-owned status of the given objects, the Events to post, and the next instant
    at which time alone changes the result.

    `objects` are wire-form dicts (as the API server returns them), all kinds mixed, normally of
    one namespace (several are planned independently). Objects of other kinds are ignored. Pure:
    no I/O, the input is not modified, and the output shares no mutable state with it.
    """
    spaces: dict[str, _Namespace] = {}
    with _gc_paused():
        for obj in objects:
            kind = obj.get("kind")
            if kind == "GPUNode":
                node = parse_node(obj)
                _space(spaces, node.namespace).nodes[node.name] = node
            elif kind == "Rack":
                rack = parse_rack(obj)
                _space(spaces, rack.namespace).racks[rack.name] = rack
            elif kind == "StargateCluster":
                cluster = parse_cluster(obj)
                _space(spaces, cluster.namespace).clusters[cluster.name] = cluster
            elif kind == "MemoryPool":
                pool = parse_pool(obj)
                _space(spaces, pool.namespace).pools[pool.name] = pool
            elif kind == "MemoryClaim":
                claim = parse_claim(obj)
                _space(spaces, claim.namespace).claims[claim.name] = claim
        plan = Plan()
        when = as_utc(now)
        for ns in sorted(spaces):
            _plan_space(spaces[ns], when, settings, plan)
    plan.events.sort(key=lambda e: (e.key, e.reason, e.type, e.message))
    return plan


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a site is built. The records hold no reference cycles
    (children do not point back at parents), so reference counting frees them all; meanwhile, on
    a 100,000-node site, the collector's passes over the growing heap cost as much as the
    computation and make it grow faster than linearly."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _space(spaces: dict[str, _Namespace], namespace: str) -> _Namespace:
    space = spaces.get(namespace)
    if space is None:
        space = spaces[namespace] = _Namespace()
    return space


def _plan_space(space: _Namespace, now: datetime, settings: CoreSettings, plan: Plan) -> None:
    now_e = now.timestamp()
    now_s = format_time(now)
    stale_after = settings.stale_after_seconds
    next_change = float("inf")
    memo = EpochMemo()

    racks = space.racks
    for node in space.nodes.values():
        change = assess_node(node, now_e, stale_after, memo)
        if change is not None and change < next_change:
            next_change = change
        rack = racks.get(node.rack_ref)
        if rack is not None:
            node.rack_found = True
            node.rack_cluster_ref = rack.cluster_ref
            rack.nodes.append(node)
        else:
            node.floor_w, node.demand_w = node_floor_demand(
                node.count, node.min_w, node.max_w, node.requested_w, node.base_w, node.maintenance
            )

    clusters = space.clusters
    for rack in racks.values():
        roll_up_rack(rack)
        cluster = clusters.get(rack.cluster_ref)
        if cluster is not None:
            rack.powered = True
            cluster.racks.append(rack)

    for cluster in clusters.values():
        allocate_site(cluster, now_e)
        roll_up_site(cluster)
        until = cluster.curtailment_until
        if cluster.curtailment_active and until is not None and until < next_change:
            next_change = until

    for pool in space.pools.values():
        _size_pool(pool, clusters, racks)
    pools = space.pools
    for claim in space.claims.values():
        target = pools.get(claim.pool_ref)
        if target is not None:
            claim.pool_found = True
            target.claims.append(claim)
    for pool in pools.values():
        bind_claims(pool)
        for claim in pool.claims:
            claim.pool_problem = pool.problem

    statuses = plan.statuses
    events = plan.events
    for cluster in clusters.values():
        statuses["StargateCluster", cluster.namespace, cluster.name] = cluster_status(cluster, now_s, events)
    for rack in racks.values():
        statuses["Rack", rack.namespace, rack.name] = rack_status(rack, now_s, events)
    for node in space.nodes.values():
        statuses["GPUNode", node.namespace, node.name] = node_status(node, now_s, stale_after, events)
    for pool in pools.values():
        statuses["MemoryPool", pool.namespace, pool.name] = pool_status(pool, now_s, events)
    for claim in space.claims.values():
        statuses["MemoryClaim", claim.namespace, claim.name] = claim_status(claim, now_s, events)

    if next_change != float("inf"):
        moment = from_epoch(next_change)
        if plan.next_change_at is None or moment < plan.next_change_at:
            plan.next_change_at = moment


def _size_pool(pool: PoolIn, clusters: Mapping[str, ClusterIn], racks: Mapping[str, RackIn]) -> None:
    """Capacity of a pool, or the problem that leaves it without memory."""
    cluster = clusters.get(pool.cluster_ref)
    if cluster is None:
        pool.problem = (
            "ClusterNotFound",
            f"StargateCluster {pool.cluster_ref} not found in namespace {pool.namespace}",
        )
        return
    hbm, host = cluster.hbm_bytes, cluster.host_bytes
    if pool.rack_ref is not None:
        rack = racks.get(pool.rack_ref)
        if rack is None:
            pool.problem = ("RackNotFound", f"Rack {pool.rack_ref} not found in namespace {pool.namespace}")
            return
        if rack.cluster_ref != pool.cluster_ref:
            pool.problem = (
                "RackNotInCluster",
                f"Rack {rack.name} belongs to StargateCluster {rack.cluster_ref}, "
                f"not {pool.cluster_ref}",
            )
            return
        hbm, host = rack.hbm_bytes, rack.host_bytes
    if pool.capacity_fixed is not None:
        pool.capacity = max(pool.capacity_fixed, 0)
    elif pool.tier == "CXL":
        pool.problem = ("CapacityRequired", "a CXL pool needs spec.capacityBytes (the appliance's size)")
    else:
        pool.capacity = derived_capacity(pool.tier, hbm, host, pool.share_percent)
