"""Oversubscription on measured draw in the core: allocation with raised capacities, reactive
capping with hysteresis
(state in status, so a restart keeps it), the Capping condition and its Events, safeLimitWatts;
hand-computed cases first, then hypothesis properties over random power trees."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from helpers.core_objects import NOW, NS, cluster, cond, feed_back, node, rack, run, slice_limits, st, ts
from helpers.domains import dense_sites, domain, expected_constraints, fed, tree_sites
from stargate_operator.core import Plan, PlanCache
from stargate_operator.core.capping import Oversubscription, parse_oversubscription, step
from stargate_operator.core.sliceplan import CampusSettings, plan_campus

PROPS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def over(percent: int = 25, cap: int = 95, uncap: int = 85, hold: int = 60) -> dict[str, int]:
    return {"percent": percent, "capAtPercent": cap, "uncapAtPercent": uncap, "holdSeconds": hold}


def tel(watts: int, at: Any = NOW, peak: int | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"powerWatts": watts, "healthyGPUs": 1, "observedAt": ts(at)}
    if peak is not None:
        t["peakPowerWatts"] = peak
    return t


def three(draws: list[int | None], *, site_over: dict[str, int] | None = None,
          peaks: list[int | None] | None = None, at: Any = NOW) -> list[dict[str, Any]]:
    """A 1000 W site, three racks of one node each (floor 100 W, demand 500 W): 333 W each without
    oversubscription (700 W over three rooms of 400), 416 W each at +25 % (950 W over the rooms)."""
    site = cluster(it=1000)
    if site_over is not None:
        site["spec"]["power"]["oversubscription"] = site_over
    objs = [site]
    for i, watts in enumerate(draws):
        objs.append(rack(f"r{i}"))
        peak = peaks[i] if peaks is not None else None
        objs.append(node(f"n{i}", f"r{i}", telemetry=None if watts is None else tel(watts, at, peak)))
    return objs


def limits(plan: Plan, n: int = 3) -> list[int]:
    return [st(plan, "GPUNode", f"n{i}")["powerLimitWatts"] for i in range(n)]


def safe(plan: Plan, n: int = 3) -> list[int]:
    return [st(plan, "GPUNode", f"n{i}")["safeLimitWatts"] for i in range(n)]


def capping(plan: Plan) -> dict[str, Any]:
    capping: dict[str, Any] = st(plan, "StargateCluster", "site")["power"]["capping"]
    return capping


def reasons(plan: Plan) -> list[str]:
    return [e.reason for e in plan.events if e.reason.startswith("Capping")]


def with_telemetry(objs: list[dict[str, Any]], draws: list[int], at: Any) -> list[dict[str, Any]]:
    out = copy.deepcopy(objs)
    for o in out:
        if o["kind"] == "GPUNode":
            o["status"]["telemetry"] = tel(draws[int(o["metadata"]["name"][1:])], at)
    return out


# ---- the rule on plain figures ---------------------------------------------------------------

def test_the_spec_is_read_with_its_defaults_and_nonsense_clamped() -> None:
    assert parse_oversubscription(None) is None
    assert parse_oversubscription({}) == Oversubscription(0, 95, 85, 60)
    assert parse_oversubscription({"percent": 30, "capAtPercent": 90, "uncapAtPercent": 95}) == \
        Oversubscription(30, 90, 89, 60)  # uncap at or above cap: just below it
    o = Oversubscription(25, 95, 85, 60)
    assert (o.allocatable(1000, False), o.allocatable(1000, True), o.lines(1000)) == (1250, 1000, (950, 850))


def test_hysteresis_step_by_step() -> None:
    o = Oversubscription(25, 95, 85, 60)
    t0 = NOW.timestamp()
    s, ev, ends = step(None, o, 949, 1000, ts(NOW), t0)
    assert (s.active, ev, ends) == (False, None, None)
    s, ev, _ = step(s, o, 950, 1000, ts(NOW), t0)
    assert (s.active, s.since, s.starts, ev) == (True, ts(NOW), 1, "CappingStarted")
    s, ev, ends = step(s, o, 849, 1000, ts(NOW + timedelta(seconds=10)), t0 + 10)
    assert (s.active, s.below_since, ev, ends) == (True, ts(NOW + timedelta(seconds=10)), None, t0 + 70)
    s2, ev, ends = step(s, o, 850, 1000, ts(NOW + timedelta(seconds=20)), t0 + 20)
    assert (s2.active, s2.below_since, ev, ends) == (True, None, None, None)  # the hold is cancelled
    s, ev, ends = step(s, o, 0, 1000, ts(NOW + timedelta(seconds=69)), t0 + 69)
    assert (s.active, ev, ends) == (True, None, t0 + 70)
    s, ev, ends = step(s, o, 0, 1000, ts(NOW + timedelta(seconds=70)), t0 + 70)
    assert (s.active, s.since, s.starts, ev) == (False, ts(NOW + timedelta(seconds=70)), 1, "CappingEnded")


# ---- the plan ----------------------------------------------------------------------------------

def test_low_measured_draw_lets_the_site_allocate_above_its_budget() -> None:
    plain = run(three([200, 200, 200]))
    assert limits(plain) == [333, 333, 333] == safe(plain)
    assert "capping" not in st(plain, "StargateCluster", "site")["power"]
    # a slice lists only the safe limits below its limits: none without oversubscription
    objs = three([200, 200, 200])
    assert slice_limits(plan_campus(objs, NOW, CampusSettings()))["n0"] == 333
    assert slice_limits(plan_campus(objs, NOW, CampusSettings()), "safeLimits") == {}
    plan = run(three([200, 200, 200], site_over=over()))
    assert limits(plan) == [416, 416, 416]  # 950 W over three rooms of 400, on top of the floors
    assert safe(plan) == [333, 333, 333]  # the same tree with no oversubscription
    assert capping(plan) == {"active": False, "since": ts(NOW), "starts": 0, "drawWatts": 600,
                             "capAtWatts": 950, "uncapAtWatts": 850, "allocatableWatts": 1250}
    c = cond(st(plan, "StargateCluster", "site"), "Capping")
    assert (c["status"], c["reason"]) == ("False", "DrawBelowCapAt")
    assert "1250 W (25 % above budget 1000 W)" in c["message"]
    assert reasons(plan) == []
    # the rack's budget exceeds what the site alone would give it, and says by what
    assert st(plan, "Rack", "r0")["power"]["budgetWatts"] == 416
    # the safe limits travel with the limits in the slices (the agents' fast path)
    sliced = plan_campus(three([200, 200, 200], site_over=over()), NOW, CampusSettings())
    assert slice_limits(sliced)["n0"] == 416
    assert slice_limits(sliced, "safeLimits")["n0"] == 333


def test_draw_at_the_cap_line_caps_within_the_real_budget_at_once_with_an_event() -> None:
    plan = run(three([320, 320, 310], site_over=over()))  # 950 W: 95 % of 1000
    assert limits(plan) == [333, 333, 333] == safe(plan)
    assert capping(plan)["active"] is True and capping(plan)["starts"] == 1
    assert reasons(plan) == ["CappingStarted"]
    event = next(e for e in plan.events if e.reason == "CappingStarted")
    assert event.type == "Warning" and event.key == ("StargateCluster", NS, "site")
    assert "draw 950 W reached 950 W (95 % of budget 1000 W)" in event.message
    c = cond(st(plan, "StargateCluster", "site"), "Capping")
    assert (c["status"], c["reason"]) == ("True", "DrawAboveCapAt")


def test_the_peak_over_the_report_window_counts_where_the_agent_gives_it() -> None:
    plan = run(three([200, 200, 200], site_over=over(), peaks=[330, 330, 290]))
    assert capping(plan)["drawWatts"] == 950 and capping(plan)["active"] is True
    # a peak below the reading is not believed
    plan = run(three([300, 300, 300], site_over=over(), peaks=[10, 10, 10]))
    assert capping(plan)["drawWatts"] == 900 and capping(plan)["active"] is False


def test_a_node_without_fresh_telemetry_counts_as_drawing_its_allocation() -> None:
    plan = run(three([200, 200, None], site_over=over()))
    assert capping(plan)["drawWatts"] == 200 + 200 + 416 and capping(plan)["active"] is False
    plan = run(three([270, 270, None], site_over=over()))  # 270 + 270 + 416 = 956
    assert capping(plan)["active"] is True and limits(plan) == [333, 333, 333]
    # stale telemetry is no reading either
    stale = three([200, 200, 200], site_over=over(), at=NOW - timedelta(seconds=500))
    plan = run(stale)
    assert capping(plan)["drawWatts"] == 3 * 416 and capping(plan)["active"] is True
    # a site that reports nothing caps at once: oversubscription needs measurement
    plan = run(three([None, None, None], site_over=over()))
    assert capping(plan)["active"] is True and limits(plan) == [333, 333, 333]


def test_capping_ends_after_the_hold_below_the_uncap_line_and_a_restart_keeps_the_state() -> None:
    objs = three([320, 320, 320], site_over=over())
    p1 = run(objs)
    assert capping(p1)["active"] is True
    t10 = NOW + timedelta(seconds=10)
    objs = with_telemetry(feed_back(objs, p1), [280, 280, 280], t10)  # 840 < 850
    p2 = run(objs, now=t10)
    assert capping(p2)["belowSince"] == ts(t10) and limits(p2) == [333, 333, 333]
    assert p2.next_change_at == NOW + timedelta(seconds=70)  # the hold ends by time alone
    c = cond(st(p2, "StargateCluster", "site"), "Capping")
    assert (c["status"], c["reason"]) == ("True", "HoldingBelowUncapAt")
    assert reasons(p2) == []
    # A restarted operator has nothing but the objects: the state comes from status.
    objs = feed_back(objs, p2)
    t69 = NOW + timedelta(seconds=69)
    p3 = run(with_telemetry(objs, [280, 280, 280], t69), now=t69)
    assert capping(p3)["active"] is True and capping(p3)["since"] == ts(NOW)
    t70 = NOW + timedelta(seconds=70)
    p4 = run(with_telemetry(objs, [280, 280, 280], t70), now=t70)
    assert capping(p4)["active"] is False and capping(p4)["since"] == ts(t70)
    assert limits(p4) == [416, 416, 416] and reasons(p4) == ["CappingEnded"]
    assert next(e for e in p4.events if e.reason == "CappingEnded").type == "Normal"
    assert capping(p4)["starts"] == 1


def test_a_draw_back_above_the_uncap_line_restarts_the_hold() -> None:
    objs = three([320, 320, 320], site_over=over())
    p1 = run(objs)
    t10 = NOW + timedelta(seconds=10)
    objs = with_telemetry(feed_back(objs, p1), [280, 280, 280], t10)
    p2 = run(objs, now=t10)
    t30 = NOW + timedelta(seconds=30)
    objs = with_telemetry(feed_back(objs, p2), [290, 290, 290], t30)  # 870 >= 850
    p3 = run(objs, now=t30)
    assert "belowSince" not in capping(p3) and capping(p3)["active"] is True
    t75 = NOW + timedelta(seconds=75)
    p4 = run(with_telemetry(feed_back(objs, p3), [280, 280, 280], t75), now=t75)
    assert capping(p4)["active"] is True and capping(p4)["belowSince"] == ts(t75)


def test_a_domain_caps_on_its_own_and_its_racks_follow() -> None:
    objs = [cluster(it=10_000),
            domain("pdu", role="FloorPDU", rating=1000),
            fed("r0", "pdu"), fed("r1", "pdu"), fed("r2", "pdu"), rack("free")]
    objs[1]["spec"]["oversubscription"] = over()
    for i in range(3):
        objs.append(node(f"n{i}", f"r{i}", telemetry=tel(200)))
    objs.append(node("n3", "free", telemetry=tel(200)))
    plan = run(objs)
    assert limits(plan, 4) == [416, 416, 416, 500]
    s = st(plan, "PowerDomain", "pdu")
    assert s["capping"]["active"] is False and s["capping"]["allocatableWatts"] == 1250
    assert s["usableWatts"] == 1000 and s["allocatedWatts"] == 1248  # limits add up above usable
    assert st(plan, "Rack", "r0")["power"]["limitedBy"] == "pdu"
    assert "allocatable 1250 W" in cond(st(plan, "Rack", "r0"), "PowerCapped")["message"]
    hot = with_telemetry(objs, [330, 330, 330, 499], NOW)
    plan = run(hot)
    assert limits(plan, 4) == [333, 333, 333, 500]
    assert st(plan, "PowerDomain", "pdu")["capping"]["active"] is True
    assert [(e.key[2], e.reason) for e in plan.events if e.reason.startswith("Capping")] == \
        [("pdu", "CappingStarted")]
    assert cond(st(plan, "PowerDomain", "pdu"), "Capping")["status"] == "True"
    assert "capping" not in st(plan, "StargateCluster", "site")["power"]  # the site sets none


def test_removing_oversubscription_while_capping_ends_it_and_clears_the_state() -> None:
    objs = three([320, 320, 320], site_over=over())
    p1 = run(objs)
    objs = feed_back(objs, p1)
    del objs[0]["spec"]["power"]["oversubscription"]
    p2 = run(objs)
    status = st(p2, "StargateCluster", "site")
    assert "capping" not in status["power"]
    assert all(c["type"] != "Capping" for c in status["conditions"])
    assert reasons(p2) == ["CappingEnded"] and limits(p2) == [333, 333, 333]
    p3 = run(feed_back(objs, p2))
    assert reasons(p3) == []


def test_a_steady_site_writes_nothing_new() -> None:
    objs = three([200, 200, 200], site_over=over())
    p1 = run(objs)
    p2 = run(feed_back(objs, p1))
    assert p2.statuses == p1.statuses and p2.events == []


# ---- properties ---------------------------------------------------------------------------------

def _oversubscribe(objs: list[dict[str, Any]], data: hs.DataObject, percent: hs.SearchStrategy[int]
                   ) -> list[dict[str, Any]]:
    out = copy.deepcopy(objs)
    for o in out:
        if o["kind"] in ("StargateCluster", "PowerDomain") and data.draw(hs.booleans()):
            cap = data.draw(hs.integers(1, 100) | hs.integers(80, 100))
            o_spec = o["spec"]["power"] if o["kind"] == "StargateCluster" else o["spec"]
            o_spec["oversubscription"] = over(data.draw(percent), cap, data.draw(hs.integers(0, cap - 1)),
                                              data.draw(hs.integers(0, 120)))
        if o["kind"] == "GPUNode" and o.get("status", {}).get("telemetry") and data.draw(hs.booleans()):
            o["status"]["telemetry"]["peakPowerWatts"] = data.draw(hs.integers(0, 3000))
    return out


def _powers(plan: Plan) -> dict[str, Any]:
    """What the allocation decided: rack power figures, node limits and allocations."""
    out: dict[str, Any] = {}
    for (kind, _, name), s in plan.statuses.items():
        if kind == "Rack":
            out[f"rack/{name}"] = s["power"]
        elif kind == "GPUNode":
            out[f"node/{name}"] = (s["powerLimitWatts"], s["allocatedWatts"])
    return out


@PROPS
@given(tree_sites(), hs.data())
def test_with_percent_zero_every_allocation_is_todays(objs: list[dict[str, Any]],
                                                      data: hs.DataObject) -> None:
    today = run(objs)
    plan = run(_oversubscribe(objs, data, hs.just(0)))
    assert _powers(plan) == _powers(today)
    for (kind, _, _), s in plan.statuses.items():
        if kind == "GPUNode":
            assert s["safeLimitWatts"] == s["powerLimitWatts"]


def specs_of(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def _check_real_capacities(objs: list[dict[str, Any]], plan: Plan) -> None:
    """Safe limits hold every real capacity; a capping constraint's budgets stay within it; one that
    is not capping stays within its allocatable capacity."""
    above = expected_constraints(objs)
    racks = specs_of(objs, "Rack")
    nodes = specs_of(objs, "GPUNode")
    safe_beneath: dict[str, int] = {}
    budget_beneath: dict[str, int] = {}
    for name in racks:
        path = above.get(name)
        key = ("Rack", NS, name)
        if path is None or key not in plan.statuses:
            continue
        budget = plan.statuses[key]["power"]["budgetWatts"]
        safe_total = 0
        for n in nodes.values():
            if n["spec"]["rackRef"] != name:
                continue
            s = plan.statuses[("GPUNode", NS, n["metadata"]["name"])]
            assert s["safeLimitWatts"] <= s["powerLimitWatts"]
            safe_total += n["spec"]["basePowerWatts"] + n["spec"]["gpu"]["count"] * s["safeLimitWatts"]
        for c in path:
            safe_beneath[c] = safe_beneath.get(c, 0) + safe_total
            budget_beneath[c] = budget_beneath.get(c, 0) + budget
    for c in safe_beneath:
        if ("StargateCluster", NS, c) in plan.statuses:
            s = plan.statuses[("StargateCluster", NS, c)]["power"]
            real, floors, state = s["budgetWatts"], s["floorWatts"], s.get("capping")
        else:
            s = plan.statuses[("PowerDomain", NS, c)]
            real, floors, state = s["usableWatts"], s["floorWatts"], s.get("capping")
        if floors > real:
            continue  # overcommitted: floors are all it passes
        assert safe_beneath[c] <= real, c
        if state is not None and state["active"]:
            assert budget_beneath[c] <= real, c
        elif state is not None:
            assert budget_beneath[c] <= max(state["allocatableWatts"], floors), c


@PROPS
@given(tree_sites(), hs.data())
def test_safe_limits_hold_real_capacities_and_capping_allocates_within_them(
        objs: list[dict[str, Any]], data: hs.DataObject) -> None:
    objs = _oversubscribe(objs, data, hs.integers(0, 100))
    plan = run(objs)
    _check_real_capacities(objs, plan)
    # a plan fed back (the state in status) is judged the same way, later
    later = NOW + timedelta(seconds=data.draw(hs.integers(0, 200)))
    _check_real_capacities(objs, run(feed_back(objs, plan), now=later))


@PROPS
@given(dense_sites(), hs.data())
def test_safe_limits_hold_where_constraints_cross(objs: list[dict[str, Any]], data: hs.DataObject) -> None:
    for o in objs:  # most nodes report, and low: oversubscription has room to act
        if o["kind"] == "GPUNode" and data.draw(hs.integers(0, 9)) > 0:
            o["status"] = {"telemetry": tel(data.draw(hs.integers(0, 1500)))}
    objs = _oversubscribe(objs, data, hs.integers(0, 100))
    _check_real_capacities(objs, run(objs))


@PROPS
@given(tree_sites(), hs.data())
def test_a_cache_changes_nothing_over_a_run_of_plans(objs: list[dict[str, Any]], data: hs.DataObject) -> None:
    objs = _oversubscribe(objs, data, hs.integers(0, 60))
    cache = PlanCache()
    at = NOW
    for _ in range(3):
        cold, warm = run(objs, now=at), run(objs, now=at, cache=cache)
        assert cold.statuses == warm.statuses and cold.events == warm.events
        assert cold.next_change_at == warm.next_change_at
        objs = feed_back(objs, cold)
        at += timedelta(seconds=data.draw(hs.integers(0, 90)))


@PROPS
@given(dense_sites(), hs.data())
def test_a_quiet_site_gets_more_than_its_safe_limits_and_never_less(objs: list[dict[str, Any]],
                                                                     data: hs.DataObject) -> None:
    """Every node reports no draw: nothing caps, every constraint allocates its raised capacity."""
    for o in objs:
        if o["kind"] == "GPUNode":
            o["status"] = {"telemetry": tel(0)}
        elif o["kind"] == "StargateCluster":
            o["spec"]["power"]["oversubscription"] = over(data.draw(hs.integers(1, 100)))
        elif o["kind"] == "PowerDomain":
            o["spec"]["oversubscription"] = over(data.draw(hs.integers(0, 100)))
    plan = run(objs)
    today = run([{**o, "spec": {k: v for k, v in o["spec"].items() if k != "oversubscription"}}
                 if o["kind"] == "PowerDomain" else o for o in objs if o["kind"] != "StargateCluster"]
                + [cluster("s1", it=next(o for o in objs if o["kind"] == "StargateCluster")
                           ["spec"]["power"]["itCapacityWatts"])])
    _check_real_capacities(objs, plan)
    for (kind, _, name), s in plan.statuses.items():
        if kind == "GPUNode":
            assert s["safeLimitWatts"] == today.statuses[kind, NS, name]["powerLimitWatts"] or \
                s["safeLimitWatts"] == s["powerLimitWatts"]  # the safe limit is today's, or the limit
        if kind in ("PowerDomain", "StargateCluster"):
            state = s["capping"] if kind == "PowerDomain" else s["power"]["capping"]
            assert state["active"] is False


# ---- metrics ------------------------------------------------------------------------------------

def test_capping_is_exported_as_a_gauge_and_its_starts_as_a_counter() -> None:
    import shutil
    import subprocess

    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from stargate_operator import metrics

    objs = three([320, 320, 320], site_over=over())
    objs.insert(1, domain("pdu", rating=2000))
    objs[1]["spec"]["oversubscription"] = over(10)
    planned = feed_back(objs, run(objs))
    registry = metrics.make_registry(metrics.StaticSource(planned))
    fast = registry.render_text().decode()
    families = {f.name: f for f in text_string_to_metric_families(fast)}
    assert families["stargate_cluster_capping_starts"].type == "counter"
    assert families["stargate_domain_capping"].type == "gauge"
    site = {"namespace": NS, "cluster": "site"}
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for f in families.values() for s in f.samples}
    assert samples["stargate_cluster_capping", frozenset(site.items())] == 1
    assert samples["stargate_cluster_capping_starts_total", frozenset(site.items())] == 1
    assert samples["stargate_cluster_allocatable_watts", frozenset(site.items())] == 1000
    pdu = {**site, "domain": "pdu", "type": "Electrical", "role": "", "parent": ""}
    assert samples["stargate_domain_capping", frozenset(pdu.items())] == 0
    assert samples["stargate_domain_capping_starts_total", frozenset(pdu.items())] == 0
    assert samples["stargate_domain_capping_draw_watts", frozenset(pdu.items())] == 0  # no rack beneath
    assert samples["stargate_domain_allocatable_watts", frozenset(pdu.items())] == 2200
    # the library's rendering says the same, and promtool finds nothing to complain about
    slow = generate_latest(registry).decode()
    assert "# TYPE stargate_cluster_capping_starts_total counter" in slow.splitlines()
    assert "# TYPE stargate_cluster_capping_starts_total counter" in fast.splitlines()
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not on PATH (Debian package prometheus)"
    res = subprocess.run([promtool, "check", "metrics"], input=fast.encode(), capture_output=True,
                         check=False)
    assert res.returncode == 0, (res.stdout + res.stderr).decode()
