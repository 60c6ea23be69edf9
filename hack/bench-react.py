#!/usr/bin/env python3
"""`react_s` alone, for sites too large for the whole of hack/benchlib.py in one sitting.

hack/bench.py times every phase against a tight-loop baseline (about 47 minutes at 100,000
nodes); this takes only its curtailment's fast path, with the same parts and the same rules: a
fresh local control plane, the synthetic site, an operator that writes the cold statuses, then a
new operator that is given the 20 % curtailment once it has finished its first recomputation and
the API server is at rest; `react_s` is the time from the spec change until every changed node's
entry in the PowerLimitSlices shows its lowering, min(old, new) (a watch on the slices): the
median of three curtailments in one run (each lifted again, untimed, before the next), every one
printed (`react_runs_s`). No ratio: nothing is compared.

It also prints where the time went: the first slice write after the change (as the watch on the
slices sees it), the operator's writes made by each second (its counter, read once a second), the
CPU seconds of the API server, etcd and the operator over the reaction, and the API server's CPU,
allocation and garbage collections per write (its /metrics): the median run's at the top level,
every run's under `runs`; with `--profile DIR`, the API server's pprof and a py-spy profile of the
operator over the first.

    .venv/bin/python hack/bench-react.py --nodes 100000 [--tree] [--json] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib  # its site, operator process, slice watcher and waits
from stargate_operator.client import KubeClient
from stargate_operator.localcp.controlplane import LocalControlPlane


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"nodes": args.nodes, "tree": args.tree}
    logdir = Path(tempfile.mkdtemp(prefix="sg-bench-react-"))
    profiler = benchlib.Profiler(Path(args.profile)) if args.profile else None
    with LocalControlPlane(extra_apiserver_args=["--profiling=true"] if profiler else ()) as cp:
        cp.apply_crds()
        client = KubeClient.from_kubeconfig(str(cp.kubeconfig), max_connections=benchlib.CONCURRENCY)
        servers = cp.server_pids()
        pids = [servers["kube-apiserver"], servers["etcd"]]
        try:
            site = benchlib.Site(client, "stargate-bench", args.nodes, args.seed, tree=args.tree)
            t0 = time.perf_counter()
            await site.create()
            objects = await site.objects()
            benchlib.log(f"created {len(objects)} objects in {time.perf_counter() - t0:.1f}s")
            expected = site.expected(objects)
            changed = sum(1 for v in expected.values() if v)
            op = benchlib.OperatorProcess(cp.kubeconfig, [site.namespace], logdir, "cold")
            benchlib.wait_healthy(op)
            done_at, _ = op.wait_writes(changed, timeout=3600)
            result["cold_s"] = round(done_at - op.started, 3)
            benchlib.log(f"cold start: {changed} writes in {result['cold_s']:.1f}s")
            op.stop()

            op = benchlib.OperatorProcess(cp.kubeconfig, [site.namespace], logdir, "curtail")
            benchlib.wait_healthy(op)
            started = time.perf_counter()
            benchlib.wait_reconciled(op)
            result["operator_ready_s"] = round(time.perf_counter() - started, 3)
            runs: list[dict[str, Any]] = []
            for i in range(args.runs):
                objects = await site.objects()
                cluster, curtailed = benchlib.curtailed(objects)
                want = benchlib.lowering(objects, site.expected(curtailed))
                benchlib.quiesce(pids)
                runs.append(await _curtail_once(cp, client, site, op, cluster, want, servers, pids,
                                                profiler if i == 0 else None, args))
                benchlib.log(f"curtailment {i + 1}: every slice's lowering ({len(want)} nodes) after "
                          f"{runs[-1]['react_s']:.2f}s, {runs[-1]['writes_by_then']} writes")
                if profiler and i == 0:
                    profiler.finish()
                # lifted again (untimed): every limit back up, raises written
                objects = await site.objects()
                up = benchlib.SliceWatcher(cp.kubeconfig, site.namespace,
                                           benchlib.raised(site, objects)).start()
                await benchlib.set_curtailment(client, site.namespace, cluster["metadata"]["name"], None)
                up.result()
                benchlib.wait_reconciled(op)
            reacts = sorted(r["react_s"] for r in runs)
            result["react_runs_s"] = [r["react_s"] for r in runs]
            result["react_s"] = reacts[len(reacts) // 2]
            median = next(r for r in runs if r["react_s"] == result["react_s"])
            result.update({k: v for k, v in median.items() if k != "react_s"})
            # every run's figures too: a garbage collection of the API server's heap in one run
            # and not in another moves its seconds more than anything the operator does
            result["runs"] = runs
            op.stop()
        finally:
            await client.aclose()
    return result


async def _curtail_once(cp: LocalControlPlane, client: KubeClient, site: Any, op: Any,
                        cluster: dict[str, Any], want: dict[str, int], servers: dict[str, int],
                        pids: list[int], profiler: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One timed curtailment: from the spec change until every slice shows its lowering."""
    result: dict[str, Any] = {"nodes_changed": len(want)}
    watcher = benchlib.SliceWatcher(cp.kubeconfig, site.namespace, want).start()
    if profiler:
        seconds = max(3, args.nodes // 5000)
        profiler.apiserver(cp, "react", seconds)
        profiler.operator(op.proc.pid, "react", seconds)
    go0 = benchlib.go_figures(cp)
    before = op.writes()
    cpu = benchlib.Cpu(servers["kube-apiserver"], servers["etcd"], op.proc.pid)
    t = time.perf_counter()
    await benchlib.set_curtailment(client, site.namespace, cluster["metadata"]["name"], benchlib.CURTAILMENT)
    progress: list[int] = []
    # The operator's write counter once a second only: its page costs the operator CPU (about 5 ms
    # a poll), and polling it twenty times a second took a sixth of a 10,000-node reaction's.
    while not watcher.finished.wait(max(0.0, len(progress) + 1 - (time.perf_counter() - t))) \
            and time.perf_counter() - t < 900:
        progress.append(int(op.writes() - before))
    result["react_s"] = round(watcher.result() - t, 3)
    result["slice_writes"] = watcher.slice_writes
    result["writes_by_then"] = int(op.writes() - before)
    first = watcher.first_at  # the first slice write, as a watcher of the slices sees it
    result["first_write_s"] = round(first - t, 3) if first is not None else None
    result["writes_by_s"] = progress
    result["react_cpu_s"] = cpu.used("operator")
    result["react_cores"] = benchlib.cores(result["react_cpu_s"], result["react_s"])
    result.update(benchlib.apiserver_per_write(go0, benchlib.go_figures(cp),
                                               result["react_cpu_s"]["apiserver"],
                                               max(1, result["writes_by_then"])))
    # the rest of the change (the GPUNodes' and racks' statuses) before the next one
    benchlib.wait_reconciled(op)
    return result


def main() -> int:
    p = benchlib.parser(__doc__, 100_000)
    p.add_argument("--tree", action="store_true", help="under the 6-level power tree of fixtures/synth.py")
    p.add_argument("--profile", metavar="DIR", help="also profile the reaction: the API server's "
                   "pprof (from its /debug/pprof) and the operator's py-spy, summarised in DIR/summary.txt")
    p.add_argument("--runs", type=int, default=3, help="curtailments timed (the median is react_s)")
    args = p.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result) if args.json else " ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
