"""Active/standby between operator replicas: leader election on a `coordination.k8s.io/v1` Lease.

The algorithm and the Lease's fields are client-go's (`tools/leaderelection`, which
controller-runtime's managers use), so that `kubectl get lease` reads it as every controller's:

- one Lease per shard (the replicas that watch the same namespaces share its name), in the
  operator's own namespace; `spec.holderIdentity` is the leader, `leaseDurationSeconds` how long
  its claim holds without a renewal, `acquireTime`/`renewTime` when it took and last renewed it,
  `leaseTransitions` how often the leader changed;
- a candidate reads the Lease every `retry_period` (jittered) and takes it when it is free
  (absent, no holder) or when its record has not changed for `lease_duration` by the candidate's
  own clock (the time it *observed* the change, not the holder's `renewTime`: clocks need not agree);
- the leader renews every `retry_period`; a renewal that has not succeeded within
  `renew_deadline` of the last one makes it stand by (clear the gate) before anyone else may take
  the Lease, since `renew_deadline < lease_duration`;
- every write is an update with the `resourceVersion` that was read, so that of two candidates
  only one wins a race;
- on shutdown the leader releases the Lease (`holderIdentity` empty, `leaseDurationSeconds` 1,
  as client-go's ReleaseOnCancel): a standby takes over at its next try instead of after
  `lease_duration`.

The engine does not run on kopf's handlers, so this loop drives the engine's gate (`active`).
Two replicas that both believe they lead (a leader paused past its deadline, then resumed) can
still not both bind a claim: claims are written with a `resourceVersion` precondition.

The fail-safe Lease of each site namespace (lease.py) is a different Lease: the agents' heartbeat
of whichever replica acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from stargate_operator import kinds
from stargate_operator.client import LEASES, ApiError, KubeClient
from stargate_operator.controller.lease import micro_time

logger = logging.getLogger("stargate.leader")

# Shorter than client-go's 15 s, 10 s, 2 s (which client-go's checks allow): a failover must beat
# the agents' fail-safe, and the worst takeover (lease + 4.4 x retry, then a renewal of the
# fail-safe Lease at most a third of its 15 s after the last) is 19.4 s against their 30 s, where
# client-go's durations left 28.8 s. Renewing every second costs one read and one write a second
# per shard; the 7 s deadline still lets a renewal take 6 s on a slow API server.
DEFAULT_LEASE_DURATION = 10.0
DEFAULT_RENEW_DEADLINE = 7.0
DEFAULT_RETRY_PERIOD = 1.0
JITTER_FACTOR = 1.2  # client-go's: a candidate waits retry_period x (1 + up to 1.2)


@dataclass(frozen=True, slots=True)
class ElectionConfig:
    """One election: the Lease `namespace/name`, who we are, and client-go's three durations."""

    name: str
    namespace: str
    identity: str
    lease_duration: float = DEFAULT_LEASE_DURATION
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    retry_period: float = DEFAULT_RETRY_PERIOD

    def __post_init__(self) -> None:
        # client-go's checks, with the reasons a person can act on.
        if not self.name:
            raise ValueError("leader election needs a Lease name")
        if self.name == kinds.FAILSAFE_LEASE_NAME:
            raise ValueError(f"the leader election Lease may not be named {kinds.FAILSAFE_LEASE_NAME}: "
                             "that is the fail-safe Lease of every site namespace")
        if not self.identity:
            raise ValueError("leader election needs an identity")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(f"lease duration ({self.lease_duration:g}s) must be greater than the renew "
                             f"deadline ({self.renew_deadline:g}s)")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError(f"renew deadline ({self.renew_deadline:g}s) must be greater than "
                             f"{JITTER_FACTOR:g} x the retry period ({self.retry_period:g}s)")
        if self.retry_period <= 0:
            raise ValueError("the retry period must be > 0")


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    """The Lease's spec, as client-go's LeaderElectionRecord."""

    holder: str = ""
    lease_duration_s: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def of(cls, spec: Mapping[str, Any] | None) -> LeaderRecord:
        spec = spec or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_s=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"holderIdentity": self.holder, "leaseDurationSeconds": self.lease_duration_s,
                               "leaseTransitions": self.transitions}
        if self.acquire_time is not None:
            out["acquireTime"] = self.acquire_time
        if self.renew_time is not None:
            out["renewTime"] = self.renew_time
        return out


def held_by_another(record: LeaderRecord, me: str, observed_at: float, now: float) -> bool:
    """True while another candidate's claim holds: it has a holder, not us, and the record has
    changed within its lease duration of our clock (`observed_at`: when we saw it change). Pure."""
    return bool(record.holder) and record.holder != me and observed_at + record.lease_duration_s > now


def claimed(record: LeaderRecord | None, me: str, duration_s: int, now: str) -> LeaderRecord:
    """The record that takes or renews the Lease for `me` at wall time `now` (MicroTime). Pure:
    taking an existing Lease (held, expired or released) sets acquireTime and counts a transition,
    as client-go does; creating it counts none; a renewal keeps both."""
    if record is not None and record.holder == me:
        return replace(record, lease_duration_s=duration_s, renew_time=now)
    transitions = 0 if record is None else record.transitions + 1
    return LeaderRecord(me, duration_s, now, now, transitions)


def released(record: LeaderRecord, now: str) -> LeaderRecord:
    """client-go's release: no holder, a one-second lease, the transitions kept. Pure."""
    return LeaderRecord("", 1, now, now, record.transitions)


def default_identity() -> str:
    """The pod's name when the chart sets POD_ID (downward API), else host and process: unique
    per process, as client-go wants (host name plus a random suffix)."""
    return os.environ.get("POD_ID") or f"{socket.gethostname()}_{os.getpid()}"


class LeaderElector:
    """Runs one election and keeps `gate` set exactly while this process holds the Lease."""

    def __init__(self, client: KubeClient, config: ElectionConfig, gate: asyncio.Event, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.client = client
        self.config = config
        self.gate = gate
        self.clock = clock
        self.wall = wall
        self.observed: LeaderRecord | None = None
        self.observed_at = 0.0
        self._object: dict[str, Any] | None = None  # the Lease as last read or written
        self._logged_holder: str | None = None

    @property
    def identity(self) -> str:
        return self.config.identity

    @property
    def _path(self) -> str:
        return LEASES.path(self.config.namespace, self.config.name)

    def _observe(self, obj: dict[str, Any]) -> LeaderRecord:
        record = LeaderRecord.of(obj.get("spec"))
        if record != self.observed:
            self.observed, self.observed_at = record, self.clock()
        self._object = obj
        return record

    async def try_acquire_or_renew(self) -> bool:
        """One round of client-go's tryAcquireOrRenew: True when we hold the Lease after it."""
        cfg = self.config
        duration_s = max(round(cfg.lease_duration), 1)
        now = micro_time(self.wall())
        if await self._renew_optimistically(duration_s, now):
            return True
        try:
            obj = await self.client.get(LEASES, cfg.namespace, cfg.name)
        except ApiError as e:
            if e.status != 404:
                raise
            record = claimed(None, cfg.identity, duration_s, now)
            body = {"apiVersion": LEASES.api_version, "kind": LEASES.kind,
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace,
                                 "labels": {"app.kubernetes.io/name": "stargate-operator"}},
                    "spec": record.spec()}
            try:
                created = await self.client.create(LEASES, cfg.namespace, body)
            except ApiError as e2:
                if e2.status == 409:  # another candidate created it first
                    return False
                raise
            self._observe(created)
            return True
        record = self._observe(obj)
        if held_by_another(record, cfg.identity, self.observed_at, self.clock()):
            return False
        mine = claimed(record, cfg.identity, duration_s, now)
        body = {**obj, "spec": {**(obj.get("spec") or {}), **mine.spec()}}  # metadata keeps resourceVersion
        try:
            out = await self.client.request("PUT", self._path, verb="update", body=body)
        except ApiError as e:
            if e.status == 409:  # changed since we read it: someone else renewed or took it
                return False
            raise
        self._observe(out)
        return True

    async def _renew_optimistically(self, duration_s: int, now: str) -> bool:
        """client-go's fast path: the leader renews onto the version it last read or wrote, one
        request instead of a read and a write, so a slow API server costs a renewal one round trip
        of the renew deadline, not two. Any failure (a 409 when someone else wrote the Lease since)
        leaves it to the full round, which reads the Lease first."""
        obj, record = self._object, self.observed
        if obj is None or record is None or record.holder != self.config.identity:
            return False
        mine = claimed(record, self.config.identity, duration_s, now)
        body = {**obj, "spec": {**(obj.get("spec") or {}), **mine.spec()}}
        try:
            out = await self.client.request("PUT", self._path, verb="update", body=body)
        except ApiError as e:
            logger.debug("leader election %s: renewal onto the last version failed (%s); reading the "
                         "Lease", self.config.name, e)
            return False
        self._observe(out)
        return True

    async def _attempt(self, timeout: float | None = None) -> bool:
        try:
            if timeout is None:
                return await self.try_acquire_or_renew()
            return await asyncio.wait_for(self.try_acquire_or_renew(), max(timeout, 0.001))
        except (ApiError, OSError, TimeoutError) as e:
            logger.warning("leader election %s: %s/%s: %s", self.config.name, self.config.namespace,
                           self.config.name, e or type(e).__name__)
            return False

    def _log_standby(self) -> None:
        holder = self.observed.holder if self.observed is not None else ""
        if holder != self._logged_holder:
            self._logged_holder = holder
            logger.info("leader election %s: held by %s; %s standing by", self.config.name,
                        holder or "nobody", self.identity)

    async def run(self) -> None:
        cfg = self.config
        try:
            while True:
                # Candidate: until we hold the Lease.
                while not await self._attempt():
                    self._log_standby()
                    await asyncio.sleep(cfg.retry_period * (1 + random.random() * JITTER_FACTOR))
                last_renewed = self.clock()
                logger.info("leader election %s: %s is now active (Lease %s/%s)", cfg.name, self.identity,
                            cfg.namespace, cfg.name)
                self._logged_holder = self.identity
                self.gate.set()
                # Leader: renew every retry period; stand by once the renew deadline has passed.
                while True:
                    await asyncio.sleep(cfg.retry_period)
                    left = cfg.renew_deadline - (self.clock() - last_renewed)
                    if left > 0 and await self._attempt(left):
                        last_renewed = self.clock()
                        continue
                    holder = self.observed.holder if self.observed is not None else ""
                    if holder not in ("", self.identity):
                        break  # another candidate holds it now: stop acting at once
                    if self.clock() - last_renewed >= cfg.renew_deadline:
                        break
                self.gate.clear()
                logger.warning("leader election %s: lost the Lease (not renewed within %gs, or taken); "
                               "%s standing by", cfg.name, cfg.renew_deadline, self.identity)
        finally:
            was_leader = self.gate.is_set()
            self.gate.clear()
            if was_leader:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.release())

    async def release(self) -> bool:
        """Give the Lease up (only if we still hold it, as last read): True when released."""
        obj, record = self._object, self.observed
        if obj is None or record is None or record.holder != self.identity:
            return False
        free = released(record, micro_time(self.wall()))
        body = {**obj, "spec": {**(obj.get("spec") or {}), **free.spec()}}
        try:
            out = await self.client.request("PUT", self._path, verb="update", body=body)
        except ApiError as e:
            logger.warning("leader election %s: not released: %s", self.config.name, e)
            return False
        self._observe(out)
        logger.info("leader election %s: %s released the Lease", self.config.name, self.identity)
        return True
