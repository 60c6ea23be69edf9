#!/usr/bin/env python3
"""A site at rest under its agents' default load, then a curtailment: what the API server carries.

On a fresh local control plane: the synthetic site of `--nodes` GPU nodes, the operator, and one
`agent --simulate --all` process for every node at the agents' default interval (10 s: each agent
writes its GPUNode's telemetry every interval, as a real node's agent does). Once every node is
confirmed, `--rest` seconds (default 300) at rest are measured, then a 20 % curtailment:

- `writes_per_s_at_rest`: every client's mutating requests together, from the API server's own
  `apiserver_request_total` (PATCH, POST, PUT, DELETE), over the rest period;
- `agent_writes_per_s`: the agents' share of them (their GPUNode status patches);
- `operator_writes_per_s`: the operator's status writes (its own counter) over the same period;
- `stale_nodes`: the most GPUNodes with `TelemetryStale=True` at any sample of the rest period;
- `apiserver_cores_at_rest`: the API server's CPU over the rest period, in cores;
- `confirm_s`: from the curtailment's spec change until the site counts every node confirmed;
- `scrape_targets` and `query_s`: 0 and null here: observations through Prometheus are not part
  of this run (`--telemetry prometheus` is not measured by this script yet).

    .venv/bin/python hack/bench-steady.py --nodes 10000 [--rest 300] [--json]
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib  # its site, operator process and waits
from bench import AgentProcess, wait_until  # hack/bench.py's agents process and its wait
from stargate_operator import kinds
from stargate_operator.client import ApiResource, KubeClient
from stargate_operator.localcp.controlplane import LocalControlPlane

MUTATING = ("PATCH", "POST", "PUT", "DELETE")


def mutating_requests(cp: LocalControlPlane) -> dict[str, float]:
    """The API server's mutating requests so far, by resource (its apiserver_request_total)."""
    with cp.connect(timeout=30) as c:
        text = c.send("GET", "/metrics", accept="text/plain").text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, value = line.rsplit(" ", 1)
        fields = dict(part.split("=", 1) for part in labels[len("apiserver_request_total{"):-1].split(",")
                      if "=" in part)
        if fields.get("verb", "").strip('"') in MUTATING:
            res = fields.get("resource", '""').strip('"') + "/" + fields.get("subresource", '""').strip('"')
            out[res] = out.get(res, 0.0) + float(value)
    return out


async def run(nodes: int, seed: int, rest_s: float) -> dict[str, Any]:
    result: dict[str, Any] = {"nodes": nodes, "telemetry": "agents", "agent_interval_s": 10.0}
    logdir = Path(tempfile.mkdtemp(prefix="sg-bench-steady-"))
    with LocalControlPlane() as cp:
        cp.apply_crds()
        client = KubeClient.from_kubeconfig(str(cp.kubeconfig), max_connections=benchlib.CONCURRENCY)
        servers = cp.server_pids()
        try:
            site = benchlib.Site(client, "stargate-bench", nodes, seed)
            await site.create()
            ns = site.namespace
            op = benchlib.OperatorProcess(cp.kubeconfig, [ns], logdir, "steady")
            benchlib.wait_healthy(op)
            benchlib.wait_reconciled(op, timeout=1800)
            agent = AgentProcess(cp.kubeconfig, ns, logdir, interval=10.0)
            objects = await site.objects()
            cluster_name = next(o for o in objects if o["kind"] == benchlib.CLUSTER)["metadata"]["name"]
            cluster_path = f"{kinds.GROUP_PATH}/namespaces/{ns}/{kinds.STARGATE_CLUSTER.plural}/"

            def power() -> dict[str, Any]:
                got: dict[str, Any] = (cp.get_json(f"{cluster_path}{cluster_name}").get("status") or {}).get(
                    "power") or {}
                return got

            wait_until(lambda: int(power().get("limitsConfirmed") or 0) == nodes, 1800,
                             "every agent's report confirmed", every=2.0)
            benchlib.log("every node confirmed: the rest period starts")

            async def stale() -> int:
                items, _ = await client.list(ApiResource.of(kinds.GPU_NODE), ns, page_size=5000)
                return sum(1 for o in items for c in (o.get("status") or {}).get("conditions") or []
                           if c.get("type") == "TelemetryStale" and c.get("status") == "True")

            before = mutating_requests(cp)
            op_before = op.writes()
            node_writes = f'stargate_api_writes_total{{kind="{kinds.GPU_NODE.kind}",verb="patch_status"}}'
            op_nodes_before = op.metric(node_writes)
            cpu = benchlib.Cpu(servers["kube-apiserver"], servers["etcd"], op.proc.pid)
            t0 = time.perf_counter()
            most_stale = 0
            while time.perf_counter() - t0 < rest_s:
                most_stale = max(most_stale, await stale())
                await asyncio.sleep(min(15.0, max(0.0, rest_s - (time.perf_counter() - t0))))
            elapsed = time.perf_counter() - t0
            used = cpu.used("operator")
            after = mutating_requests(cp)
            delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
            result["rest_s"] = round(elapsed, 1)
            result["writes_per_s_at_rest"] = round(sum(delta.values()) / elapsed, 2)
            # GPUNode status patches are the agents' telemetry, less the operator's own GPUNode writes
            node_status = delta.get(f"{kinds.GPU_NODE.plural}/status", 0.0)
            result["agent_writes_per_s"] = round(
                max(0.0, node_status - (op.metric(node_writes) - op_nodes_before)) / elapsed, 2)
            result["operator_writes_per_s"] = round((op.writes() - op_before) / elapsed, 2)
            result["writes_at_rest_by_resource"] = {k: int(v) for k, v in sorted(delta.items()) if v}
            result["stale_nodes"] = most_stale
            result["apiserver_cores_at_rest"] = round(used["apiserver"] / elapsed, 3)
            result["rest_cpu_s"] = used
            result["scrape_targets"] = 0
            result["query_s"] = None

            t = time.perf_counter()
            await benchlib.set_curtailment(client, ns, cluster_name, benchlib.CURTAILMENT)
            budget_before = power().get("budgetWatts")
            wait_until(lambda: power().get("budgetWatts") != budget_before
                             and int(power().get("limitsConfirmed") or 0) == nodes, 900,
                             "every node confirmed after the curtailment", every=0.5)
            result["confirm_s"] = round(time.perf_counter() - t, 2)
            agent.stop()
            op.stop()
        finally:
            await client.aclose()
    return result


def main() -> int:
    p = benchlib.parser(__doc__, 10_000)
    p.add_argument("--rest", type=float, default=300.0, help="seconds measured at rest (default 300)")
    args = p.parse_args()
    result = asyncio.run(run(args.nodes, args.seed, args.rest))
    print(json.dumps(result) if args.json else " ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
