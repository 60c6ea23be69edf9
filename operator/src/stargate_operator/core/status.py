"""The operator-owned status of each kind in wire form, and the Events its transitions raise.

Each builder returns exactly what the operator writes (never `telemetry`, the agent's), built so
that an unchanged object gets back a status equal to its current one. Optional figures are left
out rather than set to null: the API server drops nulls, so a null would differ on every read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stargate_operator.core.allocation import misconfigured
from stargate_operator.core.capping import ENDED, STARTED, capping_status
from stargate_operator.core.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    ConditionMemo,
    CondSpec,
    OldConditions,
    build_conditions,
    ready_reason_changed_to,
    recovered,
    turned,
)
from stargate_operator.core.domains import DOMAIN_PROBLEMS, POWER_PATH_INVALID
from stargate_operator.core.objects import ClaimIn, ClusterIn, DomainIn, NodeIn, PoolIn, RackIn
from stargate_operator.core.outage import CONDITION as TELEMETRY_CONDITION
from stargate_operator.core.outage import telemetry_events
from stargate_operator.core.types import ObjectKey, PlanEvent
from stargate_operator.kinds import (
    GPU_NODE,
    MEMORY_CLAIM,
    MEMORY_POOL,
    OBSERVE,
    POWER_DOMAIN,
    RACK,
    RACKS_FIELD,
    STARGATE_CLUSTER,
)

Status = dict[str, Any]
Events = list[PlanEvent]


@dataclass(slots=True)
class StatusContext:
    """What every builder of one recomputation shares."""

    now: str  # RFC 3339: lastTransitionTime and boundAt of what changes now
    stale_after: float
    events: Events = field(default_factory=list)
    # Plan.counts, filled as racks and sites are built (counts.py)
    counts: dict[ObjectKey, dict[str, int]] = field(default_factory=dict)
    caching: bool = False  # a PlanCache is in use: keep what the next recomputation can reuse
    conditions: ConditionMemo = field(default_factory=dict)

CLUSTER_CONDITIONS = frozenset({"Ready", "PowerOvercommitted", "Capping", TELEMETRY_CONDITION})
RACK_CONDITIONS = frozenset({"Ready", "PowerCapped", "OverBudget"})
NODE_CONDITIONS = frozenset({"Ready", "PowerCapped", "TelemetryStale", "PowerLimitApplied"})
POOL_CONDITIONS = frozenset({"Ready", "Exhausted"})
CLAIM_CONDITIONS = frozenset({"Ready"})
DOMAIN_CONDITIONS = frozenset({"Ready", "Overcommitted", "Constrained", "OverLimit", "Capping"})

# Ready reasons that name a broken reference: each raises a Warning when it first appears.
MISSING_REFERENCE = frozenset({"ClusterNotFound", "RackNotFound", "PoolNotFound", *DOMAIN_PROBLEMS,
                               POWER_PATH_INVALID})


# The figures behind PowerCapped and OverBudget, read by the builders below and by the counts
# (counts.py), so that a condition and the number of objects having it never disagree.


def node_power_capped(n: NodeIn) -> bool:
    """Allocated less than its demand; only a powered node (its rack and site exist) has a budget."""
    return n.powered and n.allocated_w < n.demand_w


def node_limit_confirmed(n: NodeIn) -> bool:
    """PowerLimitApplied=True: fresh telemetry reports the assigned per-GPU limit as enforced."""
    return n.powered and n.enforced_w is not None and n.enforced_w == n.limit_w


def node_limit_not_enforced(n: NodeIn) -> bool:
    """PowerLimitApplied=False (NotEnforced): fresh telemetry reports another limit in force."""
    return n.powered and n.enforced_w is not None and n.enforced_w != n.limit_w


def rack_power_capped(r: RackIn) -> bool:
    return r.powered and r.budget_w < r.demand_w


def rack_over_budget(r: RackIn) -> bool:
    return r.powered and r.measured_w > r.budget_w


def _warn_reference(events: Events, key: tuple[str, str, str], ready: CondSpec, old: Any) -> None:
    reason = ready[2]
    if reason in MISSING_REFERENCE and ready_reason_changed_to(old, reason):
        events.append(PlanEvent(key, "Warning", reason, ready[3]))


def _alarm(events: Events, key: ObjectKey, old: OldConditions, cond: CondSpec, raised: str,
           cleared: str) -> None:
    """The Events of an alarm condition: a Warning `raised` when it turns True, a Normal `cleared`
    when it goes from True to False (Unknown raises nothing). Its message is the condition's."""
    if cond[1] == TRUE:
        if turned(old, cond[0], TRUE):
            events.append(PlanEvent(key, "Warning", raised, cond[3]))
    elif cond[1] == FALSE and recovered(old, cond[0]):
        events.append(PlanEvent(key, "Normal", cleared, cond[3]))


def _base(generation: int | None, conditions: list[Mapping[str, Any]]) -> Status:
    status: Status = {"conditions": conditions}
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def cluster_status(c: ClusterIn, ctx: StatusContext) -> Status:
    events = ctx.events
    key = (STARGATE_CLUSTER.kind, c.namespace, c.name)
    over = c.floor_w > c.budget_w
    curtail = ""
    if c.curtailment_active:
        curtail = f"; curtailed {c.curtailment_percent}%" + (
            f" ({c.curtailment_reason})" if c.curtailment_reason else ""
        )
    curtail += c.grid_note  # the grid events in effect on the site (gridevents.py)
    if over:
        deficit = c.floor_w - c.budget_w
        oc: CondSpec = (
            "PowerOvercommitted",
            TRUE,
            "FloorsExceedBudget",
            f"rack floors need {c.floor_w} W but the site budget is {c.budget_w} W: "
            f"overcommitted by {deficit} W{curtail}",
        )
        ready: CondSpec = ("Ready", FALSE, "PowerOvercommitted", oc[3])
    else:
        oc = ("PowerOvercommitted", FALSE, "WithinBudget", "rack floors fit in the site budget")
        ready = (
            "Ready",
            TRUE,
            "PowerAllocated",
            f"{len(c.racks)} racks: {c.allocated_w} W of {c.budget_w} W allocated, "
            f"{c.demand_w} W demanded{curtail}",
        )
    capping, capping_status = _capping(c, c.budget_w, "budget", key, ctx)
    specs = (ready, oc) if capping is None else (ready, oc, capping)
    if c.telemetry is not None:
        specs = (*specs, c.telemetry.condition)
        telemetry_events(key, c.old, c.telemetry, events)
    conds = build_conditions(c.old, specs, CLUSTER_CONDITIONS, ctx.now, c.generation, ctx.conditions)
    _alarm(events, key, c.old, oc, "PowerOvercommitted", "PowerOvercommitResolved")
    status = _base(c.generation, conds)
    status[RACKS_FIELD] = len(c.racks)
    status["nodes"] = c.node_count
    status["gpus"] = {"total": c.gpus_total, "healthy": c.gpus_healthy}
    status["memory"] = {"hbmBytes": c.hbm_bytes, "hostBytes": c.host_bytes}
    status["power"] = {
        "budgetWatts": c.budget_w,
        "floorWatts": c.floor_w,
        "demandWatts": c.demand_w,
        "allocatedWatts": c.allocated_w,
        "measuredWatts": c.measured_w,
        "facilityWatts": c.facility_w,
        "limitsConfirmed": c.limits_confirmed,
    }
    if capping_status is not None:
        status["power"]["capping"] = capping_status
    if c.observe:
        status["power"]["observe"] = {"nodesOverLimit": c.over_nodes, "wattsOverLimit": c.over_w}
    if c.ramp_cap_w is not None and c.ramp_cap_w < c.budget_w:
        status["power"]["rampWatts"] = c.ramp_cap_w
    if c.curtail_out is not None:
        status["power"]["curtailment"] = c.curtail_out
    if c.grid_intensity is not None:
        # facility kW times g/kWh = g/h; rounded so float noise never makes a write.
        status["carbonGramsPerHour"] = round(c.facility_w * c.grid_intensity / 1000, 3)
    return status


def rack_status(r: RackIn, ctx: StatusContext) -> Status:
    events = ctx.events
    key = (RACK.kind, r.namespace, r.name)
    if not r.powered:
        ready: CondSpec = (
            "Ready",
            FALSE,
            "ClusterNotFound",
            f"{STARGATE_CLUSTER.kind} {r.cluster_ref} not found in namespace {r.namespace}",
        )
        capped: CondSpec = ("PowerCapped", UNKNOWN, "ClusterNotFound", "no budget without a cluster")
        over: CondSpec = ("OverBudget", UNKNOWN, "ClusterNotFound", "no budget without a cluster")
    else:
        if r.path_problem:
            ready = ("Ready", FALSE, "PowerPathInvalid", r.path_problem)
        elif misconfigured(r):
            ready = (
                "Ready",
                FALSE,
                "FloorExceedsRating",
                f"node floors need {r.floor_w} W but the rack is rated {r.max_power_w} W; "
                f"allocated its floor all the same",
            )
        else:
            ready = ("Ready", TRUE, "PowerAllocated", f"budget {r.budget_w} W for {len(r.nodes)} nodes")
        if rack_power_capped(r):
            capped = (
                "PowerCapped",
                TRUE,
                "BudgetBelowDemand",
                f"budget {r.budget_w} W is below demand {r.demand_w} W{_limited_by(r)}",
            )
        else:
            capped = ("PowerCapped", FALSE, "DemandMet", "budget covers demand")
        if rack_over_budget(r):
            over = (
                "OverBudget",
                TRUE,
                "MeasuredAboveBudget",
                f"measured {r.measured_w} W exceeds budget {r.budget_w} W",
            )
        else:
            over = ("OverBudget", FALSE, "WithinBudget", "measured power within budget")
    conds = build_conditions(
        r.old, (ready, capped, over), RACK_CONDITIONS, ctx.now, r.generation, ctx.conditions
    )
    _warn_reference(events, key, ready, r.old)
    if ready[2] == "FloorExceedsRating" and ready_reason_changed_to(r.old, "FloorExceedsRating"):
        events.append(PlanEvent(key, "Warning", "FloorExceedsRating", ready[3]))
    _alarm(events, key, r.old, over, "OverBudget", "WithinBudget")
    status = _base(r.generation, conds)
    status["nodes"] = len(r.nodes)
    status["gpus"] = {"total": r.gpus_total, "healthy": r.gpus_healthy}
    status["power"] = {
        "budgetWatts": r.budget_w,
        "floorWatts": r.floor_w,
        "demandWatts": r.demand_w,
        "measuredWatts": r.measured_w,
        "limitsConfirmed": r.limits_confirmed,
    }
    if r.limited_by is not None and capped[1] == TRUE:
        status["power"]["limitedBy"] = r.limited_by.name
    return status


def rack_limits(r: RackIn) -> tuple[dict[str, int], dict[str, int]]:
    """Rack.status.powerLimits and safeLimits once its nodes are allocated, from one sort of them:
    each node's per-GPU limit (the same figure as its powerLimitWatts) and the safeLimitWatts
    that are below it, by name, sorted so that the input's order never shows."""
    nodes = sorted(r.nodes, key=_name)
    # safeLimits lists only the nodes that oversubscription lifts above their safe limit: the rest
    # are safe at their powerLimits entry, and a site without oversubscription sends none of them.
    return ({n.name: n.limit_w for n in nodes},
            {n.name: n.safe_limit_w for n in nodes if n.powered and n.safe_limit_w < n.limit_w})


def _name(n: NodeIn) -> str:
    return n.name


def _limited_by(r: RackIn) -> str:
    """What the PowerCapped message says limits the rack: the constraint that closed on it first."""
    c = r.limited_by
    if c is not None:
        return f": limited by {c.label}, {c.capacity_word} {c.capacity} W"
    if r.path_problem:
        return ": floor only while its power path is invalid"
    return ""


def _stale_condition(n: NodeIn, stale_after: float) -> CondSpec:
    why = n.stale_reason
    if not n.stale:
        text = "no telemetry: every GPU counts as healthy" if why == "NoTelemetry" else "telemetry fresh"
        return ("TelemetryStale", FALSE, why, text)
    seen = n.telemetry.get("observedAt")
    if why == "Stale":
        text = f"no telemetry since {seen} (stale after {stale_after:g} s): 0 GPUs counted healthy"
    elif why == "ClockSkew":
        text = f"observedAt {seen} is more than {stale_after:g} s ahead of the operator's clock"
    elif why == "MissingTimestamp":
        text = "telemetry has no observedAt: 0 GPUs counted healthy"
    else:
        text = f"telemetry observedAt {seen!r} is not an RFC 3339 time: 0 GPUs counted healthy"
    return ("TelemetryStale", TRUE, why, text)


def _limit_condition(n: NodeIn) -> CondSpec:
    """PowerLimitApplied: whether the agent's fresh report shows the assigned limit in force.

    Before any report (no telemetry, or an agent or a DCGM source that does not report the enforced
    limit) it is Unknown, reason NoReport: a site without agents is not alerted on. A stale report
    proves nothing either (Unknown, TelemetryStale). Right after a new limit is assigned it is False
    (NotEnforced) until the agent reports it: that is the truth, and how long it lasts is the
    enforcement path's latency. Messages carry only figures of the status itself."""
    if not n.rack_found:
        return ("PowerLimitApplied", UNKNOWN, "RackNotFound", "no limit is assigned without a rack")
    if not n.powered:
        return ("PowerLimitApplied", UNKNOWN, "ClusterNotFound", "no limit is assigned without a cluster")
    if n.observe:
        return ("PowerLimitApplied", UNKNOWN, "Observing",
                "shadow mode: the node agent applies no limit and reports the one it would apply")
    if n.enforced_w is None:
        if n.stale:
            return ("PowerLimitApplied", UNKNOWN, "TelemetryStale",
                    "the node agent's last report is stale: the limit in force is not known")
        return ("PowerLimitApplied", UNKNOWN, "NoReport",
                "the node agent has not reported the limit its GPUs enforce")
    if n.enforced_w == n.limit_w:
        return ("PowerLimitApplied", TRUE, "Enforced", "the node agent reports the assigned limit enforced")
    return ("PowerLimitApplied", FALSE, "NotEnforced",
            f"the GPUs enforce {n.enforced_w} W per GPU, {n.limit_w} W is assigned")


def node_status(n: NodeIn, ctx: StatusContext) -> Status:
    events = ctx.events
    stale = _stale_condition(n, ctx.stale_after)
    if not n.rack_found:
        ready: CondSpec = (
            "Ready", FALSE, "RackNotFound", f"{RACK.kind} {n.rack_ref} not found in namespace {n.namespace}"
        )
        capped: CondSpec = ("PowerCapped", UNKNOWN, "RackNotFound", "no budget without a rack")
    elif not n.powered:
        ready = (
            "Ready",
            FALSE,
            "ClusterNotFound",
            f"{RACK.kind} {n.rack_ref} names {STARGATE_CLUSTER.kind} {n.rack_cluster_ref}, "
            f"not found in namespace {n.namespace}",
        )
        capped = ("PowerCapped", UNKNOWN, "ClusterNotFound", "no budget without a cluster")
    else:
        if n.maintenance:
            ready = ("Ready", FALSE, "Maintenance", "in maintenance: power held at its floor")
        elif not n.node_ready:
            ready = ("Ready", FALSE, "NodeNotReady",
                     "its Kubernetes Node is not Ready: 0 GPUs counted healthy")
        elif n.stale:
            ready = ("Ready", FALSE, "TelemetryStale", stale[3])
        elif n.healthy == 0:
            ready = ("Ready", FALSE, "NoHealthyGPUs", "the node agent reports no healthy GPU")
        else:
            # The figures are in the status itself; a message without them is one shared
            # condition for most nodes of a site instead of one string and one dict per node.
            ready = (
                "Ready",
                TRUE,
                "PowerAllocated",
                "every GPU healthy and powered"
                if n.healthy == n.count
                else f"{n.healthy} of {n.count} GPUs healthy",
            )
        if node_power_capped(n):
            capped = (
                "PowerCapped",
                TRUE,
                "BudgetBelowDemand",
                f"allocated {n.allocated_w} W of {n.demand_w} W demanded",
            )
        else:
            capped = ("PowerCapped", FALSE, "DemandMet", "allocated its full demand")
    old = n.old
    conds = build_conditions(
        old, (ready, capped, stale, _limit_condition(n)), NODE_CONDITIONS, ctx.now, n.generation,
        ctx.conditions
    )
    if not n.powered:
        _warn_reference(events, (GPU_NODE.kind, n.namespace, n.name), ready, old)
    if stale[1] == TRUE:
        if turned(old, "TelemetryStale", TRUE):
            events.append(PlanEvent((GPU_NODE.kind, n.namespace, n.name), "Warning", "TelemetryStale",
                                    stale[3]))
    elif old and recovered(old, "TelemetryStale"):
        events.append(PlanEvent((GPU_NODE.kind, n.namespace, n.name), "Normal", "TelemetryFresh", stale[3]))
    status: Status = {
        "conditions": conds,
        "powerLimitWatts": n.limit_w,
        "allocatedWatts": n.allocated_w,
        "floorWatts": n.floor_w,
        "demandWatts": n.demand_w,
        "healthyGPUs": n.healthy,
        # the limit that holds with no oversubscription; the agent's fail-safe
        "safeLimitWatts": n.safe_limit_w if n.powered else n.limit_w,
    }
    if n.observe:
        status["powerEnforcement"] = OBSERVE
    if n.generation is not None:
        status["observedGeneration"] = n.generation
    return status


def pool_status(p: PoolIn, ctx: StatusContext) -> Status:
    events = ctx.events
    key = (MEMORY_POOL.kind, p.namespace, p.name)
    if p.problem is not None:
        ready: CondSpec = ("Ready", FALSE, p.problem[0], p.problem[1])
        exhausted: CondSpec = ("Exhausted", UNKNOWN, p.problem[0], "the pool holds no memory")
    else:
        ready = ("Ready", TRUE, "CapacityKnown", f"{p.tier} pool of {p.capacity} bytes")
        if p.pending:
            exhausted = (
                "Exhausted",
                TRUE,
                "PendingClaimsDoNotFit",
                f"{p.pending} claims pending, the smallest needs {p.smallest_pending} bytes, "
                f"{p.capacity - p.allocated} bytes available",
            )
        else:
            exhausted = ("Exhausted", FALSE, "NoPendingClaims", "every claim is bound")
    conds = build_conditions(
        p.old, (ready, exhausted), POOL_CONDITIONS, ctx.now, p.generation, ctx.conditions
    )
    _warn_reference(events, key, ready, p.old)
    if exhausted[1] == TRUE and turned(p.old, "Exhausted", TRUE):
        events.append(PlanEvent(key, "Warning", "Exhausted", exhausted[3]))
    status = _base(p.generation, conds)
    status["capacityBytes"] = p.capacity
    status["allocatedBytes"] = p.allocated
    status["availableBytes"] = max(p.capacity - p.allocated, 0)
    status["claims"] = {"bound": p.bound, "pending": p.pending}
    return status


def claim_status(c: ClaimIn, ctx: StatusContext) -> Status:
    events = ctx.events
    key = (MEMORY_CLAIM.kind, c.namespace, c.name)
    pool = c.pool_ref
    old = c.old
    if c.bound:
        ready: CondSpec = ("Ready", TRUE, "Bound", f"{c.size} bytes bound in {MEMORY_POOL.kind} {pool}")
    elif not c.pool_found:
        ready = (
            "Ready", FALSE, "PoolNotFound",
            f"{MEMORY_POOL.kind} {c.pool_ref} not found in namespace {c.namespace}",
        )
    elif c.pool_problem is not None:
        ready = ("Ready", FALSE, "PoolNotReady", f"{MEMORY_POOL.kind} {pool}: {c.pool_problem[1]}")
    elif c.evicted or (old.get("Ready", {}).get("reason") == "Evicted"):
        # Evicted stays the reason while the claim waits, so a recomputation that changes nothing
        # writes nothing; it goes when the claim is bound again.
        ready = (
            "Ready",
            FALSE,
            "Evicted",
            f"evicted from {MEMORY_POOL.kind} {pool} when its capacity shrank; waiting for room",
        )
    else:
        ready = (
            "Ready",
            FALSE,
            "InsufficientCapacity",
            f"waiting for {c.size} bytes in {MEMORY_POOL.kind} {pool}",
        )
    conds = build_conditions(
        old, (ready,), CLAIM_CONDITIONS, ctx.now, c.generation, ctx.conditions
    )
    _warn_reference(events, key, ready, old)
    if c.was_bound and not c.bound and c.pool_found:
        why = ready[3] if ready[2] != "Evicted" else f"evicted from {MEMORY_POOL.kind} {c.pool_ref}"
        events.append(PlanEvent(key, "Warning", "Evicted", why))
    elif c.bound and not c.was_bound:
        events.append(PlanEvent(key, "Normal", "Bound", ready[3]))
    status = _base(c.generation, conds)
    if c.bound:
        status["phase"] = "Bound"
        status["allocatedBytes"] = c.size
        status["boundAt"] = c.bound_at if c.was_bound and c.bound_at else ctx.now
    else:
        status["phase"] = "Pending"
        status["allocatedBytes"] = 0
    return status


def domain_status(d: DomainIn, ctx: StatusContext) -> Status:
    """A PowerDomain's figures beneath it and its conditions."""
    events = ctx.events
    key = (POWER_DOMAIN.kind, d.namespace, d.name)
    usable = d.usable_w
    if d.problem is not None:
        reason, message = d.problem
        ready: CondSpec = ("Ready", FALSE, reason, message)
        unknown = "no racks are allocated under an invalid domain"
        oc: CondSpec = ("Overcommitted", UNKNOWN, reason, unknown)
        constrained: CondSpec = ("Constrained", UNKNOWN, reason, unknown)
        limit: CondSpec = ("OverLimit", UNKNOWN, reason, unknown)
    else:
        if d.floor_w > usable:
            oc = (
                "Overcommitted",
                TRUE,
                "FloorsExceedUsable",
                f"rack floors beneath need {d.floor_w} W but usable is {usable} W: "
                f"overcommitted by {d.floor_w - usable} W",
            )
            ready = ("Ready", FALSE, "Overcommitted", oc[3])
        else:
            oc = ("Overcommitted", FALSE, "FloorsFit", "rack floors beneath fit in usable")
            ready = (
                "Ready",
                TRUE,
                "PowerAllocated",
                f"{d.racks} racks: {d.allocated_w} W of {usable} W usable allocated, {d.demand_w} W demanded",
            )
        if d.demand_w > usable:
            constrained = (
                "Constrained",
                TRUE,
                "DemandExceedsUsable",
                f"racks beneath demand {d.demand_w} W, usable is {usable} W: this domain limits them",
            )
        else:
            constrained = ("Constrained", FALSE, "DemandFits", "the demand beneath fits in usable")
        if d.measured_w > usable:
            limit = (
                "OverLimit",
                TRUE,
                "MeasuredAboveUsable",
                f"measured {d.measured_w} W beneath exceeds usable {usable} W",
            )
        else:
            limit = ("OverLimit", FALSE, "WithinLimit", "measured power beneath within usable")
    capping, capping_status = _capping(d, usable, "usable", key, ctx)
    specs = (ready, oc, constrained, limit) if capping is None else (ready, oc, constrained, limit, capping)
    conds = build_conditions(d.old, specs, DOMAIN_CONDITIONS, ctx.now, d.generation, ctx.conditions)
    _warn_reference(events, key, ready, d.old)
    _alarm(events, key, d.old, oc, "Overcommitted", "OvercommitResolved")
    _alarm(events, key, d.old, limit, "OverLimit", "WithinLimit")
    status = _base(d.generation, conds)
    status["ratingWatts"] = d.rating_w
    status["usableWatts"] = usable
    status[RACKS_FIELD] = d.racks
    status["floorWatts"] = d.floor_w
    status["demandWatts"] = d.demand_w
    status["allocatedWatts"] = d.allocated_w
    status["measuredWatts"] = d.measured_w
    status["headroomWatts"] = usable - d.allocated_w
    status["path"] = d.path
    if capping_status is not None:
        status["capping"] = capping_status
    return status


def _capping(rec: ClusterIn | DomainIn, capacity: int, word: str, key: ObjectKey,
             ctx: StatusContext) -> tuple[CondSpec | None, Status | None]:
    """The Capping condition and status.capping of a constraint with oversubscription,
    and the Events of its transitions; (None, None) without oversubscription. Messages carry only
    figures of the status itself (the state's instants and lines), so a steady state writes nothing."""
    over, state, event = rec.over, rec.capping, rec.capping_event
    if over is None or state is None:
        if event == ENDED:
            ctx.events.append(PlanEvent(key, "Normal", ENDED, "capping ended: oversubscription removed"))
        return None, None
    cap_w, uncap_w = over.lines(capacity)
    if state.active and state.below_since is not None:
        cond: CondSpec = (
            "Capping", TRUE, "HoldingBelowUncapAt",
            f"draw below {uncap_w} W ({over.uncap_at} % of {word} {capacity} W) since "
            f"{state.below_since}: capping ends after {over.hold_s} s below it",
        )
    elif state.active:
        cond = ("Capping", TRUE, "DrawAboveCapAt",
                f"draw reached {cap_w} W ({over.cap_at} % of {word} {capacity} W): allocating within "
                f"{word}")
    else:
        cond = ("Capping", FALSE, "DrawBelowCapAt",
                f"allocating up to {rec.allocatable_w} W ({over.percent} % above {word} {capacity} W); "
                f"capping starts at a draw of {cap_w} W")
    if event == STARTED:
        ctx.events.append(PlanEvent(key, "Warning", STARTED,
                                    f"draw {rec.draw_w} W reached {cap_w} W ({over.cap_at} % of {word} "
                                    f"{capacity} W): allocating within {word}"))
    elif event == ENDED:
        ctx.events.append(PlanEvent(key, "Normal", ENDED,
                                    f"draw stayed below {uncap_w} W for {over.hold_s} s: allocating up to "
                                    f"{rec.allocatable_w} W again"))
    return cond, capping_status(state, rec.draw_w, over, capacity, rec.allocatable_w)
