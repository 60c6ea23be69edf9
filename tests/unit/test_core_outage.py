"""A telemetry source outage is not a GPU loss (core/outage.py): the rule, and what it holds still."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as hs

from helpers.core_objects import NOW, cluster, cond, feed_back, node, rack, run, st, ts
from helpers.properties import PROPS, sites
from stargate_operator.core import PlanCache
from stargate_operator.core.outage import LATE_SHARE, SourceState, judge, source_record

LATER = NOW + timedelta(minutes=10)  # every reading taken at NOW is stale by then (threshold 120 s)
DOWN = source_record(SourceState("Prometheus", False, "2026-01-01T12:00:05Z", "connection refused"))
UP = source_record(SourceState("Prometheus", True, "2026-01-01T11:00:00Z"))


def _fresh_at(objs: list[dict[str, Any]], when: str) -> list[dict[str, Any]]:
    """Every node that reports, reporting at `when` (readings otherwise as drawn)."""
    out = []
    for o in objs:
        tel = (o.get("status") or {}).get("telemetry")
        if o["kind"] == "GPUNode" and tel:
            o = {**o, "status": {**o["status"], "telemetry": {**tel, "observedAt": when}}}
        out.append(o)
    return out


def _held(plan: Any) -> dict[Any, Any]:
    """What an outage must not move: healthy GPUs and memory, budgets and limits, pools, claims."""
    out: dict[Any, Any] = {}
    for key, s in plan.statuses.items():
        kind = key[0]
        if kind == "StargateCluster":
            out[key] = (s["gpus"], s["memory"], s["power"]["budgetWatts"], s["power"]["allocatedWatts"])
        elif kind == "Rack":
            out[key] = (s["gpus"], s["power"]["budgetWatts"])
        elif kind == "GPUNode":
            out[key] = (s["healthyGPUs"], s["powerLimitWatts"], s["allocatedWatts"])
        elif kind == "MemoryPool":
            out[key] = (s["capacityBytes"], s["allocatedBytes"])
        elif kind == "MemoryClaim":
            out[key] = (s["phase"], s["allocatedBytes"])
    return out


@PROPS
@given(sites(), hs.booleans(), hs.booleans())
def test_an_outage_holds_health_pools_claims_and_budgets(objs: list[dict[str, Any]], source: bool,
                                                         cached: bool) -> None:
    """Plan with every report fresh, write the statuses back, then plan ten minutes later with every
    report late (the source down, or silent): nothing an outage must not move has moved."""
    objs = _fresh_at(objs, ts(NOW))
    before = run(objs)
    back = feed_back(objs, before)
    cache = PlanCache() if cached else None
    if cache is not None:
        run(back, cache=cache)  # the cache holds the fresh verdicts: the outage must not reuse them
    during = run([*back, DOWN] if source else back, now=LATER, cache=cache)
    assert _held(during) == _held(before)
    for key, s in during.statuses.items():
        if key[0] == "StargateCluster":
            tel = cond(s, "TelemetryAvailable")
            reporting = any((o.get("status") or {}).get("telemetry") for o in objs if o["kind"] == "GPUNode"
                            and o["metadata"]["namespace"] == key[1])
            if source or reporting:
                assert tel["status"] == "False"
                assert tel["reason"] == ("PrometheusUnavailable" if source else "AgentReportsLate")
            # measured power counts at the allocation: nothing is measured through an outage
            assert s["power"]["measuredWatts"] == 0


@PROPS
@given(hs.integers(0, 40), hs.integers(0, 40), hs.none() | hs.booleans())
def test_the_rule(fresh: int, late: int, source_up: bool | None) -> None:
    source = None if source_up is None else SourceState("Prometheus", source_up)
    verdict = judge(source, fresh + late, late, None, 120.0)
    outage = source_up is False or late > (fresh + late) * LATE_SHARE
    assert verdict.available is not outage
    if source_up is False:
        assert verdict.reason == "PrometheusUnavailable"
    elif outage:
        assert verdict.reason == ("AgentReportsLate" if source is None else "PrometheusReportsLate")


@PROPS
@given(hs.lists(hs.sampled_from([0, 30, 119, 120, 600, 3600]), min_size=1, max_size=12))
def test_a_node_is_stale_only_while_others_still_report(ages: list[int]) -> None:
    nodes = [node(f"n{i}", "r", telemetry={"healthyGPUs": 1, "observedAt": ts(NOW - timedelta(seconds=a))})
             for i, a in enumerate(ages)]
    plan = run([cluster(), rack("r"), *nodes])
    late = sum(a >= 120 for a in ages)
    stale = [i for i in range(len(ages))
             if cond(st(plan, "GPUNode", f"n{i}"), "TelemetryStale")["status"] == "True"]
    if late * 2 > len(ages):  # most late at once: an outage, no node stale, every GPU held healthy
        assert stale == []
        assert st(plan, "StargateCluster", "site")["gpus"]["healthy"] == len(ages)
    else:
        assert stale == [i for i, a in enumerate(ages) if a >= 120]
        assert st(plan, "StargateCluster", "site")["gpus"]["healthy"] == len(ages) - late


def test_the_condition_event_and_return() -> None:
    objs = [cluster(), rack("r"), node("a", "r", telemetry={"powerWatts": 300, "observedAt": ts(NOW)}),
            node("b", "r", telemetry={"powerWatts": 300, "observedAt": ts(NOW)})]
    first = run([*objs, UP])
    available = cond(st(first, "StargateCluster", "site"), "TelemetryAvailable")
    assert (available["status"], available["reason"]) == ("True", "Reporting")
    assert not [e for e in first.events if e.reason.startswith("Telemetry")]  # a first status: no news
    down = run([*feed_back(objs, first), DOWN], now=NOW + timedelta(seconds=20))
    site = st(down, "StargateCluster", "site")
    tel = cond(site, "TelemetryAvailable")
    assert (tel["status"], tel["reason"]) == ("False", "PrometheusUnavailable")
    assert "since 2026-01-01T12:00:05Z" in tel["message"] and "connection refused" in tel["message"]
    assert [(e.type, e.reason) for e in down.events if e.key[0] == "StargateCluster"] == [
        ("Warning", "TelemetryUnavailable")]
    assert site["power"]["measuredWatts"] == 0  # the readings are not believed: nodes count as allocated
    assert site["gpus"]["healthy"] == 2
    fresh = _fresh_at(feed_back(objs, down), ts(NOW + timedelta(seconds=40)))
    back = run([*fresh, UP], now=NOW + timedelta(seconds=40))
    tel = cond(st(back, "StargateCluster", "site"), "TelemetryAvailable")
    assert tel["status"] == "True"
    assert [(e.type, e.reason) for e in back.events if e.key[0] == "StargateCluster"] == [
        ("Normal", "TelemetryAvailable")]
    assert st(back, "StargateCluster", "site")["power"]["measuredWatts"] == 600
