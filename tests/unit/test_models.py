"""The API models: good and bad values of every kind, defaults, wire names, the offline CEL mirrors."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from stargate_operator.api import BY_KIND, KINDS, GPUNode, MemoryClaim, MemoryPool, Rack, StargateCluster
from stargate_operator.api.load import ManifestError, validate_document
from stargate_operator.cli import main

API = "stargate.dev/v1alpha1"


def cluster() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "StargateCluster",
        "metadata": {"name": "north-sea", "namespace": "sg"},
        "spec": {
            "site": {"region": "eu-north-sea", "kind": "Floating", "cooling": "Seawater", "designPUE": 1.05},
            "power": {
                "itCapacityWatts": 260_000,
                "reservePercent": 5,
                "enforcement": "Observe",
                "curtailment": {"percent": 20, "reason": "DR event", "until": "2026-04-12T21:00:00Z"},
            },
            "carbon": {"gridIntensityGramsPerKWh": 30.5},
        },
    }


def rack() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Rack",
        "metadata": {"name": "gb200-f01", "namespace": "sg"},
        "spec": {
            "clusterRef": "north-sea",
            "location": {"hall": "deck-1", "row": "port", "position": "01"},
            "maxPowerWatts": 132_000,
            "priority": 800,
        },
    }


def node() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "GPUNode",
        "metadata": {"name": "gb200-f01-n01", "namespace": "sg"},
        "spec": {
            "rackRef": "gb200-f01",
            "nodeName": "north-sea-gb200-f01-n01",
            "gpu": {
                "model": "GB200",
                "count": 4,
                "memoryBytes": 192 * 10**9,
                "minPowerWatts": 400,
                "maxPowerWatts": 1200,
                "requestedPowerWatts": 1000,
            },
            "basePowerWatts": 1800,
            "hostMemoryBytes": 960 * 10**9,
            "maintenance": False,
        },
        "status": {
            "healthyGPUs": 4,
            "powerLimitWatts": 1000,
            "telemetry": {
                "powerWatts": 5400,
                "healthyGPUs": 4,
                "hbmUsedBytes": 10**11,
                "observedAt": "2026-04-12T20:00:00Z",
            },
        },
    }


def pool() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "MemoryPool",
        "metadata": {"name": "cxl-pond", "namespace": "sg"},
        "spec": {"clusterRef": "north-sea", "tier": "CXL", "capacityBytes": 4 * 2**40},
    }


def claim() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "MemoryClaim",
        "metadata": {"name": "feature-store", "namespace": "sg"},
        "spec": {"poolRef": "cxl-pond", "sizeBytes": 3 * 2**40, "priority": 500},
        "status": {"phase": "Bound", "allocatedBytes": 3 * 2**40, "boundAt": "2026-04-12T20:00:00Z"},
    }


def pdom() -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "PowerDomain",
        "metadata": {"name": "pdu-3", "namespace": "sg"},
        "spec": {
            "clusterRef": "north-sea",
            "parentRef": "swbd-1",
            "type": "Electrical",
            "role": "FloorPDU",
            "ratingWatts": 562_500,
            "deratePercent": 80,
        },
    }


def feed() -> dict[str, Any]:
    """A domain rated by its electrical figures instead of watts."""
    doc = with_value(pdom(), "spec.ratingWatts", DELETE)
    doc["spec"]["electrical"] = {"voltage": 13_800, "amperage": 40, "phases": 3, "powerFactor": 0.95}
    return doc


def gev() -> dict[str, Any]:
    """A grid event: an absolute cap on one utility feed for three hours."""
    return {
        "apiVersion": API,
        "kind": "GridEvent",
        "metadata": {"name": "ercot-4cp-0816", "namespace": "sg"},
        "spec": {
            "clusterRef": "abilene",
            "powerDomainRef": "utility-13kv",
            "start": "2027-08-16T19:00:00Z",
            "end": "2027-08-16T22:00:00Z",
            "limitWatts": 250_000,
            "reason": "ERCOT 4CP peak interval",
            "source": "ercot:lfl/dispatch-0816",
        },
    }


def pls() -> dict[str, Any]:
    """A slice of the limits of two nodes, one of them ramping down and one above its safe limit."""
    return {
        "apiVersion": API,
        "kind": "PowerLimitSlice",
        "metadata": {"name": "abilene-0", "namespace": "sg"},
        "spec": {
            "limits": {"r1-n0": 600, "r1-n1": 650},
            "safeLimits": {"r1-n1": 600},
            "ramp": {"from": {"r1-n0": 700}, "startAt": "2027-08-16T19:00:00Z",
                     "endAt": "2027-08-16T19:01:00Z"},
            "revision": 7,
        },
    }


GOOD = {"StargateCluster": cluster, "Rack": rack, "GPUNode": node, "MemoryPool": pool, "MemoryClaim": claim,
        "PowerDomain": pdom, "GridEvent": gev, "PowerLimitSlice": pls}


def with_value(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of doc with the dotted path set to value (or removed when value is DELETE)."""
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    target = out
    for p in parents:
        target = target.setdefault(p, {})
    if value is DELETE:
        target.pop(last, None)
    else:
        target[last] = value
    return out


DELETE = object()


def refuse(doc: dict[str, Any]) -> str:
    with pytest.raises(ManifestError) as info:
        validate_document(doc, "f.yaml: obj")
    return str(info.value)


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_good_object_of_every_kind_validates_and_round_trips(kind: str) -> None:
    doc = GOOD[kind]()
    body = validate_document(doc, "here")
    assert body["kind"] == kind
    # the wire form keeps every field as given (defaults added, nothing renamed)
    for key, value in doc["spec"].items():
        assert body["spec"][key] == value, key
    model = BY_KIND[kind]
    again = model.model_validate(body, by_alias=True, by_name=False)
    assert again.model_dump(by_alias=True, exclude_none=True, mode="json")["spec"] == body["spec"]


def test_every_kind_is_registered() -> None:
    assert {k.kind_info.kind for k in KINDS} == set(GOOD)
    assert {k.kind_info.short_names[0] for k in KINDS} == {"sgc", "rk", "gpun", "mpool", "mclaim", "pdom",
                                                            "gev", "pls"}


def test_defaults() -> None:
    c = validate_document(
        {
            **cluster(),
            "spec": {
                "site": {"region": "r", "kind": "Onshore", "cooling": "Air"},
                "power": {"itCapacityWatts": 1000},
            },
        },
        "x",
    )
    assert c["spec"]["site"]["designPUE"] == 1.3
    assert c["spec"]["power"]["enforcement"] == "Enforce"
    assert c["spec"]["power"]["reservePercent"] == 5
    assert "curtailment" not in c["spec"]["power"]
    r = validate_document(with_value(rack(), "spec.priority", DELETE), "x")
    assert r["spec"]["priority"] == 500
    n = validate_document(
        {
            **node(),
            "spec": {
                "rackRef": "r",
                "gpu": {
                    "model": "H100-SXM",
                    "count": 8,
                    "memoryBytes": 80 * 10**9,
                    "minPowerWatts": 200,
                    "maxPowerWatts": 700,
                },
            },
        },
        "x",
    )
    assert n["spec"]["basePowerWatts"] == 0
    assert n["spec"]["hostMemoryBytes"] == 0
    assert n["spec"]["maintenance"] is False
    assert "requestedPowerWatts" not in n["spec"]["gpu"]  # the core reads "unset" as maxPowerWatts
    p = validate_document(
        with_value(with_value(pool(), "spec.tier", "DRAM"), "spec.capacityBytes", DELETE), "x"
    )
    assert p["spec"]["sharePercent"] == 100
    m = validate_document(with_value(claim(), "spec.priority", DELETE), "x")
    assert m["spec"]["priority"] == 0
    assert StargateCluster.model_fields["status"].default is None


def test_camel_case_wire_names_including_the_irregular_ones() -> None:
    c = StargateCluster.model_validate(cluster())
    assert c.spec.site.design_pue == 1.05
    assert c.spec.carbon is not None and c.spec.carbon.grid_intensity_grams_per_k_wh == 30.5
    wire = c.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert wire["spec"]["site"]["designPUE"] == 1.05
    assert wire["spec"]["carbon"]["gridIntensityGramsPerKWh"] == 30.5
    assert wire["spec"]["power"]["itCapacityWatts"] == 260_000
    n = GPUNode.model_validate(node())
    assert n.status is not None and n.status.healthy_gpus == 4
    assert n.status.telemetry is not None and n.status.telemetry.healthy_gpus == 4
    wire = n.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert wire["status"]["healthyGPUs"] == 4
    assert wire["status"]["telemetry"]["healthyGPUs"] == 4
    assert wire["status"]["telemetry"]["observedAt"] == "2026-04-12T20:00:00Z"
    assert "healthyGpus" not in wire["status"]


@pytest.mark.parametrize(
    "snake",
    [
        ("spec.site.design_pue", "spec.site.designPUE"),
        ("spec.power.it_capacity_watts", "spec.power.itCapacityWatts"),
        ("spec.carbon.grid_intensity_grams_per_k_wh", "spec.carbon.gridIntensityGramsPerKWh"),
        ("spec.carbon.gridIntensityGramsPerKwh", "spec.carbon.gridIntensityGramsPerKWh"),
        ("spec.site.designPue", "spec.site.designPUE"),
    ],
)
def test_manifests_are_read_by_wire_names_only(snake: tuple[str, str]) -> None:
    wrong, right = snake
    value = 1.1 if "PUE" in right else 1000
    doc = with_value(with_value(cluster(), right, DELETE), wrong, value)
    msg = refuse(doc)
    assert f"field {wrong}: unknown field" in msg


def test_python_code_may_build_models_by_field_name() -> None:
    r = Rack.model_validate({"metadata": {"name": "r"}, "spec": {"cluster_ref": "c", "max_power_watts": 1}})
    assert r.spec.cluster_ref == "c" and r.spec.priority == 500


# (kind, dotted path, bad value, field path expected in the message, words expected in the message)
BAD: list[tuple[str, str, Any, str, str]] = [
    ("StargateCluster", "spec.site.kind", "Offshore", "spec.site.kind", "'Onshore' or 'Floating'"),
    ("StargateCluster", "spec.site.cooling", "Oil", "spec.site.cooling", "Seawater"),
    ("StargateCluster", "spec.site.designPUE", 0.9, "spec.site.designPUE", "greater than or equal to 1"),
    ("StargateCluster", "spec.site.designPUE", 3.5, "spec.site.designPUE", "less than or equal to 3"),
    ("StargateCluster", "spec.site.region", "", "spec.site.region", "at least 1 character"),
    ("StargateCluster", "spec.site.region", DELETE, "spec.site.region", "required"),
    ("StargateCluster", "spec.power.itCapacityWatts", 0, "spec.power.itCapacityWatts", "greater than 0"),
    ("StargateCluster", "spec.power.itCapacityWatts", "400kW", "spec.power.itCapacityWatts", "valid integer"),
    ("StargateCluster", "spec.power.itCapacityWatts", DELETE, "spec.power.itCapacityWatts", "required"),
    ("StargateCluster", "spec.power.itCapacityWatts", 10**12, "spec.power.itCapacityWatts", "less than"),
    (
        "StargateCluster",
        "spec.power.reservePercent",
        51,
        "spec.power.reservePercent",
        "less than or equal to 50",
    ),
    (
        "StargateCluster",
        "spec.power.reservePercent",
        -1,
        "spec.power.reservePercent",
        "greater than or equal",
    ),
    ("StargateCluster", "spec.power.curtailment.percent", 101, "spec.power.curtailment.percent", "100"),
    (
        "StargateCluster",
        "spec.power.curtailment.until",
        "tomorrow",
        "spec.power.curtailment.until",
        "RFC 3339",
    ),
    (
        "StargateCluster",
        "spec.power.curtailment.until",
        "2026-04-12",
        "spec.power.curtailment.until",
        "RFC 3339",
    ),
    (
        "StargateCluster",
        "spec.carbon.gridIntensityGramsPerKWh",
        -1,
        "spec.carbon.gridIntensityGramsPerKWh",
        "greater than or equal to 0",
    ),
    ("StargateCluster", "spec.site.color", "blue", "spec.site.color", "unknown field"),
    ("StargateCluster", "spec", DELETE, "spec", "required"),
    ("Rack", "spec.clusterRef", DELETE, "spec.clusterRef", "required"),
    ("Rack", "spec.clusterRef", "North_Sea", "spec.clusterRef", "pattern"),
    ("Rack", "spec.maxPowerWatts", -5, "spec.maxPowerWatts", "greater than 0"),
    ("Rack", "spec.maxPowerWatts", 132_000.5, "spec.maxPowerWatts", "valid integer"),
    ("Rack", "spec.priority", 1001, "spec.priority", "less than or equal to 1000"),
    ("Rack", "spec.priority", -1, "spec.priority", "greater than or equal to 0"),
    ("Rack", "spec.location.floor", "2", "spec.location.floor", "unknown field"),
    ("GPUNode", "spec.gpu.count", 0, "spec.gpu.count", "greater than or equal to 1"),
    ("GPUNode", "spec.gpu.count", 17, "spec.gpu.count", "less than or equal to 16"),
    ("GPUNode", "spec.gpu.count", "4", "spec.gpu.count", "valid integer"),
    ("GPUNode", "spec.gpu.memoryBytes", -1, "spec.gpu.memoryBytes", "greater than 0"),
    ("GPUNode", "spec.gpu.minPowerWatts", 1300, "spec.gpu.minPowerWatts", "must not exceed maxPowerWatts"),
    ("GPUNode", "spec.gpu.maxPowerWatts", 0, "spec.gpu.maxPowerWatts", "greater than 0"),
    ("GPUNode", "spec.gpu.model", DELETE, "spec.gpu.model", "required"),
    ("GPUNode", "spec.basePowerWatts", -1, "spec.basePowerWatts", "greater than or equal to 0"),
    ("GPUNode", "spec.hostMemoryBytes", -1, "spec.hostMemoryBytes", "greater than or equal to 0"),
    ("GPUNode", "spec.maintenance", "yes", "spec.maintenance", "valid boolean"),
    ("GPUNode", "spec.rackRef", DELETE, "spec.rackRef", "required"),
    ("GPUNode", "spec.rackRef", "-rack", "spec.rackRef", "pattern"),
    ("GPUNode", "spec.nodeName", "Node A", "spec.nodeName", "pattern"),
    ("GPUNode", "status.telemetry.powerWatts", -1, "status.telemetry.powerWatts", "greater than or equal"),
    ("GPUNode", "status.telemetry.observedAt", "now", "status.telemetry.observedAt", "RFC 3339"),
    ("MemoryPool", "spec.tier", "SSD", "spec.tier", "'HBM', 'DRAM' or 'CXL'"),
    ("MemoryPool", "spec.capacityBytes", DELETE, "spec.capacityBytes", "a CXL pool needs capacityBytes"),
    ("MemoryPool", "spec.capacityBytes", 0, "spec.capacityBytes", "greater than 0"),
    ("MemoryPool", "spec.sharePercent", 50, "spec.sharePercent", "only to a pool sized from its nodes"),
    ("MemoryPool", "spec.clusterRef", DELETE, "spec.clusterRef", "required"),
    ("MemoryPool", "spec.rackRef", "Rack.1", "spec.rackRef", "pattern"),
    ("MemoryClaim", "spec.sizeBytes", 0, "spec.sizeBytes", "greater than 0"),
    ("MemoryClaim", "spec.sizeBytes", DELETE, "spec.sizeBytes", "required"),
    ("MemoryClaim", "spec.poolRef", DELETE, "spec.poolRef", "required"),
    ("MemoryClaim", "spec.poolRef", "x" * 254, "spec.poolRef", "at most 253"),
    ("MemoryClaim", "status.phase", "Evicted", "status.phase", "'Pending' or 'Bound'"),
    (
        "MemoryClaim",
        "status.conditions",
        [{"type": "Ready", "status": "Yes"}],
        "status.conditions[0].status",
        "'True', 'False' or 'Unknown'",
    ),
]


@pytest.mark.parametrize(
    ("kind", "path", "value", "field", "words"), BAD, ids=[f"{b[0]}:{b[2]!s:.12}@{b[1]}" for b in BAD]
)
def test_bad_value_is_refused_naming_the_field(
    kind: str, path: str, value: Any, field: str, words: str
) -> None:
    msg = refuse(with_value(GOOD[kind](), path, value))
    assert f"field {field}:" in msg, msg
    assert words in msg, msg
    assert "Traceback" not in msg and "errors.pydantic.dev" not in msg


def test_cross_field_mirrors_name_the_field_they_refuse() -> None:
    msg = refuse(with_value(node(), "spec.gpu.minPowerWatts", 1300))
    assert msg == (
        "f.yaml: obj: field spec.gpu.minPowerWatts: minPowerWatts must not exceed maxPowerWatts (1300 > 1200)"
    )
    with pytest.raises(ValidationError, match="a CXL pool needs capacityBytes"):
        MemoryPool.model_validate(with_value(pool(), "spec.capacityBytes", DELETE))


def test_min_equal_to_max_power_is_fine() -> None:
    validate_document(with_value(node(), "spec.gpu.minPowerWatts", 1200), "x")


def test_requested_power_outside_the_range_is_clamped_later_not_refused() -> None:
    validate_document(with_value(node(), "spec.gpu.requestedPowerWatts", 5000), "x")
    validate_document(with_value(node(), "spec.gpu.requestedPowerWatts", 100), "x")


def test_nonsense_telemetry_is_tolerated() -> None:
    # the node agent may report more healthy GPUs than the node has; the operator clamps, it does not reject
    body = validate_document(with_value(node(), "status.telemetry.healthyGPUs", 9), "x")
    assert body["status"]["telemetry"]["healthyGPUs"] == 9


@pytest.mark.parametrize("tier", ["HBM", "DRAM"])
def test_hbm_and_dram_pools_may_be_sized_from_nodes_or_fixed(tier: str) -> None:
    from_nodes = with_value(with_value(pool(), "spec.tier", tier), "spec.capacityBytes", DELETE)
    validate_document(with_value(from_nodes, "spec.sharePercent", 40), "x")
    validate_document(with_value(pool(), "spec.tier", tier), "x")


def test_share_percent_of_100_is_fine_with_a_fixed_capacity() -> None:
    validate_document(with_value(pool(), "spec.sharePercent", 100), "x")


def test_times_without_an_offset_from_yaml_are_read_as_utc() -> None:
    doc = with_value(cluster(), "spec.power.curtailment.until", datetime(2026, 4, 12, 21))
    c = StargateCluster.model_validate(doc)
    assert c.spec.power.curtailment is not None
    assert c.spec.power.curtailment.until == datetime(2026, 4, 12, 21, tzinfo=UTC)


def test_claim_priority_may_be_negative() -> None:
    m = MemoryClaim.model_validate(with_value(claim(), "spec.priority", -10))
    assert m.spec.priority == -10


def test_unknown_kind_and_api_version_are_named() -> None:
    assert "field kind: unknown kind 'Rackk'" in refuse({**rack(), "kind": "Rackk"})
    assert "field apiVersion: got 'stargate.dev/v1'" in refuse({**rack(), "apiVersion": "stargate.dev/v1"})


def test_every_problem_is_reported_at_once() -> None:
    doc = with_value(with_value(rack(), "spec.priority", 2000), "spec.maxPowerWatts", 0)
    lines = refuse(doc).splitlines()
    assert len(lines) == 2
    assert {line.split(": field ")[1].split(":")[0] for line in lines} == {
        "spec.priority",
        "spec.maxPowerWatts",
    }


# ---- PowerDomain and the Rack's references to it ----

def test_power_domain_defaults_and_electrical_feed() -> None:
    d = validate_document({**pdom(), "spec": {"clusterRef": "c", "ratingWatts": 1000}}, "x")
    assert d["spec"] == {"clusterRef": "c", "ratingWatts": 1000, "type": "Electrical", "deratePercent": 80}
    e = validate_document(with_value(feed(), "spec.electrical", {"voltage": 480, "amperage": 100}), "x")
    assert e["spec"]["electrical"] == {"voltage": 480, "amperage": 100, "phases": 3, "powerFactor": 1.0}
    body = validate_document(feed(), "x")
    assert body["spec"]["electrical"]["powerFactor"] == 0.95 and "ratingWatts" not in body["spec"]
    r = validate_document(with_value(with_value(rack(), "spec.powerDomainRef", "rpp-1"),
                                     "spec.coolingDomainRef", "cdu-1"), "x")
    assert (r["spec"]["powerDomainRef"], r["spec"]["coolingDomainRef"]) == ("rpp-1", "cdu-1")
    assert "powerDomainRef" not in validate_document(rack(), "x")["spec"]


def test_a_cooling_domain_at_the_top_of_its_tree_is_fine() -> None:
    doc = with_value(with_value(pdom(), "spec.type", "Cooling"), "spec.parentRef", DELETE)
    assert validate_document(doc, "x")["spec"]["type"] == "Cooling"
    validate_document(with_value(pdom(), "spec.deratePercent", 100), "x")  # listed for continuous duty
    validate_document(with_value(feed(), "spec.electrical.phases", 1), "x")
    validate_document(with_value(feed(), "spec.electrical.powerFactor", 1), "x")


# (id, base, dotted path, bad value, field path expected in the message, words expected in it)
BAD_DOMAIN: list[tuple[str, str, str, Any, str, str]] = [
    ("rating-zero", "pdom", "spec.ratingWatts", 0, "spec.ratingWatts", "greater than 0"),
    ("rating-negative", "pdom", "spec.ratingWatts", -450_000, "spec.ratingWatts", "greater than 0"),
    ("rating-typo", "pdom", "spec.ratingWatts", 10**12, "spec.ratingWatts", "less than or equal"),
    ("rating-string", "pdom", "spec.ratingWatts", "450kW", "spec.ratingWatts", "valid integer"),
    ("neither-rating", "pdom", "spec.ratingWatts", DELETE, "spec.ratingWatts", "neither is set"),
    ("both-ratings", "feed", "spec.ratingWatts", 1000, "spec.electrical", "both are"),
    ("derate-zero", "pdom", "spec.deratePercent", 0, "spec.deratePercent", "greater than or equal to 1"),
    ("derate-120", "pdom", "spec.deratePercent", 120, "spec.deratePercent", "less than or equal to 100"),
    ("type-unknown", "pdom", "spec.type", "Hydraulic", "spec.type", "'Electrical' or 'Cooling'"),
    ("two-phases", "feed", "spec.electrical.phases", 2, "spec.electrical.phases", "phases must be 1 or 3"),
    ("four-phases", "feed", "spec.electrical.phases", 4, "spec.electrical.phases", "less than or equal to 3"),
    ("pf-above-1", "feed", "spec.electrical.powerFactor", 1.2, "spec.electrical.powerFactor", "at most 1"),
    ("pf-zero", "feed", "spec.electrical.powerFactor", 0, "spec.electrical.powerFactor", "more than 0"),
    ("voltage-zero", "feed", "spec.electrical.voltage", 0, "spec.electrical.voltage", "greater than 0"),
    ("voltage-text", "feed", "spec.electrical.voltage", "13.8kV", "spec.electrical.voltage", "valid integer"),
    ("amperage-negative", "feed", "spec.electrical.amperage", -5, "spec.electrical.amperage",
     "greater than 0"),
    ("no-voltage", "feed", "spec.electrical.voltage", DELETE, "spec.electrical.voltage", "required"),
    ("own-parent", "pdom", "spec.parentRef", "pdu-3", "spec.parentRef", "cannot be its own parent"),
    ("parent-bad-name", "pdom", "spec.parentRef", "PDU_3", "spec.parentRef", "pattern"),
    ("no-cluster-ref", "pdom", "spec.clusterRef", DELETE, "spec.clusterRef", "required"),
    ("role-too-long", "pdom", "spec.role", "R" * 64, "spec.role", "at most 63"),
    ("unknown-field", "pdom", "spec.breakerAmps", 400, "spec.breakerAmps", "unknown field"),
    ("unknown-electrical-field", "feed", "spec.electrical.hertz", 60, "spec.electrical.hertz",
     "unknown field"),
    ("rack-power-ref-bad-name", "rack", "spec.powerDomainRef", "RPP 1", "spec.powerDomainRef", "pattern"),
    ("rack-cooling-ref-too-long", "rack", "spec.coolingDomainRef", "c" * 254, "spec.coolingDomainRef",
     "at most 253"),
]
BASES = {"pdom": pdom, "feed": feed, "rack": rack}


@pytest.mark.parametrize(("base", "path", "value", "field", "words"), [b[1:] for b in BAD_DOMAIN],
                         ids=[b[0] for b in BAD_DOMAIN])
def test_bad_power_domain_is_refused_naming_the_field(
    base: str, path: str, value: Any, field: str, words: str
) -> None:
    msg = refuse(with_value(BASES[base](), path, value))
    assert f"field {field}:" in msg, msg
    assert words in msg, msg
    assert "Traceback" not in msg and "errors.pydantic.dev" not in msg


def test_there_are_at_least_15_bad_power_domain_cases() -> None:
    assert len({b[0] for b in BAD_DOMAIN}) == len(BAD_DOMAIN) >= 15


@pytest.mark.parametrize(("base", "path", "value", "field", "words"), [b[1:] for b in BAD_DOMAIN],
                         ids=[b[0] for b in BAD_DOMAIN])
def test_plan_exits_2_on_a_bad_power_domain_naming_file_object_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base: str, path: str, value: Any, field: str,
    words: str,
) -> None:
    doc = with_value(BASES[base](), path, value)
    manifest = tmp_path / "domains.yaml"
    manifest.write_text(yaml.safe_dump_all([cluster(), doc]))
    code = main(["plan", "-f", str(manifest)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert f"{manifest}: {doc['kind']} sg/{doc['metadata']['name']} (document 2): field {field}: " in err, err
    assert words in err and "Traceback" not in err
