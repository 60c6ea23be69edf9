"""Power domains: the site's power and cooling trees, their validity, and the
allocation between racks by priority-ordered progressive filling over every constraint.

A *constraint* is the site (capacity: its budget B) or a valid domain (capacity: usableWatts), with
the racks beneath it. Every rack gets its floor first; a constraint whose floors exceed its capacity
is overcommitted and *closed*. Then, by priority level, highest first, the racks of the level rise
together; a constraint whose residual runs out at level L closes and its racks stop at L; a rack
whose room is filled stops there. A closed constraint passes nothing more, to any level.

With no domains the site is the only constraint and this is the flat rule between racks exactly (a test
compares the two on random sites). Pure: plain records in, figures written into them.

Cost: linear in racks x constraints above each, plus a sort of each level's racks; each
constraint's level is computed by one walk over its racks sorted by room that only moves forward
(its level only rises as racks beneath freeze), so a level costs O(racks x depth + closings x log).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from stargate_operator.core.capping import Oversubscription
from stargate_operator.core.objects import ClusterIn, Constraint, DomainIn, RackIn

ELECTRICAL = "Electrical"
COOLING = "Cooling"
INFINITE = float("inf")
# status.path holds at most this many names (the CRD's maxItems): the nearest ones are kept.
MAX_PATH = 64

# Ready reasons of an invalid domain, and of a rack whose power path is invalid.
CLUSTER_NOT_FOUND = "ClusterNotFound"
PARENT_NOT_FOUND = "ParentNotFound"
PARENT_MISMATCH = "ParentMismatch"
CYCLE_DETECTED = "CycleDetected"
PARENT_NOT_READY = "ParentNotReady"
POWER_PATH_INVALID = "PowerPathInvalid"
DOMAIN_PROBLEMS = frozenset({CLUSTER_NOT_FOUND, PARENT_NOT_FOUND, PARENT_MISMATCH, CYCLE_DETECTED,
                             PARENT_NOT_READY})
# Why a reference to a domain cannot be followed (reference_problem): a grid event's Ready reasons.
REF_NOT_FOUND = "PowerDomainNotFound"
REF_MISMATCH = "PowerDomainMismatch"  # of another site, or of the other type
REF_NOT_READY = "PowerDomainNotReady"  # the domain is invalid: it takes no part


# ---- validity ------------------------------------------------------------------------------

def link_domains(domains: Mapping[str, DomainIn], clusters: Mapping[str, ClusterIn]) -> None:
    """Judge every domain of a namespace (reason and message when invalid, its chain and path
    when valid) and hand each valid one to its cluster. Iterative: a long chain or a loop of any
    length costs no recursion. The verdicts do not depend on the order of `domains`."""
    for d in domains.values():
        if not d.resolved:
            _resolve(d, domains, clusters)
    for name in sorted(domains):
        d = domains[name]
        if d.problem is None:
            clusters[d.cluster_ref].domains.append(d)


def _own_problem(d: DomainIn, domains: Mapping[str, DomainIn],
                 clusters: Mapping[str, ClusterIn]) -> tuple[str, str] | None:
    """What is wrong with the domain itself, its parent aside."""
    if d.cluster_ref not in clusters:
        return CLUSTER_NOT_FOUND, f"StargateCluster {d.cluster_ref} not found in namespace {d.namespace}"
    if d.parent_ref is None:
        return None
    parent = domains.get(d.parent_ref)
    if parent is None:
        return PARENT_NOT_FOUND, f"parent PowerDomain {d.parent_ref} not found in namespace {d.namespace}"
    if parent.cluster_ref != d.cluster_ref:
        return PARENT_MISMATCH, (f"parent PowerDomain {parent.name} belongs to StargateCluster "
                                 f"{parent.cluster_ref}, not {d.cluster_ref}")
    if parent.type != d.type:
        return PARENT_MISMATCH, (f"parent PowerDomain {parent.name} is of type {parent.type}; "
                                 f"a {d.type} domain's parent must be {d.type} too")
    return None


def _resolve(start: DomainIn, domains: Mapping[str, DomainIn], clusters: Mapping[str, ClusterIn]) -> None:
    # Walk up until a domain that is judged, has a problem of its own, is at the top, or closes a
    # loop; then judge the walked domains from the top down, each by its parent.
    walked: list[DomainIn] = []
    at: dict[str, int] = {}
    d = start
    while True:
        if d.resolved:
            break
        problem = _own_problem(d, domains, clusters)
        if problem is not None or d.parent_ref is None:
            d.resolved = True
            d.problem = problem
            d.path = [d.name]
            break
        at[d.name] = len(walked)
        walked.append(d)
        parent = domains[d.parent_ref]
        if parent.name in at:
            loop = walked[at[parent.name]:]
            for i, x in enumerate(loop):
                # Its parents in order, from itself round the loop: the same wherever the walk
                # entered the loop, so the message and path do not depend on the input's order.
                up = [y.name for y in [*loop[i + 1:], *loop[:i]]]
                x.resolved = True
                x.problem = (CYCLE_DETECTED, "its chain of parents loops: "
                             + " -> ".join([x.name, *up[:MAX_PATH], x.name]))
                x.path = [*reversed(up[:MAX_PATH - 1]), x.name]  # top first, as far as it goes
            del walked[at[parent.name]:]
            break
        d = parent
    for x in reversed(walked):
        parent = domains[x.parent_ref or ""]
        x.resolved = True
        x.path = [*parent.path, x.name][-MAX_PATH:]
        if parent.problem is not None:
            x.problem = (PARENT_NOT_READY, f"parent PowerDomain {parent.name} is not ready "
                                           f"({parent.problem[0]}: {parent.problem[1]})")
        else:
            x.chain = [*parent.chain, parent]  # its ancestors only: no record refers to itself


def reference_problem(d: DomainIn | None, namespace: str, cluster_ref: str, want: str,
                      needs: str) -> tuple[str, str] | None:
    """Why the PowerDomain `d` that an object of site `cluster_ref` names cannot serve it (a rack's
    power or cooling reference, a grid event's target): (reason, what follows "PowerDomain <name>"
    in a message); None when it is of that site, of type `want` and valid. `needs` says, after a
    domain of the wrong type, what type the reference needs."""
    if d is None:
        return REF_NOT_FOUND, f"not found in namespace {namespace}"
    if d.cluster_ref != cluster_ref:
        return REF_MISMATCH, f"belongs to StargateCluster {d.cluster_ref}, not {cluster_ref}"
    if d.type != want:
        return REF_MISMATCH, f"is a {d.type} domain; {needs}"
    if d.problem is not None:
        return REF_NOT_READY, f"is not ready ({d.problem[0]}: {d.problem[1]})"
    return None


_NEEDS = {"powerDomainRef": f"powerDomainRef needs a {ELECTRICAL} one",
          "coolingDomainRef": f"coolingDomainRef needs a {COOLING} one"}


def link_rack(rack: RackIn, domains: Mapping[str, DomainIn]) -> None:
    """The rack's valid domains (power chain, then cooling chain), or why its path is invalid."""
    chain: list[DomainIn] = []
    for field, ref, want in (("powerDomainRef", rack.power_ref, ELECTRICAL),
                             ("coolingDomainRef", rack.cooling_ref, COOLING)):
        if ref is None:
            continue
        d = domains.get(ref)
        problem = reference_problem(d, rack.namespace, rack.cluster_ref, want, _NEEDS[field])
        if problem is not None:
            rack.path_problem = f"{field} {ref}: PowerDomain {ref} {problem[1]}; allocated its floor only"
            rack.chain = []
            return
        assert d is not None
        chain.extend(d.chain)
        chain.append(d)
    rack.chain = chain


# ---- allocation ----------------------------------------------------------------------------

def domain_label(d: DomainIn) -> str:
    """How messages name a domain: "FloorPDU pdu-3" (its role), else "PowerDomain pdu-3"."""
    return f"{d.role or 'PowerDomain'} {d.name}"


def _capacity(real: int, over: Oversubscription | None, capping: bool, word: str,
              oversubscribed: bool) -> tuple[int, str]:
    """A constraint's capacity for the filling: raised by its oversubscription unless it is capping
   , or the real one."""
    if over is None or not oversubscribed:
        return real, word
    raised = over.allocatable(real, capping)
    return raised, word if raised == real else "allocatable"


def _ramped(capacity: int, word: str, ramp_cap: int | None) -> tuple[int, str]:
    """The capacity under a ramp's envelope (ramps.py), when one bounds it now. Capping and the
    other protections act on the capacity without it, at once; the envelope only slows moves."""
    if ramp_cap is None or ramp_cap >= capacity:
        return capacity, word
    return ramp_cap, "ramped"


def allocate_tree(cluster: ClusterIn, oversubscribed: bool = True) -> int:
    """Rack budgets of one site over the site and its valid domains; returns the racks' floors.

    Sets every rack's budget_w and limited_by, every valid domain's figures beneath it. With
    `oversubscribed` false, every constraint counts at its real capacity (the safe allocation)."""
    capacity, word = _capacity(cluster.budget_w, cluster.over, cluster.capping_now, "budget", oversubscribed)
    capacity, word = _ramped(capacity, word, cluster.ramp_cap_w)
    site = Constraint(cluster.name, f"StargateCluster {cluster.name}", word, capacity, 0)
    for d in cluster.domains:
        capacity, word = _capacity(d.usable_w, d.over, d.capping_now, "usable", oversubscribed)
        capacity, word = _ramped(capacity, word, d.ramp_cap_w)
        d.constraint = Constraint(d.name, domain_label(d), word, capacity, len(d.chain) + 1)
    racks = cluster.racks
    floors = 0
    for r in racks:
        floors += r.floor_w
        r.budget_w = r.floor_w
        r.limited_by = None
        cs = [site]
        for d in r.chain:
            assert d.constraint is not None
            cs.append(d.constraint)
        r.constraints = cs
        for c in cs:
            c.racks.append(r)
            c.floors += r.floor_w
    constraints = [site]
    for d in cluster.domains:
        if d.constraint is not None:
            constraints.append(d.constraint)
    for d in cluster.domains:
        rise, mine = d.online_rise_w, d.constraint
        if rise is not None and mine is not None and mine.floors + rise < mine.capacity:
            # brought online: from the floors beneath, at its up rate (ramps.bring_online)
            mine.capacity, mine.capacity_word = mine.floors + int(rise), "ramped"
    for c in constraints:
        if c.floors > c.capacity:
            c.overcommitted = c.closed = True
            c.closed_at = 0
    progressive_fill(racks, constraints)
    for d in cluster.domains:
        mine = d.constraint
        if mine is None:
            continue
        d.racks = len(mine.racks)
        d.floor_w = mine.floors
        demand = allocated = measured = 0
        for r in mine.racks:
            demand += r.demand_w
            allocated += r.budget_w
            measured += r.measured_w
        if d.meter_query is not None and d.meter_w is not None:
            measured = d.meter_w  # a meter reads the domain itself (its losses and unmanaged loads too)
        d.demand_w, d.allocated_w, d.measured_w = demand, allocated, measured
    for c in constraints:  # racks and constraints point at each other: no cycles left behind
        c.racks = []
        c.level_racks = []
    return floors


def progressive_fill(racks: list[RackIn], constraints: Iterable[Constraint]) -> None:
    """The progressive filling over the tree: racks already hold their floors (budget_w) and their
    constraints."""
    levels: dict[int, list[RackIn]] = {}
    for r in racks:
        room = r.demand_w - r.floor_w
        r.room_w = room if room > 0 and not r.path_problem else 0
        levels.setdefault(r.priority, []).append(r)
    closings = 1
    for priority in sorted(levels, reverse=True):
        closings = _fill_level(levels[priority], closings)
    for r in racks:
        if r.budget_w < r.demand_w and r.limited_by is None and not r.path_problem:
            # Held back by a constraint closed before its level was reached.
            r.limited_by = min((c for c in r.constraints if c.closed), key=_closing_order, default=None)
        r.positions = []


def _closing_order(c: Constraint) -> tuple[int, int, int, str]:
    # Earliest closed first; at the same instant the domain nearest the rack, the site last.
    return (c.closed_at, c.depth == 0, -c.depth, c.name)


def _fill_level(level: list[RackIn], closings: int) -> int:
    active = [r for r in level if r.room_w > 0 and not any(c.closed for c in r.constraints)]
    if not active:
        return closings
    active.sort(key=lambda r: r.room_w)
    touched: list[Constraint] = []
    for r in active:
        r.frozen = False
        positions = []
        for c in r.constraints:
            if not c.level_racks:
                touched.append(c)
            positions.append(len(c.level_racks))
            c.level_racks.append(r)
        r.positions = positions
    heap: list[tuple[float, int, int, Constraint]] = []
    for i, c in enumerate(touched):
        c.walked = 0
        c.left = c.capacity - c.floors - c.granted
        c.open_racks = len(c.level_racks)
        heapq.heappush(heap, (_walk(c), i, c.version, c))
    index = {id(c): i for i, c in enumerate(touched)}
    while heap and heap[0][0] != INFINITE:
        level_l, _, version, c = heapq.heappop(heap)
        if version != c.version or c.closed:
            continue
        closing = [c]
        while heap and heap[0][0] == level_l:
            _, _, v2, c2 = heapq.heappop(heap)
            if v2 == c2.version and not c2.closed:
                closing.append(c2)
        closing.sort(key=_closing_order)
        dirty: dict[int, Constraint] = {}
        cap = int(level_l)
        for c in closing:
            c.closed = True
            c.closed_at = closings
            for r in c.level_racks:
                if r.frozen:
                    continue
                share = r.room_w if r.room_w < cap else cap
                if share < r.room_w:
                    r.limited_by = c
                _freeze(r, share, dirty)
        closings += 1
        for c2 in dirty.values():
            if not c2.closed:
                c2.version += 1
                heapq.heappush(heap, (_walk(c2), index[id(c2)], c2.version, c2))
    for r in active:
        if not r.frozen:
            r.budget_w += r.room_w  # filled: its room fit under every constraint above it
            for c in r.constraints:
                c.granted += r.room_w
    for c in touched:
        c.level_racks = []
    return closings


def _freeze(r: RackIn, share: int, dirty: dict[int, Constraint]) -> None:
    """The rack stops at `share` beyond its floor; every constraint above it learns so."""
    r.frozen = True
    r.budget_w += share
    for c, pos in zip(r.constraints, r.positions, strict=True):
        c.granted += share
        if pos < c.walked:
            c.left += r.room_w - share  # the walk had counted its whole room
        else:
            c.left -= share
            c.open_racks -= 1
        dirty[id(c)] = c


def _walk(c: Constraint) -> float:
    """The max-min level over the constraint's unfrozen racks of this level: the highest integer L
    with sum(min(room, L)) <= residual, or infinity when every room fits. Resumes where it
    stopped: freezing racks beneath only ever raises the level."""
    racks = c.level_racks
    j, left, k = c.walked, c.left, c.open_racks
    n = len(racks)
    while j < n:
        r = racks[j]
        if r.frozen:
            j += 1
            continue
        room = r.room_w
        if room * k <= left:
            left -= room
            k -= 1
            j += 1
        else:
            c.walked, c.left, c.open_racks = j, left, k
            return left // k
    c.walked, c.left, c.open_racks = j, left, k
    return INFINITE
