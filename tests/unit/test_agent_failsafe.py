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
    fleet = Fleet(cast(Any, None), "site-a", lambda n, o: cast(Any, None), failsafe_after=30)
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
