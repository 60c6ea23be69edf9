"""Shadow mode (spec.power.enforcement Observe): limits computed and shown, none enforced."""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import generate_latest

from helpers.core_objects import NOW, cluster, cond, feed_back, node, rack, run, st, ts
from stargate_operator import metrics
from stargate_operator.agent.runner import NodeAgent
from stargate_operator.agent.simulate import SimulatedBackend
from stargate_operator.core import PlanCache


def _site(enforcement: str | None) -> list[dict[str, Any]]:
    site = cluster(it=1_400)
    if enforcement is not None:
        site["spec"]["power"]["enforcement"] = enforcement
    # two 1-GPU nodes of 100..500 W on a 1,400 W site: 500 W each; a draws 650 W, 150 W above it
    return [site, rack("r"), node("a", "r", telemetry={"powerWatts": 650, "observedAt": ts(NOW)}),
            node("b", "r", telemetry={"powerWatts": 300, "observedAt": ts(NOW)})]


def test_observe_shows_what_enforcing_would_cap() -> None:
    plan = run(_site("Observe"))
    site = st(plan, "StargateCluster", "site")
    assert site["power"]["observe"] == {"nodesOverLimit": 1, "wattsOverLimit": 650 - 500}
    a = st(plan, "GPUNode", "a")
    assert a["powerEnforcement"] == "Observe" and a["powerLimitWatts"] == 500  # computed as always
    assert (cond(a, "PowerLimitApplied")["status"], cond(a, "PowerLimitApplied")["reason"]) == (
        "Unknown", "Observing")


def test_enforce_is_the_default_and_shows_no_shadow() -> None:
    for mode in (None, "Enforce"):
        plan = run(_site(mode))
        assert "observe" not in st(plan, "StargateCluster", "site")["power"]
        assert "powerEnforcement" not in st(plan, "GPUNode", "a")


def test_switching_modes_with_a_cache_rebuilds_the_statuses() -> None:
    cache = PlanCache()
    objs = _site("Enforce")
    first = run(objs, cache=cache)
    back = feed_back(objs, first)
    back[0] = {**back[0], "spec": {**back[0]["spec"], "power": {**back[0]["spec"]["power"],
                                                                  "enforcement": "Observe"}}}
    second = run(back, cache=cache)
    assert st(second, "GPUNode", "a")["powerEnforcement"] == "Observe"
    again = feed_back(back, second)
    again[0] = objs[0]
    third = run(again, cache=cache)
    assert "powerEnforcement" not in st(third, "GPUNode", "a")


async def test_an_observing_agent_reports_its_limit_and_applies_none() -> None:
    spec = {"gpu": {"count": 1, "minPowerWatts": 100, "maxPowerWatts": 500}}
    backend = SimulatedBackend("n0", spec, seed=1)
    agent = NodeAgent(cast(Any, None), "site-a", "n0", backend)
    agent.obj = {"spec": spec, "status": {"powerLimitWatts": 300, "powerEnforcement": "Observe"}}
    before = backend.limit_watts
    assert await agent.apply_limit() is None
    assert agent.shadow_limit == 300 and backend.limit_watts == before
    agent.obj = {**agent.obj, "status": {"powerLimitWatts": 300}}  # enforcing again
    outcome = await agent.apply_limit()
    assert outcome is not None and backend.limit_watts == 300 and agent.shadow_limit is None


def test_the_site_metrics_show_what_would_be_capped() -> None:
    objs = _site("Observe")
    plan = run(objs)
    with_status = [{**o, "status": {**(o.get("status") or {}), **plan.statuses[
        (o["kind"], o["metadata"]["namespace"], o["metadata"]["name"])]}} for o in objs]
    text = generate_latest(metrics.make_registry(metrics.StaticSource(with_status))).decode()
    assert 'stargate_cluster_observe_over_limit_watts{cluster="site",namespace="site-ns"} 150.0' in text
    assert 'stargate_cluster_observe_nodes_over_limit{cluster="site",namespace="site-ns"} 1.0' in text
