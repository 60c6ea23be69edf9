"""The reconcile engine: store, coalescing by namespace, one core run, only changed status written.

Flow: informers feed the store and mark a namespace dirty; the scheduler waits for the namespace
to be quiet for `coalesce_delay` (or at most `max_delay` after the first change), runs the core
over the whole namespace once, diffs every desired status against what the store holds, and
writes only the differences, many at a time. A write's response goes straight into the store, so
the watch echo of our own write finds nothing left to do.

Why per namespace and not per object: a change to one rack's priority moves the power of every
rack and node of the site; the core needs the whole site anyway, and a burst of a thousand events
(a cold start, a curtailment) must cost one recomputation, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stargate_operator import metrics
from stargate_operator.controller.informer import run_informer
from stargate_operator.controller.store import KINDS_BY_PLURAL, PLURALS_BY_KIND, Key, Store, key_of
from stargate_operator.core import plan_namespace
from stargate_operator.core.cache import PlanCache
from stargate_operator.core.power import with_base_power
from stargate_operator.core.statusdiff import merge_patch
from stargate_operator.core.types import CoreSettings, PlanEvent
from stargate_operator.kinds import API_VERSION
from stargate_operator.kube import ApiError, KubeClient

logger = logging.getLogger("stargate.engine")

MAX_PENDING_ECHOES = 200_000


@dataclass(frozen=True)
class EngineSettings:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    stale_after_seconds: float = 120.0
    coalesce_delay: float = 0.1  # quiet time after the last event before recomputing
    max_delay: float = 1.0  # a namespace under a steady stream of events still recomputes this often
    write_concurrency: int = 32
    event_concurrency: int = 8
    retry_delay: float = 2.0


def connections_needed(settings: EngineSettings) -> int:
    """API connections the engine can hold at once: every writer, Event poster and watch (one per
    kind and namespace), plus a few for peering and telemetry. With fewer, writers queue for the
    pool, aiohttp does not hand a freed connection to the longest waiter, and a writer starved past
    the connect timeout fails (seen at 100,000 nodes: 5 watches took 5 of 32 connections from 32
    writers)."""
    watches = len(KINDS_BY_PLURAL) * max(1, len(settings.namespaces))
    return settings.write_concurrency + settings.event_concurrency + watches + 4


@dataclass
class EngineStats:
    reconciles: int = 0
    writes: int = 0
    write_errors: int = 0
    events_posted: int = 0
    last_reconcile_monotonic: float = 0.0
    last_error: str = ""


class Engine:
    def __init__(self, client: KubeClient, settings: EngineSettings,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock
        self.store = Store()
        self.stats = EngineStats()
        self.synced = False
        # The peering gate: while cleared, the engine keeps its cache warm but writes nothing.
        self.active = asyncio.Event()
        self._dirty: dict[str, tuple[float, float]] = {}  # ns -> (first change, last change)
        self._wake = asyncio.Event()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._telemetry: dict[str, dict[str, Any]] = {}  # node name -> telemetry overlay
        # One per namespace: a cache drops what did not come back in its last call.
        self._caches: dict[str, PlanCache] = {}
        # The core's counts of the last plan of each namespace (Plan.counts), for metrics.
        self._counts: dict[str, dict[Key, dict[str, int]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._write_sem = asyncio.Semaphore(settings.write_concurrency)
        self._event_sem = asyncio.Semaphore(settings.event_concurrency)
        # resourceVersions of our own writes whose watch echo has not come yet: the informers
        # skip decoding those events (the store has the object from the write's response).
        self._own_versions: set[bytes] = set()
        self._patch_counters = {kind: metrics.API_WRITES.labels(kind=kind, verb="patch_status")
                                for kind in KINDS_BY_PLURAL.values()}

    # -- inputs -------------------------------------------------------------------------------

    def mark_dirty(self, namespace: str) -> None:
        now = time.monotonic()
        first, _ = self._dirty.get(namespace, (now, now))
        self._dirty[namespace] = (first, now)
        self._wake.set()

    def _on_list(self, kind: str, namespace: str | None, items: list[dict[str, Any]]) -> None:
        for ns in self.store.replace_kind(kind, namespace, items):
            self.mark_dirty(ns)

    def _on_event(self, type_: str, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        if type_ == "DELETED":
            self.store.delete(key)
        elif not self.store.upsert(obj):
            return  # an older version than the one our own write already stored
        self.mark_dirty(key[1])

    def _is_own_version(self, rv: bytes) -> bool:
        if rv in self._own_versions:
            self._own_versions.discard(rv)
            return True
        return False

    def set_telemetry(self, readings: dict[str, dict[str, Any]]) -> None:
        """Telemetry from an external source (Prometheus/DCGM), by node name; replaces the last."""
        self._telemetry = dict(readings)
        for ns in self.store.namespaces():
            self.mark_dirty(ns)

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        namespaces: Iterable[str | None] = self.settings.namespaces or (None,)
        events: list[asyncio.Event] = []
        for plural, kind in KINDS_BY_PLURAL.items():
            for ns in namespaces:
                synced = asyncio.Event()
                events.append(synced)
                self._tasks.append(asyncio.create_task(
                    run_informer(self.client, plural, kind, ns, self._on_list, self._on_event, synced,
                                 is_known=self._is_own_version),
                    name=f"informer {plural}@{ns or '*'}",
                ))
        # Computing before every kind is listed would report claims without pools, racks without
        # clusters... and post Events for problems that do not exist.
        await asyncio.gather(*(e.wait() for e in events))
        self.synced = True
        logger.info("cache synced: %d objects", self.store.count())
        # The cache is long-lived and holds no reference cycles; without this, every full
        # collection walks all of it (measured: up to 0.1 s a pass at 10,000 nodes, several
        # passes during a cold start). Objects replaced later are still freed by refcount.
        gc.freeze()
        # Nothing to coalesce after a list: start at once.
        for ns in list(self._dirty):
            self._dirty[ns] = (0.0, 0.0)
        try:
            await self._schedule_forever()
        finally:
            for t in self._tasks:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def _schedule_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.active.is_set():
                await self.active.wait()
                for ns in self.store.namespaces():
                    self.mark_dirty(ns)
            now = time.monotonic()
            due: list[str] = []
            next_due = None
            for ns, (first, last) in self._dirty.items():
                at = min(last + self.settings.coalesce_delay, first + self.settings.max_delay)
                if at <= now:
                    due.append(ns)
                else:
                    next_due = at if next_due is None else min(next_due, at)
            for ns in due:
                del self._dirty[ns]
            for ns in due:
                await self.reconcile(ns)
            if next_due is not None:
                asyncio.get_running_loop().call_later(max(0.0, next_due - time.monotonic()), self._wake.set)

    def _objects_for_core(self, namespace: str) -> list[dict[str, Any]]:
        objects = self.store.objects(namespace)
        if not self._telemetry:
            return objects
        out = []
        for obj in objects:
            if obj.get("kind") == "GPUNode":
                node = (obj.get("spec") or {}).get("nodeName") or obj["metadata"]["name"]
                reading = self._telemetry.get(node)
                if reading is not None:
                    # DCGM measures the GPUs only; node telemetry counts the whole node, as an
                    # agent reports it, so that it compares with node and rack budgets.
                    reading = with_base_power(reading, obj.get("spec") or {})
                    obj = {**obj, "status": {**(obj.get("status") or {}), "telemetry": reading}}
            out.append(obj)
        return out

    async def reconcile(self, namespace: str) -> None:
        started = time.perf_counter()
        try:
            objects = self._objects_for_core(namespace)
            if not objects:
                self._caches.pop(namespace, None)
                self._counts.pop(namespace, None)
                return
            t0 = time.perf_counter()
            cache = self._caches.setdefault(namespace, PlanCache())
            core_settings = CoreSettings(self.settings.stale_after_seconds)
            plan = plan_namespace(objects, self.clock(), core_settings, cache)
            metrics.ALLOCATION_SECONDS.observe(time.perf_counter() - t0)
            self._counts[namespace] = plan.counts
            failed = await self._write_all(self._patches(plan.statuses))
            if plan.events:
                await asyncio.gather(*(self._post(ev) for ev in plan.events))
            self._schedule_at(namespace, plan.next_change_at)
            self.stats.reconciles += 1
            self.stats.last_reconcile_monotonic = time.monotonic()
            if failed:
                metrics.RECONCILES.labels(kind="namespace", result="error").inc()
                asyncio.get_running_loop().call_later(self.settings.retry_delay, self.mark_dirty, namespace)
            else:
                metrics.RECONCILES.labels(kind="namespace", result="success").inc()
                metrics.LAST_SUCCESS.labels(namespace=namespace).set(time.time())
        except Exception as e:  # one bad namespace must never stop the others
            logger.exception("reconciling namespace %s failed", namespace)
            self.stats.last_error = f"{namespace}: {e}"
            metrics.RECONCILES.labels(kind="namespace", result="error").inc()
            asyncio.get_running_loop().call_later(self.settings.retry_delay, self.mark_dirty, namespace)
        finally:
            metrics.RECONCILE_SECONDS.labels(kind="namespace").observe(time.perf_counter() - started)

    def _patches(self, statuses: Mapping[Key, dict[str, Any]]) -> Iterator[tuple[Key, dict[str, Any]]]:
        """What must change, diffed when a writer is free to send it, against the freshest copy."""
        for key, desired in statuses.items():
            held = self.store.get(key)
            if held is None:
                continue
            patch = merge_patch(held.get("status"), desired)
            if patch:
                yield key, patch

    async def _write_all(self, patches: Iterator[tuple[Key, dict[str, Any]]]) -> int:
        """Send every patch with `write_concurrency` writers; the number that failed.

        A fixed set of writers pulling from one iterator, not a task per patch: at 100,000 nodes a
        task each cost seconds before the first write and hundreds of MB while they waited."""
        failed = 0

        async def writer() -> None:
            nonlocal failed
            for key, patch in patches:  # shared: each writer takes the next one
                if not await self._write(key, patch):
                    failed += 1

        await asyncio.gather(*(writer() for _ in range(self.settings.write_concurrency)))
        return failed

    def _schedule_at(self, namespace: str, when: datetime | None) -> None:
        old = self._timers.pop(namespace, None)
        if old is not None:
            old.cancel()
        if when is None:
            return
        delay = max(0.0, (when - self.clock()).total_seconds()) + 0.05
        self._timers[namespace] = asyncio.get_running_loop().call_later(delay, self.mark_dirty, namespace)

    async def _write(self, key: Key, patch: dict[str, Any]) -> bool:
        kind, namespace, name = key
        # A claim's binding is the one status that must never race: write it only onto the version
        # it was computed from, so that two replicas acting at once (a paused, not dead, active one
        # and its standby) cannot both hand out the same bytes. Other statuses are derived figures
        # that the next recomputation rewrites anyway; a precondition there would only add
        # conflicts with the agents' telemetry writes.
        rv = None
        if kind == "MemoryClaim":
            held = self.store.get(key)
            rv = str(held["metadata"].get("resourceVersion") or "") if held else None
        async with self._write_sem:
            if not self.active.is_set():
                return False
            try:
                obj = await self.client.patch_status(PLURALS_BY_KIND[kind], namespace, name, patch, rv)
            except ApiError as e:
                if e.status == 404:
                    self.store.delete(key)  # deleted meanwhile: nothing to write
                    return True
                if e.status == 409:
                    # Someone wrote it since we read it: the watch brings the new version and the
                    # retry recomputes the namespace from it.
                    logger.info("%s %s/%s changed under us; recomputing", kind, namespace, name)
                    return False
                logger.warning("writing status of %s %s/%s failed: %s", kind, namespace, name, e)
                self.stats.write_errors += 1
                self.stats.last_error = str(e)
                return False
            except Exception as e:
                logger.warning("writing status of %s %s/%s failed: %s", kind, namespace, name, e)
                self.stats.write_errors += 1
                self.stats.last_error = str(e)
                return False
        self._patch_counters[kind].inc()
        self.stats.writes += 1
        if isinstance(obj, dict):
            obj.setdefault("kind", kind)
            if self.store.upsert(obj):
                rv = obj["metadata"].get("resourceVersion")
                if rv:
                    if len(self._own_versions) > MAX_PENDING_ECHOES:
                        # Echoes that never came (a watch restarted past them): forget them all;
                        # an unrecognised echo is only decoded and found unchanged.
                        self._own_versions.clear()
                    self._own_versions.add(str(rv).encode())
        return True

    async def _post(self, event: PlanEvent) -> None:
        involved = self.store.get(event.key) or {
            "kind": event.key[0], "apiVersion": API_VERSION,
            "metadata": {"name": event.key[2], "namespace": event.key[1]},
        }
        async with self._event_sem:
            try:
                await self.client.create_event(
                    namespace=event.key[1], involved=involved, type_=event.type, reason=event.reason,
                    message=event.message,
                )
            except Exception as e:  # Events are best effort: never block status on them
                logger.warning("posting event %s on %s failed: %s", event.reason, event.key, e)
                return
        metrics.API_WRITES.labels(kind="Event", verb="create_event").inc()
        self.stats.events_posted += 1

    # -- views --------------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Every cached object (the metrics StatusSource); safe to call from another thread."""
        return list(self.store)

    def counts(self) -> dict[Key, dict[str, int]]:
        """The core's counts (Plan.counts) of every namespace's last plan; safe from another thread."""
        out: dict[Key, dict[str, int]] = {}
        for per_ns in list(self._counts.values()):
            out.update(per_ns)
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
