"""The CRD validation cases prove every CEL rule of the models, each case distinct (the cases run
against the API server in tests/integration/test_crd_validation.py)."""

from __future__ import annotations

from typing import Any

from helpers.crd_cases import CASES


def test_there_are_enough_distinct_cases() -> None:
    assert len({c[0] for c in CASES}) == len(CASES) >= 15


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
