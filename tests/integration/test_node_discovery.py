"""Node discovery (`run --discover-nodes`) on the real API server.

Node objects are labelled as NVIDIA GPU Feature Discovery labels them (`nvidia.com/gpu.count`,
`gpu.product`, `gpu.memory` in MiB) plus the two placement labels; their status (capacity, the Ready
condition) is written through the status subresource, as a kubelet would (there is none here, and no
controller manager: no garbage collector either, so a GPUNode whose Node goes is gone only because
discovery deleted it). One operator for the module (all namespaces, default label keys), a fresh
namespace (the site) and fresh Node names per test; every test deletes its Nodes and waits for their
GPUNodes to go before the namespace does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.api import Api, condition, obj
from helpers.k8s_nodes import H100_MIB, Nodes, gfd_labels
from helpers.kube import Kubectl, create_namespace, namespace_name, purge_namespace
from helpers.operator_process import OperatorProcess, wait_for
from helpers.site import cluster, now_plus, rack
from stargate_operator.core import discovery as d
from stargate_operator.core.products import BY_MODEL
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator_survives")]

WAIT = 20.0  # seconds: "within seconds", with slack for a busy 2-core machine
H100 = BY_MODEL["H100-SXM"]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def operator(control_plane: LocalControlPlane, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    op = OperatorProcess(control_plane, tmp_path_factory.mktemp("operator"), "--discover-nodes")
    with op:
        yield op


@pytest.fixture
def nodes(api: Api, namespace: str) -> Iterator[Nodes]:
    made = Nodes(api)
    yield made
    made.delete_all()
    # Before the namespace goes: discovery deletes what it made, and writes nothing into a namespace
    # being deleted.
    wait_for(lambda: not [g for g in api.list("GPUNode", namespace) if d.is_discovered(g)], WAIT,
             what=f"the discovered GPUNodes of {namespace} to go")


@pytest.fixture
def site(api: Api, namespace: str) -> str:
    """A site in the test's namespace: a StargateCluster and Racks r1 and r2 with room to spare."""
    api.create_all(namespace, [cluster(), rack("r1"), rack("r2")])
    return namespace


def gpunode(api: Api, ns: str, name: str, timeout: float = WAIT, **where: Any) -> dict[str, Any]:
    """Wait until the GPUNode exists (and, for each `path=value` in `where`, e.g.
    spec__gpu__count=4, holds that value); return it."""
    def check() -> dict[str, Any] | None:
        got = api.get_or_none("GPUNode", ns, name)
        if got is None:
            return None
        for path, value in where.items():
            at: Any = got
            for part in path.split("__"):
                at = at.get(part) if isinstance(at, dict) else None
            if at != value:
                return None
        return got

    found = wait_for(check, timeout, what=f"GPUNode {ns}/{name} with {where}")
    assert found is not None
    return found


def gone(api: Api, ns: str, name: str) -> bool:
    return api.get_or_none("GPUNode", ns, name) is None


def managers(o: dict[str, Any]) -> set[str]:
    return {str(m.get("manager")) for m in o["metadata"].get("managedFields") or []}


def gauge(op: OperatorProcess, name: str, **labels: str) -> float | None:
    """A gauge's sample from the operator's endpoint (None when absent)."""
    for family in text_string_to_metric_families(op.metrics_text()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def skipped(op: OperatorProcess, reason: str) -> float:
    value = gauge(op, "stargate_discovery_skipped_nodes", reason=reason)
    assert value is not None, "the skip gauge is missing"
    return value


# -- GPUNodes from GFD's labels -----------------------------------------------------------------

def test_gfd_labelled_nodes_become_gpunodes_within_seconds(
        api: Api, operator: OperatorProcess, site: str, nodes: Nodes) -> None:
    names = [nodes.name(f"dgx-a1-{i}") for i in range(3)]
    made = {n: nodes.create(n, gfd_labels(site, "r1" if i < 2 else "r2")) for i, n in enumerate(names)}
    for i, name in enumerate(names):
        got = gpunode(api, site, name)
        assert got["spec"] == {
            "rackRef": "r1" if i < 2 else "r2",
            "nodeName": name,
            "gpu": {"model": "H100-SXM", "count": 8, "memoryBytes": H100_MIB * MIB,
                    "minPowerWatts": H100.min_power_w, "maxPowerWatts": H100.max_power_w},
            "basePowerWatts": H100.base_power_w,
            "hostMemoryBytes": 2113407788 * 1024,  # the Node's capacity, not the table's 2 TB
            "cordoned": False,
            "nodeReady": True,
            "maintenance": False,  # the CRD's default: not discovery's
        }
        meta = got["metadata"]
        assert meta["labels"] == {d.MANAGED_BY_LABEL: d.FIELD_MANAGER}
        assert meta["annotations"] == {d.POWER_RANGE_ANNOTATION: d.POWER_FROM_TABLE}
        assert meta["ownerReferences"] == [{"apiVersion": "v1", "kind": "Node", "name": name,
                                            "uid": made[name]["metadata"]["uid"]}]
        assert d.FIELD_MANAGER in managers(got)
    # The power controller plans what discovery made (the engine tells it of discovery's writes).
    wait_for(lambda: api.status("GPUNode", site, names[0]).get("healthyGPUs") == 8, WAIT,
             what="the power controller's status of a discovered GPUNode")
    assert condition(api.status("GPUNode", site, names[0]), "Ready")["status"] == "True"
    wait_for(lambda: (api.status("Rack", site, "r1").get("gpus") or {}).get("total") == 16, WAIT,
             what="rack r1 counting its two discovered nodes")
    assert operator.counter("stargate_api_writes", kind="GPUNode", verb="apply") >= 3


def test_a_label_change_moves_the_spec(api: Api, operator: OperatorProcess, site: str, nodes: Nodes) -> None:
    name = nodes.name("dgx-b1")
    nodes.create(name, gfd_labels(site, "r1"))
    gpunode(api, site, name)
    nodes.patch(name, {"metadata": {"labels": {
        "stargate.dev/rack": "r2", d.GFD_COUNT_LABEL: "4", d.GFD_PRODUCT_LABEL: "NVIDIA-H200",
        d.GFD_MEMORY_LABEL: "143771"}}})
    got = gpunode(api, site, name, spec__rackRef="r2", spec__gpu__count=4, spec__gpu__model="H200-SXM")
    assert got["spec"]["gpu"]["memoryBytes"] == 143771 * MIB
    wait_for(lambda: (api.status("Rack", site, "r2").get("gpus") or {}).get("total") == 4, WAIT,
             what="rack r2 counting the node moved into it")
    wait_for(lambda: (api.status("Rack", site, "r1").get("gpus") or {}).get("total") == 0, WAIT,
             what="rack r1 without it")


def test_a_cordoned_node_is_in_maintenance(api: Api, operator: OperatorProcess, site: str,
                                           nodes: Nodes) -> None:
    name = nodes.name("dgx-c1")
    nodes.create(name, gfd_labels(site))
    gpunode(api, site, name)
    wait_for(lambda: api.status("GPUNode", site, name).get("healthyGPUs") == 8, WAIT, what="8 healthy GPUs")
    nodes.cordon(name)
    gpunode(api, site, name, spec__cordoned=True)

    def in_maintenance() -> dict[str, Any] | None:
        s = api.status("GPUNode", site, name)
        ready = condition(s, "Ready")
        return s if s.get("healthyGPUs") == 0 and ready.get("reason") == "Maintenance" else None

    wait_for(in_maintenance, WAIT, what="the cordoned node's GPUNode in maintenance")
    assert api.get("GPUNode", site, name)["spec"]["maintenance"] is False  # the user's field, untouched
    wait_for(lambda: gauge(operator, "stargate_rack_nodes_maintenance", namespace=site, rack="r1") == 1,
             WAIT, what="the rack counting the node as in maintenance")
    nodes.cordon(name, on=False)
    gpunode(api, site, name, spec__cordoned=False)
    wait_for(lambda: api.status("GPUNode", site, name).get("healthyGPUs") == 8, WAIT,
             what="uncordoned: 8 healthy GPUs again")
    wait_for(lambda: gauge(operator, "stargate_rack_nodes_maintenance", namespace=site, rack="r1") == 0,
             WAIT, what="the rack no longer counting it")


def test_a_node_that_is_not_ready_has_no_healthy_gpu(api: Api, operator: OperatorProcess, site: str,
                                                     nodes: Nodes) -> None:
    name = nodes.name("dgx-d1")
    nodes.create(name, gfd_labels(site))
    gpunode(api, site, name)
    nodes.set_ready(name, False)
    gpunode(api, site, name, spec__nodeReady=False)

    def not_ready() -> dict[str, Any] | None:
        s = api.status("GPUNode", site, name)
        reason = condition(s, "Ready").get("reason")
        return s if s.get("healthyGPUs") == 0 and reason == "NodeNotReady" else None

    wait_for(not_ready, WAIT, what="0 healthy GPUs on a NotReady node")
    wait_for(lambda: (api.status("Rack", site, "r1").get("gpus") or {}).get("healthy") == 0, WAIT,
             what="its rack with 0 healthy GPUs")
    nodes.set_ready(name, True)
    gpunode(api, site, name, spec__nodeReady=True)
    wait_for(lambda: api.status("GPUNode", site, name).get("healthyGPUs") == 8, WAIT, what="Ready again")


def test_a_deleted_nodes_gpunode_goes(api: Api, operator: OperatorProcess, site: str, nodes: Nodes) -> None:
    keep, drop = nodes.name("dgx-e1"), nodes.name("dgx-e2")
    nodes.create(keep, gfd_labels(site))
    nodes.create(drop, gfd_labels(site))
    gpunode(api, site, keep)
    gpunode(api, site, drop)
    nodes.delete(drop)
    wait_for(lambda: gone(api, site, drop), WAIT, what=f"GPUNode {drop} to be deleted with its Node")
    assert api.get_or_none("GPUNode", site, keep) is not None
    wait_for(lambda: (api.status("Rack", site, "r1").get("gpus") or {}).get("total") == 8, WAIT,
             what="the rack without the deleted node")
    # A Node taken out of discovery (its site label removed) loses its GPUNode too.
    nodes.patch(keep, {"metadata": {"labels": {"stargate.dev/site": None}}})
    wait_for(lambda: gone(api, site, keep), WAIT, what=f"GPUNode {keep} to go with its site label")


def test_a_users_maintenance_survives_discovery(api: Api, operator: OperatorProcess, site: str,
                                                nodes: Nodes) -> None:
    name = nodes.name("dgx-f1")
    nodes.create(name, gfd_labels(site))
    gpunode(api, site, name)
    api.patch("GPUNode", site, name, {"spec": {"maintenance": True, "gpu": {"requestedPowerWatts": 500}}})
    # Discovery applies again for a label change, a cordon and an uncordon.
    nodes.patch(name, {"metadata": {"labels": {"stargate.dev/rack": "r2"}}})
    gpunode(api, site, name, spec__rackRef="r2")
    nodes.cordon(name)
    gpunode(api, site, name, spec__cordoned=True)
    nodes.cordon(name, on=False)
    got = gpunode(api, site, name, spec__cordoned=False)
    assert got["spec"]["maintenance"] is True
    assert got["spec"]["gpu"]["requestedPowerWatts"] == 500
    assert got["spec"]["gpu"]["maxPowerWatts"] == H100.max_power_w  # discovery's fields, still its
    wait_for(lambda: condition(api.status("GPUNode", site, name), "Ready").get("reason") == "Maintenance",
             WAIT, what="the user's maintenance in effect")


def test_hand_written_gpunodes_are_never_touched(api: Api, operator: OperatorProcess, site: str,
                                                 nodes: Nodes) -> None:
    alone, named = nodes.name("hand-a"), nodes.name("hand-b")
    spec = {"rackRef": "r1", "gpu": {"model": "H100-SXM", "count": 4, "memoryBytes": 1000,
                                     "minPowerWatts": 100, "maxPowerWatts": 500},
            "basePowerWatts": 1000, "hostMemoryBytes": 8000}
    written = {n: api.create(site, obj("GPUNode", n, spec, labels={"team": "dc-ops"}))
               for n in (alone, named)}
    # A Node of the same name as a hand-written GPUNode: skipped, not applied.
    nodes.create(named, gfd_labels(site, "r2"))
    # A sync point: a discovered node made after both, so discovery has planned with them in view.
    marker = nodes.name("dgx-g1")
    nodes.create(marker, gfd_labels(site))
    gpunode(api, site, marker)
    wait_for(lambda: f"skipping Node {named} ({d.HAND_WRITTEN_GPU_NODE})" in operator.log_text(), WAIT,
             what="the log line of the Node whose GPUNode is hand-written")
    # Once more after a change of the Node: still not applied, and not deleted once it is gone.
    nodes.patch(named, {"metadata": {"labels": {d.GFD_COUNT_LABEL: "2"}}})
    nodes.delete(named)
    nodes.patch(marker, {"metadata": {"labels": {"stargate.dev/rack": "r2"}}})
    gpunode(api, site, marker, spec__rackRef="r2")
    for n, before in written.items():
        now = api.get("GPUNode", site, n)
        assert now["spec"] == {**before["spec"]}, n
        assert now["metadata"]["labels"] == {"team": "dc-ops"} and "annotations" not in now["metadata"]
        assert now["metadata"]["uid"] == before["metadata"]["uid"]
        assert d.FIELD_MANAGER not in managers(now), managers(now)


def test_a_node_without_placement_labels_is_skipped_logged_once_and_counted(
        api: Api, operator: OperatorProcess, site: str, nodes: Nodes) -> None:
    name, other = nodes.name("dgx-h1"), nodes.name("dgx-h2")
    base = skipped(operator, d.MISSING_SITE_LABEL)
    nodes.create(name, gfd_labels(None, "r1"))
    line = f"skipping Node {name} ({d.MISSING_SITE_LABEL})"
    wait_for(lambda: line in operator.log_text(), WAIT, what="the skip's log line")
    wait_for(lambda: skipped(operator, d.MISSING_SITE_LABEL) == base + 1, WAIT, what="the skip gauge")
    assert f"kubectl label node {name} stargate.dev/site=" in operator.log_text()
    # Recomputed again and again (its status, another Node, its own unrelated labels): one line.
    nodes.set_ready(name, True)
    nodes.patch(name, {"metadata": {"labels": {"example.com/pool": "training"}}})
    nodes.create(other, gfd_labels(site))
    gpunode(api, site, other)
    nodes.patch(other, {"metadata": {"labels": {"stargate.dev/rack": "r2"}}})
    gpunode(api, site, other, spec__rackRef="r2")  # a later plan: every earlier one has run
    assert operator.log_text().count(line) == 1, operator.log_tail()
    assert skipped(operator, d.MISSING_SITE_LABEL) == base + 1
    assert api.get_or_none("GPUNode", site, name) is None
    # Its rack label next: another reason, one line.
    nodes.patch(name, {"metadata": {"labels": {"stargate.dev/site": site, "stargate.dev/rack": None}}})
    wait_for(lambda: f"skipping Node {name} ({d.MISSING_RACK_LABEL})" in operator.log_text(), WAIT,
             what="the new reason's line")
    wait_for(lambda: skipped(operator, d.MISSING_SITE_LABEL) == base, WAIT, what="the gauge moving")
    # Placed: its GPUNode comes, the log says it is no longer skipped.
    nodes.patch(name, {"metadata": {"labels": {"stargate.dev/rack": "r1"}}})
    gpunode(api, site, name)
    wait_for(lambda: f"Node {name} is no longer skipped" in operator.log_text(), WAIT, what="the all-clear")


def test_the_agents_nvml_range_overrides_the_product_table(api: Api, operator: OperatorProcess, site: str,
                                                           nodes: Nodes) -> None:
    name = nodes.name("dgx-i1")
    nodes.create(name, gfd_labels(site))
    gpunode(api, site, name)
    # What the agent reads from nvmlDeviceGetPowerManagementLimitConstraints on this node.
    api.patch_status("GPUNode", site, name, {"telemetry": {
        "minPowerWatts": 250, "maxPowerWatts": 650, "defaultPowerWatts": 650, "observedAt": now_plus(0)}})
    got = gpunode(api, site, name, spec__gpu__minPowerWatts=250, spec__gpu__maxPowerWatts=650)
    assert got["metadata"]["annotations"][d.POWER_RANGE_ANNOTATION] == d.POWER_FROM_NVML
    # The core plans with NVML's range: floor base + 8 x 250 W, demand base + 8 x 650 W.
    wait_for(lambda: (s := api.status("GPUNode", site, name)).get("floorWatts") == H100.base_power_w + 8 * 250
             and s.get("demandWatts") == H100.base_power_w + 8 * 650, WAIT,
             what="the power controller planning with NVML's range")


def test_a_namespace_restricted_operator_discovers_only_its_own_sites(
        api: Api, operator: OperatorProcess, control_plane: LocalControlPlane, kubectl: Kubectl,
        site: str, nodes: Nodes, tmp_path: Path) -> None:
    """A shard (`-n`) applies GPUNodes only in its namespaces and leaves Nodes of other sites alone
    (neither applied nor reported skipped), with its label keys from its flags. The module's
    operator is stopped meanwhile: two discoverers with different label keys would fight (to the
    other, the shard's GPUNode has a Node without placement labels: it would delete it)."""
    other = namespace_name("restricted-other")
    create_namespace(kubectl, other)
    mine, theirs = nodes.name("dgx-j1"), nodes.name("dgx-j2")
    labels = {"example.com/site": site, "example.com/rack": "r1"}
    operator.stop()
    try:
        nodes.create(mine, {**gfd_labels(None, None), **labels})
        nodes.create(theirs, {**gfd_labels(None, None), **labels, "example.com/site": other})
        shard = OperatorProcess(control_plane, tmp_path, "-n", site, "--discover-nodes",
                                "--discovery-site-label", "example.com/site",
                                "--discovery-rack-label", "example.com/rack")
        with shard:
            gpunode(api, site, mine, timeout=30)
            # A later plan of the same shard: every write of the first one has been made.
            nodes.patch(mine, {"metadata": {"labels": {"example.com/rack": "r2"}}})
            gpunode(api, site, mine, spec__rackRef="r2")
            assert api.list("GPUNode", other) == []
            assert sum(gauge(shard, "stargate_discovery_skipped_nodes", reason=r) or 0
                       for r in d.SKIP_REASONS) == 0
            # Its Node gone, the shard deletes its GPUNode.
            nodes.delete(mine)
            wait_for(lambda: gone(api, site, mine), WAIT, what="the shard deleting its GPUNode")
            log = shard.log_text()
            assert "failed" not in log and "Traceback" not in log, shard.log_tail()
    finally:
        nodes.delete(mine)
        nodes.delete(theirs)
        purge_namespace(kubectl, other)
        operator.start()
