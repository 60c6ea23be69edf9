"""Power domains: ratings, validity, progressive filling over the tree, status;
hand-computed cases first, then hypothesis properties for every invariant over random trees."""

from __future__ import annotations

import gc
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from helpers.core_objects import NS, cluster, cond, feed_back, node, rack, run, st
from helpers.domains import (
    dense_sites,
    domain,
    expected_constraints,
    expected_verdicts,
    fed,
    specs_of,
    tree_sites,
)
from stargate_operator.core import Plan
from stargate_operator.core.objects import domain_rating
from stargate_operator.core.power import max_min_shares

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])






def budgets(plan: Plan, *names: str) -> dict[str, int]:
    return {n: st(plan, "Rack", n)["power"]["budgetWatts"] for n in names}


def ready(status: dict[str, Any]) -> tuple[str, str]:
    c = cond(status, "Ready")
    return c["status"], c["reason"]


# ---- ratings -------------------------------------------------------------------------------

def test_rating_from_electrical_figures_by_netbox_formula() -> None:
    # three phases: floor(V x A x sqrt(3) x PF); 13.8 kV x 40 A x 1.7320508 = 956,092.0 W
    feed = {"voltage": 13_800, "amperage": 40, "phases": 3, "powerFactor": 1.0}
    assert domain_rating(None, feed) == 956_092
    # one phase: floor(V x A x PF) of the figures as written: 100 x 7 x 0.7 = 490 (489.99999999999994
    # in floating point, which would round down to 489)
    assert domain_rating(None, {"voltage": 100, "amperage": 7, "phases": 1, "powerFactor": 0.7}) == 490
    assert domain_rating(None, {"voltage": 230, "amperage": 32, "phases": 1, "powerFactor": 0.95}) == 6992
    assert domain_rating(None, {"voltage": 415, "amperage": 100}) == 71_880  # phases 3, PF 1 by default
    assert domain_rating(360_000, None) == 360_000
    assert domain_rating(None, None) == 0  # nothing to go by: no watts


def test_usable_is_the_rating_derated_and_the_status_shows_both() -> None:
    objs = [cluster(), domain("feed", role="Utility", derate=80,
                              electrical={"voltage": 13_800, "amperage": 40, "phases": 3})]
    s = st(run(objs), "PowerDomain", "feed")
    assert (s["ratingWatts"], s["usableWatts"]) == (956_092, 764_873)  # floor(956092 x 0.8)
    assert (s["racks"], s["allocatedWatts"], s["headroomWatts"], s["path"]) == (0, 0, 764_873, ["feed"])
    assert ready(s) == ("True", "PowerAllocated")


# ---- allocation by hand --------------------------------------------------------------------

def _three_racks(pdu_usable: int, site_it: int = 100_000) -> list[dict[str, Any]]:
    # Every rack: floor 1000 (10 GPUs x 100 W), demand 5000, room 4000.
    return [
        cluster(it=site_it),
        domain("util", role="Utility", rating=50_000),
        domain("pdu", parent="util", role="FloorPDU", rating=pdu_usable),
        fed("a", "pdu", priority=900), node("a1", "a", count=10),
        fed("b", "pdu", priority=500), node("b1", "b", count=10),
        fed("c", priority=500), node("c1", "c", count=10),
    ]


def test_a_floor_pdu_limits_its_racks_by_priority_and_the_rest_of_the_site_is_untouched() -> None:
    # pdu usable 3000, floors 2000: 1000 W beyond floors. a (900) takes them all and the pdu
    # closes; b (500, same pdu) keeps its floor; c, under the site only, gets its whole demand.
    plan = run(_three_racks(3000))
    assert budgets(plan, "a", "b", "c") == {"a": 2000, "b": 1000, "c": 5000}
    a, b = st(plan, "Rack", "a"), st(plan, "Rack", "b")
    assert a["power"]["limitedBy"] == "pdu" and b["power"]["limitedBy"] == "pdu"
    assert cond(a, "PowerCapped")["message"] == (
        "budget 2000 W is below demand 5000 W: limited by FloorPDU pdu, usable 3000 W")
    assert "limitedBy" not in st(plan, "Rack", "c")["power"]
    pdu = st(plan, "PowerDomain", "pdu")
    assert {k: pdu[k] for k in ("racks", "floorWatts", "demandWatts", "allocatedWatts", "headroomWatts")} == {
        "racks": 2, "floorWatts": 2000, "demandWatts": 10_000, "allocatedWatts": 3000, "headroomWatts": 0}
    assert pdu["path"] == ["util", "pdu"]
    assert cond(pdu, "Constrained")["status"] == "True"
    assert cond(pdu, "Overcommitted")["status"] == "False"
    util = st(plan, "PowerDomain", "util")
    assert (util["allocatedWatts"], cond(util, "Constrained")["status"]) == (3000, "False")


def test_racks_of_one_level_share_a_domain_max_min_fairly() -> None:
    # a and b both at 500 under a pdu of 5000 usable: 3000 beyond floors, level 1500 each.
    objs = _three_racks(5000)
    objs[3]["spec"]["priority"] = 500
    plan = run(objs)
    assert budgets(plan, "a", "b") == {"a": 2500, "b": 2500}


def test_the_tighter_of_site_and_domain_binds() -> None:
    # Site budget 9000, floors 3000: 6000 beyond floors. The pdu (usable 20000) does not bind:
    # a (900) takes its 4000 room, b and c (500) share the 2000 left at level 1000: the site limits.
    plan = run(_three_racks(20_000, site_it=9000))
    assert budgets(plan, "a", "b", "c") == {"a": 5000, "b": 2000, "c": 2000}
    b = st(plan, "Rack", "b")
    assert b["power"]["limitedBy"] == "site"
    assert cond(b, "PowerCapped")["message"].endswith("limited by StargateCluster site, budget 9000 W")


def test_a_rack_is_limited_by_its_cooling_domain_as_well_as_its_feed() -> None:
    # x and y share the pdu (plenty), y and z share a CDU that rejects 7000 W of heat.
    # Floors 1000 each; the CDU has 5000 beyond its floors for y and z: level 2500 each.
    objs = [cluster(), domain("pdu", rating=100_000),
            domain("cdu", type_="Cooling", role="CDU", rating=7000),
            fed("x", "pdu"), node("x1", "x", count=10),
            fed("y", "pdu", "cdu"), node("y1", "y", count=10),
            fed("z", cooling="cdu"), node("z1", "z", count=10)]
    plan = run(objs)
    assert budgets(plan, "x", "y", "z") == {"x": 5000, "y": 3500, "z": 3500}
    assert st(plan, "Rack", "y")["power"]["limitedBy"] == "cdu"
    assert st(plan, "PowerDomain", "cdu")["racks"] == 2
    assert st(plan, "PowerDomain", "pdu")["allocatedWatts"] == 8500


def test_an_overcommitted_domain_passes_floors_only_and_says_by_how_much() -> None:
    objs = _three_racks(1500)  # floors beneath 2000 > 1500
    plan = run(objs)
    assert budgets(plan, "a", "b", "c") == {"a": 1000, "b": 1000, "c": 5000}
    pdu = st(plan, "PowerDomain", "pdu")
    oc = cond(pdu, "Overcommitted")
    assert (oc["status"], oc["reason"]) == ("True", "FloorsExceedUsable")
    assert "overcommitted by 500 W" in oc["message"]
    assert ready(pdu) == ("False", "Overcommitted")
    assert pdu["headroomWatts"] == -500
    assert st(plan, "Rack", "a")["power"]["limitedBy"] == "pdu"
    assert [(e.key[2], e.type, e.reason) for e in plan.events] == [("pdu", "Warning", "Overcommitted")]
    # resolved: a Normal Event, once
    again = run(feed_back(_three_racks(3000), plan))
    assert [(e.key[2], e.type, e.reason) for e in again.events] == [("pdu", "Normal", "OvercommitResolved")]


def test_a_closed_domain_passes_nothing_to_lower_priorities_not_even_dust() -> None:
    # x, y, z (900) share the 10 W beyond floors at level 3: 1 W of dust. low (0)
    # under the same pdu keeps its floor, as at the site without domains.
    # Four racks of one 100..500 W GPU: floors 400, so a pdu of 410 leaves 10 W beyond them.
    objs: list[dict[str, Any]] = [cluster(), domain("pdu", rating=410)]
    for name in ("x", "y", "z"):
        objs += [fed(name, "pdu", priority=900), node(f"{name}1", name, count=1)]
    objs += [fed("low", "pdu", priority=0), node("low1", "low", count=1)]
    plan = run(objs)
    assert budgets(plan, "x", "y", "z", "low") == {"x": 103, "y": 103, "z": 103, "low": 100}
    assert st(plan, "PowerDomain", "pdu")["headroomWatts"] == 1


def test_a_site_with_no_domains_reads_as_before_plus_what_limits_its_racks() -> None:
    objs = [cluster(it=10_000), rack("a", priority=900), node("a1", "a", count=10, max_w=500),
            rack("b", priority=500), node("b1", "b", count=10, max_w=300),
            rack("c", priority=500), node("c1", "c", count=10, max_w=600)]
    plan = run(objs)
    assert budgets(plan, "a", "b", "c") == {"a": 5000, "b": 2500, "c": 2500}
    assert st(plan, "Rack", "c")["power"]["limitedBy"] == "site"
    assert "limitedBy" not in st(plan, "Rack", "a")["power"]
    assert not [k for k in plan.statuses if k[0] == "PowerDomain"]


# ---- validity ------------------------------------------------------------------------------

def _broken_site() -> list[dict[str, Any]]:
    return [
        cluster(), cluster("other"),
        domain("util", rating=100_000),
        domain("orphan", cluster_ref="gone"),                      # ClusterNotFound
        domain("lost", parent="nowhere"),                          # ParentNotFound
        domain("alien", parent="other-feed"),                      # ParentMismatch: other site
        domain("other-feed", cluster_ref="other"),
        domain("cool-loop", type_="Cooling"),
        domain("mixed", parent="cool-loop"),                       # ParentMismatch: other type
        domain("ring-a", parent="ring-b"), domain("ring-b", parent="ring-a"),  # CycleDetected
        domain("below-ring", parent="ring-a"),                     # ParentNotReady
        domain("below-lost", parent="lost"),                       # ParentNotReady
        domain("pdu", parent="util", rating=3000),
        fed("good", "pdu"), node("g1", "good", count=10),
        fed("on-ring", "below-ring"), node("r1", "on-ring", count=10),
        fed("on-cooling", "cool-loop"), node("c1", "on-cooling", count=10),
        fed("on-missing", "no-such-pdu"), node("m1", "on-missing", count=10),
        fed("on-other-site", "other-feed"), node("o1", "on-other-site", count=10),
        fed("cooled-by-pdu", cooling="pdu"), node("p1", "cooled-by-pdu", count=10),
    ]


def test_each_broken_domain_says_why_with_an_event_and_never_crashes() -> None:
    plan = run(_broken_site())
    expected = {
        "util": "PowerAllocated", "pdu": "PowerAllocated", "cool-loop": "PowerAllocated",
        "other-feed": "PowerAllocated", "orphan": "ClusterNotFound", "lost": "ParentNotFound",
        "alien": "ParentMismatch", "mixed": "ParentMismatch", "ring-a": "CycleDetected",
        "ring-b": "CycleDetected", "below-ring": "ParentNotReady", "below-lost": "ParentNotReady",
    }
    assert {n: ready(st(plan, "PowerDomain", n))[1] for n in expected} == expected
    warned = {(e.key[2], e.reason) for e in plan.events if e.key[0] == "PowerDomain" and e.type == "Warning"}
    assert warned == {(n, r) for n, r in expected.items() if r != "PowerAllocated"}
    ring = st(plan, "PowerDomain", "ring-a")
    assert cond(ring, "Ready")["message"] == "its chain of parents loops: ring-a -> ring-b -> ring-a"
    assert ring["path"] == ["ring-b", "ring-a"]
    assert cond(ring, "Overcommitted")["status"] == "Unknown"
    assert "ParentNotFound" in cond(st(plan, "PowerDomain", "below-lost"), "Ready")["message"]
    assert "other" in cond(st(plan, "PowerDomain", "alien"), "Ready")["message"]
    assert "Cooling" in cond(st(plan, "PowerDomain", "mixed"), "Ready")["message"]


def test_a_rack_on_a_broken_path_gets_its_floor_and_says_which_domain_and_why() -> None:
    plan = run(_broken_site())
    why = {
        "on-ring": "PowerDomain below-ring is not ready (ParentNotReady",
        "on-cooling": "PowerDomain cool-loop is a Cooling domain; powerDomainRef needs a Electrical",
        "on-missing": "PowerDomain no-such-pdu not found in namespace",
        "on-other-site": "PowerDomain other-feed belongs to StargateCluster other, not site",
        "cooled-by-pdu": "coolingDomainRef pdu: PowerDomain pdu is a Electrical domain",
    }
    for name, words in why.items():
        r = st(plan, "Rack", name)
        assert ready(r) == ("False", "PowerPathInvalid"), name
        assert words in cond(r, "Ready")["message"], cond(r, "Ready")["message"]
        assert r["power"]["budgetWatts"] == r["power"]["floorWatts"] == 1000
        assert "limitedBy" not in r["power"]
        assert any(e.key == ("Rack", NS, name) and e.reason == "PowerPathInvalid" for e in plan.events)
    # the good rack plans as if the broken part were not there: the pdu's 2000 W beyond its floor
    assert st(plan, "Rack", "good")["power"]["budgetWatts"] == 3000
    assert st(plan, "PowerDomain", "pdu")["racks"] == 1
    # a broken path counts against the site only
    site = st(plan, "StargateCluster", "site")
    assert site["power"]["floorWatts"] == 6 * 1000 and site["power"]["allocatedWatts"] == 3000 + 5 * 1000


def test_broken_references_are_reported_once_and_a_fix_clears_them() -> None:
    objs = _broken_site()
    plan = run(objs)
    again = run(feed_back(objs, plan))
    assert again.events == []
    assert again.statuses == plan.statuses
    for o in objs:  # ring-b goes to the top of its tree: the loop is broken
        if o["metadata"]["name"] == "ring-b":
            del o["spec"]["parentRef"]
    later = run(feed_back(objs, plan))
    assert st(later, "PowerDomain", "below-ring")["path"] == ["ring-b", "ring-a", "below-ring"]
    assert ready(st(later, "PowerDomain", "below-ring")) == ("True", "PowerAllocated")
    assert ready(st(later, "Rack", "on-ring")) == ("True", "PowerAllocated")
    assert st(later, "Rack", "on-ring")["power"]["budgetWatts"] == 5000
    assert ("Rack", NS, "on-ring") not in {e.key for e in later.events}


def test_long_chains_and_loops_cost_no_recursion() -> None:
    objs: list[dict[str, Any]] = [cluster()]
    for i in range(3000):  # a chain far deeper than the recursion limit, and a loop as long
        objs.append(domain(f"d{i}", parent=f"d{i - 1}" if i else None))
        objs.append(domain(f"l{i}", parent=f"l{(i + 1) % 3000}"))
    objs += [fed("deep", "d2999"), node("n", "deep")]
    plan = run(objs)
    deep = st(plan, "PowerDomain", "d2999")
    assert ready(deep) == ("True", "PowerAllocated") and len(deep["path"]) == 64
    assert deep["path"][-1] == "d2999" and deep["path"][0] == "d2936"
    assert ready(st(plan, "PowerDomain", "l1234")) == ("False", "CycleDetected")
    assert st(plan, "Rack", "deep")["power"]["budgetWatts"] == 500


def test_the_tree_leaves_no_reference_cycles_behind() -> None:
    # plan_namespace pauses the garbage collector: records that point at each other would stay.
    gc.collect()
    gc.disable()
    try:
        run(_broken_site())
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_the_benchmark_tree_plans_and_a_cache_gives_the_same_result() -> None:
    from stargate_operator.core import CoreSettings, PlanCache, plan_namespace
    from stargate_operator.fixtures.synth import SYNTH_NOW, synthetic_site

    objs = synthetic_site(3000, seed=7, namespace=NS, tree=True)
    small = synthetic_site(300, seed=7, namespace=NS, tree=True)
    untreed = [_without_refs(o) for o in small if o["kind"] != "PowerDomain"]
    assert untreed == synthetic_site(300, seed=7, namespace=NS), "tree=False is the site as it was"
    settings = CoreSettings()
    cache = PlanCache()
    cold = plan_namespace(objs, SYNTH_NOW, settings)
    domains = {k[2]: v for k, v in cold.statuses.items() if k[0] == "PowerDomain"}
    assert len(domains) == 1 + 2 + 8 + 40 + 400 + 100
    assert all(cond(d, "Ready")["status"] == "True" for d in domains.values())
    assert len(domains["rpp-123"]["path"]) == 5 and domains["rpp-123"]["path"][0] == "utility"
    assert any(cond(d, "Constrained")["status"] == "True" for n, d in domains.items() if n.startswith("rpp"))
    assert any(cond(d, "Constrained")["status"] == "True" for n, d in domains.items() if n.startswith("cdu"))
    assert plan_namespace(objs, SYNTH_NOW, settings, cache).statuses == cold.statuses
    # One RPP rebuilt bigger: with the cache, exactly what a cold recomputation gives.
    rpp = next(o for o in objs if o["metadata"]["name"] == "rpp-010")
    bigger = {**rpp, "metadata": {**rpp["metadata"], "resourceVersion": "9-bigger"},
              "spec": {**rpp["spec"], "ratingWatts": rpp["spec"]["ratingWatts"] * 2}}
    changed = [bigger if o is rpp else o for o in objs]
    warm = plan_namespace(changed, SYNTH_NOW, settings, cache)
    again = plan_namespace(changed, SYNTH_NOW, settings)
    assert warm.statuses == again.statuses
    assert warm.statuses != cold.statuses


def _without_refs(o: dict[str, Any]) -> dict[str, Any]:
    if o["kind"] != "Rack":
        return o
    return {**o, "spec": {k: v for k, v in o["spec"].items() if not k.endswith("DomainRef")}}


# ---- the flat between-racks rule, kept as the reference for sites without domains ----------

def part1_between_racks(budget: int, racks: list[tuple[int, int, int]]) -> list[int]:
    """The flat rule between racks, as core/allocation.py computed it before power trees: (floor, demand,
    priority) per rack -> budgets."""
    out = [f for f, _, _ in racks]
    floors = sum(out)
    if floors > budget:
        return out
    remainder = budget - floors
    levels: dict[int, list[int]] = {}
    for i, (_, _, p) in enumerate(racks):
        levels.setdefault(p, []).append(i)
    for priority in sorted(levels, reverse=True):
        level = levels[priority]
        rooms = [max(racks[i][1] - racks[i][0], 0) for i in level]
        shares, filled = max_min_shares(rooms, remainder)
        for i, share in zip(level, shares, strict=True):
            out[i] += share
            remainder -= share
        if not filled:
            break
    return out


# ---- random sites with trees ---------------------------------------------------------------





# ---- an independent reading of the domains' validity rules, for the properties -------------







def _rack(plan: Plan, name: str) -> dict[str, Any]:
    return plan.statuses[("Rack", NS, name)]


def _capacity(plan: Plan, name: str, objs: list[dict[str, Any]]) -> tuple[int, bool, int]:
    """(capacity, overcommitted, allocated beneath) of a constraint, from the plan's statuses."""
    if name in specs_of(objs, "StargateCluster"):
        s = plan.statuses[("StargateCluster", NS, name)]
        return s["power"]["budgetWatts"], s["power"]["floorWatts"] > s["power"]["budgetWatts"], \
            s["power"]["allocatedWatts"]
    s = plan.statuses[("PowerDomain", NS, name)]
    return s["usableWatts"], s["floorWatts"] > s["usableWatts"], s["allocatedWatts"]


@PROPS
@given(tree_sites())
def test_invariants_of_section_10(objs: list[dict[str, Any]]) -> None:
    plan = run(objs)
    verdicts = expected_verdicts(objs)
    above = expected_constraints(objs)
    # validity: every domain's Ready says what the rules say
    for name, problem in verdicts.items():
        s = plan.statuses[("PowerDomain", NS, name)]
        c = cond(s, "Ready")
        if problem is None:
            assert c["reason"] in ("PowerAllocated", "Overcommitted"), (name, c)
        else:
            assert (c["status"], c["reason"]) == ("False", problem), (name, c)
            assert s["racks"] == 0 and s["allocatedWatts"] == 0
            assert any(e.key == ("PowerDomain", NS, name) and e.reason == problem for e in plan.events)
    beneath: dict[str, list[str]] = {}
    for rack_name, cs in above.items():
        r = _rack(plan, rack_name)
        floor, demand, budget = (r["power"][k] for k in ("floorWatts", "demandWatts", "budgetWatts"))
        # every rack gets at least its floor and at most max(floor, demand)
        assert floor <= budget <= max(floor, demand), rack_name
        if cs is None:
            assert ready(r) == ("False", "PowerPathInvalid") and budget == floor
            beneath.setdefault(specs_of(objs, "Rack")[rack_name]["clusterRef"], []).append(rack_name)
            continue
        assert ready(r)[1] != "PowerPathInvalid"
        for above_it in cs:
            beneath.setdefault(above_it, []).append(rack_name)
        # every rack below its demand has a closed constraint above it, named by limitedBy
        if budget < demand:
            limiter = r["power"].get("limitedBy")
            assert limiter in cs, (rack_name, limiter, cs)
            capacity, over, allocated = _capacity(plan, limiter, objs)
            closed_racks = len([x for x in above if above[x] is not None and limiter in (above[x] or [])])
            assert over or capacity - allocated < closed_racks, (rack_name, limiter)
        else:
            assert "limitedBy" not in r["power"]
    # for every constraint, the budgets beneath are at most its capacity unless it is overcommitted
    for constraint, racks in beneath.items():
        capacity, over, allocated = _capacity(plan, constraint, objs)
        total = sum(_rack(plan, x)["power"]["budgetWatts"] for x in racks)
        assert total == allocated, constraint
        assert over or total <= capacity, (constraint, total, capacity)
    for name, problem in verdicts.items():
        s = plan.statuses[("PowerDomain", NS, name)]
        if problem is None:
            mine = beneath.get(name, [])
            assert s["racks"] == len(mine)
            assert s["floorWatts"] == sum(_rack(plan, x)["power"]["floorWatts"] for x in mine)
            assert s["demandWatts"] == sum(_rack(plan, x)["power"]["demandWatts"] for x in mine)
            assert s["headroomWatts"] == s["usableWatts"] - s["allocatedWatts"]
            assert (cond(s, "Overcommitted")["status"] == "True") == (s["floorWatts"] > s["usableWatts"])
            assert (cond(s, "Constrained")["status"] == "True") == (s["demandWatts"] > s["usableWatts"])
            assert (cond(s, "OverLimit")["status"] == "True") == (s["measuredWatts"] > s["usableWatts"])
            assert s["path"][-1] == name and "parentRef" not in specs_of(objs, "PowerDomain")[s["path"][0]]


@PROPS
@given(dense_sites())
def test_invariants_of_section_10_where_constraints_cross(objs: list[dict[str, Any]]) -> None:
    test_invariants_of_section_10.hypothesis.inner_test(objs)  # type: ignore[attr-defined]


@PROPS
@given(tree_sites(), hs.randoms(use_true_random=False))
def test_the_order_of_the_input_never_matters(objs: list[dict[str, Any]], rnd: random.Random) -> None:
    plan = run(objs)
    shuffled = list(objs)
    rnd.shuffle(shuffled)
    again = run(shuffled)
    assert again.statuses == plan.statuses
    assert again.events == plan.events


@PROPS
@given(tree_sites(), hs.data())
def test_raising_a_racks_priority_never_lowers_its_budget(objs: list[dict[str, Any]],
                                                          data: hs.DataObject) -> None:
    racks = [o for o in objs if o["kind"] == "Rack"]
    if not racks:
        return
    target = data.draw(hs.sampled_from(racks))
    before = run(objs)
    old = target["spec"]["priority"]
    raised = data.draw(hs.integers(old, 1000))
    bumped = [{**o, "spec": {**o["spec"], "priority": raised}} if o is target else o for o in objs]
    after = run(bumped)
    name = target["metadata"]["name"]
    assert _rack(after, name)["power"]["budgetWatts"] >= _rack(before, name)["power"]["budgetWatts"]


@PROPS
@given(dense_sites(), hs.data())
def test_raising_a_racks_priority_never_lowers_its_budget_where_constraints_cross(
    objs: list[dict[str, Any]], data: hs.DataObject
) -> None:
    test_raising_a_racks_priority_never_lowers_its_budget.hypothesis.inner_test(  # type: ignore[attr-defined]
        objs, data)


@PROPS
@given(tree_sites(broken=False, domains=False))
def test_a_site_without_domains_plans_exactly_as_part_one(objs: list[dict[str, Any]]) -> None:
    plan = run(objs)
    for site in specs_of(objs, "StargateCluster"):
        names = [n for n, s in specs_of(objs, "Rack").items() if s["clusterRef"] == site]
        figures = [(_rack(plan, n)["power"]["floorWatts"], _rack(plan, n)["power"]["demandWatts"],
                    specs_of(objs, "Rack")[n]["priority"]) for n in names]
        budget = plan.statuses[("StargateCluster", NS, site)]["power"]["budgetWatts"]
        assert [_rack(plan, n)["power"]["budgetWatts"] for n in names] == part1_between_racks(budget, figures)


@PROPS
@given(tree_sites(broken=False))
def test_domains_that_never_bind_change_no_budget(objs: list[dict[str, Any]]) -> None:
    roomy = []
    for o in objs:
        if o["kind"] == "PowerDomain":
            spec = {k: v for k, v in o["spec"].items() if k != "electrical"}
            o = {**o, "spec": {**spec, "ratingWatts": 10**11, "deratePercent": 100}}
        roomy.append(o)
    above = expected_constraints(roomy)
    bare = [{**o, "spec": {k: v for k, v in o["spec"].items() if not k.endswith("DomainRef")}}
            if o["kind"] == "Rack" and above.get(o["metadata"]["name"]) is not None else o for o in roomy]
    with_domains, without = run(roomy), run(bare)
    for key, status in without.statuses.items():
        if key[0] == "Rack":
            assert with_domains.statuses[key]["power"]["budgetWatts"] == status["power"]["budgetWatts"], key


@PROPS
@given(tree_sites())
def test_the_rest_of_the_site_plans_as_if_the_broken_part_were_not_there(objs: list[dict[str, Any]]) -> None:
    verdicts = expected_verdicts(objs)
    above = expected_constraints(objs)
    plan = run(objs)
    # Without the invalid domains, and with each rack of a broken path asking for its floor only
    # (requested power at the minimum) and naming no domain, every budget is the same.
    invalid_racks = {n for n, cs in above.items() if cs is None}
    clean: list[dict[str, Any]] = []
    for o in objs:
        if o["kind"] == "PowerDomain" and verdicts[o["metadata"]["name"]] is not None:
            continue
        if o["kind"] == "Rack" and o["metadata"]["name"] in invalid_racks:
            o = {**o, "spec": {k: v for k, v in o["spec"].items() if not k.endswith("DomainRef")}}
        if o["kind"] == "GPUNode" and o["spec"]["rackRef"] in invalid_racks:
            gpu = {**o["spec"]["gpu"], "requestedPowerWatts": o["spec"]["gpu"]["minPowerWatts"]}
            o = {**o, "spec": {**o["spec"], "gpu": gpu}}
        clean.append(o)
    other = run(clean)
    for key, status in plan.statuses.items():
        if key[0] == "Rack":
            assert other.statuses[key]["power"]["budgetWatts"] == status["power"]["budgetWatts"], key
        if key[0] == "PowerDomain" and verdicts[key[2]] is None:
            theirs = other.statuses[key]
            assert {k: v for k, v in theirs.items() if k != "conditions"} == \
                {k: v for k, v in status.items() if k != "conditions"}, key


@PROPS
@given(tree_sites())
def test_an_unchanged_site_plans_to_the_same_statuses_with_no_events(objs: list[dict[str, Any]]) -> None:
    plan = run(objs)
    again = run(feed_back(objs, plan))
    assert again.statuses == plan.statuses
    assert again.events == []
