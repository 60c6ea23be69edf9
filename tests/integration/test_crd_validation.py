"""Bad input proven against the real API server: each case is refused by kube-apiserver with a message
naming the field, and refused the same way, naming the same field, by the offline models (`plan`).

Also: good objects are accepted and defaulted exactly as the models default them, unknown fields are
pruned when validation is not strict, and `kubectl explain` shows the models' descriptions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.kube import Kubectl, namespace_name, purge_namespace
from stargate_operator import kinds
from stargate_operator.api.load import ManifestError, validate_document

pytestmark = pytest.mark.integration

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


def _grid(**target: Any) -> dict[str, Any]:
    """A whole GridEvent spec with the given target (for `changed(..., "spec", ...)`)."""
    return {"clusterRef": "north-sea", "start": "2027-08-16T19:00:00Z", **target}


def _feed(**electrical: Any) -> dict[str, Any]:
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
    # power domains (DESIGN section 10) and the racks' references to them
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
    ("pdom-two-phases", "PowerDomain", "spec", _feed(phases=2), "spec.electrical.phases",
     "phases must be 1 or 3"),
    ("pdom-four-phases", "PowerDomain", "spec", _feed(phases=4), "spec.electrical.phases",
     "less than or equal to 3"),
    ("pdom-pf-above-1", "PowerDomain", "spec", _feed(powerFactor=1.2), "spec.electrical.powerFactor",
     "powerFactor must be more than 0 and at most 1"),
    ("pdom-pf-zero", "PowerDomain", "spec", _feed(powerFactor=0), "spec.electrical.powerFactor",
     "powerFactor must be more than 0 and at most 1"),
    ("pdom-zero-volts", "PowerDomain", "spec", _feed(voltage=0), "spec.electrical.voltage",
     "greater than or equal to 1"),
    ("pdom-volts-text", "PowerDomain", "spec", _feed(voltage="13.8kV"), "spec.electrical.voltage",
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
    # GridEvent (DESIGN section 11)
    ("gev-no-target", "GridEvent", "spec.limitWatts", DELETE, "spec.reducePercent", "neither is set"),
    ("gev-both-targets", "GridEvent", "spec.reducePercent", 20, "spec.limitWatts", "both are"),
    ("gev-percent-zero", "GridEvent", "spec", _grid(reducePercent=0), "spec.reducePercent",
     "greater than or equal to 1"),
    ("gev-percent-101", "GridEvent", "spec", _grid(reducePercent=101), "spec.reducePercent",
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
]
# oversubscription (DESIGN section 13): the uncap line below the cap line, defaults included
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


@pytest.fixture(scope="module")
def refusals_namespace(kubectl: Kubectl) -> Iterator[str]:
    """One namespace for all the refusals: nothing is ever created in it (each case checks that)."""
    name = namespace_name("bad-input")
    kubectl("create", "namespace", name)
    yield name
    purge_namespace(kubectl, name)


@pytest.mark.parametrize(
    ("kind", "path", "value", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_server_refuses_bad_input_naming_the_field(
    kubectl: Kubectl, refusals_namespace: str, kind: str, path: str, value: Any, field: str, words: str
) -> None:
    namespace = refusals_namespace
    doc = changed(kind, path, value)
    strict_only = words == "unknown field"
    # an unknown field is what --validate=strict is about: a plain (client-side) apply, which the server
    # would otherwise prune; server-side apply refuses it in any mode ("field not declared in schema")
    r = kubectl.apply(doc, namespace=namespace, check=False, server_side=not strict_only)
    assert r.returncode != 0, f"the server accepted it: {r.stdout}"
    err = r.stderr
    assert field in err, err
    assert any(w in err for w in words.split("|")), err
    if strict_only:
        r = kubectl.apply(doc, namespace=namespace, check=False)
        assert r.returncode != 0 and field in r.stderr and "not declared in schema" in r.stderr, r.stderr
    assert kubectl("get", kind.lower(), "subject", "-n", namespace, check=False).returncode != 0
    # the offline models refuse the same input, naming the same field
    doc["metadata"]["namespace"] = namespace
    with pytest.raises(ManifestError) as info:
        validate_document(doc, "case")
    assert f"field {field}:" in str(info.value), str(info.value)


def test_there_are_enough_distinct_cases() -> None:
    assert len({c[0] for c in CASES}) == len(CASES) >= 15


@pytest.mark.parametrize(
    "kind", ["StargateCluster", "Rack", "GPUNode", "MemoryPool", "MemoryClaim", "PowerDomain", "GridEvent"]
)
def test_good_object_is_accepted_and_defaulted_as_the_models_default_it(
    kubectl: Kubectl, namespace: str, kind: str
) -> None:
    doc = good(kind)
    kubectl.apply(doc, namespace=namespace)
    stored = kubectl.json("get", kind.lower(), "subject", "-n", namespace)
    doc["metadata"]["namespace"] = namespace
    offline = validate_document(doc, "good")
    assert stored["spec"] == offline["spec"]


def test_the_server_applies_the_design_defaults(kubectl: Kubectl, namespace: str) -> None:
    site = changed("StargateCluster", "spec.site.designPUE", DELETE)
    del site["spec"]["power"]["curtailment"]
    kubectl.apply(
        [
            site,
            changed("Rack", "spec.priority", DELETE),
            changed("MemoryClaim", "spec.priority", DELETE),
            changed("GPUNode", "spec.basePowerWatts", DELETE),
        ],
        namespace=namespace,
    )
    s = kubectl.json("get", "sgc", "subject", "-n", namespace)["spec"]
    assert s["site"]["designPUE"] == 1.3 and s["power"]["reservePercent"] == 5
    assert kubectl.json("get", "rk", "subject", "-n", namespace)["spec"]["priority"] == 500
    assert kubectl.json("get", "mclaim", "subject", "-n", namespace)["spec"]["priority"] == 0
    n = kubectl.json("get", "gpun", "subject", "-n", namespace)["spec"]
    assert (n["basePowerWatts"], n["maintenance"]) == (0, False)
    assert "requestedPowerWatts" not in n["gpu"]


def test_nonsense_telemetry_is_accepted_by_the_server(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(good("GPUNode"), namespace=namespace)
    patch = {
        "status": {"telemetry": {"healthyGPUs": 9, "powerWatts": 0, "observedAt": "2026-04-12T20:00:00Z"}}
    }
    kubectl(
        "patch",
        "gpun",
        "subject",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(patch),
    )
    got = kubectl.json("get", "gpun", "subject", "-n", namespace)
    assert got["status"]["telemetry"]["healthyGPUs"] == 9


def test_status_bad_values_are_refused_too(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(good("MemoryClaim"), namespace=namespace)
    r = kubectl(
        "patch",
        "mclaim",
        "subject",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Evicted"}}),
        check=False,
    )
    assert r.returncode != 0 and "status.phase" in r.stderr and "Unsupported value" in r.stderr, r.stderr


def test_unknown_fields_are_pruned_when_validation_is_not_strict(kubectl: Kubectl, namespace: str) -> None:
    r = kubectl.apply(
        changed("Rack", "spec.colour", "red"), namespace=namespace, validate="false", server_side=False
    )
    assert r.returncode == 0
    spec = kubectl.json("get", "rk", "subject", "-n", namespace)["spec"]
    assert "colour" not in spec and spec["maxPowerWatts"] == 132_000


def test_kubectl_explain_shows_the_models_descriptions(kubectl: Kubectl) -> None:
    out = kubectl("explain", "rack.spec.priority").stdout
    assert "higher priority racks get their share of the site's power first" in out
    out = kubectl("explain", "sgc.spec.site").stdout
    assert "designPUE" in out and "Design power usage effectiveness" in out
    out = kubectl("explain", "gpun.status.telemetry").stdout
    assert "healthyGPUs" in out


def test_every_cel_rule_has_a_case_here() -> None:
    from stargate_operator.api import KINDS
    from stargate_operator.api.crdgen import crd

    def rules(node: dict[str, Any], path: str) -> list[str]:
        out = [f"{path}{r['fieldPath']}".lstrip(".") for r in node.get("x-kubernetes-validations", [])]
        for name, sub in node.get("properties", {}).items():
            out += rules(sub, f"{path}.{name}")
        return out

    fields = {c[4] for c in CASES}
    for model in KINDS:
        for field in rules(crd(model)["spec"]["versions"][0]["schema"]["openAPIV3Schema"], ""):
            assert field in fields, f"the CEL rule on {model.kind_info.kind} {field} is not proven here"


def test_the_server_applies_the_power_domain_defaults(kubectl: Kubectl, namespace: str) -> None:
    feed = {**good("PowerDomain"), "metadata": {"name": "feed"}, "spec": _feed()}
    kubectl.apply([changed("PowerDomain", "spec", {"clusterRef": "site", "ratingWatts": 1000}), feed],
                  namespace=namespace)
    d = kubectl.json("get", "pdom", "subject", "-n", namespace)["spec"]
    assert (d["type"], d["deratePercent"]) == ("Electrical", 80)
    e = kubectl.json("get", "pdom", "feed", "-n", namespace)["spec"]["electrical"]
    assert (e["phases"], e["powerFactor"]) == (3, 1)
    listed = kubectl("get", "stargate", "-n", namespace, "-o", "name").stdout.split()
    assert {"powerdomain.stargate.dev/subject", "powerdomain.stargate.dev/feed"} <= set(listed)


def test_a_slices_limit_maps_are_one_field_each_to_the_api_server(kubectl: Kubectl, namespace: str) -> None:
    """x-kubernetes-map-type atomic: the managedFields name limits and safeLimits, not each node in
    them (what makes a slice write cheaper for the API server), and a server-side apply replaces
    each map whole, as the operator writes them; the racks carry no limit maps any more."""

    def apply(spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": kinds.API_VERSION, "kind": "PowerLimitSlice",
                "metadata": {"name": "limits-0", "namespace": namespace}, "spec": spec}
        kubectl("apply", "--server-side", "--field-manager=stargate-operator", "-f", "-",
                input=json.dumps(body))
        got: dict[str, Any] = kubectl.json("get", "pls", "limits-0", "-n", namespace, "--show-managed-fields")
        return got

    apply({"limits": {"n0": 700, "n1": 650}, "safeLimits": {"n1": 600}, "revision": 1})
    got = apply({"limits": {"n0": 690, "n2": 640}, "safeLimits": {}, "revision": 2})
    assert got["spec"]["limits"] == {"n0": 690, "n2": 640}
    assert got["spec"]["safeLimits"] == {} and got["spec"]["revision"] == 2
    (fields,) = [e["fieldsV1"]["f:spec"] for e in got["metadata"]["managedFields"]
                 if e["manager"] == "stargate-operator"]
    assert fields["f:limits"] == {} and fields["f:safeLimits"] == {}, fields
    # a limit out of range is refused by the schema
    bad = {"apiVersion": kinds.API_VERSION, "kind": "PowerLimitSlice",
           "metadata": {"name": "limits-1", "namespace": namespace}, "spec": {"limits": {"n0": 20_000}}}
    out = kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert out.returncode != 0 and "limits" in out.stderr, out.stderr
    # the racks' status has no limit maps: the API server drops them
    kubectl.apply(good("Rack"), namespace=namespace)
    kubectl("patch", "rack", "subject", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"powerLimits": {"n0": 700}}}), check=False)  # refused or dropped
    assert "powerLimits" not in (kubectl.json("get", "rack", "subject", "-n", namespace).get("status") or {})
