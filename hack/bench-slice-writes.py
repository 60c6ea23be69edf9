#!/usr/bin/env python3
"""What one write of a PowerLimitSlice costs the API server, by verb and by size.

On a fresh local control plane (real kube-apiserver + etcd, the CRDs installed), creates
`--slices` PowerLimitSlices of `--entries` nodes each, then rewrites every one of them with new
limits (each entry changes, as in a site-wide curtailment), 8 writes in flight, once per verb in
`--verbs`, `--rounds` times in turn:
- `apply`: server-side apply, how the operator creates a slice;
- `merge`: a JSON merge patch of the spec;
- `put`: an update (PUT) carrying the resourceVersion of the writer's last write, how the operator
  rewrites a slice it holds (no read first).
Prints, per verb, the API server's CPU per write (its /proc figures, the one that counts on a shared
machine) and the writes a second. `--profile DIR` records the API server's CPU profile (Go's pprof)
over the first round of the first verb and writes its summary (DIR/summary.txt).

    .venv/bin/python hack/bench-slice-writes.py [--slices 200] [--entries 500] [--verbs apply,merge,put]
    .venv/bin/python hack/bench-slice-writes.py --entries 1000 --verbs apply --profile /tmp/slices
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib import log
from stargate_operator import kinds
from stargate_operator.client import ApiResource, KubeClient
from stargate_operator.localcp.controlplane import LocalControlPlane

NAMESPACE = "slice-writes"
VERBS = ("apply", "merge", "put")
IN_FLIGHT = 8
FIELD_MANAGER = "bench-slice-writes"


def _entries(value: str) -> int:
    n = int(value)
    if not kinds.MIN_SLICE_SIZE <= n <= kinds.MAX_SLICE_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be {kinds.MIN_SLICE_SIZE}..{kinds.MAX_SLICE_SIZE} (the slice size's range), not {n}")
    return n


def _verbs(value: str) -> list[str]:
    verbs = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in verbs if v not in VERBS]
    if bad or not verbs:
        raise argparse.ArgumentTypeError(f"{', '.join(bad) or 'none'}: choose from {', '.join(VERBS)}")
    return verbs


def spec(entries: int, version: int) -> dict[str, Any]:
    """Every entry different from the last version's, as in a site-wide change."""
    return {"limits": {f"node-{i:06d}": 400 + (version * 7 + i) % 300 for i in range(entries)},
            "revision": version}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    profiler = benchlib.Profiler(Path(args.profile)) if args.profile else None
    with LocalControlPlane(extra_apiserver_args=["--profiling=true"] if profiler else ()) as cp:
        cp.apply_crds()
        client = KubeClient.from_kubeconfig(str(cp.kubeconfig), max_connections=IN_FLIGHT)
        res = ApiResource.of(kinds.POWER_LIMIT_SLICE)
        pid = cp.server_pids()["kube-apiserver"]
        try:
            await client.request("POST", "/api/v1/namespaces", verb="create", body={
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
            names = [f"limits-{i:04d}" for i in range(args.slices)]
            version = 0
            rv: dict[str, str] = {}

            def body(name: str) -> dict[str, Any]:
                return {"apiVersion": kinds.API_VERSION, "kind": kinds.POWER_LIMIT_SLICE.kind,
                        "metadata": {"name": name, "namespace": NAMESPACE},
                        "spec": spec(args.entries, version)}

            async def write(verb: str, name: str) -> None:
                if verb == "apply":
                    got = await client.apply(res, NAMESPACE, name, body(name), field_manager=FIELD_MANAGER,
                                             force=True)
                elif verb == "merge":
                    got = await client.patch(res, NAMESPACE, name, {"spec": body(name)["spec"]})
                else:
                    b = body(name)
                    b["metadata"]["resourceVersion"] = rv[name]
                    got = await client.request("PUT", res.path(NAMESPACE, name), verb="update", body=b)
                rv[name] = got["metadata"]["resourceVersion"]

            async def every(verb: str) -> None:
                gate = asyncio.Semaphore(IN_FLIGHT)

                async def one(name: str) -> None:
                    async with gate:
                        await write(verb, name)
                await asyncio.gather(*(one(n) for n in names))

            log(f"creating {args.slices} slices of {args.entries} entries")
            await every("apply")
            figures: dict[str, list[tuple[float, float]]] = {v: [] for v in args.verbs}
            for rnd in range(args.rounds):
                for verb in args.verbs:
                    version += 1
                    if profiler and rnd == 0 and verb == args.verbs[0]:
                        # about one round: 130 to 170 writes a second of 500 entries here
                        profiler.apiserver(cp, f"{verb}-{args.entries}", max(2, args.slices // 200))
                    cpu0, t0 = benchlib.cpu_seconds(pid), time.perf_counter()
                    await every(verb)
                    wall, cpu = time.perf_counter() - t0, benchlib.cpu_seconds(pid) - cpu0
                    figures[verb].append((cpu / args.slices * 1000, args.slices / wall))
                    log(f"round {rnd + 1} {verb}: {cpu / args.slices * 1000:.1f} ms of API-server CPU "
                        f"a write, {args.slices / wall:.0f} writes/s")
            if profiler:
                profiler.finish()
        finally:
            await client.aclose()
    result: dict[str, Any] = {"slices": args.slices, "entries": args.entries, "rounds": args.rounds}
    for verb, runs in figures.items():
        result[f"{verb}_apiserver_ms"] = round(statistics.median(c for c, _ in runs), 2)
        result[f"{verb}_apiserver_us_per_entry"] = round(
            statistics.median(c for c, _ in runs) * 1000 / args.entries, 1)
        result[f"{verb}_writes_per_s"] = round(statistics.median(w for _, w in runs), 1)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, default=200, help="slices written per round (default 200)")
    p.add_argument("--entries", type=_entries, default=kinds.DEFAULT_SLICE_SIZE,
                   help=f"nodes per slice, {kinds.MIN_SLICE_SIZE}..{kinds.MAX_SLICE_SIZE} (default "
                        f"{kinds.DEFAULT_SLICE_SIZE}, the operator's --slice-size default)")
    p.add_argument("--verbs", type=_verbs, default=list(VERBS),
                   help=f"comma-separated, of {', '.join(VERBS)} (default all)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of every verb, in turn (default 2)")
    p.add_argument("--profile", metavar="DIR", help="record the API server's CPU profile into DIR")
    p.add_argument("--json", action="store_true", help="print one JSON line with the figures")
    args = p.parse_args()
    if args.slices < 1 or args.rounds < 1:
        p.error("--slices and --rounds must be at least 1")
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
    else:
        for verb in args.verbs:
            print(f"{verb}: {result[f'{verb}_apiserver_ms']} ms of API-server CPU a write "
                  f"({result[f'{verb}_apiserver_us_per_entry']} us an entry), "
                  f"{result[f'{verb}_writes_per_s']} writes/s")


if __name__ == "__main__":
    main()
