"""Ramps carried in PowerLimitSlices (core/sliceramp.py): the agents' interpolation of two plans
stays under the envelope and within its rate (properties over the real max-min allocation), and the
planner writes each changed slice once per straight piece of a ramp, the same again after a restart,
a down-ramp below what the nodes held, an up-ramp as a raise, and protection at once."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from helpers.core_objects import NOW, NS, cluster, node, rack, st
from helpers.gridevents import gev
from stargate_operator.core import Plan
from stargate_operator.core.power import max_min_shares
from stargate_operator.core.sliceplan import CampusCache, CampusSettings, SliceSettings, plan_campus
from stargate_operator.core.sliceramp import Held, held_entries, interpolate, inward, ramp_piece
from stargate_operator.core.wire import parse_epoch

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
S = timedelta(seconds=1)


def _alloc(rooms: list[int], capacity: int) -> list[int]:
    return max_min_shares(rooms, max(capacity, 0))[0]


@PROPS
@given(hs.lists(hs.integers(0, 2_000), min_size=1, max_size=40), hs.integers(0, 80_000),
       hs.integers(0, 80_000))
def test_the_allocation_is_monotonic_and_1_lipschitz_in_capacity(rooms: list[int], c1: int, c2: int) -> None:
    lo, hi = sorted((c1, c2))
    a, b = _alloc(rooms, lo), _alloc(rooms, hi)
    assert all(x <= y for x, y in zip(a, b, strict=True))  # none gains when capacity falls
    # together they move by at most what the capacity moves, but the integer level's remainder
    # (less than a watt a node, left unallocated)
    assert sum(b) - sum(a) <= hi - lo + len(rooms) - 1
    assert sum(b) <= hi


@PROPS
@given(hs.lists(hs.integers(0, 2_000), min_size=1, max_size=40), hs.integers(0, 80_000),
       hs.integers(0, 80_000), hs.integers(1, 120), hs.one_of(hs.none(), hs.integers(0, 80_000)))
def test_interpolated_limits_stay_under_the_envelope_and_within_its_rate(
        rooms: list[int], cap_a: int, cap_b: int, length: int, other: int | None) -> None:
    """Agents interpolating between the plans at a piece's two ends: their sum is under the envelope
    (a line, or the minimum of it and a second, flat one: concave) at every instant, and moves no
    faster than the envelope's slope (plus a watt of rounding per node)."""
    a, b = 0.0, float(length)

    def envelope(t: float) -> float:
        line = cap_a + (cap_b - cap_a) * (t - a) / (b - a)
        return line if other is None else min(line, other)

    start, end = _alloc(rooms, int(envelope(a))), _alloc(rooms, int(envelope(b)))
    slope = abs(cap_b - cap_a) / (b - a)
    times = [a + (b - a) * i / 97 for i in range(98)]
    sums = [sum(interpolate(s, e, a, b, t) for s, e in zip(start, end, strict=True)) for t in times]
    for t, total in zip(times, sums, strict=True):
        assert total <= envelope(t) + 1e-6, (t, total, envelope(t))
    for (t1, s1), (t2, s2) in zip(zip(times, sums, strict=True), list(zip(times, sums, strict=True))[1:],
                                  strict=False):
        assert abs(s2 - s1) <= slope * (t2 - t1) + len(rooms), (t1, s1, s2)


def test_a_held_ramp_is_read_as_its_agents_read_it() -> None:
    spec = {"limits": {"a": 100, "b": 50}, "ramp": {"from": {"a": 200}, "startAt": "2026-01-01T12:00:00Z",
                                                   "endAt": "2026-01-01T12:00:10Z"}}
    held = held_entries(spec)
    t0 = parse_epoch("2026-01-01T12:00:00Z")
    assert t0 is not None
    assert [held["a"].at(t0 + d) for d in (-1, 0, 5, 10, 11)] == [200, 200, 150, 100, 100]
    assert held["b"] == Held(50)
    assert held_entries({"limits": {"a": 1}, "ramp": {"from": {"a": 2}, "startAt": "x"}}) == {"a": Held(1)}


def test_instants_are_whole_milliseconds_inside_the_piece() -> None:
    got = inward(10.0004, 20.0006)
    assert got == ("1970-01-01T00:00:10.001Z", "1970-01-01T00:00:20Z")
    assert inward(10.0001, 10.0009) is None


def test_no_piece_while_nothing_moves() -> None:
    assert ramp_piece([], 5.0) is None


# ---- through the planner -----------------------------------------------------------------------

def _site(**power: Any) -> list[dict[str, Any]]:
    """A 100 kW site, two racks of 50 one-GPU nodes demanding 1 kW each (floor 100 W), slices of 50."""
    c = cluster(it=100_000)
    c["spec"]["power"].update(power)
    nodes = [node(f"n{r}{i}", f"r{r}", count=1, min_w=100, max_w=1000) for r in (1, 2) for i in range(50)]
    return [c, rack("r1", max_w=200_000), rack("r2", max_w=200_000), *nodes]


class Server:
    """What the API server holds: the objects, with the operator's slices applied and its statuses
    written; counts the slice writes the engine would send (applies not already in effect)."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        self.writes: list[tuple[datetime, str, dict[str, Any]]] = []

    def plan(self, now: datetime, cache: CampusCache) -> Plan:
        settings = CampusSettings(slices=SliceSettings(slice_size=50))
        plan = plan_campus(list(self.objects.values()), now, settings, cache)
        for body in plan.applies:
            key = (body["kind"], body["metadata"]["name"])
            spec = {k: v for k, v in body["spec"].items() if v is not None}
            held = self.objects.get(key)
            if held is None or held["spec"] != spec:
                self.writes.append((now, key[1], spec))
                self.objects[key] = {**body, "spec": spec}
        for (kind, name), o in self.objects.items():
            status = plan.statuses.get((kind, NS, name))
            if status is not None:
                o["status"] = {**status, **({"telemetry": o["status"]["telemetry"]}
                                            if "telemetry" in (o.get("status") or {}) else {})}
        return plan

    def enforced(self, t: float) -> int:
        """The watts the agents enforce at t (one GPU each, no base power)."""
        total = 0
        for (kind, _), o in self.objects.items():
            if kind == "PowerLimitSlice":
                total += sum(e.at(t) for e in held_entries(o["spec"]).values())
        return total


def _seconds(server: Server, cache: CampusCache, first: datetime, count: int, step: float = 1.0
             ) -> list[tuple[float, int, int]]:
    """Plan every `step` seconds; (instant, site's budget, enforced sum) at each and between."""
    out = []
    for i in range(count):
        now = first + timedelta(seconds=i * step)
        plan = server.plan(now, cache)
        budget = st(plan, "StargateCluster", "site")["power"]["budgetWatts"]
        ramp = st(plan, "StargateCluster", "site")["power"].get("rampWatts", budget)
        out.append((now.timestamp(), min(budget, ramp), server.enforced(now.timestamp())))
    return out


def test_a_ramped_event_is_one_write_per_slice_per_piece_and_never_over_the_envelope() -> None:
    start, end = NOW + timedelta(seconds=100), NOW + timedelta(seconds=130)
    server = Server([*_site(rampDownWattsPerSecond=1_000, rampUpWattsPerSecond=500),
                     gev("dr", start=start, end=end, limit=60_000, created=NOW)])
    seen = _seconds(server, CampusCache(), NOW, 230)
    # 40 kW at 1 kW/s: down from start - 40 s to start; up from end for 80 s.
    for t, cap, enforced in seen:
        assert enforced <= cap, (t, enforced, cap)
    descent = [w for w in server.writes if w[2].get("ramp", {}).get("endAt") == "2026-01-01T12:01:40Z"]
    rise = [w for w in server.writes if w[2].get("ramp", {}).get("startAt") == "2026-01-01T12:02:10Z"]
    assert len(descent) == 2 and len(rise) == 2, server.writes  # one per slice, per piece
    # the whole event: the first writes of the slices, then the descent and the rise
    assert len(server.writes) == 2 + 2 + 2, [(w[0], w[1]) for w in server.writes]
    ramp = descent[0][2]["ramp"]
    assert ramp["startAt"] == "2026-01-01T12:01:00Z"
    assert set(ramp["from"].values()) == {1000} and set(descent[0][2]["limits"].values()) == {600}
    # between the plans the agents follow the line: halfway down at start - 20 s
    enforced = {t: w for t, _, w in seen}
    assert enforced[(start - 20 * S).timestamp()] == 80_000
    assert enforced[(end + 40 * S).timestamp()] == 80_000


def test_a_restarted_operator_writes_nothing_mid_ramp() -> None:
    start = NOW + timedelta(seconds=100)
    server = Server([*_site(rampDownWattsPerSecond=1_000),
                     gev("dr", start=start, limit=60_000, created=NOW)])
    _seconds(server, CampusCache(), NOW + 70 * S, 5)  # into the descent (from start - 40 s)
    before = len(server.writes)
    for d in (0.0, 3.3, 17.9):  # new operators, each with nothing in memory
        server.plan(NOW + (75 + d) * S, CampusCache())
    assert len(server.writes) == before, server.writes[before:]


def test_a_down_ramp_is_below_what_the_nodes_held_and_an_up_ramp_a_raise() -> None:
    start, end = NOW + timedelta(seconds=100), NOW + timedelta(seconds=110)
    server = Server([*_site(rampDownWattsPerSecond=2_000, rampUpWattsPerSecond=2_000),
                     gev("dr", start=start, end=end, limit=60_000, created=NOW)])
    cache = CampusCache()
    server.plan(NOW, cache)
    held = {n: e for o in list(server.objects.values()) if o["kind"] == "PowerLimitSlice"
            for n, e in held_entries(o["spec"]).items()}
    server.plan(start - 10 * S, cache)
    for o in server.objects.values():
        if o["kind"] == "PowerLimitSlice":
            for n, e in held_entries(o["spec"]).items():
                for d in range(0, 30):
                    t = (start - 10 * S + d * S).timestamp()
                    assert e.at(t) <= held[n].at(t)
    server.plan(end + 5 * S, cache)
    rising = [o["spec"] for o in server.objects.values() if o["kind"] == "PowerLimitSlice"]
    assert all(set(s["ramp"]["from"].values()) == {600} and set(s["limits"].values()) == {1000}
               for s in rising), rising


def test_protection_cuts_a_ramp_short_at_once() -> None:
    """A rack's rating lowered mid-descent: its slice is written at once below the line."""
    start = NOW + timedelta(seconds=100)
    server = Server([*_site(rampDownWattsPerSecond=1_000), gev("dr", start=start, limit=60_000, created=NOW)])
    cache = CampusCache()
    server.plan(start - 30 * S, cache)
    line = server.enforced((start - 25 * S).timestamp())
    server.objects[("Rack", "r1")]["spec"]["maxPowerWatts"] = 10_000
    server.plan(start - 25 * S, cache)
    held = next(o for o in server.objects.values() if o["kind"] == "PowerLimitSlice"
            and "n10" in o["spec"]["limits"])
    now_r1 = sum(e.at((start - 25 * S).timestamp()) for e in held_entries(held["spec"]).values())
    assert now_r1 <= 10_000
    assert server.enforced((start - 25 * S).timestamp()) < line


def test_without_rates_no_slice_carries_a_ramp() -> None:
    start = NOW + timedelta(seconds=10)
    server = Server([*_site(), gev("dr", start=start, limit=60_000, created=NOW)])
    _seconds(server, CampusCache(), NOW, 15)
    assert all("ramp" not in w[2] for w in server.writes)
    assert len(server.writes) == 4  # created, then the step at start




def test_each_slice_carries_its_nodes_share_of_the_up_rate_for_leaving_the_fail_safe() -> None:
    """100 one-GPU nodes under a site rising at 1,000 W/s: 10 W/s a GPU; a feed over rack r2 (50
    GPUs) rising at 100 W/s gives r2's slice 2 W/s. Together no constraint rises faster than its rate."""
    from stargate_operator.core.sliceramp import failsafe_exit_rates, two_digits_down
    objs = _site(rampUpWattsPerSecond=1_000)
    feed = {"apiVersion": "stargate.dev/v1alpha1", "kind": "PowerDomain",
            "metadata": {"name": "feed", "namespace": NS, "generation": 1},
            "spec": {"clusterRef": "site", "role": "Utility", "ratingWatts": 1_000_000,
                     "rampUpWattsPerSecond": 100}}
    objs[2]["spec"]["powerDomainRef"] = "feed"
    server = Server([*objs, feed])
    server.plan(NOW, CampusCache())
    rates = {o["spec"]["limits"].__iter__().__next__()[:2]: o["spec"]["failsafeExitWattsPerSecond"]
             for o in server.objects.values() if o["kind"] == "PowerLimitSlice"}
    assert rates == {"n1": 10.0, "n2": 2.0}
    assert failsafe_exit_rates({}, {"a": ("x",)}, {"a": 8}) == {}
    assert [two_digits_down(x) for x in (2.5999, 0.0437, 1000 / 3)] == [2.5, 0.043, 330.0]
    without = Server(_site())
    without.plan(NOW, CampusCache())
    assert all("failsafeExitWattsPerSecond" not in o["spec"] for o in without.objects.values()
               if o["kind"] == "PowerLimitSlice")


def test_the_line_starts_where_the_envelope_meets_the_demand() -> None:
    """Demand 80 kW under a 100 kW site: the envelope (down at 1 kW/s to 60 kW at start) binds from
    start - 20 s, so the slices' line runs from there, not from the descent's start (start - 40 s),
    and the rise's line ends where the envelope passes the demand again (end + 40 s at 500 W/s)."""
    start, end = NOW + timedelta(seconds=100), NOW + timedelta(seconds=130)
    objs = _site(rampDownWattsPerSecond=1_000, rampUpWattsPerSecond=500)
    for o in objs:
        if o["kind"] == "GPUNode":
            o["spec"]["gpu"]["maxPowerWatts"] = 800
    server = Server([*objs, gev("dr", start=start, end=end, limit=60_000, created=NOW)])
    seen = _seconds(server, CampusCache(), NOW, 230)
    assert all(enforced <= cap for _, cap, enforced in seen)
    ramps = sorted({(w[2]["ramp"]["startAt"], w[2]["ramp"]["endAt"])
                    for w in server.writes if "ramp" in w[2]})
    assert ramps == [("2026-01-01T12:01:20Z", "2026-01-01T12:01:40Z"),
                     ("2026-01-01T12:02:10Z", "2026-01-01T12:02:50Z")]
    assert len(server.writes) == 2 + 2 + 2


def test_nodes_following_a_long_ramp_stay_confirmed() -> None:
    """A 200 s descent, longer than the confirmation grace (60 s): agents reporting a point of the
    line a couple of seconds old are confirmed all along, and no node says PowerLimitApplied=False."""
    from helpers.core_objects import ts
    start = NOW + timedelta(seconds=250)
    server = Server([*_site(rampDownWattsPerSecond=200), gev("dr", start=start, limit=60_000, created=NOW)])
    cache = CampusCache()
    for second in range(40, 260, 2):
        now = NOW + second * S
        for (kind, name), o in server.objects.items():
            if kind != "GPUNode":
                continue
            line = {n: e for s in server.objects.values() if s["kind"] == "PowerLimitSlice"
                    for n, e in held_entries(s["spec"]).items()}
            entry = line.get(name)
            enforced = entry.at((now - 2 * S).timestamp()) if entry is not None else 1000
            o["status"] = {**(o.get("status") or {}), "telemetry": {
                "powerWatts": enforced, "healthyGPUs": 1, "observedAt": ts(now - S),
                "enforcedLimitWatts": enforced}}
        plan = server.plan(now, cache)
        if second >= 120:
            statuses = [v for k, v in plan.statuses.items() if k[0] == "PowerLimitSlice"]
            assert all(s["confirmed"] == s["nodes"] for s in statuses), (second, statuses)
            applied = [next(c for c in v["conditions"] if c["type"] == "PowerLimitApplied")
                       for k, v in plan.statuses.items() if k[0] == "GPUNode"]
            assert all(c["status"] == "True" for c in applied), (second, applied[0])


def test_a_curtailment_seen_between_whole_seconds_is_one_write_per_slice_per_piece() -> None:
    """The curtailment's since and liftedAt are kept in status to the millisecond: the plan after
    the first reads them back from there and must find the very same piece."""
    server = Server(_site(rampDownWattsPerSecond=1_000, rampUpWattsPerSecond=1_000))
    for o in server.objects.values():
        if o["kind"] == "GPUNode":
            o["spec"]["gpu"]["maxPowerWatts"] = 900  # demand 90 kW: the line starts at the crossing
    cache = CampusCache()
    site = server.objects[("StargateCluster", "site")]
    for s in range(140):
        if s == 5:
            site["spec"]["power"]["curtailment"] = {"percent": 20, "reason": "grid"}
        if s == 70:
            del site["spec"]["power"]["curtailment"]
        server.plan(NOW + timedelta(seconds=s + 0.3456), cache)
    ramps = [(w[1], w[2]["ramp"]["startAt"]) for w in server.writes if "ramp" in w[2]]
    down, up = "2026-01-01T12:00:15.345Z", "2026-01-01T12:01:10.345Z"
    assert sorted(ramps) == [("limits-0", down), ("limits-0", up), ("limits-1", down), ("limits-1", up)]
    assert len(server.writes) == 2 + 4


def test_while_a_piece_moves_node_and_rack_statuses_show_its_end_once() -> None:
    """Node and rack statuses say where the piece goes, as the slices do: they change once per
    piece, not every second of it (one status write per node per piece, not per tick)."""
    start = NOW + timedelta(seconds=100)
    server = Server([*_site(rampDownWattsPerSecond=1_000), gev("dr", start=start, limit=60_000, created=NOW)])
    cache = CampusCache()
    seen: dict[str, set[Any]] = {"node": set(), "rack": set()}
    for s in range(62, 100):  # the descent, from start - 40 s (its line written ahead)
        plan = server.plan(NOW + s * S, cache)
        seen["node"].add(st(plan, "GPUNode", "n10")["powerLimitWatts"])
        seen["rack"].add(st(plan, "Rack", "r1")["power"]["budgetWatts"])
    assert seen == {"node": {600}, "rack": {30_000}}
