"""Plan.counts (core/counts.py): what the core decided about each rack's and site's nodes, and the
same figures read back from the statuses it wrote (for metrics sources that hold no Plan)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given

from helpers.core_objects import NOW, NS, cluster, feed_back, node, rack, run, ts
from helpers.properties import PROPS, sites, with_versions
from stargate_operator.core import PlanCache
from stargate_operator.core.counts import (
    CURTAILMENT_PERCENT,
    NODES_LIMIT_CONFIRMED,
    NODES_LIMIT_UNCONFIRMED,
    NODES_MAINTENANCE,
    NODES_POWER_CAPPED,
    NODES_TELEMETRY_STALE,
    RACKS_OVER_BUDGET,
    RACKS_POWER_CAPPED,
    counts_from_objects,
)

FRESH = {"powerWatts": 900, "healthyGPUs": 1, "observedAt": ts(NOW - timedelta(seconds=10))}
STALE = {"powerWatts": 900, "healthyGPUs": 1, "observedAt": ts(NOW - timedelta(seconds=600))}


def troubled_site(until: str | None = None) -> list[dict[str, Any]]:
    """Rack a: one node in maintenance, one stale, one fresh drawing more than the rack's budget;
    rack b: one node held below its demand by the curtailed site budget; rack c: no site."""
    return [
        cluster(it=2_000, curtail=50, until=until),
        rack("a", max_w=700, priority=1000),
        node("a1", "a", maintenance=True),
        node("a2", "a", telemetry=STALE),
        node("a3", "a", telemetry=FRESH),
        rack("b", priority=0),
        node("b1", "b"),
        rack("c", cluster_ref="gone"),
        node("c1", "c", maintenance=True, telemetry=STALE),
        node("orphan", "missing", maintenance=True),
    ]


def test_rack_and_site_counts_are_what_the_conditions_say() -> None:
    plan = run(troubled_site())
    a = plan.counts["Rack", NS, "a"]
    # a3 and a2 are held below demand (rack rated 700 W, three 500 W demands); a1 is at its floor
    # (no node reports an enforced limit: none confirmed, none unconfirmed)
    assert a == {NODES_MAINTENANCE: 1, NODES_TELEMETRY_STALE: 1, NODES_POWER_CAPPED: 2,
                 NODES_LIMIT_CONFIRMED: 0, NODES_LIMIT_UNCONFIRMED: 0}
    # b gets what a leaves of the curtailed 1,000 W budget: b1 is capped too
    assert plan.counts["Rack", NS, "b"] == {NODES_MAINTENANCE: 0, NODES_TELEMETRY_STALE: 0,
                                            NODES_POWER_CAPPED: 1, NODES_LIMIT_CONFIRMED: 0,
                                            NODES_LIMIT_UNCONFIRMED: 0}
    # an unpowered rack counts its nodes' maintenance and staleness, but nobody is capped there
    assert plan.counts["Rack", NS, "c"] == {NODES_MAINTENANCE: 1, NODES_TELEMETRY_STALE: 1,
                                            NODES_POWER_CAPPED: 0, NODES_LIMIT_CONFIRMED: 0,
                                            NODES_LIMIT_UNCONFIRMED: 0}
    site = plan.counts["StargateCluster", NS, "site"]
    # rack a's demand is capped at its rating, which its budget covers: its nodes are capped, the
    # rack is not; it measures 900 W against 700 W: over budget. Rack c is no site's.
    assert site == {NODES_MAINTENANCE: 1, NODES_TELEMETRY_STALE: 1, NODES_POWER_CAPPED: 3,
                    NODES_LIMIT_CONFIRMED: 0, NODES_LIMIT_UNCONFIRMED: 0, RACKS_POWER_CAPPED: 1,
                    RACKS_OVER_BUDGET: 1, CURTAILMENT_PERCENT: 50}
    # the counts agree with the conditions written: the same predicates decide both
    capped = [k[2] for k, s in plan.statuses.items() if k[0] == "GPUNode"
              and any(c["type"] == "PowerCapped" and c["status"] == "True" for c in s["conditions"])]
    assert sorted(capped) == ["a2", "a3", "b1"]
    # no entry for a node's missing rack or a rack's missing site
    assert {k for k in plan.counts} == {("Rack", NS, "a"), ("Rack", NS, "b"), ("Rack", NS, "c"),
                                        ("StargateCluster", NS, "site")}


def test_curtailment_in_effect_is_counted_until_it_ends() -> None:
    until = NOW + timedelta(hours=1)
    objs = troubled_site(until=ts(until))
    assert run(objs).counts["StargateCluster", NS, "site"][CURTAILMENT_PERCENT] == 50
    assert run(objs, now=until).counts["StargateCluster", NS, "site"][CURTAILMENT_PERCENT] == 0
    assert counts_from_objects(objs, until.timestamp() - 1)["StargateCluster", NS, "site"][
        CURTAILMENT_PERCENT] == 50
    assert counts_from_objects(objs, until.timestamp())["StargateCluster", NS, "site"][
        CURTAILMENT_PERCENT] == 0


def test_counts_survive_the_cache_reusing_a_rack() -> None:
    cache = PlanCache()
    objs = with_versions(troubled_site(), "1")
    first = run(objs, cache=cache)
    written = with_versions(feed_back(objs, first), "2")
    run(written, cache=cache)
    again = run(written, cache=cache)  # every rack reused as it was, node statuses included
    assert again.counts == first.counts
    assert again.counts["Rack", NS, "a"][NODES_POWER_CAPPED] == 2


def test_counts_from_objects_tolerate_partial_and_malformed_objects() -> None:
    objs: list[Any] = [
        {"kind": "StargateCluster", "metadata": {"namespace": "x", "name": "s"}},
        {"kind": "Rack", "metadata": {"namespace": "x", "name": "r"}, "spec": {"clusterRef": "s"},
         "status": {"conditions": "bad"}},
        {"kind": "Rack", "metadata": {"name": "nons"}, "spec": None, "status": []},
        {"kind": "GPUNode", "metadata": {"namespace": "x", "name": "n"}, "spec": {"rackRef": "r",
         "maintenance": True}, "status": {"conditions": [{"type": "PowerCapped", "status": "True"}, 7]}},
        {"kind": "GPUNode", "metadata": {"namespace": "x", "name": "m"}, "spec": {"rackRef": "r",
         "maintenance": "yes"}},
        {"kind": "Secret", "metadata": {"namespace": "x", "name": "s"}},
    ]
    counts = counts_from_objects(objs, NOW.timestamp())
    assert counts["Rack", "x", "r"] == {NODES_MAINTENANCE: 1, NODES_TELEMETRY_STALE: 0, NODES_POWER_CAPPED: 1,
                                        NODES_LIMIT_CONFIRMED: 0, NODES_LIMIT_UNCONFIRMED: 0}
    assert counts["Rack", "", "nons"][NODES_MAINTENANCE] == 0
    assert counts["StargateCluster", "x", "s"] == {
        NODES_MAINTENANCE: 1, NODES_TELEMETRY_STALE: 0, NODES_POWER_CAPPED: 1, NODES_LIMIT_CONFIRMED: 0,
        NODES_LIMIT_UNCONFIRMED: 0,
        RACKS_POWER_CAPPED: 0,
        RACKS_OVER_BUDGET: 0, CURTAILMENT_PERCENT: 0}


@PROPS
@given(sites())
def test_the_two_readings_agree(objs: list[dict[str, Any]]) -> None:
    """The counts the core decides while planning equal those read back from what it wrote."""
    plan = run(objs)
    written = feed_back(objs, plan)
    assert counts_from_objects(written, NOW.timestamp()) == plan.counts
    # and the cache changes nothing about them
    cache = PlanCache()
    versioned = with_versions(written, "2")
    run(versioned, cache=cache)
    assert run(versioned, cache=cache).counts == run(versioned).counts
