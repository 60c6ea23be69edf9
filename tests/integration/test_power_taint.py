"""The taint stargate.dev/power-unmanaged:NoSchedule (`run --discover-nodes --taint-unconfirmed`) on the
real API server, with Node objects written as a kubelet would (there is none here: that a pod without
the toleration stays Pending until the limit is confirmed needs a real node, tests/e2e).

A GPU Node is tainted when first discovered and whenever it is not Ready, and untainted once its
agent reports (through its GPUNode's telemetry) the assigned limit in force, dated after the Node
last became Ready. Other taints on the Node are never touched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from helpers.api import Api
from helpers.k8s_nodes import Nodes, gfd_labels
from helpers.operator_process import OperatorProcess, wait_for
from helpers.site import cluster, rack
from stargate_operator.core.taint import TAINT_KEY
from stargate_operator.kinds import DISCOVERY_SITE_LABEL
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration

WAIT = 20.0
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def operator(control_plane: LocalControlPlane, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    op = OperatorProcess(control_plane, tmp_path_factory.mktemp("operator"), "--discover-nodes",
                         "--taint-unconfirmed")
    with op:
        yield op


@pytest.fixture
def site(api: Api, namespace: str) -> str:
    api.create_all(namespace, [cluster(), rack("r1")])
    return namespace


@pytest.fixture
def nodes(api: Api, namespace: str) -> Iterator[Nodes]:
    made = Nodes(api)
    yield made
    made.delete_all()
    # discovery deletes the GPUNodes it made before the namespace goes
    wait_for(lambda: not api.list("GPUNode", namespace), WAIT, what="the discovered GPUNodes to go")


def gpunode(api: Api, ns: str, name: str, **where: Any) -> dict[str, Any]:
    """Wait for the GPUNode (with spec fields as `where` says, e.g. nodeReady=True)."""
    def check() -> dict[str, Any] | None:
        got = api.get_or_none("GPUNode", ns, name)
        if got is None or any(got["spec"].get(k) != v for k, v in where.items()):
            return None
        return got

    found: dict[str, Any] = wait_for(check, WAIT, what=f"GPUNode {ns}/{name} with {where}")
    return found


def taints(nodes: Nodes, name: str) -> list[dict[str, Any]]:
    return list(nodes.get(name).get("spec", {}).get("taints") or [])


def ours(nodes: Nodes, name: str) -> bool:
    return any(t.get("key") == TAINT_KEY and t.get("effect") == "NoSchedule" for t in taints(nodes, name))


def report(api: Api, ns: str, name: str, enforced: int) -> None:
    """What the node agent writes: its telemetry, with the limit its GPUs enforce."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    api.patch_status("GPUNode", ns, name, {"telemetry": {
        "powerWatts": 4000, "healthyGPUs": 8, "observedAt": now, "enforcedLimitWatts": enforced}})


def test_a_gpu_node_is_tainted_until_its_agent_confirms_its_limit(
        api: Api, operator: OperatorProcess, site: str, nodes: Nodes) -> None:
    name = nodes.name("dgx-t1")
    nodes.create(name, gfd_labels(site), ready=None)
    nodes.patch(name, {"spec": {"taints": [GPU_TAINT]}})  # another controller's taint
    nodes.set_ready(name, True)
    gpunode(api, site, name)
    wait_for(lambda: ours(nodes, name), WAIT, what="tainted when first discovered")
    limit = wait_for(lambda: api.status("GPUNode", site, name).get("powerLimitWatts"), WAIT,
                     what="a limit assigned")

    time.sleep(1.1)  # reports count from the second after the Node became Ready (whole seconds)
    report(api, site, name, enforced=limit + 50)  # not the limit: still unmanaged
    wait_for(lambda: (api.status("GPUNode", site, name).get("telemetry") or {}).get("enforcedLimitWatts")
             == limit + 50, WAIT)
    assert ours(nodes, name)
    report(api, site, name, enforced=limit)
    wait_for(lambda: not ours(nodes, name), WAIT, what="untainted once the limit is confirmed")
    assert GPU_TAINT in taints(nodes, name)

    # A reboot: NotReady taints it; Ready again, it stays tainted until a report after that.
    nodes.set_ready(name, False)
    wait_for(lambda: ours(nodes, name), WAIT, what="tainted while NotReady")
    nodes.set_ready(name, True)
    gpunode(api, site, name, nodeReady=True)  # discovery saw it Ready again ...
    time.sleep(2)
    assert ours(nodes, name)  # ... and its old report confirms nothing
    time.sleep(1)  # a report dated after the Ready transition (whole seconds)
    report(api, site, name, enforced=limit)
    wait_for(lambda: not ours(nodes, name), WAIT, what="untainted after a report since Ready")
    assert GPU_TAINT in taints(nodes, name)


def test_a_node_without_gpus_or_site_is_never_tainted(api: Api, operator: OperatorProcess, site: str,
                                                       nodes: Nodes) -> None:
    plain = nodes.name("cpu-t1")
    nodes.create(plain, {DISCOVERY_SITE_LABEL: site}, ready=False)
    placed = nodes.name("dgx-t2")
    nodes.create(placed, gfd_labels(site), ready=None)
    wait_for(lambda: ours(nodes, placed), WAIT, what="the GPU Node tainted")
    assert not ours(nodes, plain)
