"""Conditions, references and the engine contract: unchanged input gives unchanged status."""

from __future__ import annotations

import random
from datetime import timedelta

from helpers.core_objects import NOW, NOW_S, claim, cluster, cond, feed_back, node, pool, rack, run, st, ts
from stargate_operator.fixtures.synth import SYNTH_NOW, synthetic_site


def test_conditions_follow_the_kubernetes_convention() -> None:
    status = st(run([cluster(gen=7), rack("r"), node("n", "r")]), "StargateCluster", "site")
    assert status["observedGeneration"] == 7
    assert [c["type"] for c in status["conditions"]] == ["Ready", "PowerOvercommitted"]
    for c in status["conditions"]:
        assert set(c) == {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}
        assert c["status"] in ("True", "False", "Unknown")
        assert c["reason"][0].isupper() and " " not in c["reason"]
        assert c["lastTransitionTime"] == NOW_S
        assert c["observedGeneration"] == 7


def test_missing_generation_leaves_observed_generation_out() -> None:
    status = st(run([cluster(gen=None)]), "StargateCluster", "site")
    assert "observedGeneration" not in status
    assert all("observedGeneration" not in c for c in status["conditions"])


def test_unchanged_input_gives_an_equal_status_and_no_events() -> None:
    objs = [cluster(it=2500), rack("a"), node("a1", "a", count=30), claim("c", "p", 5), pool("p", capacity=9),
            rack("orphan", cluster_ref="nope"), node("lost", "nowhere")]
    first = run(objs)
    assert first.events  # overcommitted, missing references, a bound claim
    objs2 = feed_back(objs, first)
    later = run(objs2, now=NOW + timedelta(hours=3))
    assert later.statuses == first.statuses
    assert later.events == []
    for o in objs2:  # exactly what the engine diffs against
        key = (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"])
        assert later.statuses[key] == o["status"]


def test_a_transition_moves_last_transition_time_and_others_keep_theirs() -> None:
    objs = [cluster(it=100_000), rack("r"), node("n", "r", count=2)]
    first = run(objs)
    objs = feed_back(objs, first)
    objs[0] = {**cluster(it=150), "status": objs[0]["status"]}  # floors 200 > 150
    later_now = NOW + timedelta(minutes=5)
    later = run(objs, now=later_now)
    site = st(later, "StargateCluster", "site")
    assert cond(site, "PowerOvercommitted")["lastTransitionTime"] == ts(later_now)
    assert cond(site, "Ready")["lastTransitionTime"] == ts(later_now)
    node_ready = cond(st(later, "GPUNode", "n"), "Ready")
    assert node_ready["lastTransitionTime"] == NOW_S  # still True: kept
    recovered = run(feed_back(objs[:1], later) + objs[1:], now=later_now + timedelta(minutes=1))
    assert [(e.type, e.reason) for e in recovered.events] == []  # same input: no news
    objs[0] = {**cluster(it=100_000), "status": later.statuses[("StargateCluster", "site-ns", "site")]}
    healed = run(objs, now=later_now + timedelta(minutes=2))
    assert [(e.type, e.reason) for e in healed.events] == [("Normal", "PowerOvercommitResolved")]


def test_other_controllers_conditions_are_kept() -> None:
    foreign = {"type": "Audited", "status": "True", "reason": "Checked", "message": "",
               "lastTransitionTime": "2025-01-01T00:00:00Z"}
    r = rack("r", status={"conditions": [foreign]})
    status = st(run([cluster(), r]), "Rack", "r")
    assert status["conditions"][-1] == foreign


def test_missing_references_give_not_ready_and_do_not_disturb_others() -> None:
    healthy = [cluster(it=10_000), rack("a"), node("a1", "a", count=10)]
    broken = [rack("stray", cluster_ref="other-site"), node("s1", "stray"), node("lost", "no-rack"),
              pool("p", cluster_ref="other-site", capacity=100), pool("q", rack_ref="no-rack", capacity=5),
              claim("c", "no-pool", 10)]
    alone = run(healthy)
    plan = run(healthy + broken)
    for key, status in alone.statuses.items():
        assert plan.statuses[key] == status
    expect = {("Rack", "stray"): "ClusterNotFound", ("GPUNode", "s1"): "ClusterNotFound",
              ("GPUNode", "lost"): "RackNotFound", ("MemoryPool", "p"): "ClusterNotFound",
              ("MemoryPool", "q"): "RackNotFound", ("MemoryClaim", "c"): "PoolNotFound"}
    for (kind, name), reason in expect.items():
        ready = cond(st(plan, kind, name), "Ready")
        assert (ready["status"], ready["reason"]) == ("False", reason), (kind, name)
    assert "other-site" in cond(st(plan, "Rack", "stray"), "Ready")["message"]
    assert "no-rack" in cond(st(plan, "GPUNode", "lost"), "Ready")["message"]
    assert st(plan, "Rack", "stray")["power"]["budgetWatts"] == 0
    assert st(plan, "GPUNode", "s1")["allocatedWatts"] == 0
    warned = {(e.key[0], e.key[2], e.reason) for e in plan.events if e.type == "Warning"}
    assert {(k, n, r) for (k, n), r in expect.items()} <= warned


def test_several_sites_in_one_namespace_are_planned_apart() -> None:
    objs = [cluster("one", it=1000), rack("r1", cluster_ref="one"), node("n1", "r1"),
            cluster("two", it=200), rack("r2", cluster_ref="two"), node("n2", "r2")]
    plan = run(objs)
    assert st(plan, "Rack", "r1")["power"]["budgetWatts"] == 500
    assert st(plan, "Rack", "r2")["power"]["budgetWatts"] == 200
    assert st(plan, "StargateCluster", "two")["nodes"] == 1


def test_synthetic_site_is_order_independent_and_idempotent() -> None:
    objs = synthetic_site(400, seed=7, namespace="syn")
    first = run(objs, now=SYNTH_NOW)
    shuffled = list(objs)
    random.Random(1).shuffle(shuffled)
    again = run(shuffled, now=SYNTH_NOW)
    assert again.statuses == first.statuses
    assert again.events == first.events
    assert again.next_change_at == first.next_change_at
    fed = run(feed_back(objs, first), now=SYNTH_NOW + timedelta(seconds=1))
    assert fed.statuses == first.statuses
    assert fed.events == []
    assert len(first.statuses) == len(objs)
