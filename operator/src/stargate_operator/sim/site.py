"""The site under test: its tree and its racks, from manifests or generated, filled to any node count.

A `Template` is the site's fixed part (the StargateCluster and its PowerDomains: the tree whose
capacity is the question) and its racks in *fill order*: the racks interleaved across the domains
that feed them (powerDomainRef), so that the first k racks spread over the tree as evenly as
racks can. `build(template, n, policy)` gives the site with n nodes: racks in fill order, each as
full as its template, and when the template's racks are used up, clones of them in the same order
(a clone keeps its template's domains, priority and nodes). So a bigger site only adds racks,
round-robin over the leaves of the tree.

The generated site (`generated(nodes)`) is a GB200 NVL72 site in the shape of NVIDIA's DPS example
(utility -> switchboards -> floor PDUs -> racks): 18 compute trays of 4 GPUs a rack (the product
table's figures), floor PDUs of 4 racks, switchboards of 3 floor PDUs, one utility feed. The feed
is sized to the nameplate of `nodes` nodes (today's provisioning: the feed is what is scarce),
the distribution beneath it with 30 % more, every breaker derated to 80 % (NEC's continuous-load
rule) and the site's budget equal to the feed's usable power.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stargate_operator.core.domains import ELECTRICAL
from stargate_operator.core.objects import parse_domain
from stargate_operator.core.products import BY_MODEL
from stargate_operator.kinds import (
    API_VERSION,
    DEFAULT_CAP_AT_PERCENT,
    DEFAULT_HOLD_SECONDS,
    DEFAULT_UNCAP_AT_PERCENT,
)
from stargate_operator.sim import DEFAULT_OVERSUBSCRIBE_PERCENT

STATIC = "static"
MEASURED = "measured"
POLICIES = (STATIC, MEASURED)
NAMESPACE = "sim"
MODEL = "GB200"
NODES_PER_RACK = 18
RACK_RATING_W = 132_000
RACKS_PER_PDU = 4
PDUS_PER_SWITCHBOARD = 3
DERATE_PERCENT = 80
DISTRIBUTION_MARGIN = 1.3


@dataclass(frozen=True, slots=True)
class Oversubscribe:
    """What the measured policy sets where the manifests set nothing."""

    percent: int = DEFAULT_OVERSUBSCRIBE_PERCENT
    cap_at: int = DEFAULT_CAP_AT_PERCENT
    uncap_at: int = DEFAULT_UNCAP_AT_PERCENT
    hold_s: int = DEFAULT_HOLD_SECONDS

    def spec(self) -> dict[str, int]:
        return {"percent": self.percent, "capAtPercent": self.cap_at, "uncapAtPercent": self.uncap_at,
                "holdSeconds": self.hold_s}


@dataclass(slots=True)
class Template:
    fixed: list[dict[str, Any]]  # the StargateCluster and its PowerDomains
    racks: list[tuple[dict[str, Any], list[dict[str, Any]]]]  # in fill order, with their nodes
    nameplate_nodes: int  # the nodes the site was sized for (generated) or holds (manifests)
    cluster: str = ""
    feed_w: int = 0  # the rating of the feed: its top Electrical domains, else the site's IT capacity
    notes: list[str] = field(default_factory=list)

    def nodes_per_rack(self) -> int:
        return max((len(nodes) for _, nodes in self.racks), default=0)


def _obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind,
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"sim-{kind.lower()}-{name}",
                         "generation": 1, "resourceVersion": "1"},
            "spec": spec}


def generated(nodes: int) -> Template:
    """The default site: `nodes` GB200 nodes at nameplate under one utility feed (module docstring)."""
    p = BY_MODEL[MODEL]
    node_w = p.base_power_w + p.gpus_per_node * p.max_power_w
    racks = max(math.ceil(nodes / NODES_PER_RACK), 1)
    pdus = math.ceil(racks / RACKS_PER_PDU)
    boards = math.ceil(pdus / PDUS_PER_SWITCHBOARD)
    rack_w = [min(NODES_PER_RACK, nodes - r * NODES_PER_RACK) * node_w for r in range(racks)]
    rack_w = [min(w, RACK_RATING_W) for w in rack_w]
    feed_usable = max(sum(rack_w), 1)

    def domain(name: str, role: str, parent: str | None, usable: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"clusterRef": "site", "type": "Electrical", "role": role,
                                "ratingWatts": math.ceil(usable * 100 / DERATE_PERCENT),
                                "deratePercent": DERATE_PERCENT}
        if parent is not None:
            spec["parentRef"] = parent
        return _obj("PowerDomain", name, spec)

    fixed = [_obj("StargateCluster", "site", {
        "site": {"region": "sim", "kind": "Onshore", "cooling": "DirectLiquid", "designPUE": 1.2},
        "power": {"itCapacityWatts": feed_usable, "reservePercent": 0},
    })]
    fixed.append(domain("feed", "Utility", None, feed_usable))
    pdu_of_rack = [r // RACKS_PER_PDU for r in range(racks)]
    for b in range(boards):
        board_pdus = [d for d in range(pdus) if d // PDUS_PER_SWITCHBOARD == b]
        beneath = sum(w for r, w in enumerate(rack_w) if pdu_of_rack[r] in board_pdus)
        fixed.append(domain(f"swbd-{b}", "Switchboard", "feed", int(beneath * DISTRIBUTION_MARGIN)))
        for d in board_pdus:
            beneath = sum(w for r, w in enumerate(rack_w) if pdu_of_rack[r] == d)
            fixed.append(domain(f"pdu-{d:02d}", "FloorPDU", f"swbd-{b}",
                                int(beneath * DISTRIBUTION_MARGIN)))
    rack_list: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for r in range(racks):
        name = f"rack-{r:03d}"
        rack = _obj("Rack", name, {"clusterRef": "site", "maxPowerWatts": RACK_RATING_W, "priority": 500,
                                   "powerDomainRef": f"pdu-{pdu_of_rack[r]:02d}"})
        members = [_obj("GPUNode", f"{name}-n{i:02d}", {
            "rackRef": name,
            "gpu": {"model": MODEL, "count": p.gpus_per_node, "memoryBytes": p.hbm_bytes,
                    "minPowerWatts": p.min_power_w, "maxPowerWatts": p.max_power_w},
            "basePowerWatts": p.base_power_w, "hostMemoryBytes": p.host_bytes,
        }) for i in range(NODES_PER_RACK)]
        rack_list.append((rack, members))
    return _finish(fixed, rack_list, nodes)


def from_manifests(objects: list[Mapping[str, Any]]) -> Template:
    """The site the manifests describe (one StargateCluster; other kinds are left out)."""
    clusters = [o for o in objects if o.get("kind") == "StargateCluster"]
    if len(clusters) != 1:
        raise ValueError(f"simulate needs exactly one StargateCluster in the manifests, found "
                         f"{len(clusters)}")
    cluster = clusters[0]
    name = cluster["metadata"]["name"]
    fixed = [_local(cluster)]
    fixed += [_local(o) for o in objects if o.get("kind") == "PowerDomain" and
              o.get("spec", {}).get("clusterRef") == name]
    racks = [o for o in objects if o.get("kind") == "Rack" and o.get("spec", {}).get("clusterRef") == name]
    nodes = [o for o in objects if o.get("kind") == "GPUNode"]
    if not racks:
        raise ValueError(f"StargateCluster {name} has no racks in the manifests")
    by_rack: dict[str, list[dict[str, Any]]] = {r["metadata"]["name"]: [] for r in racks}
    for n in nodes:
        ref = n.get("spec", {}).get("rackRef")
        if ref in by_rack:
            by_rack[ref].append(_local(n))
    pairs = [(_local(r), by_rack[r["metadata"]["name"]]) for r in racks]
    pairs = [(r, ns) for r, ns in pairs if ns]
    if not pairs:
        raise ValueError(f"the racks of StargateCluster {name} hold no GPUNodes in the manifests")
    return _finish(fixed, pairs, sum(len(ns) for _, ns in pairs))


def _local(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as the simulator keeps it: its spec, in the simulator's namespace, no status."""
    meta = obj.get("metadata", {})
    out = _obj(str(obj["kind"]), str(meta["name"]), copy.deepcopy(dict(obj.get("spec", {}))))
    out["spec"].pop("nodeName", None)
    return out


def _interleave(pairs: list[tuple[dict[str, Any], list[dict[str, Any]]]]
                ) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Racks round-robin over the domains that feed them, each domain's racks in their order."""
    groups: dict[str, list[tuple[dict[str, Any], list[dict[str, Any]]]]] = {}
    for pair in pairs:
        groups.setdefault(str(pair[0]["spec"].get("powerDomainRef") or ""), []).append(pair)
    out = []
    queues = list(groups.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def _finish(fixed: list[dict[str, Any]], pairs: list[tuple[dict[str, Any], list[dict[str, Any]]]],
            nameplate: int) -> Template:
    cluster = next(o for o in fixed if o["kind"] == "StargateCluster")
    domains = [parse_domain(o) for o in fixed if o["kind"] == "PowerDomain"]
    names = {d.name for d in domains}
    feed = sum(d.rating_w for d in domains if d.type == ELECTRICAL and d.parent_ref not in names)
    if feed <= 0:
        feed = int(cluster["spec"]["power"]["itCapacityWatts"])
    return Template(fixed=fixed, racks=_interleave(pairs), nameplate_nodes=nameplate,
                    cluster=cluster["metadata"]["name"], feed_w=feed)


def build(template: Template, nodes: int, policy: str, over: Oversubscribe) -> list[dict[str, Any]]:
    """The site with `nodes` nodes under the policy's settings (module docstring)."""
    out: list[dict[str, Any]] = []
    for o in template.fixed:
        o = copy.deepcopy(o)
        spec = o["spec"]["power"] if o["kind"] == "StargateCluster" else o["spec"]
        if policy == STATIC:
            spec.pop("oversubscription", None)
        elif "oversubscription" not in spec:
            spec["oversubscription"] = over.spec()
        out.append(o)
    left = nodes
    k = 0
    base = len(template.racks)
    while left > 0:
        rack, members = template.racks[k % base]
        clone = k // base
        suffix = f"-x{clone}" if clone else ""
        rack = copy.deepcopy(rack)
        rack_name = rack["metadata"]["name"] + suffix
        rack["metadata"]["name"] = rack_name
        rack["metadata"]["uid"] += suffix
        out.append(rack)
        for slot, node in enumerate(members[:left]):
            node = copy.deepcopy(node)
            node["metadata"]["name"] += suffix
            node["metadata"]["uid"] += suffix
            node["spec"]["rackRef"] = rack_name
            node["sim"] = (k, slot)  # its place: which trace it runs (traces.TraceBank)
            out.append(node)
        left -= min(len(members), left)
        k += 1
    return out
