"""The parsed form of each kind: slotted records read once from the wire form.

Each record holds what the spec and the existing status say (read defensively, see wire.py) and
the figures the core computes for it, filled in by capacity.py, power.py's callers and memory.py.
Plain slotted classes rather than pydantic: a 100,000-node site is parsed on every recomputation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from stargate_operator.core.capping import (
    CappingState,
    Oversubscription,
    parse_capping,
    parse_oversubscription,
)
from stargate_operator.core.conditions import OldConditions, index_conditions
from stargate_operator.core.ramps import NO_RAMP, Rates
from stargate_operator.core.wire import int_or, int_or_none, mapping, parse_epoch
from stargate_operator.kinds import (
    DEFAULT_BASE_POWER_WATTS,
    DEFAULT_CLAIM_PRIORITY,
    DEFAULT_CURTAILMENT_REASON,
    DEFAULT_DERATE_PERCENT,
    DEFAULT_DESIGN_PUE,
    DEFAULT_DOMAIN_TYPE,
    DEFAULT_HOST_MEMORY_BYTES,
    DEFAULT_PHASES,
    DEFAULT_POWER_FACTOR,
    DEFAULT_RACK_PRIORITY,
    DEFAULT_RESERVE_PERCENT,
    DEFAULT_SHARE_PERCENT,
    OBSERVE,
)

if TYPE_CHECKING:
    from stargate_operator.core.outage import Verdict

# Sorts after every real creation time: an object without one (a manifest fed to `plan`) is
# taken to be the newest, which is what it is next to objects that already carry a status.
NO_TIME = float("inf")


@dataclass(slots=True, eq=False)
class ClusterIn:
    name: str
    namespace: str
    generation: int | None
    status: Mapping[str, Any]
    old: OldConditions
    it_capacity_w: int
    reserve_percent: int
    curtailment_percent: int
    curtailment_reason: str
    curtailment_until: float | None  # epoch seconds; None: no end given (or unreadable)
    design_pue: float
    grid_intensity: float | None
    over: Oversubscription | None = None  # spec.power.oversubscription
    capping_was: CappingState | None = None  # status.power.capping as the last plan left it
    # computed by oversubscription.py: the capping state the allocation runs with, and the new one
    capping_now: bool = False
    capping: CappingState | None = None
    capping_event: str | None = None  # CappingStarted / CappingEnded, when it turned now
    draw_w: int = 0
    allocatable_w: int = 0
    capping_next: float | None = None  # when a running hold of the site or a domain of it ends
    rates: Rates = NO_RAMP  # spec.power.ramp*WattsPerSecond
    ramp_cap_w: int | None = None  # the ramps' envelope on the budget now (ramps.py), when one bounds it
    # status.power.curtailment: (percent, since, liftedAt), the curtailment's ramp times
    curtail_held: tuple[int, float, float | None] | None = None
    curtail_out: dict[str, Any] | None = None  # status.power.curtailment as this plan writes it
    ramp_next: float | None = None  # when the curtailment's ramp next changes by time alone
    # The instant every envelope is read at (None: the planning instant): sliceramp.py plans the
    # two ends of a ramp's piece with everything else as it is now.
    envelope_at: float | None = None
    # The pieces a ramp in the PowerLimitSlices runs along (sliceramp.py): where the plan of the site
    # (or of a domain beneath it) may move by time alone, as (from, to) windows, and the instants
    # where an envelope turns upward or steps (no straight piece spans those).
    ramp_windows: list[tuple[float, float]] = field(default_factory=list)
    ramp_kinks: list[float] = field(default_factory=list)
    # computed
    racks: list[RackIn] = field(default_factory=list)
    domains: list[DomainIn] = field(default_factory=list)  # its valid power and cooling domains
    curtailment_active: bool = False
    # grid events (gridevents.py): the lowest target of the active ones on the site, their names
    grid_cap_w: int | None = None
    grid_events: list[str] = field(default_factory=list)
    grid_note: str = ""  # what the site's Ready message says about them
    budget_w: int = 0
    floor_w: int = 0
    demand_w: int = 0
    allocated_w: int = 0
    measured_w: int = 0
    facility_w: int = 0
    node_count: int = 0
    gpus_total: int = 0
    gpus_healthy: int = 0
    hbm_bytes: int = 0
    host_bytes: int = 0
    limits_confirmed: int = 0  # nodes whose agent reports their limit enforced (counts.py)
    telemetry: Verdict | None = None  # of its namespace's telemetry source (outage.py)
    observe: bool = False  # spec.power.enforcement Observe: shadow mode, the agents apply no limit
    over_nodes: int = 0  # in shadow mode: nodes measured above their allocation ...
    over_w: int = 0  # ... and by how much in all


@dataclass(slots=True, eq=False)
class RackIn:
    name: str
    namespace: str
    generation: int | None
    status: Mapping[str, Any]
    old: OldConditions
    cluster_ref: str
    max_power_w: int
    priority: int
    power_ref: str | None = None  # spec.powerDomainRef
    cooling_ref: str | None = None  # spec.coolingDomainRef
    # computed
    powered: bool = False  # its cluster exists (no reference back to it: no cycles to collect)
    dirty: bool = False  # a node of it is new or changed since the last call (with a cache)
    nodes: list[NodeIn] = field(default_factory=list)
    floor_w: int = 0
    demand_sum_w: int = 0
    demand_w: int = 0
    budget_w: int = 0
    safe_budget_w: int = -1  # its budget with no oversubscription anywhere; -1: the same as budget_w
    measured_w: int = 0
    gpus_total: int = 0
    gpus_healthy: int = 0
    hbm_bytes: int = 0
    host_bytes: int = 0
    facility_it_w: int = 0  # IT power for the facility figure: measured, else allocated, per node
    limits_confirmed: int = 0  # nodes whose agent reports their limit enforced (counts.py)
    power_limits: dict[str, int] = field(default_factory=dict)  # node name -> per-GPU limit
    safe_limits: dict[str, int] = field(default_factory=dict)  # node name -> its safeLimitWatts
    observe: bool = False  # its site is in shadow mode
    over_nodes: int = 0  # in shadow mode: its nodes measured above their allocation ...
    over_w: int = 0  # ... and by how much in all
    # power domains (domains.py): the valid domains above it, its site first among its constraints
    chain: list[DomainIn] = field(default_factory=list)
    path_problem: str = ""  # why its power path is invalid (then it gets its floor only)
    constraints: list[Constraint] = field(default_factory=list)
    limited_by: Constraint | None = None  # when budget < demand: what closed on it first
    room_w: int = 0  # per priority level of the progressive filling
    frozen: bool = False
    positions: list[int] = field(default_factory=list)  # its index in each constraint's level list


@dataclass(slots=True, eq=False)
class DomainIn:
    """A PowerDomain: one node of the site's power or cooling tree."""

    name: str
    namespace: str
    generation: int | None
    status: Mapping[str, Any]
    old: OldConditions
    cluster_ref: str
    parent_ref: str | None
    type: str  # Electrical | Cooling
    role: str
    rating_w: int
    usable_w: int
    over: Oversubscription | None = None  # spec.oversubscription
    capping_was: CappingState | None = None  # status.capping as the last plan left it
    rates: Rates = NO_RAMP  # spec.ramp*WattsPerSecond
    meter_query: str | None = None  # spec.meter.query
    meter_w: int | None = None  # its reading, laid over status.meter by the engine; None: none fresh
    ramp_cap_w: int | None = None  # the ramps' envelope on usableWatts now, when one bounds it
    online_rise_w: float | None = None  # brought online lately: how far above its floors it may be now
    # computed (domains.py)
    resolved: bool = False
    problem: tuple[str, str] | None = None  # (reason, message) when invalid
    chain: list[DomainIn] = field(default_factory=list)  # valid: the domains above it, top first
    path: list[str] = field(default_factory=list)  # names, top first (as far as they go when invalid)
    constraint: Constraint | None = None  # valid and its cluster exists: its place in the allocation
    racks: int = 0
    floor_w: int = 0
    demand_w: int = 0
    allocated_w: int = 0
    measured_w: int = 0
    # oversubscription (oversubscription.py), as on ClusterIn
    capping_now: bool = False
    capping: CappingState | None = None
    capping_event: str | None = None
    draw_w: int = 0
    allocatable_w: int = 0


@dataclass(slots=True, eq=False)
class Constraint:
    """The site or a valid domain as the progressive filling sees it."""

    name: str
    label: str  # "StargateCluster abilene", "FloorPDU pdu-3": how messages name it
    capacity_word: str  # "budget" for the site, "usable" for a domain
    capacity: int
    depth: int  # 0: the site; a domain: 1 + its depth in its tree
    racks: list[RackIn] = field(default_factory=list)  # emptied once allocated (no cycles)
    floors: int = 0
    granted: int = 0  # watts beyond floors granted beneath, every level so far
    closed: bool = False
    closed_at: int = -1  # 0: overcommitted; then the order in which constraints closed
    overcommitted: bool = False
    # one priority level's working state: its racks sorted by room, the walk of the max-min level
    level_racks: list[RackIn] = field(default_factory=list)
    walked: int = 0  # racks of level_racks already filled (or frozen) by the walk
    left: int = 0  # residual minus what the walk filled and what was frozen
    open_racks: int = 0  # racks of the level at or after `walked` not frozen yet
    version: int = 0


@dataclass(slots=True, eq=False)
class NodeIn:
    name: str
    namespace: str
    generation: int | None
    status: Mapping[str, Any]
    old: OldConditions
    rack_ref: str
    count: int
    memory_bytes: int
    min_w: int
    max_w: int
    requested_w: int | None
    base_w: int
    host_bytes: int
    maintenance: bool  # spec.maintenance, or its Node cordoned (spec.cordoned, set by discovery)
    telemetry: Mapping[str, Any]
    node_ready: bool  # spec.nodeReady is not false (discovery's view of the Node's Ready condition)
    # computed
    rack_found: bool = False
    rack_cluster_ref: str = ""
    floor_w: int = 0
    demand_w: int = 0
    healthy: int = 0
    measured_w: int | None = None  # fresh telemetry's powerWatts only
    stale: bool = False
    stale_reason: str = ""  # NoTelemetry, Fresh, ClockSkew, Stale, MissingTimestamp, InvalidTimestamp
    enforced_w: int | None = None  # telemetry.enforcedLimitWatts: what the agent says the GPUs enforce
    observe: bool = False  # its site is in shadow mode: its agent applies no limit
    allocated_w: int = 0
    limit_w: int = 0
    safe_limit_w: int = 0  # its limit with no oversubscription anywhere (at most limit_w)
    powered: bool = False
    # kept between recomputations by a PlanCache (cache.py)
    version: str = ""  # metadata.resourceVersion this record was parsed from
    assessed_at: float = 0.0  # the health verdict holds from this instant ...
    valid_until: float = 0.0  # ... until this one (infinity: until the object changes)
    assessed_with: float = -1.0  # ... for this stale threshold
    hit: bool = False  # reused from the cache as it was, verdict included
    out_key: tuple[Any, ...] | None = None  # what the last status was built from
    out_status: dict[str, Any] | None = None  # ... and that status, when time played no part in it


@dataclass(slots=True, eq=False)
class PoolIn:
    name: str
    namespace: str
    generation: int | None
    status: Mapping[str, Any]
    old: OldConditions
    cluster_ref: str
    tier: str
    rack_ref: str | None
    capacity_fixed: int | None
    share_percent: int
    # computed
    problem: tuple[str, str] | None = None  # (reason, message) when the pool cannot hold memory
    capacity: int = 0
    allocated: int = 0
    bound: int = 0
    pending: int = 0
    smallest_pending: int = 0
    claims: list[ClaimIn] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class ClaimIn:
    name: str
    namespace: str
    generation: int | None
    status: Mapping[str, Any]
    old: OldConditions
    pool_ref: str
    size: int
    priority: int
    created: float  # epoch seconds, NO_TIME when unknown
    was_bound: bool
    bound_at: Any  # kept verbatim from the input when the claim stays bound
    # computed
    bound: bool = False
    evicted: bool = False  # evicted by this recomputation
    pool_found: bool = False
    pool_problem: tuple[str, str] | None = None


ObjectHeader = tuple[str, str, int | None, Mapping[str, Any], OldConditions]


def object_header(obj: Mapping[str, Any]) -> ObjectHeader:
    """What every record starts with: name, namespace, generation, status and its conditions by
    type, read defensively (the one reader of them but parse_node's fast path)."""
    meta = mapping(obj.get("metadata"))
    status = mapping(obj.get("status"))
    return (
        str(meta.get("name", "")),
        str(meta.get("namespace") or "default"),
        int_or_none(meta.get("generation")),
        status,
        index_conditions(status),
    )


def parse_cluster(obj: Mapping[str, Any]) -> ClusterIn:
    name, ns, gen, status, old = object_header(obj)
    spec = mapping(obj.get("spec"))
    power = mapping(spec.get("power"))
    curtail = mapping(power.get("curtailment"))
    site = mapping(spec.get("site"))
    carbon = mapping(spec.get("carbon"))
    pue = site.get("designPUE", DEFAULT_DESIGN_PUE)
    intensity = carbon.get("gridIntensityGramsPerKWh")
    return ClusterIn(
        name, ns, gen, status, old,
        it_capacity_w=int_or(power.get("itCapacityWatts"), 0),
        reserve_percent=int_or(power.get("reservePercent"), DEFAULT_RESERVE_PERCENT),
        curtailment_percent=int_or(curtail.get("percent"), 0),
        curtailment_reason=str(curtail.get("reason") or DEFAULT_CURTAILMENT_REASON),
        curtailment_until=parse_epoch(curtail.get("until")),
        design_pue=(
            float(pue) if isinstance(pue, int | float) and not isinstance(pue, bool) else DEFAULT_DESIGN_PUE
        ),
        grid_intensity=(
            float(intensity)
            if isinstance(intensity, int | float) and not isinstance(intensity, bool)
            else None
        ),
        over=parse_oversubscription(power.get("oversubscription")),
        capping_was=parse_capping(mapping(status.get("power")).get("capping")),
        observe=power.get("enforcement") == OBSERVE,
        rates=parse_rates(power),
        curtail_held=_curtailment_held(mapping(status.get("power")).get("curtailment")),
    )


def _curtailment_held(value: object) -> tuple[int, float, float | None] | None:
    held = mapping(value)
    percent, since = int_or_none(held.get("percent")), parse_epoch(held.get("since"))
    if percent is None or since is None:
        return None
    return percent, since, parse_epoch(held.get("liftedAt"))


def parse_rack(obj: Mapping[str, Any]) -> RackIn:
    name, ns, gen, status, old = object_header(obj)
    spec = mapping(obj.get("spec"))
    return RackIn(
        name, ns, gen, status, old,
        cluster_ref=str(spec.get("clusterRef", "")),
        max_power_w=int_or(spec.get("maxPowerWatts"), 0),
        priority=int_or(spec.get("priority"), DEFAULT_RACK_PRIORITY),
        power_ref=name_or_none(spec.get("powerDomainRef")),
        cooling_ref=name_or_none(spec.get("coolingDomainRef")),
    )


def name_or_none(value: object) -> str | None:
    """A reference field (spec.powerDomainRef and the like): a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def parse_domain(obj: Mapping[str, Any]) -> DomainIn:
    name, ns, gen, status, old = object_header(obj)
    spec = mapping(obj.get("spec"))
    rating = domain_rating(spec.get("ratingWatts"), spec.get("electrical"))
    derate = min(max(int_or(spec.get("deratePercent"), DEFAULT_DERATE_PERCENT), 0), 100)
    kind = spec.get("type")
    return DomainIn(
        name, ns, gen, status, old,
        cluster_ref=str(spec.get("clusterRef", "")),
        parent_ref=name_or_none(spec.get("parentRef")),
        type=kind if isinstance(kind, str) and kind else DEFAULT_DOMAIN_TYPE,
        role=str(spec.get("role") or ""),
        rating_w=rating,
        usable_w=rating * derate // 100,
        over=parse_oversubscription(spec.get("oversubscription")),
        capping_was=parse_capping(status.get("capping")),
        rates=parse_rates(spec),
        meter_query=_query(spec.get("meter")),
        meter_w=int_or_none(mapping(status.get("meter")).get("watts")),
    )


def parse_rates(spec: Mapping[str, Any]) -> Rates:
    """rampDownWattsPerSecond and rampUpWattsPerSecond; absent, zero or unreadable: no limit."""
    return Rates(_rate(spec.get("rampDownWattsPerSecond")), _rate(spec.get("rampUpWattsPerSecond")))


def _rate(value: object) -> float | None:
    rate = int_or_none(value)
    return float(rate) if rate is not None and rate > 0 else None


def _query(meter: object) -> str | None:
    query = mapping(meter).get("query")
    return query if isinstance(query, str) and query else None


_SQRT3 = Decimal(3).sqrt()


def domain_rating(rating_watts: object, electrical: object) -> int:
    """ratingWatts, or from `electrical` by NetBox's formula: floor(V x A x PF) for one phase,
    floor(V x A x sqrt(3) x PF) for three. Decimal of the shortest repr, so that 0.95 is 0.95 and
    a product that is a whole number in the manifest's figures is not rounded down below it."""
    watts = int_or_none(rating_watts)
    if watts is not None:
        return max(watts, 0)
    e = mapping(electrical)
    volts, amps = int_or(e.get("voltage"), 0), int_or(e.get("amperage"), 0)
    pf = e.get("powerFactor", DEFAULT_POWER_FACTOR)
    if not isinstance(pf, int | float) or isinstance(pf, bool):
        pf = DEFAULT_POWER_FACTOR
    factor = Decimal(repr(min(max(float(pf), 0.0), 1.0)))
    phases = _SQRT3 if int_or(e.get("phases"), DEFAULT_PHASES) != 1 else Decimal(1)
    return max(int(Decimal(volts) * Decimal(amps) * phases * factor), 0)


def in_maintenance(spec: Mapping[str, Any]) -> bool:
    """The node counts as in maintenance: the user's spec.maintenance, or its Kubernetes Node is
    cordoned (spec.cordoned, which node discovery keeps; core/discovery.py)."""
    return spec.get("maintenance") is True or spec.get("cordoned") is True


def parse_node(obj: Mapping[str, Any]) -> NodeIn:
    """The hot path: one call per GPU node per recomputation. Integers that already are integers
    (always, from the API server) skip the defensive readers; positional construction is cheaper."""
    meta = obj.get("metadata") or _NO_STATUS
    status = obj.get("status") or _NO_STATUS
    spec = obj.get("spec") or _NO_STATUS
    gpu = spec.get("gpu") or _NO_STATUS
    gen = meta.get("generation")
    count = gpu.get("count", 0)
    mem = gpu.get("memoryBytes", 0)
    min_w = gpu.get("minPowerWatts", 0)
    max_w = gpu.get("maxPowerWatts", 0)
    req = gpu.get("requestedPowerWatts")
    base = spec.get("basePowerWatts", DEFAULT_BASE_POWER_WATTS)
    host = spec.get("hostMemoryBytes", DEFAULT_HOST_MEMORY_BYTES)
    tel = status.get("telemetry")
    return NodeIn(
        str(meta.get("name", "")),
        meta.get("namespace") or "default",
        gen if gen is None or type(gen) is int else int_or_none(gen),
        status,
        index_conditions(status) if "conditions" in status else {},
        str(spec.get("rackRef", "")),
        count if type(count) is int else int_or(count, 0),
        mem if type(mem) is int else int_or(mem, 0),
        min_w if type(min_w) is int else int_or(min_w, 0),
        max_w if type(max_w) is int else int_or(max_w, 0),
        req if req is None or type(req) is int else int_or_none(req),
        base if type(base) is int else int_or(base, 0),
        host if type(host) is int else int_or(host, 0),
        in_maintenance(spec),
        tel if type(tel) is dict else mapping(tel),
        spec.get("nodeReady") is not False,
    )


def parse_pool(obj: Mapping[str, Any]) -> PoolIn:
    name, ns, gen, status, old = object_header(obj)
    spec = mapping(obj.get("spec"))
    rack_ref = spec.get("rackRef")
    return PoolIn(
        name, ns, gen, status, old,
        cluster_ref=str(spec.get("clusterRef", "")),
        tier=str(spec.get("tier", "")),
        rack_ref=str(rack_ref) if rack_ref else None,
        capacity_fixed=int_or_none(spec.get("capacityBytes")),
        share_percent=min(max(int_or(spec.get("sharePercent"), DEFAULT_SHARE_PERCENT), 0), 100),
    )


def parse_claim(obj: Mapping[str, Any]) -> ClaimIn:
    name, ns, gen, status, old = object_header(obj)
    spec = mapping(obj.get("spec"))
    created = parse_epoch(mapping(obj.get("metadata")).get("creationTimestamp"))
    return ClaimIn(
        name, ns, gen, status, old,
        pool_ref=str(spec.get("poolRef", "")),
        size=max(int_or(spec.get("sizeBytes"), 0), 0),
        priority=int_or(spec.get("priority"), DEFAULT_CLAIM_PRIORITY),
        created=NO_TIME if created is None else created,
        was_bound=status.get("phase") == "Bound",
        bound_at=status.get("boundAt"),
    )


_NO_STATUS: Mapping[str, Any] = {}
