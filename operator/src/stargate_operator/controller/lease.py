"""The fail-safe's heartbeat: a Lease per site namespace, renewed by the active
operator.

Node agents watch it: an agent that has not seen it renewed for `--failsafe-after` seconds (30 by
default) assumes the operator is gone and applies min(limit, safeLimitWatts), the limit that holds
even if every GPU draws it, until it sees a renewal again. So an operator that oversubscribes a
site never leaves it oversubscribed without someone watching the measured draw.

One `coordination.k8s.io/v1` Lease named `stargate-operator` in every namespace that holds a
StargateCluster, renewed by a merge patch (created by the first renewal that finds none): `holderIdentity`
(this process), `leaseDurationSeconds`, `renewTime` (and `acquireTime` when this process began to
hold it). Renewed every third of the duration, and only while the engine is active (the leader, with leader
election on) and its cache synced: a standby never renews, so the fail-safe follows the
replica that actually plans.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime

from stargate_operator import kinds
from stargate_operator.client import LEASES, ApiError, KubeClient

logger = logging.getLogger("stargate.lease")

LEASE_CONCURRENCY = 8  # fail-safe Leases renewed at once (each a request in flight)


def micro_time(at: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_holder() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def lease_body(namespace: str, holder: str, duration_s: int, renewed: datetime, acquired: datetime
               ) -> dict[str, object]:
    return {
        "apiVersion": LEASES.api_version,
        "kind": LEASES.kind,
        "metadata": {"name": kinds.FAILSAFE_LEASE_NAME, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "stargate-operator"}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration_s,
                 "acquireTime": micro_time(acquired), "renewTime": micro_time(renewed)},
    }


class LeaseKeeper:
    """Renews the fail-safe Lease of every site namespace the engine holds while it is active."""

    def __init__(self, client: KubeClient, namespaces: Callable[[], list[str]], active: asyncio.Event,
                 ready: Callable[[], bool], *, holder: str | None = None,
                 duration_s: int = kinds.DEFAULT_LEASE_DURATION_SECONDS,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.client = client
        self.namespaces = namespaces
        self.active = active
        self.ready = ready
        self.holder = holder or default_holder()
        self.duration_s = max(int(duration_s), 1)
        self.clock = clock
        self.renewals = 0
        self._acquired: dict[str, datetime] = {}

    @property
    def every(self) -> float:
        return self.duration_s / 3.0

    async def renew_all(self) -> int:
        """One round: renew the Lease of every site namespace, up to LEASE_CONCURRENCY at once (a
        round then takes a round trip per that many namespaces, not per namespace: on a slow API
        server the last namespace's agents would otherwise wait for every other's renewal);
        returns how many were renewed."""
        gate = asyncio.Semaphore(LEASE_CONCURRENCY)

        async def renew(ns: str) -> bool:
            async with gate:
                now = self.clock()
                acquired = self._acquired.setdefault(ns, now)
                body = lease_body(ns, self.holder, self.duration_s, now, acquired)
                try:
                    try:
                        await self.client.patch(LEASES, ns, kinds.FAILSAFE_LEASE_NAME, {"spec": body["spec"]})
                    except ApiError as e:
                        if e.status != 404:
                            raise
                        await self.client.create(LEASES, ns, body)  # the first renewal makes it
                except (ApiError, OSError) as e:  # the next round tries again
                    logger.warning("%s: fail-safe Lease not renewed: %s", ns, e)
                    return False
                return True

        done = sum(await asyncio.gather(*(renew(ns) for ns in self.namespaces())))
        self.renewals += done
        return done

    async def run(self) -> None:
        while True:
            if self.active.is_set() and self.ready():
                await self.renew_all()
                await asyncio.sleep(self.every)
            else:
                self._acquired.clear()  # a standby holds nothing: the next active term starts anew
                await asyncio.sleep(min(self.every, 0.5))  # renew as soon as it acts


def site_namespaces(objects_by_namespace: Callable[[], list[str]],
                    objects: Callable[[str], list[dict[str, object]]]) -> Callable[[], list[str]]:
    """The namespaces that hold a StargateCluster, from the engine's store."""
    def namespaces() -> list[str]:
        return sorted(ns for ns in objects_by_namespace()
                      if any(o.get("kind") == kinds.STARGATE_CLUSTER.kind for o in objects(ns)))
    return namespaces
