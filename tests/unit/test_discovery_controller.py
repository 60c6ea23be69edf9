"""Node discovery as a controller of the slot (controller/discovery.py): planned name by name with a
cache, equal to the core's whole plan; deletes pinned to the uid; a skip logged once per Node and
counted in the gauge; registered by `run --discover-nodes`; and through the engine with the power
controller on an in-memory API."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from helpers.discovery import SITE, as_existing, hand_written, k8s_node
from helpers.engine import Clocks, FakeApi, plurals, started
from stargate_operator import metrics
from stargate_operator.controller import discovery as ctl
from stargate_operator.controller.engine import EngineSettings
from stargate_operator.controller.operator import RunSettings, controllers
from stargate_operator.controller.slot import power_controller
from stargate_operator.core import discovery as d
from stargate_operator.core.types import ObjectRef
from stargate_operator.kinds import GPU_NODE

NOW = None  # the planner does not read the time
SETTINGS = d.DiscoverySettings()


def existing(node: dict[str, Any], rv: str = "7", **spec: Any) -> dict[str, Any]:
    """The GPUNode the API server holds once discovery applied `node`'s."""
    (applied,) = d.plan_discovery([node], []).applies
    out: dict[str, Any] = as_existing(applied, **spec)
    out["metadata"]["uid"] = f"gpunode-uid-{node['metadata']['name']}"
    out["metadata"]["resourceVersion"] = rv
    return out


def with_rv(obj: dict[str, Any], rv: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"]["resourceVersion"] = rv
    return out


def a_cluster() -> list[dict[str, Any]]:
    """Every case at once: kept, changed, moved, gone, hand-written (by name and elsewhere), skipped
    (placement and unreadable labels), a CPU node."""
    nodes = [
        k8s_node("kept"),
        k8s_node("relabelled", rack_name="r2"),
        k8s_node("moved", site="site-b"),
        k8s_node("unplaced", site=None),
        k8s_node("glitch", count="eight"),
        k8s_node("taken"),
        k8s_node("fresh"),
        k8s_node("cpu", product=None, count=None, memory_mib=None),
    ]
    gpunodes = [
        existing(k8s_node("kept"), "11"),
        existing(k8s_node("relabelled"), "12"),
        existing(k8s_node("moved"), "13"),
        existing(k8s_node("unplaced"), "14"),
        existing(k8s_node("glitch"), "15"),
        existing(k8s_node("gone"), "16"),
        with_rv(hand_written("taken"), "17"),
        with_rv(hand_written("by-hand"), "18"),
    ]
    return [with_rv(n, str(100 + i)) for i, n in enumerate(nodes)] + gpunodes


def test_planned_by_name_it_is_the_cores_whole_plan() -> None:
    objects = a_cluster()
    whole = d.plan_discovery([o for o in objects if o["kind"] == "Node"],
                             [o for o in objects if o["kind"] == "GPUNode"], SETTINGS)
    cache = ctl.DiscoveryCache()
    for _ in range(2):  # cold, then every part from the cache
        got = ctl.plan_by_name(objects, SETTINGS, cache)
        assert got.applies == whole.applies
        assert got.deletes == whole.deletes
        assert got.skipped == whole.skipped
        assert got.managed == whole.managed
    # The whole plan, read: what the test's cluster implies.
    assert [a["metadata"]["name"] for a in whole.applies] == ["moved", "fresh", "relabelled"]  # site-b first
    assert whole.deletes == [("GPUNode", SITE, "gone"), ("GPUNode", SITE, "moved"),
                             ("GPUNode", SITE, "unplaced")]
    assert sorted(s.reason for s in whole.skipped) == sorted(
        [d.INVALID_GPU_LABELS, d.HAND_WRITTEN_GPU_NODE, d.MISSING_SITE_LABEL])
    shard = d.DiscoverySettings(namespaces=frozenset({"site-b"}))
    assert ctl.plan_by_name(objects, shard).applies == d.plan_discovery(
        [o for o in objects if o["kind"] == "Node"], [o for o in objects if o["kind"] == "GPUNode"],
        shard).applies


def test_only_the_names_whose_objects_changed_are_planned_again() -> None:
    objects = a_cluster()
    cache = ctl.DiscoveryCache()
    ctl.plan_by_name(objects, SETTINGS, cache)
    before = {name: part for name, (_, part) in cache.parts.items()}
    # The agent writes telemetry: a new resourceVersion of GPUNode kept, with NVML's range.
    i = next(i for i, o in enumerate(objects) if o["kind"] == "GPUNode" and o["metadata"]["name"] == "kept")
    objects[i] = with_rv(objects[i], "99")
    objects[i]["status"] = {"telemetry": {"minPowerWatts": 200, "maxPowerWatts": 650}}
    plan = ctl.plan_by_name(objects, SETTINGS, cache)
    again = [name for name, (_, part) in cache.parts.items() if part is not before[name]]
    assert again == ["kept"]
    kept = next(a for a in plan.applies if a["metadata"]["name"] == "kept")
    assert (kept["spec"]["gpu"]["minPowerWatts"], kept["spec"]["gpu"]["maxPowerWatts"]) == (200, 650)
    # A name gone from the cluster is dropped from the cache.
    ctl.plan_by_name([o for o in objects if o["metadata"]["name"] != "fresh"], SETTINGS, cache)
    assert "fresh" not in cache.parts


def test_an_nvml_range_laid_over_without_a_new_version_is_seen() -> None:
    """An engine's telemetry overlay changes a GPUNode without a resourceVersion: still replanned."""
    node, gpunode = with_rv(k8s_node("n1"), "1"), existing(k8s_node("n1"), "2")
    cache = ctl.DiscoveryCache()
    assert ctl.plan_by_name([node, gpunode], SETTINGS, cache).applies == []
    overlaid = {**gpunode, "status": {"telemetry": {"minPowerWatts": 250, "maxPowerWatts": 600}}}
    (apply,) = ctl.plan_by_name([node, overlaid], SETTINGS, cache).applies
    assert apply["spec"]["gpu"]["maxPowerWatts"] == 600


def test_deletes_are_pinned_to_the_uid_the_plan_saw() -> None:
    gone = existing(k8s_node("gone"))
    plan = ctl.to_plan(ctl.plan_by_name([gone], SETTINGS), [gone])
    assert plan.deletes == [ObjectRef("GPUNode", SITE, "gone", uid="gpunode-uid-gone")]
    assert plan.applies == [] and plan.statuses == {}


def test_a_skip_is_reported_once_per_node_and_reason() -> None:
    a1 = d.Skipped("a", d.MISSING_SITE_LABEL, "no site")
    a2 = d.Skipped("a", d.MISSING_RACK_LABEL, "no rack")
    b = d.Skipped("b", d.UNKNOWN_GPU_PRODUCT, "what GPU")
    new, resolved, reported = ctl.skip_changes({}, [a1, b])
    assert (new, resolved, reported) == ([a1, b], [], {"a": d.MISSING_SITE_LABEL, "b": d.UNKNOWN_GPU_PRODUCT})
    assert ctl.skip_changes(reported, [a1, b])[:2] == ([], [])  # the same again: nothing
    new, resolved, reported = ctl.skip_changes(reported, [a2])  # a: another reason; b: labelled now
    assert (new, resolved, reported) == ([a2], ["b"], {"a": d.MISSING_RACK_LABEL})


def _skipped_gauge() -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(metrics.DISCOVERY_SKIPPED_NODES)
    return {s.labels["reason"]: s.value for f in registry.collect() for s in f.samples}


def test_the_planner_logs_a_skip_once_and_the_gauge_counts_it(caplog: pytest.LogCaptureFixture) -> None:
    controller = ctl.discovery_controller(SETTINGS)
    cache = controller.new_cache()
    unplaced = with_rv(k8s_node("dgx-9", site=None), "1")
    caplog.set_level(logging.INFO, logger="stargate.discovery")
    for rv in ("1", "2", "3"):  # three recomputations (the Node's status changing meanwhile)
        controller.planner([with_rv(unplaced, rv)], NOW, controller.settings, cache)  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records if r.name == "stargate.discovery"]
    assert len(lines) == 1 and "skipping Node dgx-9 (MissingSiteLabel)" in lines[0], lines
    assert "kubectl label node dgx-9 stargate.dev/site=" in lines[0]
    gauge = _skipped_gauge()
    assert gauge[d.MISSING_SITE_LABEL] == 1 and set(gauge) == set(d.SKIP_REASONS)
    assert sum(gauge.values()) == 1
    # Labelled: it becomes a GPUNode, one line says so, and the gauge goes back to 0.
    placed = with_rv(k8s_node("dgx-9"), "4")
    plan = controller.planner([placed], NOW, controller.settings, cache)  # type: ignore[arg-type]
    assert [a["metadata"]["name"] for a in plan.applies] == ["dgx-9"]
    lines = [r.getMessage() for r in caplog.records if r.name == "stargate.discovery"]
    assert lines[1:] == ["Node dgx-9 is no longer skipped"]
    assert sum(_skipped_gauge().values()) == 0


def test_run_discover_nodes_registers_the_controller_for_the_engines_namespaces() -> None:
    off = RunSettings(engine=EngineSettings())
    assert [c.name for c in controllers(off)] == ["power"]
    labels = d.DiscoverySettings(site_label="example.com/site", rack_label="example.com/rack")
    on = RunSettings(engine=EngineSettings(namespaces=("site-a", "site-b")), discovery=labels)
    _, disc = controllers(on)
    assert disc.name == "discovery" and disc.field_manager == "stargate-discovery"
    assert not disc.per_namespace and disc.reconcile_kind == "discovery"
    assert [(r.group, r.plural, r.namespaced) for r in disc.resources] == [
        ("", "nodes", False), ("stargate.dev", "gpunodes", True)]
    assert disc.settings == d.DiscoverySettings("example.com/site", "example.com/rack",
                                                frozenset({"site-a", "site-b"}))
    # All namespaces: no restriction.
    assert ctl.discovery_controller(labels).settings.namespaces is None


async def test_through_the_engine_with_the_power_controller() -> None:
    """Both controllers in one engine: a Node's GPUNode is applied by discovery's field manager and
    then planned by the power controller; the Node's deletion deletes it by uid; the echoes of
    discovery's own writes write nothing more."""
    clocks = Clocks()
    node = k8s_node("dgx-1")
    mine = hand_written("by-hand")
    mine["metadata"]["namespace"] = SITE
    api = FakeApi([node, mine], plurals(ctl.NODES, *(power_controller().resources)))
    settings = EngineSettings(coalesce_delay=0.1, max_delay=1.0, write_concurrency=2)
    engine = await started(api, clocks, [power_controller(), ctl.discovery_controller(SETTINGS)], settings)
    try:
        await engine.run_due()
        # discovery's GPUNode (the power controller's PowerLimitSlice of the hand-written node aside)
        applies = [c for c in api.writes("apply") if c[2] == "stargate-discovery"]
        assert [(c[1], c[2]) for c in applies] == [("dgx-1", "stargate-discovery")]
        assert applies[0][3]["metadata"]["namespace"] == SITE
        await api.settle()
        clocks.advance(1)
        await engine.run_due()  # the power controller plans the new GPUNode (RackNotFound here)
        assert any(c[0] == "patch_status" and c[1] == "dgx-1" for c in api.calls)
        await api.settle()
        clocks.advance(1)
        await engine.run_due()
        discovered = [c for c in api.writes("apply") if c[2] == "stargate-discovery"]
        assert len(discovered) == 1 and api.writes("delete") == []  # steady
        uid = api.objects[(GPU_NODE.kind, SITE, "dgx-1")]["metadata"]["uid"]
        gone = api.objects.pop(("Node", "", "dgx-1"))  # the Node goes (someone else's delete)
        api._emit("DELETED", with_rv(gone, "99999"))
        await api.settle()
        clocks.advance(1)
        await engine.run_due()
        assert api.writes("delete")[-1] == ("delete", "dgx-1", uid)
        assert (GPU_NODE.kind, SITE, "dgx-1") not in api.objects
        assert (GPU_NODE.kind, SITE, "by-hand") in api.objects  # hand-written: never touched
        assert not [c for c in api.calls if c[0] in ("apply", "delete") and c[1] == "by-hand"]
    finally:
        await asyncio.wait_for(engine.stop(), 10)
