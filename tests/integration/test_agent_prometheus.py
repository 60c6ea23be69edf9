"""Observations through Prometheus: agents that report to their /metrics, a real Prometheus that
scrapes each node on its own target, and the real operator (`run --telemetry prometheus`, the
agents' series) reading them.

- the operator's statuses follow the agents' series: healthy GPUs, measured power, confirmed limits;
- a series' node is its scrape target's: an agent exporting another node's name in its own labels
  changes nothing for that other node (it becomes `exported_node`);
- at rest the agents write their GPUNodes once, at their first pass, and never again, as the API
  server's own record of the GPUNodes shows (a GPUNode's resourceVersion moves with every write).

Figures from helpers/site.py's default node: 4 GPUs of 100..500 W on a 1000 W base.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from helpers.api import Api
from helpers.operator_process import OperatorProcess, wait_for
from helpers.site import cluster, node, rack
from prometheus.harness import PrometheusServer, free_port
from stargate_operator.agent.exposition import fleet_scrape_config
from stargate_operator.agent.runner import Fleet, simulated_factory
from stargate_operator.client import KubeClient
from stargate_operator.commands.agent import serve_metrics
from stargate_operator.kinds import FAILED_GPUS_ANNOTATION
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration

WAIT = 30.0
INTERVAL = 1.0  # the agents' interval: several of them pass while the test watches the writes

# What a rogue agent of node n3 serves: its own figures, and a set of series that claim to be n1's
# through a `node` label of their own (zero healthy GPUs, an absurd draw and limit).
ROGUE_PAGE = b"""\
stargate_agent_node_power_watts 2000
stargate_agent_node_healthy_gpus 2
stargate_agent_node_enforced_limit_watts 250
stargate_agent_node_hbm_used_bytes 0
stargate_agent_node_power_watts{node="n1"} 99999
stargate_agent_node_healthy_gpus{node="n1"} 0
stargate_agent_node_enforced_limit_watts{node="n1"} 9999
"""


@contextlib.contextmanager
def rogue_exporter() -> Iterator[str]:
    """An HTTP server on loopback serving ROGUE_PAGE (plus the time) on any path; its address."""
    import time

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = ROGUE_PAGE + f"stargate_agent_node_observed_timestamp_seconds {time.time()}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _query_seconds(op: OperatorProcess) -> float:
    for line in op.metrics_text().splitlines():
        if line.startswith('stargate_telemetry_query_seconds_count{series="agent"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_the_operator_reads_the_agents_series_and_nothing_else_speaks_for_a_node(
        control_plane: LocalControlPlane, namespace: str, tmp_path: Path) -> None:
    ns = namespace
    api = Api(control_plane)
    # n1 alone in its rack: the rack's measured power is n1's.
    api.create_all(ns, [cluster(it=200_000), rack("rack-a"), rack("rack-b", max_w=200_000),
                        node("n1", "rack-a"), node("n2", "rack-b"), node("n3", "rack-b")])
    client = KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    fleet = Fleet(client, ns, simulated_factory(seed=5), names=["n1", "n2"], interval=INTERVAL,
                  sample_interval=0.25, report_to="prometheus", events=False)
    port = free_port()
    server = await serve_metrics(fleet, port, "127.0.0.1")
    task = asyncio.create_task(fleet.run())
    op = None
    try:
        with rogue_exporter() as rogue:
            jobs = [fleet_scrape_config("stargate-agent", f"127.0.0.1:{port}", {"n1": "n1", "n2": "n2"},
                                        "1s"),
                    {"job_name": "rogue", "honor_labels": False,
                     "static_configs": [{"targets": [rogue], "labels": {"node": "n3"}}]}]
            with PrometheusServer(tmp_path / "prom", {}, rule_files=(), scrape_configs=jobs) as prom:
                got = await asyncio.to_thread(
                    prom.wait_for, 'count(stargate_agent_node_power_watts{node=~"n1|n2|n3"}) >= 4')
                assert got, prom.api("targets")
                # Prometheus kept the rogue's claim, under the rogue's own node.
                claimed = prom.query('stargate_agent_node_healthy_gpus{exported_node="n1"}')
                assert [s["metric"]["node"] for s in claimed] == ["n3"], claimed

                op = OperatorProcess(control_plane, tmp_path, "-n", ns, "--stale-after", "30",
                                     "--telemetry", "prometheus", "--prometheus-url", prom.url,
                                     "--telemetry-interval", "1")
                op.start()

                def healthy(name: str) -> Any:
                    return api.status("GPUNode", ns, name).get("healthyGPUs")

                def site_power() -> dict[str, Any]:
                    got: dict[str, Any] = api.status("StargateCluster", ns, "site").get("power") or {}
                    return got

                # The site follows the series: every GPU of n1 and n2 healthy; n3 as its own target
                # says, its claim about n1 included (the lowest of its series: 0), since whatever a
                # target serves is its own node's.
                def all_healthy() -> bool:
                    got = (healthy("n1"), healthy("n2"), healthy("n3"))
                    if got != (4, 4, 0):
                        raise AssertionError(f"healthy GPUs of n1, n2, n3: {got}")
                    return True

                await asyncio.to_thread(wait_for, all_healthy, WAIT, 0.3, "healthy GPUs from the series")
                await asyncio.to_thread(wait_for, lambda: api.status("StargateCluster", ns, "site")
                                        .get("gpus") == {"total": 12, "healthy": 8}, WAIT, 0.3)
                measured = await asyncio.to_thread(
                    wait_for, lambda: api.status("Rack", ns, "rack-a")["power"].get("measuredWatts"),
                    WAIT, 0.3)
                # n1 draws at most 3000 W (4 x 500 W on a 1000 W base): the 99999 W claimed for it
                # by n3's target counted for n3, in the other rack.
                assert 1000 < measured <= 3000, measured
                others = await asyncio.to_thread(
                    wait_for, lambda: api.status("Rack", ns, "rack-b")["power"].get("measuredWatts"),
                    WAIT, 0.3)
                assert others >= 99999, others
                # Confirmation through the series: n1 and n2 enforce their limits; n3's target says
                # 9999 W (the highest of its series), above anything it was given.
                await asyncio.to_thread(wait_for, lambda: int(site_power().get("limitsConfirmed") or 0)
                                        == 2, WAIT, 0.3, "limits confirmed from the series")

                # What the API server holds of each agent's report: every write of one carries a
                # new observedAt.
                def written() -> dict[str, Any]:
                    return {n: (api.status("GPUNode", ns, n).get("telemetry") or {}).get("observedAt")
                            for n in ("n1", "n2")}

                first = written()
                assert all(first.values()), first

                # A fault on n2, seen by its agent, reaches the operator through Prometheus alone.
                api.patch("GPUNode", ns, "n2", {"metadata": {"annotations": {FAILED_GPUS_ANNOTATION: "3"}}})
                await asyncio.to_thread(wait_for, lambda: healthy("n2") == 1, WAIT, 0.3,
                                        "n2's failed GPUs from its series")
                await asyncio.to_thread(wait_for, lambda: api.status("StargateCluster", ns, "site")
                                        .get("gpus", {}).get("healthy") == 5, WAIT, 0.3)
                assert healthy("n1") == 4
                assert _query_seconds(op) > 0, "the operator times its Prometheus queries"

                # A curtailment: lower limits, applied by the agents, confirmed through the series
                # alone (the GPUNodes still say the limit of the agents' first pass).
                api.patch("StargateCluster", ns, "site",
                          {"spec": {"power": {"curtailment": {"percent": 97, "reason": "grid event"}}}})

                def confirmed_lower(name: str) -> bool:
                    st = api.status("GPUNode", ns, name)
                    cond = next((c for c in st.get("conditions") or []
                                 if c["type"] == "PowerLimitApplied"), {})
                    limit = st.get("powerLimitWatts") or 500
                    if not (limit < 500 and cond.get("status") == "True"):
                        raise AssertionError(f"{name}: limit {limit}, {cond}")
                    return True

                for n in ("n1", "n2"):
                    await asyncio.to_thread(wait_for, lambda n=n: confirmed_lower(n), WAIT, 0.3,
                                            f"{n}'s lower limit confirmed from its series")

                # At rest: several intervals more, and no agent wrote its GPUNode again. Each wrote
                # once, at its first pass.
                await asyncio.sleep(5 * INTERVAL)
                assert {a.name: a.writes for a in fleet.agents.values()} == {"n1": 1, "n2": 1}
                assert all(a.skipped >= 5 for a in fleet.agents.values())
                # The API server's record: the agents' reports stayed as first written, n2's fault
                # included (it is in the series, not in the GPUNode).
                assert written() == first
                for n in ("n1", "n2"):
                    st = api.status("GPUNode", ns, n)
                    tele = st.get("telemetry") or {}
                    assert tele.get("healthyGPUs") == 4, (n, tele)
                    assert tele.get("enforcedLimitWatts") != st["powerLimitWatts"], (n, st)
                assert op.alive
                op.stop()
    finally:
        if op is not None:
            op.kill()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.cleanup()
        await client.aclose()
        api.close()
    assert op is not None and "Traceback" not in op.log_text(), op.log_tail(80)
