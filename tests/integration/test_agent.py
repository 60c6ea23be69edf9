"""The node agent against the real local control plane (kube-apiserver + etcd): it writes
status.telemetry and nothing else, applies status.powerLimitWatts to the simulated GPUs or to NVML
(replaced at the pynvml boundary), reports what it cannot apply as an Event, shows faults as fewer
healthy GPUs, and runs a fleet of simulated nodes in one process (the demo's way)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.fake_nvml import FakeGPU, FakeNvml
from helpers.kube import Kubectl
from helpers.operator_process import free_port
from stargate_operator import kinds
from stargate_operator.agent.nvml import NvmlBackend
from stargate_operator.agent.runner import EVENT_REASON_NOT_APPLIED, Fleet, GPUBackend, simulated_factory
from stargate_operator.agent.simulate import SimulatedBackend
from stargate_operator.api.gpunode import Telemetry
from stargate_operator.client import KubeClient
from stargate_operator.kinds import FAILED_GPUS_ANNOTATION
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration

GiB = 2**30
CLI = [sys.executable, "-m", "stargate_operator.cli", "agent"]


def gpunode(name: str, *, count: int = 8, min_w: int = 200, max_w: int = 700,
            base: int = 2000) -> dict[str, Any]:
    return {
        "apiVersion": kinds.API_VERSION, "kind": "GPUNode",
        "metadata": {"name": name, "labels": {"test": "agent"}},
        "spec": {"rackRef": "rack-a", "nodeName": f"k8s-{name}",
                 "gpu": {"model": "H100-SXM", "count": count, "memoryBytes": 80 * GiB,
                         "minPowerWatts": min_w, "maxPowerWatts": max_w},
                 "basePowerWatts": base, "hostMemoryBytes": 2048 * GiB},
    }


def operator_status(limit: int) -> dict[str, Any]:
    """What the operator writes; the agent must leave every bit of it alone."""
    return {
        "powerLimitWatts": limit, "allocatedWatts": 2000 + 8 * limit, "floorWatts": 3600,
        "demandWatts": 7600, "healthyGPUs": 8, "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Allocated", "message": "ok",
                        "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
    }


def set_status(kubectl: Kubectl, ns: str, name: str, status: dict[str, Any]) -> None:
    kubectl("patch", "gpunode", name, "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))


def get(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kubectl.json("get", "gpunode", name, "-n", ns)
    return obj


async def eventually(check: Callable[[], Any], timeout: float = 20.0, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"not reached in {timeout} s; last: {last!r}")


@pytest.fixture
async def client(control_plane: LocalControlPlane) -> AsyncIterator[KubeClient]:
    c = KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    yield c
    await c.aclose()


async def run_fleet(fleet: Fleet) -> asyncio.Task[None]:
    task = asyncio.create_task(fleet.run())
    await asyncio.wait_for(fleet.synced.wait(), 20)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_agent_writes_only_telemetry_and_follows_the_limit(
        kubectl: Kubectl, namespace: str, client: KubeClient) -> None:
    ns = namespace
    kubectl.apply(gpunode("n1"), namespace=ns)
    set_status(kubectl, ns, "n1", operator_status(450))
    before = get(kubectl, ns, "n1")
    fleet = Fleet(client, ns, simulated_factory(seed=1), names=["n1"], interval=0.5)
    task = await run_fleet(fleet)
    try:
        after = await eventually(lambda: (o := get(kubectl, ns, "n1"))["status"].get("telemetry") and o)
        t = after["status"]["telemetry"]
        Telemetry.model_validate(t)
        # The reading, and the power range the GPUs accept (what discovery reads).
        assert set(t) == {"powerWatts", "healthyGPUs", "hbmUsedBytes", "observedAt",
                          "minPowerWatts", "maxPowerWatts", "defaultPowerWatts", "enforcedLimitWatts",
                          "peakPowerWatts"}  # the highest of its 1 Hz samples
        # Only its field: the rest of status, the spec, labels and generation are untouched.
        assert {k: v for k, v in after["status"].items() if k != "telemetry"} == before["status"]
        assert after["spec"] == before["spec"]
        assert after["metadata"]["generation"] == before["metadata"]["generation"]
        assert after["metadata"]["labels"] == before["metadata"]["labels"]
        # The limit reached the (simulated) GPUs, and the draw follows it.
        backend = fleet.agents["n1"].backend
        assert isinstance(backend, SimulatedBackend) and backend.limit_watts == 450
        assert t["healthyGPUs"] == 8
        assert 8 * 0.6 * 450 + 1500 <= t["powerWatts"] <= 8 * 450 + 2000
        assert 8 * 0.5 * 80 * GiB <= t["hbmUsedBytes"] <= 8 * 0.95 * 80 * GiB
        age = (datetime.now(UTC) - datetime.fromisoformat(t["observedAt"].replace("Z", "+00:00")))
        assert abs(age.total_seconds()) < 10

        # The operator lowers the limit: applied promptly (watch), telemetry follows.
        set_status(kubectl, ns, "n1", {"powerLimitWatts": 250})
        await eventually(lambda: backend.limit_watts == 250, timeout=5)
        t2 = await eventually(lambda: (x := get(kubectl, ns, "n1")["status"]["telemetry"])["powerWatts"]
                              <= 8 * 250 + 2000 and x)
        assert t2["powerWatts"] >= 8 * 0.6 * 250 + 1500
        final = get(kubectl, ns, "n1")["status"]
        assert {k: v for k, v in final.items() if k != "telemetry"} == {**before["status"],
                                                                         "powerLimitWatts": 250}
        # observedAt keeps advancing every interval: the heartbeat the operator's staleness check reads.
        first = t2["observedAt"]
        await eventually(lambda: get(kubectl, ns, "n1")["status"]["telemetry"]["observedAt"] != first)
    finally:
        await stop(task)


async def test_faults_show_as_fewer_healthy_gpus(kubectl: Kubectl, namespace: str,
                                                 client: KubeClient) -> None:
    ns = namespace
    kubectl.apply(gpunode("n1"), namespace=ns)
    fleet = Fleet(client, ns, simulated_factory(seed=2, failed_gpus=1), names=["n1"], interval=30)
    task = await run_fleet(fleet)

    def healthy() -> int | None:
        return (get(kubectl, ns, "n1").get("status") or {}).get("telemetry", {}).get("healthyGPUs")
    try:
        assert await eventually(lambda: healthy() == 7)  # --fail-gpus 1
        # Injected at runtime through the annotation: seen at once (watch), not after the 30 s interval.
        kubectl("annotate", "gpunode", "n1", "-n", ns, f"{FAILED_GPUS_ANNOTATION}=3", "--overwrite")
        assert await eventually(lambda: healthy() == 5, timeout=8)
        kubectl("annotate", "gpunode", "n1", "-n", ns, f"{FAILED_GPUS_ANNOTATION}=0", "--overwrite")
        assert await eventually(lambda: healthy() == 8, timeout=8)
    finally:
        await stop(task)


async def test_nvml_limits_reach_the_devices_and_what_cannot_is_an_event(
        kubectl: Kubectl, namespace: str, client: KubeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = namespace
    fake = FakeNvml([FakeGPU(power_mw=500_000, used=30 * GiB) for _ in range(8)])
    fake.gpus[7].min_mw = 300_000  # one GPU allows no less than 300 W
    fake.install(monkeypatch)
    kubectl.apply(gpunode("gpu-host"), namespace=ns)
    set_status(kubectl, ns, "gpu-host", operator_status(400))

    def nvml(name: str, obj: dict[str, Any]) -> GPUBackend:
        return NvmlBackend()
    fleet = Fleet(client, ns, nvml, names=["gpu-host"], interval=0.5)
    task = await run_fleet(fleet)
    try:
        await eventually(lambda: all(g.limit_mw == 400_000 for g in fake.gpus))
        t = await eventually(lambda: get(kubectl, ns, "gpu-host")["status"].get("telemetry"))
        # NVML sees the GPUs; the agent adds the node's basePowerWatts.
        assert t == {**t, "powerWatts": 8 * 500 + 2000, "healthyGPUs": 8, "hbmUsedBytes": 8 * 30 * GiB}
        assert not kubectl.json("get", "events", "-n", ns, "--field-selector",
                                f"reason={EVENT_REASON_NOT_APPLIED}")["items"]

        # Below one device's range: clamped there, the others take it, and it is reported.
        set_status(kubectl, ns, "gpu-host", {"powerLimitWatts": 250})
        await eventually(lambda: [g.limit_mw for g in fake.gpus] == [250_000] * 7 + [300_000])

        def events() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = kubectl.json(
                "get", "events", "-n", ns, "--field-selector",
                f"involvedObject.name=gpu-host,reason={EVENT_REASON_NOT_APPLIED}")["items"]
            return items
        evs = await eventually(events)
        assert len(evs) == 1
        ev = evs[0]
        assert ev["type"] == "Warning" and ev["involvedObject"]["kind"] == "GPUNode"
        assert "GPU 7" in ev["message"] and "clamped to 300 W" in ev["message"]
        # Reported once per outcome, not every interval.
        await asyncio.sleep(1.5)
        assert len(events()) == 1
        # The node's enforced limit is its highest GPU's: the assigned 250 W does not hold on GPU 7,
        # so the operator must not count it confirmed (PowerLimitApplied, the taint, lower-before-raise).
        await eventually(lambda: get(kubectl, ns, "gpu-host")["status"]["telemetry"].get("enforcedLimitWatts")
                         == 300)

        # A GPU that falls off the bus.
        fake.gpus[2].lost = True
        await eventually(lambda: get(kubectl, ns, "gpu-host")["status"]["telemetry"]["healthyGPUs"] == 7)
    finally:
        await stop(task)


def test_cli_fleet_of_simulated_nodes_in_one_process(
        kubectl: Kubectl, namespace: str, control_plane: LocalControlPlane, tmp_path: Path) -> None:
    ns = namespace
    for i in range(5):
        kubectl.apply(gpunode(f"sim-{i}", count=4 + i), namespace=ns)
    set_status(kubectl, ns, "sim-0", operator_status(300))

    # --once: one pass for every node, exit 0.
    once = subprocess.run([*CLI, "--simulate", "--all", "-n", ns, "--once", "--seed", "3",
                           "--kubeconfig", str(control_plane.kubeconfig)],
                          capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stderr
    items = kubectl.json("get", "gpunodes", "-n", ns)["items"]
    assert all(o["status"]["telemetry"]["healthyGPUs"] == o["spec"]["gpu"]["count"] for o in items)
    # A named node that does not exist: --once says so and fails.
    missing = subprocess.run([*CLI, "--simulate", "--node", "nope", "-n", ns, "--once",
                              "--kubeconfig", str(control_plane.kubeconfig)],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "nope" in missing.stderr

    log = (tmp_path / "agent.log").open("w")
    proc = subprocess.Popen([*CLI, "--simulate", "--all", "--interval", "1", "--fail-gpus", "1"],
                            env={**control_plane.env(), "STARGATE_AGENT_NAMESPACE": ns},
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        def observed() -> dict[str, str]:
            return {o["metadata"]["name"]: o["status"]["telemetry"]["observedAt"]
                    for o in kubectl.json("get", "gpunodes", "-n", ns)["items"]
                    if (o.get("status") or {}).get("telemetry", {}).get("healthyGPUs")
                    == o["spec"]["gpu"]["count"] - 1}
        asyncio.run(eventually(lambda: len(observed()) == 5, timeout=30))
        # A node created later gets its agent; a deleted one loses it without harm to the others.
        kubectl.apply(gpunode("sim-new"), namespace=ns)
        kubectl("delete", "gpunode", "sim-4", "-n", ns)
        asyncio.run(eventually(lambda: "sim-new" in observed(), timeout=30))
        snap = observed()
        asyncio.run(eventually(lambda: all(observed()[n] != snap[n] for n in snap), timeout=30))
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        log.close()
    text = (tmp_path / "agent.log").read_text()
    assert code == 0, text
    assert "sim-new: agent started" in text and "agent stopped" in text
    assert "Traceback" not in text


def test_agent_needs_only_its_rbac(kubectl: Kubectl, namespace: str, control_plane: LocalControlPlane,
                                   tmp_path: Path) -> None:
    """What a DaemonSet's ServiceAccount needs: get/list/watch gpunodes, powerlimitslices (its
    limit) and racks (an older operator's limits), patch gpunodes/status, create events. Nothing
    more."""
    ns = namespace
    kubectl.apply([gpunode("n1"), slice_manifest("limits-0", {"n1": 900})], namespace=ns)
    # above the range (from its slice): an Event must be created
    set_status(kubectl, ns, "n1", {**operator_status(450), "powerLimitSlice": "limits-0"})
    kubectl("create", "serviceaccount", "agent", "-n", ns)
    kubectl.apply([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "stargate-agent"},
         "rules": [
             {"apiGroups": ["stargate.dev"], "resources": ["gpunodes", "racks", "powerlimitslices"],
              "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["stargate.dev"], "resources": ["gpunodes/status"], "verbs": ["patch"]},
             {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "stargate-agent"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "stargate-agent"},
         "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": ns}]},
    ], namespace=ns)
    kc = control_plane.write_token_kubeconfig(tmp_path / "agent.kubeconfig",
                                              control_plane.create_token("agent", ns), namespace=ns)
    out = subprocess.run([*CLI, "--simulate", "--node", "n1", "-n", ns, "--once", "--kubeconfig", str(kc)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cannot record event" not in out.stderr and "403" not in out.stderr
    assert get(kubectl, ns, "n1")["status"]["telemetry"]["healthyGPUs"] == 8
    evs = kubectl.json("get", "events", "-n", ns, "--field-selector", f"reason={EVENT_REASON_NOT_APPLIED}")
    assert len(evs["items"]) == 1 and "clamped to 700 W" in evs["items"][0]["message"]


async def test_gpus_back_at_their_default_limit_are_set_again(
        kubectl: Kubectl, namespace: str, client: KubeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rebooted node's GPUs run at their default limit: the agent, started afresh over a GPUNode
    whose last report still says the assigned limit was enforced, sets it again at once, trusting
    the devices, not the report; GPUs reset under a running agent (a driver reload) are set again
    at its next pass."""
    ns = namespace
    fake = FakeNvml([FakeGPU(power_mw=300_000) for _ in range(8)])  # at the default: 700 W
    fake.install(monkeypatch)
    kubectl.apply(gpunode("gpu-host"), namespace=ns)
    before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    set_status(kubectl, ns, "gpu-host", {**operator_status(400), "telemetry": {
        "powerWatts": 4400, "healthyGPUs": 8, "observedAt": before, "enforcedLimitWatts": 400}})
    fleet = Fleet(client, ns, lambda name, obj: NvmlBackend(), names=["gpu-host"], interval=2)
    task = await run_fleet(fleet)

    def report() -> dict[str, Any] | None:
        t: dict[str, Any] = get(kubectl, ns, "gpu-host")["status"]["telemetry"]
        return t if t["observedAt"] > before else None

    try:
        # Its first report already shows the limit in force: it applied before reporting.
        first = await eventually(report, timeout=10, every=0.1)
        assert first["enforcedLimitWatts"] == 400, first
        assert [g.limit_mw for g in fake.gpus] == [400_000] * 8
        for g in fake.gpus:
            g.limit_mw = 700_000  # reset under the agent
        await eventually(lambda: [g.limit_mw for g in fake.gpus] == [400_000] * 8, timeout=5)
    finally:
        await stop(task)


async def test_agent_survives_an_api_server_restart(
        kubectl: Kubectl, namespace: str, client: KubeClient, control_plane: LocalControlPlane,
        caplog: pytest.LogCaptureFixture) -> None:
    ns = namespace
    kubectl.apply(gpunode("n1"), namespace=ns)
    set_status(kubectl, ns, "n1", operator_status(500))
    fleet = Fleet(client, ns, simulated_factory(seed=4), names=["n1"], interval=0.5)
    task = await run_fleet(fleet)
    try:
        await eventually(lambda: get(kubectl, ns, "n1")["status"].get("telemetry"))
        await asyncio.to_thread(control_plane.restart_apiserver, downtime=3.0, kill=True)
        assert not task.done()
        after = get(kubectl, ns, "n1")["status"]["telemetry"]["observedAt"]
        await eventually(lambda: get(kubectl, ns, "n1")["status"]["telemetry"]["observedAt"] > after)
        # The watch is back: a new limit still arrives promptly.
        set_status(kubectl, ns, "n1", {"powerLimitWatts": 320})
        backend = fleet.agents["n1"].backend
        assert isinstance(backend, SimulatedBackend)
        await eventually(lambda: backend.limit_watts == 320, timeout=15)
    finally:
        await stop(task)
    # Warnings while it was down, but no crash and no traceback.
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert any("not written" in r.getMessage() or "watch failed" in r.getMessage() for r in caplog.records)


async def test_polling_without_watch(kubectl: Kubectl, namespace: str, client: KubeClient) -> None:
    ns = namespace
    kubectl.apply(gpunode("n1"), namespace=ns)
    set_status(kubectl, ns, "n1", operator_status(600))
    fleet = Fleet(client, ns, simulated_factory(seed=5), names=["n1"], interval=0.5, watch=False)
    task = await run_fleet(fleet)
    try:
        await eventually(lambda: get(kubectl, ns, "n1")["status"].get("telemetry"))
        backend = fleet.agents["n1"].backend
        assert isinstance(backend, SimulatedBackend)
        await eventually(lambda: backend.limit_watts == 600)
        set_status(kubectl, ns, "n1", {"powerLimitWatts": 350})
        await eventually(lambda: backend.limit_watts == 350, timeout=5)  # within a poll or two
        assert client.requests.get(("watch", "gpunodes"), 0) == 0
    finally:
        await stop(task)


def slice_manifest(name: str, limits: dict[str, int], safe: dict[str, int] | None = None,
                   revision: int = 1) -> dict[str, Any]:
    return {"apiVersion": kinds.API_VERSION, "kind": "PowerLimitSlice", "metadata": {"name": name},
            "spec": {"limits": limits, "safeLimits": safe or {}, "revision": revision}}


OLDER_RACKS = Path(__file__).parent.parent / "fixtures" / "older-operator" / "stargate.dev_racks.yaml"
RACKS_NOW = Path(__file__).parent.parent.parent / "crds" / "stargate.dev_racks.yaml"


@pytest.fixture
def older_operator(kubectl: Kubectl, namespace: str) -> Iterator[None]:
    """The Rack CRD of an operator from before PowerLimitSlices (racks carry status.powerLimits),
    for as long as the test runs; today's CRD again after it."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(OLDER_RACKS))
    kubectl("wait", "--for=condition=Established", "crd/racks.stargate.dev")
    try:
        yield
    finally:
        # The test's racks go while the CRD they were made under still serves them: a namespace
        # purge racing the CRD's replacement can miss them, and they then show up in other tests'
        # cluster-wide listings under a namespace that no longer exists.
        kubectl("delete", "racks", "--all", "-n", namespace, "--wait=true")
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(RACKS_NOW))
        kubectl("wait", "--for=condition=Established", "crd/racks.stargate.dev")


async def test_agent_follows_its_slice_by_name(kubectl: Kubectl, namespace: str, client: KubeClient) -> None:
    """The agent watches the PowerLimitSlice its GPUNode's status names, and only that one; its
    entry there wins over its GPUNode's limit; the fail-safe's limit is the slice's safe limit."""
    ns = namespace
    kubectl.apply([gpunode("n1"), slice_manifest("limits-0", {"n1": 300, "other": 500}, {"n1": 250}),
                   slice_manifest("limits-1", {"n1": 200})], namespace=ns)
    set_status(kubectl, ns, "n1", operator_status(450))
    fleet = Fleet(client, ns, simulated_factory(seed=1), names=["n1"], interval=30)
    task = await run_fleet(fleet)
    try:
        await asyncio.wait_for(fleet.synced.wait(), 20)
        agent = fleet.agents["n1"]
        backend = agent.backend
        assert isinstance(backend, SimulatedBackend)
        await eventually(lambda: backend.limit_watts == 450, timeout=5)  # no slice named yet
        set_status(kubectl, ns, "n1", {"powerLimitSlice": "limits-0"})
        await eventually(lambda: backend.limit_watts == 300, timeout=5)
        assert agent.assigned_limit() == (300, "slice") and agent.safe_limit() == 250
        await eventually(lambda: get(kubectl, ns, "n1")["status"]["telemetry"].get("enforcedLimitWatts")
                         == 300, timeout=10)
        # one write of its slice reaches it; another slice's entry for it means nothing
        kubectl.apply(slice_manifest("limits-0", {"n1": 280, "other": 500}, revision=2), namespace=ns)
        kubectl.apply(slice_manifest("limits-1", {"n1": 210}, revision=2), namespace=ns)
        await eventually(lambda: backend.limit_watts == 280, timeout=5)
        await asyncio.sleep(1.0)
        assert backend.limit_watts == 280 and agent.safe_limit() == 280
        assert set(fleet.slices) == {"limits-0"}
        # its GPUNode names another slice: that one, through a watch of it by name
        set_status(kubectl, ns, "n1", {"powerLimitSlice": "limits-1"})
        await eventually(lambda: backend.limit_watts == 210, timeout=10)
        assert set(fleet.slices) == {"limits-1"}
    finally:
        await stop(task)


def rack_manifest(name: str = "rack-a") -> dict[str, Any]:
    return {"apiVersion": kinds.API_VERSION, "kind": "Rack", "metadata": {"name": name},
            "spec": {"clusterRef": "site", "maxPowerWatts": 100_000}}


def set_rack_limits(kubectl: Kubectl, ns: str, name: str, limits: dict[str, int | None]) -> None:
    kubectl("patch", "rack", name, "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"powerLimits": limits}}))


async def test_a_new_agent_under_an_older_operator_takes_its_limit_from_its_rack(
        kubectl: Kubectl, namespace: str, client: KubeClient, older_operator: None) -> None:
    """An operator from before PowerLimitSlices writes the racks' powerLimits before the GPUNodes'
    statuses; the agent (upgraded first) finds no slice, watches its own rack (by name) and enforces
    its entry there, else its GPUNode's powerLimitWatts; it reports what the GPUs enforce as
    telemetry.enforcedLimitWatts."""
    ns = namespace
    kubectl.apply([rack_manifest("rack-a"), rack_manifest("rack-b"), gpunode("n1")], namespace=ns)
    set_status(kubectl, ns, "n1", operator_status(450))
    fleet = Fleet(client, ns, simulated_factory(seed=1), names=["n1"], interval=30)
    task = await run_fleet(fleet)
    try:
        await asyncio.wait_for(fleet.racks_synced.wait(), 20)
        agent = fleet.agents["n1"]
        backend = agent.backend
        assert isinstance(backend, SimulatedBackend)
        # The rack does not list it yet: its GPUNode's limit.
        await eventually(lambda: backend.limit_watts == 450, timeout=5)
        assert agent.assigned_limit() == (450, "gpunode")
        # One write to the rack reaches it, while its GPUNode still says 450.
        set_rack_limits(kubectl, ns, "rack-a", {"n1": 300, "someone-else": 500})
        await eventually(lambda: backend.limit_watts == 300, timeout=5)
        assert agent.assigned_limit() == (300, "rack")
        # ... and it reports the limit in force (at most a second after its last write).
        await eventually(lambda: get(kubectl, ns, "n1")["status"]["telemetry"].get("enforcedLimitWatts")
                         == 300, timeout=10)
        # Another rack's entry for it means nothing: only its own rack is watched.
        set_rack_limits(kubectl, ns, "rack-b", {"n1": 200})
        set_status(kubectl, ns, "n1", {"powerLimitWatts": 250})  # the GPUNode follows later
        await asyncio.sleep(1.5)
        assert backend.limit_watts == 300
        assert set(fleet.racks) == {"rack-a"}
        # The rack no longer lists it: back to its GPUNode's status.
        set_rack_limits(kubectl, ns, "rack-a", {"n1": None})
        await eventually(lambda: backend.limit_watts == 250, timeout=5)
        # It moves to rack-b: that rack's entry, through a watch on that rack now.
        kubectl("patch", "gpunode", "n1", "-n", ns, "--type=merge", "-p",
                json.dumps({"spec": {"rackRef": "rack-b"}}))
        await eventually(lambda: backend.limit_watts == 200, timeout=10)
        assert set(fleet.racks) == {"rack-b"}
        assert fleet.stats.limit_changes == {"slice": 0, "rack": 2, "gpunode": 2}  # 300, 200; 450, 250
    finally:
        await stop(task)


def test_cli_fleet_follows_the_racks_and_serves_its_metrics(
        kubectl: Kubectl, namespace: str, control_plane: LocalControlPlane, tmp_path: Path,
        older_operator: None) -> None:
    """`agent --simulate --all` (the benchmark's and the demo's way): one watch of the namespace's
    racks for every agent; --metrics-port says where each limit came from."""
    ns = namespace
    kubectl.apply([rack_manifest("rack-a"), *(gpunode(f"sim-{i}") for i in range(3))], namespace=ns)
    for i in range(3):
        set_status(kubectl, ns, f"sim-{i}", operator_status(500))
    port = free_port()
    log = (tmp_path / "agent.log").open("w")
    proc = subprocess.Popen([*CLI, "--simulate", "--all", "--interval", "60", "--metrics-port", str(port),
                             "--metrics-addr", "127.0.0.1"],
                            env={**control_plane.env(), "STARGATE_AGENT_NAMESPACE": ns},
                            stdout=log, stderr=subprocess.STDOUT)

    def metrics() -> dict[str, float]:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return {}
        return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                if ln.startswith("stargate_agent")}

    def enforced() -> dict[str, Any]:
        items = kubectl.json("get", "gpunodes", "-n", ns)["items"]
        return {o["metadata"]["name"]:
                ((o.get("status") or {}).get("telemetry") or {}).get("enforcedLimitWatts") for o in items}

    try:
        asyncio.run(eventually(lambda: set(enforced().values()) == {500}, timeout=30))
        m = metrics()
        assert m["stargate_agent_nodes"] == 3
        assert m['stargate_agent_nodes_limit_source{source="gpunode"}'] == 3
        racked_at = time.time()
        set_rack_limits(kubectl, ns, "rack-a", {"sim-0": 300, "sim-1": 350, "sim-2": 500})
        asyncio.run(eventually(lambda: enforced() == {"sim-0": 300, "sim-1": 350, "sim-2": 500},
                               timeout=30))
        m = metrics()
        assert m['stargate_agent_nodes_limit_source{source="rack"}'] == 3
        # dated by the process itself, after the rack's write
        assert m["stargate_agent_last_power_limit_change_timestamp_seconds"] >= racked_at
        # Two devices' limits changed, through the rack; the third was already at its entry.
        assert m['stargate_agent_power_limit_changes_total{source="rack"}'] == 2
        assert m['stargate_agent_power_limit_changes_total{source="gpunode"}'] == 3
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        log.close()
    text = (tmp_path / "agent.log").read_text()
    assert code == 0, text
    assert "Traceback" not in text

