"""PrometheusTelemetry's handling of answers and failures, with the HTTP layer replaced (httpx's
MockTransport) or a socket that never answers. The real server is in
tests/integration/test_dcgm_telemetry.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

import httpx
import pytest

from stargate_operator.core.outage import SourceState
from stargate_operator.telemetry.prometheus import PrometheusError, PrometheusTelemetry


def vector(*series: tuple[dict[str, str], float | str]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": m, "value": [1764492000.5, str(v)]} for m, v in series]}}


def transport(answers: dict[str, dict[str, Any]], status: int = 200) -> httpx.MockTransport:
    """Answers by the metric name the query mentions first."""
    def handle(request: httpx.Request) -> httpx.Response:
        q = request.url.params["query"]
        for key, body in answers.items():
            if key in q:
                return httpx.Response(status, text=json.dumps(body))
        return httpx.Response(200, json=vector())
    return httpx.MockTransport(handle)


async def test_queries_aggregate_by_the_node_label() -> None:
    t = PrometheusTelemetry("http://prom:9090/", node_label="Hostname, node")
    # One series per GPU first (time-sliced GPUs repeat per pod), then per node.
    qs = t.queries()
    assert qs["power"] == ("sum by (Hostname, node) (max by (Hostname, node, gpu, UUID) "
                           "(DCGM_FI_DEV_POWER_USAGE))")
    assert "timestamp(DCGM_FI_DEV_POWER_USAGE)" in qs["time"]
    assert "DCGM_FI_DEV_XID_ERRORS != 0" in qs["faulty"] and "!= 13" in qs["faulty"]
    assert "DCGM_FI_DEV_ROW_REMAP_FAILURE" in qs["faulty"] and "UUID" in qs["faulty"]
    assert "DCGM_FI_DEV_FB_USED" in qs["hbm"]
    assert t.url == "http://prom:9090"


async def test_label_list_and_odd_series() -> None:
    t = PrometheusTelemetry("http://prom", node_label="node,Hostname", transport=transport({
        "sum by (node, Hostname) (max by (node, Hostname, gpu, UUID) (DCGM_FI_DEV_POWER_USAGE))": vector(
            ({"node": "k1", "Hostname": "pod-x"}, 100),
            ({"node": "", "Hostname": "h2"}, 50),
            ({"node": "k1", "Hostname": "pod-y"}, 25),  # two label sets, one node: summed
            ({}, 999),  # no node label: cannot be matched, ignored
            ({"node": "k3"}, "NaN"),  # not a number: ignored
        ),
        "max by (node, Hostname) (timestamp(": vector(
            ({"node": "k1", "Hostname": "pod-x"}, 1764492000.0),
            ({"node": "k1", "Hostname": "pod-y"}, 1764492001.25),  # the latest wins
        ),
    }))
    got = await t.poll_once()
    assert set(got) == {"k1", "h2"}
    assert got["k1"]["powerWatts"] == 125 and got["h2"]["powerWatts"] == 50
    assert got["k1"]["observedAt"] == "2025-11-30T08:40:01.250Z"
    assert got["h2"]["healthyGPUs"] == 0  # no count series: none known healthy
    await t.aclose()


@pytest.mark.parametrize("status,body", [
    (400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
    (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
    (503, "not json"),
])
async def test_bad_answers_raise_prometheus_error(status: int, body: Any) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text=body if isinstance(body, str) else json.dumps(body))
    t = PrometheusTelemetry("http://prom", transport=httpx.MockTransport(handle))
    with pytest.raises(PrometheusError):
        await t.poll_once()
    await t.aclose()


async def test_failed_poll_keeps_last_readings_and_run_keeps_going() -> None:
    state = {"up": True}

    def handle(request: httpx.Request) -> httpx.Response:
        if not state["up"]:
            return httpx.Response(503, text="unavailable")
        q = request.url.params["query"]
        if "timestamp" in q:
            return httpx.Response(200, json=vector(({"Hostname": "a"}, 1764492000)))
        return httpx.Response(200, json=vector(({"Hostname": "a"}, 8)))
    t = PrometheusTelemetry("http://prom", interval=0.05, transport=httpx.MockTransport(handle))
    updates: list[dict[str, dict[str, Any]]] = []
    task = asyncio.create_task(t.run(updates.append))
    try:
        while not updates:
            await asyncio.sleep(0.01)
        state["up"] = False
        await asyncio.sleep(0.3)
        assert not task.done() and t.failures >= 2 and "503" in (t.last_error or "")
        assert t.last["a"]["observedAt"] == "2025-11-30T08:40:00Z"
        state["up"] = True
        n = len(updates)
        while len(updates) == n:
            await asyncio.sleep(0.01)
        assert t.failures == 0 and t.retry_in is None
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_hanging_prometheus_times_out() -> None:
    # Listens but never answers: each request times out, and run() keeps going.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        t = PrometheusTelemetry(f"http://127.0.0.1:{s.getsockname()[1]}", interval=0.1, timeout=0.3,
                                max_backoff=0.3)
        states: list[SourceState] = []
        task = asyncio.create_task(t.run(lambda _: None, states.append))
        try:
            await asyncio.sleep(2.0)
            assert not task.done()
            assert t.failures >= 2, t.failures
            assert "Timeout" in (t.last_error or "") or "timed out" in (t.last_error or "").lower()
            # Slow is down: the source unavailable from the first timed-out poll, said once.
            assert [(st.name, st.available) for st in states] == [("Prometheus", False)], states
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task



def test_the_overlay_lays_readings_over_gpunodes_with_their_base_power() -> None:
    """The engine's hook for external telemetry: the readings take the place of status.telemetry
    in what the planner sees (the node's base power added), and nothing held is changed."""
    from stargate_operator.telemetry.overlay import TelemetryOverlay

    changed: list[int] = []
    overlay = TelemetryOverlay(on_change=lambda: changed.append(1))
    node = {"kind": "GPUNode", "metadata": {"name": "n1"},
            "spec": {"nodeName": "host-1", "basePowerWatts": 500}}
    rack = {"kind": "Rack", "metadata": {"name": "r"}}
    objects = [node, rack]
    assert overlay(objects) is objects  # no readings yet
    overlay.update({"host-1": {"powerWatts": 1000, "healthyGPUs": 8}})
    assert changed == [1]
    seen = overlay(objects)
    assert seen[0]["status"]["telemetry"] == {"powerWatts": 1500, "healthyGPUs": 8}
    assert "status" not in node and seen[1] is rack


async def test_the_source_state_reaches_the_planner_of_every_site() -> None:
    """A failed poll tells the overlay (and so the core) that Prometheus is unavailable, with since
    when and the error; the next good poll that it is back. Units without a site get no record."""
    from stargate_operator.core.outage import SOURCE_KIND
    from stargate_operator.telemetry.overlay import TelemetryOverlay

    overlay = TelemetryOverlay()
    site = {"kind": "StargateCluster", "metadata": {"name": "s"}}
    assert overlay([site]) == [site]
    states: list[SourceState] = []

    def on_state(state: SourceState) -> None:
        states.append(state)
        overlay.set_source(state)

    answers = iter([httpx.Response(500, json={"status": "error", "error": "boom"})] * 3)

    def handler(request: httpx.Request) -> httpx.Response:
        try:
            return next(answers)
        except StopIteration:
            return httpx.Response(200, json={"status": "success",
                                             "data": {"resultType": "vector", "result": []}})

    source = PrometheusTelemetry("http://prom", interval=0.01, transport=httpx.MockTransport(handler))
    task = asyncio.create_task(source.run(overlay.update, on_state))
    try:
        for _ in range(500):
            if len(states) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [s.available for s in states[:2]] == [False, True]
    assert "boom" in states[0].error and states[0].since
    (record,) = [o for o in overlay([site]) if o.get("kind") == SOURCE_KIND]
    assert record["available"] is True
    assert overlay([{"kind": "Rack"}]) == [{"kind": "Rack"}]  # no site: no record
def test_the_meter_overlay_lays_a_domains_reading_over_it_and_a_steady_meter_plans_nothing() -> None:
    from stargate_operator.telemetry.meters import MeterOverlay, meter_queries

    pdu = {"kind": "PowerDomain", "metadata": {"name": "pdu-3", "namespace": "site"},
           "spec": {"meter": {"query": 'sum(pdu_active_power_watts{pdu="pdu-3"})'}}}
    plain = {"kind": "PowerDomain", "metadata": {"name": "feed", "namespace": "site"}, "spec": {}}
    assert meter_queries([pdu, plain]) == {("site", "pdu-3"): 'sum(pdu_active_power_watts{pdu="pdu-3"})'}
    changed: list[int] = []
    meters = MeterOverlay(on_change=lambda: changed.append(1))
    objects = [pdu, plain]
    assert meters(objects) is objects
    meters.update({("site", "pdu-3"): 361_000})
    meters.update({("site", "pdu-3"): 361_000})
    assert changed == [1]
    seen = meters(objects)
    assert seen[0]["status"]["meter"] == {"watts": 361_000}
    assert "status" not in pdu and seen[1] is plain


def test_the_agents_series_aggregate_by_the_targets_node_label() -> None:
    t = PrometheusTelemetry("http://prom", series="agent")
    qs = t.queries()
    assert qs["power"] == 'max by (node) (stargate_agent_node_power_watts{node!=""})'
    assert qs["healthy"] == 'min by (node) (stargate_agent_node_healthy_gpus{node!=""})'
    assert qs["enforced"].startswith("max by (node) (stargate_agent_node_enforced_limit_watts")
    assert set(qs) == {"power", "healthy", "enforced", "peak", "hbm", "time"}
    assert PrometheusTelemetry("http://prom").labels == ["Hostname"]  # dcgm's own label
    with pytest.raises(ValueError, match="series"):
        PrometheusTelemetry("http://prom", series="nvml")


async def test_the_agents_answers_become_whole_node_readings() -> None:
    t = PrometheusTelemetry("http://prom", series="agent", transport=transport({
        "stargate_agent_node_power_watts": vector(({"node": "k1"}, 2750.4), ({"node": "k2"}, 1500)),
        "stargate_agent_node_healthy_gpus": vector(({"node": "k1"}, 3)),
        "stargate_agent_node_enforced_limit_watts": vector(({"node": "k1"}, 400)),
        "stargate_agent_node_peak_power_watts": vector(({"node": "k1"}, 2900)),
        "stargate_agent_node_hbm_used_bytes": vector(({"node": "k1"}, 1024)),
        "stargate_agent_node_observed_timestamp_seconds": vector(({"node": "k1"}, 1764492001.25)),
    }))
    got = await t.poll_once()
    assert got["k1"] == {"powerWatts": 2750, "healthyGPUs": 3, "hbmUsedBytes": 1024,
                         "observedAt": "2025-11-30T08:40:01.250Z", "enforcedLimitWatts": 400,
                         "peakPowerWatts": 2900}
    # No enforced limit, no peak in the series: the fields stay the agent's written ones (overlay).
    assert "enforcedLimitWatts" not in got["k2"] and "peakPowerWatts" not in got["k2"]
    assert t.last_query_s is not None and t.last_query_s >= 0
    await t.aclose()


def test_the_overlay_lays_readings_over_what_the_agent_wrote() -> None:
    from stargate_operator.telemetry.overlay import TelemetryOverlay

    written = {"powerWatts": 1, "minPowerWatts": 100, "maxPowerWatts": 700, "enforcedLimitWatts": 700,
               "observedAt": "2025-01-01T00:00:00Z"}
    node = {"kind": "GPUNode", "metadata": {"name": "n1"}, "spec": {"basePowerWatts": 1000},
            "status": {"telemetry": written, "powerLimitWatts": 500}}
    agents = TelemetryOverlay(gpus_only=False)
    agents.update({"n1": {"powerWatts": 2500, "enforcedLimitWatts": 500,
                          "observedAt": "2026-01-01T00:00:00Z"}})
    tel = agents([node])[0]["status"]["telemetry"]
    assert tel == {"powerWatts": 2500, "minPowerWatts": 100, "maxPowerWatts": 700,
                   "enforcedLimitWatts": 500, "observedAt": "2026-01-01T00:00:00Z"}
    dcgm = TelemetryOverlay()  # DCGM: the GPUs only, the node's base added
    dcgm.update({"n1": {"powerWatts": 1500, "observedAt": "2026-01-01T00:00:00Z"}})
    tel = dcgm([node])[0]["status"]["telemetry"]
    assert tel["powerWatts"] == 2500 and tel["enforcedLimitWatts"] == 700


@pytest.mark.parametrize("url,problem", [
    (None, "needs it"), ("prometheus:9090", "not an http"), ("http://p:port", "not a URL"),
    ("ftp://p", "not an http"), ("http://prometheus-operated.monitoring:9090", None),
])
def test_a_malformed_prometheus_url_is_named(url: str | None, problem: str | None) -> None:
    from stargate_operator.commands.run import prometheus_url_problem

    got = prometheus_url_problem(url)
    assert (got is None) if problem is None else (got is not None and problem in got), got
