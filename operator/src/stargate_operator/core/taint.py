"""A node is not given work before its power limit holds: the taint `stargate.dev/power-unmanaged`
(NoSchedule) on a GPU Node whose agent has not confirmed its limit since the Node last became Ready.

The rule, per Node with GPUs (GPU Feature Discovery's count label) in a site (the site label):
- not Ready (its Ready condition False or Unknown): tainted;
- Ready: untainted once its GPUNode (same name, in the site's namespace) carries a report of its
  agent dated after the Ready condition's lastTransitionTime (from the next whole second) whose
  enforced limit is at or below the assigned one (`telemetry.enforcedLimitWatts <=
  status.powerLimitWatts`; in shadow mode any report, since nothing is enforced); tainted until
  then, a newly discovered Node included.
So a reboot (NotReady, then Ready with the GPUs back at their default limit) taints the Node until
the agent has set the limit again and said so. Nodes can register with the taint already
(the kubelet's `--register-with-taints`), so no pod lands in the moment before the first plan.

Written as JSON merge patches of the Node's taints (a Node's taint list has no merge key: any
patch replaces it whole), built from the Node as the plan saw it, with its resourceVersion: the one
taint added or removed and every other taint kept as it is; a Node changed meanwhile refuses the
patch (409) and the next plan builds it again from the newer Node, so another controller's taint
(or the kubelet's) is never lost. A patch is listed only where the Node differs: a steady cluster
writes nothing. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stargate_operator.core.types import ObjectKey
from stargate_operator.core.wire import mapping, parse_epoch
from stargate_operator.kinds import GPU_NODE, GROUP, OBSERVE

TAINT_KEY = f"{GROUP}/power-unmanaged"
TAINT_EFFECT = "NoSchedule"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
NODE_KIND = "Node"


def ready_since(node: Mapping[str, Any]) -> float | None:
    """When the Node last became Ready (epoch seconds); None while it is not Ready. A Node with no
    Ready condition yet has not been Ready."""
    conds = mapping(node.get("status")).get("conditions")
    if isinstance(conds, list):
        for c in conds:
            if isinstance(c, Mapping) and c.get("type") == "Ready":
                if c.get("status") != "True":
                    return None
                since = parse_epoch(c.get("lastTransitionTime"))
                return since if since is not None else 0.0
    return None


def confirmed(gpunode: Mapping[str, Any] | None, since: float) -> bool:
    """The GPUNode's agent reported, at or after `since`, its limit in force (or, in shadow mode,
    reported at all)."""
    if gpunode is None:
        return False
    status = mapping(gpunode.get("status"))
    tel = mapping(status.get("telemetry"))
    seen = parse_epoch(tel.get("observedAt"))
    # lastTransitionTime has whole seconds: a report within the second the Node became Ready may
    # predate it, so only one from the next second on counts.
    if seen is None or seen < since + 1.0:
        return False
    if status.get("powerEnforcement") == OBSERVE:
        return True
    enforced, limit = tel.get("enforcedLimitWatts"), status.get("powerLimitWatts")
    return type(enforced) is int and type(limit) is int and enforced <= limit


def tainted(node: Mapping[str, Any]) -> bool:
    taints = mapping(node.get("spec")).get("taints")
    return isinstance(taints, list) and any(
        isinstance(t, Mapping) and t.get("key") == TAINT_KEY and t.get("effect") == TAINT_EFFECT
        for t in taints)


def taint_patch(node: Mapping[str, Any], on: bool) -> dict[str, Any]:
    """The Node's taints with ours added (`on`) or removed, the others as they are."""
    taints = mapping(node.get("spec")).get("taints")
    others = [t for t in taints if not (isinstance(t, Mapping) and t.get("key") == TAINT_KEY)] \
        if isinstance(taints, list) else []
    if on:
        others.append({"key": TAINT_KEY, "effect": TAINT_EFFECT})
    rv = mapping(node.get("metadata")).get("resourceVersion")
    patch: dict[str, Any] = {"spec": {"taints": others}}
    if rv:
        patch["metadata"] = {"resourceVersion": rv}
    return patch


NodePatches = list[tuple[ObjectKey, dict[str, Any]]]


def taint_patches(objects: Iterable[Mapping[str, Any]], site_label: str) -> NodePatches:
    """The Node patches that bring each GPU Node's taint to what the rule says."""
    nodes: list[Mapping[str, Any]] = []
    gpunodes: dict[tuple[str, str], Mapping[str, Any]] = {}
    for o in objects:
        kind = o.get("kind")
        meta = mapping(o.get("metadata"))
        if kind == NODE_KIND:
            nodes.append(o)
        elif kind == GPU_NODE.kind:
            gpunodes[str(meta.get("namespace") or ""), str(meta.get("name"))] = o
    out: NodePatches = []
    for node in nodes:
        meta = mapping(node.get("metadata"))
        labels = mapping(meta.get("labels"))
        site = labels.get(site_label)
        if not labels.get(GPU_COUNT_LABEL) or not isinstance(site, str) or not site:
            continue  # not a GPU Node of a site: not ours to taint
        name = str(meta.get("name"))
        since = ready_since(node)
        want = since is None or not confirmed(gpunodes.get((site, name)), since)
        has = tainted(node)
        if want != has:
            out.append(((NODE_KIND, "", name), taint_patch(node, want)))
    return out
