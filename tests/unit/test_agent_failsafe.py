"""The agents' half of the fail-safe and the peak without a cluster: an agent's
reading of the operator's Lease, its limit in fail-safe, and peakPowerWatts over a report window.
tests/integration/test_failsafe.py runs the whole of it on the real API server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from stargate_operator.agent.backend import GPUReading, NodeReading
from stargate_operator.agent.runner import Fleet, NodeAgent, telemetry_patch
from stargate_operator.controller.lease import micro_time

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def lease(renewed: datetime, holder: str = "op-1") -> dict[str, Any]:
    return {"metadata": {"resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "renewTime": micro_time(renewed)}}


async def test_an_agent_judges_renewals_by_what_it_sees_move() -> None:
    # no spread: the verdict alone (the spread is tested below)
    fleet = Fleet(cast(Any, None), "site-a", lambda n, o: cast(Any, None), failsafe_after=30,
                  failsafe_spread=0)
    agent = NodeAgent(cast(Any, None), "site-a", "n0", cast(Any, None))
    fleet.agents["n0"] = agent
    start = 1000.0
    # Nothing seen yet: fail-safe once failsafe-after has passed since the agent started.
    assert not fleet.judge_failsafe(start + 29, 30, start)
    assert fleet.judge_failsafe(start + 31, 30, start) and agent.failsafe and agent.wake.is_set()
    # A fresh Lease: out of fail-safe.
    fleet.lease_seen(lease(NOW), start + 31, NOW)
    assert not fleet.judge_failsafe(start + 32, 30, start) and not agent.failsafe
    # The same renewTime again is no renewal: the lapse counts from when it was seen move.
    fleet.lease_seen(lease(NOW), start + 50, NOW + timedelta(seconds=19))
    assert fleet.judge_failsafe(start + 62, 30, start)
    fleet.lease_seen(lease(NOW + timedelta(seconds=31)), start + 62.5, NOW + timedelta(seconds=31.5))
    assert not fleet.judge_failsafe(start + 63, 30, start)
    assert fleet.lease_renewals == 2


def test_an_agent_started_after_the_operator_died_does_not_trust_the_old_lease() -> None:
    fleet = Fleet(cast(Any, None), "site-a", lambda n, o: cast(Any, None), failsafe_after=30)
    fleet.lease_seen(lease(NOW - timedelta(hours=2)), 500.0, NOW)  # first read: dated by renewTime
    assert fleet.judge_failsafe(500.0, 30, 500.0)
    fleet.lease_seen(lease(NOW - timedelta(seconds=10)), 600.0, NOW)
    assert not fleet.judge_failsafe(600.0, 30, 500.0)


def test_a_skewed_operator_clock_neither_holds_off_nor_trips_the_failsafe() -> None:
    """The operator's clock 5 min off the agent's: after the first read, renewals count by when the
    agent saw them move, whatever their renewTime says."""
    skew, start = timedelta(minutes=5), 1000.0
    behind = Fleet(cast(Any, None), "site-a", lambda n, o: cast(Any, None), failsafe_after=30,
                   failsafe_spread=0)
    # The first read is dated by the Lease itself: 5 min old by the agent's clock, fail-safe at once.
    behind.lease_seen(lease(NOW - skew), start, NOW)
    assert behind.judge_failsafe(start, 30, start)
    # A renewal seen move lifts it, though its renewTime is still 5 min behind; then 30 s without
    # one, by the agent's clock, trips it.
    behind.lease_seen(lease(NOW - skew + timedelta(seconds=5)), start + 5, NOW + timedelta(seconds=5))
    assert not behind.judge_failsafe(start + 6, 30, start)
    assert not behind.judge_failsafe(start + 34, 30, start)
    assert behind.judge_failsafe(start + 36, 30, start)
    # 5 min ahead: a renewTime in the future holds nothing off once it stops moving.
    ahead = Fleet(cast(Any, None), "site-a", lambda n, o: cast(Any, None), failsafe_after=30,
                  failsafe_spread=0)
    ahead.lease_seen(lease(NOW + skew), start, NOW)
    assert not ahead.judge_failsafe(start + 1, 30, start)
    ahead.lease_seen(lease(NOW + skew + timedelta(seconds=5)), start + 5, NOW + timedelta(seconds=5))
    assert not ahead.judge_failsafe(start + 34, 30, start)
    assert ahead.judge_failsafe(start + 36, 30, start)


def test_in_fail_safe_an_agent_enforces_no_more_than_its_safe_limit() -> None:
    agent = NodeAgent(cast(Any, None), "site-a", "n0", cast(Any, None))
    agent.obj = {"status": {"powerLimitWatts": 687, "safeLimitWatts": 500}}
    assert agent.assigned_limit() == (687, "gpunode")
    agent.set_failsafe(True)
    assert agent.assigned_limit() == (500, "gpunode")
    agent.obj = {"status": {"powerLimitWatts": 450, "safeLimitWatts": 500}}  # already below: stays
    assert agent.assigned_limit() == (450, "gpunode")
    agent.obj = {"status": {"powerLimitWatts": 687}}  # an operator that never wrote a safe limit
    assert agent.assigned_limit() == (687, "gpunode")
    # the rack's safeLimits entry goes with the rack's limit, and wins
    agent.obj = {"status": {"powerLimitWatts": 687, "safeLimitWatts": 500}}
    agent.rack_limit, agent.rack_safe = 650, 480
    assert agent.assigned_limit() == (480, "rack")


def test_a_node_its_rack_lists_without_a_safe_limit_is_safe_at_its_racks_limit() -> None:
    # safeLimits lists only the safe limits below powerLimits: absent there, the rack's limit is
    # safe, even when the GPUNode's status (written after the rack) still holds an older figure.
    agent = NodeAgent(cast(Any, None), "site-a", "n0", cast(Any, None))
    agent.obj = {"status": {"powerLimitWatts": 687, "safeLimitWatts": 500}}
    agent.rack_limit, agent.rack_safe = 560, None
    agent.set_failsafe(True)
    assert agent.safe_limit() == 560
    assert agent.assigned_limit() == (560, "rack")
    agent.rack_limit = None  # its rack does not list it: its GPUNode's figures
    assert agent.assigned_limit() == (500, "gpunode")


def test_a_fleet_hands_each_agent_its_racks_safe_limit() -> None:
    fleet = Fleet(cast(Any, None), "site-a", lambda n, o: cast(Any, None))
    agent = NodeAgent(cast(Any, None), "site-a", "n0", cast(Any, None))
    agent.obj = {"spec": {"rackRef": "r1"}}
    fleet.agents["n0"] = agent
    rack = {"metadata": {"name": "r1"}, "status": {"powerLimits": {"n0": 650}, "safeLimits": {"n0": 480}}}
    fleet._replace_racks([rack])
    assert (agent.rack_limit, agent.rack_safe) == (650, 480)
    moved = {"powerLimits": {"n0": 600}, "safeLimits": {"n0": 470}}
    fleet._on_rack_event("MODIFIED", {**rack, "status": moved})
    assert (agent.rack_limit, agent.rack_safe) == (600, 470)
    fleet._on_rack_event("DELETED", rack)
    assert (agent.rack_limit, agent.rack_safe) == (None, None)


class Steps:
    """A backend whose GPUs read 100, 300, 200 ... W, one value per read."""

    blocking = False

    def __init__(self, watts: list[float]) -> None:
        self.watts = watts

    def read(self, spec: dict[str, Any], annotations: dict[str, str]) -> NodeReading:
        w = self.watts.pop(0)
        return NodeReading((GPUReading(index=0, power_watts=w),), other_power_watts=None)


async def test_the_peak_is_the_highest_sample_of_the_report_window() -> None:
    reading = NodeReading((GPUReading(index=0, power_watts=250.0),), other_power_watts=None)
    assert telemetry_patch(reading, {"basePowerWatts": 1000})["telemetry"]["powerWatts"] == 1250
    assert "peakPowerWatts" not in telemetry_patch(reading, {})["telemetry"]
    assert telemetry_patch(reading, {"basePowerWatts": 1000}, 1900.4)["telemetry"]["peakPowerWatts"] == 1900
    # a peak below the reading reports the reading
    assert telemetry_patch(reading, {"basePowerWatts": 1000}, 10)["telemetry"]["peakPowerWatts"] == 1250
    agent = NodeAgent(cast(Any, None), "site-a", "n0", cast(Any, Steps([100, 700, 300])))
    agent.obj = {"spec": {"basePowerWatts": 1000}}
    for _ in range(3):
        await agent.sample_once()
    assert agent._peak_w == 1700


def _entries(names: list[str], spread: float, step: float, until: float, lapse_at: float,
             renew_at: float | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Judge a fleet of `names` every `step` seconds (as its loop does) through a Lease lapse at
    `lapse_at` (and a renewal seen at `renew_at`): when each agent entered and left the fail-safe."""
    fleet = Fleet(cast(Any, None), "site-a", lambda n, o: cast(Any, None), failsafe_after=30,
                  failsafe_spread=spread)
    for n in names:
        fleet.agents[n] = NodeAgent(cast(Any, None), "site-a", n, cast(Any, None))
    fleet.lease_seen(lease(NOW), lapse_at - 30, NOW)
    entered: dict[str, float] = {}
    left: dict[str, float] = {}
    t = lapse_at - 1
    while t < until:
        if renew_at is not None and t >= renew_at and fleet._lease_mark is not None \
                and fleet._lease_mark[0] == micro_time(NOW):
            fleet.lease_seen(lease(NOW + timedelta(seconds=60)), t, NOW + timedelta(seconds=60))
        fleet.judge_failsafe(t, 30, 0.0)
        for n, a in fleet.agents.items():
            if a.failsafe and n not in entered:
                entered[n] = t
            if not a.failsafe and n in entered and n not in left:
                left[n] = t
        t = round(t + step, 6)
    return entered, left


def _most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    most = j = 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return most


def test_agents_enter_and_leave_the_fail_safe_spread_over_the_spread() -> None:
    names = [f"gpu-{r:03d}-{n:02d}" for r in range(250) for n in range(8)]  # a 2,000-node site
    spread = 10.0
    entered, left = _entries(names, spread, 0.5, 1080.0, 1000.0, renew_at=1040.0)
    assert set(entered) == set(names) and set(left) == set(names)
    # within the spread (and the judging step) of the lapse, and of the renewal
    assert min(entered.values()) >= 1000.0 and max(entered.values()) <= 1000.0 + spread + 0.5
    assert min(left.values()) >= 1040.0 and max(left.values()) <= 1040.0 + spread + 0.5
    # The configured share is 1/spread of the site a second (10 %): hashed offsets are even over
    # many nodes, within a few standard deviations of a binomial draw (200 +- 13 here).
    share = 1.0 / spread
    bound = len(names) * share * 1.25
    assert _most_in_one_second(list(entered.values())) <= bound
    assert _most_in_one_second(list(left.values())) <= bound
    # without the spread: the whole site in one instant
    at_once, _ = _entries(names, 0.0, 0.5, 1010.0, 1000.0)
    assert _most_in_one_second(list(at_once.values())) == len(names)


def test_an_agent_that_had_not_entered_when_the_lease_came_back_never_enters() -> None:
    names = [f"n{i}" for i in range(400)]
    entered, left = _entries(names, 10.0, 0.25, 1030.0, 1000.0, renew_at=1003.0)
    assert 0 < len(entered) < len(names)  # about 30 % had entered within 3 s of a 10 s spread
    assert set(left) == set(entered)
    assert all(left[n] <= 1003.0 + 10.0 + 0.25 for n in left)


# ---- leaving the fail-safe at the site's up rate -------------------------------------------------

def _exiting_fleet(names: list[str], rate: float) -> Fleet:
    from stargate_operator.agent.slices import SliceEntry
    fleet = Fleet(cast(Any, None), "site-a", lambda n, o: cast(Any, None), failsafe_after=30,
                  failsafe_spread=10.0)
    for n in names:
        agent = fleet.agents[n] = NodeAgent(cast(Any, None), "site-a", n, cast(Any, None))
        agent.slice_entry = SliceEntry(687, 500, exit_rate=rate)
    return fleet


def test_with_an_exit_rate_agents_leave_the_fail_safe_together_and_rise_at_it(monkeypatch: Any) -> None:
    """2,000 nodes of 8 GPUs under a site rising at 16 kW/s: the slice says 1 W/s per GPU. Renewed,
    every agent leaves at once (no spread) and rises from its safe limit at that rate, so the
    site's limits together rise at 16 kW/s: 187 W a GPU takes 187 s, not one step."""
    import stargate_operator.agent.runner as runner
    clock = [1000.0]
    monkeypatch.setattr(runner.time, "time", lambda: clock[0])
    names = [f"gpu-{r:03d}-{n:02d}" for r in range(250) for n in range(8)]
    fleet = _exiting_fleet(names, 1.0)
    fleet.lease_seen(lease(NOW), 970.0, NOW)
    fleet.judge_failsafe(1000.0 + 10.5, 30, 0.0)  # lapsed, and the spread walked
    fleet.judge_failsafe(1000.0 + 21, 30, 0.0)
    assert all(a.failsafe and a.assigned_limit() == (500, "slice") for a in fleet.agents.values())
    fleet.lease_seen(lease(NOW + timedelta(seconds=60)), 1030.0, NOW + timedelta(seconds=60))
    clock[0] = 1030.0
    fleet.judge_failsafe(1030.0, 30, 0.0)
    assert not any(a.failsafe for a in fleet.agents.values())  # all at once
    totals = []
    for dt in (0, 1, 2, 50, 186, 187, 300):
        clock[0] = 1030.0 + dt
        totals.append(sum(8 * a.assigned_limit()[0] for a in fleet.agents.values()))  # type: ignore[index]
    base = 2000 * 8 * 500
    assert [t - base for t in totals] == [0, 16_000, 32_000, 800_000, 2_976_000, 2_992_000, 2_992_000]
    assert all(a.exiting is None for a in fleet.agents.values())  # the rise is over
    assert all(a.ramping() is False for a in fleet.agents.values())


def test_without_an_exit_rate_agents_leave_spread_as_before() -> None:
    fleet = _exiting_fleet(["a", "b"], 1.0)
    for agent in fleet.agents.values():
        assert agent.slice_entry is not None
        agent.slice_entry = type(agent.slice_entry)(687, 500)
    agent = fleet.agents["a"]
    agent.set_failsafe(True)
    agent.set_failsafe(False)
    assert agent.exiting is None and agent.assigned_limit() == (687, "slice")
