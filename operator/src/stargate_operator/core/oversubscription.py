"""Oversubscription on measured draw: the allocation of a site whose budget or
domains set `oversubscription`, the safe limits, and reactive capping.

One site, in four steps, all over the same progressive filling (domains.allocate_tree):
1. the *safe* allocation: every constraint at its real capacity (no oversubscription anywhere).
   Each rack keeps that budget (`safe_budget_w`); its nodes' `safeLimitWatts` come from it (at
   most their limit), so that a node agent cut off from the operator can fall back to a limit that
   holds even if every GPU draws it;
2. the allocation with the capping state the last plan left in status: a constraint that is not
   capping is allocated up to `percent` above its capacity, one that is capping within it;
3. each constraint's *draw*: per node, `telemetry.peakPowerWatts` (else `powerWatts`) where its
   telemetry is fresh, its allocation from step 2 where it is not (a node that does not report
   counts as drawing its limit); summed over the racks beneath;
4. the capping rule (capping.py) on that draw; where a constraint starts or ends capping, the
   allocation runs again with the new states, so the limits written already obey them.
A site where nothing sets oversubscription never comes here (allocation.allocate_site), so its
plan is exactly what it is without oversubscription; one where every percent is 0 skips steps 1 and 4's
second allocation, whose results would be the same.
"""

from __future__ import annotations

from collections.abc import Callable

from stargate_operator.core.capping import ENDED, step
from stargate_operator.core.domains import allocate_tree
from stargate_operator.core.objects import ClusterIn, DomainIn, NodeIn, RackIn
from stargate_operator.core.ramps import RAMP_TICK_SECONDS, domain_rates, envelope_instant, note_window
from stargate_operator.core.wire import format_time, from_epoch, int_or_none, parse_epoch


def has_oversubscription(cluster: ClusterIn) -> bool:
    """The site or one of its valid domains sets oversubscription, or still carries a capping state
    (oversubscription just removed: capping ends, with its Event)."""
    if cluster.over is not None or cluster.capping_was is not None:
        return True
    return any(d.over is not None or d.capping_was is not None for d in cluster.domains)


def allocate_oversubscribed(cluster: ClusterIn, now: float,
                            allocate_rack: Callable[[RackIn], None]) -> int:
    """Rack budgets (and safe budgets) of a site with oversubscription; returns the racks' floors.
    `allocate_rack` is the within-rack rule (allocation.py), passed in to keep the modules acyclic."""
    domains = [d for d in cluster.domains if d.over is not None or d.capping_was is not None]
    raising = (cluster.over is not None and cluster.over.percent > 0) or any(
        d.over is not None and d.over.percent > 0 for d in domains)
    if raising:
        allocate_tree(cluster, oversubscribed=False)  # the budgets without it: the safe budgets
        for r in cluster.racks:
            r.safe_budget_w = r.budget_w
    cluster.capping_now = cluster.capping_was is not None and cluster.capping_was.active
    for d in domains:
        d.capping_now = d.capping_was is not None and d.capping_was.active
    nexts: list[float] = []
    _rise_after_capping(cluster, cluster, cluster.budget_w, cluster.rates.up, now, nexts)
    for d in domains:
        _rise_after_capping(cluster, d, d.usable_w, domain_rates(d, cluster).up, now, nexts)
    floors = allocate_tree(cluster)

    site_draw = 0
    for r in cluster.racks:
        drawn = rack_draw(r, allocate_rack)
        site_draw += drawn
        for d in r.chain:
            d.draw_w += drawn
    now_s = format_time(from_epoch(now))
    changed = False
    judged: list[tuple[ClusterIn | DomainIn, int, int]] = [(cluster, cluster.budget_w, site_draw)]
    judged += [(d, d.usable_w, d.draw_w) for d in domains]
    for rec, capacity, draw in judged:
        changed |= _judge(rec, capacity, draw, now_s, now, nexts)
    cluster.capping_next = min(nexts) if nexts else None
    if changed and raising:
        for rec, capacity, _ in judged:
            if rec.capping_event == ENDED and (rec.rates.up is not None or cluster.rates.up is not None):
                _bound(rec, capacity)  # leaving capping: the rise starts from the real capacity
        floors = allocate_tree(cluster)
    for rec, capacity, _ in judged:
        over = rec.over
        rec.allocatable_w = capacity if over is None else over.allocatable(capacity, rec.capping_now)
    return floors


def _rise_after_capping(cluster: ClusterIn, rec: ClusterIn | DomainIn, real: int, up: float | None,
                        now: float, nexts: list[float]) -> None:
    """Leaving capping ramps: since capping ended, the allocatable capacity rises from the real one at
    the up rate (ramps.py), not in one step to the raised one."""
    was, over = rec.capping_was, rec.over
    if up is None or over is None or was is None or was.active:
        return
    since = parse_epoch(was.since)
    raised = over.allocatable(real, False)
    if since is None or since > now or raised <= real:
        return
    note_window(cluster, since, since + (raised - real) / up)
    if real + int(up * (now - since)) >= raised:
        return
    level = real + int(up * (envelope_instant(cluster, now) - since))
    if level < raised:
        _bound(rec, level)
    nexts.append(now + RAMP_TICK_SECONDS)


def _bound(rec: ClusterIn | DomainIn, cap: int) -> None:
    if rec.ramp_cap_w is None or cap < rec.ramp_cap_w:
        rec.ramp_cap_w = cap


def _judge(rec: ClusterIn | DomainIn, capacity: int, draw: int, now_s: str, now: float,
           nexts: list[float]) -> bool:
    """The new capping state of one constraint; True when the allocation must follow it."""
    rec.draw_w = draw
    over = rec.over
    if over is None:  # oversubscription removed: the state goes, an active capping ends
        rec.capping = None
        rec.capping_event = ENDED if rec.capping_was is not None and rec.capping_was.active else None
        turned = rec.capping_now
        rec.capping_now = False
        return turned
    state, event, ends = step(rec.capping_was, over, draw, capacity, now_s, now)
    rec.capping = state
    rec.capping_event = event
    if ends is not None:
        nexts.append(ends)
    turned = state.active != rec.capping_now
    rec.capping_now = state.active
    return turned


def rack_draw(rack: RackIn, allocate_rack: Callable[[RackIn], None]) -> int:
    """What the rack's nodes draw as far as the operator can tell: the peak (else the reading) of
    nodes with fresh telemetry, the allocation of the others under the rack's current budget."""
    total = 0
    allocated = False
    for n in rack.nodes:
        reading = node_draw(n)
        if reading is None:
            if not allocated:
                allocate_rack(rack)  # the node allocations of this budget (done again later)
                allocated = True
            total += n.allocated_w
        else:
            total += reading
    return total


def node_draw(n: NodeIn) -> int | None:
    """telemetry.peakPowerWatts where the telemetry is fresh (else its powerWatts); None when the
    node has no fresh reading. A peak below the reading is not believed: the reading counts."""
    measured = n.measured_w  # set only for fresh telemetry (capacity.assess_node)
    if measured is None:
        return None
    peak = n.telemetry.get("peakPowerWatts")
    if type(peak) is not int:
        peak = int_or_none(peak)
    return peak if peak is not None and peak > measured else measured
