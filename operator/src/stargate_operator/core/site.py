"""`plan_namespace`: parse, link, compute, and build every status; `allocate_namespace` is the same in
two steps (the limits, then on `finish()` the statuses).

The order of the input never matters: objects are indexed by name, sums and max-min levels do not
depend on order, and the few sorts there are (priority levels, claims, events) have total keys.
Objects with the same kind and name in one namespace are a caller error; the last one wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from stargate_operator import kinds
from stargate_operator.core.allocation import add_node, allocate_rack, allocate_site, roll_up_site
from stargate_operator.core.cache import PlanCache, RackKey, RackMemo
from stargate_operator.core.capacity import assess_node
from stargate_operator.core.conditions import OldConditions, index_conditions
from stargate_operator.core.counts import NODES_LIMIT_CONFIRMED, cluster_counts, rack_counts
from stargate_operator.core.domains import link_domains, link_rack
from stargate_operator.core.gridevents import EventIn, event_status, link_events, parse_event
from stargate_operator.core.memory import bind_claims, derived_capacity
from stargate_operator.core.objects import (
    ClaimIn,
    ClusterIn,
    DomainIn,
    NodeIn,
    PoolIn,
    RackIn,
    parse_claim,
    parse_cluster,
    parse_domain,
    parse_node,
    parse_pool,
    parse_rack,
)
from stargate_operator.core.outage import SOURCE_KIND, SourceState, Verdict, freeze, judge_site, parse_source
from stargate_operator.core.power import node_floor_demand
from stargate_operator.core.shadow import shadow
from stargate_operator.core.sliceramp import next_piece, ramp_piece
from stargate_operator.core.status import (
    StatusContext,
    claim_status,
    cluster_status,
    domain_status,
    node_status,
    pool_status,
    rack_limits,
    rack_status,
)
from stargate_operator.core.types import CoreSettings, ObjectKey, Plan
from stargate_operator.core.wire import EpochMemo, as_utc, format_time, from_epoch

INFINITY = float("inf")


class _Named(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...


_Parsed = TypeVar("_Parsed", bound=_Named)


@dataclass(slots=True)
class _Namespace:
    clusters: dict[str, ClusterIn] = field(default_factory=dict)
    racks: dict[str, RackIn] = field(default_factory=dict)
    nodes: dict[str, NodeIn] = field(default_factory=dict)
    pools: dict[str, PoolIn] = field(default_factory=dict)
    claims: dict[str, ClaimIn] = field(default_factory=dict)
    domains: dict[str, DomainIn] = field(default_factory=dict)
    events: dict[str, EventIn] = field(default_factory=dict)  # GridEvents
    telemetry: Verdict | None = None  # outage.py: whether its telemetry source is available


_NODE = kinds.GPU_NODE.kind
_RACK = kinds.RACK.kind
_CLUSTER = kinds.STARGATE_CLUSTER.kind
_DOMAIN = kinds.POWER_DOMAIN.kind
_POOL = kinds.MEMORY_POOL.kind
_CLAIM = kinds.MEMORY_CLAIM.kind
_EVENT = kinds.GRID_EVENT.kind


_Take = Callable[[Mapping[str, Any], dict[str, "_Namespace"]], None]


def _taker(parse: Callable[[Mapping[str, Any]], _Parsed],
           held: Callable[[_Namespace], dict[str, _Parsed]]) -> _Take:
    def take(obj: Mapping[str, Any], spaces: dict[str, _Namespace]) -> None:
        parsed = parse(obj)
        held(_space(spaces, parsed.namespace))[parsed.name] = parsed
    return take


# How each kind's objects are read into a namespace, keyed by the registry's kind names. GPUNodes
# are not here: the loop in _plan takes them itself (the node cache, the bulk of every site).
_TAKE: dict[str, _Take] = {
    _CLUSTER: _taker(parse_cluster, lambda s: s.clusters),
    _RACK: _taker(parse_rack, lambda s: s.racks),
    _DOMAIN: _taker(parse_domain, lambda s: s.domains),
    _POOL: _taker(parse_pool, lambda s: s.pools),
    _CLAIM: _taker(parse_claim, lambda s: s.claims),
    _EVENT: _taker(parse_event, lambda s: s.events),
}
# Every kind of the registry is read here: a kind added to kinds.py
# without a line above fails at import rather than silently getting no status.
# PowerLimitSlices are the operator's own output: sliceplan.py reads the held ones around this plan.
_READ_ELSEWHERE = {_NODE, kinds.POWER_LIMIT_SLICE.kind}
_UNREAD = {k.kind for k in kinds.KINDS} - _TAKE.keys() - _READ_ELSEWHERE
if _UNREAD:
    raise ImportError(f"core/site.py reads no objects of kinds {sorted(_UNREAD)} registered in kinds.py")


def plan_namespace(
    objects: Iterable[Mapping[str, Any]],
    now: datetime,
    settings: CoreSettings,
    cache: PlanCache | None = None,
    *,
    envelope_at: float | None = None,
) -> Plan:
    """Every operator-owned status of the given objects, the Events to post, and the next instant
    at which time alone changes the result: `allocate_namespace(...).finish()` (see there)."""
    return allocate_namespace(objects, now, settings, cache, envelope_at=envelope_at).finish()


def allocate_namespace(
    objects: Iterable[Mapping[str, Any]],
    now: datetime,
    settings: CoreSettings,
    cache: PlanCache | None = None,
    *,
    envelope_at: float | None = None,
) -> Allocated:
    """The plan in two steps: this call parses, links and allocates, and returns every node's limits
    (`Allocated.limits`); its `finish()` builds the statuses from the same records. The limits are
    what the agents act on, so a caller can send them before the statuses, the larger part of the
    work, are built. `plan_namespace` is the two steps at once.

    The finished plan holds every operator-owned status of the given objects, the Events to post,
    and the next instant at which time alone changes the result.

    `objects` are wire-form dicts (as the API server returns them), all kinds mixed, normally of
    one namespace (several are planned independently). Objects of other kinds are ignored. Pure:
    no I/O and the input is not modified. The output is read-only: unchanged conditions are the
    input's own objects, and equal new conditions are one shared object.

    `cache`: optional, the same PlanCache on every call for the same objects (the engine's): the
    result is the same, computed faster when few objects changed (see cache.py).

    `envelope_at`: the instant (epoch seconds) every ramp's envelope is read at, everything else
    being judged at `now`: the plan at one end of a ramp's piece (sliceramp.py).

    The core allocates no reference cycles: a caller planning a large site pauses the cyclic
    garbage collector around the call (`stargate_operator.process.gc_paused`), as the engine does.
    """
    when = as_utc(now)
    now_e = when.timestamp()
    stale_after = settings.stale_after_seconds
    memo = EpochMemo()
    next_change = INFINITY
    spaces: dict[str, _Namespace] = {}
    cached = cache.nodes if cache is not None else None
    kept: dict[str, NodeIn] = {}
    last_ns: str | None = None
    last_nodes: dict[str, NodeIn] = {}
    source: SourceState | None = None
    for obj in objects:
        kind = obj.get("kind")
        if kind == _NODE:  # most objects: parsed with the cache, and one namespace's dict held
            node, change = _take_node(obj, now_e, stale_after, memo, cached, kept)
            if change < next_change:
                next_change = change
            if node.namespace != last_ns:  # one namespace, normally: skip the lookup
                last_ns = node.namespace
                last_nodes = _space(spaces, last_ns).nodes
            last_nodes[node.name] = node
            continue
        if kind == SOURCE_KIND:  # not a kind of the API: the telemetry source's state (outage.py)
            source = parse_source(obj)
            continue
        taker = _TAKE.get(kind)  # type: ignore[arg-type]  # a missing kind finds nothing
        if taker is not None:
            taker(obj, spaces)
    for space in spaces.values():
        space.telemetry = verdict = judge_site(space.nodes.values(), source, stale_after)
        if not verdict.available:
            for node in freeze(space.nodes.values()):
                # Judged on a held reading: never reused as it is once the outage ends.
                node.hit = False
                node.valid_until = node.assessed_at
    plan = Plan()
    ctx = StatusContext(format_time(when), stale_after, plan.events, plan.counts, caching=cache is not None)
    previous = cache.racks if cache is not None else None
    out = Allocated(plan, ctx, cache, now_e)
    for ns in sorted(spaces):
        allocation = _allocate_space(spaces[ns], now_e, previous, envelope_at)
        out.spaces.append(allocation)
        out.limits[ns], out.safe_limits[ns] = allocation.limits, allocation.safe_limits
        piece = ramp_piece(spaces[ns].clusters.values(), now_e)
        if piece is not None:
            plan.ramp_pieces[ns] = piece
        look_at, ahead = next_piece(spaces[ns].clusters.values(), now_e)
        if ahead is not None:
            plan.ramp_next[ns] = ahead
        if look_at is not None and look_at < next_change:
            next_change = look_at
    out.next_change = next_change
    if cache is not None:
        cache.nodes = kept
    return out


@dataclass(slots=True)
class _SpaceAllocation:
    """One namespace between the two steps: allocated, its statuses not built yet."""

    space: _Namespace
    next_change: float
    reused: dict[str, RackMemo]  # racks whose statuses are last call's (same nodes, same budget)
    orphans: list[NodeIn]
    limits: dict[str, int]  # node -> powerLimitWatts
    safe_limits: dict[str, int]  # node -> safeLimitWatts, where below its limit


@dataclass(slots=True)
class Allocated:
    """The core's plan after its first step (`allocate_namespace`): every node's limits, the ramps'
    pieces; `finish()` builds the rest (once)."""

    plan: Plan  # statuses, events and counts filled by finish(); ramp_pieces and ramp_next already
    ctx: StatusContext
    cache: PlanCache | None
    now: float
    next_change: float = INFINITY
    spaces: list[_SpaceAllocation] = field(default_factory=list)
    # Namespace -> node -> its powerLimitWatts, and its safeLimitWatts where lower than that (the
    # figures its status will carry).
    limits: dict[str, dict[str, int]] = field(default_factory=dict)
    safe_limits: dict[str, dict[str, int]] = field(default_factory=dict)

    def finish(self) -> Plan:
        """Every status, from the records the first step allocated."""
        plan = self.plan
        memos: dict[RackKey, RackMemo] = {}
        next_change = self.next_change
        for allocation in self.spaces:
            change = _status_space(allocation, self.now, plan.statuses, self.ctx, memos)
            if change < next_change:
                next_change = change
        self.spaces = []  # the records move on with the cache; a second finish() has nothing to do
        if self.cache is not None:
            self.cache.racks = memos
        if next_change != INFINITY:
            plan.next_change_at = from_epoch(next_change)
        plan.events.sort(key=lambda e: (e.key, e.reason, e.type, e.message))
        return plan


def _take_node(
    obj: Mapping[str, Any],
    now: float,
    stale_after: float,
    memo: EpochMemo,
    cached: dict[str, NodeIn] | None,
    kept: dict[str, NodeIn],
) -> tuple[NodeIn, float]:
    """The node's record, its health judged at `now`, and when that verdict changes by time.

    Everything a node's own object decides is done here, while that object is in the CPU cache.
    With a cache, an unchanged object's record is reused and only judged again when `now` left
    the window in which its last verdict holds.
    """
    meta = obj.get("metadata")
    uid = version = None
    if cached is not None and meta:
        uid = meta.get("uid")
        version = meta.get("resourceVersion")
        if uid and version:
            node = cached.get(uid)
            if (
                node is not None
                and node.assessed_with == stale_after
                and _same_telemetry(node.telemetry, obj)
                and (node.version == version or _status_only(node, obj, version))
            ):
                node.rack_found = node.powered = node.observe = False
                node.rack_cluster_ref = ""
                node.allocated_w = node.limit_w = node.safe_limit_w = 0
                kept[uid] = node
                node.hit = True
                if not node.assessed_at <= now < node.valid_until:
                    node.hit = False  # judged again: its rack is summed again
                    change = assess_node(node, now, stale_after, memo)
                    node.assessed_at = now
                    node.valid_until = INFINITY if change is None else change
                return node, node.valid_until
    node = parse_node(obj)
    change = assess_node(node, now, stale_after, memo)
    node.floor_w, node.demand_w = node_floor_demand(
        node.count, node.min_w, node.max_w, node.requested_w, node.base_w, node.maintenance
    )
    if uid and version:
        node.version = str(version)
        node.assessed_at = now
        node.assessed_with = stale_after
        node.valid_until = INFINITY if change is None else change
        kept[str(uid)] = node
    return node, INFINITY if change is None else change


# A record's conditions not read yet from its status (_status_only): read by _node_status.
_OLD_UNREAD: OldConditions = {}


def _status_only(node: NodeIn, obj: Mapping[str, Any], version: Any) -> bool:
    """Whether only the object's status changed since its record was parsed (the same generation:
    the API server counts every change of a spec, and none of a status), and if so the record
    takes the new status's conditions. After the operator's own status writes, most of a site's
    objects are new copies of the same spec: parsed and judged again, a curtailment at 100,000
    nodes would cost a second of CPU before its first write."""
    gen = node.generation
    meta = obj.get("metadata")
    if gen is None or meta is None or meta.get("generation") != gen:
        return False
    node.status = obj.get("status") or {}
    node.old = _OLD_UNREAD  # read when its status is built (most are not: their rack is reused)
    node.version = str(version)
    node.out_key = node.out_status = None  # built against the conditions it had before
    return True


def _same_telemetry(held: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
    """Telemetry may reach the core without a new resourceVersion (an engine that reads it from
    Prometheus and lays it over the object), so a cached record is only good for the same one."""
    status = obj.get("status")
    current = status.get("telemetry") if status else None
    return held is current or held == (current or {})


def _space(spaces: dict[str, _Namespace], namespace: str) -> _Namespace:
    space = spaces.get(namespace)
    if space is None:
        space = spaces[namespace] = _Namespace()
    return space


def _allocate_space(space: _Namespace, now: float, previous: dict[RackKey, RackMemo] | None,
                    envelope_at: float | None = None) -> _SpaceAllocation:
    """Link and allocate one namespace, with its next change by time (curtailments ending, grid
    events starting or ending). With a cache, a rack whose nodes are the very records of last time,
    unchanged, reuses its sums, and if its budget is the same too, its limits and its nodes'
    statuses (`previous`: last call's rack memos)."""
    next_change = INFINITY
    racks = space.racks
    orphans: list[NodeIn] = []
    for node in space.nodes.values():
        rack = racks.get(node.rack_ref)
        if rack is None:
            orphans.append(node)
        else:
            node.rack_found = True
            node.rack_cluster_ref = rack.cluster_ref
            rack.nodes.append(node)
            if not node.hit:
                rack.dirty = True

    reused: dict[str, RackMemo] = {}
    for rack in racks.values():
        memo = previous.get((rack.namespace, rack.name)) if previous is not None else None
        if (
            memo is not None
            and not rack.dirty
            and memo.max_power_w == rack.max_power_w
            and memo.cluster_ref == rack.cluster_ref
            and memo.nodes == rack.nodes  # the same records (identity), in the same order
        ):
            memo.restore_sums(rack)
            reused[rack.name] = memo
        else:
            for node in rack.nodes:
                add_node(rack, node)

    clusters = space.clusters
    for site in clusters.values():
        site.envelope_at = envelope_at
    for rack in racks.values():
        cluster = clusters.get(rack.cluster_ref)
        if cluster is not None:
            rack.powered = True
            cluster.racks.append(rack)
    domains = space.domains
    if domains:
        link_domains(domains, clusters)
    for rack in racks.values():
        if rack.power_ref is not None or rack.cooling_ref is not None:
            link_rack(rack, domains)
    events = space.events
    if events:  # the active ones lower their site's or domain's capacity
        change = link_events(events.values(), clusters, domains, now)
        if change < next_change:
            next_change = change

    for cluster in clusters.values():
        cluster.telemetry = space.telemetry
        if cluster.observe:
            for rack in cluster.racks:
                rack.observe = True
        allocate_site(cluster, now)
        until = cluster.curtailment_until
        if cluster.curtailment_active and until is not None and until < next_change:
            next_change = until
        ramp_next = cluster.ramp_next  # the curtailment's ramp (ramps.py)
        if ramp_next is not None and ramp_next < next_change:
            next_change = ramp_next
        hold_ends = cluster.capping_next  # a capping hold that ends by time alone
        if hold_ends is not None and hold_ends < next_change:
            next_change = hold_ends

    same: dict[str, RackMemo] = {}
    limits: dict[str, int] = {}
    safe_limits: dict[str, int] = {}
    for rack in racks.values():
        memo = reused.get(rack.name)
        if (memo is not None and memo.budget_w == rack.budget_w and memo.powered == rack.powered
                and memo.safe_budget_w == rack.safe_budget_w and memo.observe == rack.observe):
            # Same nodes, same budget: the same allocation and the same statuses as last time.
            same[rack.name] = memo
            rack.facility_it_w = memo.facility_it_w
            rack.power_limits = memo.power_limits
            rack.safe_limits = memo.safe_limits
            rack.over_nodes, rack.over_w = memo.over
        else:
            if rack.powered:
                allocate_rack(rack)
            if rack.observe:
                shadow(rack)
            rack.power_limits, rack.safe_limits = rack_limits(rack)
        limits.update(rack.power_limits)
        safe_limits.update(rack.safe_limits)
    for node in orphans:
        limits[node.name] = node.limit_w
    return _SpaceAllocation(space, next_change, same, orphans, limits, safe_limits)


def _status_space(allocation: _SpaceAllocation, now: float, statuses: dict[ObjectKey, dict[str, Any]],
                  ctx: StatusContext, memos: dict[RackKey, RackMemo]) -> float:
    """Build the statuses of one allocated namespace, rack by rack, so that a rack's nodes are
    written out while they are still in the CPU cache; its next change by time. `memos`: this
    call's rack memos, for the next call."""
    space, reused, next_change = allocation.space, allocation.reused, allocation.next_change
    racks, clusters, domains, events = space.racks, space.clusters, space.domains, space.events
    for rack in racks.values():
        memo = reused.get(rack.name)
        if memo is not None:
            statuses.update(memo.statuses)
            memos[rack.namespace, rack.name] = memo
            ctx.counts[_RACK, rack.namespace, rack.name] = counts = memo.counts
        else:
            mine: dict[ObjectKey, dict[str, Any]] | None = {} if ctx.caching else None
            for node in rack.nodes:
                status = _node_status(node, ctx)
                statuses[_NODE, node.namespace, node.name] = status
                if mine is not None:
                    if node.out_status is status:
                        mine[_NODE, node.namespace, node.name] = status
                    else:
                        mine = None  # a condition changed: now played a part; build it again
            counts = ctx.counts[_RACK, rack.namespace, rack.name] = rack_counts(rack)
            if mine is not None:
                memos[rack.namespace, rack.name] = RackMemo.of(rack, mine, counts)
        rack.limits_confirmed = counts[NODES_LIMIT_CONFIRMED]
        statuses[_RACK, rack.namespace, rack.name] = rack_status(rack, ctx)
    for node in allocation.orphans:
        statuses[_NODE, node.namespace, node.name] = _node_status(node, ctx)
    for cluster in clusters.values():
        roll_up_site(cluster)
        if cluster.observe:
            cluster.over_nodes = sum(r.over_nodes for r in cluster.racks)
            cluster.over_w = sum(r.over_w for r in cluster.racks)
        counts = ctx.counts[_CLUSTER, cluster.namespace, cluster.name] = cluster_counts(
            cluster, ctx.counts)
        cluster.limits_confirmed = counts[NODES_LIMIT_CONFIRMED]
        statuses[_CLUSTER, cluster.namespace, cluster.name] = cluster_status(cluster, ctx)
    for domain in domains.values():
        statuses[_DOMAIN, domain.namespace, domain.name] = domain_status(domain, ctx)
    for event in events.values():
        statuses[_EVENT, event.namespace, event.name] = event_status(event, ctx, now)

    pools = space.pools
    for pool in pools.values():
        _size_pool(pool, clusters, racks)
    for claim in space.claims.values():
        target = pools.get(claim.pool_ref)
        if target is not None:
            claim.pool_found = True
            target.claims.append(claim)
    for pool in pools.values():
        bind_claims(pool)
        for claim in pool.claims:
            claim.pool_problem = pool.problem
        statuses[_POOL, pool.namespace, pool.name] = pool_status(pool, ctx)
    for claim in space.claims.values():
        statuses[_CLAIM, claim.namespace, claim.name] = claim_status(claim, ctx)
    return next_change


def _node_status(node: NodeIn, ctx: StatusContext) -> dict[str, Any]:
    """node_status, or with a cache the node's last status when it was built from the same
    object and the same figures and no condition changed in it (so `now` played no part)."""
    if node.old is _OLD_UNREAD:
        node.old = index_conditions(node.status)
    if not ctx.caching:
        return node_status(node, ctx)
    key = (node.allocated_w, node.limit_w, node.safe_limit_w, node.healthy, node.stale_reason, node.powered,
           node.rack_found, node.rack_cluster_ref, ctx.stale_after, node.enforced_w, node.observe)
    if node.out_key == key and node.out_status is not None:
        return node.out_status
    status = node_status(node, ctx)
    conds = status["conditions"]
    old = node.old
    if (
        len(conds) == 4
        and conds[0] is old.get("Ready")
        and conds[1] is old.get("PowerCapped")
        and conds[2] is old.get("TelemetryStale")
        and conds[3] is old.get("PowerLimitApplied")
    ):
        node.out_key = key
        node.out_status = status
    else:
        node.out_key = node.out_status = None
    return status


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
