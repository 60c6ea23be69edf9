"""`plan` with GridEvents: `--now` shows any instant of a schedule, the table lists
each site's events, and bad GridEvent manifests exit 2 naming the file, the object and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stargate_operator import kinds
from stargate_operator.cli import main

SITE = """
apiVersion: stargate.dev/v1alpha1
kind: StargateCluster
metadata: {name: site, namespace: grid}
spec:
  site: {region: test, kind: Onshore, cooling: Air}
  power: {itCapacityWatts: 20000, reservePercent: 0}
---
apiVersion: stargate.dev/v1alpha1
kind: PowerDomain
metadata: {name: feed, namespace: grid}
spec: {clusterRef: site, role: Utility, ratingWatts: 20000, deratePercent: 100}
---
apiVersion: stargate.dev/v1alpha1
kind: Rack
metadata: {name: hi, namespace: grid}
spec: {clusterRef: site, maxPowerWatts: 20000, priority: 900, powerDomainRef: feed}
---
apiVersion: stargate.dev/v1alpha1
kind: Rack
metadata: {name: lo, namespace: grid}
spec: {clusterRef: site, maxPowerWatts: 20000, priority: 100, powerDomainRef: feed}
---
apiVersion: stargate.dev/v1alpha1
kind: GPUNode
metadata: {name: hi-1, namespace: grid}
spec:
  rackRef: hi
  gpu: {model: H100-SXM, count: 8, memoryBytes: 80000000000, minPowerWatts: 200, maxPowerWatts: 700}
  basePowerWatts: 1000
---
apiVersion: stargate.dev/v1alpha1
kind: GPUNode
metadata: {name: lo-1, namespace: grid}
spec:
  rackRef: lo
  gpu: {model: H100-SXM, count: 8, memoryBytes: 80000000000, minPowerWatts: 200, maxPowerWatts: 700}
  basePowerWatts: 1000
---
# the morning: the site sheds 40 % from 09:00 to 11:00
apiVersion: stargate.dev/v1alpha1
kind: GridEvent
metadata: {name: morning, namespace: grid}
spec: {clusterRef: site, start: "2026-07-01T09:00:00Z", end: "2026-07-01T11:00:00Z", reducePercent: 40,
       source: "openadr3:vtn/evt-1"}
---
# the afternoon: the feed is held to 9 kW from 14:00, open-ended
apiVersion: stargate.dev/v1alpha1
kind: GridEvent
metadata: {name: afternoon, namespace: grid}
spec: {clusterRef: site, powerDomainRef: feed, start: 2026-07-01T14:00:00Z, limitWatts: 9000}
"""
# Each node: floor 1000 + 8 x 200 = 2600 W, demand 1000 + 8 x 700 = 6600 W; the site 20 kW.


def _plan(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    path = tmp_path / "site.yaml"
    if not path.exists():
        path.write_text(SITE)
    code = main(["plan", "-f", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def _at(tmp_path: Path, capsys: pytest.CaptureFixture[str], now: str) -> dict[tuple[str, str], Any]:
    code, out, err = _plan(tmp_path, capsys, "-o", "json", "--now", now)
    assert code == 0, err
    return {(o["kind"], o["metadata"]["name"]): o["status"] for o in json.loads(out)["items"]}


def _met(status: dict[str, Any]) -> str:
    return next(c["status"] for c in status["conditions"] if c["type"] == "Met")


def test_now_shows_every_instant_of_a_schedule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = []
    for now in ("2026-07-01T08:00:00Z", "2026-07-01T09:00:00Z", "2026-07-01T10:59:59Z",
                "2026-07-01T11:00:00Z", "2026-07-01T14:00:00Z", "2026-12-31T00:00:00Z"):
        s = _at(tmp_path, capsys, now)
        rows.append((s["GridEvent", "morning"]["phase"], s["GridEvent", "afternoon"]["phase"],
                     s["StargateCluster", "site"]["power"]["budgetWatts"],
                     s["PowerDomain", "feed"]["usableWatts"],
                     s["Rack", "hi"]["power"]["budgetWatts"], s["Rack", "lo"]["power"]["budgetWatts"]))
    assert rows == [
        ("Scheduled", "Scheduled", 20_000, 20_000, 6_600, 6_600),  # both racks get their demand
        ("Active", "Scheduled", 12_000, 20_000, 6_600, 5_400),  # 40 % off the site: lo gets the rest
        ("Active", "Scheduled", 12_000, 20_000, 6_600, 5_400),
        ("Completed", "Scheduled", 20_000, 20_000, 6_600, 6_600),
        ("Completed", "Active", 20_000, 9_000, 6_400, 2_600),  # the feed: hi above lo's floor
        ("Completed", "Active", 20_000, 9_000, 6_400, 2_600),
    ]
    s = _at(tmp_path, capsys, "2026-07-01T10:00:00Z")
    morning = s["GridEvent", "morning"]
    assert (morning["targetWatts"], morning["allocatedWatts"], _met(morning)) == (12_000, 12_000, "True")
    afternoon = s["GridEvent", "afternoon"]
    assert afternoon["targetWatts"] == 9_000 and _met(afternoon) == "Unknown"


def test_the_table_lists_each_sites_events_at_the_instant(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _plan(tmp_path, capsys, "--now", "2026-07-01T10:00:00Z")
    assert code == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["GRID", "EVENT"])
    events = {line.split()[0]: line.split() for line in lines[header + 1:header + 3]}
    assert events["morning"][:6] == ["morning", "site", "-40%", "2026-07-01T09:00:00Z",
                                     "2026-07-01T11:00:00Z", "Active"]
    assert events["morning"][-1] == "True"
    assert events["afternoon"][1:3] == ["feed", "<="] and "Scheduled" in events["afternoon"]
    assert "open" in events["afternoon"] and "(NotStarted)" in events["afternoon"][-1]


# (id, dotted path into the good event, bad value, field the message must name)
DELETE = object()
BAD: list[tuple[str, str, Any, str]] = [
    ("no-target", "spec.limitWatts", DELETE, "spec.reducePercent"),
    ("both-targets", "spec.reducePercent", 10, "spec.limitWatts"),
    ("percent-zero", "spec", {"clusterRef": "site", "start": "2026-07-01T14:00:00Z", "reducePercent": 0},
     "spec.reducePercent"),
    ("percent-above-100", "spec", {"clusterRef": "site", "start": "2026-07-01T14:00:00Z",
                                   "reducePercent": 150}, "spec.reducePercent"),
    ("negative-watts", "spec.limitWatts", -9000, "spec.limitWatts"),
    ("end-before-start", "spec.end", "2026-07-01T13:00:00Z", "spec.end"),
    ("end-at-start", "spec.end", "2026-07-01T14:00:00Z", "spec.end"),
    ("start-not-a-date-time", "spec.start", "after lunch", "spec.start"),
    ("start-without-offset", "spec.start", "2026-07-01 14:00", "spec.start"),
    ("no-start", "spec.start", DELETE, "spec.start"),
    ("bad-name", "metadata.name", "Afternoon_Peak", "metadata.name"),
    ("bad-cluster-ref", "spec.clusterRef", "Site One", "spec.clusterRef"),
    ("bad-domain-ref", "spec.powerDomainRef", "feed_1", "spec.powerDomainRef"),
    ("watts-as-text", "spec.limitWatts", "9 kW", "spec.limitWatts"),
]


def _bad(path: str, value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": kinds.API_VERSION, "kind": "GridEvent",
                           "metadata": {"name": "afternoon", "namespace": "grid"},
                           "spec": {"clusterRef": "site", "powerDomainRef": "feed",
                                    "start": "2026-07-01T14:00:00Z", "limitWatts": 9000}}
    *parents, last = path.split(".")
    target = doc
    for p in parents:
        target = target[p]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return doc


@pytest.mark.parametrize(("path", "value", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_plan_exits_2_on_a_bad_grid_event_naming_file_object_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str, value: Any, field: str
) -> None:
    doc = _bad(path, value)
    manifest = tmp_path / "events.yaml"
    manifest.write_text(yaml.safe_dump_all([doc]))
    code = main(["plan", "-f", str(manifest)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    where = f"{manifest}: GridEvent grid/{doc['metadata']['name']} (document 1): field {field}: "
    assert where in err, err
    assert "Traceback" not in err and err.count("\n") == 2  # the heading and one line


def test_there_are_at_least_8_bad_grid_event_cases() -> None:
    assert len({b[0] for b in BAD}) == len(BAD) >= 8
