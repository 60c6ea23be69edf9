"""metrics/: figures, labels, lifecycles and naming of the exported series; the alert rules and
dashboards as files (promtool check/test rules, structure, metric names). The same queries run
against a real Prometheus in tests/integration/test_prometheus.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from helpers.metrics import Samples, promtool, scrape, value
from stargate_operator import __version__, kinds, metrics
from stargate_operator.core import CoreSettings, plan_namespace
from stargate_operator.fixtures.synth import SYNTH_NOW, synthetic_site

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "stargate-operator"
ALERTS = CHART / "files" / "stargate-alerts.yaml"
DASHBOARDS = CHART / "dashboards"




def with_planned_statuses(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects with the statuses the real core plans for them (their agents' telemetry kept)."""
    plan = plan_namespace(objs, SYNTH_NOW, CoreSettings())
    for o in objs:
        key = (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"])
        telemetry = (o.get("status") or {}).get("telemetry")
        o["status"] = {**plan.statuses[key], **({"telemetry": telemetry} if telemetry else {})}
    return objs


def cond(ctype: str, status: str) -> dict[str, str]:
    return {"type": ctype, "status": status, "reason": "Test", "message": ""}


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def small_site(ns: str = "ns1", curtail_until: datetime | None = None) -> list[dict[str, Any]]:
    """A hand-built site with known statuses: one cluster, two racks, three nodes, a pool, claims."""
    curtailment: dict[str, Any] = {"percent": 20, "reason": "grid"}
    if curtail_until is not None:
        curtailment["until"] = iso(curtail_until)
    return [
        {"kind": "StargateCluster", "metadata": {"namespace": ns, "name": "site"},
         "spec": {"site": {"region": "r", "kind": "Floating", "cooling": "Seawater", "designPUE": 1.05},
                  "power": {"itCapacityWatts": 100_000, "reservePercent": 10, "curtailment": curtailment}},
         "status": {"racks": 2, "nodes": 3, "gpus": {"total": 24, "healthy": 16},
                    "memory": {"hbmBytes": 16 * 80 * 10**9, "hostBytes": 4 * 10**12},
                    "power": {"budgetWatts": 72_000, "floorWatts": 75_000, "demandWatts": 90_000,
                              "allocatedWatts": 75_000, "measuredWatts": 50_000, "facilityWatts": 52_500},
                    "carbonGramsPerHour": 3600.0,
                    "conditions": [cond("Ready", "True"), cond("PowerOvercommitted", "True")]}},
        {"kind": "Rack", "metadata": {"namespace": ns, "name": "r1"},
         "spec": {"clusterRef": "site", "maxPowerWatts": 60_000, "priority": 800,
                  "location": {"hall": "h1", "row": "a", "position": "1"}},
         "status": {"nodes": 2, "gpus": {"total": 16, "healthy": 8},
                    "power": {"budgetWatts": 40_000, "floorWatts": 40_000, "demandWatts": 50_000,
                              "measuredWatts": 45_000, "limitedBy": "pdu-1"},
                    "conditions": [cond("Ready", "True"), cond("PowerCapped", "True"),
                                   cond("OverBudget", "True")]}},
        {"kind": "Rack", "metadata": {"namespace": ns, "name": "r2"},
         "spec": {"clusterRef": "site", "maxPowerWatts": 60_000},
         "status": {"nodes": 1, "gpus": {"total": 8, "healthy": 8},
                    "power": {"budgetWatts": 35_000, "floorWatts": 35_000, "demandWatts": 40_000,
                              "measuredWatts": 5_000, "limitedBy": "site"},
                    "conditions": [cond("Ready", "False"), cond("PowerCapped", "True"),
                                   cond("OverBudget", "False")]}},
        {"kind": "GPUNode", "metadata": {"namespace": ns, "name": "n1"},
         "spec": {"rackRef": "r1", "nodeName": "k8s-n1", "gpu": {"model": "H100-SXM", "count": 8},
                  "maintenance": True},
         "status": {"powerLimitWatts": 200, "allocatedWatts": 20_000, "floorWatts": 20_000,
                    "demandWatts": 20_000, "healthyGPUs": 0,
                    "conditions": [cond("Ready", "True"), cond("PowerCapped", "False"),
                                   cond("TelemetryStale", "False")]}},
        {"kind": "GPUNode", "metadata": {"namespace": ns, "name": "n2"},
         "spec": {"rackRef": "r1", "gpu": {"model": "H100-SXM", "count": 8}},
         "status": {"powerLimitWatts": 300, "allocatedWatts": 20_000, "floorWatts": 20_000,
                    "demandWatts": 30_000, "healthyGPUs": 8,
                    "telemetry": {"powerWatts": 25_000, "healthyGPUs": 8, "hbmUsedBytes": 10**11,
                                  "observedAt": "2026-01-01T12:00:00Z"},
                    "conditions": [cond("Ready", "True"), cond("PowerCapped", "True"),
                                   cond("TelemetryStale", "True")]}},
        {"kind": "GPUNode", "metadata": {"namespace": ns, "name": "n3"},
         "spec": {"rackRef": "r2", "gpu": {"model": "H200", "count": 8}},
         "status": {"powerLimitWatts": 500, "allocatedWatts": 35_000, "healthyGPUs": 8,
                    "conditions": [cond("Ready", "True"), cond("PowerCapped", "True")]}},
        {"kind": "MemoryPool", "metadata": {"namespace": ns, "name": "hbm"},
         "spec": {"clusterRef": "site", "tier": "HBM", "rackRef": "r1"},
         "status": {"capacityBytes": 1000, "allocatedBytes": 900, "availableBytes": 100,
                    "claims": {"bound": 3, "pending": 2},
                    "conditions": [cond("Ready", "True"), cond("Exhausted", "True")]}},
        {"kind": "MemoryClaim", "metadata": {"namespace": ns, "name": "c1"},
         "spec": {"poolRef": "hbm", "sizeBytes": 300}, "status": {"phase": "Bound", "allocatedBytes": 300}},
        {"kind": "MemoryClaim", "metadata": {"namespace": ns, "name": "c2"},
         "spec": {"poolRef": "hbm", "sizeBytes": 150}, "status": {"phase": "Pending"}},
        {"kind": "MemoryClaim", "metadata": {"namespace": ns, "name": "c3"},
         "spec": {"poolRef": "hbm", "sizeBytes": 250}},
    ]


def small_tree(ns: str = "ns1") -> list[dict[str, Any]]:
    """Hand-built PowerDomains of small_site with known statuses: a utility feed, a floor PDU under
    it that is overcommitted, constrained and over its limit (r1 is limited by it), a cooling loop
    with no role nor type given, and a domain whose parent is missing (not Ready, figures Unknown)."""
    def domain(name: str, spec: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any]:
        obj: dict[str, Any] = {"kind": "PowerDomain", "metadata": {"namespace": ns, "name": name},
                               "spec": {"clusterRef": "site", **spec}}
        if status is not None:
            obj["status"] = status
        return obj

    def figures(rating: int, usable: int, racks: int, floor: int, demand: int, alloc: int,
                measured: int, path: list[str]) -> dict[str, Any]:
        return {"ratingWatts": rating, "usableWatts": usable, "racks": racks, "floorWatts": floor,
                "demandWatts": demand, "allocatedWatts": alloc, "measuredWatts": measured,
                "headroomWatts": usable - alloc, "path": path}

    return [
        domain("utility", {"type": "Electrical", "role": "Utility", "ratingWatts": 200_000},
               {**figures(200_000, 160_000, 2, 75_000, 90_000, 75_000, 50_000, ["utility"]),
                "conditions": [cond("Ready", "True"), cond("Overcommitted", "False"),
                               cond("Constrained", "False"), cond("OverLimit", "False")]}),
        domain("pdu-1", {"type": "Electrical", "role": "FloorPDU", "parentRef": "utility",
                         "ratingWatts": 45_000, "deratePercent": 80},
               {**figures(45_000, 36_000, 1, 40_000, 50_000, 40_000, 45_000, ["utility", "pdu-1"]),
                "conditions": [cond("Ready", "False"), cond("Overcommitted", "True"),
                               cond("Constrained", "True"), cond("OverLimit", "True")]}),
        domain("loop", {"ratingWatts": 100_000},
               {**figures(100_000, 80_000, 1, 35_000, 40_000, 35_000, 5_000, ["loop"]),
                "conditions": [cond("Ready", "True"), cond("Overcommitted", "False"),
                               cond("Constrained", "False")]}),
        domain("lost", {"type": "Cooling", "role": "CDU", "parentRef": "gone", "ratingWatts": 10_000},
               {"ratingWatts": 10_000, "usableWatts": 8_000, "path": ["lost"],
                "conditions": [cond("Ready", "False"), cond("Overcommitted", "Unknown"),
                               cond("Constrained", "Unknown"), cond("OverLimit", "Unknown")]}),
        domain("new", {"type": "Cooling", "role": "CDU", "ratingWatts": 10_000}, None),  # not planned yet
    ]








def names(samples: Samples) -> set[str]:
    return {k[0] for k in samples}


C = {"namespace": "ns1", "cluster": "site"}


def test_site_figures() -> None:
    s = scrape(small_site())
    assert value(s, "stargate_cluster_info", **C, region="r", site_kind="Floating", cooling="Seawater") == 1
    assert value(s, "stargate_cluster_racks", **C) == 2
    assert value(s, "stargate_cluster_nodes", **C) == 3
    assert value(s, "stargate_cluster_gpus", **C, state="healthy") == 16
    assert value(s, "stargate_cluster_gpus", **C, state="unhealthy") == 8
    assert value(s, "stargate_cluster_hbm_bytes", **C) == 16 * 80 * 10**9
    assert value(s, "stargate_cluster_host_memory_bytes", **C) == 4 * 10**12
    for field, want in [("budget", 72_000), ("floor", 75_000), ("demand", 90_000), ("allocated", 75_000),
                        ("measured", 50_000), ("facility", 52_500)]:
        assert value(s, f"stargate_cluster_power_{field}_watts", **C) == want
    assert value(s, "stargate_cluster_power_headroom_watts", **C) == 72_000 - 75_000
    assert value(s, "stargate_cluster_power_overcommitted_watts", **C) == 3_000
    assert value(s, "stargate_cluster_power_it_capacity_watts", **C) == 100_000
    assert value(s, "stargate_cluster_power_reserve_ratio", **C) == pytest.approx(0.10)
    assert value(s, "stargate_cluster_design_pue_ratio", **C) == pytest.approx(1.05)
    assert value(s, "stargate_cluster_carbon_grams_per_second", **C) == pytest.approx(1.0)
    assert value(s, "stargate_cluster_condition", **C, condition="PowerOvercommitted") == 1
    assert value(s, "stargate_cluster_condition", **C, condition="Ready") == 1
    # node-derived counts, per-node series off
    assert value(s, "stargate_cluster_nodes_maintenance", **C) == 1
    assert value(s, "stargate_cluster_nodes_telemetry_stale", **C) == 1
    assert value(s, "stargate_cluster_nodes_power_capped", **C) == 2
    assert value(s, "stargate_cluster_racks_power_capped", **C) == 2
    assert value(s, "stargate_cluster_racks_over_budget", **C) == 1


def test_curtailment_in_effect_and_expired() -> None:
    now = datetime.now(UTC)
    no_end = scrape(small_site())
    assert value(no_end, "stargate_cluster_power_curtailment_ratio", **C) == pytest.approx(0.2)
    assert ("stargate_cluster_power_curtailment_until_timestamp_seconds", frozenset(C.items())) not in no_end
    future = scrape(small_site(curtail_until=now + timedelta(hours=1)))
    assert value(future, "stargate_cluster_power_curtailment_ratio", **C) == pytest.approx(0.2)
    assert value(future, "stargate_cluster_power_curtailment_until_timestamp_seconds", **C) == pytest.approx(
        (now + timedelta(hours=1)).timestamp(), abs=1)
    past = scrape(small_site(curtail_until=now - timedelta(seconds=1)))
    assert value(past, "stargate_cluster_power_curtailment_ratio", **C) == 0
    assert value(past, "stargate_cluster_power_curtailment_requested_ratio", **C) == pytest.approx(0.2)


def test_counts_are_the_sources_not_the_collectors() -> None:
    """A source with counts (the engine: its last plan's Plan.counts) is believed: the collector
    derives no count from node objects, nor whether a curtailment applies."""
    from stargate_operator.core.counts import CURTAILMENT_PERCENT, NODES_MAINTENANCE, RACKS_OVER_BUDGET

    class Engine:
        def snapshot(self) -> Iterable[Mapping[str, Any]]:
            return small_site()

        def counts(self) -> dict[tuple[str, str, str], dict[str, int]]:
            return {("Rack", "ns1", "r1"): {NODES_MAINTENANCE: 7},
                    ("StargateCluster", "ns1", "site"): {RACKS_OVER_BUDGET: 9, CURTAILMENT_PERCENT: 0}}

    s = {(smp.name, frozenset(smp.labels.items())): smp.value
         for fam in text_string_to_metric_families(generate_latest(metrics.make_registry(Engine())).decode())
         for smp in fam.samples}
    assert value(s, "stargate_rack_nodes_maintenance", **C, rack="r1") == 7
    assert value(s, "stargate_rack_nodes_telemetry_stale", **C, rack="r1") == 0  # none given: 0
    assert value(s, "stargate_rack_nodes_maintenance", **C, rack="r2") == 0  # no entry yet: 0
    assert value(s, "stargate_cluster_racks_over_budget", **C) == 9
    # the spec asks 20 % with no end, but the plan applied none: the metric says what was applied
    assert value(s, "stargate_cluster_power_curtailment_ratio", **C) == 0
    assert value(s, "stargate_cluster_power_curtailment_requested_ratio", **C) == pytest.approx(0.2)


def test_static_counts_equal_the_plans() -> None:
    """For a source that holds no plan, the core reads the counts back from the written statuses:
    the same figures as the plan that wrote them."""
    objs = planned_synthetic_site(60)
    plan = plan_namespace(synthetic_site(60, 5, "synth", now=SYNTH_NOW), SYNTH_NOW, CoreSettings())
    static = metrics.StaticSource(objs).counts()
    assert static == plan.counts
    assert any(c.get("nodesPowerCapped") for c in static.values())  # not all zeros


def test_rack_figures() -> None:
    s = scrape(small_site())
    r1 = {**C, "rack": "r1"}
    assert value(s, "stargate_rack_info", **r1, hall="h1", row="a", position="1") == 1
    assert value(s, "stargate_rack_priority", **r1) == 800
    assert value(s, "stargate_rack_priority", **C, rack="r2") == 500  # the default
    assert value(s, "stargate_rack_power_max_watts", **r1) == 60_000
    for field, want in [("budget", 40_000), ("floor", 40_000), ("demand", 50_000), ("measured", 45_000)]:
        assert value(s, f"stargate_rack_power_{field}_watts", **r1) == want
    assert value(s, "stargate_rack_gpus", **r1, state="healthy") == 8
    assert value(s, "stargate_rack_gpus", **r1, state="unhealthy") == 8
    assert value(s, "stargate_rack_nodes", **r1) == 2
    assert value(s, "stargate_rack_nodes_maintenance", **r1) == 1
    assert value(s, "stargate_rack_nodes_telemetry_stale", **r1) == 1
    assert value(s, "stargate_rack_nodes_power_capped", **r1) == 1
    assert value(s, "stargate_rack_condition", **r1, condition="OverBudget") == 1
    assert value(s, "stargate_rack_condition", **C, rack="r2", condition="Ready") == 0


def domain_labels(domain: str, type_: str, role: str = "", parent: str = "") -> dict[str, str]:
    return {**C, "domain": domain, "type": type_, "role": role, "parent": parent}


def test_domain_figures_are_the_status() -> None:
    s = scrape(small_site() + small_tree())
    pdu = domain_labels("pdu-1", "Electrical", "FloorPDU", "utility")
    assert value(s, "stargate_domain_info", **pdu, path="utility/pdu-1") == 1
    for field, want in [("rating", 45_000), ("usable", 36_000), ("floor", 40_000), ("demand", 50_000),
                        ("allocated", 40_000), ("measured", 45_000), ("headroom", -4_000)]:
        assert value(s, f"stargate_domain_{field}_watts", **pdu) == want, field
    assert value(s, "stargate_domain_racks", **pdu) == 1
    for gauge in ("overcommitted", "constrained", "over_limit"):
        assert value(s, f"stargate_domain_{gauge}", **pdu) == 1, gauge
    assert value(s, "stargate_domain_ready", **pdu) == 0
    top = domain_labels("utility", "Electrical", "Utility")  # no parent: parent=""
    assert value(s, "stargate_domain_headroom_watts", **top) == 85_000
    assert value(s, "stargate_domain_ready", **top) == 1
    for gauge in ("overcommitted", "constrained", "over_limit"):
        assert value(s, f"stargate_domain_{gauge}", **top) == 0, gauge
    # no type given: the registry's default; no role: ""; a condition the status lacks: no series
    loop = domain_labels("loop", "Electrical")
    assert value(s, "stargate_domain_info", **loop, path="loop") == 1
    assert value(s, "stargate_domain_constrained", **loop) == 0
    assert ("stargate_domain_over_limit", frozenset(loop.items())) not in s
    # Unknown counts as 0; figures the status lacks have no series rather than a made-up 0
    lost = domain_labels("lost", "Cooling", "CDU", "gone")
    assert value(s, "stargate_domain_overcommitted", **lost) == 0
    assert value(s, "stargate_domain_usable_watts", **lost) == 8_000
    assert ("stargate_domain_allocated_watts", frozenset(lost.items())) not in s
    new = domain_labels("new", "Cooling", "CDU")
    assert value(s, "stargate_domain_info", **new, path="") == 1
    assert not [k for k in s if k[0] != "stargate_domain_info" and dict(k[1]).get("domain") == "new"]
    assert value(s, "stargate_objects", namespace="ns1", kind="PowerDomain", ready="false") == 2
    assert value(s, "stargate_objects", namespace="ns1", kind="PowerDomain", ready="unknown") == 1


def test_limited_racks_name_what_limits_them() -> None:
    s = scrape(small_site())
    assert value(s, "stargate_rack_power_limited_info", **C, rack="r1", limited_by="pdu-1") == 1
    assert value(s, "stargate_rack_power_limited_info", **C, rack="r2", limited_by="site") == 1
    unlimited = small_site()
    for o in unlimited:
        if o["kind"] == "Rack":
            del o["status"]["power"]["limitedBy"]
    assert "stargate_rack_power_limited_info" not in names(scrape(unlimited))


def test_domain_series_equal_the_statuses_the_core_wrote() -> None:
    """A site with a tree, planned by the real core: every domain series is its status's figure,
    and the racks the core says are limited are those with a limited_info series."""
    objs = planned_site_with_tree()
    s = scrape(objs)
    domains = [o for o in objs if o["kind"] == "PowerDomain"]
    assert domains and all(o["status"].get("usableWatts") for o in domains), "the core planned no domains"
    for o in domains:
        spec, st = o["spec"], o["status"]
        labels = {"namespace": "synth", "cluster": "site", "domain": o["metadata"]["name"],
                  "type": spec["type"], "role": spec["role"], "parent": spec.get("parentRef", "")}
        for field in ("rating", "usable", "floor", "demand", "allocated", "measured", "headroom"):
            assert value(s, f"stargate_domain_{field}_watts", **labels) == st[f"{field}Watts"]
        conds = {c["type"]: c["status"] for c in st["conditions"]}
        for ctype, gauge in [("Overcommitted", "overcommitted"), ("Constrained", "constrained"),
                             ("OverLimit", "over_limit"), ("Ready", "ready")]:
            assert value(s, f"stargate_domain_{gauge}", **labels) == (conds[ctype] == "True")
        assert value(s, "stargate_domain_info", **labels, path="/".join(st["path"])) == 1
    limited = {(dict(k[1])["rack"], dict(k[1])["limited_by"]) for k in s
               if k[0] == "stargate_rack_power_limited_info"}
    assert limited == {(o["metadata"]["name"], o["status"]["power"]["limitedBy"]) for o in objs
                       if o["kind"] == "Rack" and o["status"]["power"].get("limitedBy")}
    assert {by for _, by in limited} >= {"pdu-a"}  # the tree limits a rack: the test can fail
    assert value(s, "stargate_domain_overcommitted", namespace="synth", cluster="site", domain="pdu-b",
                 type="Electrical", role="FloorPDU", parent="utility") == 1


def test_pool_figures() -> None:
    s = scrape(small_site())
    p = {**C, "pool": "hbm", "tier": "HBM"}
    assert value(s, "stargate_pool_info", **p, rack="r1") == 1
    assert value(s, "stargate_pool_capacity_bytes", **p) == 1000
    assert value(s, "stargate_pool_allocated_bytes", **p) == 900
    assert value(s, "stargate_pool_available_bytes", **p) == 100
    assert value(s, "stargate_pool_claims", **p, phase="Bound") == 3
    assert value(s, "stargate_pool_claims", **p, phase="Pending") == 2
    assert value(s, "stargate_pool_pending_bytes", **p) == 400  # c2 and c3 (no status yet)
    assert value(s, "stargate_pool_condition", **p, condition="Exhausted") == 1


def test_objects_by_kind_and_ready() -> None:
    s = scrape(small_site())
    assert value(s, "stargate_objects", namespace="ns1", kind="Rack", ready="true") == 1
    assert value(s, "stargate_objects", namespace="ns1", kind="Rack", ready="false") == 1
    assert value(s, "stargate_objects", namespace="ns1", kind="MemoryClaim", ready="unknown") == 3


def test_per_node_series_off_by_default_and_on_when_asked() -> None:
    off = scrape(small_site())
    assert not {n for n in names(off) if n.startswith("stargate_node_")}
    on = scrape(small_site(), per_node=True)
    n2 = {**C, "rack": "r1", "node": "n2"}
    assert value(on, "stargate_node_power_limit_watts", **n2) == 300
    assert value(on, "stargate_node_power_allocated_watts", **n2) == 20_000
    assert value(on, "stargate_node_power_demand_watts", **n2) == 30_000
    assert value(on, "stargate_node_power_measured_watts", **n2) == 25_000
    assert value(on, "stargate_node_hbm_used_bytes", **n2) == 10**11
    assert value(on, "stargate_node_telemetry_timestamp_seconds", **n2) == SYNTH_NOW.timestamp()
    assert value(on, "stargate_node_gpus", **n2, state="healthy") == 8
    assert value(on, "stargate_node_condition", **n2, condition="TelemetryStale") == 1
    assert value(on, "stargate_node_info", **{**C, "rack": "r1", "node": "n1"}, gpu_model="H100-SXM",
                 node_name="k8s-n1") == 1
    assert value(on, "stargate_node_maintenance", **{**C, "rack": "r1", "node": "n1"}) == 1
    # a node without telemetry has no measured series rather than a made-up 0
    assert ("stargate_node_power_measured_watts",
            frozenset({**C, "rack": "r2", "node": "n3"}.items())) not in on


def test_a_cordoned_node_is_in_maintenance_per_node_too() -> None:
    """Node discovery's spec.cordoned counts as maintenance, as in the rack's count (core/objects)."""
    objs = small_site()
    for o in objs:
        if o["kind"] == "GPUNode":
            o["spec"] = {**o["spec"], "maintenance": False, "cordoned": o["metadata"]["name"] == "n2"}
    on = scrape(objs, per_node=True)
    assert value(on, "stargate_node_maintenance", **{**C, "rack": "r1", "node": "n2"}) == 1
    assert value(on, "stargate_node_maintenance", **{**C, "rack": "r1", "node": "n1"}) == 0


def test_series_of_deleted_objects_disappear() -> None:
    source = metrics.StaticSource(small_site("a") + small_site("b"))
    registry = metrics.make_registry(source, per_node=True)
    before = generate_latest(registry).decode()
    assert 'namespace="b"' in before and 'rack="r2"' in before
    objs = [o for o in small_site("a") if o["metadata"]["name"] != "r2"]
    source.replace(objs)
    after = generate_latest(registry).decode()
    assert 'namespace="b"' not in after
    assert not re.search(r'^stargate_rack_\w+\{[^}]*rack="r2"', after, re.M)  # no series of rack r2
    assert re.search(r'^stargate_node_\w+\{[^}]*rack="r2"', after, re.M)  # its node n3 is still there
    assert 'stargate_rack_power_budget_watts{cluster="site",namespace="a",rack="r1"}' in after
    source.replace(small_site("a") + small_tree("a"))
    assert 'domain="pdu-1"' in generate_latest(registry).decode()
    source.replace(small_site("a") + [o for o in small_tree("a") if o["metadata"]["name"] != "pdu-1"])
    after = generate_latest(registry).decode()
    assert 'domain="pdu-1"' not in after and 'domain="utility"' in after
    source.replace([])
    empty = generate_latest(registry).decode()
    assert not re.search(r"^stargate_(cluster|rack|domain|pool|node|objects)\w*\{", empty, re.M)


def test_missing_partial_and_malformed_status_do_not_break_a_scrape() -> None:
    objs: list[Any] = [
        {"kind": "StargateCluster", "metadata": {"namespace": "x", "name": "new"},
         "spec": {"site": {"region": "r", "kind": "Onshore", "cooling": "Air"},
                  "power": {"itCapacityWatts": 10}}},
        {"kind": "Rack", "metadata": {"namespace": "x", "name": "rk"}, "spec": {"clusterRef": "new"},
         "status": {"power": {"budgetWatts": "lots"}, "conditions": "bad"}},
        {"kind": "GPUNode", "metadata": {"namespace": "x", "name": "orphan"}, "spec": {"rackRef": "gone"},
         "status": {"telemetry": {"observedAt": "yesterday"}, "healthyGPUs": True}},
        {"kind": "MemoryPool", "metadata": {"namespace": "x", "name": "p"}, "spec": None, "status": []},
        {"kind": "MemoryClaim", "metadata": {"namespace": "x", "name": "c"}},
        {"kind": "PowerDomain", "metadata": {"namespace": "x", "name": "d"}, "spec": None,
         "status": {"path": "top/d", "usableWatts": "lots", "headroomWatts": -5, "conditions": 5}},
        {"kind": "PowerDomain", "metadata": {"namespace": "x", "name": "e"},
         "spec": {"clusterRef": "new", "role": 7}, "status": {"path": ["top", 3, "e"]}},
        {"kind": "Secret", "metadata": {"namespace": "x", "name": "s"}},
        {"no": "kind"},
        "not a mapping",
    ]
    s = scrape(objs, per_node=True)
    x = {"namespace": "x", "cluster": "new"}
    assert value(s, "stargate_cluster_info", **x, region="r", site_kind="Onshore", cooling="Air") == 1
    assert value(s, "stargate_cluster_power_it_capacity_watts", **x) == 10
    assert ("stargate_cluster_power_budget_watts", frozenset(x.items())) not in s  # not reconciled yet
    assert ("stargate_rack_power_budget_watts", frozenset({**x, "rack": "rk"}.items())) not in s
    assert value(s, "stargate_node_info", namespace="x", cluster="", rack="gone", node="orphan", gpu_model="",
                 node_name="") == 1
    assert value(s, "stargate_objects", namespace="x", kind="GPUNode", ready="unknown") == 1
    d = {"namespace": "x", "cluster": "", "domain": "d", "type": "Electrical", "role": "", "parent": ""}
    assert value(s, "stargate_domain_info", **d, path="") == 1
    assert value(s, "stargate_domain_headroom_watts", **d) == -5
    assert ("stargate_domain_usable_watts", frozenset(d.items())) not in s
    assert value(s, "stargate_domain_info", **{**d, "cluster": "new", "domain": "e"}, path="top/e") == 1
    assert not [k for k in s if k[1] and dict(k[1]).get("kind") == "Secret"]


def test_snapshot_changing_under_the_scrape_is_retried() -> None:
    class Flaky:
        calls = 0

        def snapshot(self) -> Iterable[Mapping[str, Any]]:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("dictionary changed size during iteration")
            return small_site()

    source = Flaky()
    s = generate_latest(metrics.make_registry(source)).decode()
    assert "stargate_cluster_power_budget_watts" in s and source.calls == 2


def test_health_metrics_have_the_contracted_names_and_labels() -> None:
    metrics.RECONCILES.labels(kind="namespace", result="success").inc()
    metrics.RECONCILES.labels(kind="namespace", result="error").inc(0)
    metrics.RECONCILE_SECONDS.labels(kind="namespace").observe(0.003)
    metrics.ALLOCATION_SECONDS.observe(0.001)
    metrics.API_WRITES.labels(kind="Rack", verb="patch_status").inc()
    metrics.LAST_SUCCESS.labels(namespace="gone-ns").set(1.0)
    text = generate_latest(metrics.make_registry(metrics.StaticSource([]))).decode()
    for line in [
        'stargate_reconciles_total{kind="namespace",result="success"}',
        'stargate_reconcile_duration_seconds_bucket{kind="namespace",le="0.005"}',
        'stargate_allocation_duration_seconds_bucket{le="0.001"}',
        'stargate_api_writes_total{kind="Rack",verb="patch_status"}',
        'stargate_last_successful_reconcile_timestamp_seconds{namespace="gone-ns"}',
        f'stargate_build_info{{python="{sys.version.split()[0]}",version="{__version__}"}} 1.0',
        "process_resident_memory_bytes",
    ]:
        assert line in text, line
    assert "# TYPE stargate_reconciles_total counter" in text
    assert "# TYPE stargate_reconcile_duration_seconds histogram" in text
    # buckets span a 1 ms to 2 s recomputation
    assert metrics.RECONCILE_BUCKETS[0] <= 0.001 and 2.0 in metrics.RECONCILE_BUCKETS
    metrics.forget_namespace("gone-ns")
    metrics.forget_namespace("never-seen")
    text = generate_latest(metrics.make_registry(metrics.StaticSource([]))).decode()
    assert 'namespace="gone-ns"' not in text


def test_dedicated_registry_leaves_the_global_one_alone() -> None:
    metrics.make_registry(metrics.StaticSource(small_site()))
    assert "stargate_" not in generate_latest(REGISTRY).decode()
    # two registries (two servers, or tests) do not collide
    a = generate_latest(metrics.make_registry(metrics.StaticSource(small_site()))).decode()
    b = generate_latest(metrics.make_registry(metrics.StaticSource(small_site()))).decode()
    assert "stargate_cluster_power_budget_watts" in a and "stargate_cluster_power_budget_watts" in b


def test_serve_on_a_free_port_and_shut_down() -> None:
    server = metrics.serve(metrics.make_registry(metrics.StaticSource(small_site())), 0, "127.0.0.1")
    try:
        r = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert "stargate_cluster_power_budget_watts" in r.text
    finally:
        server.shutdown()
        server.server_close()


def parsed(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(smp.name, frozenset(smp.labels.items())): smp.value
            for fam in text_string_to_metric_families(text) for smp in fam.samples
            if not fam.name.startswith(("process_", "python_"))}


@pytest.mark.parametrize("per_node", [False, True])
def test_served_fast_text_equals_the_library_rendering(per_node: bool) -> None:
    objs: list[Any] = [*planned_synthetic_site(60), *small_site(), *small_tree()]
    objs.append({"kind": "StargateCluster", "metadata": {"namespace": "odd", "name": "odd"},
                 "spec": {"site": {"region": 'eu "north"\\sea\nfloor', "kind": "Onshore"}}})
    registry = metrics.make_registry(metrics.StaticSource(objs), per_node=per_node)
    fast = registry.render_text().decode()
    slow = generate_latest(registry).decode()
    assert parsed(fast) == parsed(slow)
    assert 'region="eu \\"north\\"\\\\sea\\nfloor"' in fast
    helps = {line for line in slow.splitlines() if line.startswith(("# HELP stargate", "# TYPE stargate"))}
    assert helps <= set(fast.splitlines())
    res = subprocess.run([promtool(), "check", "metrics"], input=fast.encode(), capture_output=True,
                         check=False)
    assert res.returncode == 0, (res.stdout + res.stderr).decode()


def test_served_page_is_gzipped_when_asked() -> None:
    registry = metrics.make_registry(metrics.StaticSource(small_site()))
    server = metrics.serve(registry, 0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        plain = httpx.get(url, headers={"Accept-Encoding": "identity"}, timeout=10)
        zipped = httpx.get(url, headers={"Accept-Encoding": "gzip"}, timeout=10)
        assert "content-encoding" not in plain.headers
        assert zipped.headers["content-encoding"] == "gzip"
        assert parsed(zipped.text) == parsed(plain.text)  # httpx decompresses
        assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    finally:
        server.shutdown()
        server.server_close()


def planned_synthetic_site(nodes: int) -> list[dict[str, Any]]:
    objs = synthetic_site(nodes, 5, "synth", now=SYNTH_NOW)
    return with_planned_statuses(objs)


def planned_site_with_tree() -> list[dict[str, Any]]:
    """The 60-node synthetic site under a tree, planned by the real core: a utility feed (given by
    voltage, amperage and phases) over two floor PDUs, pdu-a too small for the demand of its rack
    (Constrained: the rack is limited by it), pdu-b too small for its rack's floor (Overcommitted),
    and a cooling loop over every rack."""
    objs = synthetic_site(60, 5, "synth", now=SYNTH_NOW)
    racks = sorted((o for o in objs if o["kind"] == "Rack"), key=lambda o: o["metadata"]["name"])
    plan = plan_namespace(objs, SYNTH_NOW, CoreSettings())
    floor = {r["metadata"]["name"]: plan.statuses[("Rack", "synth", r["metadata"]["name"])]["power"]
             for r in racks}

    def domain(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": kinds.API_VERSION, "kind": "PowerDomain",
                "metadata": {"namespace": "synth", "name": name, "uid": f"u-{name}", "generation": 1},
                "spec": {"clusterRef": "site", "deratePercent": 100, **spec}}

    a, b = racks[0]["metadata"]["name"], racks[1]["metadata"]["name"]
    between = (floor[a]["floorWatts"] + floor[a]["demandWatts"]) // 2
    objs += [
        domain("utility", {"type": "Electrical", "role": "Utility",
                           "electrical": {"voltage": 13_800, "amperage": 400, "phases": 3}}),
        domain("pdu-a", {"type": "Electrical", "role": "FloorPDU", "parentRef": "utility",
                         "ratingWatts": between}),
        domain("pdu-b", {"type": "Electrical", "role": "FloorPDU", "parentRef": "utility",
                         "ratingWatts": floor[b]["floorWatts"] - 1_000}),
        domain("loop", {"type": "Cooling", "role": "CDU", "ratingWatts": 10_000_000}),
    ]
    racks[0]["spec"]["powerDomainRef"] = "pdu-a"
    racks[1]["spec"]["powerDomainRef"] = "pdu-b"
    for r in racks:
        r["spec"]["coolingDomainRef"] = "loop"
    return with_planned_statuses(objs)


@pytest.mark.parametrize("per_node", [False, True])
def test_promtool_check_metrics_is_clean(per_node: bool) -> None:
    objs = planned_synthetic_site(60) + small_site() + small_tree() + planned_site_with_tree()
    metrics.RECONCILES.labels(kind="namespace", result="success").inc()
    body = generate_latest(metrics.make_registry(metrics.StaticSource(objs), per_node=per_node))
    res = subprocess.run([promtool(), "check", "metrics"], input=body, capture_output=True, check=False)
    assert res.returncode == 0, (res.stdout + res.stderr).decode()
    assert b"stargate_rack_power_budget_watts" in body
    assert b"stargate_domain_headroom_watts{" in body and b"stargate_rack_power_limited_info{" in body


def test_names_follow_conventions() -> None:
    s = scrape(planned_synthetic_site(40) + small_site() + small_tree(), per_node=True)
    for name in names(s):
        assert name.startswith(("stargate_", "process_", "python_")), name
        if name.startswith("stargate_") and name.endswith("_total"):
            assert name in {"stargate_reconciles_total", "stargate_api_writes_total"}, name
    gauge_units = {n for n in names(s) if re.search(r"_(watt|watts|bytes|seconds|ratio)$", n)}
    assert "stargate_cluster_power_budget_watts" in gauge_units
    assert not [n for n in names(s) if re.search(r"(kilo|mega|giga|milli)|_percent|_kw|_gb", n)]


def test_scrape_time_grows_linearly_and_stays_small() -> None:
    """A relative check (no absolute times): 10x the nodes costs at most ~20x."""
    small, large = planned_synthetic_site(200), planned_synthetic_site(2000)

    def best(objs: list[dict[str, Any]]) -> float:
        reg = metrics.make_registry(metrics.StaticSource(objs))
        times = []
        for _ in range(5):
            t0 = time.process_time()  # CPU time: other processes on the machine do not count
            reg.render_text()
            times.append(time.process_time() - t0)
        return min(times)

    assert best(large) / best(small) < 20


def test_bench_script_runs() -> None:
    res = subprocess.run([sys.executable, str(ROOT / "hack" / "bench-scrape.py"), "--nodes", "200",
                          "--repeat", "1"], capture_output=True, text=True, check=False, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "per-node off:" in res.stdout and "per-node on:" in res.stdout and "ratio" in res.stdout


# --------------------------------------------------------------------------------------------------
# Alert rules and dashboards as files


def test_alert_rules_single_source() -> None:
    copy = ROOT / "deploy" / "prometheus" / "stargate-alerts.yaml"
    assert not copy.exists() or copy.read_text() == ALERTS.read_text(), \
        f"{copy} differs from the single source {ALERTS}"


def test_promtool_check_rules() -> None:
    res = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_promtool_test_rules_each_alert_firing_and_not() -> None:
    tests_file = ROOT / "tests" / "prometheus" / "alerts_test.yaml"
    res = subprocess.run([promtool(), "test", "rules", str(tests_file)], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    # every alert has a case where it fires and one where it does not
    doc = yaml.safe_load(tests_file.read_text())
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for t in case.get("alert_rule_test", []):
            (fired if t.get("exp_alerts") else quiet).add(t["alertname"])
    alerts = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    assert fired == alerts, alerts - fired
    assert quiet == alerts, alerts - quiet


def test_alerts_are_actionable() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    want = {"overcommitted", "overbudget", "nearlyexhausted", "telemetrystale", "reconcileerrors",
            "operatordown"}
    have = {r["alert"].lower().removeprefix("stargate").removeprefix("site").removeprefix("rack")
            .removeprefix("pool") for r in rules}
    assert want <= have, want - have
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning"}, r["alert"]
        assert r["annotations"]["summary"] and len(r["annotations"]["description"]) > 150, r["alert"]
        assert "for" in r, r["alert"]


def all_exported_names() -> set[str]:
    metrics.RECONCILES.labels(kind="namespace", result="error").inc(0)
    metrics.RECONCILE_SECONDS.labels(kind="namespace").observe(0.01)
    metrics.API_WRITES.labels(kind="Event", verb="create_event").inc(0)
    metrics.LAST_SUCCESS.labels(namespace="synth").set(1)
    s = scrape(planned_synthetic_site(40) + small_site() + small_tree() + planned_oversubscribed_site()
               + planned_grid_event_site() + planned_observing_site(), per_node=True)
    return names(s) | {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def planned_grid_event_site() -> list[dict[str, Any]]:
    """A synthetic site with a GridEvent in effect on it, planned by the real core: it
    exports every grid-event series (tests/unit/test_metrics_gridevents.py checks their values)."""
    objs = synthetic_site(20, 4, "grid", now=SYNTH_NOW)
    site = next(o for o in objs if o["kind"] == "StargateCluster")
    start = (SYNTH_NOW - timedelta(minutes=5)).isoformat()
    end = (SYNTH_NOW + timedelta(hours=1)).isoformat()
    objs.append({"apiVersion": kinds.API_VERSION, "kind": "GridEvent",
                 "metadata": {"name": "dr", "namespace": "grid", "generation": 1},
                 "spec": {"clusterRef": site["metadata"]["name"], "start": start, "end": end,
                          "reducePercent": 20, "source": "test"}})
    return with_planned_statuses(objs)


def planned_observing_site() -> list[dict[str, Any]]:
    """A synthetic site in shadow mode (enforcement Observe), curtailed so that enforcing would
    cap, planned by the real core: it exports the shadow-mode series."""
    objs = synthetic_site(20, 4, "observe", now=SYNTH_NOW)
    for o in objs:
        if o["kind"] == "StargateCluster":
            o["spec"]["power"]["enforcement"] = "Observe"
            o["spec"]["power"]["curtailment"] = {"percent": 50}
    return with_planned_statuses(objs)


def planned_oversubscribed_site() -> list[dict[str, Any]]:
    """A synthetic site under a tree, oversubscribed on the site and every domain,
    planned by the real core: it exports the capping series."""
    objs = synthetic_site(40, 7, "oversub", now=SYNTH_NOW, tree=True)
    for o in objs:
        if o["kind"] == "StargateCluster":
            o["spec"]["power"]["oversubscription"] = {"percent": 20}
        elif o["kind"] == "PowerDomain":
            o["spec"]["oversubscription"] = {"percent": 20}
    return with_planned_statuses(objs)


METRIC_NAME = re.compile(r"\b((?:stargate|process|up|scrape)_?[a-z_]*)\b(?!\s*\()")


def referenced_names(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    return {m for m in METRIC_NAME.findall(expr) if m not in {"by", "without"}}


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


DASHBOARD_FILES = {"site-overview.json", "power.json", "power-tree.json", "memory-pools.json",
                   "operator-health.json"}


def test_five_dashboards_with_unique_uids() -> None:
    d = dashboards()
    assert set(d) == DASHBOARD_FILES
    uids = [x["uid"] for x in d.values()]
    assert len(set(uids)) == len(DASHBOARD_FILES) and all(len(u) <= 40 for u in uids)


@pytest.mark.parametrize("name", sorted(DASHBOARD_FILES))
def test_dashboard_structure(name: str) -> None:
    dash = dashboards()[name]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "cluster"} <= set(variables)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exported = all_exported_names()
    queries = 0
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p.get("description"), p["title"]
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for t in p["targets"]:
            queries += 1
            assert t["datasource"]["uid"] == "${datasource}"
            unknown = referenced_names(t["expr"]) - exported
            assert not unknown, f"{p['title']}: {t['expr']} uses {unknown}"
            if any(f"stargate_{level}_" in t["expr"] for level in ("cluster", "rack", "domain")):
                assert 'namespace=~"$namespace"' in t["expr"], t["expr"]
                assert 'cluster=~"$cluster"' in t["expr"], t["expr"]
    assert queries >= 10
    for v in variables.values():
        if v["type"] == "query":
            assert v["query"]["query"].startswith("label_values(")


def test_alert_expressions_use_exported_metrics() -> None:
    exported = all_exported_names()
    for g in yaml.safe_load(ALERTS.read_text())["groups"]:
        for r in g["rules"]:
            unknown = referenced_names(r["expr"]) - exported
            assert not unknown, f"{r['alert']}: {unknown}"


def test_a_standby_exports_no_object_series() -> None:
    import threading

    class Engine:
        def __init__(self) -> None:
            self.active = threading.Event()

        def snapshot(self) -> Iterable[Mapping[str, Any]]:
            return small_site() + small_tree()

    engine = Engine()
    registry = metrics.make_registry(engine, per_node=True)
    standby = registry.render_text().decode()
    assert "stargate_active 0" in standby
    assert not re.search(r"^stargate_(cluster|rack|domain|pool|node|objects)\w*\{", standby, re.M)
    assert "stargate_reconciles_total" in standby  # its own health is still there
    engine.active.set()
    active = registry.render_text().decode()
    assert "stargate_active 1" in active
    assert "stargate_cluster_power_budget_watts{" in active and "stargate_domain_usable_watts{" in active
    assert parsed(active) == parsed(generate_latest(registry).decode())


def test_limit_confirmation_counts_are_the_cores() -> None:
    """stargate_{cluster,rack}_nodes_limit_{confirmed,unconfirmed}: from the
    engine's Plan.counts, or read back from the PowerLimitApplied conditions the core wrote."""
    now = datetime.now(UTC)
    spec = {"gpu": {"model": "H100", "count": 4, "memoryBytes": 10, "minPowerWatts": 100,
                    "maxPowerWatts": 500}, "basePowerWatts": 0, "rackRef": "r1"}

    def gpunode(name: str, enforced: int | None) -> dict[str, Any]:
        tel: dict[str, Any] = {"powerWatts": 100, "healthyGPUs": 4, "observedAt": iso(now)}
        if enforced is not None:
            tel["enforcedLimitWatts"] = enforced
        return {"apiVersion": kinds.API_VERSION, "kind": "GPUNode",
                "metadata": {"name": name, "namespace": "ns1"}, "spec": spec, "status": {"telemetry": tel}}

    objs: list[dict[str, Any]] = [
        {"apiVersion": kinds.API_VERSION, "kind": "StargateCluster",
         "metadata": {"name": "s1", "namespace": "ns1"},
         "spec": {"site": {"region": "r", "kind": "Onshore", "cooling": "Air"},
                  "power": {"itCapacityWatts": 100_000, "reservePercent": 0}}},
        {"apiVersion": kinds.API_VERSION, "kind": "Rack",
         "metadata": {"name": "r1", "namespace": "ns1"},
         "spec": {"clusterRef": "s1", "maxPowerWatts": 100_000}},
        gpunode("ok", 500), gpunode("ok2", 500), gpunode("off", 300), gpunode("silent", None),
    ]
    plan = plan_namespace(objs, now, CoreSettings())
    written = [{**o, "status": {**plan.statuses[(o["kind"], "ns1", o["metadata"]["name"])],
                                **({"telemetry": o["status"]["telemetry"]} if "status" in o else {})}}
               for o in objs]
    s = scrape(written)
    site = {"namespace": "ns1", "cluster": "s1"}
    assert value(s, "stargate_cluster_nodes_limit_confirmed", **site) == 2
    assert value(s, "stargate_cluster_nodes_limit_unconfirmed", **site) == 1
    assert value(s, "stargate_rack_nodes_limit_confirmed", **site, rack="r1") == 2
    assert value(s, "stargate_rack_nodes_limit_unconfirmed", **site, rack="r1") == 1
