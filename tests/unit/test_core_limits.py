"""The enforcement path in the core: the PowerLimitSlices that carry every node's limit, the GPUNode
condition PowerLimitApplied, and the confirmed counts of racks and sites."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given

from helpers.core_objects import NOW, NS, cluster, cond, feed_back, node, rack, run, slice_limits, st, ts
from helpers.properties import PROPS, sites, with_versions
from stargate_operator import kinds
from stargate_operator.core import Plan, PlanCache
from stargate_operator.core.counts import NODES_LIMIT_CONFIRMED, NODES_LIMIT_UNCONFIRMED, counts_from_objects
from stargate_operator.core.outage import SourceState, source_record
from stargate_operator.core.sliceplan import CampusCache, CampusSettings, plan_campus


def campus(objects: list[dict[str, Any]], cache: CampusCache | None = None) -> Plan:
    return plan_campus(objects, NOW, CampusSettings(), cache)


def report(enforced: int | None, *, age_s: int = 0) -> dict[str, Any]:
    """An agent's telemetry, `age_s` seconds old, with the enforced limit it read (if any)."""
    t: dict[str, Any] = {"powerWatts": 1000, "healthyGPUs": 4,
                         "observedAt": ts(NOW - timedelta(seconds=age_s))}
    if enforced is not None:
        t["enforcedLimitWatts"] = enforced
    return t


def site(*nodes: dict[str, Any], it: int = 100_000) -> list[dict[str, Any]]:
    return [cluster(it=it), rack("r"), rack("lost", cluster_ref="gone"), *nodes]


def test_slices_carry_every_nodes_limit_by_name() -> None:
    # Two nodes of 4 GPUs (100-500 W) share 2,400 W: 1,200 each, 300 W per GPU.
    objs = site(node("b", "r", count=4), node("a", "r", count=4), node("x", "lost", count=4), it=2400)
    plan = campus(objs)
    limits = slice_limits(plan)
    # A rack without a cluster has its nodes listed with the limit their own status carries.
    assert limits == {"a": 300, "b": 300, "x": st(plan, "GPUNode", "x")["powerLimitWatts"]}
    (body,) = plan.applies
    assert list(body["spec"]["limits"]) == ["a", "b", "x"]  # sorted by name, whatever the input's order
    assert body["spec"]["revision"] == 1 and body["spec"]["safeLimits"] == {}
    assert all(st(plan, "GPUNode", n)["powerLimitWatts"] == w for n, w in limits.items())
    assert all(st(plan, "GPUNode", n)["powerLimitSlice"] == body["metadata"]["name"] for n in limits)
    # the racks no longer carry limit maps
    assert "powerLimits" not in st(plan, "Rack", "r") and "safeLimits" not in st(plan, "Rack", "r")


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
    assert slice_limits(campus(curtailed)) == {"n": 300}
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


def test_a_cached_rack_keeps_its_nodes_in_their_slice() -> None:
    """An unchanged rack is reused from the cache with its nodes' statuses: its slice must be the
    same as computed afresh (the nodes' records are reused without being allocated again)."""
    objs = with_versions(site(node("a", "r", count=4, telemetry=report(300)), node("b", "r", count=4),
                              it=2400), "1")
    cache = CampusCache()
    first = campus(objs, cache=cache)
    written = with_versions(feed_back(objs, first), "2")
    for _ in range(2):
        again = campus(written, cache=cache)
        assert again.statuses == campus(written).statuses
        assert slice_limits(again) == {"a": 300, "b": 300}
        assert st(again, "Rack", "r")["power"]["limitsConfirmed"] == 1
    assert PlanCache  # the core's own cache, inside CampusCache


@PROPS
@given(sites())
def test_every_node_is_in_one_slice_with_its_limit_and_its_rack(objs: list[dict[str, Any]]) -> None:
    cache = CampusCache()
    objs = with_versions(objs, "1")
    for objects in (objs, with_versions(feed_back(objs, campus(objs)), "2")):
        plan = campus(objects, cache=cache)
        nodes = {(o["metadata"]["name"], o["spec"]["rackRef"]) for o in objects if o["kind"] == "GPUNode"}
        limits = slice_limits(plan)
        assert set(limits) == {n for n, _ in nodes}
        slice_of = {n: plan.statuses["GPUNode", NS, n]["powerLimitSlice"] for n, _ in nodes}
        for name, rack_name in nodes:
            assert limits[name] == plan.statuses["GPUNode", NS, name]["powerLimitWatts"]
            # racks are never split
            assert all(slice_of[o] == slice_of[name] for o, r in nodes if r == rack_name)
        for key, status in plan.statuses.items():
            if key[0] != "Rack":
                continue
            members = {n for n, r in nodes if r == key[2]}
            confirmed = sum(
                cond(plan.statuses["GPUNode", key[1], n], "PowerLimitApplied")["status"] == "True"
                for n in members)
            assert status["power"]["limitsConfirmed"] == confirmed


def test_power_limit_applied_false_only_after_the_grace_period() -> None:
    """Confirmation by exception: right after a change a node that has not applied its new limit
    keeps the condition it had; once the grace period is over without a confirmation, False."""
    objs = site(node("n", "r", count=4, telemetry=report(500)), it=2000)
    cache = CampusCache()
    first = plan_campus(objs, NOW, CampusSettings(), cache)
    assert cond(st(first, "GPUNode", "n"), "PowerLimitApplied")["status"] == "True"
    written = feed_back(objs, first)
    slice_ = next(b for b in first.applies if b["kind"] == "PowerLimitSlice")
    written.append({**slice_, "metadata": {**slice_["metadata"], "uid": "u"}})
    curtailed = [cluster(it=1200), *written[1:]]
    second = plan_campus(curtailed, NOW + timedelta(seconds=1), CampusSettings(), cache)
    assert slice_limits(second) == {"n": 300}
    c = cond(st(second, "GPUNode", "n"), "PowerLimitApplied")
    assert c["status"] == "True"  # still inside the grace period: not an exception yet
    assert second.next_change_at == NOW + timedelta(seconds=61)
    held = next(b for b in second.applies if b["kind"] == "PowerLimitSlice")
    now_held = [*curtailed[:-1], {**held, "metadata": {**held["metadata"], "uid": "u"}}]
    within = plan_campus(now_held, NOW + timedelta(seconds=30), CampusSettings(), cache)
    assert cond(st(within, "GPUNode", "n"), "PowerLimitApplied")["status"] == "True"
    later = plan_campus(now_held, NOW + timedelta(seconds=61), CampusSettings(), cache)
    c = cond(st(later, "GPUNode", "n"), "PowerLimitApplied")
    assert (c["status"], c["reason"]) == ("False", "NotEnforced")


def test_a_slice_left_without_racks_is_emptied_not_deleted() -> None:
    objs = site(node("a", "r", count=4), it=2400)
    first = campus(objs)
    body = next(b for b in first.applies if b["kind"] == "PowerLimitSlice")
    gone = [*objs[:-1], {**body, "metadata": {**body["metadata"], "uid": "u"}}]  # the node is gone
    second = campus(gone)
    (emptied,) = [b for b in second.applies if b["kind"] == "PowerLimitSlice"]
    assert emptied["spec"] == {"limits": {}, "safeLimits": {}, "revision": 2}
    assert not second.deletes
    assert st(second, "PowerLimitSlice", body["metadata"]["name"]) == {
        "observedGeneration": 1, "nodes": 0, "confirmed": 0, "unconfirmed": 0}


def test_a_telemetry_source_record_among_the_objects_is_no_node_or_namespace() -> None:
    # The telemetry overlay puts its source's state (no metadata: not an API object) among the
    # objects of every unit with a site; the slices and the core's outage rule read it side by side.
    objs = site(node("a", "r", count=4), it=2400)
    down = source_record(SourceState("Prometheus", False, "2026-01-01T12:00:05Z", "connection refused"))
    plan = campus([*objs, down])
    limit = st(plan, "GPUNode", "a")["powerLimitWatts"]
    assert slice_limits(plan) == slice_limits(campus(objs)) == {"a": limit}
    assert {key[1] for key in plan.statuses} == {NS}
    assert cond(st(plan, "StargateCluster", "site"), "TelemetryAvailable")["status"] == "False"


def test_an_operator_started_mid_change_raises_only_once_the_lowered_nodes_follow() -> None:
    """Lower before raise across a restart: the lowerings in flight are recorded in the operator's
    process only, so one started between a change's two phases (after a crash, a failover) reads
    them from the agents' reports (a node enforcing more than its slice holds) and holds the raises
    beneath the constraint until those nodes confirm."""
    def objs(first: str, a_reports: int, held: dict[str, int] | None) -> list[dict[str, Any]]:
        # 1,200 W for four 1-GPU nodes (100..500 W): the rack first in priority gets 500 W a node.
        out = [cluster(it=1200), rack("a", priority=900 if first == "a" else 100),
               rack("b", priority=900 if first == "b" else 100)]
        out += [node(f"a{i}", "a", telemetry=report(a_reports if i == 0 else 100)) for i in range(2)]
        out += [node(f"b{i}", "b", telemetry=report(100)) for i in range(2)]
        if held is not None:
            out.append({"apiVersion": kinds.API_VERSION, "kind": kinds.POWER_LIMIT_SLICE.kind,
                        "metadata": {"name": slice_name, "namespace": NS, "uid": "u", "generation": 2},
                        "spec": {"limits": held, "safeLimits": {}, "revision": 2}})
        return out

    before = campus(objs("a", 500, None))
    slice_name = next(b["metadata"]["name"] for b in before.applies if b["kind"] == "PowerLimitSlice")
    assert slice_limits(before) == {"a0": 500, "a1": 500, "b0": 100, "b1": 100}
    # The first operator wrote the lowering (b first now) and died before the raises: a0's GPUs still
    # enforce 500 W. A new operator (an empty cache) keeps b's raises back.
    lowered = {"a0": 100, "a1": 100, "b0": 100, "b1": 100}
    restarted = campus(objs("b", 500, lowered))
    assert slice_limits(restarted) == lowered
    assert restarted.next_change_at is not None  # --raise-after's override, at the latest
    # a0 follows: the raises go.
    confirmed = campus(objs("b", 100, lowered))
    assert slice_limits(confirmed) == {"a0": 100, "a1": 100, "b0": 500, "b1": 500}


def test_a_move_between_nodes_of_one_rack_waits_on_the_rack_itself() -> None:
    """A rack's own allowance is a constraint like its domains' and its site's: budget moved between
    two nodes of a rack (r, 600 W) waits for the lowered node even once the site has room to spare
    (another rack, s, lowered meanwhile and confirmed)."""
    def objs(s_max: int, held: dict[str, int], reports: dict[str, int]) -> list[dict[str, Any]]:
        out = [cluster(), rack("r", max_w=600), rack("s", max_w=s_max),
               node("n1", "r", req=100, telemetry=report(reports["n1"])),
               node("n2", "r", telemetry=report(reports["n2"])),
               *(node(n, "s", telemetry=report(reports[n])) for n in ("s1", "s2"))]
        out.append({"apiVersion": kinds.API_VERSION, "kind": kinds.POWER_LIMIT_SLICE.kind,
                    "metadata": {"name": slice_name, "namespace": NS, "uid": "u", "generation": 1},
                    "spec": {"limits": held, "safeLimits": {}, "revision": 1}})
        return out

    slice_name = next(b["metadata"]["name"] for b in campus(site(node("n1", "r"))).applies
                      if b["kind"] == "PowerLimitSlice")
    cache = CampusCache()
    # n1 asks for 100 W: r's budget moves to n2 (300 -> 500), which waits for n1 (reporting 300).
    held = {"n1": 300, "n2": 300, "s1": 500, "s2": 500}
    first = campus(objs(1000, held, held), cache)
    assert slice_limits(first) == {"n1": 100, "n2": 300, "s1": 500, "s2": 500}
    # s lowered to 200 W and its nodes follow at once; n1 does not.
    held = slice_limits(first)
    second = campus(objs(200, held, {**held, "n1": 300}), cache)
    held = slice_limits(second)
    assert held == {"n1": 100, "n2": 300, "s1": 100, "s2": 100}
    third = campus(objs(200, held, {**held, "n1": 300}), cache)
    # The site now has room for n2's raise even with n1 at 300 W; r has not.
    assert slice_limits(third) == held
    fourth = campus(objs(200, held, held), cache)  # n1 follows
    assert slice_limits(fourth) == {"n1": 100, "n2": 500, "s1": 100, "s2": 100}
