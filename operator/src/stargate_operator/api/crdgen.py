"""Generate CustomResourceDefinitions from the pydantic models.

Pydantic emits JSON Schema with ``$ref``s, ``anyOf [X, null]`` for optional fields, titles and
``additionalProperties: false``. A Kubernetes structural schema wants every type inlined, no
``anyOf`` with null and no ``additionalProperties`` beside ``properties`` (pruning drops unknown
fields; ``kubectl --validate=strict`` reports them). A map (``dict[str, X]``, such as a rack's
``powerLimits``) keeps its ``additionalProperties`` schema, which is how a structural schema spells
one. This module does that translation and nothing else, so that the models stay the single source
of truth.
"""

from __future__ import annotations

from typing import Any

import yaml

from stargate_operator.api import KINDS
from stargate_operator.api.common import CATEGORY, GROUP, VERSION, Resource

_DROP = {"title", "additionalProperties"}


def _structural(node: Any, defs: dict[str, Any], in_status: bool) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs, in_status) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs, in_status)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {node['anyOf']} structurally")
        merged = {**options[0], **{k: v for k, v in node.items() if k != "anyOf"}}
        return _structural(merged, defs, in_status)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "additionalProperties" and isinstance(value, dict) and "properties" not in node:
            out[key] = _structural(value, defs, in_status)  # a map: its values' schema
            continue
        if key in _DROP or key == "$defs":
            continue
        if key == "default" and (value is None or in_status):
            continue
        if key == "properties":
            out[key] = {
                name: _structural(sub, defs, in_status or name == "status") for name, sub in value.items()
            }
        elif key == "items":
            out[key] = _structural(value, defs, in_status)
        elif key == "required":
            out[key] = sorted(value)
        else:
            out[key] = value
    # JSON Schema 2020 writes exclusive bounds as numbers; OpenAPI v3 (and so Kubernetes) as flags.
    for exclusive, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if exclusive in out and not isinstance(out[exclusive], bool):
            bound = out.pop(exclusive)
            if out.get("type") == "integer":  # > 0 reads better as >= 1 in the server's message
                out[inclusive] = bound + 1 if inclusive == "minimum" else bound - 1
            else:
                out[inclusive] = bound
                out[exclusive] = True
    if out.get("type") == "integer":
        out.setdefault("format", "int64")
    if out.get("type") == "number":
        out.setdefault("format", "double")
    return _ordered(out)


# Keys in the order a person reads a schema: what it is, its type, its bounds, then what is inside.
_ORDER = [
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "required",
    "x-kubernetes-validations",
    "properties",
    "items",
    "additionalProperties",
    "rule",
    "message",
    "fieldPath",
    "reason",
]


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    rank = {k: i for i, k in enumerate(_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: (rank.get(kv[0], len(_ORDER)), kv[0])))


def openapi_schema(model: type[Resource]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs, in_status=False)
    props = schema["properties"]
    # apiVersion, kind and metadata belong to the API machinery, not to our models.
    props["apiVersion"] = {"type": "string", "description": "APIVersion of the object."}
    props["kind"] = {"type": "string", "description": "Kind of the object."}
    props["metadata"] = {"type": "object"}
    schema["required"] = ["spec"]
    schema["description"] = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
    return _ordered(schema)


def spec_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """Every default of a CRD schema's spec, by its path under spec ("site.designPUE")."""
    out: dict[str, Any] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        if "default" in node and path:
            out[path] = node["default"]
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{name}" if path else name)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema["properties"]["spec"], "")
    return out


def crd(model: type[Resource]) -> dict[str, Any]:
    info = model.kind_info
    schema = openapi_schema(model)
    found = spec_defaults(schema)
    if found != info.defaults:
        # The registry (kinds.py) is where the core reads a default: one written only in a
        # model, or changed there alone, would make the API server and the core disagree.
        wrong = sorted(k for k in found.keys() | info.defaults.keys() if found.get(k) != info.defaults.get(k))
        raise ValueError(
            f"{info.kind}: the model's spec defaults differ from its KindSpec.defaults in "
            f"stargate_operator/kinds.py at {', '.join(wrong)} (model: "
            f"{ {k: found.get(k) for k in wrong} }, registry: { {k: info.defaults.get(k) for k in wrong} })")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": info.scope,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": info.short_names,
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": info.printer_columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def file_name(model: type[Resource]) -> str:
    return f"{GROUP}_{model.kind_info.plural}.yaml"


HEADER = "# Generated by hack/gen-crds.py from operator/src/stargate_operator/api. Do not edit.\n"


def render(model: type[Resource]) -> str:
    return HEADER + yaml.safe_dump(crd(model), sort_keys=False, width=100)


def render_all() -> dict[str, str]:
    """File name -> YAML text, for every kind, deterministic."""
    return {file_name(m): render(m) for m in KINDS}
