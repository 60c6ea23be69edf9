"""Grid events: targets on the site and on a feed, the strictest active event per
constraint, the site's curtailment as one more event, phases by time, Met, Events; hand-computed
cases first, then hypothesis properties over random trees with random schedules."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from helpers.core_objects import NOW, NS, cluster, cond, feed_back, node, rack, run, st, ts
from helpers.domains import domain, fed, tree_sites
from helpers.gridevents import H, gev
from stargate_operator.core import Plan
from stargate_operator.core.gridevents import domain_target, phase_at, site_target
from stargate_operator.core.power import site_budget

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])




def ready(status: dict[str, Any]) -> tuple[str, str]:
    c = cond(status, "Ready")
    return c["status"], c["reason"]


def met(status: dict[str, Any]) -> tuple[str, str]:
    c = cond(status, "Met")
    return c["status"], c["reason"]


def budget(plan: Plan, name: str = "site") -> int:
    return int(st(plan, "StargateCluster", name)["power"]["budgetWatts"])


def rack_budgets(plan: Plan) -> dict[str, int]:
    return {k[2]: v["power"]["budgetWatts"] for k, v in plan.statuses.items() if k[0] == "Rack"}


def reasons(plan: Plan, name: str) -> list[str]:
    return [e.reason for e in plan.events if e.key == ("GridEvent", NS, name)]


def _site(it: int = 100_000, reserve: int = 10, **kw: Any) -> list[dict[str, Any]]:
    # Two racks, each 4 nodes of 1 GPU 100..500 W: floor 400, demand 2000 a rack; the feed above
    # `hi` has 10,000 W usable.
    return [
        cluster(it=it, reserve=reserve, **kw),
        domain("feed", role="Utility", rating=10_000),
        fed("hi", "feed", priority=900), fed("lo", priority=100),
        *(node(f"hi-{i}", "hi") for i in range(4)), *(node(f"lo-{i}", "lo") for i in range(4)),
    ]


# ---- targets -------------------------------------------------------------------------------

def test_a_site_event_is_a_curtailment_or_a_cap_on_the_budget() -> None:
    # 100,000 W less 10 % reserve = 90,000; shedding 25 %: floor(100000 x 0.9 x 0.75) = 67,500.
    assert site_target(100_000, 10, 25, None) == 67_500 == site_budget(100_000, 10, 25)
    assert site_target(100_000, 10, None, 50_000) == 50_000
    assert site_target(100_000, 10, None, 95_000) == 90_000  # a cap above the budget changes nothing
    assert site_target(100_000, 10, 100, None) == 0
    plan = run([*_site(), gev("dr", percent=25)])
    assert budget(plan) == 67_500
    s = st(plan, "GridEvent", "dr")
    assert (s["phase"], s["targetWatts"]) == ("Active", 67_500)
    assert "GridEvent dr in effect" in cond(st(plan, "StargateCluster", "site"), "Ready")["message"]


def test_a_domain_event_lowers_its_usable_power() -> None:
    assert domain_target(10_000, 30, None) == 7_000
    assert domain_target(999, 50, None) == 499  # rounded down
    assert domain_target(10_000, None, 12_000) == 10_000 and domain_target(10_000, None, 900) == 900
    # feed usable 10,000 lowered to 1,000: hi (floor 400, demand 2000) gets 1,000 and says why
    plan = run([*_site(), gev("feed-cap", domain_ref="feed", limit=1_000)])
    feed = st(plan, "PowerDomain", "feed")
    assert (feed["ratingWatts"], feed["usableWatts"], feed["headroomWatts"]) == (10_000, 1_000, 0)
    hi = st(plan, "Rack", "hi")
    assert (hi["power"]["budgetWatts"], hi["power"]["limitedBy"]) == (1_000, "feed")
    assert "limited by Utility feed, usable 1000 W" in cond(hi, "PowerCapped")["message"]
    assert st(plan, "Rack", "lo")["power"]["budgetWatts"] == 2_000  # not beneath the feed
    assert budget(plan) == 90_000  # the site's budget is untouched
    s = st(plan, "GridEvent", "feed-cap")
    assert (s["targetWatts"], s["allocatedWatts"], s["measuredWatts"]) == (1_000, 1_000, 0)
    assert met(s) == ("True", "WithinTarget")


def test_the_strictest_active_event_wins_and_the_curtailment_is_one_more() -> None:
    # curtailment 20 %: 72,000; events: 30 % -> 63,000; a cap of 70,000; a scheduled 90 % event
    objs = [*_site(curtail=20), gev("a", percent=30), gev("b", limit=70_000),
            gev("later", percent=90, start=NOW + H)]
    plan = run(objs)
    assert budget(plan) == 63_000
    assert {k: st(plan, "GridEvent", k)["targetWatts"] for k in ("a", "b", "later")} == {
        "a": 63_000, "b": 70_000, "later": 9_000}
    # every active one is met: the allocation beneath the site is within each target
    assert met(st(plan, "GridEvent", "b")) == ("True", "WithinTarget")
    assert met(st(plan, "GridEvent", "later")) == ("Unknown", "NotStarted")
    # a cap below the curtailment's budget: the cap wins
    assert budget(run([*_site(curtail=20), gev("b", limit=1_000)])) == 1_000
    # without events, the curtailment alone, as before
    assert budget(run(_site(curtail=20))) == 72_000


def test_a_curtailment_and_the_same_event_plan_alike() -> None:
    a = run(_site(curtail=35))
    b = run([*_site(), gev("dr", percent=35)])
    assert rack_budgets(a) == rack_budgets(b) and budget(a) == budget(b)


# ---- phases and timers ---------------------------------------------------------------------

def test_phases_follow_the_clock_and_the_next_change_is_every_start_and_end() -> None:
    start, end = NOW + timedelta(minutes=10), NOW + timedelta(minutes=40)
    objs = [*_site(), gev("dr", start=start, end=end, limit=500), gev("open", start=NOW + 2 * H, percent=10)]
    seen = []
    for at in (NOW, start - timedelta(seconds=1), start, end - timedelta(seconds=1), end, NOW + 3 * H):
        plan = run(objs, now=at)
        seen.append((st(plan, "GridEvent", "dr")["phase"], st(plan, "GridEvent", "open")["phase"],
                     budget(plan), plan.next_change_at))
    assert seen == [
        ("Scheduled", "Scheduled", 90_000, start),
        ("Scheduled", "Scheduled", 90_000, start),
        ("Active", "Scheduled", 500, end),  # below the racks' floors (800 W): overcommitted
        ("Active", "Scheduled", 500, end),
        ("Completed", "Scheduled", 90_000, NOW + 2 * H),
        ("Completed", "Active", 81_000, None),  # open-ended: nothing is pending
    ]
    assert phase_at(10.0, 20.0, 10.0) == "Active" and phase_at(10.0, 20.0, 20.0) == "Completed"


def test_met_says_whether_the_floors_or_the_measured_power_are_above_the_target() -> None:
    telemetry = {"powerWatts": 1_900, "healthyGPUs": 1, "observedAt": ts(NOW - timedelta(seconds=5))}
    objs = [cluster(it=100_000, reserve=0), rack("r"),
            *(node(f"n{i}", "r", telemetry=telemetry) for i in range(4))]  # floors 400, measured 7,600
    s = st(run([*objs, gev("dr", limit=300)]), "GridEvent", "dr")
    assert met(s) == ("False", "FloorsAboveTarget") and s["allocatedWatts"] == 400
    assert "floors beneath StargateCluster site need 400 W, above the target 300 W" in \
        cond(s, "Met")["message"]
    s = st(run([*objs, gev("dr", limit=5_000)]), "GridEvent", "dr")
    assert met(s) == ("False", "MeasuredAboveTarget")  # the demand, 2,000 W, fits; the draw does not
    assert (s["allocatedWatts"], s["measuredWatts"], s["targetWatts"]) == (2_000, 7_600, 5_000)
    s = st(run([*objs, gev("dr", limit=8_000)]), "GridEvent", "dr")
    assert met(s) == ("True", "WithinTarget") and s["allocatedWatts"] == 2_000


def test_started_not_met_ended_and_the_record_it_leaves() -> None:
    telemetry = {"powerWatts": 1_900, "healthyGPUs": 1, "observedAt": ts(NOW + timedelta(minutes=25))}
    objs = [cluster(it=100_000, reserve=0), rack("r"), *(node(f"n{i}", "r") for i in range(4)),
            gev("dr", start=NOW + timedelta(minutes=10), end=NOW + timedelta(minutes=40), limit=5_000)]
    plan = run(objs)
    assert reasons(plan, "dr") == [] and ready(st(plan, "GridEvent", "dr")) == ("True", "Scheduled")
    objs = feed_back(objs, plan)
    plan = run(objs, now=NOW + timedelta(minutes=10, milliseconds=40))
    assert reasons(plan, "dr") == ["GridEventStarted"]
    assert st(plan, "GridEvent", "dr")["appliedAt"] == "2026-01-01T12:10:00.040Z"  # the planner's instant
    assert met(st(plan, "GridEvent", "dr")) == ("True", "WithinTarget")  # nothing measured yet
    objs = feed_back(objs, plan)
    assert reasons(run(objs, now=NOW + timedelta(minutes=11)), "dr") == []  # no news, no Event
    # the agents report 7,600 W: above the 5,000 W target
    objs = [{**o, "status": {**o["status"], "telemetry": telemetry}} if o["kind"] == "GPUNode" else o
            for o in objs]
    plan = run(objs, now=NOW + timedelta(minutes=25, seconds=5))
    assert reasons(plan, "dr") == ["GridEventNotMet"]
    warned = next(e for e in plan.events if e.reason == "GridEventNotMet")
    assert warned.type == "Warning" and "measured 7600 W" in warned.message
    objs = feed_back(objs, plan)
    plan = run(objs, now=NOW + timedelta(minutes=40))
    assert reasons(plan, "dr") == ["GridEventEnded"]
    s = st(plan, "GridEvent", "dr")
    # completed: the figures and the verdict it ended with are kept, as a record
    assert s["phase"] == "Completed" and met(s) == ("False", "MeasuredAboveTarget")
    assert (s["targetWatts"], s["allocatedWatts"], s["measuredWatts"]) == (5_000, 2_000, 7_600)
    assert (s["appliedAt"], s["liftedAt"]) == ("2026-01-01T12:10:00.040Z", "2026-01-01T12:40:00Z")
    assert budget(plan) == 100_000
    objs = feed_back(objs, plan)
    later = run(objs, now=NOW + 5 * H)
    assert later.statuses == plan.statuses and reasons(later, "dr") == []


def test_an_event_completed_before_it_was_seen_says_so() -> None:
    s = st(run([*_site(), gev("old", start=NOW - 3 * H, end=NOW - H, percent=50)]), "GridEvent", "old")
    assert s["phase"] == "Completed" and met(s) == ("Unknown", "NotObserved")
    assert "allocatedWatts" not in s and s["targetWatts"] == 45_000


def test_an_edited_event_moves_its_cap_and_a_deleted_one_lifts_it() -> None:
    objs = [*_site(), gev("dr", percent=50)]
    plan = run(objs)
    assert budget(plan) == 45_000
    objs = feed_back(objs, plan)
    edited = [o if o["kind"] != "GridEvent" else {**o, "metadata": {**o["metadata"], "generation": 2},
                                                  "spec": {**o["spec"], "reducePercent": 10}}
              for o in objs]
    plan = run(edited)
    assert budget(plan) == 81_000 and st(plan, "GridEvent", "dr")["observedGeneration"] == 2
    assert reasons(plan, "dr") == []  # still the same event in effect
    deferred = [o if o["kind"] != "GridEvent" else {**o, "spec": {**o["spec"], "start": ts(NOW + H)}}
                for o in objs]
    plan = run(deferred)
    assert budget(plan) == 90_000 and reasons(plan, "dr") == ["GridEventEnded"]
    assert st(plan, "GridEvent", "dr")["liftedAt"] == "2026-01-01T12:00:00Z"
    assert "appliedAt" not in st(run(feed_back(deferred, plan)), "GridEvent", "dr")  # rescheduled
    assert budget(run([o for o in objs if o["kind"] != "GridEvent"])) == 90_000


# ---- events that apply to nothing -----------------------------------------------------------

def test_an_event_naming_a_missing_or_wrong_target_changes_nothing_else() -> None:
    base = [*_site(), cluster("other", it=50_000), domain("cdu", type_="Cooling", rating=50_000),
            domain("far", cluster_ref="other", rating=50_000), domain("lost", parent="nowhere", rating=9)]
    bad = [gev("no-site", cluster_ref="gone", limit=0), gev("no-domain", domain_ref="nope", limit=0),
           gev("cooling", domain_ref="cdu", limit=0), gev("elsewhere", domain_ref="far", limit=0),
           gev("invalid", domain_ref="lost", limit=0)]
    clean = run(base)
    plan = run([*base, *bad])
    for key, status in clean.statuses.items():
        assert plan.statuses[key] == status, key
    expected = {"no-site": "ClusterNotFound", "no-domain": "PowerDomainNotFound",
                "cooling": "PowerDomainMismatch", "elsewhere": "PowerDomainMismatch",
                "invalid": "PowerDomainNotReady"}
    for name, reason in expected.items():
        s = st(plan, "GridEvent", name)
        assert ready(s) == ("False", reason) and met(s) == ("Unknown", reason), name
        assert s["phase"] == "Active" and "targetWatts" not in s and "allocatedWatts" not in s
        assert "changes nothing" in cond(s, "Ready")["message"]
        assert reasons(plan, name) == [reason], name  # a Warning, and no GridEventStarted
    assert "Cooling domain" in cond(st(plan, "GridEvent", "cooling"), "Ready")["message"]
    again = run(feed_back([*base, *bad], plan))
    assert [e for e in again.events if e.key[0] == "GridEvent"] == []
    # the site appears: the event applies at once and says so
    fixed = run([*feed_back([*base, *bad], plan), cluster("gone", it=10_000)])
    assert budget(fixed, "gone") == 0 and reasons(fixed, "no-site") == ["GridEventStarted"]


# ---- properties over random trees and schedules ---------------------------------------------

OFFSETS = [-7200, -600, -1, 0, 1, 600, 7200]


@hs.composite
def scheduled_sites(draw: hs.DrawFn) -> list[dict[str, Any]]:
    """tree_sites with a site curtailment or not, and 0 to 6 events on its sites, domains of both
    types and missing ones, at offsets around NOW, with either kind of target."""
    objs = draw(tree_sites())
    if draw(hs.booleans()):
        site = objs[0]["spec"]["power"]
        site["curtailment"] = {"percent": draw(hs.integers(0, 100)), "reason": "peak"}
    clusters = [o["metadata"]["name"] for o in objs if o["kind"] == "StargateCluster"]
    domains = [o["metadata"]["name"] for o in objs if o["kind"] == "PowerDomain"]
    for i in range(draw(hs.integers(0, 6))):
        start = NOW + timedelta(seconds=draw(hs.sampled_from(OFFSETS)))
        end = draw(hs.none() | hs.sampled_from(OFFSETS).map(lambda s: NOW + timedelta(seconds=s)))
        if end is not None and end <= start:
            end = None
        on = draw(hs.sampled_from([None, None, *domains, "missing"]))
        target = {"percent": draw(hs.integers(1, 100))} if draw(hs.booleans()) else {
            "limit": draw(hs.integers(0, 60_000))}
        objs.append(gev(f"ev{i}", cluster_ref=draw(hs.sampled_from([*clusters, clusters[0], "gone"])),
                        domain_ref=on, start=start, end=end, **target))
    return objs


def _active_targets(plan: Plan, objs: list[dict[str, Any]]) -> dict[tuple[str, str], list[int]]:
    """(kind, name) of each constraint -> the targets of the valid active events on it."""
    out: dict[tuple[str, str], list[int]] = {}
    for o in objs:
        if o["kind"] != "GridEvent":
            continue
        s = st(plan, "GridEvent", o["metadata"]["name"])
        if s["phase"] == "Active" and ready(s)[0] == "True":
            ref = o["spec"].get("powerDomainRef")
            key = ("PowerDomain", ref) if ref else ("StargateCluster", o["spec"]["clusterRef"])
            out.setdefault(key, []).append(s["targetWatts"])
    return out


def _no_events(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] != "GridEvent"]


@PROPS
@given(scheduled_sites())
def test_the_lowest_capacity_wins_on_every_constraint(objs: list[dict[str, Any]]) -> None:
    plan = run(objs)
    without = run(_no_events(objs))
    targets = _active_targets(plan, objs)
    for key, status in without.statuses.items():
        kind, name = key[0], key[2]
        if kind == "StargateCluster":
            expected = min([status["power"]["budgetWatts"], *targets.get((kind, name), [])])
            assert st(plan, kind, name)["power"]["budgetWatts"] == expected, name
        elif kind == "PowerDomain":
            expected = min([status["usableWatts"], *targets.get((kind, name), [])])
            assert st(plan, kind, name)["usableWatts"] == expected, name
            assert st(plan, kind, name)["ratingWatts"] == status["ratingWatts"]


@PROPS
@given(scheduled_sites())
def test_allocation_stays_within_every_active_target_unless_the_floors_exceed_it(
        objs: list[dict[str, Any]]) -> None:
    plan = run(objs)
    for o in objs:
        if o["kind"] != "GridEvent":
            continue
        s = st(plan, "GridEvent", o["metadata"]["name"])
        r, m = ready(s), met(s)
        if r[0] == "False":
            assert m == ("Unknown", r[1]) and "targetWatts" not in s
            continue
        if s["phase"] != "Active":
            assert m[0] == "Unknown" and "allocatedWatts" not in s
            continue
        ref = o["spec"].get("powerDomainRef")
        beneath = (st(plan, "PowerDomain", ref) if ref
                   else st(plan, "StargateCluster", o["spec"]["clusterRef"])["power"])
        floors, target = beneath["floorWatts"], s["targetWatts"]
        assert s["allocatedWatts"] == beneath["allocatedWatts"]
        assert s["measuredWatts"] == beneath["measuredWatts"]
        if floors > target:
            assert m == ("False", "FloorsAboveTarget")
            assert s["allocatedWatts"] <= max(floors, target)
        else:
            assert s["allocatedWatts"] <= target, (o["metadata"]["name"], s, floors)
            assert m == (("True", "WithinTarget") if s["measuredWatts"] <= target
                         else ("False", "MeasuredAboveTarget"))


@PROPS
@given(scheduled_sites())
def test_events_that_are_not_active_or_not_valid_change_nothing_else(objs: list[dict[str, Any]]) -> None:
    plan = run(objs)
    inert = [o for o in objs if o["kind"] != "GridEvent" or not (
        st(plan, "GridEvent", o["metadata"]["name"])["phase"] == "Active"
        and ready(st(plan, "GridEvent", o["metadata"]["name"]))[0] == "True")]
    with_inert = run(inert)
    without = run(_no_events(objs))
    for key, status in without.statuses.items():
        assert with_inert.statuses[key] == status, key


@PROPS
@given(scheduled_sites(), hs.randoms(use_true_random=False))
def test_the_order_of_events_never_matters(objs: list[dict[str, Any]], rnd: random.Random) -> None:
    plan = run(objs)
    shuffled = list(objs)
    rnd.shuffle(shuffled)
    other = run(shuffled)
    assert other.statuses == plan.statuses and other.next_change_at == plan.next_change_at


@PROPS
@given(scheduled_sites(), hs.data())
def test_no_phase_changes_before_the_next_change_the_timers_are_given(
        objs: list[dict[str, Any]], data: hs.DataObject) -> None:
    plan = run(objs)
    instants = [datetime.fromisoformat(o["spec"][k].replace("Z", "+00:00")) for o in objs
                if o["kind"] == "GridEvent" for k in ("start", "end") if k in o["spec"]]
    future = [t for t in instants if t > NOW]
    if future:
        assert plan.next_change_at is not None and plan.next_change_at <= min(future)
    horizon = plan.next_change_at or NOW + timedelta(days=1)
    # whole microseconds: a float fraction of the span can round up onto the change itself
    span_us = (horizon - NOW) // timedelta(microseconds=1)
    between = NOW + timedelta(microseconds=data.draw(hs.integers(0, max(span_us - 1, 0))))

    def phases(p: Plan) -> dict[str, str]:
        return {k[2]: v.get("phase", "") for k, v in p.statuses.items() if k[0] == "GridEvent"}

    assert phases(run(objs, now=between)) == phases(plan)


@PROPS
@given(scheduled_sites(), hs.sampled_from([0, 1, 601, 7201]))
def test_statuses_fed_back_are_stable_at_every_instant(objs: list[dict[str, Any]], later: int) -> None:
    # what the engine does: write the plan, read it back, recompute; later, the clock has moved
    plan = run(objs)
    objs = feed_back(objs, plan)
    again = run(objs)
    assert again.statuses == plan.statuses and again.events == []
    moved = run(objs, now=NOW + timedelta(seconds=later))
    settled = run(feed_back(objs, moved), now=NOW + timedelta(seconds=later))
    assert settled.statuses == moved.statuses
    assert [e for e in settled.events if e.key[0] == "GridEvent"] == []
