"""The live summary: one read of the API per refresh, a text frame, and the changes worth pointing at.

Cheap by construction: five list calls (sites, racks, GPU nodes, pools, claims, all namespaces) over
one keep-alive HTTPS connection with the control plane's admin certificate; no kubectl processes,
no watches. At the sample's size (about 150 objects) a refresh costs a few milliseconds.

:class:`Tracker` remembers the figures that the operator computes (budgets, limits, capacities, claim
phases) and reports each change once, with its time, so that a demand-response event can be seen
rippling from the site's budget to the racks, to every node's GPU power limit and, once the agents
enforce the new limits, to the measured power (which wanders by design, so only a move of more than
MEASURED_MOVE counts); a changed figure stays highlighted in the frame for a while.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from stargate_operator.kube import GROUP_PATH

KINDS = ("stargateclusters", "racks", "gpunodes", "memorypools", "memoryclaims")
HIGHLIGHT_SECONDS = 15.0
# A site's measured power wanders by a few percent (the simulated load does); a move of this share
# from the last reported value is news, e.g. the agents enforcing the lower limits of a curtailment.
MEASURED_MOVE = 0.08


class ApiReader:
    """Lists the stargate kinds in every namespace with a plain synchronous HTTPS client.

    On a machine loaded far beyond its cores a list can take seconds: the timeout is generous, and a
    kind whose list fails keeps its last good list (``errors`` says which failed in the last call).
    """

    def __init__(self, server: str, ssl_context: ssl.SSLContext, timeout: float = 20.0) -> None:
        self._http = httpx.Client(base_url=server, verify=ssl_context, timeout=timeout)
        self._last: dict[str, list[dict[str, Any]]] = {}
        self.errors: list[str] = []

    def list(self, plural: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 500}
        while True:
            resp = self._http.get(f"{GROUP_PATH}/{plural}", params=params)
            resp.raise_for_status()
            page = resp.json()
            items += page.get("items") or []
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return items
            params = {"limit": 500, "continue": cont}

    def apply(self, plural: str, namespace: str, name: str, body: dict[str, Any], field_manager: str) -> None:
        """Server-side apply of a (partial) object, as ``kubectl apply --server-side`` does it; applying
        is idempotent, so a timeout on a busy machine is retried."""
        for attempt in range(3):
            try:
                resp = self._http.patch(
                    f"{GROUP_PATH}/namespaces/{namespace}/{plural}/{name}",
                    params={"fieldManager": field_manager},
                    content=json.dumps(body).encode(),
                    headers={"Content-Type": "application/apply-patch+yaml"},
                    timeout=30.0,
                )
            except httpx.TransportError:
                if attempt == 2:
                    raise
                continue
            resp.raise_for_status()
            return

    def snapshot(self) -> Snapshot:
        """Every kind, listed now where the API answers, else as last listed; raises when a kind was
        never listed."""
        self.errors = []
        for kind in KINDS:
            try:
                self._last[kind] = self.list(kind)
            except (httpx.HTTPError, ValueError) as e:
                if kind not in self._last:
                    raise
                self.errors.append(f"{kind}: {e or type(e).__name__}")
        return Snapshot.from_lists(dict(self._last), taken=time.monotonic())

    def close(self) -> None:
        self._http.close()


# ---------------------------------------------------------------------------------------- the model


def _get(obj: Any, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(obj, dict) or p not in obj:
            return default
        obj = obj[p]
    return obj


def _condition(obj: dict[str, Any], type_: str) -> str | None:
    for c in _get(obj, "status", "conditions", default=[]) or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


def _current(obj: dict[str, Any]) -> bool:
    """Its status was written for its current spec."""
    gen = _get(obj, "metadata", "generation")
    return gen is not None and _get(obj, "status", "observedGeneration") == gen


@dataclass
class NodeGroup:
    """The GPU nodes of one rack, as the summary shows them."""

    nodes: int = 0
    reporting: int = 0
    limits: list[int] = field(default_factory=list)

    def limit_text(self) -> str:
        if not self.limits:
            return "-"
        lo, hi = min(self.limits), max(self.limits)
        return f"{lo} W" if lo == hi else f"{lo}-{hi} W"


@dataclass
class Snapshot:
    sites: list[dict[str, Any]]
    racks: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    pools: list[dict[str, Any]]
    claims: list[dict[str, Any]]
    taken: float

    @classmethod
    def from_lists(cls, lists: dict[str, list[dict[str, Any]]], taken: float) -> Snapshot:
        def key(o: dict[str, Any]) -> tuple[str, str]:
            return (str(_get(o, "metadata", "namespace", default="")), str(_get(o, "metadata", "name")))

        racks = sorted(lists.get("racks", []),
                       key=lambda r: (key(r)[0], -int(_get(r, "spec", "priority", default=500)), key(r)[1]))
        return cls(
            sites=sorted(lists.get("stargateclusters", []), key=key),
            racks=racks,
            nodes=sorted(lists.get("gpunodes", []), key=key),
            pools=sorted(lists.get("memorypools", []), key=key),
            claims=sorted(lists.get("memoryclaims", []), key=key),
            taken=taken,
        )

    def node_groups(self) -> dict[tuple[str, str], NodeGroup]:
        groups: dict[tuple[str, str], NodeGroup] = {}
        for n in self.nodes:
            k = (str(n["metadata"].get("namespace", "")), str(_get(n, "spec", "rackRef", default="")))
            g = groups.setdefault(k, NodeGroup())
            g.nodes += 1
            if _get(n, "status", "telemetry", "observedAt"):
                g.reporting += 1
            limit = _get(n, "status", "powerLimitWatts")
            if isinstance(limit, int):
                g.limits.append(limit)
        return groups

    def pending(self) -> list[str]:
        """What is not yet settled, for the convergence check; empty when everything is."""
        out: list[str] = []
        everything = [*self.sites, *self.racks, *self.nodes, *self.pools, *self.claims]
        stale = [o for o in everything if not _current(o)]
        if stale:
            out.append(f"{len(stale)} object(s) without an up-to-date status")
        if not self.sites:
            out.append("no StargateCluster yet")
        out += [f"site {s['metadata']['name']} has no budget" for s in self.sites
                if not _get(s, "status", "power", "budgetWatts")]
        unphased = [c for c in self.claims if not _get(c, "status", "phase")]
        if unphased:
            out.append(f"{len(unphased)} claim(s) without a phase")
        return out

    def silent_nodes(self) -> int:
        """GPU nodes without telemetry yet."""
        return sum(1 for n in self.nodes if not _get(n, "status", "telemetry", "observedAt"))

    def waiting_for_telemetry(self) -> list[str]:
        """With agents: what is not measured yet (nodes without telemetry, sites without measured power)."""
        out = []
        if silent := self.silent_nodes():
            out.append(f"{silent} node(s) without telemetry")
        out += [f"site {s['metadata']['name']} not measured yet" for s in self.sites
                if not _get(s, "status", "power", "measuredWatts")]
        return out

    def claim_counts(self) -> tuple[int, int]:
        bound = sum(1 for c in self.claims if _get(c, "status", "phase") == "Bound")
        return bound, len(self.claims) - bound


# ---------------------------------------------------------------------------------------- changes


@dataclass
class Change:
    at: float
    label: str
    old: str
    new: str


def _tracked(s: Snapshot) -> dict[str, tuple[str, str]]:
    """key -> (label, value as shown) for the figures the operator decides."""
    out: dict[str, tuple[str, str]] = {}
    for site in s.sites:
        ns, name = site["metadata"].get("namespace", ""), site["metadata"]["name"]
        curt = _get(site, "spec", "power", "curtailment", "percent")
        out[f"site/{ns}/{name}/curtail"] = (f"{name} curtailment", f"{curt}%" if curt is not None else "none")
        for fig in ("budgetWatts", "allocatedWatts"):
            out[f"site/{ns}/{name}/{fig}"] = (
                f"{name} {fig.removesuffix('Watts')}", kw(_get(site, "status", "power", fig)))
        out[f"site/{ns}/{name}/overcommitted"] = (
            f"{name} PowerOvercommitted", str(_condition(site, "PowerOvercommitted")))
    groups = s.node_groups()
    for rack in s.racks:
        ns, name = rack["metadata"].get("namespace", ""), rack["metadata"]["name"]
        out[f"rack/{ns}/{name}/budgetWatts"] = (
            f"{name} budget", kw(_get(rack, "status", "power", "budgetWatts")))
        out[f"rack/{ns}/{name}/limit"] = (
            f"{name} GPU power limit", groups.get((ns, name), NodeGroup()).limit_text())
        out[f"rack/{ns}/{name}/healthy"] = (
            f"{name} healthy GPUs", str(_get(rack, "status", "gpus", "healthy")))
    for pool in s.pools:
        ns, name = pool["metadata"].get("namespace", ""), pool["metadata"]["name"]
        out[f"pool/{ns}/{name}/capacity"] = (
            f"pool {name} capacity", size(_get(pool, "status", "capacityBytes")))
    for claim in s.claims:
        ns, name = claim["metadata"].get("namespace", ""), claim["metadata"]["name"]
        out[f"claim/{ns}/{name}/phase"] = (f"claim {name}", str(_get(claim, "status", "phase")))
    return out


class Tracker:
    """Reports each change of a tracked figure once; remembers when it changed, for highlighting."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, str]] = {}
        self.changed_at: dict[str, tuple[float, str]] = {}
        self.history: list[Change] = []
        self.armed = False  # before convergence everything changes: not news
        self.measured: dict[str, int] = {}  # site key -> measured watts when last reported

    def update(self, snap: Snapshot, now: float) -> list[Change]:
        new = _tracked(snap)
        changes: list[Change] = []
        for key, (label, value) in new.items():
            old = self.values.get(key)
            if self.armed and old is not None and old[1] != value:
                changes.append(Change(now, label, old[1], value))
                self.changed_at[key] = (now, old[1])
        self.values = new
        for site in snap.sites:
            key = f"site/{site['metadata'].get('namespace', '')}/{site['metadata']['name']}/measuredWatts"
            watts = _get(site, "status", "power", "measuredWatts")
            if not isinstance(watts, int) or watts <= 0:
                continue
            last = self.measured.get(key)
            if not self.armed or last is None:
                self.measured[key] = watts
            elif abs(watts - last) > MEASURED_MOVE * last:
                changes.append(Change(now, f"{site['metadata']['name']} measured", kw(last), kw(watts)))
                self.changed_at[key] = (now, kw(last))
                self.measured[key] = watts
        self.history += changes
        del self.history[:-12]
        return changes

    def was(self, key: str, now: float) -> str | None:
        """The previous value of a figure that changed within HIGHLIGHT_SECONDS, else None."""
        hit = self.changed_at.get(key)
        if hit is None or now - hit[0] > HIGHLIGHT_SECONDS:
            return None
        return hit[1]


# ---------------------------------------------------------------------------------------- rendering


def kw(watts: Any) -> str:
    if not isinstance(watts, int | float):
        return "-"
    return f"{watts / 1000:,.1f} kW"


def size(n: Any) -> str:
    """Bytes in decimal units, as the samples and GPU data sheets give them (192 GB of HBM)."""
    if not isinstance(n, int | float):
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000:
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1000
    return f"{value:,.1f} PB"


def duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass
class Style:
    color: bool
    unicode: bool

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.color else text

    def hot(self, text: str) -> str:
        return f"\x1b[1;33m{text}\x1b[0m" if self.color else text

    def bad(self, text: str) -> str:
        return f"\x1b[1;31m{text}\x1b[0m" if self.color else text

    def dim(self, text: str) -> str:
        return f"\x1b[2m{text}\x1b[0m" if self.color else text

    @property
    def arrow(self) -> str:
        return "→" if self.unicode else "->"

    @property
    def dot(self) -> str:
        return "·" if self.unicode else "|"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


class Renderer:
    def __init__(self, style: Style, t0: float) -> None:
        self.style = style
        self.t0 = t0  # monotonic time of the demo's start: changes are shown as +seconds from it

    def _fig(self, tracker: Tracker, key: str, text: str, now: float, width: int = 0) -> str:
        """``text`` padded to ``width``, highlighted (with what it was) if it changed recently."""
        padded = text.rjust(width) if width else text
        was = tracker.was(key, now)
        if was is None:
            return padded
        return self.style.hot(padded) + self.style.dim(f" (was {was})")

    def frame(self, snap: Snapshot, tracker: Tracker, *, now: float, header: Iterable[str]) -> str:
        st, lines = self.style, list(header)
        groups = snap.node_groups()
        for site in snap.sites:
            ns, name = site["metadata"].get("namespace", ""), site["metadata"]["name"]
            spec, status = site.get("spec") or {}, site.get("status") or {}
            power = status.get("power") or {}
            curt = _get(spec, "power", "curtailment")
            title = (f"{st.bold(name)}  ns {ns} {st.dot} {_get(spec, 'site', 'kind', default='?')}, "
                     f"{_get(spec, 'site', 'cooling', default='?')} cooling")
            if curt:
                reason = str(curt.get("reason") or "").strip()
                title += "  " + st.hot(f"CURTAILED {curt.get('percent')}%") + (f" ({_fit(reason, 60)})"
                                                                                 if reason else "")
            if _condition(site, "PowerOvercommitted") == "True":
                title += "  " + st.bad("OVERCOMMITTED")
            lines += ["", title]
            prefix = f"site/{ns}/{name}/"
            lines.append(
                "  budget " + self._fig(tracker, prefix + "budgetWatts", kw(power.get("budgetWatts")), now)
                + "   allocated "
                + self._fig(tracker, prefix + "allocatedWatts", kw(power.get("allocatedWatts")), now)
                + f"   demand {kw(power.get('demandWatts'))}   floors {kw(power.get('floorWatts'))}"
                + "   measured "
                + self._fig(tracker, prefix + "measuredWatts", kw(power.get("measuredWatts")), now)
                + f"   facility {kw(power.get('facilityWatts'))}"
            )
            gpus = status.get("gpus") or {}
            site_nodes = [n for n in snap.nodes if n["metadata"].get("namespace") == ns]
            reporting = sum(1 for n in site_nodes if _get(n, "status", "telemetry", "observedAt"))
            carbon = status.get("carbonGramsPerHour")
            lines.append(
                f"  GPUs {gpus.get('healthy', '-')}/{gpus.get('total', '-')} healthy {st.dot} "
                f"{status.get('nodes', '-')} nodes, {reporting} reporting telemetry"
                + (f" {st.dot} {carbon / 1000:,.0f} kg CO2e/h" if isinstance(carbon, int | float) else "")
            )
            lines.append(st.dim(f"  {'rack':<14}{'prio':>5}{'GPUs':>9}{'budget':>12}{'demand':>12}"
                                f"{'measured':>12}   GPU limit"))
            for rack in (r for r in snap.racks if r["metadata"].get("namespace") == ns):
                rname = rack["metadata"]["name"]
                rp = _get(rack, "status", "power", default={}) or {}
                rg = _get(rack, "status", "gpus", default={}) or {}
                rkey = f"rack/{ns}/{rname}/"
                group = groups.get((ns, rname), NodeGroup())
                capped = _condition(rack, "PowerCapped") == "True"
                lines.append(
                    f"  {_fit(rname, 13):<14}{_get(rack, 'spec', 'priority', default=500):>5}"
                    + self._fig(tracker, rkey + "healthy", f"{rg.get('healthy', '-')}/{rg.get('total', '-')}",
                                now, 9)
                    + self._fig(tracker, rkey + "budgetWatts", kw(rp.get("budgetWatts")), now, 12)
                    + f"{kw(rp.get('demandWatts')):>12}{kw(rp.get('measuredWatts')):>12}   "
                    + self._fig(tracker, rkey + "limit", group.limit_text(), now)
                    + (st.dim("  capped") if capped else "")
                )
            pools = [p for p in snap.pools if p["metadata"].get("namespace") == ns]
            if pools:
                lines.append(st.dim(f"  {'pool':<18}{'tier':<6}{'capacity':>12}{'allocated':>12}   claims"))
            for pool in pools:
                pname = pool["metadata"]["name"]
                pst = pool.get("status") or {}
                claims = pst.get("claims") or {}
                waiting = [c["metadata"]["name"] for c in snap.claims
                           if c["metadata"].get("namespace") == ns and _get(c, "spec", "poolRef") == pname
                           and _get(c, "status", "phase") == "Pending"]
                text = f"{claims.get('bound', 0)} bound, {claims.get('pending', 0)} pending"
                if waiting:
                    text += " (" + ", ".join(waiting) + ")"
                lines.append(
                    f"  {_fit(pname, 17):<18}{_get(pool, 'spec', 'tier', default='?'):<6}"
                    + self._fig(tracker, f"pool/{ns}/{pname}/capacity", size(pst.get("capacityBytes")),
                                now, 12)
                    + f"{size(pst.get('allocatedBytes')):>12}   {text}"
                )
        bound, pending = snap.claim_counts()
        lines += ["", f"claims: {bound} bound, {pending} pending"]
        if tracker.history:
            lines += ["", st.bold("recent changes")]
            lines += [self.change(c) for c in tracker.history[-8:]]
        return "\n".join(lines)

    def change(self, c: Change) -> str:
        st = self.style
        return f"  +{c.at - self.t0:6.1f}s  {c.label}: {c.old} {st.arrow} {st.hot(c.new)}"
