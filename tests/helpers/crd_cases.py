"""Objects for the CRD validation tests: a good object of every kind, a changed copy, and the cases of
bad input with the field and the words the API server's refusal names.
"""

from __future__ import annotations

import copy
from typing import Any

from stargate_operator import kinds

API = kinds.API_VERSION


DELETE = object()


def good(kind: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "StargateCluster": {
            "site": {"region": "eu-north-sea", "kind": "Floating", "cooling": "Seawater", "designPUE": 1.05},
            "power": {"itCapacityWatts": 260_000, "curtailment": {"percent": 20, "reason": "DR"}},
            "carbon": {"gridIntensityGramsPerKWh": 30.0},
        },
        "Rack": {"clusterRef": "north-sea", "maxPowerWatts": 132_000, "priority": 800},
        "GPUNode": {
            "rackRef": "gb200-f01",
            "gpu": {
                "model": "GB200",
                "count": 4,
                "memoryBytes": 192 * 10**9,
                "minPowerWatts": 400,
                "maxPowerWatts": 1200,
            },
            "basePowerWatts": 1800,
            "hostMemoryBytes": 960 * 10**9,
        },
        "MemoryPool": {"clusterRef": "north-sea", "tier": "CXL", "capacityBytes": 4 * 2**40},
        "MemoryClaim": {"poolRef": "cxl-pond", "sizeBytes": 2**40, "priority": 10},
        "PowerDomain": {"clusterRef": "north-sea", "parentRef": "swbd-1", "type": "Electrical",
                        "role": "FloorPDU", "ratingWatts": 562_500},
        "GridEvent": {"clusterRef": "north-sea", "powerDomainRef": "feed-a", "start": "2027-08-16T19:00:00Z",
                      "end": "2027-08-16T22:00:00Z", "limitWatts": 250_000, "reason": "evening peak",
                      "source": "openadr3:vtn-nordpool/event-2027-0816"},
    }[kind]
    return {"apiVersion": API, "kind": kind, "metadata": {"name": "subject"}, "spec": spec}


def changed(kind: str, path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(good(kind))
    *parents, last = path.split(".")
    target = out
    for p in parents:
        target = target.setdefault(p, {})
    if value is DELETE:
        target.pop(last, None)
    else:
        target[last] = value
    return out


def grid_spec(**target: Any) -> dict[str, Any]:
    """A whole GridEvent spec with the given target (for `changed(..., "spec", ...)`)."""
    return {"clusterRef": "north-sea", "start": "2027-08-16T19:00:00Z", **target}


def feed_spec(**electrical: Any) -> dict[str, Any]:
    """A whole PowerDomain spec rated by its electrical figures (for `changed(..., "spec", ...)`)."""
    return {"clusterRef": "north-sea", "role": "Utility",
            "electrical": {"voltage": 13_800, "amperage": 40, **electrical}}


# id, kind, dotted path changed, new value, the field the refusal must name, words the server must say
# ("a|b": either; server-side apply reports type errors in its own words)
CASES: list[tuple[str, str, str, Any, str, str]] = [
    # counts and percentages out of range
    ("gpu-count-zero", "GPUNode", "spec.gpu.count", 0, "spec.gpu.count", "greater than or equal to 1"),
    ("gpu-count-17", "GPUNode", "spec.gpu.count", 17, "spec.gpu.count", "less than or equal to 16"),
    (
        "reserve-60pct",
        "StargateCluster",
        "spec.power.reservePercent",
        60,
        "spec.power.reservePercent",
        "less than or equal to 50",
    ),
    (
        "curtail-150pct",
        "StargateCluster",
        "spec.power.curtailment.percent",
        150,
        "spec.power.curtailment.percent",
        "less than or equal to 100",
    ),
    ("share-0pct", "MemoryPool", "spec.sharePercent", 0, "spec.sharePercent", "greater than or equal to 1"),
    ("rack-priority-1001", "Rack", "spec.priority", 1001, "spec.priority", "less than or equal to 1000"),
    (
        "pue-below-1",
        "StargateCluster",
        "spec.site.designPUE",
        0.5,
        "spec.site.designPUE",
        "greater than or equal to 1",
    ),
    (
        "it-capacity-zero",
        "StargateCluster",
        "spec.power.itCapacityWatts",
        0,
        "spec.power.itCapacityWatts",
        "greater than or equal to 1",
    ),
    (
        "gpu-power-typo",
        "GPUNode",
        "spec.gpu.maxPowerWatts",
        1_200_000,
        "spec.gpu.maxPowerWatts",
        "less than or equal to 10000",
    ),
    # negative sizes
    (
        "host-memory-negative",
        "GPUNode",
        "spec.hostMemoryBytes",
        -1,
        "spec.hostMemoryBytes",
        "greater than or equal to 0",
    ),
    (
        "base-power-negative",
        "GPUNode",
        "spec.basePowerWatts",
        -100,
        "spec.basePowerWatts",
        "greater than or equal to 0",
    ),
    (
        "pool-capacity-negative",
        "MemoryPool",
        "spec.capacityBytes",
        -(2**40),
        "spec.capacityBytes",
        "greater than or equal to 1",
    ),
    (
        "hbm-negative",
        "GPUNode",
        "spec.gpu.memoryBytes",
        -1,
        "spec.gpu.memoryBytes",
        "greater than or equal to 1",
    ),
    # unknown enum values
    (
        "site-kind-offshore",
        "StargateCluster",
        "spec.site.kind",
        "Offshore",
        "spec.site.kind",
        "Unsupported value",
    ),
    ("cooling-oil", "StargateCluster", "spec.site.cooling", "Oil", "spec.site.cooling", "Unsupported value"),
    ("tier-ssd", "MemoryPool", "spec.tier", "SSD", "spec.tier", "Unsupported value"),
    # missing required fields and references
    ("rack-no-cluster-ref", "Rack", "spec.clusterRef", DELETE, "spec.clusterRef", "Required value"),
    ("node-no-rack-ref", "GPUNode", "spec.rackRef", DELETE, "spec.rackRef", "Required value"),
    ("claim-no-pool-ref", "MemoryClaim", "spec.poolRef", DELETE, "spec.poolRef", "Required value"),
    ("pool-no-cluster-ref", "MemoryPool", "spec.clusterRef", DELETE, "spec.clusterRef", "Required value"),
    (
        "site-no-it-capacity",
        "StargateCluster",
        "spec.power.itCapacityWatts",
        DELETE,
        "spec.power.itCapacityWatts",
        "Required value",
    ),
    ("node-no-gpu", "GPUNode", "spec.gpu", DELETE, "spec.gpu", "Required value"),
    ("rack-no-spec", "Rack", "spec", DELETE, "spec", "Required value"),
    # cross-field rules (CEL)
    (
        "min-above-max-power",
        "GPUNode",
        "spec.gpu.minPowerWatts",
        1300,
        "spec.gpu.minPowerWatts",
        "minPowerWatts must not exceed maxPowerWatts",
    ),
    (
        "cxl-without-capacity",
        "MemoryPool",
        "spec.capacityBytes",
        DELETE,
        "spec.capacityBytes",
        "a CXL pool needs capacityBytes",
    ),
    (
        "share-with-fixed-capacity",
        "MemoryPool",
        "spec.sharePercent",
        50,
        "spec.sharePercent",
        "sharePercent applies only to a pool sized from its nodes",
    ),
    # zero-sized claim
    ("claim-zero-bytes", "MemoryClaim", "spec.sizeBytes", 0, "spec.sizeBytes", "greater than or equal to 1"),
    # malformed reference names
    ("cluster-ref-uppercase", "Rack", "spec.clusterRef", "North_Sea", "spec.clusterRef", "should match"),
    ("pool-ref-leading-dash", "MemoryClaim", "spec.poolRef", "-pond", "spec.poolRef", "should match"),
    ("rack-ref-too-long", "GPUNode", "spec.rackRef", "r" * 254, "spec.rackRef", "Too long"),
    ("node-name-spaces", "GPUNode", "spec.nodeName", "node 7", "spec.nodeName", "should match"),
    # wrong types
    (
        "max-power-string",
        "Rack",
        "spec.maxPowerWatts",
        "132kW",
        "spec.maxPowerWatts",
        "must be of type integer|expected numeric",
    ),
    (
        "maintenance-string",
        "GPUNode",
        "spec.maintenance",
        "yes",
        "spec.maintenance",
        "must be of type boolean|expected boolean",
    ),
    (
        "until-not-a-time",
        "StargateCluster",
        "spec.power.curtailment.until",
        "tomorrow",
        "spec.power.curtailment.until",
        "date-time",
    ),
    # unknown fields under strict validation
    ("unknown-spec-field", "Rack", "spec.colour", "red", "spec.colour", "unknown field"),
    ("unknown-nested-field", "GPUNode", "spec.gpu.vendor", "nvidia", "spec.gpu.vendor", "unknown field"),
    (
        "snake-case-field",
        "StargateCluster",
        "spec.site.design_pue",
        1.1,
        "spec.site.design_pue",
        "unknown field",
    ),
    # power domains and the racks' references to them
    ("pdom-rating-zero", "PowerDomain", "spec.ratingWatts", 0, "spec.ratingWatts",
     "greater than or equal to 1"),
    ("pdom-rating-negative", "PowerDomain", "spec.ratingWatts", -450_000, "spec.ratingWatts",
     "greater than or equal to 1"),
    ("pdom-rating-typo", "PowerDomain", "spec.ratingWatts", 10**12, "spec.ratingWatts",
     "less than or equal to"),
    ("pdom-no-rating", "PowerDomain", "spec.ratingWatts", DELETE, "spec.ratingWatts", "neither is set"),
    ("pdom-both-ratings", "PowerDomain", "spec.electrical", {"voltage": 480, "amperage": 100},
     "spec.electrical", "both are"),
    ("pdom-derate-zero", "PowerDomain", "spec.deratePercent", 0, "spec.deratePercent",
     "greater than or equal to 1"),
    ("pdom-derate-120", "PowerDomain", "spec.deratePercent", 120, "spec.deratePercent",
     "less than or equal to 100"),
    ("pdom-type-hydraulic", "PowerDomain", "spec.type", "Hydraulic", "spec.type", "Unsupported value"),
    ("pdom-two-phases", "PowerDomain", "spec", feed_spec(phases=2), "spec.electrical.phases",
     "phases must be 1 or 3"),
    ("pdom-four-phases", "PowerDomain", "spec", feed_spec(phases=4), "spec.electrical.phases",
     "less than or equal to 3"),
    ("pdom-pf-above-1", "PowerDomain", "spec", feed_spec(powerFactor=1.2), "spec.electrical.powerFactor",
     "powerFactor must be more than 0 and at most 1"),
    ("pdom-pf-zero", "PowerDomain", "spec", feed_spec(powerFactor=0), "spec.electrical.powerFactor",
     "powerFactor must be more than 0 and at most 1"),
    ("pdom-zero-volts", "PowerDomain", "spec", feed_spec(voltage=0), "spec.electrical.voltage",
     "greater than or equal to 1"),
    ("pdom-volts-text", "PowerDomain", "spec", feed_spec(voltage="13.8kV"), "spec.electrical.voltage",
     "must be of type integer|expected numeric"),
    ("pdom-own-parent", "PowerDomain", "spec.parentRef", "subject", "spec.parentRef",
     "a domain cannot be its own parent"),
    ("pdom-parent-bad-name", "PowerDomain", "spec.parentRef", "PDU_3", "spec.parentRef", "should match"),
    ("pdom-no-cluster-ref", "PowerDomain", "spec.clusterRef", DELETE, "spec.clusterRef", "Required value"),
    ("pdom-role-too-long", "PowerDomain", "spec.role", "R" * 64, "spec.role", "Too long"),
    ("pdom-unknown-field", "PowerDomain", "spec.breakerAmps", 400, "spec.breakerAmps", "unknown field"),
    ("rack-power-ref-bad-name", "Rack", "spec.powerDomainRef", "RPP 1", "spec.powerDomainRef",
     "should match"),
    ("rack-cooling-ref-too-long", "Rack", "spec.coolingDomainRef", "c" * 254, "spec.coolingDomainRef",
     "Too long"),
    # GridEvent
    ("gev-no-target", "GridEvent", "spec.limitWatts", DELETE, "spec.reducePercent", "neither is set"),
    ("gev-both-targets", "GridEvent", "spec.reducePercent", 20, "spec.limitWatts", "both are"),
    ("gev-percent-zero", "GridEvent", "spec", grid_spec(reducePercent=0), "spec.reducePercent",
     "greater than or equal to 1"),
    ("gev-percent-101", "GridEvent", "spec", grid_spec(reducePercent=101), "spec.reducePercent",
     "less than or equal to 100"),
    ("gev-negative-watts", "GridEvent", "spec.limitWatts", -250_000, "spec.limitWatts",
     "greater than or equal to 0"),
    ("gev-watts-typo", "GridEvent", "spec.limitWatts", 250 * 10**9, "spec.limitWatts",
     "less than or equal to 100000000000"),
    ("gev-end-before-start", "GridEvent", "spec.end", "2027-08-16T18:00:00Z", "spec.end",
     "end must be after start"),
    ("gev-end-at-start", "GridEvent", "spec.end", "2027-08-16T21:00:00+02:00", "spec.end",
     "end must be after start"),
    ("gev-start-not-a-date", "GridEvent", "spec.start", "tomorrow 7pm", "spec.start", "date-time"),
    ("gev-no-start", "GridEvent", "spec.start", DELETE, "spec.start", "Required value|required"),
    ("gev-bad-name", "GridEvent", "metadata.name", "ERCOT_4CP", "metadata.name",
     "RFC 1123 subdomain|should match"),
    ("gev-cluster-ref-bad-name", "GridEvent", "spec.clusterRef", "North Sea", "spec.clusterRef",
     "should match"),
    ("gev-domain-ref-bad-name", "GridEvent", "spec.powerDomainRef", "feed_A", "spec.powerDomainRef",
     "should match"),
    ("gev-unknown-field", "GridEvent", "spec.priority", 900, "spec.priority", "unknown field"),
    # ramps and settlement
    ("sgc-ramp-down-zero", "StargateCluster", "spec.power.rampDownWattsPerSecond", 0,
     "spec.power.rampDownWattsPerSecond", "greater than or equal to 1|greater than 0"),
    ("pdom-ramp-up-negative", "PowerDomain", "spec.rampUpWattsPerSecond", -5, "spec.rampUpWattsPerSecond",
     "greater than or equal to 1|greater than 0"),
    ("pdom-meter-empty-query", "PowerDomain", "spec.meter", {"query": ""}, "spec.meter.query",
     "at least 1|should have at least 1"),
    ("gev-basis-with-limit", "GridEvent", "spec.basis", "Baseline", "spec.basis",
     "basis applies to reducePercent only"),
    ("gev-basis-unknown", "GridEvent", "spec", grid_spec(reducePercent=20, basis="Forecast"), "spec.basis",
     "Unsupported value|Input should be"),
    ("gev-urgency-unknown", "GridEvent", "spec.urgency", "Critical", "spec.urgency",
     "Unsupported value|Input should be"),
]
# oversubscription: the uncap line below the cap line, defaults included
CASES += [
    ("sgc-uncap-at-cap", "StargateCluster", "spec.power.oversubscription",
     {"percent": 20, "capAtPercent": 90, "uncapAtPercent": 90}, "spec.power.oversubscription.uncapAtPercent",
     "must be below capAtPercent"),
    ("pdom-cap-below-default-uncap", "PowerDomain", "spec.oversubscription", {"capAtPercent": 80},
     "spec.oversubscription.uncapAtPercent", "must be below capAtPercent"),
    ("pdom-oversubscription-101", "PowerDomain", "spec.oversubscription", {"percent": 101},
     "spec.oversubscription.percent", "less than or equal to 100"),
    ("sgc-hold-negative", "StargateCluster", "spec.power.oversubscription", {"holdSeconds": -1},
     "spec.power.oversubscription.holdSeconds", "greater than or equal to 0"),
]
