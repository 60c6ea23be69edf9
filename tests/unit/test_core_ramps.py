"""Ramps: the envelope on a constraint's capacity (properties over random events and rates), and the
planner following an event through its ramp: descent so the target holds at start, the rise after
end, a late event's RampTooSlow, Emergency, a site's rate over two feeds, capping that never waits,
and no ramp at all without the fields."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from helpers.core_objects import NOW, NS, cluster, cond, feed_back, node, rack, run, st, ts
from helpers.gridevents import gev
from stargate_operator.core import Plan
from stargate_operator.core.ramps import Ramp, Rates, compose, share_site_rate

PROPS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
S = timedelta(seconds=1)
T0 = 1_000_000.0


@hs.composite
def ramps(draw: Any, normal: int | None = None) -> Ramp:
    n = normal if normal is not None else draw(hs.integers(1, 2_000_000))
    target = draw(hs.integers(0, n))
    start = T0 + draw(hs.integers(0, 600))
    end = draw(hs.one_of(hs.none(), hs.integers(1, 600).map(lambda d: start + d)))
    created = draw(hs.one_of(hs.none(), hs.integers(-600, 600).map(lambda d: start + d)))
    # rates from n / 900 up: no ramp lasts longer than 15 minutes (a test of a few thousand points)
    down = draw(hs.one_of(hs.none(), hs.integers(max(n // 900, 1), max(n, 1)).map(float)))
    up = draw(hs.one_of(hs.none(), hs.integers(max(n // 900, 1), max(n, 1)).map(float)))
    return Ramp(n, target, start, end, created, down, up)


def _times(r: Ramp) -> list[float]:
    """Every second from before the descent to after the rise."""
    first = min(r.descent_start(), r.start) - 10
    last = max(r.rise_ends() or 0.0, r.end or 0.0, r.reached_at()) + 10
    return [first + i for i in range(int(last - first) + 2)]


@PROPS
@given(ramps())
def test_the_envelope_falls_then_rises_and_never_outside_target_and_normal(r: Ramp) -> None:
    caps = [compose(r.normal, [r], t) for t in _times(r)]
    assert all(r.target <= c <= r.normal for c in caps)
    lowest = caps.index(min(caps))
    assert all(a >= b for a, b in pairwise(caps[:lowest + 1]))  # monotonic down
    assert all(a <= b for a, b in pairwise(caps[lowest:]))  # then up


@PROPS
@given(ramps())
def test_no_move_over_any_5_s_window_exceeds_the_rate(r: Ramp) -> None:
    times = _times(r)
    caps = [compose(r.normal, [r], t) for t in times]
    for i in range(len(times) - 5):  # every 5 s window
        fall = caps[i] - caps[i + 5]
        if fall > 0 and r.down is not None and (r.created is None or times[i] >= r.created):
            assert fall <= r.down * 5 + 1, (times[i], fall)  # one watt of rounding
        rise = caps[i + 5] - caps[i]
        if rise > 0 and r.up is not None:
            assert rise <= r.up * 5 + 1, (times[i], rise)


@PROPS
@given(ramps())
def test_known_early_enough_the_target_holds_at_start_and_the_rise_starts_at_end(r: Ramp) -> None:
    early = r.created is None or r.start - r.created >= (0 if r.down is None else r.drop / r.down)
    if early and (r.end is None or r.end > r.start):
        assert compose(r.normal, [r], r.start) == r.target
    if r.end is not None and r.down is not None and early:
        assert compose(r.normal, [r], r.end - 0.001) == r.target
        after = compose(r.normal, [r], r.end + 1)
        expected = r.normal if r.up is None else min(r.normal, r.target + int(r.up))
        assert abs(after - expected) <= 1


@PROPS
@given(ramps(normal=1_000_000), ramps(normal=1_000_000), hs.integers(0, 5_000).map(float))
def test_envelopes_compose_by_the_minimum(a: Ramp, b: Ramp, dt: float) -> None:
    t = T0 + dt
    both = compose(1_000_000, [a, b], t)
    assert both == min(compose(1_000_000, [a], t), compose(1_000_000, [b], t))


@PROPS
@given(ramps(normal=1_000_000), ramps(normal=1_000_000), hs.integers(1, 20_000).map(float))
def test_a_sites_rate_bounds_two_feeds_ramping_together(a: Ramp, b: Ramp, site_rate: float) -> None:
    """Two feeds' capacities, added, never fall or rise faster than the site's rate."""
    a.down = a.down_used = a.down or site_rate  # a feed without its own rate ramps at the site's
    b.down = b.down_used = b.down or site_rate
    for r in (a, b):
        r.created = None
        if r.up is not None:
            r.up_used = r.up
    share_site_rate([a, b], Rates(site_rate, site_rate))
    times = [T0 - 2_000 + i for i in range(4_000)]
    total = [compose(1_000_000, [a], t) + compose(1_000_000, [b], t) for t in times]
    for i in range(len(times) - 5):
        move = abs(total[i + 5] - total[i])
        stepped = any(r.up is None and r.end is not None and times[i] <= r.end <= times[i + 5]
                      for r in (a, b))
        if not stepped:
            assert move <= site_rate * 5 + 2, (times[i], move)


def test_no_rates_no_ramp_the_event_steps_at_start_and_end() -> None:
    r = Ramp(1000, 600, T0, T0 + 100)
    assert [compose(1000, [r], T0 + d) for d in (-1, 0, 50, 99.9, 100)] == [1000, 600, 600, 600, 1000]


# ---- the planner ------------------------------------------------------------------------------

def budget(plan: Plan, name: str = "site") -> int:
    return int(st(plan, "StargateCluster", name)["power"]["budgetWatts"])


def reasons(plan: Plan, name: str) -> list[str]:
    return [e.reason for e in plan.events if e.key == ("GridEvent", NS, name)]


def site(**power: Any) -> list[dict[str, Any]]:
    """A 100 kW site with no reserve, one rack of 100 nodes demanding 1 kW each (floor 100 W)."""
    c = cluster(it=100_000)
    c["spec"]["power"].update(power)
    nodes = [node(f"n{i}", "r1", count=1, min_w=100, max_w=1000) for i in range(100)]
    return [c, rack("r1", max_w=200_000), *nodes]


def at(objs: list[dict[str, Any]], when: datetime) -> tuple[int, Any]:
    plan = run(objs, now=when)
    return sum(v["power"]["budgetWatts"] for k, v in plan.statuses.items() if k[0] == "Rack"), plan


def test_a_ramped_event_descends_so_that_its_target_holds_at_start_and_rises_after_end() -> None:
    start, end = NOW + timedelta(minutes=10), NOW + timedelta(minutes=20)
    objs = [*site(rampDownWattsPerSecond=500, rampUpWattsPerSecond=250),
            gev("dr", start=start, end=end, limit=60_000, created=NOW)]
    # 40 kW to shed at 500 W/s: 80 s of descent, from start - 80 s.
    seen = [at(objs, start + d * S)[0] for d in (-81, -80, -60, -40, -1, 0, 300)]
    assert seen == [100_000, 100_000, 90_000, 80_000, 60_500, 60_000, 60_000]
    rising = [at(objs, end + d * S)[0] for d in (0, 40, 160, 161)]
    assert rising == [60_000, 70_000, 100_000, 100_000]
    _, plan = at(objs, start - 60 * S)
    assert plan.next_change_at == start - 59 * S  # the engine follows the ramp, tick by tick
    status = st(plan, "GridEvent", "dr")
    assert status["rampStartedAt"] == "2026-01-01T12:08:40Z"
    assert "targetReachedAt" not in status
    assert "GridEventRampStarted" in reasons(plan, "dr")
    _, plan = at(objs, start)
    status = st(plan, "GridEvent", "dr")
    assert status["targetReachedAt"] == "2026-01-01T12:10:00Z"
    assert cond(status, "Met")["status"] == "True"


def test_without_the_fields_the_same_event_steps_exactly_as_before() -> None:
    start, end = NOW + timedelta(minutes=10), NOW + timedelta(minutes=20)
    objs = [*site(), gev("dr", start=start, end=end, limit=60_000, created=NOW)]
    assert [at(objs, start + d * S)[0] for d in (-1, 0)] == [100_000, 60_000]
    assert [at(objs, end + d * S)[0] for d in (-1, 0)] == [60_000, 100_000]


def test_an_event_created_too_late_descends_from_its_creation_and_is_not_met_until_there() -> None:
    start = NOW + timedelta(seconds=20)  # 40 kW at 500 W/s needs 80 s
    objs = [*site(rampDownWattsPerSecond=500), gev("late", start=start, limit=60_000, created=NOW)]
    total, plan = at(objs, start)
    assert total == 90_000
    assert (cond(st(plan, "GridEvent", "late"), "Met")["status"],
            cond(st(plan, "GridEvent", "late"), "Met")["reason"]) == ("False", "RampTooSlow")
    total, plan = at(objs, NOW + 80 * S)
    assert total == 60_000
    assert cond(st(plan, "GridEvent", "late"), "Met")["status"] == "True"


def test_an_emergency_skips_the_down_ramp() -> None:
    start = NOW + timedelta(minutes=10)
    event = gev("now", start=start, limit=60_000, created=NOW)
    event["spec"]["urgency"] = "Emergency"
    objs = [*site(rampDownWattsPerSecond=500), event]
    assert [at(objs, start + d * S)[0] for d in (-1, 0)] == [100_000, 60_000]


def test_the_curtailment_ramps_down_from_when_it_was_seen_and_up_when_removed() -> None:
    """A curtailment has no start of its own: it descends from when the operator first saw it (kept
    in status), and rises from when it was removed."""
    objs = site(rampDownWattsPerSecond=500, rampUpWattsPerSecond=1000)
    objs[0]["spec"]["power"]["curtailment"] = {"percent": 20, "reason": "grid"}
    seen = []
    for d in (0, 20, 40, 60):
        total, plan = at(objs, NOW + d * S)
        seen.append(total)
        objs[0]["status"] = st(plan, "StargateCluster", "site")
    assert seen == [100_000, 90_000, 80_000, 80_000]
    assert objs[0]["status"]["power"]["curtailment"]["since"] == "2026-01-01T12:00:00Z"
    del objs[0]["spec"]["power"]["curtailment"]
    seen = []
    for d in (100, 110, 120, 130):
        total, plan = at(objs, NOW + d * S)
        seen.append(total)
        objs[0]["status"] = st(plan, "StargateCluster", "site")
    assert seen == [80_000, 90_000, 100_000, 100_000]
    assert "curtailment" not in objs[0]["status"]["power"]


def test_a_baseline_basis_sheds_a_share_of_what_was_drawn_and_settles_it() -> None:
    start, end = NOW + timedelta(minutes=15), NOW + timedelta(minutes=25)
    objs = [*site(), gev("b", start=start, end=end, percent=20, created=NOW)]
    objs[-1]["spec"]["basis"] = "Baseline"
    def draw(when: datetime) -> None:
        for n in objs[2:-1]:
            n["status"] = {"telemetry": {"powerWatts": 500, "healthyGPUs": 1, "observedAt": ts(when)}}

    draw(start - 5 * 60 * S)
    plan = run(objs, now=start - 5 * 60 * S)
    ledger = st(plan, "GridEvent", "b")["ledger"]
    assert ledger["watts"] == 50_000 and ledger["baselineSeconds"] == 300
    objs[-1]["status"] = st(plan, "GridEvent", "b")
    draw(start)
    plan = run(objs, now=start)
    status = st(plan, "GridEvent", "b")
    assert status["baselineWatts"] == 50_000
    assert status["targetWatts"] == 40_000  # 20 % of the baseline, not of the 100 kW capacity
    assert budget(plan) <= 100_000
    assert sum(v["power"]["budgetWatts"] for k, v in plan.statuses.items() if k[0] == "Rack") == 40_000



def test_capping_during_a_descent_caps_against_the_unramped_power_at_once() -> None:
    """Oversubscribed by 20 %: the descent starts from the raised 120 kW. 100 s before the start the
    envelope allows 110 kW; a draw of 100 kW is below that envelope's cap line, but at the cap line
    of the real 100 kW (95 %): capping starts and the allocation drops to 100 kW at once."""
    start = NOW + timedelta(minutes=10)
    when = start - 100 * S

    def objs(draw_each: int) -> list[dict[str, Any]]:
        c = cluster(it=100_000)
        c["spec"]["power"].update(rampDownWattsPerSecond=500, oversubscription={"percent": 20})
        nodes = [node(f"n{i}", "r1", count=1, min_w=100, max_w=1000,
                      telemetry={"powerWatts": draw_each, "healthyGPUs": 1, "observedAt": ts(when)})
                 for i in range(150)]
        return [c, rack("r1", max_w=200_000), *nodes, gev("dr", start=start, limit=60_000, created=NOW)]

    low, _ = at(objs(400), when)  # 60 kW drawn: no capping, the envelope bounds
    assert low == 110_000
    high, plan = at(objs(667), when)  # 100 kW drawn
    assert st(plan, "StargateCluster", "site")["power"]["capping"]["active"] is True
    assert high == 100_000


def test_leaving_capping_rises_at_the_up_rate() -> None:
    """Capping cuts at once; when it ends the allocatable capacity rises from the real 100 kW to the
    raised 120 kW at 1,000 W/s, not in one step."""
    def objs(draw_each: int, when: datetime, held: dict[str, Any] | None) -> list[dict[str, Any]]:
        c = cluster(it=100_000)
        c["spec"]["power"].update(rampUpWattsPerSecond=1_000,
                                  oversubscription={"percent": 20, "holdSeconds": 0})
        if held is not None:
            c["status"] = held
        nodes = [node(f"n{i}", "r1", count=1, min_w=100, max_w=1000,
                      telemetry={"powerWatts": draw_each, "healthyGPUs": 1, "observedAt": ts(when)})
                 for i in range(150)]
        return [c, rack("r1", max_w=200_000), *nodes]

    total, plan = at(objs(800, NOW, None), NOW)  # 120 kW drawn: capping
    assert total == 100_000
    held = st(plan, "StargateCluster", "site")
    seen = []
    for d in (5, 15, 25, 35):
        when = NOW + d * S
        total, plan = at(objs(300, when, held), when)  # 45 kW drawn: capping ends at +5 s
        held = st(plan, "StargateCluster", "site")
        seen.append(total)
    assert seen == [100_000, 110_000, 120_000, 120_000]


def test_settlement_is_exported_per_event() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from stargate_operator import metrics

    start = NOW + timedelta(minutes=15)
    objs = [*site(), gev("b", start=start, end=start + timedelta(minutes=10), percent=20, created=NOW)]
    def draw(when: datetime) -> None:
        for n in objs[2:-1]:
            n["status"] = {"telemetry": {"powerWatts": 500, "healthyGPUs": 1, "observedAt": ts(when)}}

    draw(start - 5 * 60 * S)
    plan = run(objs, now=start - 5 * 60 * S)
    objs[-1]["status"] = st(plan, "GridEvent", "b")
    draw(start + 60 * S)
    planned = feed_back(objs, run(objs, now=start + 60 * S))
    text = metrics.make_registry(metrics.StaticSource(planned)).render_text().decode()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name.startswith("stargate_grid_event_")}
    assert samples["stargate_grid_event_baseline_watts"] == 50_000
    assert samples["stargate_grid_event_ramp_started_timestamp_seconds"] == start.timestamp()
    # a share of capacity (80 kW) asks nothing of a site drawing 50 kW: nothing is shed
    assert samples["stargate_grid_event_shed_watts"] == 0


def test_the_energy_shed_is_summed_from_status_across_plans_and_frozen_when_completed() -> None:
    """The ledger lives in status: every plan starts from the status the last one wrote (as a
    restarted operator does). Baseline 50 kW; 40 kW for the 60 s of the event: 10 kW x 60 s shed."""
    start = NOW + timedelta(minutes=15)
    end = start + 60 * S
    objs = [*site(), gev("dr", start=start, end=end, limit=40_000, created=NOW)]
    hours = []
    for d, watts in ((-300, 500), (0, 400), (30, 400), (60, 400), (160, 700)):
        when = start + d * S
        for n in objs[2:-1]:
            n["status"] = {"telemetry": {"powerWatts": watts, "healthyGPUs": 1, "observedAt": ts(when)}}
        plan = run(objs, now=when)
        objs[-1]["status"] = status = st(plan, "GridEvent", "dr")
        hours.append(status.get("shedWattHours"))
    assert status["baselineWatts"] == 50_000
    assert hours == [None, 0.0, 83.333, 166.667, 166.667]  # frozen once completed
    assert status["facility"]["shedWattHours"] == 166.667  # the test site's design PUE is 1.0
    assert "ledger" not in status


def test_a_hall_brought_online_rises_from_its_floors() -> None:
    """A new PowerDomain (a hall) with racks beneath: at 1,000 W/s up, the allocation beneath rises
    from the floors (10 kW) instead of handing out its demand (100 kW) at once."""
    from helpers.domains import domain

    objs = site(rampUpWattsPerSecond=1_000)
    objs.insert(1, domain("hall", rating=200_000))
    objs[2]["spec"]["powerDomainRef"] = "hall"
    seen = []
    for d in (0, 30, 60, 100):
        total, plan = at(objs, NOW + d * S)
        seen.append(total)
        objs[1]["status"] = st(plan, "PowerDomain", "hall")
    assert seen == [10_000, 40_000, 70_000, 100_000]
    assert plan.next_change_at is None or plan.next_change_at > NOW + 100 * S
