"""Property tests for every invariant of power allocation and memory binding, over random sites."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.core_objects import NOW, NS, cluster, feed_back, node, rack, run, ts
from helpers.properties import PROPS, sites, with_versions
from stargate_operator.core import Plan, PlanCache
from stargate_operator.core.power import max_min_shares


def _by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def _status(plan: Plan, o: dict[str, Any]) -> dict[str, Any]:
    return plan.statuses[(o["kind"], NS, o["metadata"]["name"])]


def _ready_reason(status: dict[str, Any]) -> str:
    return str(next(c for c in status["conditions"] if c["type"] == "Ready")["reason"])


def _overcommitted(status: dict[str, Any]) -> bool:
    return any(c["type"] == "PowerOvercommitted" and c["status"] == "True" for c in status["conditions"])


@PROPS
@given(sites())
def test_rack_budgets_fit_the_site_budget_unless_overcommitted(objs: list[dict[str, Any]]) -> None:
    plan = run(objs)
    for c in _by_kind(objs, "StargateCluster"):
        site = _status(plan, c)
        budgets = sum(_status(plan, r)["power"]["budgetWatts"] for r in _by_kind(objs, "Rack")
                      if r["spec"]["clusterRef"] == c["metadata"]["name"])
        assert budgets == site["power"]["allocatedWatts"]
        over = site["power"]["floorWatts"] > site["power"]["budgetWatts"]
        assert _overcommitted(site) == over
        if not over:
            assert budgets <= site["power"]["budgetWatts"]
        else:
            assert budgets == site["power"]["floorWatts"]


@PROPS
@given(sites())
def test_node_allocations_fit_the_rack_and_stay_between_floor_and_demand(objs: list[dict[str, Any]]) -> None:
    plan = run(objs)
    for r in _by_kind(objs, "Rack"):
        rs = _status(plan, r)
        members = [_status(plan, n) for n in _by_kind(objs, "GPUNode")
                   if n["spec"]["rackRef"] == r["metadata"]["name"]]
        assert sum(n["allocatedWatts"] for n in members) <= rs["power"]["budgetWatts"] or (
            _ready_reason(rs) == "FloorExceedsRating")
        if _ready_reason(rs) != "ClusterNotFound":
            assert rs["power"]["budgetWatts"] >= rs["power"]["floorWatts"]
            for n in members:
                assert n["floorWatts"] <= n["allocatedWatts"] <= n["demandWatts"]
    for n in _by_kind(objs, "GPUNode"):
        ns = _status(plan, n)
        gpu = n["spec"]["gpu"]
        assert 0 <= ns["healthyGPUs"] <= gpu["count"]
        if ns["allocatedWatts"]:
            assert ns["powerLimitWatts"] >= gpu["minPowerWatts"]
            assert ns["allocatedWatts"] == n["spec"]["basePowerWatts"] + gpu["count"] * ns["powerLimitWatts"]


@PROPS
@given(sites(), st.data())
def test_raising_a_racks_priority_never_lowers_its_budget(
    objs: list[dict[str, Any]], data: st.DataObject
) -> None:
    racks = _by_kind(objs, "Rack")
    if not racks:
        return
    target = data.draw(st.sampled_from(racks))
    higher = data.draw(st.integers(target["spec"]["priority"], 1000))
    before = _status(run(objs), target)["power"]["budgetWatts"]
    raised = {**target, "spec": {**target["spec"], "priority": higher}}
    after_objs = [raised if o is target else o for o in objs]
    after = _status(run(after_objs), raised)["power"]["budgetWatts"]
    assert after >= before


@PROPS
@given(sites())
def test_pools_never_allocate_beyond_capacity_and_no_claim_is_bound_twice(objs: list[dict[str, Any]]) -> None:
    plan = run(objs)
    claims = _by_kind(objs, "MemoryClaim")
    bound_total = 0
    for p in _by_kind(objs, "MemoryPool"):
        ps = _status(plan, p)
        mine = [_status(plan, c) for c in claims if c["spec"]["poolRef"] == p["metadata"]["name"]]
        bound = [c for c in mine if c["phase"] == "Bound"]
        assert ps["allocatedBytes"] <= ps["capacityBytes"]
        assert ps["allocatedBytes"] == sum(c["allocatedBytes"] for c in bound)
        assert ps["availableBytes"] == ps["capacityBytes"] - ps["allocatedBytes"]
        assert ps["claims"] == {"bound": len(bound), "pending": len(mine) - len(bound)}
        bound_total += len(bound)
    assert bound_total == sum(_status(plan, c)["phase"] == "Bound" for c in claims)
    for c in claims:
        cs = _status(plan, c)
        assert cs["allocatedBytes"] == (c["spec"]["sizeBytes"] if cs["phase"] == "Bound" else 0)
        assert ("boundAt" in cs) == (cs["phase"] == "Bound")


@PROPS
@given(sites(), st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_input_order(objs: list[dict[str, Any]], rnd: Any) -> None:
    shuffled = list(objs)
    rnd.shuffle(shuffled)
    a, b = run(objs), run(shuffled)
    assert a.statuses == b.statuses
    assert a.events == b.events
    assert a.next_change_at == b.next_change_at


@PROPS
@given(sites())
def test_feeding_the_statuses_back_changes_nothing(objs: list[dict[str, Any]]) -> None:
    first = run(objs)
    again = run(feed_back(objs, first))
    assert again.statuses == first.statuses
    assert again.events == []
    for o in objs:
        assert "telemetry" not in _status(first, o)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1000), max_size=12), st.integers(0, 5000))
def test_max_min_shares_are_fair_and_never_hand_out_more_than_there_is(
    rooms: list[int], remainder: int
) -> None:
    shares, filled = max_min_shares(rooms, remainder)
    assert sum(shares) <= remainder
    assert all(0 <= s <= r for s, r in zip(shares, rooms, strict=True))
    assert filled == (shares == rooms)
    if not filled:
        level = max(shares)
        assert all(s in (r, level) for s, r in zip(shares, rooms, strict=True))
        # the level is as high as the remainder allows
        assert sum(min(r, level + 1) for r in rooms) > remainder




@PROPS
@given(sites(), st.integers(0, 400))
def test_a_cache_never_changes_the_result(objs: list[dict[str, Any]], later_s: int) -> None:
    cache = PlanCache()
    objs = with_versions(objs, "1")
    first = run(objs, cache=cache)
    assert _same(first, run(objs))
    # the engine writes the statuses (new resourceVersions), then recomputes later, twice
    written = with_versions(feed_back(objs, first), "2")
    later = NOW + timedelta(seconds=later_s)
    for _ in range(2):
        assert _same(run(written, now=later, cache=cache), run(written, now=later))
    # one node changes (maintenance on), the rest stays cached
    nodes = [i for i, o in enumerate(written) if o["kind"] == "GPUNode"]
    if nodes:
        i = nodes[0]
        spec = {**written[i]["spec"], "maintenance": not written[i]["spec"]["maintenance"]}
        # a change of a spec: a new generation, as the API server counts it
        meta = {**written[i]["metadata"], "resourceVersion": "3",
                "generation": written[i]["metadata"]["generation"] + 1}
        written[i] = {**written[i], "spec": spec, "metadata": meta}
    assert _same(run(written, now=later, cache=cache), run(written, now=later))
    # time passes: verdicts held in the cache are judged again where their window ended
    much_later = later + timedelta(seconds=130)
    assert _same(run(written, now=much_later, cache=cache), run(written, now=much_later))


def _same(a: Plan, b: Plan) -> bool:
    return a.statuses == b.statuses and a.events == b.events and a.next_change_at == b.next_change_at


def test_telemetry_laid_over_an_unchanged_object_is_not_missed_by_the_cache() -> None:
    cache = PlanCache()
    base = with_versions([cluster(), rack("r"), node("n", "r", count=4)], "1")
    fresh = {"healthyGPUs": 4, "observedAt": ts(NOW)}
    first = run([*base[:2], {**base[2], "status": {"telemetry": fresh}}], cache=cache)
    assert first.statuses[("GPUNode", NS, "n")]["healthyGPUs"] == 4
    fewer = {"healthyGPUs": 1, "observedAt": ts(NOW)}
    again = run([*base[:2], {**base[2], "status": {"telemetry": fewer}}], cache=cache)
    assert again.statuses[("GPUNode", NS, "n")]["healthyGPUs"] == 1


def test_a_status_write_keeps_the_nodes_record_and_a_new_generation_does_not() -> None:
    """The operator's own status writes (a new resourceVersion, the same generation) leave each
    node's parsed record in the cache, with the conditions it wrote; a change of its spec (a new
    generation) is parsed again."""
    cache = PlanCache()
    base = with_versions([cluster(), rack("r"), node("n", "r", count=4)], "1")
    first = run(base, cache=cache)
    record = cache.nodes[base[2]["metadata"]["uid"]]
    written = with_versions(feed_back(base, first), "2")
    assert _same(run(written, cache=cache), run(written))
    assert cache.nodes[base[2]["metadata"]["uid"]] is record
    assert record.status is written[2]["status"]  # with the conditions it wrote
    meta = {**written[2]["metadata"], "resourceVersion": "3", "generation": 2}
    respec = [*written[:2], {**written[2], "metadata": meta,
                             "spec": {**written[2]["spec"], "maintenance": True}}]
    assert _same(run(respec, cache=cache), run(respec))
    assert cache.nodes[base[2]["metadata"]["uid"]] is not record
