"""Grid events: scheduled demand response, on the site or on one feed.

A GridEvent is *active* while `start <= now < end` (no end: until it is deleted). While active it
lowers the capacity of its constraint: on the site, the budget of the site's formula
with `reducePercent` as the curtailment, or at most `limitWatts`; on an Electrical PowerDomain, its
usableWatts to `floor(usable * (100 - reducePercent) / 100)`, or to `min(usable, limitWatts)`. The
capacity an event sets is its *target*. Several active events on one constraint: the lowest
capacity wins; the site's own `spec.power.curtailment`, while it applies, is one more event on the
site. The progressive filling then runs over the lowered capacities, so the allocation beneath a
constraint never exceeds the strictest target unless the racks' floors alone do.

An event whose site or domain is missing (or whose domain is of another site, a Cooling domain, or
invalid) is `Ready=False` and changes nothing else.

Status: `phase` (Scheduled, Active, Completed), `targetWatts`, and while active the allocation and
measured power beneath its constraint; condition `Met` while active: True when both are within the
target, False with `FloorsAboveTarget` (the floors alone exceed it: the racks cannot shed enough
without stopping) or `MeasuredAboveTarget` (the agents have not brought the draw down yet, or a
meter reads high). A completed event keeps the figures and the Met verdict it ended with: the
record of what the site did. Events GridEventStarted, GridEventEnded and GridEventNotMet; the
planner's next change is every future start and end, so the engine's timers move the phases.

Pure: records in, figures and statuses out (site.py calls it between linking and allocation).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stargate_operator.core.conditions import (
    FALSE,
    TRUE,
    UNKNOWN,
    CondSpec,
    OldConditions,
    build_conditions,
    ready_reason_changed_to,
    turned,
)
from stargate_operator.core.domains import (
    ELECTRICAL,
    REF_MISMATCH,
    REF_NOT_FOUND,
    REF_NOT_READY,
    domain_label,
    reference_problem,
)
from stargate_operator.core.objects import ClusterIn, DomainIn, name_or_none, object_header
from stargate_operator.core.power import site_budget
from stargate_operator.core.ramps import INFINITY as NEVER
from stargate_operator.core.ramps import (
    Ramp,
    domain_rates,
    envelope_instant,
    note_kinks,
    note_window,
    share_site_rate,
)
from stargate_operator.core.settlement import (
    Ledger,
    Window,
    baseline_estimate,
    parse_ledger,
    settle,
)
from stargate_operator.core.status import StatusContext
from stargate_operator.core.types import PlanEvent
from stargate_operator.core.wire import format_time, from_epoch, int_or_none, mapping, parse_epoch
from stargate_operator.kinds import GRID_EVENT

KIND = GRID_EVENT.kind
INFINITY = float("inf")

SCHEDULED = "Scheduled"
ACTIVE = "Active"
COMPLETED = "Completed"

# Ready reasons of an event that applies to nothing.
CLUSTER_NOT_FOUND = "ClusterNotFound"
POWER_DOMAIN_NOT_FOUND = REF_NOT_FOUND
POWER_DOMAIN_MISMATCH = REF_MISMATCH  # of another site, or a Cooling domain
POWER_DOMAIN_NOT_READY = REF_NOT_READY  # the domain is invalid: it takes no part
INVALID_SPEC = "InvalidSpec"  # no readable start, or no target (the API server refuses both)
PROBLEMS = frozenset({CLUSTER_NOT_FOUND, POWER_DOMAIN_NOT_FOUND, POWER_DOMAIN_MISMATCH,
                      POWER_DOMAIN_NOT_READY, INVALID_SPEC})

# Met reasons.
WITHIN_TARGET = "WithinTarget"
FLOORS_ABOVE_TARGET = "FloorsAboveTarget"
MEASURED_ABOVE_TARGET = "MeasuredAboveTarget"
RAMP_TOO_SLOW = "RampTooSlow"  # created too late to descend by start: still descending
NOT_STARTED = "NotStarted"
NOT_OBSERVED = "NotObserved"  # ended before the operator saw it active

# Kubernetes Events.
STARTED = "GridEventStarted"
ENDED = "GridEventEnded"
NOT_MET = "GridEventNotMet"
RAMP_STARTED = "GridEventRampStarted"
TARGET_REACHED = "GridEventTargetReached"

EVENT_CONDITIONS = frozenset({"Ready", "Met"})


@dataclass(slots=True, eq=False)
class EventIn:
    """A GridEvent as the core reads it."""

    name: str
    namespace: str
    generation: int | None
    status: Mapping[str, Any]
    old: OldConditions
    cluster_ref: str
    domain_ref: str | None
    start: float | None  # epoch seconds; None: unreadable
    end: float | None  # None: open-ended (or unreadable: read as open-ended)
    reduce_percent: int | None
    limit_w: int | None
    reason: str
    created: float | None = None  # metadata.creationTimestamp
    emergency: bool = False  # spec.urgency: Emergency: no down ramp
    baseline_basis: bool = False  # spec.basis: Baseline
    ledger: Ledger | None = None  # status.ledger
    # computed
    ramp: Ramp | None = None  # with a rate on its constraint: its envelope
    cap_now: int | None = None  # the envelope now; None where it does not bound
    shared: bool = False  # another event bounds a constraint of the same site now
    phase: str = SCHEDULED
    problem: tuple[str, str] | None = None
    target_w: int | None = None
    cluster: ClusterIn | None = None
    domain: DomainIn | None = None  # None with a cluster: the event is on the site

    @property
    def applied(self) -> bool:
        """It lowers its constraint's capacity now."""
        return self.problem is None and self.phase == ACTIVE


def parse_event(obj: Mapping[str, Any]) -> EventIn:
    spec = mapping(obj.get("spec"))
    percent = int_or_none(spec.get("reducePercent"))
    return EventIn(
        *object_header(obj),
        cluster_ref=str(spec.get("clusterRef", "")),
        domain_ref=name_or_none(spec.get("powerDomainRef")),
        start=parse_epoch(spec.get("start")),
        end=parse_epoch(spec.get("end")),
        reduce_percent=None if percent is None else min(max(percent, 0), 100),
        limit_w=int_or_none(spec.get("limitWatts")),
        reason=str(spec.get("reason") or ""),
        created=parse_epoch(mapping(obj.get("metadata")).get("creationTimestamp")),
        emergency=spec.get("urgency") == "Emergency",
        baseline_basis=spec.get("basis") == "Baseline",
        ledger=parse_ledger(mapping(obj.get("status"))),
    )


def phase_at(start: float, end: float | None, now: float) -> str:
    """Scheduled before start, Active from start until end (excluded), Completed from end on."""
    if now < start:
        return SCHEDULED
    if end is None or now < end:
        return ACTIVE
    return COMPLETED


def next_change(start: float, end: float | None, now: float) -> float:
    """The next instant at which the phase changes by time alone; infinity when none is ahead."""
    if now < start:
        return start
    if end is not None and now < end:
        return end
    return INFINITY


def domain_target(usable_w: int, reduce_percent: int | None, limit_w: int | None) -> int:
    """What an event sets a domain's usableWatts to."""
    if reduce_percent is not None:
        return usable_w * (100 - reduce_percent) // 100
    assert limit_w is not None
    return min(usable_w, max(limit_w, 0))


def site_target(it_capacity_w: int, reserve_percent: int, reduce_percent: int | None,
                limit_w: int | None) -> int:
    """What an event sets a site's budget to: the site's budget formula with reducePercent as the
    curtailment, or the budget without curtailment capped at limitWatts."""
    if reduce_percent is not None:
        return site_budget(it_capacity_w, reserve_percent, reduce_percent)
    assert limit_w is not None
    return min(site_budget(it_capacity_w, reserve_percent, 0), max(limit_w, 0))


def link_events(events: Iterable[EventIn], clusters: Mapping[str, ClusterIn],
                domains: Mapping[str, DomainIn], now: float) -> float:
    """Judge every event (phase, validity, target) and lower the capacities of the constraints the
    active ones target: `ClusterIn.grid_cap_w` (allocate_site takes the budget down to it) and
    `DomainIn.usable_w`. Needs the domains linked (link_domains); returns the earliest future
    start or end. Every target is computed from the capacity before any event lowered it, so the
    result does not depend on the order of the events."""
    upcoming = INFINITY
    caps: dict[int, tuple[DomainIn | ClusterIn, int]] = {}
    ramped: dict[int, tuple[ClusterIn, list[tuple[EventIn, DomainIn | ClusterIn]]]] = {}
    events_seen = sorted(events, key=_by_name)
    for e in events_seen:
        if e.start is not None:
            e.phase = phase_at(e.start, e.end, now)
            t = next_change(e.start, e.end, now)
            if t < upcoming:
                upcoming = t
        if e.start is None or (e.reduce_percent is None and e.limit_w is None):
            e.problem = (INVALID_SPEC, "spec.start must be an RFC 3339 time and one of spec.reducePercent "
                                       "or spec.limitWatts must be set; the event changes nothing")
            continue
        cluster = clusters.get(e.cluster_ref)
        if cluster is None:
            e.problem = (CLUSTER_NOT_FOUND,
                         f"StargateCluster {e.cluster_ref} not found in namespace {e.namespace}; "
                         "the event changes nothing")
            continue
        e.cluster = cluster
        if cluster.rates.any or any(d.rates.any for d in cluster.domains):
            # A step at start or end is a kink of the site's plan too: no ramp piece spans it.
            note_kinks(cluster, (e.start,) if e.end is None else (e.start, e.end))
        percent = e.reduce_percent
        baseline = baseline_estimate(e.status, e.ledger) if e.baseline_basis and percent is not None else None
        if e.domain_ref is None:
            normal = site_budget(cluster.it_capacity_w, cluster.reserve_percent, 0)
            e.target_w = site_target(cluster.it_capacity_w, cluster.reserve_percent, percent, e.limit_w)
            target: DomainIn | ClusterIn = cluster
            rates = cluster.rates
        else:
            d = domains.get(e.domain_ref)
            e.problem = _domain_problem(e, d)
            if e.problem is not None or d is None:
                continue
            e.domain = d
            normal = d.usable_w
            e.target_w = domain_target(d.usable_w, percent, e.limit_w)
            target = d
            rates = domain_rates(d, cluster)
        if baseline is not None and percent is not None:  # a share of the baseline, not of capacity
            e.target_w = min(baseline * (100 - percent) // 100, normal)
        descent = e.start
        if rates.any:
            over = target.over
            if over is not None:  # descend from what may be allocated: the raised capacity
                normal = over.allocatable(normal, False)
            e.ramp = Ramp(normal, e.target_w, e.start, e.end, e.created,
                          None if e.emergency else rates.down, rates.up)
            ramped.setdefault(id(cluster), (cluster, []))[1].append((e, target))
            descent = e.ramp.descent_start()
        if now < descent < upcoming:  # the baseline is fixed when the descent starts
            upcoming = descent
        if e.ramp is not None:
            continue
        if e.phase == ACTIVE:
            held = caps.get(id(target))
            if held is None or e.target_w < held[1]:
                caps[id(target)] = (target, e.target_w)
            if e.domain is None:
                cluster.grid_events.append(e.name)
    for cluster, held_ramps in ramped.values():
        change = _apply_ramps(cluster, held_ramps, now)
        if change < upcoming:
            upcoming = change
    for target, cap in caps.values():
        if isinstance(target, ClusterIn):
            target.grid_cap_w = cap
        elif cap < target.usable_w:
            target.usable_w = cap
    bounding: dict[int, list[EventIn]] = {}
    for e in events_seen:  # events that bound their site's power now: baselines leave that time out
        if e.cluster is not None and (e.cap_now is not None or e.applied):
            bounding.setdefault(id(e.cluster), []).append(e)
    for together in bounding.values():
        for e in together:
            e.shared = len(together) > 1
    for cluster in clusters.values():
        if cluster.grid_events:
            cluster.grid_note = f"; GridEvent {', '.join(cluster.grid_events)} in effect"
    return upcoming


def _apply_ramps(cluster: ClusterIn, held: list[tuple[EventIn, DomainIn | ClusterIn]], now: float) -> float:
    """The envelopes of one site's ramped events at `now` (ramps.py): each constraint's ramp cap is
    the minimum of its envelopes. Returns when they next change by time alone."""
    if cluster.rates.any:
        share_site_rate([e.ramp for e, _ in held if e.ramp is not None], cluster.rates)
    upcoming = INFINITY
    for e, target in held:
        ramp = e.ramp
        assert ramp is not None
        change = ramp.changes(now)
        if change < upcoming:
            upcoming = change
        # The plan beneath moves where the envelope binds the demand there: a ramp in the slices
        # starts where the envelope meets it, not at the descent's start.
        racks = cluster.racks if isinstance(target, ClusterIn) else \
            [r for r in cluster.racks if any(d is target for d in r.chain)]
        for a, b in ramp.windows(sum(r.demand_w for r in racks)):
            note_window(cluster, a, b)
        note_kinks(cluster, ramp.kinks())
        cap = e.cap_now = ramp.capacity(envelope_instant(cluster, now))
        if cap is None:
            continue
        if target.ramp_cap_w is None or cap < target.ramp_cap_w:
            target.ramp_cap_w = cap
        if e.domain is None and e.phase == ACTIVE:
            cluster.grid_events.append(e.name)
    return upcoming if upcoming != NEVER else INFINITY


def _by_name(e: EventIn) -> str:
    return e.name


def _domain_problem(e: EventIn, d: DomainIn | None) -> tuple[str, str] | None:
    problem = reference_problem(d, e.namespace, e.cluster_ref, ELECTRICAL,
                                "a grid event targets an Electrical one")
    if problem is None:
        return None
    reason, why = problem
    return reason, f"PowerDomain {e.domain_ref} {why}; the event changes nothing"


def _label(e: EventIn) -> str:
    if e.domain is not None:
        return domain_label(e.domain)
    return f"StargateCluster {e.cluster_ref}"


def _when(epoch: float | None) -> str:
    return "" if epoch is None else format_time(from_epoch(epoch))


def _beneath(e: EventIn) -> tuple[int, int, int]:
    """Floors, allocation and measured power beneath the event's constraint (after allocation)."""
    if e.domain is not None:
        d = e.domain
        return d.floor_w, d.allocated_w, d.measured_w
    c = e.cluster
    assert c is not None
    return c.floor_w, c.allocated_w, c.measured_w


def event_status(e: EventIn, ctx: StatusContext, now: float) -> dict[str, Any]:
    """A GridEvent's status, once its site is allocated; and the Events its transitions raise.

    `now` (epoch seconds) is the planning instant: `appliedAt` and `liftedAt` record, to the
    millisecond, when the operator put the event's cap in place and lifted it (at its start and
    end, by the engine's timers; or when it was created, edited or its target appeared)."""
    key = (KIND, e.namespace, e.name)
    old = e.old
    old_phase = e.status.get("phase")
    was_applied = old_phase == ACTIVE and old.get("Ready", {}).get("status") == TRUE
    status: dict[str, Any] = {}
    if e.problem is not None:
        reason, message = e.problem
        ready: CondSpec = ("Ready", FALSE, reason, message)
        met: CondSpec = ("Met", UNKNOWN, reason, "the event applies to nothing")
    else:
        assert e.target_w is not None
        target = e.target_w
        label = _label(e)
        until = f" until {_when(e.end)}" if e.end is not None else ", open-ended"
        status["targetWatts"] = target
        if e.phase == SCHEDULED:
            ready = ("Ready", TRUE, SCHEDULED,
                     f"scheduled on {label} from {_when(e.start)}{until}: target {target} W")
            met = ("Met", UNKNOWN, NOT_STARTED, f"not active before {_when(e.start)}")
        elif e.phase == ACTIVE:
            floors, allocated, measured = _beneath(e)
            status["allocatedWatts"] = allocated
            status["measuredWatts"] = measured
            ready = ("Ready", TRUE, ACTIVE, f"in effect on {label} since {_when(e.start)}{until}: "
                                            f"target {target} W")
            if e.cap_now is not None and e.cap_now > target:
                met = ("Met", FALSE, RAMP_TOO_SLOW,
                       f"created too late to descend to the target by {_when(e.start)} at the ramp's rate: "
                       f"the capacity of {label} is {e.cap_now} W on its way down to {target} W, reached at "
                       f"{_when(e.ramp.reached_at() if e.ramp else None)}")
            elif floors > target:
                met = ("Met", FALSE, FLOORS_ABOVE_TARGET,
                       f"the rack floors beneath {label} need {floors} W, above the target {target} W: "
                       f"allocated {allocated} W with every rack at its floor; only fewer powered nodes "
                       "(maintenance) can shed more")
            elif measured > target:
                met = ("Met", FALSE, MEASURED_ABOVE_TARGET,
                       f"measured {measured} W beneath {label}, above the target {target} W "
                       f"(allocated {allocated} W): the node agents have not brought the draw down yet")
            else:
                met = ("Met", TRUE, WITHIN_TARGET,
                       f"allocated {allocated} W and measured {measured} W beneath {label}, within the "
                       f"target {target} W")
        else:
            ready = ("Ready", TRUE, COMPLETED, f"ended at {_when(e.end)} on {label}")
            held = old.get("Met")
            if old_phase in (ACTIVE, COMPLETED) and held is not None and held.get("status") in (TRUE, FALSE):
                # The record of how it ended: the last figures and verdict while active.
                met = ("Met", str(held.get("status")), str(held.get("reason") or ""),
                       str(held.get("message") or ""))
                for k in ("targetWatts", "allocatedWatts", "measuredWatts"):
                    value = e.status.get(k)
                    if type(value) is int:
                        status[k] = value
            else:
                met = ("Met", UNKNOWN, NOT_OBSERVED,
                       f"it ended at {_when(e.end)} before the operator saw it active")
    conds = build_conditions(old, (ready, met), EVENT_CONDITIONS, ctx.now, e.generation, ctx.conditions)
    events = ctx.events
    if ready[2] in PROBLEMS and ready_reason_changed_to(old, ready[2]):
        events.append(PlanEvent(key, "Warning", ready[2], ready[3]))
    if e.applied and not was_applied:
        events.append(PlanEvent(key, "Normal", STARTED, ready[3]))
    elif was_applied and not e.applied:
        why = ready[3] if e.problem is None else f"no longer applied: {ready[3]}"
        events.append(PlanEvent(key, "Normal", ENDED, why))
    if e.applied and met[1] == FALSE and turned(old, "Met", FALSE):
        events.append(PlanEvent(key, "Warning", NOT_MET, met[3]))
    out: dict[str, Any] = {"conditions": conds}
    if e.generation is not None:
        out["observedGeneration"] = e.generation
    if e.start is not None:
        out["phase"] = e.phase
    out.update(status)
    _record(out, e, was_applied, now)
    if e.problem is None and e.start is not None and e.target_w is not None:
        _settle(out, e, met, now, key, events)
    return out


def _settle(out: dict[str, Any], e: EventIn, met: CondSpec, now: float, key: Any,
            events: list[PlanEvent]) -> None:
    """Settlement figures (settlement.py), and the Events of a ramp's start and of its target reached."""
    assert e.start is not None and e.target_w is not None and e.cluster is not None
    ramp = e.ramp
    w = Window(e.start, e.start, e.end, e.start) if ramp is None else \
        Window(ramp.descent_start(), e.start, e.end, ramp.reached_at())
    held = e.status
    if e.phase == COMPLETED:
        measured = int_or_none(held.get("measuredWatts")) or 0
        power = measured
    else:
        _, allocated, measured = _beneath(e)
        power = measured if measured > 0 else allocated
    figures = settle(held, e.ledger, w, now, power, e.shared, e.cluster.design_pue, e.target_w, measured,
                     met[2] == WITHIN_TARGET, e.phase == ACTIVE, e.created)
    out.update(figures)
    if ramp is None or ramp.down_used is None:
        return
    label = _label(e)
    if "rampStartedAt" in figures and not held.get("rampStartedAt"):
        events.append(PlanEvent(key, "Normal", RAMP_STARTED,
                                f"{label} descends toward {e.target_w} W at {ramp.down_used:g} W/s from "
                                f"{figures['rampStartedAt']}"))
    if "targetReachedAt" in figures and not held.get("targetReachedAt"):
        events.append(PlanEvent(key, "Normal", TARGET_REACHED,
                                f"the capacity of {label} reached the target {e.target_w} W at "
                                f"{figures['targetReachedAt']}"))


def _record(out: dict[str, Any], e: EventIn, was_applied: bool, now: float) -> None:
    """appliedAt while applied (kept from the input once set) and after; liftedAt once lifted. A
    completed event keeps both as its record; a rescheduled or broken one drops them."""
    held = e.status
    stamp = format_time(from_epoch(now), millis=True)
    applied_at, lifted_at = held.get("appliedAt"), held.get("liftedAt")
    if e.applied:
        out["appliedAt"] = applied_at if was_applied and applied_at else stamp
    elif was_applied:
        if applied_at:
            out["appliedAt"] = applied_at
        out["liftedAt"] = stamp
    elif e.problem is None and e.phase == COMPLETED:
        if applied_at:
            out["appliedAt"] = applied_at
        if lifted_at:
            out["liftedAt"] = lifted_at
