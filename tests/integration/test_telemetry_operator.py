"""Telemetry end to end: the real operator (`stargate-operator run`) with each telemetry source.

- simulated node agents: the operator's limits reach the GPUs, the agents' telemetry reaches the
  operator's rollups, a curtailment ripples down to the draw, faults lower the healthy counts;
- DCGM through Prometheus (`run --telemetry prometheus`): nodes matched by spec.nodeName, healthy GPUs
  from DCGM, and a node whose series disappear goes stale.

Figures from helpers/site.py's default node: 4 GPUs of 100..500 W on a 1000 W base: floor 1400 W,
demand 3000 W.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.api import Api, condition
from helpers.dcgm_exporter import FakeDcgmExporter, FakeGpu
from helpers.operator_process import OperatorProcess, wait_for
from helpers.site import cluster, node, rack
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
                          "--telemetry", "prometheus", "--prometheus-url", prom.url) as op:
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
