"""The agent reporting to Prometheus: its GPUNode written at its first pass and then only when what
the operator cannot read in the series changes; each simulated node served on its own path."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from stargate_operator.agent.exposition import fleet_scrape_config, node_path
from stargate_operator.agent.runner import Fleet, NodeAgent
from stargate_operator.agent.simulate import SimulatedBackend
from stargate_operator.commands.agent import serve_metrics

SPEC = {"gpu": {"count": 4, "minPowerWatts": 100, "maxPowerWatts": 500}, "basePowerWatts": 1000}


class Recorder:
    """A KubeClient that records status patches."""

    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_status(self, resource: Any, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patches.append(patch)


def agent(report_to: str, client: Recorder) -> NodeAgent:
    a = NodeAgent(client, "ns", "n1", SimulatedBackend("n1", SPEC, seed=1),  # type: ignore[arg-type]
                  report_to=report_to, sample_interval=None)
    a.obj = {"metadata": {"name": "n1"}, "spec": SPEC, "status": {"powerLimitWatts": 400}}
    return a


@pytest.mark.parametrize("report_to,writes", [("api", 5), ("prometheus", 1)])
async def test_reports_at_rest(report_to: str, writes: int) -> None:
    client = Recorder()
    a = agent(report_to, client)
    for _ in range(5):
        assert await a.tick()
    assert len(client.patches) == writes
    assert a.last_reading is not None  # what /metrics serves, written or not


async def test_a_change_the_series_do_not_carry_is_written() -> None:
    client = Recorder()
    a = agent("prometheus", client)
    await a.tick()
    a.obj = {**a.obj, "status": {"powerLimitWatts": 400, "powerEnforcement": "Observe"}}
    await a.tick()  # shadow mode: its shadow limit is not in the series
    assert len(client.patches) == 2 and client.patches[1]["telemetry"]["shadowLimitWatts"] == 400
    await a.tick()
    assert len(client.patches) == 2


def test_report_to_is_checked() -> None:
    with pytest.raises(ValueError, match="report_to"):
        Fleet(Recorder(), "ns", lambda n, o: SimulatedBackend(n, SPEC), report_to="etcd")  # type: ignore[arg-type]


async def test_a_fleet_serves_each_node_on_its_own_path() -> None:
    fleet = Fleet(Recorder(), "ns", lambda n, o: SimulatedBackend(n, SPEC, seed=1))  # type: ignore[arg-type]
    a = agent("prometheus", Recorder())
    await a.tick()
    fleet.agents["n1"] = a
    server = await serve_metrics(fleet, 0, "127.0.0.1")
    port = server.addresses[0][1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            one = (await http.get(node_path("n1"))).text
            again = await http.get(node_path("n1"))  # the same connection, kept alive
            assert again.status_code == 200
            assert "stargate_agent_node_power_watts " in one and "gpunode" not in one
            assert "stargate_agent_node_observed_timestamp_seconds " in one
            assert 'stargate_agent_gpu_power_watts{gpu="3"}' in one
            assert (await http.get(node_path("n9"))).status_code == 404
            page = (await http.get("/metrics")).text
            assert 'stargate_agent_node_power_watts{gpunode="n1"}' in page
            assert (await http.post("/metrics")).status_code == 400
            own = (await http.get("/metrics/agent")).text  # the process's figures alone
            assert "stargate_agent_nodes 1.0" in own and "stargate_agent_power_limit_changes_total" in own
            assert "stargate_agent_node_power_watts" not in own
            head = await http.head(node_path("n1"))  # HEAD: the headers of GET, no body
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            # The path as Prometheus may send it: a query ignored, the name percent-encoded.
            assert (await http.get("/nodes/%6e1/metrics?x=1")).text == one
    finally:
        await server.cleanup()


def test_the_scrape_config_names_each_node_by_its_target() -> None:
    job = fleet_scrape_config("agents", "127.0.0.1:9400", {"a": "a", "b": "k8s-b"})
    assert job["honor_labels"] is False
    assert job["static_configs"] == [  # the path by GPUNode, the node label its Kubernetes node
        {"targets": ["127.0.0.1:9400"], "labels": {"node": "a", "__metrics_path__": "/nodes/a/metrics"}},
        {"targets": ["127.0.0.1:9400"], "labels": {"node": "k8s-b", "__metrics_path__": "/nodes/b/metrics"}}]


def test_a_nodes_page_is_what_prometheus_client_renders() -> None:
    """The per-node page is written directly, for speed: it must say what prometheus_client's
    rendering of node_figures says, value for value."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from stargate_operator.agent.exposition import node_figures, node_page

    a = agent("prometheus", Recorder())
    a.last_reading = a.backend.read(SPEC, {})
    a.last_peak_watts = 2345.5

    class Families:
        def collect(self):  # type: ignore[no-untyped-def]
            return node_figures([a], per_node=False)

    def parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    ours, theirs = node_page(a).decode(), generate_latest(Families()).decode()  # type: ignore[arg-type]
    assert parsed(ours) == parsed(theirs) and len(parsed(ours)) > 10
    assert [ln for ln in ours.splitlines() if ln.startswith("#")] == [
        ln for ln in theirs.splitlines() if ln.startswith("#")]
