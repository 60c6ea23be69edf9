"""Capacity rollups and node health, including bad telemetry."""

from __future__ import annotations

from datetime import timedelta

from helpers.core_objects import GB, NOW, cluster, cond, node, rack, run, st, ts


def _health(telemetry: dict[str, object] | None, *, count: int = 4, maintenance: bool = False,
            stale: float = 120.0) -> dict[str, object]:
    plan = run([cluster(), rack("r"), node("n", "r", count=count, telemetry=telemetry,
                                           maintenance=maintenance)], stale=stale)
    return st(plan, "GPUNode", "n")


def test_no_telemetry_counts_every_gpu_healthy() -> None:
    status = _health(None)
    assert status["healthyGPUs"] == 4
    assert cond(status, "TelemetryStale")["status"] == "False"
    assert cond(status, "TelemetryStale")["reason"] == "NoTelemetry"
    assert cond(status, "Ready")["status"] == "True"


def test_fresh_telemetry_gives_its_healthy_count() -> None:
    status = _health({"healthyGPUs": 3, "powerWatts": 10, "observedAt": ts(NOW - timedelta(seconds=30))})
    assert status["healthyGPUs"] == 3
    assert cond(status, "TelemetryStale")["status"] == "False"


def test_stale_telemetry_counts_nothing_healthy() -> None:
    status = _health({"healthyGPUs": 4, "observedAt": ts(NOW - timedelta(seconds=121))})
    assert status["healthyGPUs"] == 0
    assert cond(status, "TelemetryStale")["status"] == "True"
    assert cond(status, "Ready")["reason"] == "TelemetryStale"
    # exactly at the threshold it is stale, so that next_change_at is a real change
    assert _health({"observedAt": ts(NOW - timedelta(seconds=120))})["healthyGPUs"] == 0
    assert _health({"observedAt": ts(NOW - timedelta(seconds=119))})["healthyGPUs"] == 4


def test_maintenance_has_no_healthy_gpus_and_demand_equals_floor() -> None:
    status = _health({"healthyGPUs": 4, "observedAt": ts(NOW)}, maintenance=True)
    assert status["healthyGPUs"] == 0
    assert status["demandWatts"] == status["floorWatts"] == 400
    assert cond(status, "Ready")["reason"] == "Maintenance"


def test_nonsense_telemetry_does_not_crash() -> None:
    assert _health({"healthyGPUs": 99, "observedAt": ts(NOW)})["healthyGPUs"] == 4  # clamped
    assert _health({"healthyGPUs": -3, "observedAt": ts(NOW)})["healthyGPUs"] == 0
    assert _health({"healthyGPUs": "many", "observedAt": ts(NOW)})["healthyGPUs"] == 4
    bad = _health({"healthyGPUs": 4, "observedAt": "yesterday-ish"})
    assert bad["healthyGPUs"] == 0
    assert cond(bad, "TelemetryStale")["reason"] == "InvalidTimestamp"
    missing = _health({"healthyGPUs": 4})
    assert cond(missing, "TelemetryStale")["reason"] == "MissingTimestamp"
    assert _health({})["healthyGPUs"] == 4  # an empty telemetry object is no telemetry


def test_future_observed_at_is_fresh_within_the_threshold_and_clock_skew_beyond() -> None:
    assert _health({"healthyGPUs": 2, "observedAt": ts(NOW + timedelta(seconds=60))})["healthyGPUs"] == 2
    skewed = _health({"healthyGPUs": 2, "observedAt": ts(NOW + timedelta(days=1))})
    assert skewed["healthyGPUs"] == 0
    assert cond(skewed, "TelemetryStale")["reason"] == "ClockSkew"


def test_next_change_is_when_the_freshest_telemetry_goes_stale() -> None:
    seen = NOW - timedelta(seconds=30)
    plan = run([cluster(), rack("r"),
                node("a", "r", telemetry={"observedAt": ts(seen)}),
                node("b", "r", telemetry={"observedAt": ts(NOW - timedelta(seconds=10))}),
                node("c", "r", telemetry={"observedAt": ts(NOW - timedelta(seconds=500))})])
    assert plan.next_change_at == seen + timedelta(seconds=120)
    after = run([cluster(), rack("r"), node("a", "r", telemetry={"observedAt": ts(seen)})],
                now=seen + timedelta(seconds=120))
    assert st(after, "GPUNode", "a")["healthyGPUs"] == 0
    assert after.next_change_at is None


def test_rollups_node_to_rack_to_site() -> None:
    tele = {"healthyGPUs": 6, "powerWatts": 5000, "observedAt": ts(NOW)}
    objs = [
        cluster(),
        rack("r1"),
        node("a", "r1", count=8, mem=80 * GB, host=2000 * GB, telemetry=tele),
        node("b", "r1", count=8, mem=80 * GB, host=2000 * GB, maintenance=True),
        rack("r2"),
        node("c", "r2", count=4, mem=186 * GB, host=960 * GB),
    ]
    plan = run(objs)
    r1 = st(plan, "Rack", "r1")
    assert (r1["nodes"], r1["gpus"]) == (2, {"total": 16, "healthy": 6})
    assert r1["power"]["measuredWatts"] == 5000
    site = st(plan, "StargateCluster", "site")
    assert (site["racks"], site["nodes"]) == (2, 3)
    assert site["gpus"] == {"total": 20, "healthy": 10}
    assert site["memory"] == {"hbmBytes": 6 * 80 * GB + 4 * 186 * GB, "hostBytes": 2960 * GB}


def test_telemetry_is_never_part_of_the_operator_status() -> None:
    status = _health({"healthyGPUs": 4, "observedAt": ts(NOW)})
    assert "telemetry" not in status
