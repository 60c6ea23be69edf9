"""Power allocation: every rule with hand-computed numbers."""

from __future__ import annotations

from datetime import timedelta

from helpers.core_objects import NOW, cluster, cond, node, rack, run, st, ts
from stargate_operator.core.power import (
    curtailment_in_effect,
    fair_level,
    max_min_shares,
    node_floor_demand,
    power_limit,
    site_budget,
    with_base_power,
)


def test_node_floor_and_demand() -> None:
    # F = base + count * min = 1000 + 8 * 200; D = base + count * clamp(requested, min, max)
    assert node_floor_demand(8, 200, 700, None, 1000, False) == (2600, 6600)
    assert node_floor_demand(8, 200, 700, 500, 1000, False) == (2600, 5000)
    assert node_floor_demand(8, 200, 700, 900, 1000, False) == (2600, 6600)  # clamped to max
    assert node_floor_demand(8, 200, 700, 100, 1000, False) == (2600, 2600)  # clamped to min
    assert node_floor_demand(8, 200, 700, None, 1000, True) == (2600, 2600)  # maintenance: D = F


def test_site_budget_reserve_and_curtailment_round_down() -> None:
    assert site_budget(1_000_000, 5, 20) == 760_000
    assert site_budget(1001, 5, 0) == 950  # 950.95 rounded down
    assert site_budget(1001, 0, 33) == 670  # 670.67 rounded down
    assert site_budget(1000, 50, 100) == 0


def test_fair_level_and_shares() -> None:
    # rooms 1000 and 5000 share 3000: the small one is filled, the other gets the level 2000
    assert fair_level([1000, 5000], 3000) == 2000
    assert max_min_shares([1000, 5000], 3000) == ([1000, 2000], False)
    assert max_min_shares([2000, 5000], 3000) == ([1500, 1500], False)
    assert max_min_shares([10, 10, 10], 10) == ([3, 3, 3], False)  # 1 W of dust stays unallocated
    assert max_min_shares([10, 20], 100) == ([10, 20], True)


def test_power_limit_rounds_down_and_never_below_min() -> None:
    assert power_limit(1000, 50, 3, 100) == 316  # floor(950 / 3)
    assert power_limit(300, 50, 3, 100) == 100


def test_racks_by_priority_then_max_min_fair_within_a_level() -> None:
    # B = 10000. Floors 1000 each (node floors: 10 GPUs x 100 W), remainder 7000.
    # a (900): room 4000 -> filled, 3000 left. b and c (500): rooms 2000 and 5000 share 3000 at
    # level 1500 each.
    objs = [
        cluster(it=10_000),
        rack("a", priority=900), node("a1", "a", count=10, max_w=500),
        rack("b", priority=500), node("b1", "b", count=10, max_w=300),
        rack("c", priority=500), node("c1", "c", count=10, max_w=600),
    ]
    plan = run(objs)
    budgets = {r: st(plan, "Rack", r)["power"]["budgetWatts"] for r in "abc"}
    assert budgets == {"a": 5000, "b": 2500, "c": 2500}
    site = st(plan, "StargateCluster", "site")
    assert site["power"] == {
        "budgetWatts": 10_000, "floorWatts": 3000, "demandWatts": 5000 + 3000 + 6000,
        "allocatedWatts": 10_000, "measuredWatts": 0, "facilityWatts": 10_000, "limitsConfirmed": 0,
    }
    assert cond(site, "PowerOvercommitted")["status"] == "False"
    assert cond(st(plan, "Rack", "a"), "PowerCapped")["status"] == "False"
    assert cond(st(plan, "Rack", "b"), "PowerCapped")["status"] == "True"
    # nodes: 10 GPUs, 1500 W extra -> 150 W more than the 100 W minimum each
    assert st(plan, "GPUNode", "b1")["powerLimitWatts"] == 250
    assert st(plan, "GPUNode", "c1")["allocatedWatts"] == 2500
    assert cond(st(plan, "GPUNode", "c1"), "PowerCapped")["status"] == "True"


def test_lower_priority_gets_only_what_higher_ones_leave() -> None:
    # B = 2300; floors 100 + 100; high rack room 400 is filled; low gets the remaining 1700 of
    # its 400 room... i.e. all of it: 2300 - 200 - 400 = 1700 >= 400.
    objs = [cluster(it=2300), rack("hi", priority=1000), node("h", "hi"),
            rack("lo", priority=0), node("l", "lo")]
    plan = run(objs)
    assert st(plan, "Rack", "hi")["power"]["budgetWatts"] == 500
    assert st(plan, "Rack", "lo")["power"]["budgetWatts"] == 500
    # B = 450: high takes 350 of its 400 room, low keeps its floor
    plan = run([cluster(it=450), *objs[1:]])
    assert st(plan, "Rack", "hi")["power"]["budgetWatts"] == 450 - 100
    assert st(plan, "Rack", "lo")["power"]["budgetWatts"] == 100


def test_rounding_dust_is_not_handed_to_a_lower_priority() -> None:
    # Three racks at 900 with room 400 each share 10 W: level 3, 1 W of dust; the low rack keeps
    # its floor (otherwise raising it to 900 would lower its budget from 101 to 100 + 2).
    objs = [cluster(it=410)]
    for name in ("x", "y", "z"):
        objs += [rack(name, priority=900), node(f"{name}1", name)]
    objs += [rack("low", priority=0), node("low1", "low")]
    plan = run(objs)
    assert [st(plan, "Rack", r)["power"]["budgetWatts"] for r in ("x", "y", "z", "low")] == [
        103, 103, 103, 100]


def test_overcommitted_site_gives_floors_and_says_by_how_much() -> None:
    objs = [cluster(it=2500), rack("a"), node("a1", "a", count=10), rack("b"), node("b1", "b", count=10),
            rack("c"), node("c1", "c", count=10)]
    plan = run(objs)
    site = st(plan, "StargateCluster", "site")
    oc = cond(site, "PowerOvercommitted")
    assert oc["status"] == "True"
    assert "500 W" in oc["message"]
    assert cond(site, "Ready")["status"] == "False"
    assert site["power"]["allocatedWatts"] == 3000
    for r in "abc":
        assert st(plan, "Rack", r)["power"]["budgetWatts"] == 1000
        assert st(plan, "GPUNode", f"{r}1")["powerLimitWatts"] == 100
    assert [(e.key[2], e.type, e.reason) for e in plan.events] == [("site", "Warning", "PowerOvercommitted")]


def test_rack_demand_is_capped_at_its_rating_and_misconfigured_racks_get_their_floor() -> None:
    objs = [cluster(it=100_000),
            rack("capped", max_w=1500), node("c1", "capped", count=2), node("c2", "capped", count=2),
            rack("bad", max_w=300), node("b1", "bad", count=2), node("b2", "bad", count=2)]
    plan = run(objs)
    capped = st(plan, "Rack", "capped")
    assert capped["power"]["demandWatts"] == 1500  # min(2 x 1000, 1500)
    assert capped["power"]["budgetWatts"] == 1500
    # the nodes share 1500 - 400 = 1100 at level 550: 200 + 550 = 750 W, 375 W per GPU
    assert st(plan, "GPUNode", "c1")["allocatedWatts"] == 750
    assert st(plan, "GPUNode", "c1")["powerLimitWatts"] == 375
    bad = st(plan, "Rack", "bad")
    ready = cond(bad, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "FloorExceedsRating")
    assert bad["power"]["floorWatts"] == 400
    assert bad["power"]["budgetWatts"] == 400
    assert st(plan, "GPUNode", "b1")["allocatedWatts"] == 200
    assert any(e.reason == "FloorExceedsRating" and e.key[2] == "bad" for e in plan.events)


def test_per_gpu_limit_rounds_down_inside_the_rack() -> None:
    # One rack, budget 2000; two nodes F = 50 + 3 x 100 = 350, D = 50 + 3 x 500 = 1550.
    # Remainder 1300 at level 650: allocated 1000 -> limit floor(950 / 3) = 316 -> 50 + 948 = 998.
    objs = [cluster(it=2000), rack("r"), node("n1", "r", count=3, base=50), node("n2", "r", count=3, base=50)]
    plan = run(objs)
    n1 = st(plan, "GPUNode", "n1")
    assert (n1["floorWatts"], n1["demandWatts"], n1["powerLimitWatts"], n1["allocatedWatts"]) == (
        350, 1550, 316, 998)
    assert st(plan, "Rack", "r")["power"]["budgetWatts"] == 2000


def test_curtailment_applies_only_until_it_ends() -> None:
    until = NOW + timedelta(hours=1)
    objs = [cluster(it=100_000, reserve=5, curtail=20, until=ts(until)), rack("r"), node("n", "r")]
    plan = run(objs)
    assert st(plan, "StargateCluster", "site")["power"]["budgetWatts"] == 76_000
    assert plan.next_change_at == until
    later = run(objs, now=until)
    assert st(later, "StargateCluster", "site")["power"]["budgetWatts"] == 95_000
    assert later.next_change_at is None
    forever = run([cluster(it=100_000, reserve=5, curtail=20), rack("r"), node("n", "r")])
    assert st(forever, "StargateCluster", "site")["power"]["budgetWatts"] == 76_000


def test_curtailment_in_effect_rule() -> None:
    # a positive share applies with no end, or until its end; exactly at `until` it no longer does
    assert curtailment_in_effect(20, None, 1000.0)
    assert curtailment_in_effect(20, 1000.5, 1000.0)
    assert not curtailment_in_effect(20, 1000.0, 1000.0)
    assert not curtailment_in_effect(20, 999.0, 1000.0)
    assert not curtailment_in_effect(0, None, 1000.0)
    assert not curtailment_in_effect(0, 2000.0, 1000.0)


def test_with_base_power_adds_the_rest_of_the_node() -> None:
    r = {"powerWatts": 2800, "healthyGPUs": 8, "hbmUsedBytes": 1, "observedAt": "2026-01-01T00:00:00Z"}
    assert with_base_power(r, {"basePowerWatts": 2000}) == {**r, "powerWatts": 4800}
    assert with_base_power(r, {}) == r
    # the base as the node's floor reads it: a malformed one counts 0, as it does there
    assert with_base_power(r, {"basePowerWatts": "lots"}) == r
    assert with_base_power(r, {"basePowerWatts": 2000.0})["powerWatts"] == 4800
    assert r["powerWatts"] == 2800  # the reading itself is not changed


def test_dcgm_reading_with_base_power_compares_with_the_node_floor() -> None:
    # A node drawing exactly its floor: DCGM sees count x min, the core adds the base, so the
    # measured figure equals the floor the core computes from the same spec.
    spec = {"basePowerWatts": 1000}
    floor, _ = node_floor_demand(8, 200, 700, None, 1000, False)
    assert with_base_power({"powerWatts": 8 * 200}, spec)["powerWatts"] == floor


def test_over_budget_from_fresh_measurements_only() -> None:
    fresh = {"powerWatts": 900, "observedAt": ts(NOW - timedelta(seconds=10))}
    stale = {"powerWatts": 900, "observedAt": ts(NOW - timedelta(seconds=600))}
    objs = [cluster(it=100_000), rack("r", max_w=600), node("n", "r", telemetry=fresh),
            rack("s", max_w=600), node("m", "s", telemetry=stale)]
    plan = run(objs)
    r = st(plan, "Rack", "r")
    assert r["power"]["measuredWatts"] == 900
    assert (cond(r, "OverBudget")["status"], r["power"]["budgetWatts"]) == ("True", 500)
    assert cond(st(plan, "Rack", "s"), "OverBudget")["status"] == "False"
    assert ("Rack", "site-ns", "r") in {e.key for e in plan.events if e.reason == "OverBudget"}


def test_facility_power_and_carbon() -> None:
    # n measures 300 W, m has no telemetry and is allocated 500 W: (300 + 500) x 1.15 = 920 W
    fresh = {"powerWatts": 300, "observedAt": ts(NOW)}
    objs = [cluster(it=100_000, pue=1.15, intensity=400.0), rack("r"), node("n", "r", telemetry=fresh),
            node("m", "r")]
    site = st(run(objs), "StargateCluster", "site")
    assert site["power"]["facilityWatts"] == 920
    assert site["power"]["measuredWatts"] == 300
    assert site["carbonGramsPerHour"] == 368.0  # 0.92 kW x 400 g/kWh
