"""Kubernetes Nodes and GPUNodes for node discovery's tests."""

from __future__ import annotations

from typing import Any

from helpers.core_objects import GB
from stargate_operator.core import discovery as d
from stargate_operator.kinds import API_VERSION, DISCOVERY_RACK_LABEL, DISCOVERY_SITE_LABEL

SITE = "site-ns"


H100_MIB = 81559  # what GFD reports for an H100 80GB HBM3


def k8s_node(
    name: str,
    *,
    site: str | None = SITE,
    rack_name: str | None = "r1",
    product: str | None = "NVIDIA-H100-80GB-HBM3",
    count: str | None = "8",
    memory_mib: str | None = str(H100_MIB),
    cordoned: bool = False,
    ready: str | None = "True",
    host_memory: str | None = "2113407788Ki",
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Kubernetes Node as GFD labels it (and as the API server returns it)."""
    labels: dict[str, str] = {"kubernetes.io/hostname": name, "nvidia.com/gpu.present": "true"}
    for key, value in ((d.GFD_PRODUCT_LABEL, product), (d.GFD_COUNT_LABEL, count),
                       (d.GFD_MEMORY_LABEL, memory_mib), (DISCOVERY_SITE_LABEL, site),
                       (DISCOVERY_RACK_LABEL, rack_name)):
        if value is not None:
            labels[key] = value
    labels |= extra_labels or {}
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels},
        "spec": {"unschedulable": True} if cordoned else {},
        "status": {},
    }
    if ready is not None:
        obj["status"]["conditions"] = [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": ready, "reason": "KubeletReady"},
        ]
    if host_memory is not None:
        obj["status"]["capacity"] = {"cpu": "224", "memory": host_memory, "nvidia.com/gpu": "8"}
    return obj


def as_existing(applied: dict[str, Any], **extra_spec: Any) -> dict[str, Any]:
    """The GPUNode the API server holds after `applied`: defaults filled, metadata added, plus what
    other writers set (the user's maintenance, the agent's telemetry)."""
    obj = {
        **applied,
        "metadata": {**applied["metadata"], "resourceVersion": "7", "generation": 1, "uid": "u"},
        "spec": {**applied["spec"], "maintenance": False, **extra_spec},
    }
    return obj


def hand_written(name: str, ns: str = SITE) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "GPUNode",
        "metadata": {"name": name, "namespace": ns, "labels": {"team": "dc-ops"}},
        "spec": {"rackRef": "r1", "gpu": {"model": "H100-SXM", "count": 8, "memoryBytes": 80 * GB,
                                          "minPowerWatts": 200, "maxPowerWatts": 700}},
    }
