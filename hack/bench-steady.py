#!/usr/bin/env python3
"""A site at rest under its agents' default load, then a curtailment: what the API server carries.

On a fresh local control plane: the synthetic site of `--nodes` GPU nodes, the operator, and one
`agent --simulate --all` process for every node at the agents' default interval (10 s), in the
telemetry mode `--telemetry` names (default `auto`: the one the docs recommend for `--nodes`,
Prometheus above 2,000 nodes, benchlib.PROMETHEUS_ABOVE_NODES). With `--telemetry agents` each
agent writes its GPUNode's telemetry every interval, as a real node's agent does without
Prometheus. With `--telemetry prometheus` the agents report to their
/metrics (`--report-to prometheus`: their GPUNodes written once, then only when their power range
changes), a real Prometheus scrapes every node on its own target every 15 s (the simulated fleet
serves each node on /nodes/<GPUNode>/metrics, the target's `node` label naming it), and the
operator reads them (`run --telemetry prometheus`, the agents' series). The operator judges
staleness at its default threshold. Once every node is confirmed (or `--settle-timeout` has passed:
a mode that does not hold at the size is measured from where it got to, `first_confirm_s` null and
`confirmed_before_rest` saying how far), `--rest` seconds (default 300)
at rest are measured, then a 20 % curtailment:

- `writes_per_s_at_rest`: every client's mutating requests together, from the API server's own
  `apiserver_request_total` (PATCH, POST, PUT, DELETE), over the rest period;
- `agent_writes_per_s`: the agents' share of them (their GPUNode status patches);
- `operator_writes_per_s`: the operator's status writes (its own counter) over the same period;
- `stale_nodes`: the most GPUNodes with stale telemetry at any sample of the rest period (every
  15 s, the operator's `stargate_cluster_nodes_telemetry_stale`);
- `apiserver_cores_at_rest`: the API server's CPU over the rest period, in cores (and the other
  processes' in `rest_cores`);
- `scrape_targets`: Prometheus's active targets whose last scrape succeeded (its /api/v1/targets),
  at the end of the rest period; 0 without Prometheus;
- `query_s`: the mean time of the operator's Prometheus queries per recomputation (one telemetry
  poll: its instant queries, first request to last answer; its `stargate_telemetry_query_seconds`)
  over the rest period; null without Prometheus;
- `confirm_s`: from the curtailment's spec change until the site counts every node confirmed;
- `load_avg`: the machine's 1-minute load average at the start and the end of the rest period
  (the machine may be shared: figures are read beside it).

    .venv/bin/python hack/bench-steady.py --nodes 10000 [--telemetry agents] [--rest 300] [--json]
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib  # its site, operator and agent processes, Prometheus and waits
from benchlib import wait_until
from stargate_operator import kinds
from stargate_operator.client import KubeClient
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


STALE_SERIES = "stargate_cluster_nodes_telemetry_stale{"
QUERY_SUM = 'stargate_telemetry_query_seconds_sum{series="agent"}'
QUERY_COUNT = 'stargate_telemetry_query_seconds_count{series="agent"}'


def stale_nodes(op: benchlib.OperatorProcess) -> int:
    """GPUNodes whose telemetry the operator judges stale now (its site metric)."""
    text = benchlib.POLL.get(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=60).text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith(STALE_SERIES))


async def run(nodes: int, seed: int, rest_s: float, telemetry: str,
              settle_s: float = 1800.0) -> dict[str, Any]:
    prom_mode = telemetry == "prometheus"
    result: dict[str, Any] = {"nodes": nodes, "telemetry": telemetry, "agent_interval_s": 10.0}
    logdir = Path(tempfile.mkdtemp(prefix="sg-bench-steady-"))
    benchlib.log(f"logs in {logdir}")
    fleet: benchlib.SimulatedFleet | None = None
    op: benchlib.OperatorProcess | None = None
    with LocalControlPlane() as cp:
        cp.apply_crds()
        client = KubeClient.from_kubeconfig(str(cp.kubeconfig), max_connections=benchlib.CONCURRENCY)
        servers = cp.server_pids()
        try:
            site = benchlib.Site(client, "stargate-bench", nodes, seed)
            await site.create()
            ns = site.namespace
            objects = await site.objects()
            cluster_name = next(o for o in objects if o["kind"] == benchlib.CLUSTER)["metadata"]["name"]
            # The operator's default staleness threshold (benchlib's operator has none by default).
            op_args = ["--stale-after", f"{kinds.DEFAULT_STALE_AFTER_SECONDS:g}"]
            if prom_mode:  # Prometheus scrapes the agents before the operator reads it
                fleet = benchlib.SimulatedFleet(cp.kubeconfig, ns, objects, logdir, telemetry, interval=10.0)
                op_args += fleet.operator_args
            op = benchlib.OperatorProcess(cp.kubeconfig, [ns], logdir, "steady", extra_args=op_args)
            benchlib.wait_healthy(op)
            benchlib.wait_reconciled(op, timeout=1800)
            if fleet is None:  # the agents' reports once the operator's first statuses are written
                fleet = benchlib.SimulatedFleet(cp.kubeconfig, ns, objects, logdir, telemetry, interval=10.0)
            agent, prom = fleet.agent, fleet.prometheus
            cluster_path = f"{kinds.GROUP_PATH}/namespaces/{ns}/{kinds.STARGATE_CLUSTER.plural}/"

            def power() -> dict[str, Any]:
                got: dict[str, Any] = (cp.get_json(f"{cluster_path}{cluster_name}").get("status") or {}).get(
                    "power") or {}
                return got

            t_confirm = time.perf_counter()
            try:
                wait_until(lambda: int(power().get("limitsConfirmed") or 0) == nodes, settle_s,
                           "every agent's report confirmed", every=2.0)
                result["first_confirm_s"] = round(time.perf_counter() - t_confirm, 1)
                benchlib.log("every node confirmed: the rest period starts")
            except SystemExit as e:
                # A mode that does not hold at this size: what it carries at rest is measured all the
                # same, from where it got to.
                result["first_confirm_s"] = None
                result["confirmed_before_rest"] = int(power().get("limitsConfirmed") or 0)
                benchlib.log(f"{e}: {result['confirmed_before_rest']} of {nodes} confirmed; the rest "
                             "period starts anyway")

            before = mutating_requests(cp)
            op_before = op.writes()
            node_writes = f'stargate_api_writes_total{{kind="{kinds.GPU_NODE.kind}",verb="patch_status"}}'
            op_nodes_before = op.metric(node_writes)
            q_sum, q_count = op.metric(QUERY_SUM), op.metric(QUERY_COUNT)
            cpu = benchlib.Cpu(servers["kube-apiserver"], servers["etcd"], op.proc.pid)
            others = {"agent": agent.proc.pid, **({"prometheus": prom.proc.pid} if prom else {})}
            others_start = {k: benchlib.cpu_seconds(p) for k, p in others.items()}
            load_start = os.getloadavg()[0]
            t0 = time.perf_counter()
            most_stale = 0
            while time.perf_counter() - t0 < rest_s:
                most_stale = max(most_stale, stale_nodes(op))
                await asyncio.sleep(min(15.0, max(0.0, rest_s - (time.perf_counter() - t0))))
            elapsed = time.perf_counter() - t0
            used = cpu.used("operator")
            used.update({k: round(benchlib.cpu_seconds(p) - others_start[k], 2) for k, p in others.items()})
            after = mutating_requests(cp)
            delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
            result["rest_s"] = round(elapsed, 1)
            result["load_avg"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
            result["writes_per_s_at_rest"] = round(sum(delta.values()) / elapsed, 2)
            # GPUNode status patches are the agents' telemetry, less the operator's own GPUNode writes
            node_status = delta.get(f"{kinds.GPU_NODE.plural}/status", 0.0)
            result["agent_writes_per_s"] = round(
                max(0.0, node_status - (op.metric(node_writes) - op_nodes_before)) / elapsed, 2)
            result["operator_writes_per_s"] = round((op.writes() - op_before) / elapsed, 2)
            result["writes_at_rest_by_resource"] = {k: int(v) for k, v in sorted(delta.items()) if v}
            result["stale_nodes"] = max(most_stale, stale_nodes(op))
            result["apiserver_cores_at_rest"] = round(used["apiserver"] / elapsed, 3)
            result["rest_cores"] = {k: round(v / elapsed, 3) for k, v in used.items()}
            if prom is not None:
                active, up = prom.targets_up()
                result["scrape_targets"] = up
                result["scrape_targets_active"] = active
                polls = op.metric(QUERY_COUNT) - q_count
                result["query_s"] = round((op.metric(QUERY_SUM) - q_sum) / polls, 3) if polls else None
                result["telemetry_polls_at_rest"] = int(polls)
                result["prometheus_series"] = prom.head_series()
            else:
                result["scrape_targets"] = 0
                result["query_s"] = None

            benchlib.log(f"at rest: {json.dumps(result)}")  # kept should the curtailment not end

            t = time.perf_counter()
            await benchlib.set_curtailment(client, ns, cluster_name, benchlib.CURTAILMENT)
            budget_before = power().get("budgetWatts")
            try:
                wait_until(lambda: power().get("budgetWatts") != budget_before
                           and int(power().get("limitsConfirmed") or 0) == nodes, min(900.0, settle_s),
                           "every node confirmed after the curtailment", every=0.5)
                result["confirm_s"] = round(time.perf_counter() - t, 2)
            except SystemExit as e:  # the figures at rest are printed all the same
                result["confirm_s"] = None
                result["confirm_error"] = f"{e}; {power().get('limitsConfirmed')} confirmed"
        finally:
            for proc in (fleet, op):
                if proc is not None:
                    proc.stop()
            await client.aclose()
    return result


def main() -> int:
    p = benchlib.parser(__doc__, 10_000)
    p.add_argument("--rest", type=float, default=300.0, help="seconds measured at rest (default 300)")
    p.add_argument("--settle-timeout", type=float, default=1800.0,
                   help="seconds to wait for every node confirmed, before the rest period and after the "
                        "curtailment (at most 900 there); past it the figures are taken from where the "
                        "site got to (default 1800)")
    benchlib.add_telemetry_option(p)
    args = p.parse_args()
    telemetry = benchlib.telemetry_mode(args.telemetry, args.nodes)
    result = asyncio.run(run(args.nodes, args.seed, args.rest, telemetry, args.settle_timeout))
    print(json.dumps(result) if args.json else " ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
