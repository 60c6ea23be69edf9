"""Node discovery's core (core/discovery.py): Nodes labelled by GPU Feature Discovery in, the
GPUNodes to apply and delete and the Nodes skipped out; and how the planning core reads the fields
discovery owns (a cordoned Node is maintenance, a NotReady one has no healthy GPU)."""

from __future__ import annotations

from typing import Any

import pytest

from helpers.core_objects import NOW, cluster, cond, rack, run, st, ts
from helpers.discovery import H100_MIB, SITE, as_existing, hand_written, k8s_node
from stargate_operator.api import GPUNode
from stargate_operator.core import discovery as d
from stargate_operator.core.products import BY_MODEL
from stargate_operator.kinds import API_VERSION

H100 = BY_MODEL["H100-SXM"]
GB200 = BY_MODEL["GB200"]




def only_apply(plan: d.DiscoveryPlan) -> dict[str, Any]:
    assert len(plan.applies) == 1, plan.applies
    return plan.applies[0]






# ------------------------------------------------------------------------------- the desired object
def test_a_gfd_labelled_node_becomes_a_gpunode_named_after_it_in_its_site() -> None:
    applied = only_apply(d.plan_discovery([k8s_node("dgx-a1-07")], []))
    assert applied == {
        "apiVersion": API_VERSION,
        "kind": "GPUNode",
        "metadata": {
            "name": "dgx-a1-07",
            "namespace": SITE,
            "labels": {"app.kubernetes.io/managed-by": "stargate-discovery"},
            "annotations": {"stargate.dev/power-range-source": "product-table"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": "dgx-a1-07", "uid": "uid-dgx-a1-07"}
            ],
        },
        "spec": {
            "rackRef": "r1",
            "nodeName": "dgx-a1-07",
            "gpu": {
                "model": "H100-SXM",
                "count": 8,
                "memoryBytes": H100_MIB * 1024 * 1024,
                "minPowerWatts": H100.min_power_w,
                "maxPowerWatts": H100.max_power_w,
            },
            "basePowerWatts": H100.base_power_w,
            "hostMemoryBytes": 2113407788 * 1024,
            "cordoned": False,
            "nodeReady": True,
        },
    }
    # What the API server's schema (generated from this model) accepts.
    GPUNode.model_validate(applied)


def test_the_user_fields_are_never_in_the_applied_object() -> None:
    """maintenance and requestedPowerWatts stay the user's: server-side apply only takes the fields
    an applied object names, so discovery must never name them, even when they are set."""
    first = only_apply(d.plan_discovery([k8s_node("n1")], []))
    existing = as_existing(first, maintenance=True)
    existing["spec"]["gpu"] = {**existing["spec"]["gpu"], "requestedPowerWatts": 450}
    # A rack change forces a new apply over the existing object.
    again = only_apply(d.plan_discovery([k8s_node("n1", rack_name="r2")], [existing]))
    assert again["spec"]["rackRef"] == "r2"
    assert "maintenance" not in again["spec"]
    assert "requestedPowerWatts" not in again["spec"]["gpu"]


def test_product_table_fills_what_gfd_does_not_say() -> None:
    """Without gpu.memory the table's HBM; without a readable capacity the table's host memory."""
    node = k8s_node("tray-1", product="NVIDIA-GB200", count="4", memory_mib=None, host_memory="lots")
    spec = only_apply(d.plan_discovery([node], []))["spec"]
    assert spec["gpu"]["model"] == "GB200"  # not B200: the most specific product wins
    assert spec["gpu"]["count"] == 4
    assert spec["gpu"]["memoryBytes"] == GB200.hbm_bytes
    assert spec["hostMemoryBytes"] == GB200.host_bytes
    assert spec["basePowerWatts"] == GB200.base_power_w


def test_the_agents_nvml_range_overrides_the_product_table() -> None:
    first = only_apply(d.plan_discovery([k8s_node("n1")], []))
    existing = as_existing(first)
    existing["status"] = {"telemetry": {"powerWatts": 5000, "minPowerWatts": 250, "maxPowerWatts": 650,
                                        "defaultPowerWatts": 650, "observedAt": ts(NOW)}}
    applied = only_apply(d.plan_discovery([k8s_node("n1")], [existing]))
    assert (applied["spec"]["gpu"]["minPowerWatts"], applied["spec"]["gpu"]["maxPowerWatts"]) == (250, 650)
    assert applied["metadata"]["annotations"] == {"stargate.dev/power-range-source": "nvml"}
    # Once applied, nothing more to do.
    settled = as_existing(applied)
    settled["status"] = existing["status"]
    assert d.plan_discovery([k8s_node("n1")], [settled]).applies == []


@pytest.mark.parametrize(
    "telemetry",
    [
        {"minPowerWatts": 700, "maxPowerWatts": 200},  # min above max
        {"minPowerWatts": 0, "maxPowerWatts": 700},
        {"minPowerWatts": 200},  # half a range
        {"minPowerWatts": "200", "maxPowerWatts": "700"},
        {"minPowerWatts": True, "maxPowerWatts": 700},
    ],
)
def test_a_nonsense_nvml_range_is_ignored(telemetry: dict[str, Any]) -> None:
    existing = as_existing(only_apply(d.plan_discovery([k8s_node("n1")], [])))
    existing["status"] = {"telemetry": telemetry}
    assert d.nvml_range(existing) is None
    plan = d.plan_discovery([k8s_node("n1")], [existing])
    assert plan.applies == []  # the table's range, already applied


def test_cordon_and_readiness_are_discoverys_own_fields() -> None:
    cordoned = only_apply(d.plan_discovery([k8s_node("n1", cordoned=True)], []))["spec"]
    assert cordoned["cordoned"] is True and cordoned["nodeReady"] is True
    for ready, expected in (("False", False), ("Unknown", False), ("True", True), (None, True)):
        spec = only_apply(d.plan_discovery([k8s_node("n1", ready=ready)], []))["spec"]
        assert spec["nodeReady"] is expected, ready


def test_a_node_without_uid_gets_no_owner_reference() -> None:
    node = k8s_node("n1")
    del node["metadata"]["uid"]
    assert "ownerReferences" not in only_apply(d.plan_discovery([node], []))["metadata"]


def test_label_keys_are_settings() -> None:
    node = k8s_node("n1", site=None, rack_name=None,
                    extra_labels={"example.com/site": "campus-b", "example.com/rack": "b-07"})
    settings = d.DiscoverySettings(site_label="example.com/site", rack_label="example.com/rack")
    applied = only_apply(d.plan_discovery([node], [], settings))
    assert applied["metadata"]["namespace"] == "campus-b" and applied["spec"]["rackRef"] == "b-07"
    # With the default keys the same Node has no place.
    assert d.plan_discovery([node], []).skipped[0].reason == d.MISSING_SITE_LABEL


# ------------------------------------------------------------------------------------ what changes
def test_a_steady_cluster_writes_nothing() -> None:
    nodes = [k8s_node(f"n{i}") for i in range(3)]
    existing = [as_existing(a) for a in d.plan_discovery(nodes, []).applies]
    plan = d.plan_discovery(nodes, existing)
    assert plan.applies == [] and plan.deletes == [] and plan.skipped == []
    assert plan.managed == 3


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"rack_name": "r9"}, ("rackRef",), "r9"),
        ({"count": "4"}, ("gpu", "count"), 4),
        ({"cordoned": True}, ("cordoned",), True),
        ({"ready": "False"}, ("nodeReady",), False),
        ({"product": "NVIDIA-H200", "memory_mib": "143771"}, ("gpu", "model"), "H200-SXM"),
    ],
)
def test_a_label_or_state_change_moves_the_spec(change: dict[str, Any], field: tuple[str, ...],
                                                value: object) -> None:
    existing = as_existing(only_apply(d.plan_discovery([k8s_node("n1")], [])))
    spec = only_apply(d.plan_discovery([k8s_node("n1", **change)], [existing]))["spec"]
    got: Any = spec
    for part in field:
        got = got[part]
    assert got == value


def test_a_false_is_not_a_zero() -> None:
    """covers() tells booleans from integers: cordoned false is not 0 and true is not 1."""
    assert not d.covers({"cordoned": 0}, {"cordoned": False})
    assert not d.covers({"count": True}, {"count": 1})
    assert d.covers({"a": {"b": 1, "c": 2}, "x": [1, {"u": 1, "v": 2}]}, {"a": {"b": 1}, "x": [{"u": 1}]})
    assert not d.covers({"x": []}, {"x": [{"u": 1}]})


def test_a_node_moved_to_another_site_is_applied_there_and_deleted_here() -> None:
    old = as_existing(only_apply(d.plan_discovery([k8s_node("n1")], [])))
    plan = d.plan_discovery([k8s_node("n1", site="site-b")], [old])
    assert only_apply(plan)["metadata"]["namespace"] == "site-b"
    assert plan.deletes == [("GPUNode", SITE, "n1")]


# --------------------------------------------------------------------------------------- deletions
def test_a_gpunode_whose_node_is_gone_is_deleted_and_hand_written_ones_are_not() -> None:
    gone = as_existing(only_apply(d.plan_discovery([k8s_node("gone")], [])))
    kept = as_existing(only_apply(d.plan_discovery([k8s_node("kept")], [])))
    mine = hand_written("by-hand")
    plan = d.plan_discovery([k8s_node("kept")], [gone, kept, mine])
    assert plan.deletes == [("GPUNode", SITE, "gone")]
    assert plan.applies == []


def test_a_node_taken_out_of_discovery_loses_its_gpunode() -> None:
    """Removing the site or rack label, or GFD's labels, is taking the Node out: its GPUNode goes."""
    existing = as_existing(only_apply(d.plan_discovery([k8s_node("n1")], [])))
    for node in (k8s_node("n1", site=None), k8s_node("n1", rack_name=None),
                 k8s_node("n1", site="Not_A_Namespace"), k8s_node("n1", product=None, count=None)):
        assert d.plan_discovery([node], [existing]).deletes == [("GPUNode", SITE, "n1")], node


def test_unreadable_gfd_labels_keep_the_gpunode_as_it_was() -> None:
    """A labelling glitch (or hardware the table does not know) must not drop a node's budget."""
    existing = as_existing(only_apply(d.plan_discovery([k8s_node("n1")], [])))
    for node in (k8s_node("n1", product="NVIDIA-A100-SXM4-80GB"), k8s_node("n1", count="eight"),
                 k8s_node("n1", count=None), k8s_node("n1", memory_mib="lots")):
        plan = d.plan_discovery([node], [existing])
        assert plan.deletes == [] and plan.applies == [], node
        assert len(plan.skipped) == 1 and plan.managed == 1


def test_a_hand_written_gpunode_of_the_same_name_is_never_applied() -> None:
    mine = hand_written("n1")
    plan = d.plan_discovery([k8s_node("n1")], [mine])
    assert plan.applies == [] and plan.deletes == []
    (skip,) = plan.skipped
    assert skip.reason == d.HAND_WRITTEN_GPU_NODE and f"{SITE}/n1" in skip.message
    # Taking a discovered GPUNode over by hand: remove the label, and discovery lets go of it.
    taken = as_existing(only_apply(d.plan_discovery([k8s_node("n2")], [])))
    taken["metadata"]["labels"] = {}
    assert d.plan_discovery([], [taken]).deletes == []


# ----------------------------------------------------------------------------------------- skipped
@pytest.mark.parametrize(
    ("node", "reason", "says"),
    [
        (k8s_node("n1", site=None), d.MISSING_SITE_LABEL, "kubectl label node n1 stargate.dev/site="),
        (k8s_node("n1", rack_name=None), d.MISSING_RACK_LABEL, "kubectl label node n1 stargate.dev/rack="),
        (k8s_node("n1", site="Site_A"), d.INVALID_SITE_LABEL, "'Site_A' is not a namespace name"),
        (k8s_node("n1", rack_name="-r"), d.INVALID_RACK_LABEL, "is not a Rack name"),
        (k8s_node("n1", count=None), d.INCOMPLETE_GPU_LABELS, "no label nvidia.com/gpu.count"),
        (k8s_node("n1", product=None), d.INCOMPLETE_GPU_LABELS, "no label nvidia.com/gpu.product"),
        (k8s_node("n1", count="0"), d.INVALID_GPU_LABELS, "from 1 to 16"),
        (k8s_node("n1", count="17"), d.INVALID_GPU_LABELS, "from 1 to 16"),
        (k8s_node("n1", count="-8"), d.INVALID_GPU_LABELS, "from 1 to 16"),
        (k8s_node("n1", memory_mib="0"), d.INVALID_GPU_LABELS, "not a number of MiB"),
        (k8s_node("n1", product="NVIDIA-A100-SXM4-80GB"), d.UNKNOWN_GPU_PRODUCT, "'NVIDIA-A100-SXM4-80GB'"),
    ],
)
def test_skipped_nodes_say_why(node: dict[str, Any], reason: str, says: str) -> None:
    plan = d.plan_discovery([node], [])
    assert plan.applies == []
    (skip,) = plan.skipped
    assert (skip.node, skip.reason) == ("n1", reason)
    assert says in skip.message, skip.message
    counts = plan.skipped_by_reason()
    assert counts[reason] == 1 and sum(counts.values()) == 1
    assert set(counts) == set(d.SKIP_REASONS)


def test_nodes_without_gpus_are_not_skipped_they_are_not_candidates() -> None:
    cpu = k8s_node("cpu-1", product=None, count=None, memory_mib=None)
    plan = d.plan_discovery([cpu], [])
    assert plan.applies == [] and plan.skipped == [] and plan.deletes == []


def test_the_plan_is_ordered_whatever_the_input_order() -> None:
    nodes = [k8s_node(n, site=s) for n, s in (("c", "b-site"), ("a", "b-site"), ("b", "a-site"))]
    keys = [(a["metadata"]["namespace"], a["metadata"]["name"]) for a in d.plan_discovery(nodes, []).applies]
    assert keys == [("a-site", "b"), ("b-site", "a"), ("b-site", "c")]
    assert d.plan_discovery(list(reversed(nodes)), []).applies == d.plan_discovery(nodes, []).applies


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("2113407788Ki", 2113407788 * 1024), ("2Ti", 2 * 2**40), ("512G", 512 * 10**9), ("1000", 1000),
     ("1.5Gi", 3 * 2**29), (4096, 4096), ("", None), ("12Q", None), ("-1Ki", None), (None, None), (-5, None)],
)
def test_parse_quantity(quantity: object, value: int | None) -> None:
    assert d.parse_quantity(quantity) == value


# ---------------------------------------------------------------- how the planning core reads them
def _discovered_site(**node_kw: Any) -> list[dict[str, Any]]:
    applied = only_apply(d.plan_discovery([k8s_node("n1", **node_kw)], []))
    gpunode = as_existing(applied)
    return [cluster(it=1_000_000), rack("r1"), gpunode]


def test_a_cordoned_node_counts_as_maintenance() -> None:
    status = st(run(_discovered_site(cordoned=True)), "GPUNode", "n1")
    floor = H100.base_power_w + 8 * H100.min_power_w
    assert status["healthyGPUs"] == 0
    assert status["demandWatts"] == status["floorWatts"] == floor
    assert cond(status, "Ready")["reason"] == "Maintenance"
    # Uncordoned, the user's spec.maintenance (false here) decides again.
    status = st(run(_discovered_site()), "GPUNode", "n1")
    assert status["healthyGPUs"] == 8 and status["demandWatts"] > floor


def test_a_user_maintenance_holds_on_an_uncordoned_node() -> None:
    objs = _discovered_site()
    objs[2]["spec"]["maintenance"] = True
    assert objs[2]["spec"]["cordoned"] is False
    status = st(run(objs), "GPUNode", "n1")
    assert status["healthyGPUs"] == 0 and cond(status, "Ready")["reason"] == "Maintenance"


def test_a_node_that_is_not_ready_has_no_healthy_gpu_but_keeps_its_power() -> None:
    ready = st(run(_discovered_site()), "GPUNode", "n1")
    status = st(run(_discovered_site(ready="False")), "GPUNode", "n1")
    assert status["healthyGPUs"] == 0
    assert cond(status, "Ready")["status"] == "False" and cond(status, "Ready")["reason"] == "NodeNotReady"
    # Not maintenance: its jobs may still run, so its demand and allocation stay.
    assert status["demandWatts"] == ready["demandWatts"]
    assert status["allocatedWatts"] == ready["allocatedWatts"]
    # Fresh telemetry saying all 8 are healthy does not override the Node's NotReady.
    objs = _discovered_site(ready="False")
    objs[2]["status"] = {"telemetry": {"healthyGPUs": 8, "powerWatts": 9000, "observedAt": ts(NOW)}}
    assert st(run(objs), "GPUNode", "n1")["healthyGPUs"] == 0
    site = st(run(objs), "StargateCluster", "site")
    assert site["gpus"] == {"total": 8, "healthy": 0}


def test_a_shard_keeps_only_its_own_sites() -> None:
    """With watched namespaces (a shard release), Nodes of other sites are another release's: not
    applied, not reported as skipped; their GPUNodes are not deleted."""
    nodes = [k8s_node("a1", site="site-a"), k8s_node("b1", site="site-b")]
    other = as_existing(only_apply(d.plan_discovery([k8s_node("b2", site="site-b")], [])))
    shard = d.DiscoverySettings(namespaces=frozenset({"site-a"}))
    plan = d.plan_discovery(nodes, [other], shard)
    assert [a["metadata"]["name"] for a in plan.applies] == ["a1"]
    assert plan.skipped == [] and plan.deletes == []
    # The cluster-wide view would delete b2 (its Node is gone) and apply b1.
    everything = d.plan_discovery(nodes, [other])
    assert everything.deletes == [("GPUNode", "site-b", "b2")] and len(everything.applies) == 2


def test_counts_from_written_objects_see_a_cordoned_node_in_maintenance() -> None:
    """The metrics' counts read maintenance as the core does (one rule: core.objects.in_maintenance)."""
    from stargate_operator.core.counts import NODES_MAINTENANCE, counts_from_objects

    objs = _discovered_site(cordoned=True)
    plan = run(objs)
    planned = plan.counts[("Rack", SITE, "r1")][NODES_MAINTENANCE]
    written = [{**o, "status": plan.statuses[(o["kind"], SITE, o["metadata"]["name"])]} for o in objs]
    counted = counts_from_objects(written, NOW.timestamp())
    assert planned == counted[("Rack", SITE, "r1")][NODES_MAINTENANCE] == 1
