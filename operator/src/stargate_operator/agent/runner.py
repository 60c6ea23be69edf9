"""The agent loop: one `NodeAgent` per GPUNode, many of them in one asyncio process if need be.

Every interval (and promptly when the operator changes `status.powerLimitWatts`, the spec or the
fault-injection annotation, when watching) an agent
1. applies `status.powerLimitWatts` to every GPU (clamped to what the device allows; what could not be
   applied is logged and reported once per distinct outcome as a Warning Event `PowerLimitNotApplied`
   on the GPUNode: the telemetry schema has no field for it);
2. reads its GPUs;
3. writes `status.telemetry` (`powerWatts`, `healthyGPUs`, `hbmUsedBytes`, `observedAt`) with a JSON
   merge patch on the status subresource that names nothing else, so no other status field is touched.

`powerWatts` is the node's power: the GPUs' measured draw plus the rest of the node. NVML sees only the
GPUs, so the rest is the GPUNode's `spec.basePowerWatts`; the simulator models both.

A `Fleet` keeps the GPUNode objects in a cache fed by the operator's list-then-watch loop
(controller/informer.py; or by polling with `watch=False`)
and runs the agents: one for a real node (`--node NAME`), or one per GPUNode of a namespace in
simulation (`--simulate --all`), which is how the demo runs a hundred nodes in one process. Writes of a
fleet are spread over the interval so that they do not arrive together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from stargate_operator import kinds
from stargate_operator.agent.backend import GPUBackend, LimitOutcome, NodeReading, rfc3339
from stargate_operator.agent.simulate import FAILED_GPUS_ANNOTATION, SimulatedBackend
from stargate_operator.controller.informer import run_informer
from stargate_operator.core.wire import parse_epoch
from stargate_operator.kube import ApiError, ApiResource, KubeClient, TransportError, WatchExpired

log = logging.getLogger(__name__)

GPU_NODES = ApiResource.of(kinds.GPU_NODE)
LEASES = ApiResource("coordination.k8s.io", "v1", "leases", "Lease")  # the operator's (section 13)
PLURAL = GPU_NODES.plural
EVENT_REASON_NOT_APPLIED = "PowerLimitNotApplied"
COMPONENT = "stargate-agent"
MIN_WRITE_GAP = 1.0  # seconds: prompt writes after a change, but never more than one a second

BackendFactory = Callable[[str, dict[str, Any]], GPUBackend]
_PENDING: set[asyncio.Task[None]] = set()  # fire-and-forget applies, held until done


def node_power_watts(reading: NodeReading, spec: dict[str, Any]) -> float:
    """The node's power: its GPUs' draw plus the rest of the node (the source's figure, else the
    GPUNode's spec.basePowerWatts)."""
    other = reading.other_power_watts
    if other is None:
        other = float(spec.get("basePowerWatts") or 0)
    return other + reading.gpu_power_watts


def telemetry_patch(reading: NodeReading, spec: dict[str, Any], peak_watts: float | None = None
                    ) -> dict[str, Any]:
    """The status patch an agent writes: `{"telemetry": {...}}` and nothing else. `peak_watts`: the
    highest node power sampled since the last report (DESIGN section 13's peakPowerWatts)."""
    power = max(0, round(node_power_watts(reading, spec)))
    peak = {} if peak_watts is None else {"peakPowerWatts": max(power, round(peak_watts))}
    return {
        "telemetry": {
            "powerWatts": power,
            **peak,
            "healthyGPUs": min(16, reading.healthy_gpus),
            "hbmUsedBytes": max(0, reading.hbm_used_bytes),
            "observedAt": rfc3339(reading.observed_at),
            **reading.power_range_telemetry(),  # NVML's range and default: discovery reads them
        }
    }


def _wake_key(obj: dict[str, Any]) -> tuple[Any, ...]:
    """What, when it changes, should make an agent act before its next interval (not telemetry)."""
    meta = obj.get("metadata") or {}
    return (
        (obj.get("status") or {}).get("powerLimitWatts"),
        meta.get("generation"),
        (meta.get("annotations") or {}).get(FAILED_GPUS_ANNOTATION),
    )


@dataclass
class NodeAgent:
    """One GPUNode: its backend, its loop, what it last did."""

    client: KubeClient
    namespace: str
    name: str
    backend: GPUBackend
    interval: float = 10.0
    phase: float = 0.0  # seconds into the interval at which this agent writes
    events: bool = True
    # Seconds between two power samples between reports (section 13: NVML at 1 Hz or faster); the
    # highest since the last report is its peakPowerWatts. None: no sampling, no peak reported.
    sample_interval: float | None = 1.0
    # The fail-safe (section 13): set by its fleet while the operator's Lease is not being renewed;
    # the agent then enforces min(limit, safeLimitWatts).
    failsafe: bool = False
    obj: dict[str, Any] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    gone: bool = False
    writes: int = 0
    last_outcome: LimitOutcome | None = None
    last_reported: tuple[int, tuple[str, ...]] | None = None
    last_telemetry: dict[str, Any] | None = None
    _last_write: float = -1e9
    _peak_w: float = 0.0  # the highest node power sampled since the last report

    def update(self, obj: dict[str, Any]) -> None:
        old = self.obj
        self.obj = obj
        if not old or _wake_key(old) != _wake_key(obj):
            self.wake.set()

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.backend.blocking:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    def assigned_limit(self) -> tuple[int, str] | None:
        """The limit to enforce and where it came from (its GPUNode's status); in fail-safe, no
        more than the GPUNode's safeLimitWatts."""
        limit = (self.obj.get("status") or {}).get("powerLimitWatts")
        if limit is None:
            return None
        if self.failsafe:
            safe = self.safe_limit()
            if safe is not None and safe < int(limit):
                return safe, "gpunode"
        return int(limit), "gpunode"

    def safe_limit(self) -> int | None:
        """status.safeLimitWatts: the limit that holds even if every GPU draws it (section 13)."""
        safe = (self.obj.get("status") or {}).get("safeLimitWatts")
        return safe if type(safe) is int and safe >= 0 else None

    def set_failsafe(self, on: bool) -> None:
        if on != self.failsafe:
            self.failsafe = on
            self.wake.set()
            # The limit to enforce changes now: to the GPUs at once, not after the next report.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a test): the next pass applies it
            task = loop.create_task(self._apply_quietly())
            _PENDING.add(task)
            task.add_done_callback(_PENDING.discard)

    async def _apply_quietly(self) -> None:
        try:
            await self.apply_limit()
        except Exception:  # the next pass applies it again
            log.exception("%s/%s: applying the fail-safe limit failed", self.namespace, self.name)

    async def apply_limit(self) -> LimitOutcome | None:
        assigned = self.assigned_limit()
        if assigned is None:
            return None  # the operator has not decided yet: leave the devices as they are
        outcome: LimitOutcome = await self._call(self.backend.apply_power_limit, assigned[0])
        self.last_outcome = outcome
        key = (outcome.requested_watts, outcome.problems)
        if outcome.problems and key != self.last_reported:
            msg = f"power limit {outcome.requested_watts} W per GPU not fully applied: " + "; ".join(
                outcome.problems)
            log.warning("%s/%s: %s", self.namespace, self.name, msg)
            if self.events:
                try:
                    await self.client.create_event(
                        namespace=self.namespace, involved=self.obj, type_="Warning",
                        reason=EVENT_REASON_NOT_APPLIED, message=msg, component=COMPONENT)
                except (ApiError, httpx.HTTPError, OSError) as e:  # never fatal
                    log.warning("%s/%s: cannot record event: %s", self.namespace, self.name, e)
        elif not outcome.problems and self.last_reported and self.last_reported[1]:
            log.info("%s/%s: power limit %d W per GPU applied", self.namespace, self.name,
                     outcome.requested_watts)
        self.last_reported = key
        return outcome

    async def tick(self) -> bool:
        """Apply the limit, read, write telemetry. False when the GPUNode is gone."""
        await self.apply_limit()
        meta = self.obj.get("metadata") or {}
        reading: NodeReading = await self._call(self.backend.read, self.obj.get("spec") or {},
                                                dict(meta.get("annotations") or {}))
        spec = self.obj.get("spec") or {}
        peak = None
        if self.sample_interval is not None:
            peak = max(self._peak_w, node_power_watts(reading, spec))
        patch = telemetry_patch(reading, spec, peak)
        try:
            await self.client.patch_status(PLURAL, self.namespace, self.name, patch)
        except ApiError as e:
            if e.status == 404:
                log.info("%s/%s: GPUNode deleted, agent stops", self.namespace, self.name)
                self.gone = True
                return False
            log.warning("%s/%s: telemetry not written: %s", self.namespace, self.name, e)
            return True
        except (httpx.HTTPError, OSError) as e:  # the API server is down or unreachable: next interval
            log.warning("%s/%s: telemetry not written: %s", self.namespace, self.name,
                        str(e) or type(e).__name__)
            return True
        self._peak_w = 0.0  # a new report window
        self.writes += 1
        self.last_telemetry = patch["telemetry"]
        self._last_write = asyncio.get_running_loop().time()
        return True

    async def sample_once(self) -> None:
        """One power sample between reports: the peak of the window is the highest of them."""
        meta = self.obj.get("metadata") or {}
        spec = self.obj.get("spec") or {}
        reading: NodeReading = await self._call(self.backend.read, spec, dict(meta.get("annotations") or {}))
        self._peak_w = max(self._peak_w, node_power_watts(reading, spec))

    async def _sample_forever(self, every: float) -> None:
        while not self.gone:
            await asyncio.sleep(every)
            try:
                await self.sample_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a failed sample only misses a peak; the report reads again
                log.debug("%s/%s: power sample failed: %s", self.namespace, self.name, e)

    async def run(self) -> None:
        sampler = None
        if self.sample_interval is not None and self.sample_interval < self.interval:
            sampler = asyncio.create_task(self._sample_forever(self.sample_interval),
                                          name=f"sampler {self.namespace}/{self.name}")
        try:
            await self._run()
        finally:
            if sampler is not None:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.phase
        while not self.gone:
            self.wake.clear()  # a change that arrives during the pass wakes the next one
            try:
                ok = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s/%s: agent tick failed", self.namespace, self.name)
                ok = True
            if not ok:
                return
            now = loop.time()
            while next_at <= now:
                next_at += self.interval
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=next_at - now)
            except TimeoutError:
                continue  # the interval is up
            # Woken by a change: act now, but not more than once a second.
            gap = self._last_write + MIN_WRITE_GAP - loop.time()
            if gap > 0:
                await asyncio.sleep(gap)

    def close(self) -> None:
        try:
            self.backend.close()
        except Exception:  # pragma: no cover
            log.exception("%s/%s: backend close failed", self.namespace, self.name)


def simulated_factory(*, seed: int | None = None, failed_gpus: int = 0) -> BackendFactory:
    def make(name: str, obj: dict[str, Any]) -> GPUBackend:
        return SimulatedBackend(name, obj.get("spec") or {}, seed=seed, failed_gpus=failed_gpus)
    return make


class Fleet:
    """Agents for the GPUNodes of one namespace: the named ones, or every one (`names=None`)."""

    def __init__(self, client: KubeClient, namespace: str, backend_factory: BackendFactory, *,
                 names: list[str] | None = None, interval: float = 10.0, watch: bool = True,
                 events: bool = True, seed: int | None = None,
                 failsafe_after: float | None = kinds.DEFAULT_FAILSAFE_AFTER_SECONDS,
                 sample_interval: float | None = 1.0) -> None:
        self.failsafe_after = failsafe_after
        self.sample_interval = sample_interval
        self.failsafe = False  # the operator's Lease has not been renewed for failsafe_after
        self.lease_renewals = 0  # renewals seen
        self._lease_mark: tuple[Any, ...] | None = None
        self._lease_seen_at: float | None = None
        self.client = client
        self.namespace = namespace
        self.factory = backend_factory
        self.names = set(names) if names is not None else None
        self.interval = interval
        self.watch = watch
        self.events = events
        self.agents: dict[str, NodeAgent] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._rng = random.Random(seed)
        self.synced = asyncio.Event()  # set after the first list

    @property
    def field_selector(self) -> str | None:
        if self.names is not None and len(self.names) == 1:
            return f"metadata.name={next(iter(self.names))}"
        return None

    def _phase(self, name: str) -> float:
        # Spread a fleet's writes over the interval; stable per name, so restarts keep the rhythm.
        return (zlib.crc32(name.encode()) % 1000) / 1000.0 * self.interval

    def _wanted(self, name: str) -> bool:
        return self.names is None or name in self.names

    def upsert(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if not self._wanted(name):
            return
        agent = self.agents.get(name)
        if agent is not None and (agent.gone or self.tasks[name].done()):
            self._drop(name)
            agent = None
        if agent is None:
            try:
                backend = self.factory(name, obj)
            except Exception:
                log.exception("%s/%s: cannot start the GPU backend", self.namespace, name)
                raise
            agent = NodeAgent(self.client, self.namespace, name, backend, interval=self.interval,
                              phase=self._phase(name) if self.names is None or len(self.names) > 1 else 0.0,
                              events=self.events, sample_interval=self.sample_interval,
                              failsafe=self.failsafe)
            agent.obj = obj
            self.agents[name] = agent
            self.tasks[name] = asyncio.create_task(agent.run(), name=f"agent-{name}")
            log.info("%s/%s: agent started", self.namespace, name)
        else:
            agent.update(obj)

    def _drop(self, name: str) -> None:
        agent = self.agents.pop(name, None)
        task = self.tasks.pop(name, None)
        if task is not None and not task.done():
            task.cancel()
        if agent is not None:
            agent.close()

    def delete(self, name: str) -> None:
        if name in self.agents:
            log.info("%s/%s: GPUNode deleted, agent stops", self.namespace, name)
            self._drop(name)

    def _sync_list(self, items: list[dict[str, Any]]) -> None:
        seen = set()
        for obj in items:
            seen.add(obj["metadata"]["name"])
            self.upsert(obj)
        for name in list(self.agents):
            if name not in seen:
                self.delete(name)
        if self.names is not None:
            for name in sorted(self.names - seen):
                log.warning("%s/%s: GPUNode not found (yet); waiting for it", self.namespace, name)
        self.synced.set()

    def _on_event(self, type_: str, obj: dict[str, Any]) -> None:
        if type_ in ("ADDED", "MODIFIED"):
            self.upsert(obj)
        elif type_ == "DELETED":
            self.delete(obj["metadata"]["name"])

    async def _follow(self) -> None:
        nodes = self._follow_nodes()
        if self.failsafe_after is None:
            await nodes
        else:
            await asyncio.gather(nodes, self._follow_lease(self.failsafe_after))

    def lease_seen(self, lease: Any, now: float, wall: datetime) -> None:
        """What a read of the operator's Lease tells: a renewal when its renewTime (or holder) moved
        since the last read. The first read dates the renewal by the Lease's own renewTime (so an
        agent started long after the operator died does not trust an old Lease), later ones by
        when this agent saw it move (no trust in the two clocks agreeing)."""
        if not isinstance(lease, dict):
            return
        spec = lease.get("spec") or {}
        mark = (spec.get("renewTime"), spec.get("holderIdentity"))
        if mark[0] is None or mark == self._lease_mark:
            return
        first = self._lease_mark is None
        self._lease_mark = mark
        self.lease_renewals += 1
        age = 0.0
        if first:
            renewed = parse_epoch(mark[0])
            age = max(0.0, wall.timestamp() - renewed) if renewed is not None else 0.0
        self._lease_seen_at = now - age

    def judge_failsafe(self, now: float, after: float, started: float) -> bool:
        """Fail-safe when no renewal has been seen for `after` seconds (since start, before any)."""
        seen = self._lease_seen_at if self._lease_seen_at is not None else started
        on = now - seen > after
        if on != self.failsafe:
            self.failsafe = on
            if on:
                log.warning("%s: the operator's Lease %s has not been renewed for %g s: fail-safe, "
                            "every agent enforces min(limit, safeLimitWatts)", self.namespace,
                            kinds.FAILSAFE_LEASE_NAME, after)
            else:
                log.info("%s: the operator's Lease is renewed again: fail-safe over", self.namespace)
            for agent in self.agents.values():
                agent.set_failsafe(on)
        return on

    async def _follow_lease(self, after: float) -> None:
        """Follow the site's Lease (a GET, then a watch of it by name from there, which also shows it
        once the operator makes it) and switch every agent in or out of fail-safe, judged
        often enough that a lapse is seen within a fraction of `after` and of the interval."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        every = max(min(after / 8.0, self.interval / 4.0, 1.0), 0.1)

        async def judge_forever() -> None:
            while True:
                self.judge_failsafe(loop.time(), after, started)
                await asyncio.sleep(every)

        judge = asyncio.create_task(judge_forever(), name=f"failsafe {self.namespace}")
        try:
            while True:
                try:
                    try:
                        lease = await self.client.get(LEASES.plural, self.namespace,
                                                      kinds.FAILSAFE_LEASE_NAME, group_path=LEASES.group_path)
                        self.lease_seen(lease, loop.time(), datetime.now(UTC))
                        version = str((lease.get("metadata") or {}).get("resourceVersion") or "0")
                    except ApiError as e:
                        if e.status != 404 or isinstance(e, TransportError):
                            raise
                        version = "0"  # absent: the watch shows it when the operator makes it
                    async for event in self.client.watch(
                            LEASES.plural, self.namespace, version, group_path=LEASES.group_path,
                            field_selector=f"metadata.name={kinds.FAILSAFE_LEASE_NAME}"):
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self.lease_seen(event.get("object"), loop.time(), datetime.now(UTC))
                except (TransportError, WatchExpired, httpx.HTTPError, OSError) as e:
                    log.debug("%s: the Lease's watch ended: %s", self.namespace, e)
                except ApiError as e:
                    log.warning("%s: the operator's Lease is not readable: %s", self.namespace, e)
                await asyncio.sleep(every)  # read it again (no renewal is seen meanwhile)
        finally:
            judge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await judge

    async def _follow_nodes(self) -> None:
        """The operator's list-then-watch (controller/informer.py), or a list every interval
        without `watch`: the API server down or unreachable only delays it, the agents keep
        running on what they have."""
        await run_informer(
            self.client, GPU_NODES, self.namespace,
            lambda _kind, _ns, items: self._sync_list(items), self._on_event, self.synced,
            field_selector=self.field_selector, watch_timeout=290,
            poll_interval=None if self.watch else self.interval, min_backoff=1.0, max_backoff=60.0,
            page_size=500)

    async def run(self) -> None:
        """Until cancelled. Closes every backend on the way out."""
        try:
            await self._follow()
        finally:
            await self.stop()

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        for name in list(self.agents):
            self._drop(name)
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def run_once(self) -> tuple[int, int]:
        """One pass: list, apply, read, write for every agent. Returns (GPUNodes written, GPUNodes
        wanted: the named ones, or every one listed)."""
        items, _ = await self.client.list(PLURAL, self.namespace, field_selector=self.field_selector)
        wrote = 0
        try:
            for obj in items:
                name = obj["metadata"]["name"]
                if not self._wanted(name):
                    continue
                agent = NodeAgent(self.client, self.namespace, name, self.factory(name, obj),
                                  interval=self.interval, events=self.events, obj=obj)
                self.agents[name] = agent
            await asyncio.gather(*(a.tick() for a in self.agents.values()))
            wrote = sum(a.writes for a in self.agents.values())
        finally:
            for name in list(self.agents):
                self.agents.pop(name).close()
        if self.names is not None:
            for name in sorted(self.names - {o["metadata"]["name"] for o in items}):
                log.error("%s/%s: GPUNode not found", self.namespace, name)
        return wrote, len(self.names) if self.names is not None else len(items)


def nvml_factory() -> BackendFactory:
    """NVML on this machine; fails now (NvmlUnavailable) rather than in the loop when it cannot start."""
    from stargate_operator.agent.nvml import NvmlBackend

    NvmlBackend(watch_xids=False).close()

    def make(name: str, obj: dict[str, Any]) -> GPUBackend:
        del name, obj
        return NvmlBackend()
    return make


async def run_agents(client: KubeClient, namespace: str, *, names: list[str] | None = None,
                     simulate: bool = True, interval: float = 10.0, seed: int | None = None,
                     fail_gpus: int = 0, watch: bool = True, events: bool = True,
                     failsafe_after: float | None = kinds.DEFAULT_FAILSAFE_AFTER_SECONDS,
                     sample_interval: float | None = 1.0) -> None:
    """For the demo and tests: run agents in the current event loop until cancelled.

    `names=None` means every GPUNode of the namespace (simulation only)."""
    if simulate:
        factory = simulated_factory(seed=seed, failed_gpus=fail_gpus)
    else:
        if names is None or len(names) != 1:
            raise ValueError("the NVML agent serves exactly one GPUNode: the machine it runs on")
        factory = nvml_factory()
    fleet = Fleet(client, namespace, factory, names=names, interval=interval, watch=watch, events=events,
                  seed=seed, failsafe_after=failsafe_after, sample_interval=sample_interval)
    await fleet.run()
