"""Node discovery: the GPUNodes that Kubernetes Nodes labelled by GPU Feature Discovery imply.

Pure: Node and GPUNode objects in (wire form, as the API server returns them), a `DiscoveryPlan`
out: the GPUNodes to server-side apply (field manager `stargate-discovery`), the ones to delete, and
the Nodes skipped with a reason. The shell (`run --discover-nodes`) watches both kinds, calls
`plan_discovery` and carries the plan out; it must not act on deletes before both informers listed.

What discovery writes, and what it leaves alone:
- one GPUNode per Node that carries GFD's `nvidia.com/gpu.count` and `nvidia.com/gpu.product` labels
  and the site and rack labels (keys are settings; defaults `stargate.dev/site`, `stargate.dev/rack`):
  named after the Node, in the namespace the site label names, `spec.rackRef` the rack label;
- `spec.gpu`: the model from the one product table (`core/products.py`, matched on the product
  label), the count from the label, HBM per GPU from `nvidia.com/gpu.memory` (MiB; the table's figure
  when absent), the power range from the table, overridden by the range the node agent read from
  NVML when its telemetry carries one (`telemetry.minPowerWatts`/`maxPowerWatts`);
- `spec.basePowerWatts` from the table; `spec.hostMemoryBytes` from the Node's
  `status.capacity.memory` (what the kubelet measured), the table's figure when unreadable;
- `spec.cordoned` (the Node's `spec.unschedulable`) and `spec.nodeReady` (its Ready condition):
  discovery's own fields. The core counts a cordoned node as in maintenance and a node that is not
  Ready as 0 healthy GPUs. They are separate from `spec.maintenance` so that discovery never takes
  that field: `maintenance` and `gpu.requestedPowerWatts` are never in the applied object, so with
  server-side apply they stay whoever set them (the user's), and a user's `maintenance: true`
  survives every apply, cordon and uncordon.
- A GPUNode is discovery's while it carries the label `app.kubernetes.io/managed-by:
  stargate-discovery` (it is set on every apply). Any other GPUNode is hand-written and never
  applied or deleted: a Node whose GPUNode name is taken by a hand-written one is skipped. Removing
  the label from a discovered GPUNode hands it over to the user.
- A discovered GPUNode is deleted when no Node implies it any more: its Node is gone, lost its GFD
  labels, lost (or has an invalid) site or rack label, or moved to another site (the GPUNode is then
  applied in the new namespace and deleted from the old). A Node whose GFD labels are present but
  unreadable (an unknown product, a count that is not a number) keeps its GPUNode as it was: a
  glitch in labelling must not drop a node's budget.
- The GPUNode has the Node as its owner (ownerReferences, no blockOwnerDeletion), so Kubernetes'
  garbage collector removes it with the Node even while the operator is down.

Applies are listed only where an owned field differs from the existing GPUNode, so a resync of a
steady cluster writes nothing. The shell applies with `force=true`: the fields in the applied object
are discovery's, and a hand edit of one of them (other than on a hand-written GPUNode) is undone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stargate_operator.core.products import GPUProduct, product_for_label
from stargate_operator.core.types import ObjectKey
from stargate_operator.core.wire import mapping
from stargate_operator.kinds import (
    API_VERSION,
    DISCOVERY_RACK_LABEL,
    DISCOVERY_SITE_LABEL,
    GPU_NODE,
    POWER_RANGE_ANNOTATION,
)

FIELD_MANAGER = "stargate-discovery"
# The label that marks a GPUNode as discovery's (its value is the field manager).
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
POWER_FROM_NVML = "nvml"
POWER_FROM_TABLE = "product-table"

# NVIDIA GPU Feature Discovery's labels (github.com/NVIDIA/k8s-device-plugin, docs/gpu-feature-discovery).
GFD_COUNT_LABEL = "nvidia.com/gpu.count"
GFD_PRODUCT_LABEL = "nvidia.com/gpu.product"
GFD_MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB per GPU

MIB = 1024 * 1024
MAX_GPUS_PER_NODE = 16  # GPUNode.spec.gpu.count's bound (api/gpunode.py)

# Skip reasons (CamelCase, for a log line and a metric label).
MISSING_SITE_LABEL = "MissingSiteLabel"
MISSING_RACK_LABEL = "MissingRackLabel"
INVALID_SITE_LABEL = "InvalidSiteLabel"
INVALID_RACK_LABEL = "InvalidRackLabel"
INCOMPLETE_GPU_LABELS = "IncompleteGPULabels"
INVALID_GPU_LABELS = "InvalidGPULabels"
UNKNOWN_GPU_PRODUCT = "UnknownGPUProduct"
HAND_WRITTEN_GPU_NODE = "HandWrittenGPUNode"
SKIP_REASONS = (
    MISSING_SITE_LABEL, MISSING_RACK_LABEL, INVALID_SITE_LABEL, INVALID_RACK_LABEL,
    INCOMPLETE_GPU_LABELS, INVALID_GPU_LABELS, UNKNOWN_GPU_PRODUCT, HAND_WRITTEN_GPU_NODE,
)
# Skips that take the Node out of discovery (its GPUNodes go) versus skips that keep what is there.
_PLACEMENT_PROBLEMS = frozenset({MISSING_SITE_LABEL, MISSING_RACK_LABEL, INVALID_SITE_LABEL,
                                 INVALID_RACK_LABEL})

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a namespace name
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Kubernetes resource quantities: a number and a binary or decimal suffix ("2113407788Ki").
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}



@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    site_label: str = DISCOVERY_SITE_LABEL
    rack_label: str = DISCOVERY_RACK_LABEL
    # The operator's watched namespaces (`run -n`), None for all. A shard's discovery keeps only the
    # GPUNodes of its own sites: a Node placed in another namespace is another release's business
    # (neither applied nor reported as skipped), and GPUNodes outside are never deleted.
    namespaces: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A Node with GPUs that discovery did not turn into a GPUNode, and why (for a log line)."""

    node: str
    reason: str
    message: str


@dataclass(slots=True)
class DiscoveryPlan:
    # Desired GPUNodes, in wire form, for server-side apply: only those that differ from the
    # existing one (or do not exist). Ordered by namespace and name.
    applies: list[dict[str, Any]] = field(default_factory=list)
    # Discovered GPUNodes whose Node no longer implies them, ordered.
    deletes: list[ObjectKey] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    # GPUNodes discovery keeps: applied or already as desired (a gauge of managed nodes).
    managed: int = 0

    def skipped_by_reason(self) -> dict[str, int]:
        """Skipped Nodes per reason, every reason present (0 included): a metric's samples."""
        out = dict.fromkeys(SKIP_REASONS, 0)
        for s in self.skipped:
            out[s.reason] = out.get(s.reason, 0) + 1
        return out


def is_discovered(gpunode: Mapping[str, Any]) -> bool:
    """Whether a GPUNode is discovery's (never true of a hand-written one)."""
    labels = mapping(mapping(gpunode.get("metadata")).get("labels"))
    return labels.get(MANAGED_BY_LABEL) == FIELD_MANAGER


def parse_quantity(value: object) -> int | None:
    """A Kubernetes quantity as an integer (bytes for memory), None when unreadable or fractional
    below one unit. Plain integers pass through."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    m = _QUANTITY.match(value.strip())
    if m is None:
        return None
    number, suffix = m.groups()
    scale = _SUFFIX[suffix] if suffix else 1
    whole, _, frac = number.partition(".")
    # Exact arithmetic: float would lose bytes of a 2 TB node.
    total = int(whole) * scale + (int(frac) * scale) // (10 ** len(frac)) if frac else int(whole) * scale
    return total


def node_ready(node: Mapping[str, Any]) -> bool:
    """The Node's Ready condition is not False or Unknown. A Node that reports no Ready condition at
    all (just registered; no kubelet, as in tests) counts as ready: nothing says it is not."""
    conds = mapping(node.get("status")).get("conditions")
    if isinstance(conds, list):
        for c in conds:
            if isinstance(c, Mapping) and c.get("type") == "Ready":
                return c.get("status") == "True"
    return True


def _int_label(labels: Mapping[str, Any], key: str) -> int | None:
    raw = labels.get(key)
    if not isinstance(raw, str) or not raw.strip().isdigit():
        return None
    return int(raw.strip())


def nvml_range(gpunode: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """The per-GPU power range the agent read from NVML (telemetry.minPowerWatts/maxPowerWatts),
    when both are there and make sense (0 < min <= max)."""
    if gpunode is None:
        return None
    tel = mapping(mapping(gpunode.get("status")).get("telemetry"))
    lo, hi = tel.get("minPowerWatts"), tel.get("maxPowerWatts")
    if type(lo) is not int or type(hi) is not int or not 0 < lo <= hi:
        return None
    return lo, hi


@dataclass(frozen=True, slots=True)
class _Placed:
    """A Node that implies a GPUNode: everything the desired object is built from."""

    name: str
    uid: str
    site: str
    rack: str
    product: GPUProduct
    count: int
    memory_bytes: int
    host_bytes: int
    cordoned: bool
    ready: bool


def _place(node: Mapping[str, Any], settings: DiscoverySettings) -> _Placed | Skipped | None:
    """None: not a GPU node (no GFD labels at all), nothing to say about it."""
    meta = mapping(node.get("metadata"))
    name = str(meta.get("name", ""))
    labels = mapping(meta.get("labels"))
    has_count, has_product = GFD_COUNT_LABEL in labels, GFD_PRODUCT_LABEL in labels
    if not (has_count or has_product):
        return None
    site, rack = labels.get(settings.site_label), labels.get(settings.rack_label)
    what = f"Node {name} has GPUs"
    if not site:
        return Skipped(name, MISSING_SITE_LABEL,
                       f"{what} but no label {settings.site_label}: label it with the namespace of its "
                       f"site (kubectl label node {name} {settings.site_label}=<namespace>)")
    if not rack:
        return Skipped(name, MISSING_RACK_LABEL,
                       f"{what} but no label {settings.rack_label}: label it with the name of its Rack "
                       f"(kubectl label node {name} {settings.rack_label}=<rack>)")
    if not isinstance(site, str) or not _DNS_LABEL.match(site):
        return Skipped(name, INVALID_SITE_LABEL,
                       f"Node {name}: label {settings.site_label}={site!r} is not a namespace name "
                       "(lower-case letters, digits and '-', at most 63)")
    if not isinstance(rack, str) or not _DNS_SUBDOMAIN.match(rack) or len(rack) > 253:
        return Skipped(name, INVALID_RACK_LABEL,
                       f"Node {name}: label {settings.rack_label}={rack!r} is not a Rack name "
                       "(a DNS-1123 subdomain)")
    if not (has_count and has_product):
        missing = GFD_PRODUCT_LABEL if has_count else GFD_COUNT_LABEL
        return Skipped(name, INCOMPLETE_GPU_LABELS,
                       f"Node {name} has no label {missing} (GPU Feature Discovery sets it): is GFD "
                       "running on it? Its GPUNode, if any, is left as it was")
    count = _int_label(labels, GFD_COUNT_LABEL)
    if count is None or not 1 <= count <= MAX_GPUS_PER_NODE:
        return Skipped(name, INVALID_GPU_LABELS,
                       f"Node {name}: label {GFD_COUNT_LABEL}={labels.get(GFD_COUNT_LABEL)!r} is not "
                       f"a GPU count from 1 to {MAX_GPUS_PER_NODE}; its GPUNode, if any, is left as it was")
    product_label = str(labels.get(GFD_PRODUCT_LABEL))
    product = product_for_label(product_label)
    if product is None:
        return Skipped(name, UNKNOWN_GPU_PRODUCT,
                       f"Node {name}: GPU product {product_label!r} ({GFD_PRODUCT_LABEL}) is not in the "
                       "product table (core/products.py), so its power range is unknown; write its "
                       "GPUNode by hand or add the product")
    memory_bytes = product.hbm_bytes
    if GFD_MEMORY_LABEL in labels:
        mib = _int_label(labels, GFD_MEMORY_LABEL)
        if mib is None or mib == 0:
            return Skipped(name, INVALID_GPU_LABELS,
                           f"Node {name}: label {GFD_MEMORY_LABEL}={labels.get(GFD_MEMORY_LABEL)!r} is "
                           "not a number of MiB; its GPUNode, if any, is left as it was")
        memory_bytes = mib * MIB
    status = mapping(node.get("status"))
    host = parse_quantity(mapping(status.get("capacity")).get("memory"))
    spec = mapping(node.get("spec"))
    return _Placed(
        name=name,
        uid=str(meta.get("uid") or ""),
        site=site,
        rack=rack,
        product=product,
        count=count,
        memory_bytes=memory_bytes,
        host_bytes=host if host else product.host_bytes,
        cordoned=spec.get("unschedulable") is True,
        ready=node_ready(node),
    )


def desired_gpunode(placed: _Placed, existing: Mapping[str, Any] | None) -> dict[str, Any]:
    """The object discovery applies: only the fields it owns."""
    nvml = nvml_range(existing)
    lo, hi = nvml if nvml is not None else (placed.product.min_power_w, placed.product.max_power_w)
    metadata: dict[str, Any] = {
        "name": placed.name,
        "namespace": placed.site,
        "labels": {MANAGED_BY_LABEL: FIELD_MANAGER},
        "annotations": {POWER_RANGE_ANNOTATION: POWER_FROM_NVML if nvml is not None else POWER_FROM_TABLE},
    }
    if placed.uid:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Node", "name": placed.name, "uid": placed.uid}
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": GPU_NODE.kind,
        "metadata": metadata,
        "spec": {
            "rackRef": placed.rack,
            "nodeName": placed.name,
            "gpu": {
                "model": placed.product.model,
                "count": placed.count,
                "memoryBytes": placed.memory_bytes,
                "minPowerWatts": lo,
                "maxPowerWatts": hi,
            },
            "basePowerWatts": placed.product.base_power_w,
            "hostMemoryBytes": placed.host_bytes,
            "cordoned": placed.cordoned,
            "nodeReady": placed.ready,
        },
    }


def covers(existing: object, desired: object) -> bool:
    """Whether `existing` already holds everything `desired` says (extra fields in `existing`, such
    as the user's maintenance or the server's metadata, do not matter). A list is covered when each
    desired item is covered by some existing item (ownerReferences)."""
    if isinstance(desired, Mapping):
        if not isinstance(existing, Mapping):
            return False
        return all(k in existing and covers(existing[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(existing, list):
            return False
        return all(any(covers(e, d) for e in existing) for d in desired)
    if isinstance(desired, bool) or isinstance(existing, bool):
        return type(desired) is type(existing) and desired == existing
    return bool(existing == desired)


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = mapping(obj.get("metadata"))
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def plan_discovery(
    nodes: Iterable[Mapping[str, Any]],
    gpunodes: Iterable[Mapping[str, Any]],
    settings: DiscoverySettings | None = None,
) -> DiscoveryPlan:
    """Everything discovery should do, given every Node and every GPUNode of the cluster."""
    settings = settings or DiscoverySettings()
    existing = {_key(g): g for g in gpunodes}
    plan = DiscoveryPlan()
    desired_keys: set[tuple[str, str]] = set()
    held: set[str] = set()  # Nodes whose GPUNodes stay as they are
    for node in sorted(nodes, key=lambda n: str(mapping(n.get("metadata")).get("name", ""))):
        placed = _place(node, settings)
        if placed is None:
            continue
        if isinstance(placed, Skipped):
            plan.skipped.append(placed)
            if placed.reason not in _PLACEMENT_PROBLEMS:
                held.add(placed.node)
            continue
        if settings.namespaces is not None and placed.site not in settings.namespaces:
            continue
        key = (placed.site, placed.name)
        current = existing.get(key)
        if current is not None and not is_discovered(current):
            plan.skipped.append(Skipped(
                placed.name, HAND_WRITTEN_GPU_NODE,
                f"GPUNode {placed.site}/{placed.name} exists and is not discovery's (no label "
                f"{MANAGED_BY_LABEL}={FIELD_MANAGER}): it is left as it is",
            ))
            continue
        desired_keys.add(key)
        plan.managed += 1
        want = desired_gpunode(placed, current)
        if current is None or not covers(current, want):
            plan.applies.append(want)
    for key, gpunode in sorted(existing.items()):
        if key in desired_keys or not is_discovered(gpunode):
            continue
        if settings.namespaces is not None and key[0] not in settings.namespaces:
            continue
        if key[1] in held:
            plan.managed += 1
            continue
        plan.deletes.append((GPU_NODE.kind, key[0], key[1]))
    plan.applies.sort(key=_key)
    return plan
