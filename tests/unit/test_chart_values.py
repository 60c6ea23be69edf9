"""The chart's values: every key documented and in the schema, and the README's table of them current
(files only; the chart is rendered and installed in tests/integration/test_helm.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "stargate-operator"


def test_every_value_documented_and_in_the_schema() -> None:
    """Every key in values.yaml has a comment right above it, and the schema knows every key."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    # (indent, covered): a key is covered when a comment sits right above it or above an ancestor
    # whose value is a documented default block (e.g. podSecurityContext's fields).
    stack: list[tuple[int, bool]] = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- ") or ":" not in stripped:
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inherited = bool(stack) and stack[-1][1]
        commented = i > 0 and lines[i - 1].strip().startswith("#")
        section = stripped.endswith(":")  # its children carry their own comments
        if not (commented or inherited or section):
            undocumented.append(stripped)
        stack.append((indent, commented or inherited))
    assert not undocumented, f"values without a comment: {undocumented}"

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> list[str]:
        missing = []
        for key, value in values.items():
            props = node.get("properties", {})
            if key not in props:
                missing.append(f"{path}{key}")
            elif isinstance(value, dict) and props[key].get("properties"):
                missing += walk(value, props[key], f"{path}{key}.")
        return missing

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert walk(values, schema, "") == []


def test_values_table_is_current() -> None:
    """hack/gen-docs.py writes every documented value into the docs' Helm values page and into the
    chart's README (what `helm show readme` prints); both must be current."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "gen-docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    for page in (ROOT / "docs" / "reference" / "helm-values.md", CHART / "README.md"):
        text = page.read_text()
        assert "| `watchNamespaces` |" in text and "| `crds.keep` |" in text, page
