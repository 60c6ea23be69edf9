"""Grid events observed through the API with `stargate-operator run` as a real
process: phases move at `start` and `end` by the engine's timers, a deleted or edited event lifts or
moves its cap at once, Met follows the measured power with a GridEventNotMet Warning, and an event
naming a missing cluster or domain is Ready=False and changes nothing else.

Figures from helpers/site.py's default node: floor F = 1400 W, demand D = 3000 W, room 1600 W.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from helpers.api import Api, condition, obj
from helpers.expect import WAIT, events_for, expect, expect_event
from helpers.operator_process import OperatorProcess, wait_for
from helpers.site import cluster, node, rack, rfc3339
from stargate_operator.core.wire import parse_epoch
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("operator_survives")]


@pytest.fixture(scope="module")
def operator(control_plane: LocalControlPlane, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    with OperatorProcess(control_plane, tmp_path_factory.mktemp("operator")) as op:
        yield op


def gev(name: str, *, start: datetime | str, end: datetime | None = None, percent: int | None = None,
        limit: int | None = None, domain: str | None = None, cluster_ref: str = "site") -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterRef": cluster_ref,
                            "start": start if isinstance(start, str) else rfc3339(start),
                            "source": "test:vtn/event-1"}
    if end is not None:
        spec["end"] = rfc3339(end)
    if percent is not None:
        spec["reducePercent"] = percent
    if limit is not None:
        spec["limitWatts"] = limit
    if domain is not None:
        spec["powerDomainRef"] = domain
    return obj("GridEvent", name, spec)


def feed(name: str = "feed", rating: int = 1_000_000) -> dict[str, Any]:
    return obj("PowerDomain", name, {"clusterRef": "site", "role": "Utility", "ratingWatts": rating,
                                     "deratePercent": 100})


def fed(name: str, domain: str | None, priority: int) -> dict[str, Any]:
    r = rack(name, priority=priority)
    if domain is not None:
        r["spec"]["powerDomainRef"] = domain
    return r


def _site() -> list[dict[str, Any]]:
    # 20,000 W, no reserve; hi (900) on the feed, lo (100) under the site only; 2 nodes each:
    # floors 2,800 a rack, demand 6,000 a rack.
    return [cluster(it=20_000), feed(), fed("hi", "feed", 900), fed("lo", None, 100),
            node("hi-1", "hi"), node("hi-2", "hi"), node("lo-1", "lo"), node("lo-2", "lo")]


def _whole_second(offset: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=offset)).replace(microsecond=0)


def _epoch(status: dict[str, Any], field: str) -> float:
    value = parse_epoch(status.get(field))
    assert value is not None, status
    return value


def test_phases_move_at_start_and_end_by_the_timers(api: Api, operator: OperatorProcess,
                                                    namespace: str) -> None:
    ns = namespace
    start = _whole_second(8)
    end = start + timedelta(seconds=5)
    # 50 % of the site from start to end: budget 10,000: hi 6,000, lo the rest (4,000)
    api.create_all(ns, [*_site(), gev("evening", start=start, end=end, percent=50)])
    expect(api, ns, "GridEvent", "evening", {"phase": "Scheduled", "targetWatts": 10_000},
           {"Ready": ("True", "Scheduled"), "Met": ("Unknown", "NotStarted")})
    expect(api, ns, "StargateCluster", "site", {"power": {"budgetWatts": 20_000, "allocatedWatts": 12_000}})
    assert time.time() < start.timestamp(), "too slow to see the event before its start"

    def seen(phase: str) -> tuple[float, dict[str, Any]] | None:
        status = api.status("GridEvent", ns, "evening")
        return (time.time(), status) if status.get("phase") == phase else None

    # Nothing else changes: the operator moves the phase by itself, at the start
    at, active = wait_for(lambda: seen("Active"), start.timestamp() - time.time() + WAIT, 0.05, "Active")
    assert at >= start.timestamp(), f"active {start.timestamp() - at:.2f}s before its start"
    # the cap was put in place within a second of the start: the planner's own instant, to the ms
    assert 0 <= _epoch(active, "appliedAt") - start.timestamp() < 1.0, active
    assert (active["allocatedWatts"], active["targetWatts"]) == (10_000, 10_000)
    assert condition(active, "Met")["status"] == "True"
    expect(api, ns, "StargateCluster", "site", {"power": {"budgetWatts": 10_000, "allocatedWatts": 10_000}},
           timeout=2)
    expect(api, ns, "Rack", "lo", {"power": {"budgetWatts": 4_000, "limitedBy": "site"}}, timeout=2)
    started = expect_event(api, ns, "GridEvent", "evening", "GridEventStarted", type_="Normal")
    assert "target 10000 W" in started["message"]

    at, done = wait_for(lambda: seen("Completed"), end.timestamp() - time.time() + WAIT, 0.05, "Completed")
    assert at >= end.timestamp(), f"completed {end.timestamp() - at:.2f}s before its end"
    assert 0 <= _epoch(done, "liftedAt") - end.timestamp() < 1.0, done
    assert done["appliedAt"] == active["appliedAt"]
    # the record of how it ended: its figures and Met as they were while it was in effect
    assert (done["targetWatts"], done["allocatedWatts"]) == (10_000, 10_000)
    assert condition(done, "Met")["reason"] == "WithinTarget"
    expect(api, ns, "StargateCluster", "site", {"power": {"budgetWatts": 20_000, "allocatedWatts": 12_000}},
           timeout=2)
    expect_event(api, ns, "GridEvent", "evening", "GridEventEnded", type_="Normal")


def test_a_deleted_or_edited_event_lifts_or_moves_its_cap_at_once(
    api: Api, operator: OperatorProcess, namespace: str
) -> None:
    ns = namespace
    api.create_all(ns, [*_site(), gev("cap", start=_whole_second(-60), limit=8_000, domain="feed")])
    # the feed held to 8,000 W: hi gets 8,000 - 2,800 beyond its floor... all of it up to its demand
    # 6,000; lo is not beneath the feed and gets its demand from the site
    expect(api, ns, "PowerDomain", "feed", {"ratingWatts": 1_000_000, "usableWatts": 8_000})
    expect(api, ns, "GridEvent", "cap", {"phase": "Active", "targetWatts": 8_000, "allocatedWatts": 6_000},
           {"Ready": ("True", "Active"), "Met": ("True", "WithinTarget")})
    api.patch("GridEvent", ns, "cap", {"spec": {"limitWatts": 4_000}})  # edited: the cap moves
    expect(api, ns, "PowerDomain", "feed", {"usableWatts": 4_000})
    expect(api, ns, "Rack", "hi", {"power": {"budgetWatts": 4_000, "limitedBy": "feed"}},
           {"PowerCapped": ("True", "BudgetBelowDemand")})
    expect(api, ns, "GridEvent", "cap", {"targetWatts": 4_000, "allocatedWatts": 4_000,
                                         "observedGeneration": 2})
    # moved to the future: the cap lifts now and the event says it ended
    api.patch("GridEvent", ns, "cap", {"spec": {"start": rfc3339(_whole_second(3600))}})
    expect(api, ns, "Rack", "hi", {"power": {"budgetWatts": 6_000}}, {"PowerCapped": ("False", "DemandMet")})
    expect(api, ns, "GridEvent", "cap", {"phase": "Scheduled"}, {"Met": ("Unknown", "NotStarted")})
    expect_event(api, ns, "GridEvent", "cap", "GridEventEnded", type_="Normal")
    # a second event on the site, then deleted: its cap goes with it
    api.create(ns, gev("shed", start=_whole_second(-5), percent=75))  # budget 5,000
    expect(api, ns, "StargateCluster", "site", {"power": {"budgetWatts": 5_000}})
    expect(api, ns, "Rack", "lo", {"power": {"budgetWatts": 2_800}})
    site = api.status("StargateCluster", ns, "site")
    assert "GridEvent shed in effect" in condition(site, "Ready")["message"]
    api.delete("GridEvent", ns, "shed")
    expect(api, ns, "StargateCluster", "site", {"power": {"budgetWatts": 20_000, "allocatedWatts": 12_000}})
    assert "GridEvent" not in condition(api.status("StargateCluster", ns, "site"), "Ready")["message"]


def test_met_follows_the_measured_power(api: Api, operator: OperatorProcess, namespace: str) -> None:
    ns = namespace
    api.create_all(ns, [*_site(), gev("peak", start=_whole_second(-5), limit=9_000)])
    st = expect(api, ns, "GridEvent", "peak",
                {"phase": "Active", "targetWatts": 9_000, "allocatedWatts": 9_000},
                {"Met": ("True", "WithinTarget")})
    assert st["measuredWatts"] == 0  # no agent reports yet

    def report(watts: int) -> None:
        for n in ("hi-1", "hi-2", "lo-1", "lo-2"):
            api.patch_status("GPUNode", ns, n, {"telemetry": {
                "powerWatts": watts, "healthyGPUs": 4,
                "observedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z")}})

    report(2_900)  # 11,600 W measured: the agents have not enforced the lower limits
    st = expect(api, ns, "GridEvent", "peak", {"measuredWatts": 11_600},
                {"Met": ("False", "MeasuredAboveTarget")})
    assert "measured 11600 W beneath StargateCluster site, above the target 9000 W" in \
        condition(st, "Met")["message"]
    warned = expect_event(api, ns, "GridEvent", "peak", "GridEventNotMet")
    assert "above the target 9000 W" in warned["message"]
    report(2_200)  # 8,800 W: within
    expect(api, ns, "GridEvent", "peak", {"measuredWatts": 8_800}, {"Met": ("True", "WithinTarget")})
    # floors above the target: the racks cannot go lower than their floors (5,600 W)
    api.patch("GridEvent", ns, "peak", {"spec": {"limitWatts": 5_000}})
    expect(api, ns, "GridEvent", "peak", {"targetWatts": 5_000, "allocatedWatts": 5_600},
           {"Met": ("False", "FloorsAboveTarget")})
    # The Event follows the status write that turned the condition, moments later on a busy machine.
    wait_for(lambda: len(events_for(api, ns, "GridEvent", "peak", "GridEventNotMet")) >= 2, WAIT, 0.2,
             "a second GridEventNotMet Event")


def test_an_event_naming_a_missing_cluster_or_domain_changes_nothing_else(
    api: Api, operator: OperatorProcess, namespace: str
) -> None:
    ns = namespace
    api.create_all(ns, _site())
    expect(api, ns, "StargateCluster", "site", {"power": {"budgetWatts": 20_000, "allocatedWatts": 12_000}})
    expect(api, ns, "PowerDomain", "feed", {"allocatedWatts": 6_000})
    for name in ("hi-1", "hi-2", "lo-1", "lo-2"):
        expect(api, ns, "GPUNode", name, {"allocatedWatts": 3_000})
    time.sleep(1.0)  # let any write still in flight land before the versions are read

    def versions() -> dict[tuple[str, str], str]:
        return {(kind, o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                for kind in ("StargateCluster", "PowerDomain", "Rack", "GPUNode") for o in api.list(kind, ns)}

    before = versions()
    api.create_all(ns, [gev("lost-site", start=_whole_second(-5), limit=0, cluster_ref="gone"),
                        gev("lost-feed", start=_whole_second(-5), limit=0, domain="no-such-feed")])
    lost = expect(api, ns, "GridEvent", "lost-site", {"phase": "Active"},
                  {"Ready": ("False", "ClusterNotFound"), "Met": ("Unknown", "ClusterNotFound")})
    assert "targetWatts" not in lost
    assert "StargateCluster gone not found" in condition(lost, "Ready")["message"]
    expect(api, ns, "GridEvent", "lost-feed", {"phase": "Active"},
           {"Ready": ("False", "PowerDomainNotFound"), "Met": ("Unknown", "PowerDomainNotFound")})
    expect_event(api, ns, "GridEvent", "lost-site", "ClusterNotFound", contains="changes nothing")
    expect_event(api, ns, "GridEvent", "lost-feed", "PowerDomainNotFound", contains="no-such-feed")
    # the rest was recomputed (the events are in the namespace) and nothing else got a write
    time.sleep(1.0)
    assert versions() == before
    assert api.status("StargateCluster", ns, "site")["power"]["budgetWatts"] == 20_000
    assert events_for(api, ns, "GridEvent", "lost-site", "GridEventStarted") == []
    # the domain appears: the event applies at once
    api.create(ns, feed("no-such-feed", 50_000))
    expect(api, ns, "GridEvent", "lost-feed", {"targetWatts": 0}, {"Ready": ("True", "Active")})
    expect(api, ns, "PowerDomain", "no-such-feed", {"usableWatts": 0})


def test_a_ramped_event_is_followed_through_its_descent_and_its_rise(api: Api, operator: OperatorProcess,
                                                                    namespace: str) -> None:
    """The site ramps at 1,000 W/s both ways: the allocation (12,000 W) descends so that the target
    (6,000 W) holds at start, one engine tick at a time, and rises again after end; no move between
    two reads is larger than a tick's worth; the status and the Events say when the ramp started
    and when the target was reached."""
    ns = namespace
    site = _site()
    site[0]["spec"]["power"].update(rampDownWattsPerSecond=1_000, rampUpWattsPerSecond=1_000)
    start = _whole_second(20)  # from the capacity (20,000 W): 14 s of descent, from start - 14 s
    end = start + timedelta(seconds=4)
    api.create_all(ns, [*site, gev("ramped", start=start, end=end, limit=6_000)])
    samples: list[tuple[float, int]] = []
    while time.time() < end.timestamp() + 9:
        power = api.status("StargateCluster", ns, "site").get("power") or {}
        if "allocatedWatts" in power:
            samples.append((time.time(), power["allocatedWatts"]))
        time.sleep(0.2)
    # the feed is new: brought online, it rose from its floors at 1,000 W/s too, done within 4 s
    assert samples[0][1] < 12_000, samples
    before = [w for t, w in samples if start.timestamp() - 12 <= t < start.timestamp() - 8]
    assert before and set(before) == {12_000}, samples
    descent = {w for t, w in samples if start.timestamp() - 6 <= t < start.timestamp()}
    assert len(descent - {12_000, 6_000}) >= 3, samples  # it went down in steps, not at once
    held = [w for t, w in samples if start.timestamp() + 0.5 <= t < end.timestamp()]
    assert held and set(held) == {6_000}, samples
    rise = {w for t, w in samples if end.timestamp() <= t < end.timestamp() + 6}
    assert len(rise - {12_000, 6_000}) >= 3, samples
    assert samples[-1][1] == 12_000, samples
    # The allocation is the envelope at the instant of the plan behind the read: the engine plans
    # once a second while a ramp moves, and a plan read may be up to a late tick old. So a move
    # between two reads is at most the rate times the time between them plus one tick and its lag
    # (on 2 busy cores a tick is seen up to about a second late); a step to the target is far more.
    moves = [(abs(b[1] - a[1]), b[0] - a[0]) for a, b in pairwise(samples)]
    assert all(w <= 1_000 * (dt + 2.5) for w, dt in moves), samples
    status = api.status("GridEvent", ns, "ramped")
    assert _epoch(status, "rampStartedAt") == start.timestamp() - 14
    assert _epoch(status, "targetReachedAt") == start.timestamp()
    assert condition(status, "Met")["reason"] == "WithinTarget"
    expect_event(api, ns, "GridEvent", "ramped", "GridEventRampStarted", type_="Normal")
    expect_event(api, ns, "GridEvent", "ramped", "GridEventTargetReached", type_="Normal")
