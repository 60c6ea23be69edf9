#!/usr/bin/env python3
"""Write the README's Helm values table from helm/stargate-operator/values.yaml (or --check it).

Every value in values.yaml carries a comment starting with ``# --`` (continued on the following
``#`` lines); the table lists each documented key with its default. The table lives in README.md
between the markers ``<!-- helm-values:begin -->`` and ``<!-- helm-values:end -->``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "helm" / "stargate-operator" / "values.yaml"
README = ROOT / "README.md"
BEGIN, END = "<!-- helm-values:begin -->", "<!-- helm-values:end -->"


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key with a ``# --`` comment, in file order."""
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if comment:
                comment.append(stripped[1:].strip())
            continue
        if not stripped or stripped.startswith("- ") or ":" not in stripped:
            comment = []
            continue
        indent = len(line) - len(line.lstrip())
        key = stripped.split(":", 1)[0].strip().strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if comment:
            out.append((".".join(k for _, k in stack), " ".join(comment)))
        comment = []
    return out


def lookup(values: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        values = values[part]
    return values


def render_table() -> str:
    text = VALUES.read_text()
    values = yaml.safe_load(text)
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    for key, desc in documented_keys(text):
        default = json.dumps(lookup(values, key), separators=(", ", ": "))
        if len(default) > 60:
            default = "see values.yaml"
        desc = desc.replace("|", "\\|")
        rows.append(f"| `{key}` | `{default}` | {desc} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true", help="exit 1 if README.md's table is out of date")
    args = p.parse_args()
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        print(f"README.md has no {BEGIN} ... {END} markers", file=sys.stderr)
        return 1
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{render_table()}{END}{tail}"
    if args.check:
        if new != readme:
            print(
                "README.md's Helm values table is out of date: run hack/helm-values-table.py", file=sys.stderr
            )
            return 1
        return 0
    README.write_text(new)
    print("wrote the Helm values table in README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
