"""Telemetry end to end: the real operator (`stargate-operator run`) with each telemetry source.

- simulated node agents: the operator's limits reach the GPUs, the agents' telemetry reaches the
  operator's rollups, a curtailment ripples down to the draw, faults lower the healthy counts;
- DCGM through Prometheus (`run --telemetry prometheus`): nodes matched by spec.nodeName, healthy GPUs
  from DCGM, and a node whose series disappear goes stale;
- Prometheus itself stopped: an outage of the source, not a loss of GPUs (health held, the site's
  TelemetryAvailable False with an Event and a metric, True again when it is back).

Figures from helpers/site.py's default node: 4 GPUs of 100..500 W on a 1000 W base: floor 1400 W,
demand 3000 W.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.api import Api, condition
from helpers.dcgm_exporter import FakeDcgmExporter, FakeGpu
from helpers.operator_process import OperatorProcess, wait_for
from helpers.site import claim, cluster, node, pool, rack
from prometheus.harness import PrometheusServer
from stargate_operator.agent.runner import Fleet, simulated_factory
from stargate_operator.agent.simulate import SimulatedBackend
from stargate_operator.client import KubeClient
from stargate_operator.kinds import FAILED_GPUS_ANNOTATION
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration

WAIT = 20.0


@pytest.fixture
def api(control_plane: LocalControlPlane) -> Iterator[Api]:
    client = Api(control_plane)
    yield client
    client.close()


@contextlib.contextmanager
def operator(control_plane: LocalControlPlane, log_dir: Path, *args: str) -> Iterator[OperatorProcess]:
    """`stargate-operator run`, stopped gracefully at the end and killed whatever happens (a start
    that fails, a stop that times out): never left behind."""
    op = OperatorProcess(control_plane, log_dir, *args)
    try:
        op.start()
        yield op
        op.stop()
    finally:
        op.kill()


def site(api: Api, ns: str, nodes: list[dict[str, Any]], it: int = 20_000) -> None:
    api.create_all(ns, [cluster(it=it), rack("rack-a"), *nodes])


async def test_agents_and_operator_close_the_loop(control_plane: LocalControlPlane, api: Api, namespace: str,
                                                  tmp_path: Path) -> None:
    ns = namespace
    site(api, ns, [node("n1", "rack-a"), node("n2", "rack-a")])
    with operator(control_plane, tmp_path, "-n", ns, "--stale-after", "30") as op:
        client = KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
        fleet = Fleet(client, ns, simulated_factory(seed=11), interval=0.5)
        task = asyncio.create_task(fleet.run())
        try:
            def backends() -> dict[str, SimulatedBackend]:
                out = {n: a.backend for n, a in fleet.agents.items()}
                assert all(isinstance(b, SimulatedBackend) for b in out.values())
                return out  # type: ignore[return-value]

            # Budget 20 kW covers both demands: each node at 500 W per GPU, and the GPUs run at it.
            await asyncio.to_thread(wait_for, lambda: len(fleet.agents) == 2 and all(
                b.limit_watts == 500 for b in backends().values()), WAIT, 0.2, "limits of 500 W applied")
            def rack_measured() -> dict[str, Any]:
                s = api.status("Rack", ns, "rack-a")
                if not s.get("power", {}).get("measuredWatts"):
                    raise AssertionError(f"no measured power in the rack's status: {s}")
                return s
            rack_status = await asyncio.to_thread(wait_for, rack_measured, WAIT)
            measured = rack_status["power"]["measuredWatts"]
            assert 2 * (4 * 0.6 * 500 + 850) <= measured <= 2 * 3000, rack_status

            # Demand response: 80 % curtailed leaves 4000 W: floors 2800, 600 W more each -> 2000 W a node,
            # (2000 - 1000) / 4 = 250 W per GPU. The agents apply it and the measured draw follows.
            api.patch("StargateCluster", ns, "site",
                      {"spec": {"power": {"curtailment": {"percent": 80, "reason": "grid event"}}}})
            await asyncio.to_thread(wait_for, lambda: all(
                b.limit_watts == 250 for b in backends().values()), WAIT, 0.2, "curtailed limits applied")
            await asyncio.to_thread(wait_for, lambda: api.status("Rack", ns, "rack-a")["power"]
                                    .get("measuredWatts", 1e9) <= 2 * (4 * 250 + 1000), WAIT, 0.3,
                                    "measured draw under the curtailed budget")
            cl = api.status("StargateCluster", ns, "site")
            assert cl["power"]["budgetWatts"] == 4000

            # A fault injected on n2: fewer healthy GPUs, node and rack.
            api.patch("GPUNode", ns, "n2", {"metadata": {"annotations": {FAILED_GPUS_ANNOTATION: "3"}}})
            await asyncio.to_thread(wait_for, lambda: api.status("GPUNode", ns, "n2").get("healthyGPUs")
                                    == 1, WAIT, 0.2, "n2 healthy GPUs from telemetry")
            await asyncio.to_thread(wait_for, lambda: api.status("Rack", ns, "rack-a")["gpus"]["healthy"]
                                    == 5, WAIT, 0.2, "rack healthy GPUs")
            assert op.alive
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await client.aclose()
        assert "Traceback" not in op.log_text(), op.log_tail(80)


def test_dcgm_through_prometheus_feeds_the_operator(control_plane: LocalControlPlane, api: Api,
                                                   namespace: str, tmp_path: Path) -> None:
    ns = namespace
    with FakeDcgmExporter() as exporter:
        gpus = [FakeGpu(power=400.0, fb_used_mib=1000) for _ in range(4)]
        gpus[0].xid = 79
        exporter.set_node("k8s-node-1", gpus)
        exporter.set_node("gpu-2", [FakeGpu(power=300.0) for _ in range(4)])
        with PrometheusServer(tmp_path / "prom", {"dcgm": [exporter.address]}, rule_files=()) as prom:
            prom.wait_for('count(DCGM_FI_DEV_POWER_USAGE) == 8')
            n1 = node("n1", "rack-a")
            n1["spec"]["nodeName"] = "k8s-node-1"  # matched by spec.nodeName
            site(api, ns, [n1, node("gpu-2", "rack-a")])  # matched by its name
            # The operator polls Prometheus every 15 s: the stale threshold must be well above that.
            with operator(control_plane, tmp_path, "-n", ns, "--stale-after", "30",
                          "--telemetry", "prometheus", "--prometheus-series", "dcgm",
                          "--prometheus-url", prom.url) as op:
                wait_for(lambda: api.status("GPUNode", ns, "n1").get("healthyGPUs") == 3, WAIT, 0.3,
                         "n1's healthy GPUs from DCGM (one GPU with XID 79)")
                wait_for(lambda: api.status("GPUNode", ns, "gpu-2").get("healthyGPUs") == 4, WAIT, 0.3)
                wait_for(lambda: api.status("Rack", ns, "rack-a")["gpus"]["healthy"] == 7, WAIT, 0.3)
                measured = wait_for(lambda: api.status("Rack", ns, "rack-a")["power"].get("measuredWatts"),
                                    WAIT, 0.3)
                assert measured >= 4 * 400 + 4 * 300, measured  # at least the GPUs' draw DCGM measured

                # n1's series disappear: after the stale threshold it has no healthy GPUs and says why.
                exporter.remove_node("k8s-node-1")
                st = wait_for(lambda: (s := api.status("GPUNode", ns, "n1")).get("healthyGPUs") == 0 and s,
                              30 + 15 + WAIT, 0.5, "n1 stale")
                assert condition(st, "TelemetryStale").get("status") == "True"
                st2 = api.status("GPUNode", ns, "gpu-2")
                assert st2["healthyGPUs"] == 4, (st2, op.log_tail(30))
                assert op.alive
            assert "Traceback" not in op.log_text(), op.log_tail(80)


def _telemetry_available(op: OperatorProcess, ns: str) -> float | None:
    for line in op.metrics_text().splitlines():
        if (line.startswith("stargate_cluster_condition{") and 'condition="TelemetryAvailable"' in line
                and f'namespace="{ns}"' in line):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_prometheus_stopped_is_an_outage_not_a_gpu_loss(control_plane: LocalControlPlane, api: Api,
                                                         namespace: str, tmp_path: Path) -> None:
    ns = namespace
    with FakeDcgmExporter() as exporter:
        exporter.set_node("gpu-1", [FakeGpu(power=400.0) for _ in range(4)])
        exporter.set_node("gpu-2", [FakeGpu(power=300.0) for _ in range(4)])
        prom = PrometheusServer(tmp_path / "prom", {"dcgm": [exporter.address]}, rule_files=())
        with prom:
            prom.wait_for('count(DCGM_FI_DEV_POWER_USAGE) == 8')
            # 8 GPUs of 1000 bytes of HBM: an HBM pool of 8000 bytes, a claim of 6000 bound in it
            site(api, ns, [node("gpu-1", "rack-a"), node("gpu-2", "rack-a"),
                           pool("hbm", tier="HBM", share=100), claim("job", "hbm", 6000)])
            with operator(control_plane, tmp_path, "-n", ns, "--stale-after", "6",
                          "--telemetry-interval", "1", "--telemetry", "prometheus",
                          "--prometheus-series", "dcgm", "--prometheus-url", prom.url) as op:
                def available() -> dict[str, Any]:
                    return condition(api.status("StargateCluster", ns, "site"), "TelemetryAvailable")

                wait_for(lambda: available().get("status") == "True" and
                         api.status("MemoryClaim", ns, "job").get("phase") == "Bound", WAIT, 0.3,
                         "telemetry available and the claim bound")
                wait_for(lambda: api.status("Rack", ns, "rack-a")["power"].get("measuredWatts"), WAIT, 0.3)
                site_before = api.status("StargateCluster", ns, "site")
                assert site_before["gpus"] == {"total": 8, "healthy": 8}
                pool_before = api.status("MemoryPool", ns, "hbm")["capacityBytes"]
                assert pool_before == 8000
                limits = {n: api.status("GPUNode", ns, n)["powerLimitWatts"] for n in ("gpu-1", "gpu-2")}

                prom.stop()
                cond = wait_for(lambda: (c := available()).get("status") == "False" and c, WAIT, 0.3,
                                "TelemetryAvailable False")
                assert cond["reason"] == "PrometheusUnavailable", cond
                assert " since " in cond["message"], cond
                # Well past the stale threshold (6 s): nothing aged to stale, nothing shrank or moved.
                wait_for(lambda: _telemetry_available(op, ns) == 0.0, WAIT, 0.5, "the metric says 0")
                time.sleep(12)
                site_during = api.status("StargateCluster", ns, "site")
                assert site_during["gpus"] == {"total": 8, "healthy": 8}, site_during
                assert api.status("MemoryPool", ns, "hbm")["capacityBytes"] == pool_before
                assert api.status("MemoryClaim", ns, "job")["phase"] == "Bound"
                for n in ("gpu-1", "gpu-2"):
                    st = api.status("GPUNode", ns, n)
                    assert st["healthyGPUs"] == 4 and st["powerLimitWatts"] == limits[n], st
                    assert condition(st, "TelemetryStale")["status"] == "False", st
                assert condition(site_during, "TelemetryAvailable")["status"] == "False"
                reasons = [e.get("reason") for e in api.events(ns)]
                assert "TelemetryUnavailable" in reasons, reasons
                assert "Evicted" not in reasons, reasons

                prom.start()
                wait_for(lambda: available().get("status") == "True", 60, 0.5,
                         "TelemetryAvailable True again")
                assert _telemetry_available(op, ns) == 1.0
                assert "TelemetryAvailable" in [e.get("reason") for e in api.events(ns)]
                assert api.status("StargateCluster", ns, "site")["gpus"]["healthy"] == 8
            assert "Traceback" not in op.log_text(), op.log_tail(80)


async def test_shadow_mode_reports_limits_and_applies_none(control_plane: LocalControlPlane, api: Api,
                                                           namespace: str, tmp_path: Path) -> None:
    """A site in Observe: the agents report the limit they would apply and the GPUs keep their
    default; set to Enforce, the same limit is applied and the shadow goes."""
    ns = namespace
    site(api, ns, [node("n1", "rack-a"), node("n2", "rack-a")], it=4_000)  # 4 kW: 250 W a GPU
    api.patch("StargateCluster", ns, "site", {"spec": {"power": {"enforcement": "Observe"}}})
    with operator(control_plane, tmp_path, "-n", ns, "--stale-after", "30") as op:
        client = KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
        fleet = Fleet(client, ns, simulated_factory(seed=5), interval=0.5)
        task = asyncio.create_task(fleet.run())
        try:
            def shadows() -> dict[str, Any]:
                return {n: (api.status("GPUNode", ns, n).get("telemetry") or {}).get("shadowLimitWatts")
                        for n in ("n1", "n2")}

            await asyncio.to_thread(wait_for, lambda: shadows() == {"n1": 250, "n2": 250}, WAIT, 0.3,
                                    "the agents report the limit they would apply")
            for a in fleet.agents.values():
                assert isinstance(a.backend, SimulatedBackend)
                assert a.backend.limit_watts == 500  # the device default: nothing applied
            st = api.status("GPUNode", ns, "n1")
            assert st["powerEnforcement"] == "Observe" and st["powerLimitWatts"] == 250
            assert condition(st, "PowerLimitApplied")["reason"] == "Observing"
            # the simulated GPUs draw 60 to 100 % of their 500 W: above what 250 W would allow, once
            # both agents' readings are in (the figure may first be written from one of them)
            observe = await asyncio.to_thread(
                wait_for, lambda: ((o := api.status("StargateCluster", ns, "site")["power"].get("observe"))
                                   and o["nodesOverLimit"] == 2 and o), WAIT, 0.3)
            assert observe["wattsOverLimit"] > 0, observe

            api.patch("StargateCluster", ns, "site", {"spec": {"power": {"enforcement": "Enforce"}}})
            await asyncio.to_thread(wait_for, lambda: all(
                isinstance(a.backend, SimulatedBackend) and a.backend.limit_watts == 250
                for a in fleet.agents.values()), WAIT, 0.2, "the limits applied once enforced")
            await asyncio.to_thread(wait_for, lambda: shadows() == {"n1": None, "n2": None}, WAIT, 0.3,
                                    "no shadow left")
            assert "observe" not in api.status("StargateCluster", ns, "site")["power"]
            assert op.alive
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await client.aclose()
