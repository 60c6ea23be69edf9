"""The enforcement path in the core: Rack.status.powerLimits, the GPUNode
condition PowerLimitApplied, and the confirmed counts of racks and sites."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given

from helpers.core_objects import NOW, NS, cluster, cond, feed_back, node, rack, run, st, ts
from helpers.properties import PROPS, sites, with_versions
from stargate_operator.core import PlanCache
from stargate_operator.core.counts import NODES_LIMIT_CONFIRMED, NODES_LIMIT_UNCONFIRMED, counts_from_objects


def report(enforced: int | None, *, age_s: int = 0) -> dict[str, Any]:
    """An agent's telemetry, `age_s` seconds old, with the enforced limit it read (if any)."""
    t: dict[str, Any] = {"powerWatts": 1000, "healthyGPUs": 4,
                         "observedAt": ts(NOW - timedelta(seconds=age_s))}
    if enforced is not None:
        t["enforcedLimitWatts"] = enforced
    return t


def site(*nodes: dict[str, Any], it: int = 100_000) -> list[dict[str, Any]]:
    return [cluster(it=it), rack("r"), rack("lost", cluster_ref="gone"), *nodes]


def test_rack_power_limits_are_its_nodes_limits_by_name() -> None:
    # Two nodes of 4 GPUs (100-500 W) share 2,400 W: 1,200 each, 300 W per GPU.
    objs = site(node("b", "r", count=4), node("a", "r", count=4), node("x", "lost", count=4), it=2400)
    plan = run(objs)
    limits = st(plan, "Rack", "r")["powerLimits"]
    assert limits == {"a": 300, "b": 300}
    assert list(limits) == ["a", "b"]  # sorted by name, whatever the input's order
    assert all(st(plan, "GPUNode", n)["powerLimitWatts"] == w for n, w in limits.items())
    # A rack without a cluster lists its nodes with the limit their own status carries.
    assert st(plan, "Rack", "lost")["powerLimits"] == {"x": st(plan, "GPUNode", "x")["powerLimitWatts"]}


def test_power_limit_applied_before_any_report_and_after() -> None:
    objs = site(
        node("silent", "r"),                                   # no telemetry at all
        node("old-agent", "r", telemetry=report(None)),         # telemetry without the figure
        node("ok", "r", telemetry=report(500)),                 # full demand: 500 W per GPU
        node("off", "r", telemetry=report(700)),                # the GPUs run at another limit
        node("stale", "r", telemetry=report(500, age_s=600)),   # the report is too old to prove it
        node("orphan", "nowhere", telemetry=report(500)),
        node("unpowered", "lost", telemetry=report(100)),
    )
    plan = run(objs)

    def applied(name: str) -> tuple[str, str]:
        c = cond(st(plan, "GPUNode", name), "PowerLimitApplied")
        return c["status"], c["reason"]

    assert applied("silent") == ("Unknown", "NoReport")
    assert applied("old-agent") == ("Unknown", "NoReport")
    assert applied("ok") == ("True", "Enforced")
    assert applied("off") == ("False", "NotEnforced")
    assert "700 W" in cond(st(plan, "GPUNode", "off"), "PowerLimitApplied")["message"]
    assert "500 W" in cond(st(plan, "GPUNode", "off"), "PowerLimitApplied")["message"]
    assert applied("stale") == ("Unknown", "TelemetryStale")
    assert applied("orphan") == ("Unknown", "RackNotFound")
    assert applied("unpowered") == ("Unknown", "ClusterNotFound")
    # The convention: observedGeneration and a transition time, like every other condition.
    c = cond(st(plan, "GPUNode", "ok"), "PowerLimitApplied")
    assert c["observedGeneration"] == 1 and c["lastTransitionTime"]

    # Counts: confirmed and unconfirmed, rack and site; the statuses carry the confirmed ones.
    rc = plan.counts["Rack", NS, "r"]
    assert (rc[NODES_LIMIT_CONFIRMED], rc[NODES_LIMIT_UNCONFIRMED]) == (1, 1)
    sc = plan.counts["StargateCluster", NS, "site"]
    assert (sc[NODES_LIMIT_CONFIRMED], sc[NODES_LIMIT_UNCONFIRMED]) == (1, 1)
    assert st(plan, "Rack", "r")["power"]["limitsConfirmed"] == 1
    assert st(plan, "Rack", "lost")["power"]["limitsConfirmed"] == 0
    assert st(plan, "StargateCluster", "site")["power"]["limitsConfirmed"] == 1
    # Read back from what was written, the counts are the same (the metrics' other source).
    written = feed_back(objs, plan)
    back = counts_from_objects(written, NOW.timestamp())
    assert back["Rack", NS, "r"][NODES_LIMIT_CONFIRMED] == 1
    assert back["Rack", NS, "r"][NODES_LIMIT_UNCONFIRMED] == 1
    assert back["StargateCluster", NS, "site"][NODES_LIMIT_UNCONFIRMED] == 1


def test_a_new_limit_is_not_applied_until_the_agent_reports_it() -> None:
    objs = site(node("n", "r", count=4, telemetry=report(500)), it=2000)  # full demand: 500 W
    first = run(objs)
    assert cond(st(first, "GPUNode", "n"), "PowerLimitApplied")["status"] == "True"
    # A curtailment: the site has 1,200 W, 300 W per GPU; the agent still reports 500.
    curtailed = feed_back([cluster(it=1200), *objs[1:]], first)
    second = run(curtailed)
    assert st(second, "Rack", "r")["powerLimits"] == {"n": 300}
    c = cond(st(second, "GPUNode", "n"), "PowerLimitApplied")
    assert (c["status"], c["reason"]) == ("False", "NotEnforced")
    assert st(second, "Rack", "r")["power"]["limitsConfirmed"] == 0
    # The agent applies it and reports: confirmed again, a new transition.
    reported = feed_back(curtailed, second)
    reported[-1] = {**reported[-1], "status": {**reported[-1]["status"], "telemetry": report(300)}}
    third = run(reported)
    c = cond(st(third, "GPUNode", "n"), "PowerLimitApplied")
    assert (c["status"], c["reason"]) == ("True", "Enforced")
    assert st(third, "StargateCluster", "site")["power"]["limitsConfirmed"] == 1


def test_a_cached_rack_keeps_its_power_limits() -> None:
    """An unchanged rack is reused from the cache with its nodes' statuses: its powerLimits must be
    the same as computed afresh (the nodes' records are reused without being allocated again)."""
    objs = with_versions(site(node("a", "r", count=4, telemetry=report(300)), node("b", "r", count=4),
                           it=2400), "1")
    cache = PlanCache()
    first = run(objs, cache=cache)
    written = with_versions(feed_back(objs, first), "2")
    for _ in range(2):
        again = run(written, cache=cache)
        assert again.statuses == run(written).statuses
        assert st(again, "Rack", "r")["powerLimits"] == {"a": 300, "b": 300}
        assert st(again, "Rack", "r")["power"]["limitsConfirmed"] == 1


@PROPS
@given(sites())
def test_every_rack_lists_exactly_its_nodes_with_their_limits(objs: list[dict[str, Any]]) -> None:
    cache = PlanCache()
    objs = with_versions(objs, "1")
    for objects in (objs, with_versions(feed_back(objs, run(objs)), "2")):
        plan = run(objects, cache=cache)
        nodes = {(o["metadata"]["name"], o["spec"]["rackRef"]) for o in objects if o["kind"] == "GPUNode"}
        for key, status in plan.statuses.items():
            if key[0] != "Rack":
                continue
            members = {n for n, r in nodes if r == key[2]}
            assert set(status["powerLimits"]) == members
            for name, watts in status["powerLimits"].items():
                assert watts == plan.statuses["GPUNode", key[1], name]["powerLimitWatts"]
            confirmed = sum(
                cond(plan.statuses["GPUNode", key[1], n], "PowerLimitApplied")["status"] == "True"
                for n in members)
            assert status["power"]["limitsConfirmed"] == confirmed
