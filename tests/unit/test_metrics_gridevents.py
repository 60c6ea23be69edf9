"""The GridEvent series: read from the statuses the real core writes, at the
instants of a schedule; promtool-clean."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from typing import Any

from helpers.core_objects import NOW, NS, cluster, feed_back, node, rack, run, ts
from helpers.domains import domain, fed
from helpers.gridevents import gev
from helpers.metrics import promtool, scrape, value
from stargate_operator import metrics
from stargate_operator.core.wire import parse_epoch

E = {"namespace": NS, "cluster": "site"}
START, END = NOW + timedelta(minutes=10), NOW + timedelta(minutes=40)


def site() -> list[dict[str, Any]]:
    seen = ts(NOW + timedelta(minutes=15, seconds=-5))  # fresh at the instant the tests scrape
    telemetry = {"powerWatts": 450, "healthyGPUs": 1, "observedAt": seen}
    return [
        cluster(it=100_000, reserve=0),
        domain("feed", role="Utility", rating=10_000),
        fed("hi", "feed", priority=900), rack("lo", priority=100),
        *(node(f"hi-{i}", "hi", telemetry=telemetry) for i in range(4)),
        *(node(f"lo-{i}", "lo") for i in range(4)),
        gev("peak", domain_ref="feed", start=START, end=END, limit=1_500),
        gev("shed", start=NOW - timedelta(hours=1), percent=50),
        gev("lost", cluster_ref="gone", start=NOW - timedelta(hours=1), percent=50),
    ]


def at(minutes: int) -> list[dict[str, Any]]:
    objs = site()
    now = NOW + timedelta(minutes=minutes)
    return feed_back(objs, run(objs, now=now))


def test_an_event_is_active_and_exports_its_figures_only_in_effect() -> None:
    peak = {**E, "event": "peak", "domain": "feed"}
    before = scrape(at(0))
    assert value(before, "stargate_grid_event_active", **peak) == 0
    assert value(before, "stargate_grid_event_start_timestamp_seconds", **peak) == parse_epoch(ts(START))
    assert value(before, "stargate_grid_event_end_timestamp_seconds", **peak) == parse_epoch(ts(END))
    assert value(before, "stargate_grid_event_info", **peak, source="openadr3:vtn-1/event-7") == 1
    for name in ("target", "allocated", "measured"):
        assert ("stargate_grid_event_" + name + "_watts", frozenset(peak.items())) not in before
    during = scrape(at(15))
    assert value(during, "stargate_grid_event_active", **peak) == 1
    # the feed's 1,500 W over hi's floor 400: hi gets 1,500; its agents measure 4 x 450 = 1,800
    assert value(during, "stargate_grid_event_target_watts", **peak) == 1_500
    assert value(during, "stargate_grid_event_allocated_watts", **peak) == 1_500
    assert value(during, "stargate_grid_event_measured_watts", **peak) == 1_800
    assert value(during, "stargate_grid_event_met", **peak) == 0  # MeasuredAboveTarget
    after = scrape(at(45))
    assert value(after, "stargate_grid_event_active", **peak) == 0
    assert ("stargate_grid_event_met", frozenset(peak.items())) not in after


def test_a_site_event_has_no_domain_label_and_an_invalid_one_is_never_active() -> None:
    s = scrape(at(15))
    shed = {**E, "event": "shed", "domain": ""}
    assert value(s, "stargate_grid_event_active", **shed) == 1
    assert value(s, "stargate_grid_event_target_watts", **shed) == 50_000
    assert value(s, "stargate_grid_event_met", **shed) == 1
    assert ("stargate_grid_event_end_timestamp_seconds", frozenset(shed.items())) not in s  # open-ended
    lost = {"namespace": NS, "cluster": "gone", "event": "lost", "domain": ""}
    assert value(s, "stargate_grid_event_active", **lost) == 0
    assert value(s, "stargate_objects", namespace=NS, kind="GridEvent", ready="false") == 1
    assert value(s, "stargate_objects", namespace=NS, kind="GridEvent", ready="true") == 2


def test_promtool_check_metrics_is_clean_with_grid_events() -> None:
    body = subprocess.run([promtool(), "check", "metrics"], capture_output=True, check=False,
                          input=_text(at(15)))
    assert body.returncode == 0, (body.stdout + body.stderr).decode()


def _text(objs: list[dict[str, Any]]) -> bytes:
    from prometheus_client import generate_latest

    out = generate_latest(metrics.make_registry(metrics.StaticSource(objs)))
    assert b"stargate_grid_event_measured_watts{" in out
    return out
