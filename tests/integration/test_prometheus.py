"""The metrics, dashboards and alerts against a real Prometheus (Debian's package, on loopback).

A metrics endpoint serves the operator's registry (`metrics.make_registry` + `metrics.serve`, the
same code `run` uses) over real statuses: the sample sites of crds/samples and a troubled site
with a power tree (PowerDomains), planned by the real core. A Prometheus scrapes it every second
and evaluates the alert rules every second; then every variable and every panel query of every
dashboard, and every alert expression, is evaluated through the HTTP API and must return data of
the shape the panel or alert uses.

To check another endpoint (a running operator's --metrics-port), swap the `endpoint` fixture for
one that yields that operator's host:port: nothing else here depends on how the endpoint is
served (or call `start_prometheus(workdir, target)` and the checks of tests/prometheus/harness.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from prometheus.harness import (
    ROOT,
    PrometheusServer,
    alert_problems,
    binary,
    dashboard_problems,
    free_port,
    load_alert_rules,
    runbook_problems,
    runbook_queries,
)
from stargate_operator import kinds, metrics
from stargate_operator.api.load import load_manifests
from stargate_operator.core import CoreSettings, plan_namespace
from stargate_operator.core.wire import format_time
from stargate_operator.fixtures.synth import synthetic_site

JOB = "stargate-operator"
TROUBLED = "stargate-troubled"
GB = 10**9

# The troubled site is built so that every alert but two has something to fire on; those two
# are checked by probes: their expression without the threshold must see the metrics.
EXPECT_FIRING = {
    "StargateSiteOvercommitted",
    "StargateRackOverBudget",
    "StargateRackOverRating",
    "StargateDomainOvercommitted",
    "StargateDomainOverLimit",
    "StargateDomainHeadroomLow",
    "StargateGridEventNotMet",
    "StargateTelemetryStale",
    "StargateTelemetryStaleSiteWide",
    "StargatePoolNearlyExhausted",
    "StargatePoolClaimsPending",
    "StargateReconcileErrors",
    "StargateOperatorDown",  # the job `stargate-operator-unreachable` points at a closed port
}
PROBES = {
    "StargateReconcileSlow": "histogram_quantile(0.99, sum by (job, instance, kind, le) "
                             "(rate(stargate_reconcile_duration_seconds_bucket[10m])))",
    "StargateOperatorAbsent": "stargate_build_info",
    # every site's count, 0 here: the troubled site's telemetry reports no enforced limit (never reported)
    "StargatePowerLimitsNotApplied": "stargate_cluster_nodes_limit_unconfirmed",
    "StargateDomainCappingOften": "increase(stargate_domain_capping_starts_total[1h])",
    "StargateSiteCappingOften": "increase(stargate_cluster_capping_starts_total[1h])",
}


def _with_status(objects: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The objects as the engine holds them: the core's statuses, the agents' telemetry kept."""
    plan = plan_namespace(objects, now, CoreSettings())
    out = []
    for obj in objects:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace") or "default", meta["name"])
        merged = copy.deepcopy(obj)
        telemetry = (obj.get("status") or {}).get("telemetry")
        merged["status"] = {**plan.statuses.get(key, {}), **({"telemetry": telemetry} if telemetry else {})}
        out.append(merged)
    return out


def troubled_site(now: datetime) -> list[dict[str, Any]]:
    """A 54-node site in trouble: a deep curtailment (overcommitted: racks held at their floor, so
    they measure above budget), a rack whose meter reads above its rating, a rack of agents gone
    silent, a small CXL pool nearly full with a claim waiting, and a power tree in trouble too
    (troubled_tree)."""
    objs = synthetic_site(54, 7, TROUBLED, now=now, cluster="troubled")
    site = next(o for o in objs if o["kind"] == "StargateCluster")
    site["spec"]["power"]["curtailment"] = {
        "percent": 60, "reason": "grid emergency", "until": format_time(now + timedelta(hours=2))}
    # Oversubscription of 0 %: a capping state for the alerts to see, the same budget.
    site["spec"]["power"]["oversubscription"] = {"percent": 0}
    rng = random.Random(3)
    rating = {o["metadata"]["name"]: o["spec"]["maxPowerWatts"] for o in objs if o["kind"] == "Rack"}
    for node in (o for o in objs if o["kind"] == "GPUNode"):
        spec = node["spec"]
        count, max_w, base = spec["gpu"]["count"], spec["gpu"]["maxPowerWatts"], spec["basePowerWatts"]
        # busy, above the curtailed budget, yet within the rack's rating (18 nodes a rack)
        power = min(int((base + count * max_w) * rng.uniform(0.8, 0.95)),
                    rating[spec["rackRef"]] * 9 // 10 // 18)
        fresh = {"powerWatts": power, "healthyGPUs": count,
                 "hbmUsedBytes": count * GB, "observedAt": format_time(now - timedelta(seconds=5))}
        if spec["rackRef"] == "rack-00001":  # agents silent for ten minutes
            fresh["observedAt"] = format_time(now - timedelta(minutes=10))
        if node["metadata"]["name"] == "rack-00002-n00":  # a meter reading far above the rack's rating
            fresh["powerWatts"] = 400_000
        spec["maintenance"] = False
        node["status"] = {"telemetry": fresh}
    serial = len(objs)
    objs.append({"apiVersion": kinds.API_VERSION, "kind": "MemoryPool",
                 "metadata": {"name": "cxl-small", "namespace": TROUBLED, "uid": f"u{serial}",
                              "generation": 1, "creationTimestamp": format_time(now - timedelta(days=1))},
                 "spec": {"clusterRef": "troubled", "tier": "CXL", "capacityBytes": 100 * GB}})
    for i, (size, bound) in enumerate([(95 * GB, True), (50 * GB, False)]):
        claim: dict[str, Any] = {
            "apiVersion": kinds.API_VERSION, "kind": "MemoryClaim",
            "metadata": {"name": f"cxl-claim-{i}", "namespace": TROUBLED, "uid": f"u{serial + 1 + i}",
                         "generation": 1,
                         "creationTimestamp": format_time(now - timedelta(hours=10 - i))},
            "spec": {"poolRef": "cxl-small", "sizeBytes": size}}
        if bound:
            claim["status"] = {"phase": "Bound", "allocatedBytes": size,
                               "boundAt": format_time(now - timedelta(hours=9))}
        objs.append(claim)
    objs += troubled_tree(objs, now)
    return objs + troubled_events(objs, now)


def troubled_events(objs: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The troubled site's GridEvents: one on the site capped below its racks' floors (not met:
    FloorsAboveTarget), one taking 10 % off pdu-2, whose meter already reads above usable (not
    met: MeasuredAboveTarget), one scheduled for tomorrow and one that ended an hour ago."""
    site = next(o for o in objs if o["kind"] == "StargateCluster")
    ns, cluster = site["metadata"]["namespace"], site["metadata"]["name"]
    plan = plan_namespace(objs, now, CoreSettings())
    floors = plan.statuses[("StargateCluster", ns, cluster)]["power"]["floorWatts"]

    def event(name: str, start: datetime, end: datetime | None = None, **spec: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"clusterRef": cluster, "start": format_time(start),
                                "source": f"test:troubled/{name}", **spec}
        if end is not None:
            body["end"] = format_time(end)
        return {"apiVersion": kinds.API_VERSION, "kind": "GridEvent",
                "metadata": {"name": name, "namespace": ns, "uid": f"u-{name}", "generation": 1,
                             "creationTimestamp": format_time(now - timedelta(days=1))},
                "spec": body}

    return [
        event("grid-emergency", now - timedelta(minutes=10), limitWatts=floors // 2),
        event("feed-2-shed", now - timedelta(minutes=10), now + timedelta(hours=3), powerDomainRef="pdu-2",
              reducePercent=10),
        event("tomorrow", now + timedelta(days=1), now + timedelta(days=1, hours=2), reducePercent=30),
        event("last-hour", now - timedelta(hours=2), now - timedelta(hours=1), reducePercent=30),
    ]


def troubled_tree(objs: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The troubled site's power and cooling tree, sized from its racks' floors as the core computes
    them, and the racks' refs into it: a 13.8 kV utility feed over a switchboard over one floor PDU
    per rack: pdu-0 below its rack's floor (Overcommitted, and its rack is limited by it), pdu-1
    just above its rack's floor (3 % headroom; its rack's agents are silent, so nothing is measured
    beneath it), pdu-2 below its rack's meter reading (OverLimit); a roomy CDU; and a PDU whose
    parent does not exist (ParentNotFound)."""
    site = next(o for o in objs if o["kind"] == "StargateCluster")
    ns, cluster = site["metadata"]["namespace"], site["metadata"]["name"]
    racks = sorted((o for o in objs if o["kind"] == "Rack"), key=lambda o: o["metadata"]["name"])
    plan = plan_namespace(objs, now, CoreSettings())
    floor = [plan.statuses[("Rack", ns, r["metadata"]["name"])]["power"]["floorWatts"] for r in racks]
    derate = 80  # the default: usable = floor(rating * 80 / 100)

    def rated(usable: float) -> int:
        return math.ceil(math.ceil(usable) * 100 / derate)

    def domain(name: str, role: str, parent: str | None, rating: int | None,
               type_: str = "Electrical") -> dict[str, Any]:
        spec: dict[str, Any] = {"clusterRef": cluster, "type": type_, "role": role}
        if parent is not None:
            spec["parentRef"] = parent
        if rating is None:  # the utility feed: NetBox's formula, 13.8 kV x 400 A x sqrt(3)
            spec["electrical"] = {"voltage": 13_800, "amperage": 400, "phases": 3}
        else:
            spec["ratingWatts"] = rating
        return {"apiVersion": kinds.API_VERSION, "kind": "PowerDomain",
                "metadata": {"name": name, "namespace": ns, "uid": f"u-{name}", "generation": 1,
                             "creationTimestamp": format_time(now - timedelta(days=1))},
                "spec": spec}

    for i, rack in enumerate(racks):
        rack["spec"]["powerDomainRef"] = f"pdu-{i}"
        rack["spec"]["coolingDomainRef"] = "cdu-a"
    return [
        domain("utility", "Utility", None, None),
        domain("swb-a", "Switchboard", "utility", 4_000_000),
        domain("pdu-0", "FloorPDU", "swb-a", rated(floor[0] - 5_000)),
        domain("pdu-1", "FloorPDU", "swb-a", rated(floor[1] / 0.97)),
        domain("pdu-2", "FloorPDU", "swb-a", rated(floor[2] * 1.5)),
        # Oversubscribed but far from binding: it carries a capping state for the alerts to see.
        {**(cdu := domain("cdu-a", "CDU", None, 4_000_000, "Cooling")),
         "spec": {**cdu["spec"], "oversubscription": {"percent": 5}}},
        domain("pdu-orphan", "FloorPDU", "swb-gone", 100_000),
    ]


def build_site() -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    samples = [o.body for o in load_manifests([ROOT / "crds" / "samples"])]
    return _with_status(samples, now) + _with_status(troubled_site(now), now)


class FakeEngine:
    """Drives the health metrics the way the engine does, until stopped: successful and failed
    recomputations, their durations, status patches, Events, last-success times."""

    def __init__(self, namespaces: list[str]) -> None:
        self.namespaces = namespaces
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(1)
        i = 0
        while not self.stop.is_set():
            i += 1
            ns = self.namespaces[i % len(self.namespaces)]
            metrics.ALLOCATION_SECONDS.observe(rng.uniform(0.0005, 0.02))
            metrics.RECONCILE_SECONDS.labels(kind="namespace").observe(rng.uniform(0.002, 0.08))
            ok = i % 7 != 0
            metrics.RECONCILES.labels(kind="namespace", result="success" if ok else "error").inc()
            metrics.API_WRITES.labels(kind="GPUNode", verb="patch_status").inc(3)
            metrics.API_WRITES.labels(kind="Event", verb="create_event").inc()
            if ok:
                metrics.LAST_SUCCESS.labels(namespace=ns).set(time.time())
            self.stop.wait(0.05)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """host:port of a metrics endpoint serving the operator's registry over the computed site."""
    objects = build_site()
    namespaces = sorted({o["metadata"]["namespace"] for o in objects})
    registry = metrics.make_registry(metrics.StaticSource(objects), per_node=True)
    server = metrics.serve(registry, 0, "127.0.0.1")
    engine = FakeEngine(namespaces)
    engine.thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        engine.stop.set()
        engine.thread.join(timeout=5)
        server.shutdown()
        server.server_close()


def start_prometheus(workdir: Path, target: str) -> PrometheusServer:
    """Prometheus scraping `target` as job stargate-operator, plus a job on a closed port (for
    StargateOperatorDown), with the chart's alert rules."""
    prom = PrometheusServer(workdir, {JOB: [target], f"{JOB}-unreachable": [f"127.0.0.1:{free_port()}"]})
    prom.start()
    try:
        prom.wait_for_scrapes(JOB, 5)
    except BaseException:
        prom.stop()
        raise
    return prom


@pytest.fixture(scope="module")
def prom(endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"), endpoint)
    try:
        yield server
    finally:
        server.stop()


def test_target_is_up_and_scrape_is_clean(prom: PrometheusServer) -> None:
    targets = prom.api("targets")["activeTargets"]
    ours = [t for t in targets if t["labels"]["job"] == JOB]
    assert len(ours) == 1 and ours[0]["health"] == "up", ours
    assert ours[0]["lastError"] == ""
    assert prom.query(f'up{{job="{JOB}"}} == 1')
    assert prom.query(f'up{{job="{JOB}-unreachable"}} == 0')
    # every level is there
    for metric in ("stargate_cluster_power_budget_watts", "stargate_rack_power_budget_watts",
                   "stargate_pool_capacity_bytes", "stargate_node_power_limit_watts",
                   "stargate_reconciles_total", "stargate_build_info"):
        assert prom.query(metric), metric


def test_site_figures_match_the_core(prom: PrometheusServer) -> None:
    abilene = prom.query('stargate_cluster_power_budget_watts{namespace="stargate-abilene"}')
    assert len(abilene) == 1 and abilene[0]["value"] > 0
    assert abilene[0]["metric"]["cluster"]
    over = prom.query(f'stargate_cluster_power_overcommitted_watts{{namespace="{TROUBLED}"}}')
    assert over and over[0]["value"] > 0
    curtail = prom.query(f'stargate_cluster_power_curtailment_ratio{{namespace="{TROUBLED}"}}')
    assert curtail and curtail[0]["value"] == pytest.approx(0.6)
    # headroom is budget - allocated, negative while overcommitted
    head = prom.query(f'stargate_cluster_power_headroom_watts{{namespace="{TROUBLED}"}} < 0')
    assert head


def test_domain_figures_match_the_core(prom: PrometheusServer) -> None:
    def one(expr: str) -> dict[str, Any]:
        result = prom.query(expr)
        assert len(result) == 1, (expr, result)
        return result[0]

    sel = f'namespace="{TROUBLED}", cluster="troubled"'
    pdu0 = one(f'stargate_domain_headroom_watts{{{sel}, domain="pdu-0"}}')
    assert pdu0["value"] < 0  # overcommitted: allocated (the floor) above usable
    labels = {"namespace": TROUBLED, "cluster": "troubled", "domain": "pdu-0", "type": "Electrical",
              "role": "FloorPDU", "parent": "swb-a"}
    assert pdu0["metric"].items() >= labels.items(), pdu0["metric"]
    assert one(f'stargate_domain_overcommitted{{{sel}, domain="pdu-0"}}')["value"] == 1
    assert one(f'stargate_domain_over_limit{{{sel}, domain="pdu-2"}}')["value"] == 1
    assert one(f'stargate_domain_overcommitted{{{sel}, domain="pdu-2"}}')["value"] == 0
    share = one(f'stargate_domain_headroom_watts{{{sel}, domain="pdu-1"}} / '
                f'stargate_domain_usable_watts{{{sel}, domain="pdu-1"}}')["value"]
    assert 0 < share < 0.05
    assert one(f'stargate_domain_racks{{{sel}, domain="utility"}}')["value"] == 3
    assert one(f'stargate_domain_ready{{{sel}, domain="pdu-orphan"}}')["value"] == 0
    # the top of a tree has no parent label (Prometheus drops empty labels); the path is its tree's
    cdu = one(f'stargate_domain_info{{{sel}, domain="cdu-a"}}')["metric"]
    assert "parent" not in cdu and cdu["type"] == "Cooling" and cdu["path"] == "cdu-a"
    assert one(f'stargate_domain_info{{{sel}, domain="pdu-2"}}')["metric"]["path"] == "utility/swb-a/pdu-2"
    limited = {(s["metric"]["rack"], s["metric"]["limited_by"])
               for s in prom.query(f"stargate_rack_power_limited_info{{{sel}}}")}
    assert ("rack-00000", "pdu-0") in limited and ("rack-00001", "troubled") in limited, limited


def test_grid_event_figures_match_the_core(prom: PrometheusServer) -> None:
    sel = f'namespace="{TROUBLED}", cluster="troubled"'

    def by_event(metric: str) -> dict[str, float]:
        return {s["metric"]["event"]: s["value"] for s in prom.query(f"{metric}{{{sel}}}")}

    assert by_event("stargate_grid_event_active") == {"grid-emergency": 1, "feed-2-shed": 1, "tomorrow": 0,
                                                      "last-hour": 0}
    assert by_event("stargate_grid_event_met") == {"grid-emergency": 0, "feed-2-shed": 0}
    floors = prom.query(f"stargate_cluster_power_floor_watts{{{sel}}}")[0]["value"]
    assert by_event("stargate_grid_event_target_watts")["grid-emergency"] == floors // 2
    # every rack at its floor: allocated above the target
    assert by_event("stargate_grid_event_allocated_watts")["grid-emergency"] == floors
    usable = prom.query(f'stargate_domain_usable_watts{{{sel}, domain="pdu-2"}}')[0]["value"]
    assert by_event("stargate_grid_event_target_watts")["feed-2-shed"] == usable  # the event lowered it
    assert by_event("stargate_grid_event_measured_watts")["feed-2-shed"] > usable
    (shed,) = prom.query(f'stargate_grid_event_info{{{sel}, event="feed-2-shed"}}')
    assert (shed["metric"]["domain"], shed["metric"]["source"]) == ("pdu-2", "test:troubled/feed-2-shed")


def test_every_dashboard_query_returns_data(prom: PrometheusServer) -> None:
    problems = dashboard_problems(prom)
    assert not problems, "\n".join(problems)


def test_every_dashboard_query_returns_data_for_one_site(prom: PrometheusServer) -> None:
    problems = dashboard_problems(prom, {"namespace": TROUBLED})
    assert not problems, "\n".join(problems)


def test_rules_load_and_evaluate_cleanly(prom: PrometheusServer) -> None:
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} == {r.alert for r in load_alert_rules()}
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] not in ("ok", "unknown")]
    assert not bad, bad
    # once evaluated, every rule is healthy
    deadline = time.monotonic() + 30
    while any(r["health"] != "ok" for r in rules) and time.monotonic() < deadline:
        time.sleep(0.5)
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r["health"]) for r in rules]


def test_every_alert_expression(prom: PrometheusServer) -> None:
    problems = alert_problems(prom, EXPECT_FIRING, PROBES)
    assert not problems, "\n".join(problems)


def test_every_runbook_query_runs_and_names_real_metrics(prom: PrometheusServer) -> None:
    """docs/operations/runbooks.md: each PromQL line evaluates on the real Prometheus, and every
    metric it names has series from the operator's endpoint (or is Prometheus' own `up`)."""
    assert len(runbook_queries()) >= len(load_alert_rules())  # at least one per alert
    problems = runbook_problems(prom)
    assert not problems, "\n".join(problems)


def test_expected_alerts_become_active(prom: PrometheusServer) -> None:
    deadline = time.monotonic() + 30
    active: dict[str, list[Mapping[str, str]]] = {}
    while time.monotonic() < deadline:
        active = {}
        for a in prom.api("alerts")["alerts"]:
            active.setdefault(a["labels"]["alertname"], []).append(a["labels"])
        if set(active) >= EXPECT_FIRING:
            break
        time.sleep(0.5)
    assert set(active) >= EXPECT_FIRING, f"missing {EXPECT_FIRING - set(active)}"
    assert not set(active) - EXPECT_FIRING, f"unexpected {set(active) - EXPECT_FIRING}"
    # alerts point at the right objects
    assert {a["namespace"] for a in active["StargateSiteOvercommitted"]} == {TROUBLED}
    assert {a["rack"] for a in active["StargateTelemetryStale"]} == {"rack-00001"}
    assert {a["rack"] for a in active["StargateRackOverRating"]} == {"rack-00002"}
    assert {a["pool"] for a in active["StargatePoolNearlyExhausted"]} >= {"cxl-small"}
    troubled_domains = {alert: {a["domain"] for a in active[alert] if a["namespace"] == TROUBLED}
                        for alert in ("StargateDomainOvercommitted", "StargateDomainOverLimit",
                                      "StargateDomainHeadroomLow")}
    assert troubled_domains == {"StargateDomainOvercommitted": {"pdu-0"},
                                "StargateDomainOverLimit": {"pdu-0", "pdu-2"},
                                "StargateDomainHeadroomLow": {"pdu-1"}}, troubled_domains
    assert {(a["event"], a.get("domain", "")) for a in active["StargateGridEventNotMet"]} == {
        ("grid-emergency", ""), ("feed-2-shed", "pdu-2")}


def test_endpoint_serves_promtool_clean_text(endpoint: str) -> None:
    body = httpx.get(f"http://{endpoint}/metrics", timeout=10).text
    res = subprocess.run([binary("promtool"), "check", "metrics"], input=body, capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


# -------------------------------------------------------------------------------------------------
# The same checks with the real operator: `stargate-operator run --per-node-metrics` against the
# local control plane, reconciling the sample sites and the troubled site, scraped by Prometheus.
# Needs the control plane (kube-apiserver and etcd, `make tools`); the tests above do not.


def _for_api(obj: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    meta = obj["metadata"]
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k in ("apiVersion", "kind", "spec")}
    out["metadata"] = {"name": meta["name"], "namespace": namespace, **(
        {"labels": meta["labels"]} if meta.get("labels") else {})}
    return out


def _stop_quietly(op: Any) -> None:
    with contextlib.suppress(AssertionError):  # it did not stop in time: killed next
        op.stop()


@pytest.mark.integration
def test_dashboards_and_alerts_against_the_running_operator(
    control_plane: Any, kubectl: Any, tmp_path: Path
) -> None:
    from helpers.api import Api
    from helpers.kube import create_namespace, namespace_name, purge_namespace
    from helpers.operator_process import OperatorProcess, wait_for

    now = datetime.now(UTC)
    samples = [o.body for o in load_manifests([ROOT / "crds" / "samples"])]
    sites: dict[str, list[dict[str, Any]]] = {}
    for o in samples:
        sites.setdefault(o["metadata"]["namespace"], []).append(o)
    sites[TROUBLED] = troubled_site(now)
    renamed = {ns: namespace_name(f"prom-{ns.removeprefix('stargate-')}") for ns in sites}
    api = Api(control_plane)
    stack = contextlib.ExitStack()
    try:
        for ns in renamed.values():
            create_namespace(kubectl, ns)
        for ns, objs in sites.items():
            # kinds in dependency order do not matter to the operator; claims in creation order do
            for o in objs:
                api.create(renamed[ns], _for_api(o, renamed[ns]))
            for o in objs:
                telemetry = (o.get("status") or {}).get("telemetry")
                if o["kind"] == "GPUNode" and telemetry:
                    api.patch_status("GPUNode", renamed[ns], o["metadata"]["name"], {"telemetry": telemetry})
        troubled = renamed[TROUBLED]
        # Not `with OperatorProcess(...)`: a start that fails inside __enter__ would leave the
        # process running; here it is stopped (or killed) whatever happens.
        op = OperatorProcess(control_plane, tmp_path / "operator", "--per-node-metrics")
        stack.callback(op.kill)
        stack.callback(_stop_quietly, op)
        op.start()

        def reconciled() -> bool:
            st = api.get("StargateCluster", troubled, "troubled").get("status") or {}
            pool = api.get("MemoryPool", troubled, "cxl-small").get("status") or {}
            pending = pool.get("claims", {}).get("pending")
            return bool(st.get("power", {}).get("budgetWatts")) and pending == 1
        try:
            wait_for(reconciled, 90, 0.5, "the troubled site's status")
        except AssertionError as e:
            raise AssertionError(
                f"{e}\nsite: {api.get('StargateCluster', troubled, 'troubled').get('status')}\n"
                f"pool: {api.get('MemoryPool', troubled, 'cxl-small').get('status')}\n"
                f"log: {op.log_tail()}") from None
        # a node agent keeps reporting, as agents do, so that the operator keeps reconciling
        # while Prometheus watches (rates and duration quantiles need fresh observations)
        stop = threading.Event()

        def agent() -> None:
            client = Api(control_plane)
            try:
                i = 0
                while not stop.wait(0.5):
                    i += 1
                    client.patch_status("GPUNode", troubled, "rack-00000-n01", {"telemetry": {
                        "powerWatts": 2_000 + 10 * (i % 50), "healthyGPUs": 4,
                        "observedAt": format_time(datetime.now(UTC))}})
            finally:
                client.close()

        reporter = threading.Thread(target=agent, daemon=True)
        reporter.start()
        try:
            with PrometheusServer(tmp_path / "prometheus",
                                  {JOB: [f"127.0.0.1:{op.metrics_port}"],
                                   f"{JOB}-unreachable": [f"127.0.0.1:{free_port()}"]}) as prom:
                prom.wait_for_scrapes(JOB, 5)
                problems = dashboard_problems(prom)
                problems += [f"[namespace={troubled}] {p}"
                             for p in dashboard_problems(prom, {"namespace": troubled})]
                # a healthy operator has no failed reconciliations: that alert is probed instead
                problems += alert_problems(
                    prom, EXPECT_FIRING - {"StargateReconcileErrors"},
                    {**PROBES, "StargateReconcileErrors":
                     "sum by (job, instance, kind) (increase(stargate_reconciles_total[5m]))"})
                assert not problems, "\n".join(problems) + f"\noperator log:\n{op.log_tail()}"
                over = prom.query(
                    f'stargate_cluster_power_overcommitted_watts{{namespace="{troubled}"}} > 0')
                assert over, "the operator's metrics do not show the troubled site overcommitted"
        finally:
            stop.set()
            reporter.join(timeout=10)
        assert op.alive, op.log_tail()
    finally:
        stack.close()
        api.close()
        for ns in renamed.values():
            purge_namespace(kubectl, ns)
