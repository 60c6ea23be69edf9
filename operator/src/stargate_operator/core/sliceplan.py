"""Limits in PowerLimitSlices: the core's plan of a namespace, plus the slices that carry its limits.

`stage_campus` runs the core's first step (`allocate_namespace`: every node's limit) and then, per
namespace, before a single status is built:
- packs the racks into slices (slices.py) in the order of the power tree, the previous assignment
  read from the slices held;
- stages the change from the limits the slices hold to the nodes' new `powerLimitWatts`, lower
  before raise (staging.py), the constraints above a node being its site, every power and cooling
  domain on its rack's path and its rack itself;
- writes each slice whole (its spec as an apply, which the engine sends as an update of a slice it
  holds; a `revision` that grows with every change), empties the slices left without racks,
  counts confirmed nodes in each slice's status;
and on `finish()`, the core's statuses with each node's slice named in its GPUNode status
(`powerLimitSlice`). `plan_campus` is the two at once.

A node is confirmed when its agent's fresh report shows an enforced limit at or below the highest
limit assigned to it within the confirmation grace period (so a node being lowered, or ramping, does
not read as a failure while it follows). Pure; what must outlive one call (lowerings pending, when
raises started waiting, recent limits) lives in the `CampusCache` the caller passes back.

The same cache holds what the pass read last time, so that a recomputation reads again only what
changed: per node its rack, GPU count and report (kept while the node's spec version, its uid and
generation, and its report are the same, so the operator's own status writes do not void it), per
rack its place in the power tree and the constraints above it (kept while its references and the
domains' parents are), per slice its limits (kept while its spec version is). The result is the
same with or without them (`CampusCache.forget`; a property test compares the two over random
sequences of changes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stargate_operator import kinds
from stargate_operator.core.cache import PlanCache
from stargate_operator.core.site import Allocated, allocate_namespace, plan_namespace
from stargate_operator.core.sliceramp import (
    Held,
    PieceLimits,
    failsafe_exit_rates,
    held_entries,
    inward,
    ramp_starts,
)
from stargate_operator.core.slices import pack
from stargate_operator.core.staging import stage
from stargate_operator.core.types import CoreSettings, ObjectKey, Plan, PlanEvent
from stargate_operator.core.wire import as_utc, from_epoch, parse_epoch

SLICE = kinds.POWER_LIMIT_SLICE.kind
NODE = kinds.GPU_NODE.kind
# An enforced limit that no report can be at or below: a stale report proves nothing.
_UNKNOWN = 1 << 40
_MAX_DEPTH = 64  # a loop of parentRefs is the core's problem to report; here it only stops the walk


@dataclass(frozen=True, slots=True)
class SliceSettings:
    slice_size: int = kinds.DEFAULT_SLICE_SIZE
    raise_after_seconds: float = kinds.DEFAULT_RAISE_AFTER_SECONDS
    confirm_grace_seconds: float = kinds.DEFAULT_CONFIRM_GRACE_SECONDS


@dataclass(frozen=True, slots=True)
class CampusSettings:
    core: CoreSettings = field(default_factory=CoreSettings)
    slices: SliceSettings = field(default_factory=SliceSettings)


@dataclass(slots=True)
class _NodeMemo:
    """What the slice pass reads of one GPUNode object, kept while the object is the same."""

    version: Any  # its spec's version (_spec_version): what was read of the spec holds while it does
    meta: Any  # the metadata it was last matched with: the same dict again is the same version
    # The telemetry it was read from, and its raw figures: an engine may lay telemetry over the
    # object without a new resourceVersion (the same report then is another dict, equal).
    telemetry: Any
    observed: Any
    enforced: Any
    rack: str
    gpus: int
    reported: bool  # a telemetry report, fresh or not
    seen: float | None  # when it was observed; None: unreadable
    value: int | None  # the enforced limit it reported


@dataclass(slots=True)
class _RackMemo:
    """A rack's place in the power tree and the constraints above it, kept while the references it
    was read from and the domains' parents are the same."""

    refs: tuple[Any, ...] | None  # clusterRef, powerDomainRef, coolingDomainRef; None: no such rack
    order: tuple[str, tuple[str, ...], str]
    above: tuple[str, ...]


@dataclass(slots=True)
class _SliceMemo:
    """A held slice's limits as read (integers only), kept while its spec's version is the same."""

    version: Any
    limits: dict[str, int]
    names: Mapping[str, Any]  # every node it names, whatever its value
    spec: Mapping[str, Any]
    ramped: dict[str, Held]  # those of its entries on a ramp
    # Every entry as its agents read it (sliceramp.py): read when a ramp needs them, since without
    # one a curtailment would build a record for each of a campus's 100,000 entries for nothing.
    entries: dict[str, Held] | None = None

    def held(self) -> dict[str, Held]:
        if self.entries is None:
            self.entries = held_entries(self.spec)
        return self.entries


@dataclass(slots=True)
class _Memos:
    """What one pass hands the next to skip reading again what did not change. Results are the same
    with and without it (a property test says so): it only saves work."""

    nodes: dict[str, _NodeMemo] = field(default_factory=dict)
    racks: dict[str, _RackMemo] = field(default_factory=dict)
    slices: dict[str, _SliceMemo] = field(default_factory=dict)
    parents: dict[str, str | None] = field(default_factory=dict)
    stale_after: float | None = None


@dataclass(slots=True)
class _SpaceState:
    pending: dict[str, int] = field(default_factory=dict)
    waiting_since: float | None = None
    # Node -> (the highest limit assigned to it lately, until when that counts).
    recent: dict[str, tuple[int, float]] = field(default_factory=dict)
    # Node -> when its slice's entry last changed (within the grace period).
    changed_at: dict[str, float] = field(default_factory=dict)
    memos: _Memos = field(default_factory=_Memos)


@dataclass(slots=True)
class CampusCache:
    plan: PlanCache = field(default_factory=PlanCache)
    spaces: dict[str, _SpaceState] = field(default_factory=dict)
    # The plans of a ramp's two ends (sliceramp.py), each with its own cache.
    ends: tuple[PlanCache, PlanCache] = field(default_factory=lambda: (PlanCache(), PlanCache()))

    def forget(self) -> None:
        """Drop every memo (the core's and the slice pass's) but keep the state of changes under
        way (pending lowerings, recent limits): the next call computes everything afresh, with the
        same result as with the memos."""
        self.plan = PlanCache()
        self.ends = (PlanCache(), PlanCache())
        for state in self.spaces.values():
            state.memos = _Memos()


def plan_campus(objects: Iterable[Mapping[str, Any]], now: datetime, settings: CampusSettings,
                cache: CampusCache | None = None) -> Plan:
    """plan_namespace's plan with the PowerLimitSlices that carry its limits (see the module):
    `stage_campus(...).finish()`."""
    return stage_campus(objects, now, settings, cache).finish()


@dataclass(slots=True)
class StagedCampus:
    """A campus plan in two steps. `applies`: the slices' applies, known once the core has allocated
    and before it builds a single status; `finish()`: the whole plan (those applies included), from
    the same records, once. A caller sends the applies first: they are what the agents act on."""

    applies: list[dict[str, Any]]
    core: Allocated
    spaces: list[_SliceOutcome]

    def finish(self) -> Plan:
        plan = self.core.finish()
        for out in self.spaces:
            _finish_space(out, plan)
        self.spaces = []
        return plan


def stage_campus(objects: Iterable[Mapping[str, Any]], now: datetime, settings: CampusSettings,
                 cache: CampusCache | None = None) -> StagedCampus:
    """The slices' applies of plan_campus before any status is built, and the rest on `finish()`."""
    objects = list(objects)
    core = allocate_namespace(objects, now, settings.core, cache.plan if cache is not None else None)
    plan = core.plan
    spaces = cache.spaces if cache is not None else {}
    by_ns: dict[str, list[Mapping[str, Any]]] = {}
    for obj in objects:
        meta = obj.get("metadata")
        if meta is None:
            continue  # a caller's record, not an API object (a telemetry source's state: outage.py)
        by_ns.setdefault(meta.get("namespace") or "default", []).append(obj)
    epoch = as_utc(now).timestamp()
    records = [obj for obj in objects if obj.get("metadata") is None]
    applies: list[dict[str, Any]] = []
    outcomes: list[_SliceOutcome] = []
    for ns, objs in by_ns.items():
        state = spaces.setdefault(ns, _SpaceState())
        limits, safes = core.limits.get(ns, {}), core.safe_limits.get(ns, {})
        piece, ahead = plan.ramp_pieces.get(ns), plan.ramp_next.get(ns)
        ends = _piece_limits(ns, [*objs, *records], now, piece, settings, cache) if piece else None
        if ahead is not None and (ends is None or not ends.moves()):
            # Nothing moves until the next kink, a few seconds away: its piece is written now if the
            # plan holds still until it starts (no step there), so that it is in place in time.
            later = _piece_limits(ns, [*objs, *records], now, ahead, settings, cache)
            if later is not None and later.moves() and all(
                    limits.get(n) == w for n, w in later.start.items()):
                ends = later
        if ends is not None and ends.moves():
            # While a piece moves, the statuses of its racks and nodes say where it goes (the
            # slices' limits), as its slices do: written once per piece, not once a second. The
            # safe limits at its end are the pass's own (PieceLimits.end_safe).
            limits = {**limits, **ends.end}
        out = _plan_space(ns, objs, limits, safes, epoch, settings, state, ends)
        applies.extend(out.applies)
        outcomes.append(out)
    return StagedCampus(applies, core, outcomes)


def _piece_limits(ns: str, objs: list[Mapping[str, Any]], now: datetime, piece: tuple[float, float],
                  settings: CampusSettings, cache: CampusCache | None) -> PieceLimits | None:
    """The plans at the two ends of the ramp's piece holding `now`, everything but the envelopes
    judged now (sliceramp.py)."""
    instants = inward(*piece)
    if instants is None:
        return None
    found: list[tuple[dict[str, int], dict[str, int]]] = []
    statuses: dict[ObjectKey, dict[str, Any]] = {}
    for i, at in enumerate(instants):
        epoch = parse_epoch(at)
        assert epoch is not None
        end = plan_namespace(objs, now, settings.core, cache.ends[i] if cache is not None else None,
                             envelope_at=epoch)
        limits: dict[str, int] = {}
        safes: dict[str, int] = {}
        for (kind, space, name), st in end.statuses.items():
            if kind == kinds.RACK.kind and space == ns:
                statuses[kind, space, name] = st
            if kind != NODE or space != ns:
                continue
            statuses[kind, space, name] = st  # the end's: kept while the piece moves
            limit, safe = st.get("powerLimitWatts"), st.get("safeLimitWatts")
            if type(limit) is int:
                limits[name] = limit
                if type(safe) is int:
                    safes[name] = safe
        found.append((limits, safes))
    return PieceLimits(instants[0], instants[1], found[0][0], found[1][0], found[0][1], found[1][1],
                       statuses)


def _chain(name: str | None, parents: Mapping[str, str | None]) -> tuple[str, ...]:
    """A domain and every domain above it, top first."""
    out: list[str] = []
    at = name
    while at is not None and at in parents and at not in out and len(out) < _MAX_DEPTH:
        out.append(at)
        at = parents[at]
    return tuple(reversed(out))


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type (True == 1, but an enforced limit of True is no limit)."""
    return type(a) is type(b) and a == b


def _spec_version(meta: Mapping[str, Any]) -> Any:
    """What identifies an object's spec: its uid and generation (the API server counts every change
    of a spec, and no status write, so a node's memo outlives the operator's own status writes),
    else its resourceVersion; None: nothing does (never remembered)."""
    generation = meta.get("generation")
    uid = meta.get("uid")
    if type(generation) is int and uid:
        return uid, generation
    version = meta.get("resourceVersion")
    return None if version is None else ("", version)


def _read_node(obj: Mapping[str, Any], meta: Any, telemetry: Any) -> _NodeMemo:
    spec = obj.get("spec") or {}
    version = _spec_version(meta)
    count = (spec.get("gpu") or {}).get("count")
    observed = got = seen = value = None
    if telemetry:
        observed = telemetry.get("observedAt")
        seen = parse_epoch(observed)
        got = telemetry.get("enforcedLimitWatts")
        value = got if type(got) is int else None
    # Never matched again without a version: None for its metadata too.
    return _NodeMemo(version, meta if version is not None else None, telemetry, observed, got,
                     str(spec.get("rackRef") or ""), count if type(count) is int and count > 0 else 1,
                     bool(telemetry), seen, value)


def _rack_refs(spec: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    if spec is None:
        return None
    return (spec.get("clusterRef"), spec.get("powerDomainRef"), spec.get("coolingDomainRef"))


def _read_rack(rack: str, refs: tuple[Any, ...] | None, parents: Mapping[str, str | None]) -> _RackMemo:
    if refs is None:
        # A rack that does not exist (yet): last in the power-tree order, beneath its site alone.
        return _RackMemo(None, ("~", (), rack), ("StargateCluster/", f"Rack/{rack}"))
    cluster, power_ref, cooling_ref = refs
    power = _chain(power_ref, parents)
    # The power-tree order: site, then the chain of power domains from the top, then the rack.
    return _RackMemo(refs, (str(cluster or ""), power, rack),
                     (f"StargateCluster/{cluster or ''}",
                      *(f"PowerDomain/{d}" for d in power),
                      *(f"PowerDomain/{d}" for d in _chain(cooling_ref, parents)),
                      f"Rack/{rack}"))


def _read_slice(obj: Mapping[str, Any], version: Any) -> _SliceMemo:
    spec = obj.get("spec") or {}
    limits = spec.get("limits") or {}
    memo = _SliceMemo(version, {n: w for n, w in limits.items() if type(w) is int}, limits, spec, {})
    if isinstance(spec.get("ramp"), dict):
        memo.ramped = {n: e for n, e in memo.held().items() if e.start_from is not None}
    return memo


@dataclass(slots=True)
class _SliceOutcome:
    """One namespace's slice pass, what its statuses need once the core has built them."""

    ns: str
    piece: PieceLimits | None
    applies: list[dict[str, Any]]
    statuses: dict[ObjectKey, dict[str, Any]]  # the slices'
    slice_of: dict[str, str]  # node -> its slice
    nodes: dict[str, Mapping[str, Any]]
    changed: dict[str, float]  # node -> when its slice's entry last changed (within the grace period)
    grace: float
    forced: tuple[str, ...]  # constraints beneath which raises went ahead unconfirmed
    raise_after: float
    clusters: list[str]
    next_at: float | None


def _finish_space(out: _SliceOutcome, plan: Plan) -> None:
    """Lay a namespace's slice pass over the core's finished plan: the slices' applies and statuses,
    each node's slice in its status, PowerLimitApplied kept within the grace period, the Event of a
    raise that did not wait, and the next change by time."""
    ns, statuses = out.ns, plan.statuses
    if out.piece is not None and out.piece.moves():
        statuses.update(out.piece.statuses)
    plan.applies.extend(out.applies)
    statuses.update(out.statuses)
    for n, sname in out.slice_of.items():
        st = statuses[NODE, ns, n]
        if st.get("powerLimitSlice") != sname:
            st["powerLimitSlice"] = sname  # the core builds each node's status afresh or keeps it
    grace_ends = _within_grace(ns, out.nodes, statuses, out.changed, out.grace)
    if out.forced and out.clusters:
        key: ObjectKey = (kinds.STARGATE_CLUSTER.kind, ns, sorted(out.clusters)[0])
        plan.events.append(PlanEvent(
            key, "Warning", "RaisedUnconfirmed",
            f"raised limits after {out.raise_after:g} s although nodes lowered beneath "
            f"{', '.join(out.forced)} have not confirmed their lower limits (their agents "
            "may be down or late)"))
    for moment in (out.next_at, grace_ends):
        if moment is not None:
            at = from_epoch(moment)
            if plan.next_change_at is None or at < plan.next_change_at:
                plan.next_change_at = at


def _plan_space(ns: str, objs: list[Mapping[str, Any]], core_limits: Mapping[str, int],
                core_safes: Mapping[str, int], now: float, settings: CampusSettings,
                state: _SpaceState, piece: PieceLimits | None = None) -> _SliceOutcome:
    memos = state.memos
    stale_after = settings.core.stale_after_seconds
    if memos.stale_after != stale_after:
        memos.nodes.clear()
        memos.stale_after = stale_after
    racks: dict[str, Mapping[str, Any]] = {}
    parents: dict[str, str | None] = {}
    slices: dict[str, Mapping[str, Any]] = {}
    nodes: dict[str, Mapping[str, Any]] = {}
    clusters: list[str] = []
    up_rates: dict[str, float] = {}  # constraint -> rampUpWattsPerSecond, where set
    for obj in objs:
        kind = obj.get("kind")
        name = obj["metadata"]["name"]
        if kind == NODE:
            nodes[name] = obj
        elif kind == kinds.RACK.kind:
            racks[name] = obj.get("spec") or {}
        elif kind == kinds.POWER_DOMAIN.kind:
            parents[name] = (obj.get("spec") or {}).get("parentRef")
            _up_rate(up_rates, f"PowerDomain/{name}", obj.get("spec"))
        elif kind == SLICE:
            slices[name] = obj
        elif kind == kinds.STARGATE_CLUSTER.kind:
            clusters.append(name)
            _up_rate(up_rates, f"StargateCluster/{name}", (obj.get("spec") or {}).get("power"))
    # One walk over the nodes: their limits as the core computed them, and what their own objects
    # say (read again only for an object whose spec or report changed).
    node_memos = memos.nodes
    kept: dict[str, _NodeMemo] = {}
    target: dict[str, int] = {}
    safe: dict[str, int] = {}
    rack_nodes: dict[str, list[str]] = {}
    rack_of: dict[str, str] = {}
    gpus: dict[str, int] = {}
    enforced: dict[str, int] = {}
    reports: list[tuple[str, int]] = []  # nodes whose report gives an enforced limit
    for name, obj in nodes.items():
        limit = core_limits.get(name)
        if limit is None:
            continue
        status = obj.get("status")
        tel = status.get("telemetry") if status else None
        meta = obj["metadata"]
        memo = node_memos.get(name)
        if memo is not None and memo.meta is not meta:
            # Another copy (the operator's own status write): the same spec while its version is.
            version = _spec_version(meta)
            if version is None or memo.version != version:
                memo = None
            else:
                memo.meta = meta
        if (memo is None
                or (memo.telemetry is not tel and (
                    memo.reported != bool(tel)
                    or (tel and not (_same(memo.observed, tel.get("observedAt"))
                                     and _same(memo.enforced, tel.get("enforcedLimitWatts"))))))):
            memo = _read_node(obj, meta, tel)
        kept[name] = memo
        if piece is not None and name in piece.end and name in piece.start:
            limit = piece.end[name]  # on a ramp: where its line ends (sliceramp.py)
        target[name] = limit
        sl = core_safes.get(name)
        if piece is not None and name in piece.end_safe:
            # The end's: a descent's is the lower; on a rise, an agent in the fail-safe enforces
            # min(line, safe), which the line keeps under the envelope.
            sl = piece.end_safe[name]
        if type(sl) is int and sl < limit:
            safe[name] = sl
        rack = memo.rack
        rack_of[name] = rack
        members = rack_nodes.get(rack)
        if members is None:
            rack_nodes[rack] = [name]
        else:
            members.append(name)
        gpus[name] = memo.gpus
        if memo.reported:
            seen = memo.seen
            if seen is None or now - seen >= stale_after:
                enforced[name] = _UNKNOWN  # a report, but one that proves nothing now
            elif memo.value is not None:
                enforced[name] = memo.value
            if memo.value is not None:
                reports.append((name, memo.value))
    memos.nodes = kept

    # Each rack's place in the power tree and the constraints above it, read again only for a rack
    # whose references changed, or for every rack when the domains' tree changed.
    same_tree = parents == memos.parents
    memos.parents = parents
    rack_memos = memos.racks
    placed: dict[str, _RackMemo] = {}
    for rack in rack_nodes:
        refs = _rack_refs(racks.get(rack))
        rm = rack_memos.get(rack)
        if rm is None or not same_tree or rm.refs != refs:
            rm = _read_rack(rack, refs, parents)
        placed[rack] = rm
    memos.racks = placed
    ordered = sorted(rack_nodes, key=lambda r: placed[r].order)

    # What the slices hold, read again only for a slice whose spec changed.
    slice_memos = memos.slices
    read: dict[str, _SliceMemo] = {}
    held: dict[str, int] = {}
    previous: dict[str, str] = {}
    entries: dict[str, Held] = {}
    ramped: dict[str, Held] = {}
    for sname, sobj in slices.items():
        version = _spec_version(sobj["metadata"])
        sm = slice_memos.get(sname)
        if sm is None or version is None or sm.version != version:
            sm = _read_slice(sobj, version)
        read[sname] = sm
        held.update(sm.limits)
        if sm.ramped:
            ramped.update(sm.ramped)
        for node in sm.names:
            was_in = rack_of.get(node)
            if was_in is not None and was_in not in previous:
                previous[was_in] = sname
    memos.slices = read
    if piece is not None or ramped:
        for sm in read.values():
            entries.update(sm.held())
    if ramped:  # a later slice's entry of the same node wins, as in `entries`
        ramped = {n: e for n, e in ramped.items() if entries[n] is e}
    assignment = pack([(r, len(rack_nodes[r])) for r in ordered], previous, settings.slices.slice_size)

    above = {name: placed[rack].above for name, rack in rack_of.items()}
    # Lowerings not followed yet, as the agents' reports show them (a node enforcing more than its
    # slice holds): the record of the lowerings in flight lives in this process only, and an
    # operator started in the middle of a change (after a crash, a failover) must not raise beneath
    # a constraint before them either. Such a node counts at what it reports until it confirms.
    pending = state.pending
    for name, value in reports:
        if value > held.get(name, value) and name not in pending:
            if pending is state.pending:
                pending = dict(pending)
            pending[name] = value
    staged = stage(target, held, enforced, gpus, above, pending, state.waiting_since, now,
                   settings.slices.raise_after_seconds)
    state.pending, state.waiting_since = staged.pending, staged.waiting_since
    limits_now = staged.limits
    grace = settings.slices.confirm_grace_seconds
    recent = state.recent
    changed = state.changed_at
    for node, limit in limits_now.items():
        was = held.get(node)
        if was is None or was == limit:
            continue  # a node new to the slices has nothing to confirm yet
        changed[node] = now
        if limit < was:
            kept_top = recent.get(node)
            top = max(was, kept_top[0]) if kept_top is not None and kept_top[1] > now else was
            recent[node] = (top, now + grace)
    for node, entry in ramped.items():
        # Following a slice's ramp: its agent reports a point of the line, not its end, however
        # long the line; confirmed against the line's higher end until the grace after it.
        if entry.ramping(now) and entry.start_from is not None and node in target:
            kept_top = recent.get(node)
            top = max(entry.start_from, entry.limit, kept_top[0] if kept_top is not None else 0)
            recent[node] = (top, entry.end_at + grace)
            changed[node] = max(changed.get(node, now), entry.end_at)  # its grace runs from the end
    for node in [n for n, (_, until) in recent.items() if until <= now or n not in target]:
        del recent[node]
    for node in [n for n, at in changed.items() if at + grace <= now or n not in target]:
        del changed[node]
    starts = ramp_starts(piece, entries) if piece is not None else {}
    exits = failsafe_exit_rates(up_rates, above, gpus) if up_rates else {}

    applies: list[dict[str, Any]] = []
    statuses: dict[ObjectKey, dict[str, Any]] = {}
    slice_of: dict[str, str] = {}
    by_slice: dict[str, list[str]] = {}
    for node in sorted(target):
        by_slice.setdefault(assignment[rack_of[node]], []).append(node)
    for sname, names in by_slice.items():
        held_slice = slices.get(sname)
        spec = (held_slice.get("spec") or {}) if held_slice is not None else {}
        limits, ramp = _slice_ramp(names, staged.limits, target, starts, entries, piece, spec, now)
        safes = {n: safe[n] for n in names if n in safe and safe[n] < limits[n]}
        revision = spec.get("revision")
        revision = revision if type(revision) is int else 0
        generation = (held_slice or {}).get("metadata", {}).get("generation")
        generation = generation if type(generation) is int else 0
        exit_rate = min((exits[n] for n in names if n in exits), default=None)
        if (held_slice is None or spec.get("limits") != limits or (spec.get("safeLimits") or {}) != safes
                or spec.get("ramp") != ramp or spec.get("failsafeExitWattsPerSecond") != exit_rate):
            revision += 1
            generation += 1  # what the apply of the changed spec makes it
        # A ramp to remove is said so (None), so that the slice held with one is not taken as
        # already what the plan wants; the apply leaves the field out.
        desired: dict[str, Any] = {"limits": limits, "safeLimits": safes, "revision": revision,
                                   "ramp": ramp, "failsafeExitWattsPerSecond": exit_rate}
        applies.append({
            "apiVersion": kinds.API_VERSION, "kind": SLICE,
            "metadata": {"name": sname, "namespace": ns},
            "spec": desired,
        })
        confirmed = 0
        for n in names:
            got = enforced.get(n)
            if got is None:
                continue
            kept_top = recent.get(n)
            top = max(limits[n], kept_top[0]) if kept_top is not None else limits[n]
            if got <= top:
                confirmed += 1
        # Written once the slice is held (the caller writes statuses of held objects only, after
        # the slices' own writes).
        statuses[SLICE, ns, sname] = {"observedGeneration": generation, "nodes": len(names),
                                      "confirmed": confirmed, "unconfirmed": len(names) - confirmed}
        for n in names:
            slice_of[n] = sname
    for sname, sobj in slices.items():
        if sname in by_slice:
            continue
        # Left without racks: emptied, not deleted (the operator needs no delete permission, and
        # the name is the first one taken again by a new slice).
        spec = sobj.get("spec") or {}
        generation = sobj["metadata"].get("generation")
        generation = generation if type(generation) is int else 0
        if spec.get("limits") or spec.get("safeLimits") or spec.get("ramp") is not None:
            generation += 1
            revision = spec.get("revision")
            applies.append({
                "apiVersion": kinds.API_VERSION, "kind": SLICE,
                "metadata": {"name": sname, "namespace": ns},
                "spec": {"limits": {}, "safeLimits": {},
                         "revision": (revision if type(revision) is int else 0) + 1},
            })
        statuses[SLICE, ns, sname] = {"observedGeneration": generation, "nodes": 0, "confirmed": 0,
                                      "unconfirmed": 0}
    return _SliceOutcome(ns, piece, applies, statuses, slice_of, nodes, dict(changed), grace,
                         tuple(staged.forced), settings.slices.raise_after_seconds, clusters, staged.next_at)


def _up_rate(out: dict[str, float], constraint: str, spec: Any) -> None:
    rate = spec.get("rampUpWattsPerSecond") if isinstance(spec, dict) else None
    if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0:
        out[constraint] = float(rate)


def _slice_ramp(names: list[str], staged: Mapping[str, int], target: Mapping[str, int],
                starts: Mapping[str, int], entries: Mapping[str, Held], piece: PieceLimits | None,
                spec: Mapping[str, Any], now: float) -> tuple[dict[str, int], dict[str, Any] | None]:
    """One slice's limits and ramp. On a piece, a node staged to its line's end ramps from its start
    (sliceramp.py); a node whose raise waits keeps what it enforces now. Off a piece, or with no
    node of the slice moving, the limits are plain, and a ramp held that has run its course stays
    while the limits do not change (removing it would be a write that changes nothing)."""
    limits: dict[str, int] = {}
    froms: dict[str, int] = {}
    for n in names:
        value = staged[n]
        start = starts.get(n)
        if piece is not None and start is not None and value == target[n]:
            if start != value:
                froms[n] = start
        elif piece is not None and n in entries and value != target[n]:
            value = entries[n].at(now)  # a raise that waits: what it enforces now, held
        limits[n] = value
    if froms and piece is not None:
        return limits, {"from": froms, "startAt": piece.start_at, "endAt": piece.end_at}
    ramp = spec.get("ramp")
    if isinstance(ramp, dict) and spec.get("limits") == limits:
        ends = parse_epoch(ramp.get("endAt"))
        if ends is not None and ends <= now:
            return limits, dict(ramp)
    return limits, None


_APPLIED = "PowerLimitApplied"


def _within_grace(ns: str, nodes: Mapping[str, Mapping[str, Any]], statuses: dict[ObjectKey, dict[str, Any]],
                  changed: Mapping[str, float], grace: float) -> float | None:
    """PowerLimitApplied=False only for a node still unconfirmed after the grace period: inside it, a
    node whose new limit is not confirmed yet keeps the condition it had. Returns when the first
    grace period ends (the node's status is then written as the core says)."""
    first: float | None = None
    for node, at in changed.items():
        key = (NODE, ns, node)
        st = statuses.get(key)
        if st is None:
            continue
        conds = st.get("conditions") or ()
        # Plain loops: this runs for every node changed within the grace period (all of a
        # curtailment's), where a generator per node cost more than the search.
        i = 0
        for c in conds:
            if c.get("type") == _APPLIED:
                break
            i += 1
        else:
            continue
        if conds[i].get("status") != "False":
            continue
        old = None
        for c in (nodes[node].get("status") or {}).get("conditions") or ():
            if c.get("type") == _APPLIED:
                old = c
                break
        if old is None or old.get("status") == "False":
            continue  # nothing better to keep
        # A copy: the core may hand the same status back from its cache on a later call.
        statuses[key] = {**st, "conditions": [*conds[:i], old, *conds[i + 1:]]}
        end = at + grace
        first = end if first is None or end < first else first
    return first
