"""Rollups and the power allocation: site budget -> (power domains) -> racks -> nodes.

Runs over parsed, linked records (site.py links them). Linear in the number of nodes: the only
sorts are of racks inside one priority level and of at most a rack's nodes.
"""

from __future__ import annotations

from decimal import Decimal

from stargate_operator.core.domains import allocate_tree
from stargate_operator.core.objects import ClusterIn, NodeIn, RackIn
from stargate_operator.core.oversubscription import allocate_oversubscribed, has_oversubscription
from stargate_operator.core.power import curtailment_in_effect, max_min_shares, site_budget
from stargate_operator.core.ramps import bring_online, ramp_curtailment


def add_node(rack: RackIn, n: NodeIn) -> None:
    """Count a node (its floor and demand already computed, already in rack.nodes) into its rack's
    rollup."""
    rack.floor_w += n.floor_w
    rack.demand_sum_w += n.demand_w
    rack.demand_w = min(rack.demand_sum_w, rack.max_power_w)  # demand is capped at the rating
    rack.gpus_total += n.count
    rack.gpus_healthy += n.healthy
    rack.hbm_bytes += n.healthy * n.memory_bytes
    if not n.maintenance:
        rack.host_bytes += n.host_bytes
    if n.measured_w is not None:
        rack.measured_w += n.measured_w


def misconfigured(rack: RackIn) -> bool:
    """Floor above the rating: the rack is allocated its floor all the same, and flagged."""
    return rack.floor_w > rack.max_power_w


def allocate_site(cluster: ClusterIn, now: float) -> None:
    """Site budget (lowered by the active grid events on the site), and rack budgets by
    priority over the site and its domains."""
    cluster.curtailment_active = curtailment_in_effect(
        cluster.curtailment_percent, cluster.curtailment_until, now
    )
    rising_rates = cluster.rates.up is not None or any(d.rates.up is not None for d in cluster.domains)
    if cluster.domains and rising_rates:
        rising = bring_online(cluster, now)
        if rising is not None and (cluster.ramp_next is None or rising < cluster.ramp_next):
            cluster.ramp_next = rising
    if cluster.rates.any and (cluster.curtailment_active or cluster.curtail_held is not None):
        budget = ramp_curtailment(cluster, now)  # the budget without it: its envelope bounds the site
    else:
        budget = site_budget(
            cluster.it_capacity_w,
            cluster.reserve_percent,
            cluster.curtailment_percent if cluster.curtailment_active else 0,
        )
    # The site's curtailment is one more grid event on the site: the lowest capacity wins.
    cap = cluster.grid_cap_w
    cluster.budget_w = budget if cap is None or cap >= budget else cap
    # Between racks: floors first, then progressive filling by priority over the site and its
    # power domains (domains.py); with no domains, the flat max-min fair levels between racks exactly. With
    # oversubscription, the same filling with raised capacities and reactive capping.
    if has_oversubscription(cluster):
        cluster.floor_w = allocate_oversubscribed(cluster, now, allocate_rack)
    else:
        cluster.floor_w = allocate_tree(cluster)


def allocate_rack(rack: RackIn) -> None:
    """The same procedure inside a rack: floors first, then one max-min fair level of nodes."""
    nodes = rack.nodes
    remainder = rack.budget_w - rack.floor_w
    rooms = [n.demand_w - n.floor_w for n in nodes]
    shares, _ = max_min_shares(rooms, remainder if remainder > 0 else 0)
    facility_it = 0
    for n, share in zip(nodes, shares, strict=True):
        count = n.count
        if count > 0:
            limit = n.min_w + share // count  # = floor((allocated - base) / count) >= min
            n.limit_w = limit
            n.allocated_w = n.base_w + count * limit
        else:
            n.limit_w = n.min_w
            n.allocated_w = n.base_w
        n.powered = True
        # Facility power: measured where a node reports, allocated where nothing is measured.
        facility_it += n.allocated_w if n.measured_w is None else n.measured_w
    rack.facility_it_w = facility_it
    _safe_limits(rack, rooms)


def _safe_limits(rack: RackIn, rooms: list[int]) -> None:
    """Each node's limit under the safe budget (no oversubscription anywhere), at most
    its limit: the same rule as above, with the rack's safe budget."""
    safe = rack.safe_budget_w
    if safe < 0 or safe == rack.budget_w:
        for n in rack.nodes:
            n.safe_limit_w = n.limit_w
        return
    remainder = safe - rack.floor_w
    shares, _ = max_min_shares(rooms, remainder if remainder > 0 else 0)
    for n, share in zip(rack.nodes, shares, strict=True):
        limit = n.min_w + share // n.count if n.count > 0 else n.min_w
        n.safe_limit_w = limit if limit < n.limit_w else n.limit_w


def roll_up_site(cluster: ClusterIn) -> None:
    nodes = total = healthy = hbm = host = demand = allocated = measured = facility_it = 0
    for r in cluster.racks:
        nodes += len(r.nodes)
        total += r.gpus_total
        healthy += r.gpus_healthy
        hbm += r.hbm_bytes
        host += r.host_bytes
        demand += r.demand_w
        allocated += r.budget_w
        measured += r.measured_w
        facility_it += r.facility_it_w
    cluster.node_count = nodes
    cluster.gpus_total = total
    cluster.gpus_healthy = healthy
    cluster.hbm_bytes = hbm
    cluster.host_bytes = host
    cluster.demand_w = demand
    cluster.allocated_w = allocated
    cluster.measured_w = measured
    # Decimal of the shortest repr: 1.15 * 100 must be 115, not 114.99999999999999.
    cluster.facility_w = int(Decimal(facility_it) * Decimal(repr(cluster.design_pue)))
