"""The reconcile engine: store, coalescing by unit of work, one planner run, only changes written.

Flow: informers (one per watched resource, and namespace when restricted) feed the store and mark
the unit of work of every controller that watches the kind dirty: its namespace, or the whole
cluster for a controller that is not per namespace (slot.py). The scheduler waits for a unit to
be quiet for `coalesce_delay` (or at most `max_delay` after the first change; a change of a spec
is due `coalesce_delay` after itself), runs the controller's pure planner over the unit's objects
once, and writes what the plan asks for and the store does not hold yet: status patches diffed
against the cached status, server-side applies not already in effect (for a kind only the
controller writes, a PUT onto the version held: `replace_kinds`), creates of absent objects,
deletes of present ones, many at a time. The applies of the controller's `write_first` kinds go
out first, every one of them answered before any other write starts (the power controller's
PowerLimitSlices: a new limit reaches every node agent with one write per slice); a controller with
a `stager` plans in two steps, and they go out between the two, before the statuses are built. The
rest give way once a change of a spec, or the plan's own next change by time, is due
(`_superseded`). A write's response goes straight into the store, so the watch echo of our own
write finds nothing left to do.

Why per namespace and not per object: a change to one rack's priority moves the power of every
rack and node of the site; the core needs the whole site anyway, and a burst of a thousand events
(a cold start, a curtailment) must cost one recomputation, not a thousand.

Time: `monotonic` (coalescing, retries, timers) and `clock` (the wall time the planner is given)
are injected; `run_due()` is one step of the scheduler, which the unit tests drive with their own
clocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stargate_operator import kinds, metrics
from stargate_operator.client import ApiError, ApiResource, KubeClient, run_informer
from stargate_operator.controller.refresh import MeasuredRefresh
from stargate_operator.controller.slot import Controller, power_controller
from stargate_operator.controller.store import Key, Store, key_of
from stargate_operator.core.sliceplan import SliceSettings
from stargate_operator.core.statusdiff import merge_patch
from stargate_operator.core.types import ObjectRef, Plan, PlanEvent
from stargate_operator.kinds import API_VERSION
from stargate_operator.process import gc_paused

logger = logging.getLogger("stargate.engine")

MAX_PENDING_ECHOES = 200_000
# What the planner sees of a unit's objects, made from what the store holds (Engine.add_hook).
ObjectsHook = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
# After next_change_at, so that the wall clock the planner then reads has passed it.
TIMER_MARGIN_SECONDS = 0.05

# (controller slot, namespace; "" for a controller over the whole cluster)
Unit = tuple[int, str]
# (verb, key, payload): patch_status with the merge patch, apply/create with the object, delete
# with its ObjectRef.
Write = tuple[str, Key, Any]
_PATCH_STATUS = "patch_status"


@dataclass(frozen=True)
class EngineSettings:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    stale_after_seconds: float = kinds.DEFAULT_STALE_AFTER_SECONDS
    slices: SliceSettings = field(default_factory=SliceSettings)
    # A status patch of measured figures alone is written at most this often per object (0: always).
    measured_refresh_seconds: float = 0.0
    coalesce_delay: float = 0.1  # quiet time after the last event before recomputing
    max_delay: float = 1.0  # a namespace under a steady stream of events still recomputes this often
    write_concurrency: int = 32
    event_concurrency: int = 8
    retry_delay: float = 2.0


def _watched(controllers: Sequence[Controller[Any, Any]]) -> dict[str, ApiResource]:
    """Every resource the controllers watch, by kind; one watch each, shared."""
    out: dict[str, ApiResource] = {}
    for c in controllers:
        for r in c.resources:
            held = out.setdefault(r.kind, r)
            if held != r:
                raise ValueError(f"controllers disagree on kind {r.kind}: {held} and {r}")
    return out


def connections_needed(settings: EngineSettings,
                       controllers: Sequence[Controller[Any, Any]] | None = None) -> int:
    """API connections the engine can hold at once: every writer, Event poster and watch (one per
    resource and namespace; one for a cluster-scoped resource), plus a few for leader election and
    telemetry. With fewer, writers queue for the pool, aiohttp does not hand a freed connection to
    the longest waiter, and a writer starved past the connect timeout fails (seen at 100,000
    nodes: 5 watches took 5 of 32 connections from 32 writers)."""
    resources = _watched(controllers or (power_controller(settings.stale_after_seconds, settings.slices),))
    per_ns = max(1, len(settings.namespaces))
    watches = sum(per_ns if r.namespaced else 1 for r in resources.values())
    return settings.write_concurrency + settings.event_concurrency + watches + 4


def _holds(held: Any, desired: Any) -> bool:
    """True when `held` already has every field of `desired` with its value (an apply of
    `desired` would change nothing); lists compare whole, as server-side apply replaces atomic
    lists and our applies hold no merged ones."""
    if isinstance(desired, dict):
        if not isinstance(held, dict):
            return False
        if held == desired and not _has_bool(desired):
            return True  # the usual case (a slice's limits unchanged), compared in C
        for k, v in desired.items():
            if v is None:
                if held.get(k) is not None:
                    return False
            elif k not in held or not _holds(held[k], v):
                return False
        return True
    if isinstance(desired, bool) or isinstance(held, bool):
        return type(desired) is type(held) and desired == held  # 1 == True, but not in JSON
    return bool(held == desired)


def _has_bool(value: Any) -> bool:
    """Whether a bool lies anywhere in `value` (where == would take 1 for True)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):
        return any(isinstance(v, (bool, dict, list)) and _has_bool(v) for v in value.values())
    if isinstance(value, list):
        return any(isinstance(v, (bool, dict, list)) and _has_bool(v) for v in value)
    return False


def _without_nulls(body: Any) -> Any:
    """An apply's body without its None fields: a plan says None for a field it wants gone (so that
    `_holds` does not take an object still carrying it as done), and server-side apply removes a
    field its manager leaves out, while a schema that is not nullable refuses null."""
    if isinstance(body, dict):
        return {k: _without_nulls(v) for k, v in body.items() if v is not None}
    return body


# What a PUT keeps of the held object's metadata: what others may have set on it.
_KEPT_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")


def _replacement(held: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The PUT of an apply's `body` onto the `held` object: its spec whole (a field it leaves out is
    removed, as an apply by the field's only manager removes it), the held labels, annotations,
    owners and finalizers kept, and the held resourceVersion, so that a write made since is a 409
    (the watch brings it, the retry writes onto it), never silently overwritten."""
    out: dict[str, Any] = _without_nulls(body)
    meta = dict(out["metadata"])
    have = held["metadata"]
    for field_name in _KEPT_METADATA:
        if field_name in have and field_name not in meta:
            meta[field_name] = have[field_name]
    meta["resourceVersion"] = have["resourceVersion"]
    out["metadata"] = meta
    return out


@dataclass
class EngineStats:
    reconciles: int = 0
    writes: int = 0
    write_errors: int = 0
    # Recomputations whose remaining writes a newer change made obsolete (written from the new plan).
    superseded: int = 0
    events_posted: int = 0
    last_reconcile_monotonic: float = 0.0
    last_error: str = ""


class Engine:
    def __init__(self, client: KubeClient, settings: EngineSettings,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), *,
                 controllers: Sequence[Controller[Any, Any]] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.controllers: tuple[Controller[Any, Any], ...] = tuple(
            controllers or (power_controller(settings.stale_after_seconds, settings.slices),))
        self.resources = _watched(self.controllers)
        # Which slots an event of a kind concerns, and how each groups its objects.
        self._slots_by_kind: dict[str, tuple[int, ...]] = {
            kind: tuple(i for i, c in enumerate(self.controllers) if kind in c.kinds)
            for kind in self.resources}
        self._all_slots = tuple(range(len(self.controllers)))
        self._per_namespace = tuple(c.per_namespace for c in self.controllers)
        # None where a controller watches every kind held: its objects need no filtering.
        self._only: tuple[frozenset[str] | None, ...] = tuple(
            None if c.kinds == frozenset(self.resources) else c.kinds for c in self.controllers)
        self.store = Store()
        self.stats = EngineStats()
        self.synced = False
        # The leader-election gate: while cleared, the engine keeps its cache warm but writes nothing.
        self.active = asyncio.Event()
        self._gate_was_open = True  # False once seen closed: opening it recomputes everything
        self._dirty: dict[Unit, tuple[float, float]] = {}  # unit -> (first change, last change)
        # Units dirtied by a change of what is asked (a spec: a new generation), an object added or
        # one deleted, with the time of the last such change: their pending status writes give way
        # to it (_superseded), and it is due a quiet time after itself even while a fleet's reports
        # keep the unit dirty (_due). Status changes (agents' reports, our own echoes) do neither.
        self._urgent: dict[Unit, float] = {}
        # Units whose plan in writing changes by time alone at this monotonic instant (a ramp's next
        # piece, an event's start): that change, too, moves power, so the writes give way to it.
        self._changes_at: dict[Unit, float] = {}
        self._timers: dict[Unit, float] = {}  # unit -> monotonic time to recompute it at
        self._wake = asyncio.Event()
        # Hooks over the objects of a unit before its planner sees them (external telemetry).
        self._hooks: list[ObjectsHook] = []
        # One per unit: a cache drops what did not come back in its last call.
        self._caches: dict[Unit, Any] = {}
        # The planner's counts of the last plan of each unit (Plan.counts), for metrics.
        self._counts: dict[Unit, dict[Key, dict[str, int]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._write_sem = asyncio.Semaphore(settings.write_concurrency)
        self._event_sem = asyncio.Semaphore(settings.event_concurrency)
        # resourceVersions of our own writes whose watch echo has not come yet: the informers
        # skip decoding those events (the store has the object from the write's response).
        self._own_versions: set[bytes] = set()
        self._terminating: set[str] = set()  # namespaces whose refused creates were logged
        # `replace_kinds` whose update RBAC refused (a Role from before it was needed): applied.
        self._update_refused: set[str] = set()
        self._patch_counters = {kind: metrics.API_WRITES.labels(kind=kind, verb=_PATCH_STATUS)
                                for kind in self.resources}
        self._refresh = MeasuredRefresh(settings.measured_refresh_seconds)

    # -- inputs -------------------------------------------------------------------------------

    def mark_dirty(self, namespace: str, kind: str | None = None, *, but: int | None = None,
                   urgent: bool = False) -> None:
        """A change in `namespace` (to an object of `kind`; None: of any kind), for every controller
        watching it (`but` that slot); `urgent` for a change of what is asked (see _urgent)."""
        now = self.monotonic()
        for slot in self._all_slots if kind is None else self._slots_by_kind.get(kind, ()):
            if slot == but:
                continue
            unit = (slot, namespace if self._per_namespace[slot] else "")
            held = self._dirty.get(unit)
            self._dirty[unit] = (now, now) if held is None else (held[0], now)
            if urgent:
                self._urgent[unit] = now
        self._wake.set()

    def _on_list(self, kind: str, namespace: str | None, items: list[dict[str, Any]]) -> None:
        for ns in self.store.replace_kind(kind, namespace, items):
            self.mark_dirty(ns, kind)

    def _on_event(self, type_: str, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        held = self.store.get(key)
        if type_ == "DELETED":
            if held is None:
                return  # never held, or the echo of our own delete: nothing changes
            self.store.delete(key)
            urgent = True
        else:
            if not self.store.upsert(obj):
                return  # an older version than the one our own write already stored
            generation = obj["metadata"].get("generation")
            urgent = held is None or (generation is not None
                                      and held["metadata"].get("generation") != generation)
        self.mark_dirty(key[1], key[0], urgent=urgent)

    def _is_own_version(self, rv: bytes) -> bool:
        if rv in self._own_versions:
            self._own_versions.discard(rv)
            return True
        return False

    def add_hook(self, hook: ObjectsHook) -> None:
        """A function over the objects of one unit of work, applied in order before the planner sees
        them; it returns the objects to plan (changed copies, never the store's own). Nothing it
        changes is written back. A hook whose answer changes calls `refresh`."""
        self._hooks.append(hook)

    def refresh(self, kind: str) -> None:
        """Plan every unit holding objects of `kind` again (a hook's view of them changed)."""
        for ns in self.store.namespaces():
            self.mark_dirty(ns, kind)

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self.sync()
            # The cache is long-lived and holds no reference cycles; without this, every full
            # collection walks all of it (measured: up to 0.1 s a pass at 10,000 nodes, several
            # passes during a cold start). Objects replaced later are still freed by refcount.
            gc.freeze()
            await self._schedule_forever()
        finally:
            await self.stop()

    async def sync(self) -> None:
        """Start an informer per watched resource (and namespace) and wait until each has listed."""
        namespaces: tuple[str | None, ...] = self.settings.namespaces or (None,)
        events: list[asyncio.Event] = []
        for res in self.resources.values():
            for ns in namespaces if res.namespaced else (None,):
                synced = asyncio.Event()
                events.append(synced)
                self._tasks.append(asyncio.create_task(
                    run_informer(self.client, res, ns, self._on_list, self._on_event, synced,
                                 is_known=self._is_own_version),
                    name=f"informer {res.plural}@{ns or '*'}",
                ))
        # Computing before every kind is listed would report claims without pools, racks without
        # clusters... and post Events for problems that do not exist.
        await asyncio.gather(*(e.wait() for e in events))
        self.synced = True
        logger.info("cache synced: %d objects", self.store.count())
        # Nothing to coalesce after a list: start at once.
        self._mark_all_due()

    async def stop(self) -> None:
        """Cancel the informers."""
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _schedule_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.active.is_set():
                self._gate_was_open = False
                await self.active.wait()
            self._wake.clear()
            next_at = await self.run_due()
            handle = None
            if next_at is not None:
                handle = loop.call_later(max(0.0, next_at - self.monotonic()), self._wake.set)
            await self._wake.wait()
            if handle is not None:
                handle.cancel()

    def _units(self) -> list[Unit]:
        out: list[Unit] = []
        for slot in self._all_slots:
            if self._per_namespace[slot]:
                out.extend((slot, ns) for ns in self.store.namespaces())
            else:
                out.append((slot, ""))
        return out

    def _mark_all_due(self) -> None:
        at = self.monotonic() - self.settings.max_delay
        for unit in self._units():
            self._dirty[unit] = (at, at)
        self._wake.set()

    def _due_at(self, first: float, last: float) -> float:
        return min(last + self.settings.coalesce_delay, first + self.settings.max_delay)

    def _due(self, unit: Unit, first: float, last: float) -> float:
        """When a dirty unit is due: a quiet time after its last change, at most `max_delay` after
        its first, and a quiet time after its last change of a spec, so that a curtailment does not
        wait out `max_delay` behind a stream of agents' reports."""
        at = self._due_at(first, last)
        urgent = self._urgent.get(unit)
        return at if urgent is None else min(at, urgent + self.settings.coalesce_delay)

    def next_due(self) -> float | None:
        """The monotonic time at which some unit is next due; None when none is pending."""
        times = [self._due(u, f, last) for u, (f, last) in self._dirty.items()]
        times.extend(self._timers.values())
        return min(times) if times else None

    async def run_due(self) -> float | None:
        """One step of the scheduler: recompute (and write) every unit whose time has come, by
        `monotonic()`; returns next_due(). While the leader-election gate is closed nothing is computed;
        the first step after it opens recomputes every unit (the other replica wrote meanwhile)."""
        if not self.active.is_set():
            self._gate_was_open = False
            return None
        if not self._gate_was_open:
            self._gate_was_open = True
            self._mark_all_due()
        now = self.monotonic()
        due = {u: None for u, (first, last) in self._dirty.items() if self._due(u, first, last) <= now}
        for u, at in self._timers.items():
            if at <= now:
                due[u] = None
        for u in due:
            self._dirty.pop(u, None)
            self._timers.pop(u, None)
            self._urgent.pop(u, None)
        for slot, part in due:
            await self.reconcile(part, slot)
        return self.next_due()

    def _objects(self, unit: Unit) -> list[dict[str, Any]]:
        slot, part = unit
        objects = self.store.objects(part) if self._per_namespace[slot] else list(self.store)
        only = self._only[slot]
        if only is not None:
            objects = [o for o in objects if o.get("kind") in only]
        for hook in self._hooks:
            objects = hook(objects)
        return objects

    def _retry(self, unit: Unit, at: float | None = None) -> None:
        retry = self.monotonic() + self.settings.retry_delay
        self._timers[unit] = min(retry, at) if at is not None else retry

    async def reconcile(self, namespace: str, slot: int = 0) -> None:
        """Plan one unit (a namespace, or "" for a cluster-wide controller) and write the plan."""
        unit = (slot, namespace)
        controller = self.controllers[slot]
        label = controller.reconcile_kind
        started = time.perf_counter()
        try:
            objects = self._objects(unit)
            if not objects:
                if not self.store.objects(namespace):  # gone, not only empty for this controller
                    self._terminating.discard(namespace)
                self._caches.pop(unit, None)
                self._counts.pop(unit, None)
                self._timers.pop(unit, None)
                return
            t0 = time.perf_counter()
            cache = self._caches.get(unit)
            if cache is None:
                cache = self._caches[unit] = controller.new_cache()
            first = frozenset(controller.write_first)
            failed = 0
            with gc_paused():
                staged = controller.stage(objects, self.clock(), cache)
            planned = time.perf_counter() - t0
            if first:
                # What the agents act on goes out before the statuses are even built, and is a
                # barrier, not only an order: when a later write (a GPUNode's limit) lands, the
                # one it follows (its PowerLimitSlice) has landed already, or failed.
                failed = await self._write_all(self._first_writes(staged.applies, first), controller)
            t0 = time.perf_counter()
            with gc_paused():
                plan = staged.finish()
            metrics.ALLOCATION_SECONDS.observe(planned + time.perf_counter() - t0)
            self._counts[unit] = plan.counts
            if plan.next_change_at is not None:
                self._changes_at[unit] = self.monotonic() + max(
                    0.0, (plan.next_change_at - self.clock()).total_seconds())
            if failed:  # tried once more before the rest: the finished plan holds the same applies
                failed = await self._write_all(self._first_writes(plan.applies, first), controller)
            # The rest (statuses above all) gives way to a newer change once it is due: its plan
            # writes what is still wrong, so a curtailment never queues behind thousands of status
            # writes of the recomputation before it.
            failed += await self._write_all(self._writes(plan, first), controller, unit)
            if plan.events:
                await asyncio.gather(*(self._post(ev) for ev in plan.events))
            at = None
            if plan.next_change_at is not None:
                wait = max(0.0, (plan.next_change_at - self.clock()).total_seconds())
                at = self.monotonic() + wait + TIMER_MARGIN_SECONDS
            held_back = self._refresh.take_due()
            if held_back is not None:
                # Measured figures held back: written when their refresh is due, if nothing else
                # brings a recomputation first.
                due = held_back + TIMER_MARGIN_SECONDS
                at = due if at is None else min(at, due)
            if failed:
                self._retry(unit, at)
            elif at is not None:
                self._timers[unit] = at
            else:
                self._timers.pop(unit, None)
            self.stats.reconciles += 1
            self.stats.last_reconcile_monotonic = self.monotonic()
            if failed:
                metrics.RECONCILES.labels(kind=label, result="error").inc()
            else:
                metrics.RECONCILES.labels(kind=label, result="success").inc()
                if controller.per_namespace:
                    metrics.LAST_SUCCESS.labels(namespace=namespace).set(time.time())
        except Exception as e:  # one bad unit must never stop the others
            logger.exception("reconciling %s %s failed", label, namespace or "(cluster)")
            self.stats.last_error = f"{namespace}: {e}"
            metrics.RECONCILES.labels(kind=label, result="error").inc()
            self._retry(unit, self._timers.get(unit))
        finally:
            self._changes_at.pop(unit, None)
            metrics.RECONCILE_SECONDS.labels(kind=label).observe(time.perf_counter() - started)

    def _status_writes(self, plan: Plan, only: frozenset[str] | None = None,
                       skip: frozenset[str] = frozenset()) -> Iterator[Write]:
        """The status patches of the kinds `only` (None: every kind) but the kinds `skip`, diffed
        when a writer takes them."""
        store = self.store
        for key, desired in plan.statuses.items():
            if (only is not None and key[0] not in only) or (skip and key[0] in skip):
                continue
            held = store.get(key)
            if held is None:
                continue
            patch = merge_patch(held.get("status"), desired)
            if patch and self._refresh.allow(key, patch, self.monotonic()):
                yield _PATCH_STATUS, key, patch

    def _first_writes(self, applies: list[dict[str, Any]], first: frozenset[str]) -> Iterator[Write]:
        """The applies (not already in effect) of the kinds `first`; their statuses go with the rest,
        once a slice created by its apply is held."""
        store = self.store
        for body in applies:
            if body.get("kind") in first:
                key = key_of(body)
                held = store.get(key)
                if held is None or not _holds(held, body):
                    yield "apply", key, body

    def _writes(self, plan: Plan, skip: frozenset[str] = frozenset()) -> Iterator[Write]:
        """What must change, decided when a writer is free to send it, against the freshest copy:
        applies not already in effect (but those of the kinds `skip`, written before), creates of
        absent objects, status patches, deletes of present objects."""
        store = self.store
        for body in plan.applies:
            if skip and body.get("kind") in skip:
                continue
            key = key_of(body)
            held = store.get(key)
            if held is None or not _holds(held, body):
                yield "apply", key, body
        for body in plan.creates:
            key = key_of(body)
            if store.get(key) is None:
                yield "create", key, body
        for key, patch in plan.patches:
            if store.get(key) is not None:
                yield "patch", key, patch
        yield from self._status_writes(plan)
        for ref in plan.deletes:
            held = store.get(ref.key)
            if ref.kind in self.resources and (held is None or held["metadata"].get("deletionTimestamp")):
                continue  # gone, or going: the watch says when
            yield "delete", ref.key, ref

    def _superseded(self, unit: Unit) -> bool:
        """A newer change of what is asked of `unit` is due, or the plan's own next change by time:
        what is left of the current plan's writes is out of date, and the next plan will write
        whatever is still wrong."""
        change_at = self._changes_at.get(unit)
        if change_at is not None and change_at <= self.monotonic():
            return True  # the plan's own next change by time: planned again at once (its timer)
        if unit not in self._urgent:
            return False
        held = self._dirty.get(unit)
        return held is not None and self._due(unit, *held) <= self.monotonic()

    async def _write_all(self, writes: Iterator[Write], controller: Controller[Any, Any],
                         unit: Unit | None = None) -> int:
        """Send every write with `write_concurrency` writers; the number that failed. With a `unit`,
        the writers stop taking writes once a newer change to it is due (the unit stays dirty, so
        it is planned again at once).

        A fixed set of writers pulling from one iterator, not a task per write: at 100,000 nodes a
        task each cost seconds before the first write and hundreds of MB while they waited."""
        failed = 0
        stopped = False

        async def writer() -> None:
            nonlocal failed, stopped
            for verb, key, payload in writes:  # shared: each writer takes the next one
                if unit is not None and (stopped or self._superseded(unit)):
                    if not stopped:
                        stopped = True
                        self.stats.superseded += 1
                    if verb == _PATCH_STATUS:
                        self._refresh.forget(key)  # taken, not sent: not written as far as it knows
                    return
                if verb == _PATCH_STATUS:
                    ok = await self._write(key, payload)
                else:
                    ok = await self._write_object(verb, key, payload, controller)
                if not ok:
                    failed += 1

        await asyncio.gather(*(writer() for _ in range(self.settings.write_concurrency)))
        return failed

    def _write_failed(self, what: str, key: Key, e: Exception) -> bool:
        kind, namespace, name = key
        if isinstance(e, ApiError) and e.status == 409:
            # Someone wrote it since we read it: the watch brings the new version and the retry
            # recomputes from it.
            logger.info("%s of %s %s/%s: changed under us; recomputing", what, kind, namespace, name)
            return False
        if isinstance(e, ApiError) and (e.namespace_terminating or e.namespace_gone):
            # Only creates are refused, and what they were for goes with the namespace.
            self._namespace_going(namespace, f"{what} of {kind} {name} skipped", e)
            return False
        logger.warning("%s of %s %s/%s failed: %s", what, kind, namespace, name, e)
        self.stats.write_errors += 1
        self.stats.last_error = str(e)
        return False

    def _namespace_going(self, namespace: str, what: str, e: ApiError) -> None:
        """Said once per namespace: deleting a site refuses a create for each of its objects, while
        the namespace terminates (403) and after it is gone until the watch catches up (404); the
        log says which of the two the API server answered."""
        state = "is gone" if e.namespace_gone else "is being deleted"
        if namespace in self._terminating:
            logger.debug("namespace %s %s: %s", namespace, state, what)
            return
        self._terminating.add(namespace)
        logger.info("namespace %s %s: %s (and the like, until the watch sees it gone)", namespace, state,
                    what)

    def _remember(self, obj: Any, kind: str) -> None:
        """A write's response into the store, and its version as one whose echo to skip."""
        if not isinstance(obj, dict) or kind not in self.resources:
            return
        obj.setdefault("kind", kind)
        if self.store.upsert(obj):
            rv = obj["metadata"].get("resourceVersion")
            if rv:
                if len(self._own_versions) > MAX_PENDING_ECHOES:
                    # Echoes that never came (a watch restarted past them): forget them all;
                    # an unrecognised echo is only decoded and found unchanged.
                    self._own_versions.clear()
                self._own_versions.add(str(rv).encode())

    async def _write(self, key: Key, patch: dict[str, Any]) -> bool:
        kind, namespace, name = key
        res = self.resources[kind]
        # A claim's binding is the one status that must never race: write it only onto the version
        # it was computed from, so that two replicas acting at once (a paused, not dead, active one
        # and its standby) cannot both hand out the same bytes. Other statuses are derived figures
        # that the next recomputation rewrites anyway; a precondition there would only add
        # conflicts with the agents' telemetry writes.
        rv = None
        if kind == kinds.MEMORY_CLAIM.kind:
            held = self.store.get(key)
            rv = str(held["metadata"].get("resourceVersion") or "") if held else None
        async with self._write_sem:
            if not self.active.is_set():
                return False
            try:
                obj = await self.client.patch_status(res, namespace or None, name, patch, resource_version=rv)
            except ApiError as e:
                if e.status == 404:
                    self.store.delete(key)  # deleted meanwhile: nothing to write
                    return True
                return self._write_failed("writing status", key, e)
            except Exception as e:
                return self._write_failed("writing status", key, e)
        self._patch_counters[kind].inc()
        self.stats.writes += 1
        self._remember(obj, kind)
        return True

    async def _write_object(self, verb: str, key: Key, payload: Any,
                            controller: Controller[Any, Any]) -> bool:
        kind, namespace, name = key
        res = self.resources.get(kind)
        if res is None:
            logger.error("%s of %s %s/%s: kind %s is not watched by any controller of this engine",
                         verb, kind, namespace, name, kind)
            self.stats.write_errors += 1
            return False
        async with self._write_sem:
            if not self.active.is_set():
                return False
            if verb == "apply" and kind in controller.replace_kinds and kind not in self._update_refused:
                held = self.store.get(key)  # the freshest version: the one the update is made onto
                if held is not None:
                    verb, payload = "update", _replacement(held, payload)
            try:
                if verb == "update":
                    obj = await self.client.replace(res, namespace or None, name, payload)
                elif verb == "apply":
                    obj = await self.client.apply(res, namespace or None, name, _without_nulls(payload),
                                                  field_manager=controller.field_manager, force=True)
                elif verb == "create":
                    obj = await self.client.create(res, namespace or None, payload)
                elif verb == "patch":
                    obj = await self.client.patch(res, namespace or None, name, payload)
                else:
                    ref: ObjectRef = payload
                    obj = None
                    await self.client.delete(res, namespace or None, name, uid=ref.uid)
            except ApiError as e:
                if verb == "delete" and e.status == 404:
                    self.store.delete(key)  # gone already: done
                    return True
                if verb == "update" and e.status == 404:
                    # Deleted since (by someone, or with its namespace): the retry creates it again,
                    # unless the namespace is going, which the create is then told.
                    self.store.delete(key)
                    logger.info("update of %s %s/%s: gone; created again by the retry", kind, namespace, name)
                    return False
                if verb == "update" and e.status == 403 and kind not in self._update_refused:
                    # Limits must still reach the agents: the retry applies, as before updates.
                    self._update_refused.add(kind)
                    logger.warning("update of %s %s/%s refused (%s): the operator's Role lacks the update "
                                   "verb on %s; writing them by server-side apply, which costs the API "
                                   "server more CPU per write", kind, namespace, name, e, res.plural)
                return self._write_failed(verb, key, e)
            except Exception as e:
                return self._write_failed(verb, key, e)
        metrics.API_WRITES.labels(kind=kind, verb=verb).inc()
        self.stats.writes += 1
        if verb == "delete":
            # Its DELETED event then finds nothing held: no recomputation for our own delete. (An
            # object with finalizers comes back as MODIFIED, with its deletionTimestamp.)
            self.store.delete(key)
        else:
            self._remember(obj, kind)
        # Its watch echo is skipped or finds nothing, so another controller watching the kind (the
        # power controller, of discovery's GPUNodes) learns of the write here.
        self.mark_dirty(namespace, kind, but=self.controllers.index(controller))
        return True

    async def _post(self, event: PlanEvent) -> None:
        kind = event.key[0]
        res = self.resources.get(kind)
        involved = self.store.get(event.key) or {
            "kind": kind, "apiVersion": res.api_version if res else API_VERSION,
            "metadata": {"name": event.key[2], "namespace": event.key[1]},
        }
        async with self._event_sem:
            try:
                await self.client.create_event(
                    namespace=event.key[1], involved=involved, type_=event.type, reason=event.reason,
                    message=event.message,
                )
            except Exception as e:  # Events are best effort: never block status on them
                if isinstance(e, ApiError) and (e.namespace_terminating or e.namespace_gone):
                    self._namespace_going(event.key[1], "its Events are not posted", e)
                else:
                    logger.warning("posting event %s on %s failed: %s", event.reason, event.key, e)
                return
        metrics.API_WRITES.labels(kind="Event", verb="create_event").inc()
        self.stats.events_posted += 1

    # -- views --------------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Every cached object (the metrics StatusSource); safe to call from another thread."""
        return list(self.store)

    def counts(self) -> dict[Key, dict[str, int]]:
        """The planners' counts (Plan.counts) of every unit's last plan; safe from another thread."""
        out: dict[Key, dict[str, int]] = {}
        for per_unit in list(self._counts.values()):
            out.update(per_unit)
        return out

    def health(self) -> dict[str, Any]:
        return {
            "synced": self.synced,
            "active": self.active.is_set(),
            "objects": self.store.count(),
            "reconciles": self.stats.reconciles,
            "writes": self.stats.writes,
            "writeErrors": self.stats.write_errors,
            "lastError": self.stats.last_error,
        }
