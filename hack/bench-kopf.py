#!/usr/bin/env python3
"""kopf's per-object handlers against the engine: the same site, ingested both ways, timed.

  hack/bench-kopf.py                       # 1,000 and 10,000 nodes
  hack/bench-kopf.py --nodes 1000 --json   # one size, one JSON line

On a fresh local control plane (real kube-apiserver + etcd), one namespace per contender holds the
same synthetic site (benchlib's, as hack/bench.py's), created before anything is timed. Then, in this process:

1. kopf, written the idiomatic way: per kind, an `@kopf.index` that keeps every object's body
   by namespace and an `@kopf.on.event` that, after each event, counts what the indices hold. Once
   they hold the whole site (the full in-memory view), that handler plans the namespace with the
   core (`plan_namespace`, the engine's planner) and writes the StargateCluster's status: the first
   correct status. kopf's settings are its defaults except what is printed (batching: worker
   limit, idle timeout, batch window; no peering, no posting of log lines as Events).
2. The engine (controller/engine.py) as `stargate-operator run` runs it, on its own namespace: the
   full view is its `synced` (every kind listed), the first correct status its first status write
   (every write comes from a plan over the full view; the site's status is checked at the end).

Both times count from the contender's start (kopf.operator() or Engine.run()), in the same
process, one after the other (kopf first). The site's status each wrote is compared with the
core's result. The last line printed is `key=value` pairs (or JSON with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import kopf

from benchlib import CONCURRENCY, STALE_AFTER, Site, log
from stargate_operator import kinds
from stargate_operator.client import ApiResource, KubeClient
from stargate_operator.controller.engine import Engine, EngineSettings
from stargate_operator.core import CoreSettings, plan_namespace
from stargate_operator.localcp.controlplane import LocalControlPlane
from stargate_operator.process import gc_paused

KOPF_VERSION = version("kopf")
SITE = kinds.STARGATE_CLUSTER


def expected_site_status(objects: list[dict[str, Any]], namespace: str) -> dict[str, Any]:
    with gc_paused():  # as the engine plans
        plan = plan_namespace(objects, datetime.now(UTC), CoreSettings(STALE_AFTER))
    site = next(o for o in objects if o["kind"] == SITE.kind)
    return plan.statuses[SITE.kind, namespace, site["metadata"]["name"]]


def same(written: Mapping[str, Any] | None, want: Mapping[str, Any]) -> bool:
    """The written status is the core's, but for the conditions' transition times (set at write)."""
    def strip(s: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in s.items() if k != "conditions"}
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                             for c in s.get("conditions", [])]
        return out
    return written is not None and strip(written) == strip(want)


# -- kopf, the idiomatic way -----------------------------------------------------------------------

def kopf_registry(namespace: str, total: int, kubeconfig: str, marks: dict[str, float],
                  done: threading.Event) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    index_ids = [f"by_namespace_{spec.plural}" for spec in kinds.KINDS]

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False
        settings.watching.server_timeout = 600
        log(f"kopf {KOPF_VERSION}: batching worker_limit={settings.batching.worker_limit} "
            f"idle_timeout={settings.batching.idle_timeout}s batch_window={settings.batching.batch_window}s; "
            "posting off, standalone (no peering)")

    writing = asyncio.Lock()
    client_box: list[KubeClient] = []

    async def seen(**kw: Any) -> None:
        # After every event: does the view hold the whole site? (len of each kind's store)
        if "view" in marks:
            return
        indices = [kw[i] for i in index_ids]
        held = sum(len(idx.get(namespace, ())) for idx in indices)
        marks["held"] = max(held, marks.get("held", 0))
        if held < total:
            return
        marks["view"] = time.perf_counter()
        objects = [dict(obj) for idx in indices for obj in idx.get(namespace, ())]
        status = expected_site_status(objects, namespace)
        site = next(o for o in objects if o["kind"] == SITE.kind)
        async with writing:
            if not client_box:
                client_box.append(KubeClient.from_kubeconfig(kubeconfig))
            name = site["metadata"]["name"]
            await client_box[0].patch_status(ApiResource.of(SITE), namespace, name, status)
        marks["status"] = time.perf_counter()
        done.set()

    for spec, index_id in zip(kinds.KINDS, index_ids, strict=True):
        kind = spec.kind

        def index(body: kopf.Body, namespace: str | None, kind: str = kind, **_: Any) -> dict[str, Any]:
            return {namespace or "": {**body, "kind": kind}}

        kopf.index(kinds.GROUP, kinds.VERSION, spec.plural, id=index_id, registry=registry)(index)
        kopf.on.event(kinds.GROUP, kinds.VERSION, spec.plural, id=f"seen_{spec.plural}",
                      registry=registry)(seen)

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        for c in client_box:
            await c.aclose()

    return registry


def run_kopf(namespace: str, total: int, kubeconfig: str, timeout: float) -> dict[str, float | None]:
    """Times from kopf.operator()'s start; `held`: the most objects an event handler saw indexed
    (kopf runs the handlers only once the indices are filled, so 0 until then)."""
    marks: dict[str, float] = {}
    done, stop = threading.Event(), threading.Event()
    registry = kopf_registry(namespace, total, kubeconfig, marks, done)

    def main() -> None:
        asyncio.run(kopf.operator(registry=registry, namespaces=[namespace], standalone=True,
                                  stop_flag=stop))

    t0 = time.perf_counter()
    thread = threading.Thread(target=main, name="kopf", daemon=True)
    thread.start()
    finished = done.wait(timeout)
    stop.set()
    thread.join(30)
    if not finished:
        log(f"kopf: no full view within {timeout:.0f}s (its handlers had seen {marks.get('held', 0):.0f} "
            f"of {total} objects indexed)")
    return {"view_s": marks["view"] - t0 if "view" in marks else None,
            "status_s": marks["status"] - t0 if "status" in marks else None,
            "held": marks.get("held", 0)}


# -- the engine ------------------------------------------------------------------------------------

async def run_engine(kubeconfig: str, namespace: str, timeout: float) -> dict[str, float | None]:
    settings = EngineSettings(namespaces=(namespace,), stale_after_seconds=STALE_AFTER)
    client = KubeClient.from_kubeconfig(kubeconfig, max_connections=CONCURRENCY + 16)
    t0 = time.perf_counter()
    engine = Engine(client, settings)
    engine.active.set()
    task = asyncio.create_task(engine.run())
    view = status = None
    try:
        deadline = t0 + timeout
        while status is None and time.perf_counter() < deadline:
            now = time.perf_counter()
            if view is None and engine.synced:
                view = now - t0
            if engine.stats.writes > 0:
                status = now - t0
            await asyncio.sleep(0.002)
        # Let it finish the site (the status check below reads the site's status).
        last, quiet_since = engine.stats.writes, time.perf_counter()
        while time.perf_counter() - quiet_since < 2.0 and time.perf_counter() < deadline:
            await asyncio.sleep(0.2)
            if engine.stats.writes != last:
                last, quiet_since = engine.stats.writes, time.perf_counter()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await client.aclose()
    return {"view_s": view, "status_s": status}


async def measure(cp: LocalControlPlane, nodes: int, seed: int, timeout: float) -> dict[str, Any]:
    kubeconfig = str(cp.kubeconfig)
    client = KubeClient.from_kubeconfig(kubeconfig, max_connections=CONCURRENCY)
    ns_kopf, ns_engine = f"kopf-{nodes}", f"engine-{nodes}"
    try:
        t0 = time.perf_counter()
        sites = [Site(client, ns, nodes, seed) for ns in (ns_kopf, ns_engine)]
        for site in sites:
            await site.create()
        objects = [await site.objects() for site in sites]
        total = len(objects[0])
        log(f"{nodes} nodes: created 2 x {total} objects in {time.perf_counter() - t0:.1f}s")
        want_kopf = expected_site_status(objects[0], ns_kopf)
        want_engine = expected_site_status(objects[1], ns_engine)

        kopf_t = await asyncio.to_thread(run_kopf, ns_kopf, total, kubeconfig, timeout)
        engine_t = await run_engine(kubeconfig, ns_engine, timeout)

        async def written(ns: str) -> dict[str, Any] | None:
            items, _ = await client.list(ApiResource.of(SITE), ns)
            got: dict[str, Any] | None = items[0].get("status")
            return got

        kopf_ok = same(await written(ns_kopf), want_kopf)
        engine_ok = same(await written(ns_engine), want_engine)
    finally:
        await client.aclose()
    out: dict[str, Any] = {"nodes": nodes, "objects": total, "kopf_indexed_seen": kopf_t.get("held")}
    for who, t, ok in (("kopf", kopf_t, kopf_ok), ("engine", engine_t, engine_ok)):
        out[f"{who}_view_s"] = None if t["view_s"] is None else round(t["view_s"], 3)
        out[f"{who}_status_s"] = None if t["status_s"] is None else round(t["status_s"], 3)
        out[f"{who}_status_correct"] = ok
    if out["kopf_view_s"] and out["engine_view_s"]:
        out["view_ratio"] = round(out["kopf_view_s"] / out["engine_view_s"], 2)
    if out["kopf_status_s"] and out["engine_status_s"]:
        out["status_ratio"] = round(out["kopf_status_s"] / out["engine_status_s"], 2)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, action="append",
                   help="GPU nodes in the site; repeat for several sizes (default: 1000 and 10000)")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated site (default 7)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds each contender may take to reach its first status (default 900)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = p.parse_args()
    sizes = args.nodes or [1000, 10000]
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kopf").setLevel(logging.ERROR)  # its per-object lines are not the figure
    results = []
    with LocalControlPlane() as cp:
        cp.apply_crds()
        os.environ["KUBECONFIG"] = str(cp.kubeconfig)  # kopf's login reads it
        for n in sizes:
            r = asyncio.run(measure(cp, n, args.seed, args.timeout))
            results.append(r)
            log(f"{n} nodes: full view kopf {r['kopf_view_s']} s, engine {r['engine_view_s']} s; "
                f"first correct status kopf {r['kopf_status_s']} s, engine {r['engine_status_s']} s "
                f"(statuses correct: kopf {r['kopf_status_correct']}, engine {r['engine_status_correct']})")
            ratio = r.get("status_ratio")
            if ratio is not None and ratio <= 1.5:
                log(f"{n} nodes: kopf's handlers come within 1.5x of the engine ({ratio}x)")
    summary = {"kopf_version": KOPF_VERSION, "results": results}
    if args.json:
        print(json.dumps(summary, separators=(",", ":")))
    else:
        pairs = [f"kopf_version={KOPF_VERSION}"]
        for r in results:
            pairs += [f"{k}@{r['nodes']}={v}" for k, v in r.items() if k != "nodes"]
        print(" ".join(pairs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
