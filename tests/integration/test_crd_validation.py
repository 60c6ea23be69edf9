"""Bad input proven against the real API server: each case is refused by kube-apiserver with a message
naming the field, and refused the same way, naming the same field, by the offline models (`plan`).

Also: good objects are accepted and defaulted exactly as the models default them, unknown fields are
pruned when validation is not strict, and `kubectl explain` shows the models' descriptions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.crd_cases import CASES, DELETE, changed, feed_spec, good
from helpers.kube import Kubectl, namespace_name, purge_namespace
from stargate_operator import kinds
from stargate_operator.api.load import ManifestError, validate_document

pytestmark = pytest.mark.integration


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
    assert s["power"]["enforcement"] == "Enforce"
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




def test_the_server_applies_the_power_domain_defaults(kubectl: Kubectl, namespace: str) -> None:
    feed = {**good("PowerDomain"), "metadata": {"name": "feed"}, "spec": feed_spec()}
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
