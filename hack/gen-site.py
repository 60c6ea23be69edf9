#!/usr/bin/env python3
"""Generate a realistic site of N GPU nodes as multi-document YAML, deterministic for a seed.

  hack/gen-site.py --nodes 10000 --seed 7 --namespace hall-1 > /tmp/hall-1.yaml
  stargate-operator plan -f /tmp/hall-1.yaml

18 nodes per rack, mixed priorities, GB200/H100/H200 figures of core/products.py, HBM/DRAM/CXL
pools and claims (stargate_operator.fixtures.synth). `--no-status` drops the status the generator
gives some objects (agent telemetry, bound claims), for applying to a cluster as new objects.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import yaml

from stargate_operator.fixtures.synth import synthetic_site


def for_apply(obj: dict[str, object], keep_status: bool) -> dict[str, object]:
    meta = dict(obj["metadata"])  # type: ignore[call-overload]
    for server_field in ("uid", "resourceVersion", "generation", "creationTimestamp"):
        meta.pop(server_field, None)
    out = {k: v for k, v in obj.items() if k != "status" or keep_status}
    out["metadata"] = meta
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, required=True, help="GPU nodes in the site")
    p.add_argument("--seed", type=int, default=1, help="random seed (same seed, same site)")
    p.add_argument("--namespace", default="stargate-bench", help="namespace of every object")
    p.add_argument("--cluster", default="site", help="name of the StargateCluster")
    p.add_argument("--no-status", action="store_true", help="drop telemetry and claim bindings")
    p.add_argument("--namespace-object", action="store_true", help="emit the Namespace object first")
    args = p.parse_args()
    if args.nodes < 1:
        p.error("--nodes must be at least 1")
    now = datetime.now(UTC)
    objects = synthetic_site(args.nodes, args.seed, args.namespace, now=now, cluster=args.cluster)
    docs: list[dict[str, object]] = []
    if args.namespace_object:
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": args.namespace}})
    docs += [for_apply(o, keep_status=not args.no_status) for o in objects]
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
