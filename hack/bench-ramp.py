#!/usr/bin/env python3
"""What a 60 s ramp costs in writes: a 20 % curtailment of the synthetic site, descending over 60 s
(the site's rampDownWattsPerSecond set to a fifth of its budget over 60 s), then lifted, rising over
60 s. Counts the operator's writes by kind and verb from its /metrics over each ramp (`writes_in_ramp`:
its 60 s and 5 s more; `writes`: until its writes stop), with the slices there are, and the
operator's CPU seconds over each (it plans the two ends of each straight piece of the ramp beside
the plan of each second).

Same parts as hack/bench-react.py: a fresh local control plane, the synthetic site, an operator
that writes the cold statuses and then follows the ramps. No agents: the slices' writes are the
operator's whatever the agents do (they interpolate); the GPUNode and slice statuses at rest are
not counted as the ramp's (they follow confirmations).

    .venv/bin/python hack/bench-ramp.py --nodes 10000 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib
from stargate_operator import kinds
from stargate_operator.client import ApiResource, KubeClient
from stargate_operator.core.power import site_budget
from stargate_operator.localcp.controlplane import LocalControlPlane

RAMP_SECONDS = 60


def writes_by_kind(op: benchlib.OperatorProcess) -> dict[str, float]:
    text = benchlib.POLL.get(f"http://127.0.0.1:{op.metrics_port}/metrics/operator", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("stargate_api_writes_total{"):
            labels = line[line.index("{") + 1:line.index("}")]
            fields = {k: v.strip('"') for k, v in (part.split("=", 1) for part in labels.split(","))}
            out[f"{fields['kind']}/{fields['verb']}"] = float(line.rsplit(" ", 1)[1])
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {k: int(v - before.get(k, 0)) for k, v in sorted(after.items()) if v - before.get(k, 0)}


async def _patch_cluster(client: KubeClient, ns: str, name: str, power: dict[str, Any]) -> None:
    await client.request(
        "PATCH", f"/apis/{kinds.API_VERSION}/namespaces/{ns}/{kinds.STARGATE_CLUSTER.plural}/{name}",
        verb="patch", body={"spec": {"power": power}}, content_type="application/merge-patch+json")


async def _ramp(op: benchlib.OperatorProcess, client: KubeClient, ns: str, name: str,
                curtailment: dict[str, Any] | None) -> dict[str, Any]:
    before = writes_by_kind(op)
    cpu0 = benchlib.cpu_seconds(op.proc.pid)
    t0 = time.perf_counter()
    await _patch_cluster(client, ns, name, {"curtailment": curtailment})
    await asyncio.sleep(RAMP_SECONDS + 5)  # the ramp and a margin for its last writes
    in_ramp = writes_by_kind(op)
    # ... and every write it caused, however long the API server takes (the next ramp must not
    # start behind this one's status writes)
    await asyncio.to_thread(op.wait_writes, 0, 3.0, 1800)
    after = writes_by_kind(op)
    return {"seconds": round(time.perf_counter() - t0, 1), "writes_in_ramp": delta(in_ramp, before),
            "writes": delta(after, before),
            "operator_cpu_s": round(benchlib.cpu_seconds(op.proc.pid) - cpu0, 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"nodes": args.nodes, "ramp_s": RAMP_SECONDS}
    logdir = Path(tempfile.mkdtemp(prefix="sg-bench-ramp-"))
    with LocalControlPlane() as cp:
        cp.apply_crds()
        client = KubeClient.from_kubeconfig(str(cp.kubeconfig), max_connections=benchlib.CONCURRENCY)
        try:
            site = benchlib.Site(client, "stargate-bench", args.nodes, args.seed)
            await site.create()
            objects = await site.objects()
            cluster = next(o for o in objects if o["kind"] == benchlib.CLUSTER)
            power = cluster["spec"]["power"]
            normal = site_budget(power["itCapacityWatts"], power.get("reservePercent", 0), 0)
            target = site_budget(power["itCapacityWatts"], power.get("reservePercent", 0),
                                 benchlib.CURTAILMENT["percent"])
            rate = math.ceil((normal - target) / RAMP_SECONDS)
            name = cluster["metadata"]["name"]
            await _patch_cluster(client, site.namespace, name,
                                 {"rampDownWattsPerSecond": rate, "rampUpWattsPerSecond": rate})
            result["rate_w_per_s"] = rate
            op = benchlib.OperatorProcess(cp.kubeconfig, [site.namespace], logdir, "ramp")
            benchlib.wait_healthy(op)
            benchlib.wait_reconciled(op, timeout=3600)  # the cold statuses written
            await asyncio.sleep(5)
            slices, _ = await client.list(ApiResource.of(kinds.POWER_LIMIT_SLICE), site.namespace)
            result["slices"] = len(slices)
            result["descent"] = await _ramp(op, client, site.namespace, name, benchlib.CURTAILMENT)
            benchlib.log(f"descent: {result['descent']}")
            result["rise"] = await _ramp(op, client, site.namespace, name, None)
            benchlib.log(f"rise: {result['rise']}")
            op.stop()
        finally:
            await client.aclose()
    return result


def main() -> int:
    p = benchlib.parser(__doc__, 10_000)
    args = p.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result) if args.json else " ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
