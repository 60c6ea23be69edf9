"""The simulated GPU node and the agent loop's decisions (what it writes, when it reports), with a
recording stand-in for the API client. The real API server is in tests/integration/test_agent.py."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from stargate_operator.agent.backend import GPUReading, LimitOutcome, NodeReading
from stargate_operator.agent.runner import (
    EVENT_REASON_NOT_APPLIED,
    FROM_GPUNODE,
    FROM_RACK,
    Fleet,
    NodeAgent,
    simulated_factory,
    telemetry_patch,
)
from stargate_operator.agent.simulate import SimulatedBackend
from stargate_operator.api.gpunode import Telemetry
from stargate_operator.client import ApiError, ApiResource, KubeClient
from stargate_operator.kinds import FAILED_GPUS_ANNOTATION

GiB = 2**30
SPEC: dict[str, Any] = {
    "rackRef": "r1",
    "gpu": {"model": "H100-SXM", "count": 8, "memoryBytes": 80 * GiB, "minPowerWatts": 200,
            "maxPowerWatts": 700},
    "basePowerWatts": 2000,
}


def test_seeded_simulation_is_reproducible_and_per_node() -> None:
    a = [SimulatedBackend("n1", SPEC, seed=7).read(SPEC, {}) for _ in range(2)]
    assert a[0].gpus == a[1].gpus
    b = SimulatedBackend("n2", SPEC, seed=7).read(SPEC, {})
    assert b.gpus != a[0].gpus


def test_draw_follows_the_applied_limit() -> None:
    sim = SimulatedBackend("n1", SPEC, seed=1)
    for limit in (700, 450, 250, 600):
        out = sim.apply_power_limit(limit)
        assert out.ok
        readings = [sim.read(SPEC, {}) for _ in range(20)]
        for r in readings:
            assert all(g.power_watts <= limit for g in r.gpus)
            assert all(g.limit_watts == limit for g in r.gpus)
        mean = sum(r.gpu_power_watts for r in readings) / len(readings) / 8
        assert 0.6 * limit <= mean <= limit, (limit, mean)
        # Noise: not every reading is the same.
        assert len({r.gpu_power_watts for r in readings}) > 1
        node = telemetry_patch(readings[-1], SPEC)["telemetry"]["powerWatts"]
        assert 8 * 0.6 * limit + 1500 <= node <= 8 * limit + 2000


def test_limit_outside_the_range_is_clamped_and_reported() -> None:
    sim = SimulatedBackend("n1", SPEC, seed=1)
    out = sim.apply_power_limit(900)
    assert not out.ok and len(out.problems) == 8 and "clamped to 700 W" in out.problems[0]
    assert sim.limit_watts == 700
    assert sim.apply_power_limit(100).applied[0] == 200


def test_faults_from_flag_and_annotation() -> None:
    sim = SimulatedBackend("n1", SPEC, seed=3, failed_gpus=1)
    r = sim.read(SPEC, {})
    assert r.healthy_gpus == 7 and not r.gpus[7].healthy and r.gpus[7].memory_used_bytes == 0
    assert sim.read(SPEC, {FAILED_GPUS_ANNOTATION: "3"}).healthy_gpus == 5
    assert sim.read(SPEC, {FAILED_GPUS_ANNOTATION: "0"}).healthy_gpus == 8
    assert sim.read(SPEC, {FAILED_GPUS_ANNOTATION: "99"}).healthy_gpus == 0
    assert sim.read(SPEC, {FAILED_GPUS_ANNOTATION: "x"}).healthy_gpus == 7  # ignored: the flag's value


def test_hbm_is_plausible_and_maintenance_idles() -> None:
    sim = SimulatedBackend("n1", SPEC, seed=5)
    r = sim.read(SPEC, {})
    assert all(0.5 * 80 * GiB <= g.memory_used_bytes <= 0.95 * 80 * GiB for g in r.gpus)
    m = sim.read({**SPEC, "maintenance": True}, {})
    assert m.gpu_power_watts <= 8 * 0.2 * 700
    assert m.hbm_used_bytes <= 0.05 * 8 * 80 * GiB


def test_spec_changes_resize_the_node() -> None:
    sim = SimulatedBackend("n1", SPEC, seed=5)
    spec4 = {**SPEC, "gpu": {**SPEC["gpu"], "count": 4}}
    assert len(sim.read(spec4, {}).gpus) == 4


def test_telemetry_patch_is_only_telemetry_and_valid() -> None:
    r = NodeReading((GPUReading(0, power_watts=400.4, memory_used_bytes=GiB),
                     GPUReading(1, power_watts=100.2, healthy=False)))
    patch = telemetry_patch(r, {"basePowerWatts": 1000})
    assert set(patch) == {"telemetry"}
    t = patch["telemetry"]
    assert t["powerWatts"] == 1501 and t["healthyGPUs"] == 1 and t["hbmUsedBytes"] == GiB
    assert t["observedAt"].endswith("Z")
    Telemetry.model_validate(t)  # the CRD's schema, from the API models


class RecordingClient:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, str, Mapping[str, Any]]] = []
        self.events: list[dict[str, Any]] = []
        self.fail_with: ApiError | None = None

    async def patch_status(self, resource: ApiResource, namespace: str, name: str,
                           patch: Mapping[str, Any]) -> Any:
        if self.fail_with is not None:
            raise self.fail_with
        self.patches.append((resource.plural, namespace, name, patch))
        return {}

    async def create_event(self, **kw: Any) -> Any:
        self.events.append(kw)
        return {}


class OutOfRangeBackend:
    blocking = False

    def __init__(self) -> None:
        self.limits: list[int] = []

    def read(self, spec: dict[str, Any], annotations: dict[str, str]) -> NodeReading:
        return NodeReading((GPUReading(0, power_watts=300.0),))

    def apply_power_limit(self, watts: int) -> LimitOutcome:
        self.limits.append(watts)
        problems = (f"GPU 0: {watts} W is outside the device's range",) if watts > 500 else ()
        return LimitOutcome(watts, {0: min(watts, 500)}, problems)

    def close(self) -> None:
        pass


def _obj(limit: int | None) -> dict[str, Any]:
    return {"apiVersion": "stargate.dev/v1alpha1", "kind": "GPUNode",
            "metadata": {"name": "n1", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": SPEC, "status": {"powerLimitWatts": limit} if limit else {}}


async def test_agent_reports_unapplied_limit_once_per_outcome() -> None:
    client = RecordingClient()
    backend = OutOfRangeBackend()
    agent = NodeAgent(KubeClient.__new__(KubeClient), "ns", "n1", backend)
    agent.client = client  # type: ignore[assignment]
    agent.obj = _obj(None)
    await agent.tick()
    assert backend.limits == []  # no limit decided yet: the devices are left alone
    assert client.patches[0][:3] == ("gpunodes", "ns", "n1") and set(client.patches[0][3]) == {"telemetry"}
    agent.obj = _obj(600)
    await agent.tick()
    await agent.tick()
    assert backend.limits == [600, 600]  # applied every pass (idempotent in the backend)
    assert len(client.events) == 1
    ev = client.events[0]
    assert ev["reason"] == EVENT_REASON_NOT_APPLIED and ev["type_"] == "Warning"
    assert "600 W" in ev["message"] and ev["involved"]["metadata"]["name"] == "n1"
    agent.obj = _obj(450)
    await agent.tick()
    agent.obj = _obj(650)
    await agent.tick()
    assert len(client.events) == 2  # a new problem is reported again
    assert len(client.patches) == 5


async def test_agent_stops_when_its_node_is_deleted() -> None:
    client = RecordingClient()
    client.fail_with = ApiError(404, "not found")
    agent = NodeAgent(KubeClient.__new__(KubeClient), "ns", "n1", OutOfRangeBackend(), interval=0.01)
    agent.client = client  # type: ignore[assignment]
    agent.obj = _obj(None)
    await asyncio.wait_for(agent.run(), 2)
    assert agent.gone


async def test_agent_wakes_on_limit_change_not_on_its_own_telemetry() -> None:
    client = RecordingClient()
    agent = NodeAgent(KubeClient.__new__(KubeClient), "ns", "n1", OutOfRangeBackend(), interval=60)
    agent.client = client  # type: ignore[assignment]
    agent.obj = _obj(400)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.sleep(0.1)
        assert len(client.patches) == 1
        obj = _obj(400)
        obj["status"]["telemetry"] = {"powerWatts": 1}
        agent.update(obj)  # its own write coming back through the watch: no new pass
        await asyncio.sleep(0.2)
        assert len(client.patches) == 1
        agent.update(_obj(300))
        await asyncio.sleep(1.5)  # at most one write a second
        assert len(client.patches) == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_agent_keeps_its_interval_even_below_a_second() -> None:
    client = RecordingClient()
    agent = NodeAgent(KubeClient.__new__(KubeClient), "ns", "n1", OutOfRangeBackend(), interval=0.1)
    agent.client = client  # type: ignore[assignment]
    agent.obj = _obj(400)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.sleep(1.05)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert 7 <= len(client.patches) <= 12, len(client.patches)


def test_simulator_reports_the_specs_power_range() -> None:
    """The simulated device's range is the spec's and its default limit the TDP (maxPowerWatts), as
    NVML reports a real GPU's; the telemetry patch carries them, valid for the CRD."""
    spec = {**SPEC, "gpu": {**SPEC["gpu"], "minPowerWatts": 250, "maxPowerWatts": 650}}
    reading = SimulatedBackend("n1", spec, seed=2).read(spec, {})
    assert reading.power_range_watts == (250, 650) and reading.default_power_watts == 650
    t = telemetry_patch(reading, spec)["telemetry"]
    assert (t["minPowerWatts"], t["maxPowerWatts"], t["defaultPowerWatts"]) == (250, 650, 650)
    Telemetry.model_validate(t)


def test_telemetry_patch_omits_a_range_nobody_read() -> None:
    t = telemetry_patch(NodeReading((GPUReading(0, power_watts=10.0),)), {})["telemetry"]
    assert not {"minPowerWatts", "maxPowerWatts", "defaultPowerWatts"} & set(t)


def test_simulator_reports_the_limit_it_applied_as_enforced() -> None:
    sim = SimulatedBackend("n1", SPEC, seed=4)
    sim.apply_power_limit(450)
    t = telemetry_patch(sim.read(SPEC, {}), SPEC)["telemetry"]
    assert t["enforcedLimitWatts"] == 450
    sim.apply_power_limit(900)  # clamped: what it enforces is what it could apply
    assert telemetry_patch(sim.read(SPEC, {}), SPEC)["telemetry"]["enforcedLimitWatts"] == 700
    Telemetry.model_validate(t)
    assert "enforcedLimitWatts" not in telemetry_patch(NodeReading((GPUReading(0),)), {})["telemetry"]


class SimClient(RecordingClient):
    async def list(self, resource: ApiResource, namespace: str | None = None, **kw: Any) -> Any:
        return [], "1"


async def test_the_rack_limit_wins_and_the_gpunode_status_is_the_fallback() -> None:
    """An agent enforces its rack's powerLimits entry; without one (rack not seen, node not listed)
    its GPUNode's powerLimitWatts. A rack's change wakes only the agents whose limit it changes."""
    client = SimClient()
    fleet = Fleet(KubeClient.__new__(KubeClient), "ns", simulated_factory(seed=1), interval=60)
    fleet.client = client  # type: ignore[assignment]
    try:
        fleet._replace_racks([])
        for name in ("n1", "n2"):
            fleet.upsert({**_obj(400), "metadata": {"name": name, "namespace": "ns", "generation": 1}})
        n1, n2 = fleet.agents["n1"], fleet.agents["n2"]
        await asyncio.sleep(0.05)
        assert n1.assigned_limit() == (400, FROM_GPUNODE)
        assert isinstance(n1.backend, SimulatedBackend) and n1.backend.limit_watts == 400
        n1.wake.clear()
        n2.wake.clear()
        rack = {"metadata": {"name": "r1"}, "status": {"powerLimits": {"n1": 300, "n2": 400}}}
        fleet._on_rack_event("MODIFIED", rack)
        assert n1.wake.is_set() and not n2.wake.is_set()  # n2's limit is the same from its rack
        assert n1.assigned_limit() == (300, FROM_RACK) and n2.assigned_limit() == (400, FROM_RACK)
        await asyncio.sleep(0.05)
        assert n1.backend.limit_watts == 300  # applied at once, before the next report is due
        # Its GPUNode still says 400 (written after the racks): the rack's entry stays in force.
        fleet.upsert({**_obj(400), "metadata": {"name": "n1", "namespace": "ns", "generation": 1}})
        await asyncio.sleep(0.05)
        assert n1.backend.limit_watts == 300
        # A node of another rack is not given this rack's entry; a rack gone falls back.
        moved = {**_obj(350), "metadata": {"name": "n2", "namespace": "ns", "generation": 2},
                 "spec": {**SPEC, "rackRef": "r2"}}
        fleet.upsert(moved)
        assert n2.assigned_limit() == (350, FROM_GPUNODE)
        fleet._on_rack_event("DELETED", rack)
        assert n1.assigned_limit() == (400, FROM_GPUNODE)
        await asyncio.sleep(0.05)
        assert fleet.stats.limit_changes[FROM_RACK] == 1
        assert fleet.stats.limit_changes[FROM_GPUNODE] >= 2  # 400 at start (twice), 350, 400
    finally:
        await fleet.stop()


async def test_a_new_limit_is_applied_while_the_agent_waits_to_report() -> None:
    """An agent whose report waits for its fleet's writes gate (thousands of reports ahead of it
    after a curtailment) still sets a new limit at once, not after its report."""
    client = RecordingClient()
    backend = OutOfRangeBackend()
    gate = asyncio.Semaphore(1)
    agent = NodeAgent(KubeClient.__new__(KubeClient), "ns", "n1", backend, interval=60,
                      writes_gate=gate)
    agent.client = client  # type: ignore[assignment]
    agent.obj = _obj(400)
    await gate.acquire()  # the other reports
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.sleep(0.05)
        assert backend.limits == [400] and client.patches == []  # in its report, at the gate
        agent.set_rack_limit(300)
        await asyncio.sleep(0.05)
        assert backend.limits[-1] == 300 and client.patches == []  # before the gate opened
        agent.update(_obj(350))  # its GPUNode's limit: the rack's entry stays in force
        await asyncio.sleep(0.05)
        assert backend.limits[-1] == 300
        gate.release()
        await asyncio.sleep(0.1)
        assert len(client.patches) == 1 and backend.limits[-1] == 300
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_failed_report_is_retried_before_the_interval() -> None:
    """The report is the proof that a limit is in force (PowerLimitApplied): a write lost while the
    API server is away is tried again after a second, not a whole interval later."""
    client = RecordingClient()
    client.fail_with = ApiError(0, "connection refused")
    agent = NodeAgent(KubeClient.__new__(KubeClient), "ns", "n1", OutOfRangeBackend(), interval=60)
    agent.client = client  # type: ignore[assignment]
    agent.obj = _obj(400)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.sleep(0.2)
        assert agent.writes == 0
        client.fail_with = None
        await asyncio.sleep(1.5)
        assert agent.writes == 1 and len(client.patches) == 1
        await asyncio.sleep(1.5)
        assert agent.writes == 1  # then the interval again
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
