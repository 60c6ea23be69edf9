"""Active/standby between operator replicas over kopf's peering objects.

We speak kopf's peering protocol: the same `KopfPeering` (namespaced) and `ClusterKopfPeering`
objects, the same record per operator in their `status` (priority, lifetime, lastseen: the format
kept in peer_record.py), so `kopf freeze`, `kopf resume` and other kopf operators see us and we
see them. The engine does not run on kopf's per-object handlers (see engine.py), so kopf's own
pause switch would not stop it: this loop drives the engine's gate instead.

One deliberate difference: kopf pauses every operator when two share the highest priority. The
replicas of one Deployment are identical, so for an active/standby pair we break the tie by
identity: of the live peers with the highest priority, the one with the greatest identity acts.
A standby takes over when the active one's record expires (`lifetime` seconds after its last
keep-alive) or at once when the active one leaves cleanly and removes its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from stargate_operator.client import ApiError, ApiResource, KubeClient
from stargate_operator.controller.peer_record import PeerRecord, own_identity, parse_status

logger = logging.getLogger("stargate.peering")

KOPF_PEERINGS = ApiResource("kopf.dev", "v1", "kopfpeerings", "KopfPeering")
CLUSTER_KOPF_PEERINGS = ApiResource("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering",
                                    namespaced=False)

__all__ = ["Peering", "own_identity", "should_act"]


def should_act(me: str, my_priority: int, peers: Iterable[PeerRecord], now: datetime | None = None) -> bool:
    """True when no live peer outranks us by (priority, identity). Pure, tested."""
    now = now or datetime.now(UTC)
    for peer in peers:
        if peer.identity == me or peer.dead_at(now):
            continue
        if (peer.priority, peer.identity) > (my_priority, me):
            return False
    return True


class Peering:
    def __init__(self, client: KubeClient, name: str, namespaces: tuple[str, ...], priority: int,
                 gate: asyncio.Event, *, lifetime: int = 15, interval: float = 3.0,
                 identity: str | None = None) -> None:
        self.client = client
        self.name = name
        self.namespaces = namespaces  # empty: cluster-wide ClusterKopfPeering
        self.priority = priority
        self.gate = gate
        self.lifetime = lifetime
        self.interval = interval
        self.identity = identity or own_identity()

    def _targets(self) -> list[tuple[ApiResource, str | None]]:
        if self.namespaces:
            return [(KOPF_PEERINGS, ns) for ns in self.namespaces]
        return [(CLUSTER_KOPF_PEERINGS, None)]

    async def _touch(self, res: ApiResource, namespace: str | None, lifetime: int) -> dict[str, object]:
        record = PeerRecord(self.identity, self.priority, lifetime, datetime.now(UTC))
        body = {"status": {self.identity: record.as_dict() if lifetime > 0 else None}}
        try:
            out = await self.client.patch(res, namespace, self.name, body)
        except ApiError as e:
            if e.status != 404 or lifetime == 0:
                raise
            # kopf leaves creating the peering object to the user; we create it, once.
            meta: dict[str, str] = {"name": self.name}
            if namespace:
                meta["namespace"] = namespace
            await self.client.create(res, namespace, {"apiVersion": res.api_version, "kind": res.kind,
                                                      "metadata": meta})
            out = await self.client.patch(res, namespace, self.name, body)
        return out if isinstance(out, dict) else {}

    async def _forget(self, res: ApiResource, namespace: str | None, identities: list[str]) -> None:
        await self.client.patch(res, namespace, self.name, {"status": dict.fromkeys(identities)})

    async def run(self) -> None:
        ready = False  # outranked no live peer in the previous round as well
        try:
            while True:
                act = True
                others_alive = False
                try:
                    for res, ns in self._targets():
                        obj = await self._touch(res, ns, self.lifetime)
                        now = datetime.now(UTC)
                        peers = parse_status(obj.get("status"), now)
                        act = act and should_act(self.identity, self.priority, peers, now)
                        others_alive = others_alive or any(
                            p.identity != self.identity and not p.dead_at(now) for p in peers)
                        dead = [p.identity for p in peers if p.dead_at(now) and p.identity != self.identity]
                        if dead:
                            # As kopf does (autoclean): a crashed replica never removes its own
                            # record, and each restart adds one with a new identity.
                            await self._forget(res, ns, dead)
                except Exception as e:
                    # Without a word from the peering objects we cannot know that we are alone.
                    logger.warning("peering %s unavailable (%s); standing by", self.name, e)
                    act = False
                if act and not self.gate.is_set() and others_alive and not ready:
                    # A live peer may be acting now (we outrank it, e.g. we just started): it
                    # sees our record at its next round and stands by; wait one round for that,
                    # so that two replicas do not write at once. Alone, act at once.
                    ready = True
                    act = False
                else:
                    ready = act
                if act and not self.gate.is_set():
                    logger.info("peering %s: %s (priority %d) is now active", self.name, self.identity,
                                self.priority)
                    self.gate.set()
                elif not act and self.gate.is_set():
                    logger.info("peering %s: another operator outranks %s; standing by", self.name,
                                self.identity)
                    self.gate.clear()
                await asyncio.sleep(self.interval)
        finally:
            self.gate.clear()
            for res, ns in self._targets():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._touch(res, ns, 0))
