"""kopf's peering record, kept here rather than imported from kopf's internals.

Each operator keeps one entry in the `status` of a `KopfPeering` (namespaced) or
`ClusterKopfPeering` object, keyed by its identity:

    status:
      <identity>: {priority: 100, lifetime: 15, lastseen: "2026-01-01T12:00:00.123Z"}

and removes it (sets it to null) when it leaves. kopf 1.45 (`kopf/_core/engines/peering.py`,
`Peer.as_dict` and `detect_own_id`) writes exactly these three fields; `lastseen` is parsed with
iso8601, which reads our RFC 3339 form as well as kopf's `isoformat()`. A record is dead once
`lastseen + lifetime` has passed. Unknown fields are ignored, as kopf ignores them.
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import os
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stargate_operator.core.wire import as_utc, format_time

# kopf's alphabet for the random suffix of an identity (it has no "g").
_SUFFIX_CHARS = "abcdefhijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True, slots=True)
class PeerRecord:
    identity: str
    priority: int = 0
    lifetime: int = 60  # seconds; kopf's default when a record has none
    lastseen: dt.datetime | None = None  # None: now (kopf's reading of a record without it)

    @classmethod
    def parse(cls, identity: str, info: Mapping[str, Any], now: dt.datetime | None = None) -> PeerRecord:
        """A record as found in a peering object's status (written by us or by kopf)."""
        seen = info.get("lastseen")
        lifetime = info.get("lifetime")
        return cls(
            identity=identity,
            priority=int(info.get("priority") or 0),
            lifetime=60 if lifetime is None else int(lifetime),
            lastseen=_parse_time(seen) if seen is not None else (now or dt.datetime.now(dt.UTC)),
        )

    def as_dict(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """The record as written to the peering object (kopf's three fields)."""
        seen = self.lastseen or now or dt.datetime.now(dt.UTC)
        return {"priority": int(self.priority), "lifetime": int(self.lifetime),
                "lastseen": format_time(seen, millis=True)}

    def deadline(self, now: dt.datetime | None = None) -> dt.datetime:
        seen = self.lastseen or now or dt.datetime.now(dt.UTC)
        return as_utc(seen) + dt.timedelta(seconds=self.lifetime)

    def dead_at(self, now: dt.datetime) -> bool:
        return self.deadline(now) <= as_utc(now)

    @property
    def is_dead(self) -> bool:
        return self.dead_at(dt.datetime.now(dt.UTC))


def parse_status(status: object, now: dt.datetime | None = None) -> list[PeerRecord]:
    """Every record of a peering object's status; entries that are not records are skipped."""
    if not isinstance(status, Mapping):
        return []
    return [PeerRecord.parse(str(ident), info, now) for ident, info in status.items()
            if isinstance(info, Mapping)]


def _parse_time(value: object) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return as_utc(value)
    text = str(value)
    # Python 3.11 reads RFC 3339 with "Z" and any fraction; kopf writes "+00:00".
    return as_utc(dt.datetime.fromisoformat(text))


def own_identity(*, manual: bool = False, now: dt.datetime | None = None) -> str:
    """As kopf's detect_own_id: the pod's name from $POD_ID when set (the chart sets it from the
    downward API), otherwise `user@host/YYYYmmddHHMMSS/xyz` (`user@host` with `manual`), so that
    kopf's CLI and peers read our records as their own kind."""
    pod = os.environ.get("POD_ID")
    if pod is not None:
        return pod
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers): kopf would fail
        user = str(os.getuid())
    host = descriptive_hostname()
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d%H%M%S")
    rnd = "".join(random.choices(_SUFFIX_CHARS, k=3))
    return f"{user}@{host}" if manual else f"{user}@{host}/{stamp}/{rnd}"


def descriptive_hostname() -> str:
    """kopf's choice of host name: a dotted name (not an IP, not .arpa) first, then a plain one
    other than localhost, else gethostname(); without .local/.localdomain suffixes."""
    try:
        hostname, aliases, addrs = socket.gethostbyaddr(socket.gethostname())
    except OSError:
        return _strip_suffixes(socket.gethostname())
    names = [hostname, *aliases, *addrs]

    def is_ip(name: str) -> bool:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    for name in names:
        if "." in name and not name.endswith(".arpa") and not is_ip(name):
            return _strip_suffixes(name)
    for name in names:
        if name != "localhost" and not name.endswith(".arpa") and not is_ip(name):
            return _strip_suffixes(name)
    return _strip_suffixes(socket.gethostname())


def _strip_suffixes(hostname: str) -> str:
    while hostname.endswith((".local", ".localdomain")):
        for suffix in (".local", ".localdomain"):
            hostname = hostname.removesuffix(suffix)
    return hostname
