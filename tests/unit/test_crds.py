"""The CRDs generated from the models: deterministic, committed, structural, complete."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stargate_operator import kinds
from stargate_operator.api import KINDS
from stargate_operator.api.crdgen import crd, file_name, render_all

ROOT = Path(__file__).resolve().parents[2]
CRDS = {m.kind_info.kind: crd(m) for m in KINDS}
SHORT = {
    "StargateCluster": "sgc",
    "Rack": "rk",
    "PowerDomain": "pdom",
    "GPUNode": "gpun",
    "MemoryPool": "mpool",
    "MemoryClaim": "mclaim",
    "GridEvent": "gev",
    "PowerLimitSlice": "pls",
}


def schema(kind: str) -> dict[str, Any]:
    return CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node (dict) with its path, properties, items and map values included."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_generation_is_deterministic_within_and_across_processes() -> None:
    first = render_all()
    assert first == render_all()
    code = "from stargate_operator.api.crdgen import render_all; import json; print(json.dumps(render_all()))"

    for seed in ("1", "4242"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        )
        assert json.loads(out.stdout) == first


def _targets() -> list[Path]:
    """The folders hack/gen-crds.py writes (crds/ and the Helm chart's copy), from the script itself."""
    spec = importlib.util.spec_from_file_location("gen_crds", ROOT / "hack" / "gen-crds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [t for t in module.TARGETS if t.parent.exists()]


TARGETS = _targets()


def test_the_generator_writes_crds_and_the_chart() -> None:
    assert ROOT / "crds" in TARGETS
    assert any("helm" in t.parts for t in TARGETS) or not (ROOT / "helm").exists()


@pytest.mark.parametrize("target", TARGETS, ids=[str(t.relative_to(ROOT)) for t in TARGETS])
def test_committed_yaml_equals_what_the_models_generate(target: Path) -> None:
    for name, text in render_all().items():
        path = target / name
        assert path.exists(), f"{path} is missing: run hack/gen-crds.py"
        assert path.read_text() == text, f"{path} differs from the models: run hack/gen-crds.py"
    generated = {p.name for p in target.glob("stargate.dev_*.yaml")}
    assert generated == set(render_all()), "a stale CRD file is left over"


def test_gen_crds_check_mode_agrees() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "hack/gen-crds.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_crds_command_prints_every_crd() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "stargate_operator.cli", "crds"], capture_output=True, text=True
    )
    if r.returncode != 0:  # the cli module may not be runnable with -m; fall back to the console script
        r = subprocess.run(
            [str(Path(sys.executable).parent / "stargate-operator"), "crds"], capture_output=True, text=True
        )
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert [d["metadata"]["name"] for d in docs] == [c["metadata"]["name"] for c in CRDS.values()]
    assert docs == list(CRDS.values())


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_names_scope_category_and_subresource(kind: str) -> None:
    c = CRDS[kind]
    model = next(m for m in KINDS if m.kind_info.kind == kind)
    assert file_name(model) == f"stargate.dev_{c['spec']['names']['plural']}.yaml"
    assert c["metadata"]["name"] == f"{c['spec']['names']['plural']}.stargate.dev"
    assert c["spec"]["group"] == "stargate.dev"
    assert c["spec"]["scope"] == "Namespaced"
    names = c["spec"]["names"]
    assert names["kind"] == kind and names["listKind"] == f"{kind}List"
    assert names["shortNames"] == [SHORT[kind]]
    assert names["categories"] == ["stargate"]
    (version,) = c["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_schema_is_structural(kind: str) -> None:
    forbidden = {
        "$ref",
        "$defs",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "title",
        "const",
        "nullable",
        "definitions",
    }
    for path, node in walk(schema(kind)):
        assert not forbidden & node.keys(), f"{kind}{path}: {forbidden & node.keys()}"
        assert "type" in node, f"{kind}{path} has no type"
        if "additionalProperties" in node:
            # Only a map's schema of its values: never a flag, never beside properties.
            assert isinstance(node["additionalProperties"], dict), f"{kind}{path}"
            assert node["type"] == "object" and "properties" not in node, f"{kind}{path}"
        if "properties" in node:
            assert node["type"] == "object", f"{kind}{path}"
        if node["type"] == "integer":
            assert node.get("format") == "int64", f"{kind}{path}"
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(flag, False), bool), (
                f"{kind}{path}: {flag} must be a flag in OpenAPI v3"
            )
        for req in node.get("required", []):
            assert req in node["properties"], f"{kind}{path}: required {req} is not a property"


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_field_is_described_and_bounded_for_cel(kind: str) -> None:
    for path, node in walk(schema(kind)):
        if path in ("", ".metadata", ".apiVersion", ".kind"):  # the API machinery's
            continue
        assert node.get("description"), f"{kind}{path} has no description"
        if node["type"] == "string" and "enum" not in node and "format" not in node:
            assert "maxLength" in node, f"{kind}{path}: strings need maxLength to keep CEL costs bounded"
        if node["type"] == "array":
            assert "maxItems" in node, f"{kind}{path}: lists need maxItems to keep CEL costs bounded"


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_status_carries_generation_and_conditions_and_no_defaults(kind: str) -> None:
    status = schema(kind)["properties"]["status"]
    assert "observedGeneration" in status["properties"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    cond = conditions["items"]["properties"]
    assert set(cond) == {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}
    assert cond["status"]["enum"] == ["True", "False", "Unknown"]
    assert cond["lastTransitionTime"]["format"] == "date-time"
    for path, node in walk(status):
        assert "default" not in node, f"{kind}.status{path}: status belongs to the operator, no defaults"
    assert schema(kind)["required"] == ["spec"]


def test_design_fields_are_present_with_their_bounds() -> None:
    site = schema("StargateCluster")["properties"]["spec"]["properties"]
    assert site["site"]["properties"]["kind"]["enum"] == ["Onshore", "Floating"]
    assert site["site"]["properties"]["cooling"]["enum"] == ["Air", "DirectLiquid", "Immersion", "Seawater"]
    pue = site["site"]["properties"]["designPUE"]
    assert (pue["type"], pue["minimum"], pue["maximum"], pue["default"]) == ("number", 1.0, 3.0, 1.3)
    power = site["power"]["properties"]
    assert power["itCapacityWatts"]["minimum"] == 1
    assert (power["reservePercent"]["minimum"], power["reservePercent"]["maximum"]) == (0, 50)
    assert power["reservePercent"]["default"] == 5
    assert power["curtailment"]["properties"]["until"]["format"] == "date-time"
    assert site["carbon"]["properties"]["gridIntensityGramsPerKWh"]["minimum"] == 0
    rack = schema("Rack")["properties"]["spec"]["properties"]
    assert (rack["priority"]["minimum"], rack["priority"]["maximum"], rack["priority"]["default"]) == (
        0,
        1000,
        500,
    )
    gpu = schema("GPUNode")["properties"]["spec"]["properties"]["gpu"]
    assert (gpu["properties"]["count"]["minimum"], gpu["properties"]["count"]["maximum"]) == (1, 16)
    assert schema("GPUNode")["properties"]["status"]["properties"]["telemetry"]["properties"]["healthyGPUs"]
    pool = schema("MemoryPool")["properties"]["spec"]["properties"]
    assert pool["tier"]["enum"] == ["HBM", "DRAM", "CXL"]
    assert (pool["sharePercent"]["minimum"], pool["sharePercent"]["maximum"]) == (1, 100)
    claim = schema("MemoryClaim")["properties"]["spec"]
    assert claim["properties"]["sizeBytes"]["minimum"] == 1
    assert claim["required"] == ["poolRef", "sizeBytes"]
    assert schema("MemoryClaim")["properties"]["status"]["properties"]["phase"]["enum"] == [
        "Pending",
        "Bound",
    ]


def _rules(kind: str) -> dict[str, dict[str, Any]]:
    out = {}
    for path, node in walk(schema(kind)):
        for rule in node.get("x-kubernetes-validations", []):
            assert set(rule) == {"rule", "message", "fieldPath", "reason"}
            field = rule["fieldPath"].lstrip(".")
            assert field in node["properties"], f"{kind}{path}: fieldPath {rule['fieldPath']} is not a field"
            out[f"{path}{rule['fieldPath']}"] = rule
    return out


def test_cel_rules_for_the_cross_field_constraints() -> None:
    assert _rules("GPUNode")[".spec.gpu.minPowerWatts"]["rule"] == "self.minPowerWatts <= self.maxPowerWatts"
    pool = _rules("MemoryPool")
    assert pool[".spec.capacityBytes"]["rule"] == "self.tier != 'CXL' || has(self.capacityBytes)"
    assert pool[".spec.capacityBytes"]["reason"] == "FieldValueRequired"
    assert "sharePercent == 100" in pool[".spec.sharePercent"]["rule"]
    # telemetry is the node agent's and may be nonsense: no rule relates it to the spec
    assert not [r for r in _rules("GPUNode") if "status" in r]


def _exists(kind: str, json_path: str) -> bool:
    node: dict[str, Any] = schema(kind)
    parts = json_path.split("[?")[0].strip(".").split(".")
    if parts[0] == "metadata":
        return True
    for part in parts:
        props = node.get("properties", {})
        if part not in props:
            return False
        node = props[part]
    return True


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_printer_columns_point_at_real_fields(kind: str) -> None:
    columns = CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"]
    for col in columns:
        assert _exists(kind, col["jsonPath"]), (
            f"{kind} column {col['name']}: {col['jsonPath']} is not a field"
        )
        assert col["type"] in {"string", "integer", "number", "boolean", "date"}
    default = [c["name"] for c in columns if not c.get("priority")]
    if kind == "PowerLimitSlice":
        # Written by the operator alone, it has no Ready of its own: what it holds and how much of it
        # the agents confirmed.
        assert default == ["Nodes", "Revision", "Confirmed", "Age"]
    else:
        assert default[-2:] == ["Ready", "Age"]


def test_rack_columns_show_what_an_operator_looks_at_first() -> None:
    columns = CRDS["Rack"]["spec"]["versions"][0]["additionalPrinterColumns"]
    default = {c["name"]: c["jsonPath"] for c in columns if not c.get("priority")}
    assert default == {
        "Cluster": ".spec.clusterRef",
        "Priority": ".spec.priority",
        "Healthy": ".status.gpus.healthy",
        "GPUs": ".status.gpus.total",
        "Budget-W": ".status.power.budgetWatts",
        "Demand-W": ".status.power.demandWatts",
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "Age": ".metadata.creationTimestamp",
    }


def test_power_domain_fields_rules_and_columns() -> None:
    spec = schema("PowerDomain")["properties"]["spec"]
    props = spec["properties"]
    assert spec["required"] == ["clusterRef"]
    assert props["type"]["enum"] == ["Electrical", "Cooling"] and props["type"]["default"] == "Electrical"
    assert (props["deratePercent"]["minimum"], props["deratePercent"]["maximum"]) == (1, 100)
    assert props["deratePercent"]["default"] == 80
    assert props["ratingWatts"]["minimum"] == 1 and props["role"]["maxLength"] == 63
    electrical = props["electrical"]
    assert electrical["required"] == ["amperage", "voltage"]
    assert electrical["properties"]["phases"]["default"] == 3
    assert electrical["properties"]["powerFactor"]["default"] == 1.0
    rules = {r["fieldPath"]: r["rule"] for r in electrical["x-kubernetes-validations"]}
    assert rules == {".phases": "self.phases == 1 || self.phases == 3",
                     ".powerFactor": "self.powerFactor > 0.0 && self.powerFactor <= 1.0"}
    rules = {r["fieldPath"]: r["rule"] for r in spec["x-kubernetes-validations"]}
    assert rules == {".ratingWatts": "has(self.ratingWatts) || has(self.electrical)",
                     ".electrical": "!(has(self.ratingWatts) && has(self.electrical))"}
    # a parent that is not the domain itself needs metadata.name: a rule on the root
    (root,) = schema("PowerDomain")["x-kubernetes-validations"]
    assert root["fieldPath"] == ".spec.parentRef" and "self.metadata.name" in root["rule"]
    columns = CRDS["PowerDomain"]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns if not c.get("priority")] == [
        "Type", "Role", "Parent", "Usable-W", "Allocated-W", "Measured-W", "Headroom-W", "Racks", "Ready",
        "Age"]
    assert [c["name"] for c in columns if c.get("priority")] == [
        "Rating-W", "Floor-W", "Demand-W", "Overcommitted", "Constrained", "Capping"]


def test_rack_names_its_domains_and_what_limits_it() -> None:
    rack = schema("Rack")["properties"]
    assert {"powerDomainRef", "coolingDomainRef"} <= set(rack["spec"]["properties"])
    assert "powerDomainRef" not in rack["spec"]["required"]
    assert rack["status"]["properties"]["power"]["properties"]["limitedBy"]["maxLength"] == 253
    columns = CRDS["Rack"]["spec"]["versions"][0]["additionalPrinterColumns"]
    wide = {c["name"]: c["jsonPath"] for c in columns if c.get("priority")}
    assert wide["Power-Domain"] == ".spec.powerDomainRef"
    assert wide["Cooling-Domain"] == ".spec.coolingDomainRef"
    assert wide["Limited-By"] == ".status.power.limitedBy"


def test_registry_defaults_are_the_schemas_defaults() -> None:
    """Every default a CRD states is the registry's (kinds.py), where the core reads it."""
    from stargate_operator.api.crdgen import openapi_schema, spec_defaults

    for model in KINDS:
        assert spec_defaults(openapi_schema(model)) == dict(kinds.BY_KIND[model.kind_info.kind].defaults)


def test_a_default_written_only_in_a_model_is_refused() -> None:
    from stargate_operator.api import Rack

    class Drifted(Rack):  # not a direct Resource subclass: not registered as a kind
        kind_info = Rack.kind_info.model_copy(update={"defaults": {"priority": 7}})

    with pytest.raises(ValueError, match=r"Rack: the model's spec defaults differ .* at priority"):
        crd(Drifted)


def test_api_models_follow_the_registry() -> None:
    assert [m.kind_info.kind for m in KINDS] == [k.kind for k in kinds.KINDS]
    assert [m.kind_info.scope for m in KINDS] == [k.scope for k in kinds.KINDS]


def _gen_crds() -> Any:
    spec = importlib.util.spec_from_file_location("gen_crds", ROOT / "hack" / "gen-crds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_charts_kind_lists_are_the_registrys() -> None:
    """Chart.yaml's CRD list and the RBAC resource lists are generated, committed and current."""
    gen = _gen_crds()
    for path in (gen.CHART_YAML, gen.KINDS_TEMPLATE):
        assert path.read_text() == gen.generated()[path], f"{path} is stale: run hack/gen-crds.py"
    chart = yaml.safe_load(gen.CHART_YAML.read_text())
    listed = yaml.safe_load(chart["annotations"]["artifacthub.io/crds"])
    assert [e["kind"] for e in listed] == [k.kind for k in kinds.KINDS]
    assert all(e["version"] == kinds.VERSION and e["description"] for e in listed)
    text = gen.KINDS_TEMPLATE.read_text()
    assert json.dumps([k.plural for k in kinds.KINDS]) in text
    assert json.dumps([f"{k.plural}/status" for k in kinds.KINDS]) in text
