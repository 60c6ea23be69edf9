"""Node discovery as a controller of the slot (`run --discover-nodes`).

It watches Kubernetes Nodes (core/v1, cluster-scoped) and GPUNodes, and its planner is the pure
core of `core/discovery.py` carried over to the slot's `Plan`: the GPUNodes to server-side apply
with field manager `stargate-discovery` (`Plan.applies`), and the discovered GPUNodes whose Node no
longer implies them (`Plan.deletes`, each pinned to the uid of the GPUNode the plan saw, so that a
GPUNode re-created by hand meanwhile under the same name is not deleted). The engine runs it over the
whole cluster (one unit of work, `per_namespace=False`), after every watched kind has listed.

A shard (`run -n a -n b`) watches GPUNodes in its namespaces only and applies or deletes GPUNodes
only there (`DiscoverySettings.namespaces`); Nodes are watched cluster-wide, as they are cluster
objects.

Cost: a telemetry write changes a GPUNode, and every change wakes this controller. Its plan is
separable by GPUNode name (a GPUNode is named after its Node, so the GPUNodes a Node implies and
the ones deleted for it all bear its name), so the cache keeps each name's part of the plan and
plans again only the names whose objects changed (resourceVersion, or the NVML range an engine may
lay over the telemetry). `plan_by_name` is pure and equal to `core.discovery.plan_discovery` over
the same objects; the planner registered in the slot adds the reporting: a log line when a Node is
first skipped (or for another reason), one when it no longer is, and the gauge
`stargate_discovery_skipped_nodes{reason}`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from stargate_operator import kinds, metrics
from stargate_operator.client import NODES, ApiResource
from stargate_operator.controller.slot import Controller
from stargate_operator.core.discovery import (
    FIELD_MANAGER,
    HAND_WRITTEN_GPU_NODE,
    SKIP_REASONS,
    DiscoveryPlan,
    DiscoverySettings,
    Skipped,
    nvml_range,
    plan_discovery,
)
from stargate_operator.core.types import ObjectRef, Plan

logger = logging.getLogger("stargate.discovery")

GPU_NODES = ApiResource.of(kinds.GPU_NODE)
RECONCILE_KIND = "discovery"

# What the part of one name was planned from: every object of that name, by kind, namespace,
# resourceVersion and (GPUNodes) the NVML range discovery reads from the telemetry.
Fingerprint = frozenset[tuple[str, str, str, tuple[int, int] | None]]


@dataclass(slots=True)
class DiscoveryCache:
    """What one plan hands the next: each name's part, and the skips already logged."""

    parts: dict[str, tuple[Fingerprint, DiscoveryPlan]] = field(default_factory=dict)
    reported: dict[str, str] = field(default_factory=dict)  # Node name -> skip reason logged


def _fingerprint(objects: Iterable[Mapping[str, Any]]) -> Fingerprint | None:
    """None when an object has no resourceVersion (built by hand): that name is always planned."""
    out = []
    for o in objects:
        meta = o.get("metadata") or {}
        rv = meta.get("resourceVersion")
        if not rv:
            return None
        kind = str(o.get("kind"))
        out.append((kind, str(meta.get("namespace") or ""), str(rv),
                    nvml_range(o) if kind == kinds.GPU_NODE.kind else None))
    return frozenset(out)


def plan_by_name(objects: Iterable[Mapping[str, Any]], settings: DiscoverySettings,
                 cache: DiscoveryCache | None = None) -> DiscoveryPlan:
    """`plan_discovery` over the Nodes and GPUNodes among `objects`, planned name by name; with a
    cache, a name whose objects are the same as last time reuses its part. Same result either way."""
    groups: dict[str, tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]] = {}
    for o in objects:
        kind = o.get("kind")
        if kind == NODES.kind:
            at = 0
        elif kind == kinds.GPU_NODE.kind:
            at = 1
        else:
            continue
        name = str((o.get("metadata") or {}).get("name") or "")
        groups.setdefault(name, ([], []))[at].append(o)
    held = cache.parts if cache is not None else {}
    parts: dict[str, tuple[Fingerprint, DiscoveryPlan]] = {}
    out = DiscoveryPlan()
    for name in sorted(groups):
        nodes, gpunodes = groups[name]
        fp = _fingerprint([*nodes, *gpunodes])
        memo = held.get(name)
        if fp is not None and memo is not None and memo[0] == fp:
            part = memo[1]
        else:
            part = plan_discovery(nodes, gpunodes, settings)
        if fp is not None:
            parts[name] = (fp, part)
        out.applies.extend(part.applies)
        out.deletes.extend(part.deletes)
        out.skipped.extend(part.skipped)
        out.managed += part.managed
    if cache is not None:
        cache.parts = parts  # names gone since are dropped
    out.applies.sort(key=lambda a: (a["metadata"]["namespace"], a["metadata"]["name"]))
    out.deletes.sort()
    out.skipped.sort(key=lambda s: s.node)  # stable: one Node's skips keep their order
    return out


def to_plan(discovery: DiscoveryPlan, objects: Iterable[Mapping[str, Any]]) -> Plan:
    """The slot's Plan: the applies as they are, the deletes as ObjectRefs pinned to the uid of the
    GPUNode the plan saw."""
    uids: dict[tuple[str, str], str] = {}
    for o in objects:
        if o.get("kind") == kinds.GPU_NODE.kind:
            meta = o.get("metadata") or {}
            if meta.get("uid"):
                uids[(str(meta.get("namespace") or ""), str(meta.get("name")))] = str(meta["uid"])
    return Plan(
        applies=list(discovery.applies),
        deletes=[ObjectRef(kind, ns, name, uid=uids.get((ns, name))) for kind, ns, name in discovery.deletes],
    )


def skip_changes(reported: Mapping[str, str], skipped: Sequence[Skipped]
                 ) -> tuple[list[Skipped], list[str], dict[str, str]]:
    """What to log: the skips not logged yet (a new Node, or a new reason), the Nodes no longer
    skipped; and what has been logged after that. A Node skipped for several reasons at once (a
    hand-written GPUNode in two sites) is logged once per reason change of its first one."""
    now: dict[str, str] = {}
    first: dict[str, Skipped] = {}
    for s in skipped:
        if s.node not in now:
            now[s.node] = s.reason
            first[s.node] = s
    new = [first[n] for n, reason in now.items() if reported.get(n) != reason]
    resolved = sorted(n for n in reported if n not in now)
    return new, resolved, now


def plan_discovery_unit(objects: list[dict[str, Any]], now: datetime, settings: DiscoverySettings,
                        cache: DiscoveryCache) -> Plan:
    """The planner registered in the slot: the plan, and its report (log lines, the skip gauge)."""
    discovery = plan_by_name(objects, settings, cache)
    new, resolved, cache.reported = skip_changes(cache.reported, discovery.skipped)
    for s in new:
        # A hand-written GPUNode of the Node's name is a choice, not a mistake.
        level = logging.INFO if s.reason == HAND_WRITTEN_GPU_NODE else logging.WARNING
        logger.log(level, "skipping Node %s (%s): %s", s.node, s.reason, s.message)
    for name in resolved:
        logger.info("Node %s is no longer skipped", name)
    for reason, count in discovery.skipped_by_reason().items():
        metrics.DISCOVERY_SKIPPED_NODES.labels(reason=reason).set(count)
    return to_plan(discovery, objects)


def discovery_controller(settings: DiscoverySettings,
                         namespaces: Sequence[str] = ()) -> Controller[DiscoverySettings, DiscoveryCache]:
    """Node discovery over the whole cluster; `namespaces` (the engine's): a shard keeps only the
    GPUNodes of its own sites."""
    if namespaces:
        settings = replace(settings, namespaces=frozenset(namespaces))
    metrics.init_discovery_metrics(SKIP_REASONS, RECONCILE_KIND)
    return Controller(
        name="discovery",
        resources=(NODES, GPU_NODES),
        planner=plan_discovery_unit,
        settings=settings,
        new_cache=DiscoveryCache,
        per_namespace=False,
        field_manager=FIELD_MANAGER,
        reconcile_kind=RECONCILE_KIND,
    )
