#!/usr/bin/env python3
"""Write the CRDs generated from the models to crds/ and to the Helm chart (or --check them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stargate_operator.api.crdgen import render_all

ROOT = Path(__file__).resolve().parent.parent
# The chart keeps its copy under files/crds/ (templates/crds.yaml renders it), not in Helm's crds/
# folder, so that crds.enabled / crds.keep can switch and keep them.
TARGETS = [ROOT / "crds", ROOT / "helm" / "stargate-operator" / "files" / "crds"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    args = p.parse_args()
    stale = []
    for target in TARGETS:
        if not target.parent.exists():
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name, text in render_all().items():
            path = target / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path.relative_to(ROOT)))
            else:
                path.write_text(text)
                print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("out of date (run hack/gen-crds.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
