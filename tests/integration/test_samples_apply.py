"""The samples against the real API server: every one is accepted by `kubectl apply --server-side
--validate=strict` and stored exactly as the models read it; `kubectl get stargate -A` lists every kind;
the printer columns print the figures put into status; the grid-event examples are accepted too."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.kube import Kubectl, purge_namespace
from stargate_operator import kinds
from stargate_operator.api.load import LoadedObject, load_manifests

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "crds" / "samples"
NAMESPACES = ("stargate-abilene", "stargate-north-sea")
PLURAL = {k.kind: k.plural for k in kinds.KINDS}


@pytest.fixture(scope="module")
def applied(kubectl: Kubectl) -> Iterator[str]:
    """The samples applied as docs/getting-started.md says; the output of that apply. Removed afterwards."""
    for ns in NAMESPACES:  # leftovers of an earlier test would hide a problem
        purge_namespace(kubectl, ns)
    r = kubectl(
        "apply",
        "--server-side",
        "--validate=strict",
        "--field-manager=samples-test",
        "-f",
        str(SAMPLES),
        check=False,
        timeout=180,
    )
    assert r.returncode == 0, f"the samples were refused:\n{r.stderr}"
    yield r.stdout
    for ns in NAMESPACES:
        purge_namespace(kubectl, ns)


@pytest.fixture(scope="module")
def samples() -> list[LoadedObject]:
    return load_manifests([SAMPLES])


def test_every_sample_is_accepted_and_stored_as_the_models_read_it(
    kubectl: Kubectl, applied: str, samples: list[LoadedObject]
) -> None:
    assert "serverside-applied" in applied
    for ns in NAMESPACES:
        for kind, plural in PLURAL.items():
            stored = {o["metadata"]["name"]: o for o in kubectl.json("get", plural, "-n", ns)["items"]}
            expected = {o.name: o.body for o in samples if o.kind == kind and o.namespace == ns}
            assert set(stored) == set(expected), f"{kind} in {ns}"
            for name, body in expected.items():
                # the server's defaults and the models' defaults agree, field for field
                assert stored[name]["spec"] == body["spec"], f"{kind} {ns}/{name}"


def test_kubectl_get_stargate_lists_every_kind(
    kubectl: Kubectl, applied: str, samples: list[LoadedObject]
) -> None:
    out = kubectl("get", "stargate", "-A", "--no-headers", "-o",
                  "custom-columns=NS:.metadata.namespace,KIND:.kind").stdout.splitlines()
    # In the samples' namespaces only: another test's namespace may still be being purged. And
    # PowerLimitSlices are the operator's output, not samples.
    spaces = {o.namespace for o in samples}
    counts = Counter(kind for ns, kind in (line.split() for line in out)
                     if ns in spaces and kind != "PowerLimitSlice")
    expected = Counter(o.kind for o in samples)
    assert counts == expected
    table = kubectl("get", "stargate", "-A").stdout
    # every kind but GridEvent, whose samples are in grid-events/ (test_the_grid_event_samples...),
    # and PowerLimitSlice, which only the operator writes
    assert set(PLURAL) - {o.kind for o in samples} == {"GridEvent", "PowerLimitSlice"}
    for kind in {o.kind for o in samples}:
        assert f"{kind.lower()}.stargate.dev/" in table
    # and by short name
    assert "gb200-f01" in kubectl("get", "rk", "-n", "stargate-north-sea").stdout


def _table(text: str) -> list[dict[str, str]]:
    """kubectl's table output, cut at the header's column offsets (cells may be empty)."""
    header, *rows = text.rstrip("\n").split("\n")
    names = header.split()
    starts = []
    pos = 0
    for name in names:
        pos = header.index(name, pos)
        starts.append(pos)
        pos += len(name)
    out = []
    for row in rows:
        cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        out.append(dict(zip(names, cells, strict=True)))
    return out


def _condition(type_: str, status: str, reason: str) -> dict[str, str]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "set by the test",
        "lastTransitionTime": "2026-04-12T20:00:00Z",
    }


# kind, name, status written through the status subresource, default columns, wide-only columns
COLUMNS: list[tuple[str, str, dict[str, Any], dict[str, str], dict[str, str]]] = [
    (
        "sgc",
        "north-sea",
        {
            "racks": 3,
            "nodes": 40,
            "gpus": {"total": 176, "healthy": 172},
            "power": {
                "budgetWatts": 247000,
                "floorWatts": 147200,
                "demandWatts": 278400,
                "allocatedWatts": 247000,
                "measuredWatts": 231000,
                "facilityWatts": 242550,
                "limitsConfirmed": 38,
            },
            "conditions": [
                _condition("Ready", "True", "Reconciled"),
                _condition("PowerOvercommitted", "False", "FloorsFit"),
                _condition("Capping", "False", "DrawBelowCapAt"),
            ],
        },
        {
            "REGION": "eu-north-sea",
            "RACKS": "3",
            "HEALTHY": "172",
            "GPUS": "176",
            "BUDGET-W": "247000",
            "DEMAND-W": "278400",
            "ALLOCATED-W": "247000",
            "OVERCOMMITTED": "False",
            "READY": "True",
        },
        {
            "SITE": "Floating",
            "COOLING": "Seawater",
            "NODES": "40",
            "MEASURED-W": "231000",
            "CONFIRMED": "38",
            "FACILITY-W": "242550",
            "CURTAIL-%": "",
            "CAPPING": "False",
        },
    ),
    (
        "rk",
        "gb200-f01",
        {
            "nodes": 18,
            "gpus": {"total": 72, "healthy": 70},
            "power": {
                "budgetWatts": 118800,
                "floorWatts": 61200,
                "demandWatts": 118800,
                "measuredWatts": 101234,
                "limitsConfirmed": 17,
            },
            "conditions": [
                _condition("Ready", "True", "Allocated"),
                _condition("PowerCapped", "False", "Unlimited"),
                _condition("OverBudget", "False", "WithinBudget"),
            ],
        },
        {
            "CLUSTER": "north-sea",
            "PRIORITY": "800",
            "HEALTHY": "70",
            "GPUS": "72",
            "BUDGET-W": "118800",
            "DEMAND-W": "118800",
            "READY": "True",
        },
        {
            "NODES": "18",
            "FLOOR-W": "61200",
            "MEASURED-W": "101234",
            "MAX-W": "132000",
            "CAPPED": "False",
            "OVER-BUDGET": "False",
            "POWER-DOMAIN": "",
            "COOLING-DOMAIN": "cdu-deck-1",
            "LIMITED-BY": "",
            "CONFIRMED": "17",
        },
    ),
    (
        "pdom",
        "seawater-loop",
        {
            "ratingWatts": 290000,
            "usableWatts": 232000,
            "racks": 3,
            "floorWatts": 147200,
            "demandWatts": 278400,
            "allocatedWatts": 232000,
            "measuredWatts": 221000,
            "headroomWatts": 0,
            "path": ["seawater-loop"],
            "conditions": [
                _condition("Ready", "True", "PowerAllocated"),
                _condition("Overcommitted", "False", "FloorsFit"),
                _condition("Constrained", "True", "DemandExceedsUsable"),
                _condition("OverLimit", "False", "WithinLimit"),
                _condition("Capping", "True", "DrawAboveCapAt"),
            ],
        },
        {
            "TYPE": "Cooling",
            "ROLE": "SeawaterLoop",
            "PARENT": "",
            "USABLE-W": "232000",
            "ALLOCATED-W": "232000",
            "MEASURED-W": "221000",
            "HEADROOM-W": "0",
            "RACKS": "3",
            "READY": "True",
        },
        {
            "RATING-W": "290000",
            "FLOOR-W": "147200",
            "DEMAND-W": "278400",
            "OVERCOMMITTED": "False",
            "CONSTRAINED": "True",
            "CAPPING": "True",
        },
    ),
    (
        "gpun",
        "gb200-f02-n03",
        {
            "powerLimitWatts": 950,
            "allocatedWatts": 5600,
            "floorWatts": 3400,
            "demandWatts": 6600,
            "healthyGPUs": 3,
            "telemetry": {
                "powerWatts": 5512,
                "healthyGPUs": 3,
                "enforcedLimitWatts": 950,
                "observedAt": "2026-04-12T20:00:00Z",
            },
            "conditions": [
                _condition("Ready", "True", "Allocated"),
                _condition("TelemetryStale", "False", "Fresh"),
                _condition("PowerLimitApplied", "True", "Enforced"),
            ],
        },
        {
            "RACK": "gb200-f02",
            "MODEL": "GB200",
            "HEALTHY": "3",
            "GPUS": "4",
            "LIMIT-W": "950",
            "ALLOCATED-W": "5600",
            "READY": "True",
        },
        {
            "DEMAND-W": "6600",
            "MEASURED-W": "5512",
            "ENFORCED-W": "950",
            "MAINTENANCE": "false",
            # spec.cordoned: node discovery's, unset in the sample and without a default
            "CORDONED": "",
            "STALE": "False",
            "APPLIED": "True",
        },
    ),
    (
        "mpool",
        "cxl-pond",
        {
            "capacityBytes": 4398046511104,
            "allocatedBytes": 3298534883328,
            "availableBytes": 1099511627776,
            "claims": {"bound": 1, "pending": 1},
            "conditions": [
                _condition("Ready", "True", "Sized"),
                _condition("Exhausted", "True", "NothingFits"),
            ],
        },
        {
            "CLUSTER": "north-sea",
            "TIER": "CXL",
            "CAPACITY": "4398046511104",
            "ALLOCATED": "3298534883328",
            "AVAILABLE": "1099511627776",
            "BOUND": "1",
            "PENDING": "1",
            "READY": "True",
        },
        {"EXHAUSTED": "True", "RACK": ""},
    ),
    (
        "mclaim",
        "nightly-eval",
        {"phase": "Pending", "conditions": [_condition("Ready", "False", "Evicted")]},
        {"POOL": "cxl-pond", "SIZE": "2199023255552", "PRIORITY": "50", "PHASE": "Pending", "READY": "False"},
        {"ALLOCATED": "", "BOUND-AT": ""},
    ),
]


@pytest.mark.parametrize(("kind", "name", "status", "columns", "wide"), COLUMNS, ids=[c[0] for c in COLUMNS])
def test_printer_columns_print_the_right_figures(
    kubectl: Kubectl,
    applied: str,
    kind: str,
    name: str,
    status: dict[str, Any],
    columns: dict[str, str],
    wide: dict[str, str],
) -> None:
    ns = "stargate-north-sea"
    kubectl(
        "patch",
        kind,
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    (row,) = _table(kubectl("get", kind, name, "-n", ns).stdout)
    assert {k: row[k] for k in columns} == columns
    assert list(row)[-2:] == ["READY", "AGE"]
    assert set(row) == {*columns, "NAME", "AGE"}, "a default column is not checked"
    (row,) = _table(kubectl("get", kind, name, "-n", ns, "-o", "wide").stdout)
    assert {k: row[k] for k in wide} == wide
    assert set(row) == {*columns, *wide, "NAME", "AGE"}, "a wide column is not checked"


def test_the_grid_event_samples_are_accepted_and_print_their_figures(kubectl: Kubectl, applied: str) -> None:
    """crds/samples/grid-events/ as the docs apply it; stored as the models read it; `kubectl get
    gev` prints the figures put into status (the operator's, as the core would write them)."""
    folder = SAMPLES / "grid-events"
    r = kubectl("apply", "--server-side", "--validate=strict", "--field-manager=grid-operator", "-f",
                str(folder), check=False)
    assert r.returncode == 0, r.stderr
    events = load_manifests([folder])
    assert {(o.namespace, o.name) for o in events} == {
        ("stargate-abilene", "ercot-4cp-2027-08-16"), ("stargate-north-sea", "aggregator-dispatch-0412")}
    for o in events:
        stored = kubectl.json("get", "gev", o.name, "-n", o.namespace)
        assert stored["spec"] == o.body["spec"]
    ns, name = "stargate-north-sea", "aggregator-dispatch-0412"
    status = {
        "phase": "Active", "targetWatts": 197600, "allocatedWatts": 197600, "measuredWatts": 190123,
        "baselineWatts": 247000, "shedWattHours": 1520.5, "rampStartedAt": "2026-04-12T16:58:00Z",
        "targetReachedAt": "2026-04-12T17:00:00Z",
        "conditions": [_condition("Ready", "True", "Active"), _condition("Met", "True", "WithinTarget")],
    }
    kubectl("patch", "gev", name, "-n", ns, "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": status}))
    (row,) = _table(kubectl("get", "gev", name, "-n", ns).stdout)
    columns = {"CLUSTER": "north-sea", "DOMAIN": "", "START": "2026-04-12T17:00:00Z", "END": "",
               "PHASE": "Active", "TARGET-W": "197600", "MEASURED-W": "190123", "MET": "True",
               "READY": "True", "BASELINE-W": "247000", "SHED-WH": "1520.5"}
    assert {k: row[k] for k in columns} == columns
    assert set(row) == {*columns, "NAME", "AGE"}, "a default column is not checked"
    (row,) = _table(kubectl("get", "gev", name, "-n", ns, "-o", "wide").stdout)
    wide = {"REDUCE-%": "20", "LIMIT-W": "", "ALLOCATED-W": "197600",
            "SOURCE": "aggregator:nordic-flex/dispatch-2026-0412-1700",
            "RAMP-STARTED": "2026-04-12T16:58:00Z", "TARGET-REACHED": "2026-04-12T17:00:00Z"}
    assert {k: row[k] for k in wide} == wide
    assert set(row) == {*columns, *wide, "NAME", "AGE"}, "a wide column is not checked"
    (row,) = _table(kubectl("get", "gev", "-n", "stargate-abilene", "-o", "wide").stdout)
    assert (row["DOMAIN"], row["START"], row["END"], row["LIMIT-W"]) == (
        "utility-13kv", "2027-08-16T20:00:00Z", "2027-08-16T22:00:00Z", "250000")
    assert "gridevent.stargate.dev/aggregator-dispatch-0412" in kubectl("get", "stargate", "-n", ns).stdout
    kubectl("delete", "-f", str(folder))
    assert kubectl.json("get", "gev", "-A")["items"] == []
