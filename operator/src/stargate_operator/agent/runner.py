"""The agent loop: one `NodeAgent` per GPUNode, many of them in one asyncio process if need be.

Every interval (and promptly when the operator changes its limit, the spec or the fault-injection
annotation, when watching) an agent
1. applies its limit to every GPU (clamped to what the device allows; what could not be applied is
   logged and reported once per distinct outcome as a Warning Event `PowerLimitNotApplied` on the
   GPUNode: the telemetry schema has no field for it). Its limit is its entry in its
   PowerLimitSlice (the operator writes the slices first, one write per slice of whole racks, so a
   curtailment reaches every agent within seconds; a slice's ramp is followed step by step), else
   its rack's `status.powerLimits` (written by operators before the slices), else its GPUNode's
   `status.powerLimitWatts` (nothing seen yet, or not readable);
2. reads its GPUs, the power limit they enforce included;
3. writes `status.telemetry` (`powerWatts`, `healthyGPUs`, `hbmUsedBytes`, `observedAt`,
   `enforcedLimitWatts`, the power range) with a JSON merge patch on the status subresource that names
   nothing else, so no other status field is touched. A new limit is applied at once and reported
   at most a second after the last write (MIN_WRITE_GAP).
   Reporting to Prometheus (`report_to="prometheus"`, what `run --telemetry prometheus` reads: the
   figures are served on /metrics, exposition.py), it writes only when what the operator cannot
   read there changes: its power range and default (node discovery's), and a shadow limit; its
   first pass writes once, so that the GPUNode says what the agent found. At rest that is no write
   at all, whatever the interval.

`powerWatts` is the node's power: the GPUs' measured draw plus the rest of the node. NVML sees only the
GPUs, so the rest is the GPUNode's `spec.basePowerWatts`; the simulator models both.

A `Fleet` keeps the GPUNode objects, the slices and the racks' `powerLimits` in caches fed by the
operator's list-then-watch loop (client/informer.py; or by polling with `watch=False`) and runs the agents:
one for a real node (`--node NAME`, watching its GPUNode, its slice and its own rack by field
selectors), or one per GPUNode of a namespace in simulation (`--simulate --all`, one watch each of the
namespace's GPUNodes, slices and racks), which is how the demo runs a hundred nodes in one process.
Writes of a fleet are spread over the interval so that they do not arrive together.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stargate_operator import kinds
from stargate_operator.agent.backend import GPUBackend, LimitOutcome, NodeReading, rfc3339
from stargate_operator.agent.simulate import SimulatedBackend
from stargate_operator.agent.slices import SliceEntry, exit_level, slice_entries, slice_name_of
from stargate_operator.agent.spread import DEFAULT_FAILSAFE_SPREAD_SECONDS, follows
from stargate_operator.client import (
    LEASES,
    ApiError,
    ApiResource,
    KubeClient,
    TransportError,
    WatchExpired,
    run_informer,
)
from stargate_operator.core.wire import parse_epoch
from stargate_operator.kinds import FAILED_GPUS_ANNOTATION

log = logging.getLogger(__name__)

GPU_NODES = ApiResource.of(kinds.GPU_NODE)
RACKS = ApiResource.of(kinds.RACK)
SLICES = ApiResource.of(kinds.POWER_LIMIT_SLICE)
# Where an agent's limit came from: its PowerLimitSlice, its rack's powerLimits (an older
# operator's), or its GPUNode's powerLimitWatts.
FROM_SLICE, FROM_RACK, FROM_GPUNODE = "slice", "rack", "gpunode"
# Seconds between two steps of a slice's ramp at most.
RAMP_STEP = 1.0
EVENT_REASON_NOT_APPLIED = "PowerLimitNotApplied"
# Where an agent reports its readings: its GPUNode's status every interval (`api`), or its /metrics
# for Prometheus, writing its GPUNode only when what is not in the series changes (`prometheus`).
REPORT_TO = ("api", "prometheus")
# Telemetry fields the operator cannot read from the agent's series: a change of one is written.
UNSERIED_FIELDS = ("minPowerWatts", "maxPowerWatts", "defaultPowerWatts", "shadowLimitWatts")
COMPONENT = "stargate-agent"
MIN_WRITE_GAP = 1.0  # seconds: prompt writes after a change, but never more than one a second
# In a process of many agents (a simulated fleet), a woken agent reads its GPUs for its report no
# sooner than this after the wake: a curtailment's slice writes arrive one after another, and
# each wakes hundreds of the process's agents; read at once (about 0.3 ms each), the agents of the
# first slices would keep those of the last from their new limits for seconds (measured at
# 10,000 nodes: the last limit set 3.5 s after the last slice's write).
FLEET_WAKE_REPORT_DELAY = 1.0
# Writes of one fleet in flight at once. A curtailment wakes every agent of a simulated site at
# once; 10,000 requests left to queue for the client's connections fail at its connect timeout
# (and come back together on their retries), queued here they go out in turn.
FLEET_WRITES = 8

# Seconds between two freezes of what a process of many agents holds (Fleet._keep_frozen).
FLEET_FREEZE_EVERY = 10.0

BackendFactory = Callable[[str, dict[str, Any]], GPUBackend]
_PENDING: set[asyncio.Task[None]] = set()  # fire-and-forget applies, held until done


def _spawn(loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, None]) -> None:
    """Runs `work` as a task of its own, held in _PENDING until done."""
    task = loop.create_task(work)
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)


async def _stopped(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


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
    highest node power sampled since the last report (telemetry.peakPowerWatts, which reactive
    capping judges)."""
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
            **_enforced(reading),
        }
    }


def _enforced(reading: NodeReading) -> dict[str, int]:
    watts = reading.enforced_limit_watts
    return {} if watts is None or watts < 0 else {"enforcedLimitWatts": watts}


def rack_safe_limits(rack: dict[str, Any]) -> dict[str, int]:
    """A rack's `status.safeLimits` (GPUNode name -> safe per-GPU limit), defensively."""
    limits = (rack.get("status") or {}).get("safeLimits")
    if not isinstance(limits, dict):
        return {}
    return {str(k): v for k, v in limits.items() if type(v) is int and v >= 0}


def rack_power_limits(rack: dict[str, Any]) -> dict[str, int]:
    """A rack's `status.powerLimits` (GPUNode name -> per-GPU limit), read defensively."""
    limits = (rack.get("status") or {}).get("powerLimits")
    if not isinstance(limits, dict):
        return {}
    return {str(k): v for k, v in limits.items() if type(v) is int and v >= 0}


def _wake_key(obj: dict[str, Any], rack_limit: int | None) -> tuple[Any, ...]:
    """What, when it changes, should make an agent act before its next interval (not telemetry)."""
    meta = obj.get("metadata") or {}
    return (
        rack_limit if rack_limit is not None else (obj.get("status") or {}).get("powerLimitWatts"),
        meta.get("generation"),
        (meta.get("annotations") or {}).get(FAILED_GPUS_ANNOTATION),
        observing(obj),
    )


def observing(obj: dict[str, Any]) -> bool:
    """Its site is in shadow mode (the operator marks its GPUNode's status): report, apply nothing."""
    return (obj.get("status") or {}).get("powerEnforcement") == kinds.OBSERVE


def rack_ref(obj: dict[str, Any]) -> str:
    return str((obj.get("spec") or {}).get("rackRef") or "")


@dataclass
class FleetStats:
    """What a fleet's agents did, for `agent --metrics-port` (and hack/bench.py)."""

    limit_changes: dict[str, int] = field(
        default_factory=lambda: {FROM_SLICE: 0, FROM_RACK: 0, FROM_GPUNODE: 0})
    # When a limit was last set on the devices (seconds since the epoch; 0: never). A process of
    # many agents may answer a probe late while it reads its GPUs; this says when the change was.
    last_change_at: float = 0.0


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
    # Seconds between two power samples between reports (NVML at 1 Hz or faster); the
    # highest since the last report is its peakPowerWatts. None: no sampling, no peak reported.
    sample_interval: float | None = 1.0
    # The fail-safe: set by its fleet while the operator's Lease is not being renewed;
    # the agent then enforces min(limit, safeLimitWatts).
    failsafe: bool = False
    # Leaving the fail-safe at its slice's rate: (the limit it left from, when), until at its limit.
    exiting: tuple[int, float] | None = None
    rack_safe: int | None = None  # its entry in its rack's status.safeLimits, when known
    obj: dict[str, Any] = field(default_factory=dict)
    # Its limit in its rack's status.powerLimits (None: not known there; its GPUNode's then).
    rack_limit: int | None = None
    # Its entry in its PowerLimitSlice (None: not known there; its rack's, else its GPUNode's then).
    slice_entry: SliceEntry | None = None
    stats: FleetStats | None = None
    writes_gate: asyncio.Semaphore | None = None  # the fleet's: its writes in flight at once
    wake_report_delay: float = 0.0  # FLEET_WAKE_REPORT_DELAY in a process of many agents
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    _apply_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Shadow mode: the limit it would apply (fail-safe included) and does not; None when enforcing.
    shadow_limit: int | None = None
    gone: bool = False
    writes: int = 0
    last_outcome: LimitOutcome | None = None
    last_reported: tuple[int, tuple[str, ...]] | None = None
    last_telemetry: dict[str, Any] | None = None
    last_reading: NodeReading | None = None  # the last reading reported (the agent's /metrics)
    last_peak_watts: float | None = None  # the highest sample of the last report window (/metrics)
    report_to: str = "api"  # REPORT_TO
    skipped: int = 0  # reports not written: nothing the operator cannot read in the series changed
    _last_write: float = -1e9
    _peak_w: float = 0.0  # the highest node power sampled since the last report
    # Seconds until the next try after a telemetry write failed (the API server away): the report
    # is the proof that a limit is in force, so it is not left for a whole interval.
    _retry_in: float | None = None

    def node_watts(self, reading: NodeReading) -> float:
        return node_power_watts(reading, self.obj.get("spec") or {})

    def update(self, obj: dict[str, Any]) -> None:
        old = self.obj
        self.obj = obj
        if not old:
            self.wake.set()
            return
        was, now = _wake_key(old, self._listed()), _wake_key(obj, self._listed())
        if was != now:
            self.wake.set()
            if was[0] != now[0]:
                self._apply_soon()

    def _listed(self) -> int | None:
        """Its limit where the operator lists it: its slice's entry, else its rack's."""
        return self.slice_entry.limit if self.slice_entry is not None else self.rack_limit

    def set_slice_entry(self, entry: SliceEntry | None) -> None:
        """Its entry in its PowerLimitSlice (None: none); wakes it when its limit or ramp changes."""
        if entry == self.slice_entry:
            return
        self.slice_entry = entry
        self.wake.set()
        self._apply_soon()

    def ramping(self) -> bool:
        """Its limit moves by time alone: a slice's ramp, or its rise out of the fail-safe."""
        return self.slice_entry is not None and (self.slice_entry.ramping(time.time())
                                                 or self.exiting is not None)

    def exit_rate(self) -> float | None:
        """Per GPU, how fast it rises when it leaves the fail-safe (its slice's share of the up
        rate); None: it leaves in one step, at its offset in the spread."""
        return self.slice_entry.exit_rate if self.slice_entry is not None else None

    def set_rack_limit(self, limit: int | None) -> None:
        """Its entry in its rack's powerLimits (None: none); wakes it when its limit changes."""
        if limit == self.rack_limit:
            return
        before = self.assigned_limit()
        self.rack_limit = limit
        after = self.assigned_limit()
        # The same limit from elsewhere (its rack now lists what its GPUNode said): nothing to do.
        if (before[0] if before else None) != (after[0] if after else None):
            self.wake.set()
            self._apply_soon()

    def assigned_limit(self) -> tuple[int, str] | None:
        """The limit to enforce and where it came from: the rack's, else the GPUNode's status;
        in fail-safe, no more than the GPUNode's safeLimitWatts."""
        limit = self._assigned_limit()
        if limit is not None and not self.failsafe and self.exiting is not None:
            rate = self.exit_rate()
            if rate is not None:
                level = exit_level(*self.exiting, rate, time.time())
                if level < limit[0]:
                    return level, limit[1]
            self.exiting = None  # back at its limit: the rise is over
        if limit is None or not self.failsafe:
            return limit
        safe = self.safe_limit()
        return limit if safe is None or safe >= limit[0] else (safe, limit[1])

    def safe_limit(self) -> int | None:
        """The limit that holds even if every GPU draws it: its rack's safeLimits entry;
        its rack's limit when its rack lists it in powerLimits and not in safeLimits (safe at that
        limit: the rack lists only the safe limits below it); else its GPUNode's safeLimitWatts.
        Its slice, where it has one, in the same way."""
        if self.slice_entry is not None:
            return self.slice_entry.safe_limit()
        if self.rack_safe is not None:
            return self.rack_safe
        if self.rack_limit is not None:
            return self.rack_limit
        safe = (self.obj.get("status") or {}).get("safeLimitWatts")
        return safe if type(safe) is int and safe >= 0 else None

    def set_failsafe(self, on: bool) -> None:
        if on != self.failsafe:
            if not on and self.exit_rate() is not None:
                held = self.assigned_limit()  # what the fail-safe enforces now: the rise's start
                self.exiting = (held[0], time.time()) if held is not None else None
            elif on:
                self.exiting = None
            self.failsafe = on
            self.wake.set()
            self._apply_soon()

    def _apply_soon(self) -> None:
        """The limit to enforce has changed: to the GPUs at once, whatever the agent's loop is doing.
        Its loop may be inside a report, waiting for the fleet's writes gate behind thousands of
        others (measured at 10,000 nodes: the few agents whose periodic report had begun just
        before a rack's write set their limit 30 to 60 s late). A backend that does not block is
        set here, in the caller's step: a slice's event then sets its hundreds of agents' limits
        before the next event is read, with no task per agent (in one process of 10,000 simulated
        agents, 20 slice events 30 ms apart: every limit set 1.1 s after the first event, against
        2.9 s with a task each)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test): the next pass applies it
        try:
            if not self.backend.blocking and not self._apply_lock.locked():
                self._apply_now(loop)
                return
        except Exception:  # the next pass applies it again
            log.exception("%s/%s: applying the power limit failed", self.namespace, self.name)
            return
        _spawn(loop, self._apply_quietly())

    async def _apply_quietly(self) -> None:
        try:
            await self.apply_limit()
        except Exception:  # the next pass applies it again
            log.exception("%s/%s: applying the power limit failed", self.namespace, self.name)

    def _assigned_limit(self) -> tuple[int, str] | None:
        if self.slice_entry is not None:
            return self.slice_entry.at(time.time()), FROM_SLICE
        if self.rack_limit is not None:
            return self.rack_limit, FROM_RACK
        limit = (self.obj.get("status") or {}).get("powerLimitWatts")
        if limit is None:
            return None
        return int(limit), FROM_GPUNODE

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.backend.blocking:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def apply_limit(self) -> LimitOutcome | None:
        # One apply at a time, each reading the limit once it holds the lock: with applies from
        # the loop and from _apply_soon, the last to run always sets the newest limit.
        async with self._apply_lock:
            return await self._apply_limit()

    async def _apply_limit(self) -> LimitOutcome | None:
        to_set = self._to_set()
        if to_set is None:
            return None
        limit, source = to_set
        outcome: LimitOutcome = await self._call(self.backend.apply_power_limit, limit)
        problem = self._record(outcome, source)
        if problem is not None:
            await self._report_not_applied(problem)
        return outcome

    def _apply_now(self, loop: asyncio.AbstractEventLoop) -> None:
        """_apply_limit for a backend that does not block, within the caller's step (its Warning
        Event, when one is due, is sent by a task)."""
        to_set = self._to_set()
        if to_set is None:
            return
        limit, source = to_set
        problem = self._record(self.backend.apply_power_limit(limit), source)
        if problem is not None:
            _spawn(loop, self._report_not_applied(problem))

    def _to_set(self) -> tuple[int, str] | None:
        """The limit to set on the GPUs and where it came from; None: nothing to set (the operator
        has not decided yet, or its site observes: the limit is then kept as its shadow)."""
        assigned = self.assigned_limit()
        if assigned is None:
            return None  # the operator has not decided yet: leave the devices as they are
        if observing(self.obj):
            # Shadow mode: what it would apply is reported (telemetry.shadowLimitWatts and the
            # fleet's metrics); the GPUs keep the limit they have.
            self.shadow_limit = assigned[0]
            return None
        self.shadow_limit = None
        return assigned

    def _record(self, outcome: LimitOutcome, source: str) -> str | None:
        """Keeps what an apply did; returns the message of a Warning Event when one is due (what
        could not be applied, once per distinct outcome)."""
        self.last_outcome = outcome
        if outcome.changed and self.stats is not None:
            self.stats.limit_changes[source] += 1
            self.stats.last_change_at = time.time()
        key = (outcome.requested_watts, outcome.problems)
        problem = None
        if outcome.problems and key != self.last_reported:
            problem = f"power limit {outcome.requested_watts} W per GPU not fully applied: " + "; ".join(
                outcome.problems)
            log.warning("%s/%s: %s", self.namespace, self.name, problem)
        elif not outcome.problems and self.last_reported and self.last_reported[1]:
            log.info("%s/%s: power limit %d W per GPU applied", self.namespace, self.name,
                     outcome.requested_watts)
        self.last_reported = key
        return problem if self.events else None

    async def _report_not_applied(self, message: str) -> None:
        try:
            await self.client.create_event(
                namespace=self.namespace, involved=self.obj, type_="Warning",
                reason=EVENT_REASON_NOT_APPLIED, message=message, component=COMPONENT)
        except (ApiError, OSError) as e:  # never fatal
            log.warning("%s/%s: cannot record event: %s", self.namespace, self.name, e)

    async def tick(self) -> bool:
        """Apply the limit, read, write telemetry. False when the GPUNode is gone.

        In a fleet, reading and writing wait for the fleet's writes gate: a rack's write wakes
        many agents of one process at once, and each sets its limit at once, but the readings of
        a simulated site (about 0.3 ms each) would otherwise keep the loop from the next rack's
        event (measured at 10,000 nodes: the last limit set 10 s after the last rack's write)."""
        await self.apply_limit()
        try:
            async with self.writes_gate or contextlib.nullcontext():
                meta = self.obj.get("metadata") or {}
                spec = self.obj.get("spec") or {}
                reading: NodeReading = await self._call(self.backend.read, spec,
                                                        dict(meta.get("annotations") or {}))
                peak = None
                if self.sample_interval is not None:
                    peak = max(self._peak_w, node_power_watts(reading, spec))
                patch = telemetry_patch(reading, spec, peak)
                if self.shadow_limit is not None:
                    patch["telemetry"]["shadowLimitWatts"] = self.shadow_limit
                elif self.last_telemetry and self.last_telemetry.get("shadowLimitWatts") is not None:
                    patch["telemetry"]["shadowLimitWatts"] = None  # enforcing again: no shadow left
                self.last_reading = reading
                self.last_peak_watts = peak
                if self._unchanged_for_prometheus(patch["telemetry"]):
                    self.skipped += 1
                    self._retry_in = None
                    self._peak_w = 0.0  # a new window all the same: the series show each one
                    return True
                await self.client.patch_status(GPU_NODES, self.namespace, self.name, patch)
        except ApiError as e:
            if e.status == 404:
                log.info("%s/%s: GPUNode deleted, agent stops", self.namespace, self.name)
                self.gone = True
                return False
            log.warning("%s/%s: telemetry not written: %s", self.namespace, self.name, e)
            self._failed_write()
            return True
        except OSError as e:  # the backend's or the host's I/O failed: retry
            log.warning("%s/%s: telemetry not written: %s", self.namespace, self.name,
                        str(e) or type(e).__name__)
            self._failed_write()
            return True
        self._retry_in = None
        self._peak_w = 0.0  # a new report window
        self.writes += 1
        self.last_telemetry = patch["telemetry"]
        self._last_write = asyncio.get_running_loop().time()
        return True

    def _unchanged_for_prometheus(self, telemetry: dict[str, Any]) -> bool:
        """Reporting to Prometheus, whether this report has nothing the operator cannot read in the
        series (the first one is always written)."""
        if self.report_to != "prometheus" or self.last_telemetry is None:
            return False
        last = self.last_telemetry
        return all(telemetry.get(k) == last.get(k) for k in UNSERIED_FIELDS)

    def _failed_write(self) -> None:
        """Try again after 1 s, then 2, 4, ... up to the interval."""
        self._retry_in = min(self.interval, MIN_WRITE_GAP if self._retry_in is None else 2 * self._retry_in)

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
                await _stopped(sampler)

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
                # Not wait_for: on Python 3.11 it swallows a cancellation that arrives as the event
                # is set (the agent then outlives Fleet.stop()).
                wait = next_at - now
                if self._retry_in is not None:
                    wait = min(wait, self._retry_in)
                await self._wait(wait)
            except TimeoutError:
                continue  # the interval is up (or a failed write's retry is due)
            # Woken by a change: a new limit goes to the GPUs at once; the report (the next pass:
            # reading the GPUs, writing) follows, but never more than one write a second. Even
            # without a wait, the loop is given back before reading: when a rack's write wakes
            # many agents of one process, each sets its limit before any of them reads.
            try:
                await self.apply_limit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s/%s: applying the power limit failed", self.namespace, self.name)
            await asyncio.sleep(max(0.0, self._last_write + MIN_WRITE_GAP - loop.time(),
                                    self.wake_report_delay))

    async def _wait(self, seconds: float) -> None:
        """Until woken (returns) or `seconds` have passed (TimeoutError). On a slice's ramp, its
        limit is applied again every RAMP_STEP meanwhile: the steps need no report each."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while self.ramping() and until - loop.time() > RAMP_STEP:
            try:
                async with asyncio.timeout(RAMP_STEP):
                    await self.wake.wait()
                return
            except TimeoutError:
                await self.apply_limit()
        async with asyncio.timeout(max(0.0, until - loop.time())):
            await self.wake.wait()

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
    """Agents for the GPUNodes of one namespace: the named ones, or every one (`names=None`).

    Three caches, each fed by its own list-then-watch: the GPUNodes (by name when there is one), the
    PowerLimitSlices (every slice of the namespace for several nodes; for one node, its own slice by
    name, the one its GPUNode's status names, followed when that changes) and the racks'
    powerLimits of an older operator (likewise, by the node's rackRef). An agent's limit is its
    slice's entry, else its rack's, else its GPUNode's status.powerLimitWatts."""

    def __init__(self, client: KubeClient, namespace: str, backend_factory: BackendFactory, *,
                 names: list[str] | None = None, interval: float = 10.0, watch: bool = True,
                 events: bool = True, seed: int | None = None,
                 failsafe_after: float | None = kinds.DEFAULT_FAILSAFE_AFTER_SECONDS,
                 sample_interval: float | None = 1.0,
                 failsafe_spread: float = DEFAULT_FAILSAFE_SPREAD_SECONDS,
                 report_to: str = "api") -> None:
        if report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, not {report_to!r}")
        self.report_to = report_to
        self.failsafe_after = failsafe_after
        self.failsafe_spread = max(0.0, failsafe_spread)
        self._failsafe_changed_at: float | None = None  # when the site-wide verdict last turned
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
        self.racks_synced = asyncio.Event()  # set after the first list of racks
        self.racks: dict[str, dict[str, int]] = {}  # rack name -> its status.powerLimits
        self.rack_safe: dict[str, dict[str, int]] = {}  # rack name -> its status.safeLimits
        self.stats = FleetStats()
        self.writes_gate = asyncio.Semaphore(FLEET_WRITES)
        self._rack_ref_changed = asyncio.Event()  # one node: the rack to watch is another one
        self.slices: dict[str, dict[str, SliceEntry]] = {}  # slice name -> node -> its entry
        self.slice_of: dict[str, str] = {}  # node -> the slice that lists it
        self.slices_synced = asyncio.Event()  # set after the first list of slices
        self._slice_ref_changed = asyncio.Event()  # one node: the slice to watch is another one

    @property
    def single(self) -> str | None:
        """The one GPUNode served, when there is exactly one (a real node's agent)."""
        if self.names is not None and len(self.names) == 1:
            return next(iter(self.names))
        return None

    @property
    def field_selector(self) -> str | None:
        one = self.single
        return f"metadata.name={one}" if one is not None else None

    def _phase(self, name: str) -> float:
        # Spread a fleet's writes over the interval; stable per name, so restarts keep the rhythm.
        return (zlib.crc32(name.encode()) % 1000) / 1000.0 * self.interval

    def _wanted(self, name: str) -> bool:
        return self.names is None or name in self.names

    def _rack_limit(self, name: str, obj: dict[str, Any]) -> int | None:
        return self.racks.get(rack_ref(obj), {}).get(name)

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
                              events=self.events, stats=self.stats, writes_gate=self.writes_gate,
                              sample_interval=self.sample_interval, report_to=self.report_to,
                              failsafe=self.failsafe and self._followed(name),
                              wake_report_delay=FLEET_WAKE_REPORT_DELAY if self.single is None else 0.0)
            agent.obj = obj
            agent.rack_limit = self._rack_limit(name, obj)
            agent.slice_entry = self._slice_entry(name)
            agent.rack_safe = self.rack_safe.get(rack_ref(obj), {}).get(name)
            self.agents[name] = agent
            self.tasks[name] = asyncio.create_task(agent.run(), name=f"agent-{name}")
            log.info("%s/%s: agent started", self.namespace, name)
            if self.single is not None:
                self._rack_ref_changed.set()
                self._slice_ref_changed.set()
        else:
            moved = rack_ref(agent.obj) != rack_ref(obj)
            if self.single is not None and slice_name_of(agent.obj) != slice_name_of(obj):
                self._slice_ref_changed.set()
            agent.update(obj)
            if moved:
                agent.set_rack_limit(self._rack_limit(name, obj))
                if self.single is not None:
                    self._rack_ref_changed.set()

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

    # -- the PowerLimitSlices -------------------------------------------------------------------

    def _slice_entry(self, node: str) -> SliceEntry | None:
        held = self.slice_of.get(node)
        return self.slices.get(held, {}).get(node) if held is not None else None

    def _slice_changed(self, name: str, entries: dict[str, SliceEntry] | None) -> None:
        """A slice now (None: gone): the agents it lists or listed get their entry (or lose it). A
        node that moved to another slice keeps the entry of the one that lists it last."""
        old = self.slices.pop(name, {})
        if entries is not None:
            self.slices[name] = entries
        for node in old.keys() | (entries or {}).keys():
            if entries is not None and node in entries:
                self.slice_of[node] = name
            elif self.slice_of.get(node) == name:
                del self.slice_of[node]
            else:
                continue
            agent = self.agents.get(node)
            if agent is not None:
                agent.set_slice_entry(self._slice_entry(node))

    def _sync_slices(self, items: list[dict[str, Any]]) -> None:
        """A (re)list: the listed slices first, then those gone dropped. Never all dropped and
        listed again: an agent sets a new limit within the handler, and between the two it would
        set its rack's or its GPUNode's (a raise, when the slice holds a curtailment)."""
        listed = {o["metadata"]["name"]: slice_entries(o) for o in items}
        for name, entries in listed.items():
            self._slice_changed(name, entries)
        for name in [n for n in self.slices if n not in listed]:
            self._slice_changed(name, None)
        self.slices_synced.set()

    def _on_slice_event(self, type_: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if type_ in ("ADDED", "MODIFIED"):
            self._slice_changed(name, slice_entries(obj))
        elif type_ == "DELETED":
            self._slice_changed(name, None)

    async def _follow_slices(self) -> None:
        one = self.single
        if one is None:  # several nodes: every slice of the namespace, one watch
            await self._informer(SLICES, self._sync_slices, self._on_slice_event, self.slices_synced, None)
            return
        # One node (a DaemonSet's agent): only the slice its GPUNode names, by name, so that a
        # curtailment's slice writes are not all sent to every node.
        task: asyncio.Task[None] | None = None
        watched: str | None = None
        try:
            while True:
                await self._slice_ref_changed.wait()
                self._slice_ref_changed.clear()
                agent = self.agents.get(one)
                ref = slice_name_of(agent.obj) if agent is not None else ""
                if ref == watched:
                    continue
                if task is not None:
                    await _stopped(task)
                    task = None
                self._sync_slices([])  # another slice: nothing known of it yet
                watched = ref
                if ref:
                    task = asyncio.create_task(self._informer(
                        SLICES, self._sync_slices, self._on_slice_event, self.slices_synced,
                        f"metadata.name={ref}"), name=f"slices {ref}")
        finally:
            if task is not None:
                await _stopped(task)

    # -- the racks' powerLimits ---------------------------------------------------------------

    def _rack_changed(self, rack: str, limits: dict[str, int] | None) -> None:
        """A rack's powerLimits now (None: the rack is gone): the agents it lists, or listed, and
        that belong to it get their entry (or lose it)."""
        old = self.racks.pop(rack, {})
        if limits is not None:
            self.racks[rack] = limits
        for name in old.keys() | (limits or {}).keys():
            agent = self.agents.get(name)
            if agent is not None and rack_ref(agent.obj) == rack:
                agent.set_rack_limit((limits or {}).get(name))

    def _note_safe(self, rack: str, limits: dict[str, int] | None) -> None:
        """A rack's safeLimits now (None: gone), for the agents that belong to it."""
        old = self.rack_safe.pop(rack, None) or {}
        if limits is not None:
            self.rack_safe[rack] = limits
        # The agents it lists or listed, not every agent: a site's 556 rack writes would otherwise
        # cost 556 passes over 10,000 agents (seconds of one process's CPU, measured in hack/bench.py).
        for name in old.keys() | (limits or {}).keys():
            agent = self.agents.get(name)
            if agent is not None and rack_ref(agent.obj) == rack:
                agent.rack_safe = (limits or {}).get(name)

    def _replace_racks(self, items: list[dict[str, Any]]) -> None:
        self.rack_safe = {}
        for agent in self.agents.values():
            agent.rack_safe = None
        for o in items:
            self._note_safe(o["metadata"]["name"], rack_safe_limits(o))
        self.racks = {o["metadata"]["name"]: rack_power_limits(o) for o in items}
        for name, agent in self.agents.items():
            agent.set_rack_limit(self._rack_limit(name, agent.obj))

    def _sync_racks(self, items: list[dict[str, Any]]) -> None:
        self._replace_racks(items)
        self.racks_synced.set()

    def _on_rack_event(self, type_: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if type_ in ("ADDED", "MODIFIED"):
            self._note_safe(name, rack_safe_limits(obj))
            self._rack_changed(name, rack_power_limits(obj))
        elif type_ == "DELETED":
            self._note_safe(name, None)
            self._rack_changed(name, None)

    def _informer(self, resource: ApiResource, on_list: Callable[[list[dict[str, Any]]], None],
                  on_event: Callable[[str, dict[str, Any]], None], synced: asyncio.Event,
                  field_selector: str | None) -> Coroutine[Any, Any, None]:
        """The operator's list-then-watch (client/informer.py), or a list every interval
        without `watch`: the API server down or unreachable only delays it, the agents keep
        running on what they have."""
        return run_informer(
            self.client, resource, self.namespace, lambda _kind, _ns, items: on_list(items), on_event,
            synced, field_selector=field_selector, watch_timeout=290,
            poll_interval=None if self.watch else self.interval, min_backoff=1.0, max_backoff=60.0,
            page_size=500)

    async def _follow_racks(self) -> None:
        one = self.single
        if one is None:  # several nodes: every rack of the namespace, one watch
            await self._informer(RACKS, self._sync_racks, self._on_rack_event, self.racks_synced, None)
            return
        # One node (a DaemonSet's agent): only its own rack, by name, so that a site's rack writes
        # are not all sent to every node; followed when its rackRef changes.
        task: asyncio.Task[None] | None = None
        watched: str | None = None
        try:
            while True:
                await self._rack_ref_changed.wait()
                self._rack_ref_changed.clear()
                agent = self.agents.get(one)
                ref = rack_ref(agent.obj) if agent is not None else ""
                if ref == watched:
                    continue
                if task is not None:
                    await _stopped(task)
                    task = None
                self._replace_racks([])  # another rack: nothing known of it yet
                watched = ref
                if ref:
                    task = asyncio.create_task(self._informer(
                        RACKS, self._sync_racks, self._on_rack_event, self.racks_synced,
                        f"metadata.name={ref}"), name=f"racks {ref}")
        finally:
            if task is not None:
                await _stopped(task)

    async def _follow(self) -> None:
        nodes = self._informer(GPU_NODES, self._sync_list, self._on_event, self.synced, self.field_selector)
        follow = [nodes, self._follow_slices(), self._follow_racks(), self._keep_frozen()]
        if self.failsafe_after is not None:
            follow.append(self._follow_lease(self.failsafe_after))
        await asyncio.gather(*follow)

    async def _keep_frozen(self) -> None:
        """Once the GPUNodes and the slices are listed, keeps the cyclic garbage collector off
        what is held so far, and, in a process of many agents, off what it holds since, every
        FLEET_FREEZE_EVERY seconds. A simulated fleet holds its whole site's objects; each object
        the watches replace frees a frozen one, so the collector's count hardly moves while its
        youngest generation fills with the site's live objects, and the collection that comes at
        last walks them all (measured in one process of 10,000 simulated agents with 300 GPUNodes
        replaced a second: 0.2 to 0.3 s, in the middle of a curtailment's slice events). Freezing
        walks nothing. What it gives up: a reference cycle that is garbage at the moment of a
        freeze is never freed. The watches' documents are trees and the agents do not point back
        at their tasks, so what a fleet holds forms none; what it replaces is still freed by its
        reference count. A node's own agent freezes once."""
        await self.synced.wait()
        await self.slices_synced.wait()
        gc.freeze()
        if self.single is not None:
            return  # one node's agent holds a handful of objects
        while True:
            await asyncio.sleep(FLEET_FREEZE_EVERY)
            gc.freeze()

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
        """Fail-safe when no renewal has been seen for `after` seconds (since start, before any).
        Each agent follows a change of that verdict at its own offset within the spread (spread.py):
        an agent that had not entered yet when the Lease came back never enters."""
        seen = self._lease_seen_at if self._lease_seen_at is not None else started
        on = now - seen > after
        if on != self.failsafe:
            self.failsafe = on
            # Dated from the lapse itself (or the renewal seen), not from this judgement.
            self._failsafe_changed_at = seen + after if on else now
            if on:
                log.warning("%s: the operator's Lease %s has not been renewed for %g s: fail-safe, "
                            "every agent enforces min(limit, safeLimitWatts) within %g s", self.namespace,
                            kinds.FAILSAFE_LEASE_NAME, after, self.failsafe_spread)
            else:
                log.info("%s: the operator's Lease is renewed again: fail-safe over within %g s",
                         self.namespace, self.failsafe_spread)
        changed = self._failsafe_changed_at
        if changed is not None:
            since = now - changed
            for agent in self.agents.values():
                # Leaving at a rate, every agent leaves at once: each takes its share of the
                # site's up rate, so together they rise at it (no spread needed).
                rising = not on and agent.exit_rate() is not None
                if agent.failsafe != on and (rising or follows(agent.name, self.failsafe_spread, since)):
                    agent.set_failsafe(on)
            if since >= self.failsafe_spread:
                self._failsafe_changed_at = None  # every agent has followed: nothing to walk
        return on

    def _followed(self, name: str) -> bool:
        """A new agent's part of a change under way: whether its offset has passed."""
        changed = self._failsafe_changed_at
        if changed is None:
            return True
        return follows(name, self.failsafe_spread, asyncio.get_running_loop().time() - changed)

    async def _follow_lease(self, after: float) -> None:
        """Follow the site's Lease (a GET, then a watch of it by name from there, which also shows it
        once the operator makes it) and switch every agent in or out of fail-safe, judged
        often enough that a lapse is seen within a fraction of `after` and of the interval."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Often enough that the spread is followed in steps of at most a twentieth of it.
        every = max(min(after / 8.0, self.interval / 4.0, 1.0, self.failsafe_spread / 20 or 1.0), 0.05)

        async def judge_forever() -> None:
            while True:
                self.judge_failsafe(loop.time(), after, started)
                await asyncio.sleep(every)

        judge = asyncio.create_task(judge_forever(), name=f"failsafe {self.namespace}")
        try:
            while True:
                try:
                    try:
                        lease = await self.client.get(LEASES, self.namespace, kinds.FAILSAFE_LEASE_NAME)
                        self.lease_seen(lease, loop.time(), datetime.now(UTC))
                        version = str((lease.get("metadata") or {}).get("resourceVersion") or "0")
                    except ApiError as e:
                        if e.status != 404 or isinstance(e, TransportError):
                            raise
                        version = "0"  # absent: the watch shows it when the operator makes it
                    async for event in self.client.watch(
                            LEASES, self.namespace, version,
                            field_selector=f"metadata.name={kinds.FAILSAFE_LEASE_NAME}"):
                        if event.get("type") in ("ADDED", "MODIFIED"):
                            self.lease_seen(event.get("object"), loop.time(), datetime.now(UTC))
                except (TransportError, WatchExpired, OSError) as e:
                    log.debug("%s: the Lease's watch ended: %s", self.namespace, e)
                except ApiError as e:
                    log.warning("%s: the operator's Lease is not readable: %s", self.namespace, e)
                await asyncio.sleep(every)  # read it again (no renewal is seen meanwhile)
        finally:
            await _stopped(judge)

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
        items, _ = await self.client.list(GPU_NODES, self.namespace, field_selector=self.field_selector)
        one = self.single
        rack_selector = None
        if one is not None:
            mine = [o for o in items if o["metadata"]["name"] == one]
            rack_selector = f"metadata.name={rack_ref(mine[0])}" if mine and rack_ref(mine[0]) else None
        if one is None or rack_selector is not None:
            try:
                racks, _ = await self.client.list(RACKS, self.namespace, field_selector=rack_selector)
                self.racks = {o["metadata"]["name"]: rack_power_limits(o) for o in racks}
            except (ApiError, OSError) as e:  # the GPUNodes' limits then
                log.warning("%s: racks not readable, limits from the GPUNodes: %s", self.namespace, e)
        mine_slice = slice_name_of(next((o for o in items if o["metadata"]["name"] == one), {}))
        if one is None or mine_slice:
            try:
                slices, _ = await self.client.list(
                    SLICES, self.namespace,
                    field_selector=f"metadata.name={mine_slice}" if one is not None else None)
                self._sync_slices(slices)
            except (ApiError, OSError) as e:  # the racks' or GPUNodes' limits then
                log.warning("%s: slices not readable, limits from the racks or GPUNodes: %s",
                            self.namespace, e)
        wrote = 0
        try:
            for obj in items:
                name = obj["metadata"]["name"]
                if not self._wanted(name):
                    continue
                agent = NodeAgent(self.client, self.namespace, name, self.factory(name, obj),
                                  interval=self.interval, events=self.events, obj=obj, stats=self.stats,
                                  rack_limit=self._rack_limit(name, obj), writes_gate=self.writes_gate,
                                  slice_entry=self._slice_entry(name))
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
