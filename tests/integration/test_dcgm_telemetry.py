"""DCGM telemetry through Prometheus, against the real Prometheus server (Debian's package, started on
loopback by the shared harness in tests/prometheus/harness.py) scraping a fake dcgm-exporter endpoint
every second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from helpers.dcgm_exporter import FakeDcgmExporter, FakeGpu
from prometheus.harness import PrometheusServer
from stargate_operator.api.gpunode import Telemetry
from stargate_operator.telemetry.prometheus import PrometheusTelemetry

pytestmark = pytest.mark.integration

MIB = 2**20


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def node_a() -> list[FakeGpu]:
    gpus = [FakeGpu(power=600.0 + i, fb_used_mib=40_000 + i, extra_labels={"node": "k8s-a"})
            for i in range(8)]
    gpus[3].xid = 79  # fallen off the bus: a critical XID
    gpus[5].xid = 13  # graphics engine exception: an application's fault, the GPU is fine
    return gpus


def node_b() -> list[FakeGpu]:
    gpus = [FakeGpu(power=300.25, fb_used_mib=1024, extra_labels={"node": "k8s-b"}) for _ in range(4)]
    gpus[1].row_remap_failure = 1
    gpus[1].xid = 48  # the same GPU with two faults counts once
    # GPU 2 time-sliced between two pods: dcgm-exporter repeats its series per pod; counted once.
    gpus[2].extra_labels = {"node": "k8s-b", "pod": "train-0", "namespace": "ml", "container": "main"}
    gpus.append(FakeGpu(power=300.25, fb_used_mib=1024, index=2, extra_labels={
        "node": "k8s-b", "pod": "train-1", "namespace": "ml", "container": "main"}))
    return gpus


@pytest.fixture(scope="module")
def exporter() -> Iterator[FakeDcgmExporter]:
    with FakeDcgmExporter() as e:
        e.set_node("node-a", node_a())
        e.set_node("node-b", node_b())
        yield e


@pytest.fixture(scope="module")
def prom(exporter: FakeDcgmExporter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with PrometheusServer(tmp_path_factory.mktemp("prom"), {"dcgm": [exporter.address]}, rule_files=()) as p:
        p.wait_for('count(DCGM_FI_DEV_POWER_USAGE{Hostname="node-b"}) == 4')
        yield p


async def poll_until(t: PrometheusTelemetry, cond: Any, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = await t.poll_once()
        if cond(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s; last: {got}")
        await asyncio.sleep(0.5)


async def test_readings_then_a_node_disappears(exporter: FakeDcgmExporter, prom: PrometheusServer) -> None:
    exporter.set_node("node-a", node_a())
    exporter.set_node("node-b", node_b())
    t = PrometheusTelemetry(prom.url, interval=1.0)
    try:
        got = await poll_until(t, lambda g: {"node-a", "node-b"} <= set(g))
        a, b = got["node-a"], got["node-b"]
        assert a["powerWatts"] == round(sum(600.0 + i for i in range(8)))  # 4828
        assert a["healthyGPUs"] == 7  # XID 79 counts, XID 13 does not
        assert a["hbmUsedBytes"] == sum(40_000 + i for i in range(8)) * MIB
        assert b == {**b, "powerWatts": 1201, "healthyGPUs": 3, "hbmUsedBytes": 4 * 1024 * MIB}
        for r in (a, b):
            assert set(r) == {"powerWatts", "healthyGPUs", "hbmUsedBytes", "observedAt"}
            Telemetry.model_validate(r)
            assert r["observedAt"].endswith("Z")
            age = (datetime.now(UTC) - ts(r["observedAt"])).total_seconds()
            assert -2 < age < 5, age  # the scrape's time, not the query's

        # Readings follow the exporter.
        hot = node_a()
        hot[0].power = 700.0
        exporter.set_node("node-a", hot)
        await poll_until(t, lambda g: g["node-a"]["powerWatts"] == 4828 + 100)

        # node-b's series disappear: it keeps its last reading, and its observedAt stops advancing
        # while node-a's goes on.
        exporter.remove_node("node-b")
        got = await poll_until(t, lambda g: g["node-b"]["observedAt"] == t.last["node-b"]["observedAt"]
                               and prom.query('count(DCGM_FI_DEV_POWER_USAGE{Hostname="node-b"})') == [])
        frozen_b, a_then = got["node-b"], got["node-a"]["observedAt"]
        await asyncio.sleep(2.5)
        later = await t.poll_once()
        assert later["node-b"] == frozen_b
        assert {k: frozen_b[k] for k in ("powerWatts", "healthyGPUs", "hbmUsedBytes")} == {
            "powerWatts": 1201, "healthyGPUs": 3, "hbmUsedBytes": 4 * 1024 * MIB}
        assert ts(later["node-a"]["observedAt"]) > ts(a_then)

        # It comes back: fresh again.
        exporter.set_node("node-b", node_b())
        await poll_until(t, lambda g: ts(g["node-b"]["observedAt"]) > ts(frozen_b["observedAt"]))
    finally:
        await t.aclose()
        exporter.set_node("node-b", node_b())


async def test_node_label_is_configurable(exporter: FakeDcgmExporter, prom: PrometheusServer) -> None:
    t = PrometheusTelemetry(prom.url, node_label="node")
    try:
        got = await poll_until(t, lambda g: {"k8s-a", "k8s-b"} <= set(g))
        assert "node-a" not in got
        assert got["k8s-a"]["healthyGPUs"] == 7 and got["k8s-b"]["powerWatts"] == 1201
    finally:
        await t.aclose()
    # A list: the first non-empty label names the node (a GPU without `node` falls back to Hostname).
    exporter.set_node("node-c", [FakeGpu(power=100.0)])
    t2 = PrometheusTelemetry(prom.url, node_label="node,Hostname")
    try:
        got = await poll_until(t2, lambda g: "node-c" in g)
        assert {"k8s-a", "k8s-b", "node-c"} <= set(got) and "node-a" not in got
        assert got["node-c"]["powerWatts"] == 100 and got["node-c"]["healthyGPUs"] == 1
    finally:
        await t2.aclose()
        exporter.remove_node("node-c")


async def test_prometheus_down_backs_off_and_recovers(exporter: FakeDcgmExporter, tmp_path: Path) -> None:
    # Not started yet: nothing listens on its port.
    server = PrometheusServer(tmp_path, {"dcgm": [exporter.address]}, rule_files=())
    updates: list[dict[str, dict[str, Any]]] = []
    t = PrometheusTelemetry(server.url, interval=0.2, timeout=1.0, max_backoff=2.0)
    task = asyncio.create_task(t.run(updates.append))
    try:
        await asyncio.sleep(4.0)
        # Backoff from the interval, doubling up to max_backoff: 0.2, 0.4, 0.8, 1.6, 2 s... a handful
        # of attempts, not the sixteen a 0.2 s loop would make.
        assert not task.done()
        assert 4 <= t.failures <= 6, t.failures  # 0, 0.2, 0.6, 1.4, 3.0 s
        assert t.retry_in == 2.0
        assert updates == []
        server.start()
        try:
            server.wait_for('count(DCGM_FI_DEV_POWER_USAGE{Hostname="node-a"}) == 8')
            deadline = time.monotonic() + 15
            while not (updates and "node-a" in updates[-1]):
                assert time.monotonic() < deadline, (t.failures, t.last_error)
                await asyncio.sleep(0.2)
            assert t.failures == 0
            last = updates[-1]
        finally:
            server.stop()
        # Down again: no crash, the failures count, and nothing replaces the last readings.
        n = len(updates)
        await asyncio.sleep(2.5)
        assert not task.done()
        assert t.failures >= 1 and t.last_error
        assert len(updates) == n and updates[-1] == last
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task



async def test_a_metered_domains_query_is_its_measured_power(exporter: FakeDcgmExporter,
                                                             prom: PrometheusServer) -> None:
    """spec.meter.query read from the real Prometheus (the fake exporter's GPUs stand in for a PDU's
    meter series), laid over the domain as the engine does: the domain's measuredWatts is the
    meter's, not the sum of its nodes; a failing or empty query is left out (nodes' sum again)."""
    from stargate_operator.core import CoreSettings, plan_namespace

    exporter.set_node("node-a", node_a())
    exporter.set_node("node-b", node_b())
    t = PrometheusTelemetry(prom.url, interval=1.0)
    queries = {("site-ns", "pdu-a"): 'sum(DCGM_FI_DEV_POWER_USAGE{Hostname="node-a"})',
               ("site-ns", "broken"): "sum(",  # a syntax error: Prometheus refuses it
               ("site-ns", "empty"): 'sum(no_such_meter{pdu="x"})'}
    want = {("site-ns", "pdu-a"): round(sum(600.0 + i for i in range(8)))}  # 4828 W
    deadline = time.monotonic() + 30  # until Prometheus has scraped what the exporter shows now
    try:
        while (got := await t.read_meters(queries)) != want and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
    finally:
        await t.aclose()
    assert got == want
    meta = {"namespace": "site-ns", "generation": 1}
    objs = [
        {"kind": "StargateCluster", "metadata": {"name": "site", **meta},
         "spec": {"site": {"designPUE": 1.0}, "power": {"itCapacityWatts": 100_000, "reservePercent": 0}}},
        {"kind": "PowerDomain", "metadata": {"name": "pdu-a", **meta},
         "spec": {"clusterRef": "site", "ratingWatts": 50_000,
                  "meter": {"query": queries["site-ns", "pdu-a"]}},
         "status": {"meter": {"watts": got["site-ns", "pdu-a"]}}},
        {"kind": "Rack", "metadata": {"name": "r1", **meta},
         "spec": {"clusterRef": "site", "maxPowerWatts": 40_000, "powerDomainRef": "pdu-a"}},
    ]
    plan = plan_namespace(objs, datetime.now(UTC), CoreSettings())
    assert plan.statuses["PowerDomain", "site-ns", "pdu-a"]["measuredWatts"] == 4828
