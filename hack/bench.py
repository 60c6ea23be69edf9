#!/usr/bin/env python3
"""The operator at scale, against the limit of the API server it runs on, measured in one run.

  hack/bench.py --nodes 1000           # quick mode, under two minutes
  hack/bench.py --nodes 10000 --json
  hack/bench.py --nodes 10000 --shards # also: two sites of half the nodes, one or two operators
  hack/bench.py --nodes 1000 --telemetry prometheus  # the agents' phase through Prometheus

On a fresh local control plane (real kube-apiserver + etcd):

1. baseline: a tight client loop writes the minimal set of status patches for the site (the
   statuses the core computes) straight to the API server, with the same client and concurrency
   the operator uses: the physical limit of this API server on this machine. The statuses are
   then reset (not timed).
2. cold: the operator starts with the site already present; time from the process start until
   every status is correct. The baseline is measured again right after, and cold_ratio divides by
   the mean of the two: the API server gets a few per cent slower with every round of ten thousand
   writes, and the operator's run lies between the two.
3. curtail: a 20 % curtailment of the site; time from the spec change until every GPU node's
   powerLimitWatts is correct, against the same patches in a tight loop (before and after); in
   the same phase `react_s`, until every changed node's entry in the PowerLimitSlices shows its
   lowering (min(old, new): the operator writes the slices first, the limits' fast path), read
   from a watch on the slices: the median of three curtailments by the same operator (each lifted
   again, untimed, before the next), every one printed in `react_runs_s`.
4. rack: one rack's priority changes; time until its nodes are correct.
5. agents: one `agent --simulate --all` process for the whole site at the agents' default interval
   (10 s), in the telemetry mode `--telemetry` names; `auto` (the default) is the one the docs
   recommend for `--nodes` (above 2,000 nodes Prometheus, benchlib.PROMETHEUS_ABOVE_NODES), so
   that the phase meets the load a fleet of that size puts on the site:
   - `agents`: every agent writes its GPUNode's telemetry every interval (1,000 writes a second
     at 10,000 nodes) and the operator reads the reports there (`run --telemetry none`);
   - `prometheus`: the agents serve their readings (`--report-to prometheus`: a GPUNode written
     only when what Prometheus does not carry changes), a real Prometheus scrapes every node on its
     own target every 15 s, and the operator reads it (`run --telemetry prometheus`).
   The curtailment is lifted and everything settled (every node confirmed), then the 20 %
   curtailment again: `agents_react_s` until every agent has set its new limit on its (simulated)
   GPUs, read from the agent's own counter (`--metrics-port`) and dated by its own clock
   (`agents_react_seen_s`: when the benchmark's poll saw it, which a fleet busy reading its GPUs
   answers late), `agents_phase_react_s` the slices'
   figure with the agents running, and `confirm_s` until the site counts every node confirmed
   (the enforced limits as the operator reads them: the GPUNodes' reports, or Prometheus's
   scrapes). Then every node's enforced limit, read the same way, is checked against the core's.
   The JSON's `telemetry` says which mode ran.
6. with --shards: two sites of half the nodes each; one operator on one site, one operator on
   both, and two operators (one site each, at once), each against a tight loop writing the
   same statuses at the same time (shard_ratio: two shards' ratio over one operator's).

Every timed phase starts with the API server and etcd at rest, and a phase that starts a new
operator before its change waits for its first recomputation. Phases 1 to 4 run the operator in
its default mode (`--telemetry none`) whatever `--telemetry` says: their tight-loop baselines write
the statuses the core computes from the site's objects alone, and an operator that read Prometheus
with no agent serving it yet would judge every node's telemetry missing and write other statuses,
so the ratios would compare different writes. The agents' phase starts an operator of its own
(each phase does), in the agents' mode. Convergence is read from the
operator's own counter of status writes (polled over one keep-alive connection, so that the
measurement does not load the machine), then every status is checked against the core's result.
The CPU seconds of the API server, etcd, the operator and the benchmark itself are reported per
phase, with the cores they kept busy on average. Ratios, not absolute times, are the figures to
compare across machines. The last line printed is `key=value` pairs (or JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx

from benchlib import (
    CLUSTER,
    CONCURRENCY,
    CURTAILMENT,
    NODE,
    RACK,
    Cpu,
    OperatorProcess,
    Profiler,
    SimulatedFleet,
    Site,
    SliceWatcher,
    add_telemetry_option,
    cores,
    curtailed,
    key,
    log,
    lowering,
    parser,
    quiesce,
    raised,
    set_curtailment,
    telemetry_mode,
    wait_all_writes,
    wait_healthy,
    wait_reconciled,
    wait_until,
)
from stargate_operator import kinds
from stargate_operator.client import KubeClient
from stargate_operator.core.statusdiff import merge_patch
from stargate_operator.kinds import GROUP_PATH
from stargate_operator.localcp.controlplane import LocalControlPlane

SLICE = kinds.POWER_LIMIT_SLICE.kind

ROOT = Path(__file__).resolve().parent.parent


async def baseline_again(site: Site, reset: Mapping[tuple[str, str, str], dict[str, Any] | None],
                         patches: Mapping[tuple[str, str, str], dict[str, Any] | None], first: float,
                         rest: Callable[[], None], result: dict[str, Any], name: str) -> tuple[float, float]:
    """The baseline again, now that the API server is where the operator left it: each round of
    ten thousand writes leaves it a few per cent slower (more revisions, a bigger heap), so the
    mean of the two matches the operator's state, not a fresher one. Records `{name}_runs_s` and
    `{name}_s`; returns (mean, second run)."""
    await site.write(reset)
    rest()
    second = await site.write(patches)
    mean = (first + second) / 2
    result[f"{name}_runs_s"] = [round(first, 3), round(second, 3)]
    result[f"{name}_s"] = round(mean, 3)
    return mean, second


async def react_again(cp: LocalControlPlane, client: KubeClient, site: Site, op: OperatorProcess,
                      name: str, rest: Callable[[], None]) -> float:
    """The curtailment lifted (untimed: every raise written, the operator at rest), then again: the
    seconds until every slice shows its lowering."""
    objects = await site.objects()
    up = SliceWatcher(cp.kubeconfig, site.namespace, raised(site, objects)).start()
    await set_curtailment(client, site.namespace, name, None)
    up.result()
    wait_reconciled(op)
    objects = await site.objects()
    watcher = SliceWatcher(cp.kubeconfig, site.namespace,
                           lowering(objects, site.expected(curtailed(objects)[1]))).start()
    rest()
    t = time.perf_counter()
    await set_curtailment(client, site.namespace, name, CURTAILMENT)
    took = round(watcher.result() - t, 3)
    wait_reconciled(op)
    return took


async def agents_phase(cp: LocalControlPlane, client: KubeClient, site: Site, logdir: Path,
                       rest: Callable[[], None], result: dict[str, Any], profiler: Profiler | None,
                       nodes: int, telemetry: str) -> None:
    """Phase 5: the enforcement path end to end, with one simulated agent per node reporting in
    `telemetry` mode, and an operator of its own started in the same mode."""
    ns = site.namespace
    cluster_path = f"{GROUP_PATH}/namespaces/{ns}/{kinds.STARGATE_CLUSTER.plural}/"
    objects = await site.objects()
    name = curtailed(objects)[0]["metadata"]["name"]
    await set_curtailment(client, ns, name, None)
    fleet = SimulatedFleet(cp.kubeconfig, ns, objects, logdir, telemetry)
    agent = fleet.agent
    op: OperatorProcess | None = None
    try:
        op = OperatorProcess(cp.kubeconfig, [ns], logdir, "agents", extra_args=fleet.operator_args)
        wait_healthy(op)

        def confirmed(budget: int | None = None) -> int:
            """The site's confirmed nodes, once its status carries `budget` (when given)."""
            power = (cp.get_json(f"{cluster_path}{name}").get("status") or {}).get("power") or {}
            if budget is not None and power.get("budgetWatts") != budget:
                return -1
            return int(power.get("limitsConfirmed") or 0)

        t = time.perf_counter()
        wait_until(lambda: confirmed() == site.nodes, 1800, "every agent's report confirmed", every=2.0)
        # The agents keep reporting at their default interval: without Prometheus 1,000 writes a
        # second at 10,000 nodes, through it a scrape of every node every 15 s. What follows is
        # timed under that load, as a fleet run in that mode puts it.
        log(f"agents ({telemetry}): {site.nodes} simulated agents started and confirmed in "
            f"{time.perf_counter() - t:.1f}s")
        objects = await site.objects()
        after = site.expected(curtailed(objects)[1])
        now_limits = {o["metadata"]["name"]: (o.get("status") or {}).get("powerLimitWatts")
                      for o in objects if o["kind"] == NODE}
        changed = sum(1 for k, v in after.items()
                      if k[0] == NODE and v["powerLimitWatts"] != now_limits.get(k[2]))
        rest()
        before = agent.changes()
        watcher = SliceWatcher(cp.kubeconfig, ns, lowering(objects, after)).start()
        if profiler:
            seconds = max(3, nodes // 2000)
            profiler.operator(agent.proc.pid, "agents", seconds, who="agent")
            profiler.operator(op.proc.pid, "agents", seconds)
        t, wall = time.perf_counter(), time.time()
        await set_curtailment(client, ns, name, CURTAILMENT)

        progress: list[tuple[float, int]] = []  # (seconds since the change, limits applied)

        def applied() -> bool:
            now = agent.changes()
            done = int(sum(now.values()) - sum(before.values()))
            progress.append((time.perf_counter() - t, done))
            return done >= changed

        applied_at = wait_until(applied, 600, "every agent to apply its new limit", every=0.1)
        # When the last limit was set, by the fleet's own clock: the process answers the poll only
        # between its agents' steps, and reading thousands of simulated GPUs after a curtailment
        # delays its answer by up to seconds. Where it does not export that time, when the poll
        # saw it.
        last = agent.last_change_at()
        result["agents_react_seen_s"] = round(applied_at - t, 3)
        result["agents_react_s"] = round(last - wall, 3) if last > wall else result["agents_react_seen_s"]
        # How the limits arrived: a long tail and a late start read differently.
        marks = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120)
        result["agents_applied_by_s"] = {
            str(m): max((n for s, n in progress if s <= m), default=0)
            for m in marks if m <= result["agents_react_s"] + 1}
        result["agents_phase_react_s"] = round(watcher.result() - t, 3)
        if profiler:
            profiler.finish()
        got = agent.changes()
        result["agents_changed"] = changed
        result["agents_from_slice"] = int(got["slice"] - before["slice"])
        result["agents_from_rack"] = int(got["rack"] - before["rack"])
        result["agents_from_gpunode"] = int(got["gpunode"] - before["gpunode"])
        log(f"agents: {changed} new limits applied {result['agents_react_s']:.2f}s after the spec change "
            f"(seen by the poll after {result['agents_react_seen_s']:.2f}s; "
            f"{result['agents_from_slice']} from slices), slices correct after "
            f"{result['agents_phase_react_s']:.2f}s")
        budget = after[CLUSTER, ns, name]["power"]["budgetWatts"]
        confirmed_at = wait_until(lambda: confirmed(budget) == site.nodes, 1800, "every node confirmed again")
        result["confirm_s"] = round(confirmed_at - t, 3)
        # Correct as well as fast: every node enforces the limit the core assigned, as the operator
        # reads it (its GPUNode's report, or Prometheus's scrape of its target).
        want = {k[2]: v["powerLimitWatts"] for k, v in after.items() if k[0] == NODE}
        enforced = await fleet.enforced(client, ns)
        bad = [n for n, w in want.items() if enforced.get(n) != w]
        if bad:
            raise SystemExit(f"{len(bad)} agents enforce another limit, e.g. "
                             f"{[(n, enforced.get(n), want[n]) for n in bad[:3]]}")
        log(f"agents: every node confirmed {result['confirm_s']:.1f}s after the spec change")
    finally:
        if op is not None:
            with suppress(Exception):
                op.stop()
        fleet.stop()


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"nodes": args.nodes, "tree": args.tree,
                              "telemetry": telemetry_mode(args.telemetry, args.nodes),
                              "load_avg_start": round(os.getloadavg()[0], 2)}
    logdir = Path(tempfile.mkdtemp(prefix="sg-bench-"))
    profiler = Profiler(Path(args.profile)) if args.profile else None
    with LocalControlPlane(extra_apiserver_args=["--profiling=true"] if profiler else ()) as cp:
        cp.apply_crds()
        client = KubeClient.from_kubeconfig(str(cp.kubeconfig), max_connections=CONCURRENCY)
        servers = cp.server_pids()  # where the CPU goes: API server, etcd, client/operator
        api_pid, etcd_pid = servers["kube-apiserver"], servers["etcd"]

        def rest() -> None:
            quiesce([api_pid, etcd_pid])

        try:
            # Idle operator first: the memory figure is what the site adds on top of it.
            idle = OperatorProcess(cp.kubeconfig, ["stargate-idle"], logdir, "idle")
            wait_healthy(idle)
            time.sleep(1.0)
            idle_rss, _ = idle.rss_mb()
            idle.stop()

            site = Site(client, "stargate-bench", args.nodes, args.seed, tree=args.tree)
            t0 = time.perf_counter()
            await site.create()
            objects = await site.objects()
            log(f"created {len(objects)} objects in {time.perf_counter() - t0:.1f}s")
            expected = site.expected(objects)
            # The tight loop writes the statuses of the objects present; the operator also creates
            # the PowerLimitSlices (an apply each) and then writes their statuses: 2 writes a slice
            # more than the baseline, counted in what the operator is waited for.
            present = {key(o) for o in objects}
            slices = sum(1 for k in expected if k not in present and k[0] == SLICE)
            cold_patches = {k: merge_patch(None, v) for k, v in expected.items() if k in present}
            changed = sum(1 for p in cold_patches.values() if p) + 2 * slices

            # 1. Baseline: the same writes in a tight loop, then reset.
            rest()
            cpu = Cpu(api_pid, etcd_pid)
            if profiler:
                profiler.apiserver(cp, "baseline", max(2, args.nodes // 700))
            base_s = await site.write(cold_patches)
            result["baseline_cpu_s"] = cpu.used()
            result["baseline_cores"] = cores(result["baseline_cpu_s"], base_s)
            log(f"baseline: {changed} status writes in {base_s:.2f}s ({changed / base_s:.0f}/s)")
            await site.write(dict.fromkeys(cold_patches))
            # 2. Cold start.
            rest()
            op = OperatorProcess(cp.kubeconfig, [site.namespace], logdir, "main")
            cpu = Cpu(api_pid, etcd_pid, op.proc.pid)
            if profiler:
                profiler.apiserver(cp, "cold", max(2, int(base_s)))
                profiler.operator(op.proc.pid, "cold", max(2, int(base_s)))
            done_at, writes = op.wait_writes(changed)
            if profiler:
                profiler.finish()
            cold_total = done_at - op.started  # from the process start, imports included
            result["cold_cpu_s"] = cpu.used("operator")
            result["cold_cores"] = cores(result["cold_cpu_s"], cold_total)
            bad = await site.wrong(expected)
            if bad:
                raise SystemExit(f"cold start left {len(bad)} wrong statuses, e.g. {bad[:3]}")
            result["cold_s"] = round(cold_total, 3)
            # Where the time goes: start-up (imports, list, first computation) against the
            # stream of writes, whose rate compares with the tight loop's.
            result["cold_first_write_s"] = round(op.first_write_at - op.started, 3)
            result["cold_write_rate"] = round(writes / max(1e-9, done_at - op.first_write_at), 1)
            result["write_ratio"] = round(writes / changed, 3)
            _, peak = op.rss_mb()
            result["rss_mb_per_1k_nodes"] = round((peak - idle_rss) / (args.nodes / 1000), 2)
            t = time.perf_counter()
            httpx.get(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=30)
            result["scrape_ms"] = round((time.perf_counter() - t) * 1000, 1)
            log(f"cold start: {writes:.0f} writes in {cold_total:.2f}s (first after "
                f"{result['cold_first_write_s']:.2f}s, then {result['cold_write_rate']:.0f}/s); "
                f"peak RSS {peak:.0f} MB (idle {idle_rss:.0f} MB)")
            op.stop()
            base_s, base2_s = await baseline_again(site, dict.fromkeys(cold_patches), cold_patches, base_s,
                                                   rest, result, "baseline")
            result["baseline_write_rate"] = round(changed / base_s, 1)
            result["cold_ratio"] = round(cold_total / base_s, 3)
            log(f"baseline again: {base2_s:.2f}s; cold_ratio {result['cold_ratio']}")

            # 3. Curtailment: baseline of the same patches, reverted, then the operator.
            objects = await site.objects()
            cluster, curtailed_objects = curtailed(objects)
            after = site.expected(curtailed_objects)
            current = {key(o): o.get("status") for o in objects}
            curt_patches = {k: p for k, v in after.items() if (p := merge_patch(current.get(k), v))}
            revert = {k: p for k, v in after.items() if (p := merge_patch(v, {
                f: x for f, x in (current.get(k) or {}).items() if f != "telemetry"}))}
            rest()
            curt_base = await site.write(curt_patches)
            await site.write(revert)
            log(f"curtail baseline: {len(curt_patches)} writes in {curt_base:.2f}s")
            op = OperatorProcess(cp.kubeconfig, [site.namespace], logdir, "curtail")
            wait_healthy(op)
            wait_reconciled(op)
            rest()
            watcher = SliceWatcher(cp.kubeconfig, site.namespace, lowering(objects, after)).start()
            if profiler:  # the fast path: the recomputation and the racks' writes
                seconds = max(3, args.nodes // 2000)
                profiler.apiserver(cp, "curtail", seconds)
                profiler.operator(op.proc.pid, "curtail", seconds)
            before = op.writes()
            t = time.perf_counter()
            await set_curtailment(client, site.namespace, cluster["metadata"]["name"], CURTAILMENT)
            done_at, w = op.wait_writes(before + len(curt_patches))
            curt_s = done_at - t  # from the spec change
            result["react_s"] = round(watcher.result() - t, 3)
            if profiler:
                profiler.finish()
            bad = await site.wrong(after, only_kind=NODE) + await site.wrong(after, only_kind=RACK)
            if bad:
                raise SystemExit(f"curtailment left {len(bad)} wrong statuses, e.g. {bad[:3]}")
            result["curtail_s"] = round(curt_s, 3)
            result["curtail_first_write_s"] = round(op.first_write_at - t, 3)
            result["curtail_writes"] = int(w - before)
            result["curtail_changed"] = len(curt_patches)
            reacts = [result["react_s"]]
            for _ in range(2):  # react_s again, twice: the median of three is the figure
                reacts.append(await react_again(cp, client, site, op, cluster["metadata"]["name"], rest))
                log(f"curtailment again: every slice's lowering after {reacts[-1]:.2f}s")
            result["react_runs_s"] = reacts
            result["react_s"] = sorted(reacts)[1]
            op.stop()
            curt_base, curt_base2 = await baseline_again(site, revert, curt_patches, curt_base, rest,
                                                         result, "curtail_baseline")
            result["curtail_ratio"] = round(curt_s / curt_base, 3)
            log(f"curtail: {w - before:.0f} writes in {curt_s:.2f}s (first after "
                f"{result['curtail_first_write_s']:.2f}s, every slice's lowering after "
                f"{result['react_s']:.2f}s); baseline again {curt_base2:.2f}s; "
                f"curtail_ratio {result['curtail_ratio']}")
            op = OperatorProcess(cp.kubeconfig, [site.namespace], logdir, "rack")
            wait_healthy(op)
            wait_reconciled(op)

            # 4. One rack changes.
            objects = await site.objects()
            rack = next(o for o in objects if o["kind"] == RACK)
            new_prio = 1000 if rack["spec"].get("priority", 500) != 1000 else 0
            changed_objs = [{**o, "spec": {**o["spec"], "priority": new_prio}} if o is rack else o
                            for o in objects]
            after_rack = site.expected(changed_objs)
            current = {key(o): o.get("status") for o in objects}
            rack_changes = sum(1 for k, v in after_rack.items() if merge_patch(current.get(k), v))
            rest()
            name = rack["metadata"]["name"]
            rack_path = f"{GROUP_PATH}/namespaces/{site.namespace}/{kinds.RACK.plural}/{name}"
            before = op.writes()
            t = time.perf_counter()
            await client.request("PATCH", rack_path, verb="patch", body={"spec": {"priority": new_prio}},
                                 content_type="application/merge-patch+json")
            done_at, w = op.wait_writes(before + rack_changes, settle=0.5)
            rack_s = done_at - t
            result["rack_s"] = round(rack_s, 3)
            result["rack_writes"] = int(w - before)
            result["rack_changed"] = rack_changes
            op.stop()

            # 5. The agents: the enforcement path end to end.
            if not args.no_agents:
                await agents_phase(cp, client, site, logdir, rest, result, profiler, args.nodes,
                                   result["telemetry"])

            if args.shards:
                result.update(await shards(cp, client, args, logdir, rest))
        finally:
            await client.aclose()
    result["load_avg_end"] = round(os.getloadavg()[0], 2)
    return result


async def shards(cp: LocalControlPlane, client: KubeClient, args: argparse.Namespace,
                 logdir: Path, rest: Callable[[], None]) -> dict[str, Any]:
    """Two sites of half the nodes each, three ways, each against its own tight-loop baseline:
    one operator on one site; one operator on both; two operators, one site each, at once.

    The baselines say what the one API server can do for the same writes, so the ratios compare
    the operators' share of the time, whatever the machine: two shards do as well as one when
    their ratio matches the single operator's."""
    half = args.nodes // 2
    # A client (and pool of connections) per site, as two operators have: the baseline of both
    # sites then writes with the same concurrency as the two shards.
    second = KubeClient.from_kubeconfig(str(cp.kubeconfig), max_connections=CONCURRENCY)
    sites = [Site(c, f"stargate-shard-{i}", half, args.seed + i) for i, c in enumerate([client, second])]
    for s in sites:
        await s.create()
    expected = [s.expected(await s.objects()) for s in sites]
    patches = [{k: merge_patch(None, v) for k, v in e.items()} for e in expected]
    counts = [sum(1 for p in ps.values() if p) for ps in patches]

    async def reset() -> None:
        await asyncio.gather(*(s.write(dict.fromkeys(e)) for s, e in zip(sites, expected, strict=True)))
        rest()

    async def baseline(which: list[int]) -> float:
        rest()
        t = time.perf_counter()
        await asyncio.gather(*(sites[i].write(patches[i]) for i in which))
        took = time.perf_counter() - t
        await reset()
        return took

    def operators(groups: list[list[int]], tag: str) -> float:
        ops = [OperatorProcess(cp.kubeconfig, [sites[i].namespace for i in g], logdir, f"{tag}-{n}")
               for n, g in enumerate(groups)]
        start = min(op.started for op in ops)
        finished = [t for t, _ in wait_all_writes(ops, [sum(counts[i] for i in g) for g in groups])]
        for op in ops:
            op.stop()
        return max(finished) - start

    try:
        return await _shard_phases(sites, counts, baseline, reset, operators)
    finally:
        await second.aclose()


async def _shard_phases(sites: list[Site], counts: list[int],
                        baseline: Callable[[list[int]], Awaitable[float]],
                        reset: Callable[[], Awaitable[None]],
                        operators: Callable[[list[list[int]], str], float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Baselines before and after, averaged, as for the cold start (the API server drifts).
    base_one = await baseline([0])
    one_s = operators([[0]], "shard-one")
    await reset()
    base_one = (base_one + await baseline([0])) / 2
    base_both = await baseline([0, 1])
    both_one_op = operators([[0, 1]], "shard-both")
    await reset()
    two_s = operators([[0], [1]], "shard-two")
    await reset()
    base_both = (base_both + await baseline([0, 1])) / 2
    out["shard_one_site_s"] = round(one_s, 3)
    out["shard_one_site_ratio"] = round(one_s / base_one, 3)
    out["shard_two_sites_one_operator_s"] = round(both_one_op, 3)
    out["shard_two_sites_one_operator_ratio"] = round(both_one_op / base_both, 3)
    out["shard_two_sites_two_operators_s"] = round(two_s, 3)
    out["shard_two_sites_two_operators_ratio"] = round(two_s / base_both, 3)
    # The figure that matters for sharding: two shards' ratio over one operator's on one site.
    out["shard_ratio"] = round(out["shard_two_sites_two_operators_ratio"] / out["shard_one_site_ratio"], 3)
    log(f"shards: one site {one_s:.2f}s (baseline {base_one:.2f}s); two sites, one operator "
        f"{both_one_op:.2f}s, two operators {two_s:.2f}s (baseline {base_both:.2f}s)")
    return out


def main() -> int:
    p = parser(__doc__, 1000)
    p.add_argument("--profile", metavar="DIR",
                   help="also profile the baseline, the cold start, the curtailment's first seconds and "
                   "the agents' reaction: the API server's CPU profile (pprof, from its /debug/pprof), "
                   "the operator's and the agent's (py-spy, if installed), with a summary of each in "
                   "DIR/summary.txt")
    p.add_argument("--tree", action="store_true",
                   help="put the site under a 6-level power tree (utility, 2 substations, 8 switchboards, "
                   "40 floor PDUs, 400 RPPs, 100 CDUs: the benchmark tree of fixtures/synth.py)")
    p.add_argument("--no-agents", action="store_true",
                   help="skip phase 5 (one simulated agent per node; minutes at 10,000 nodes)")
    add_telemetry_option(p)
    p.add_argument("--shards", action="store_true",
                   help="also time two sites of half the nodes: one operator on one, one on both, "
                   "and two operators with one site each")
    args = p.parse_args()
    result = asyncio.run(run_bench(args))
    keys = ["nodes", "telemetry", "cold_ratio", "curtail_ratio", "write_ratio", "rss_mb_per_1k_nodes",
            "scrape_ms", "react_s", "agents_react_s"]
    if args.json:
        print(json.dumps(result))
    else:
        print(" ".join(f"{k}={v}" for k, v in result.items() if k not in keys))
        # without --no-agents' figures (agents_react_s) rather than without the summary line
        print(" ".join(f"{k}={result[k]}" for k in keys if k in result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
