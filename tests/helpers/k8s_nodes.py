"""Kubernetes Node objects written by hand, as a kubelet and GPU Feature Discovery would write them
(there is no kubelet in the local control plane), for the integration tests of node discovery and
of the power taint.

``Nodes(api)`` creates, relabels, cordons, makes Ready or NotReady and deletes the Nodes of one test;
``gfd_labels(site, rack)`` are the labels GFD (and the site's operator) put on a DGX H100.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from helpers.api import Api, ApiError
from stargate_operator.client import MERGE_PATCH
from stargate_operator.core import discovery as d
from stargate_operator.kinds import DISCOVERY_RACK_LABEL, DISCOVERY_SITE_LABEL

NODES_PATH = "/api/v1/nodes"
H100_LABEL = "NVIDIA-H100-80GB-HBM3"
H100_MIB = 81559  # what GFD reports for an H100 80GB HBM3
HOST_MEMORY = "2113407788Ki"


def gfd_labels(site: str | None, rack_name: str | None = "r1", *, product: str = H100_LABEL,
               count: str = "8", memory_mib: str = str(H100_MIB)) -> dict[str, str]:
    """The labels of a DGX H100 as GFD (and the site's operator) label it."""
    labels = {"nvidia.com/gpu.present": "true", d.GFD_PRODUCT_LABEL: product, d.GFD_COUNT_LABEL: count,
              d.GFD_MEMORY_LABEL: memory_mib, "nvidia.com/gpu.family": "hopper"}
    if site is not None:
        labels[DISCOVERY_SITE_LABEL] = site
    if rack_name is not None:
        labels[DISCOVERY_RACK_LABEL] = rack_name
    return labels


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Nodes:
    """Kubernetes Nodes of one test: created, relabelled, cordoned, made NotReady, deleted. Names
    carry a tag of their own (``name(stem)``): Nodes are cluster-wide, tests share the API server."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.names: list[str] = []
        self.tag = secrets.token_hex(3)

    def name(self, stem: str) -> str:
        return f"{stem}-{self.tag}"

    def create(self, name: str, labels: dict[str, str], *, ready: bool | None = True) -> dict[str, Any]:
        """A Node with these labels (and its hostname's); `ready` True or False writes its Ready
        condition and capacity as a kubelet's first status, None leaves its status empty (a
        kubelet that has not reported yet)."""
        node = self.api.request("POST", NODES_PATH, {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
            "spec": {},
        })
        self.names.append(name)
        if ready is not None:
            self.set_ready(name, ready, capacity=True)
        out: dict[str, Any] = node
        return out

    def get(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.api.request("GET", f"{NODES_PATH}/{name}")
        return out

    def patch(self, name: str, patch: dict[str, Any]) -> None:
        self.api.request("PATCH", f"{NODES_PATH}/{name}", patch, content_type=MERGE_PATCH)

    def cordon(self, name: str, on: bool = True) -> None:
        self.patch(name, {"spec": {"unschedulable": on}})

    def set_ready(self, name: str, ready: bool, capacity: bool = False) -> None:
        """The Ready condition (and the capacity), through the status subresource, as a kubelet
        writes it: its lastTransitionTime now (whole seconds)."""
        status: dict[str, Any] = {"conditions": [{
            "type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": _stamp(),
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "kubelet is posting ready status" if ready else "container runtime is down",
        }]}
        if capacity:
            status["capacity"] = {"cpu": "224", "memory": HOST_MEMORY, "nvidia.com/gpu": "8"}
            status["allocatable"] = status["capacity"]
        self.api.request("PATCH", f"{NODES_PATH}/{name}/status", {"status": status}, content_type=MERGE_PATCH)

    def delete(self, name: str) -> None:
        try:
            self.api.request("DELETE", f"{NODES_PATH}/{name}")
        except ApiError as e:
            if e.status != 404:
                raise
        if name in self.names:
            self.names.remove(name)

    def delete_all(self) -> None:
        for name in list(self.names):
            self.delete(name)
