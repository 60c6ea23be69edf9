"""The live summary: one read of the API per refresh, a rich frame, and the changes worth pointing at.

Cheap by construction: five list calls (sites, racks, GPU nodes, pools, claims, all namespaces) over
one keep-alive HTTPS connection (:class:`~stargate_operator.client.SyncApi`, as the control plane's
admin); no kubectl processes, no watches. At the sample's size (about 150 objects) a refresh costs a
few milliseconds.

:class:`Tracker` remembers the figures that the operator computes (budgets, limits, capacities, claim
phases) and reports each change once, with its time, so that a demand-response event can be seen
rippling from the site's budget to the racks, to every node's GPU power limit and, once the agents
enforce the new limits, to the measured power (which wanders by design, so only a move of more than
MEASURED_MOVE counts); a changed figure stays highlighted in the frame for a while.

:class:`Renderer` draws a frame as rich renderables (text lines and tables); the runner shows it in a
rich ``Live`` display in a terminal and prints it as plain text otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from stargate_operator import kinds
from stargate_operator.client import ApiError, ApiResource, SyncApi
from stargate_operator.units import bytes_, carbon, watts

KINDS = tuple(k.plural for k in kinds.KINDS)
HIGHLIGHT_SECONDS = 15.0
# A site's measured power wanders by a few percent (the simulated load does); a move of this share
# from the last reported value is news, e.g. the agents enforcing the lower limits of a curtailment.
MEASURED_MOVE = 0.08
HOT, BAD, DIM = "bold yellow", "bold red", "dim"


class ApiReader:
    """Lists the stargate kinds in every namespace through one synchronous client.

    On a machine loaded far beyond its cores a list can take seconds: the client's timeout should be
    generous, and a kind whose list fails keeps its last good list (``errors`` says which failed in
    the last call).
    """

    def __init__(self, api: SyncApi) -> None:
        self._api = api
        self._last: dict[str, list[dict[str, Any]]] = {}
        self.errors: list[str] = []

    def list(self, plural: str) -> list[dict[str, Any]]:
        return self._api.list(ApiResource.of(kinds.BY_PLURAL[plural]))

    def apply(self, plural: str, namespace: str, name: str, body: dict[str, Any], field_manager: str) -> None:
        """Server-side apply of a (partial) object, as ``kubectl apply --server-side`` does it (made
        again when a busy machine does not answer in time: applying is idempotent). Not forced: the
        demo's objects are its own."""
        self._api.apply(ApiResource.of(kinds.BY_PLURAL[plural]), namespace, name, body,
                        field_manager=field_manager, force=False, timeout=30.0)

    def snapshot(self) -> Snapshot:
        """Every kind, listed now where the API answers, else as last listed; raises when a kind was
        never listed."""
        self.errors = []
        for kind in KINDS:
            try:
                self._last[kind] = self.list(kind)
            except (ApiError, ValueError) as e:
                if kind not in self._last:
                    raise
                self.errors.append(f"{kind}: {e or type(e).__name__}")
        return Snapshot.from_lists(dict(self._last), taken=time.monotonic())

    def close(self) -> None:
        self._api.close()


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
    events: list[dict[str, Any]] = field(default_factory=list)  # GridEvents

    @classmethod
    def from_lists(cls, lists: dict[str, list[dict[str, Any]]], taken: float) -> Snapshot:
        def key(o: dict[str, Any]) -> tuple[str, str]:
            return (str(_get(o, "metadata", "namespace", default="")), str(_get(o, "metadata", "name")))

        def of(k: kinds.KindSpec) -> list[dict[str, Any]]:
            return lists.get(k.plural, [])

        racks = sorted(of(kinds.RACK), key=lambda r: (
            key(r)[0], -int(_get(r, "spec", "priority", default=kinds.DEFAULT_RACK_PRIORITY)), key(r)[1]))
        return cls(
            sites=sorted(of(kinds.STARGATE_CLUSTER), key=key),
            racks=racks,
            nodes=sorted(of(kinds.GPU_NODE), key=key),
            pools=sorted(of(kinds.MEMORY_POOL), key=key),
            claims=sorted(of(kinds.MEMORY_CLAIM), key=key),
            taken=taken,
            events=sorted(of(kinds.GRID_EVENT), key=key),
        )

    def grid_events_in_effect(self, ns: str, site: str) -> list[dict[str, Any]]:
        """The site's GridEvents that lower its budget or a feed now, as their status says."""
        return [e for e in self.events
                if e["metadata"].get("namespace") == ns and _get(e, "spec", "clusterRef") == site
                and _get(e, "status", "phase") == "Active" and _condition(e, "Ready") == "True"]

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


def _event_text(e: dict[str, Any]) -> str:
    """A GridEvent as the summary names it: its name, what it asks, and where (a feed, or the site)."""
    spec = e.get("spec") or {}
    asks = f"-{spec['reducePercent']}%" if "reducePercent" in spec else f"<= {watts(spec.get('limitWatts'))}"
    where = f" on {spec['powerDomainRef']}" if spec.get("powerDomainRef") else ""
    return f"{e['metadata']['name']} {asks}{where}"


def _tracked(s: Snapshot) -> dict[str, tuple[str, str]]:
    """key -> (label, value as shown) for the figures the operator decides."""
    out: dict[str, tuple[str, str]] = {}
    for site in s.sites:
        ns, name = site["metadata"].get("namespace", ""), site["metadata"]["name"]
        curt = _get(site, "spec", "power", "curtailment", "percent")
        out[f"site/{ns}/{name}/curtail"] = (f"{name} curtailment", f"{curt}%" if curt is not None else "none")
        events = ", ".join(_event_text(e) for e in s.grid_events_in_effect(ns, name))
        out[f"site/{ns}/{name}/grid"] = (f"{name} grid events", events or "none")
        for fig in ("budgetWatts", "allocatedWatts"):
            out[f"site/{ns}/{name}/{fig}"] = (
                f"{name} {fig.removesuffix('Watts')}", watts(_get(site, "status", "power", fig)))
        out[f"site/{ns}/{name}/overcommitted"] = (
            f"{name} PowerOvercommitted", str(_condition(site, "PowerOvercommitted")))
    groups = s.node_groups()
    for rack in s.racks:
        ns, name = rack["metadata"].get("namespace", ""), rack["metadata"]["name"]
        out[f"rack/{ns}/{name}/budgetWatts"] = (
            f"{name} budget", watts(_get(rack, "status", "power", "budgetWatts")))
        out[f"rack/{ns}/{name}/limit"] = (
            f"{name} GPU power limit", groups.get((ns, name), NodeGroup()).limit_text())
        out[f"rack/{ns}/{name}/healthy"] = (
            f"{name} healthy GPUs", str(_get(rack, "status", "gpus", "healthy")))
    for pool in s.pools:
        ns, name = pool["metadata"].get("namespace", ""), pool["metadata"]["name"]
        out[f"pool/{ns}/{name}/capacity"] = (
            f"pool {name} capacity", bytes_(_get(pool, "status", "capacityBytes")))
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
            now_w = _get(site, "status", "power", "measuredWatts")
            if not isinstance(now_w, int) or now_w <= 0:
                continue
            last = self.measured.get(key)
            if not self.armed or last is None:
                self.measured[key] = now_w
            elif abs(now_w - last) > MEASURED_MOVE * last:
                changes.append(Change(now, f"{site['metadata']['name']} measured", watts(last), watts(now_w)))
                self.changed_at[key] = (now, watts(last))
                self.measured[key] = now_w
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


def duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass(frozen=True)
class Glyphs:
    """Arrows and separators: Unicode where the output's encoding has them."""

    unicode: bool

    @property
    def arrow(self) -> str:
        return "→" if self.unicode else "->"

    @property
    def dot(self) -> str:
        return "·" if self.unicode else "|"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _table(*columns: tuple[str, str]) -> Table:
    """Columns (header, justify) without vertical rules, so that a row reads as words with spaces
    between them, in a terminal and in a log file alike."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style=DIM, pad_edge=False,
                  padding=(0, 2, 0, 0))
    for header, justify in columns:
        table.add_column(header, justify="right" if justify == "right" else "left", no_wrap=True)
    return table


class Renderer:
    def __init__(self, glyphs: Glyphs, t0: float) -> None:
        self.glyphs = glyphs
        self.t0 = t0  # monotonic time of the demo's start: changes are shown as +seconds from it

    def _fig(self, tracker: Tracker, key: str, text: str, now: float) -> Text:
        """``text``, highlighted (with what it was) if it changed recently."""
        was = tracker.was(key, now)
        if was is None:
            return Text(text)
        return Text.assemble((text, HOT), (f" (was {was})", DIM))

    def frame(self, snap: Snapshot, tracker: Tracker, *, now: float,
              header: Iterable[RenderableType] = ()) -> Group:
        g = self.glyphs
        parts: list[RenderableType] = list(header)
        groups = snap.node_groups()
        for site in snap.sites:
            ns, name = site["metadata"].get("namespace", ""), site["metadata"]["name"]
            spec, status = site.get("spec") or {}, site.get("status") or {}
            power = status.get("power") or {}
            curt = _get(spec, "power", "curtailment")
            title = Text.assemble(
                (name, "bold"), f"  ns {ns} {g.dot} {_get(spec, 'site', 'kind', default='?')}, "
                f"{_get(spec, 'site', 'cooling', default='?')} cooling")
            if curt:
                reason = str(curt.get("reason") or "").strip()
                title.append("  ").append(f"CURTAILED {curt.get('percent')}%", HOT)
                if reason:
                    title.append(f" ({_fit(reason, 60)})")
            for event in snap.grid_events_in_effect(ns, name):
                title.append("  ").append(f"GRID EVENT {_event_text(event)}", HOT)
                if _condition(event, "Met") == "False":
                    title.append(" ").append("NOT MET", BAD)
            if _condition(site, "PowerOvercommitted") == "True":
                title.append("  ").append("OVERCOMMITTED", BAD)
            prefix = f"site/{ns}/{name}/"
            figures = Text("  budget ").append_text(
                self._fig(tracker, prefix + "budgetWatts", watts(power.get("budgetWatts")), now))
            figures.append("   allocated ").append_text(
                self._fig(tracker, prefix + "allocatedWatts", watts(power.get("allocatedWatts")), now))
            figures.append(f"   demand {watts(power.get('demandWatts'))}"
                           f"   floors {watts(power.get('floorWatts'))}   measured ")
            figures.append_text(
                self._fig(tracker, prefix + "measuredWatts", watts(power.get("measuredWatts")), now))
            figures.append(f"   facility {watts(power.get('facilityWatts'))}")
            gpus = status.get("gpus") or {}
            site_nodes = [n for n in snap.nodes if n["metadata"].get("namespace") == ns]
            reporting = sum(1 for n in site_nodes if _get(n, "status", "telemetry", "observedAt"))
            co2 = status.get("carbonGramsPerHour")
            counts = Text(f"  GPUs {gpus.get('healthy', '-')}/{gpus.get('total', '-')} healthy {g.dot} "
                          f"{status.get('nodes', '-')} nodes, {reporting} reporting telemetry"
                          + (f" {g.dot} {carbon(co2, 0)}" if co2 is not None else ""))
            parts += [Text(""), title, figures, counts]

            racks = _table(("rack", "left"), ("prio", "right"), ("GPUs", "right"), ("budget", "right"),
                           ("demand", "right"), ("measured", "right"), ("GPU limit", "left"))
            for rack in (r for r in snap.racks if r["metadata"].get("namespace") == ns):
                rname = rack["metadata"]["name"]
                rp = _get(rack, "status", "power", default={}) or {}
                rg = _get(rack, "status", "gpus", default={}) or {}
                rkey = f"rack/{ns}/{rname}/"
                group = groups.get((ns, rname), NodeGroup())
                limit = self._fig(tracker, rkey + "limit", group.limit_text(), now)
                if _condition(rack, "PowerCapped") == "True":
                    limit.append("  capped", DIM)
                racks.add_row(
                    _fit(rname, 24), str(_get(rack, "spec", "priority", default=kinds.DEFAULT_RACK_PRIORITY)),
                    self._fig(tracker, rkey + "healthy", f"{rg.get('healthy', '-')}/{rg.get('total', '-')}",
                              now),
                    self._fig(tracker, rkey + "budgetWatts", watts(rp.get("budgetWatts")), now),
                    watts(rp.get("demandWatts")), watts(rp.get("measuredWatts")), limit,
                )
            if racks.row_count:
                parts.append(Padding.indent(racks, 2))

            pools = _table(("pool", "left"), ("tier", "left"), ("capacity", "right"), ("allocated", "right"),
                           ("claims", "left"))
            for pool in (p for p in snap.pools if p["metadata"].get("namespace") == ns):
                pname = pool["metadata"]["name"]
                pst = pool.get("status") or {}
                claims = pst.get("claims") or {}
                waiting = [c["metadata"]["name"] for c in snap.claims
                           if c["metadata"].get("namespace") == ns and _get(c, "spec", "poolRef") == pname
                           and _get(c, "status", "phase") == "Pending"]
                text = f"{claims.get('bound', 0)} bound, {claims.get('pending', 0)} pending"
                if waiting:
                    text += " (" + ", ".join(waiting) + ")"
                pools.add_row(
                    _fit(pname, 24), str(_get(pool, "spec", "tier", default="?")),
                    self._fig(tracker, f"pool/{ns}/{pname}/capacity", bytes_(pst.get("capacityBytes")), now),
                    bytes_(pst.get("allocatedBytes")), text,
                )
            if pools.row_count:
                parts.append(Padding.indent(pools, 2))
        bound, pending = snap.claim_counts()
        parts += [Text(""), Text(f"claims: {bound} bound, {pending} pending")]
        if tracker.history:
            parts += [Text(""), Text("recent changes", style="bold")]
            parts += [self.change(c) for c in tracker.history[-8:]]
        return Group(*parts)

    def change(self, c: Change) -> Text:
        return Text.assemble(f"  +{c.at - self.t0:6.1f}s  {c.label}: {c.old} {self.glyphs.arrow} ",
                             (c.new, HOT))
