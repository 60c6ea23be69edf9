#!/usr/bin/env python3
"""How many scrapes a second the agent's HTTP server answers for a simulated fleet.

Serves a fleet of `--nodes` simulated nodes (8 GPUs each, every node read once) with
agent/exposition.py's `serve` in a process of its own, then sends `--requests` GETs of the nodes'
own pages (/nodes/<GPUNode>/metrics, round robin) over `--connections` keep-alive connections
from this process, as Prometheus scrapes a simulated fleet's targets. Prints the requests a second
and the server's CPU per request (its /proc figures: the one to compare on a shared machine).

`--against REV` serves the same fleet with exposition.py as it is at git revision REV too, in
alternate rounds (`--rounds`), so that the two are compared under the same load of the machine.

    .venv/bin/python hack/bench-exposition.py [--nodes 1000] [--requests 10000] [--against HEAD~1]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import benchlib
from stargate_operator.agent.backend import GPUReading, NodeReading

ROOT = Path(__file__).resolve().parent.parent
MODULE = "operator/src/stargate_operator/agent/exposition.py"


class Node:
    """What the exposition reads of an agent (exposition.Figures), one reading of 8 GPUs."""

    def __init__(self, name: str, i: int) -> None:
        self.name = name
        self.last_peak_watts: float | None = 9000.0 + i
        self.last_reading: NodeReading | None = NodeReading(
            gpus=tuple(GPUReading(index=g, power_watts=700.0 + g + i % 50, memory_used_bytes=10**9,
                                  enforced_limit_watts=1000.0) for g in range(8)),
            other_power_watts=1500.0, observed_at=datetime.now(UTC))

    def node_watts(self, reading: NodeReading) -> float:
        return reading.gpu_power_watts + (reading.other_power_watts or 0.0)


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"exposition_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def serve_forever(path: Path, nodes: int, port: int) -> None:
    """The server side: `serve` of the module at `path`, until killed."""
    module = load(path)
    fleet = {f"node-{i:06d}": Node(f"node-{i:06d}", i) for i in range(nodes)}

    async def fleet_page() -> bytes:
        return b"# the fleet's page is not measured here\n"

    def one(name: str) -> bytes | None:
        node = fleet.get(name)
        return module.node_page(node) if node is not None else None

    await module.serve(fleet_page, one, "127.0.0.1", port)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def scrape(port: int, nodes: int, requests: int, connections: int) -> float:
    """Seconds for `requests` GETs over `connections` keep-alive connections (a minimal HTTP/1.1
    client on raw streams, so that the client costs less than the server it measures)."""
    paths = [f"/nodes/node-{i:06d}/metrics" for i in range(nodes)]
    share = [requests // connections + (1 if c < requests % connections else 0) for c in range(connections)]

    async def client(c: int, n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for k in range(n):
                path = paths[(c + k * connections) % nodes]
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"{path}: {head[:40]!r}")
                length = next(int(h.split(b":", 1)[1]) for h in head.split(b"\r\n")
                              if h.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
        finally:
            writer.close()

    t = time.perf_counter()
    await asyncio.gather(*(client(c, n) for c, n in enumerate(share)))
    return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000, help="simulated nodes served (default 1000)")
    p.add_argument("--requests", type=int, default=10_000, help="GETs per round (default 10000)")
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections (default 16)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per server (default 3)")
    p.add_argument("--against", metavar="REV", help="also serve exposition.py as at git revision REV")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--serve", metavar="PATH", help=argparse.SUPPRESS)  # the server process
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve_forever(Path(args.serve), args.nodes, args.port))
        return 0

    modules = {"now": ROOT / MODULE}
    tmp = Path(tempfile.mkdtemp(prefix="sg-bench-exposition-"))
    if args.against:
        old = tmp / "exposition_against.py"
        old.write_bytes(subprocess.run(["git", "-C", str(ROOT), "show", f"{args.against}:{MODULE}"],
                                       check=True, capture_output=True).stdout)
        modules[args.against] = old
    servers: dict[str, tuple[subprocess.Popen[str], int]] = {}
    result: dict[str, object] = {"nodes": args.nodes, "requests": args.requests,
                                 "connections": args.connections,
                                 "load_avg_start": round(os.getloadavg()[0], 2)}
    try:
        for name, path in modules.items():
            port = benchlib.free_port()
            cmd = [sys.executable, __file__, "--serve", str(path), "--nodes", str(args.nodes),
                   "--port", str(port)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit(f"the server of {path} did not start")
            servers[name] = (proc, port)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, (proc, port) in servers.items():
                cpu = benchlib.cpu_seconds(proc.pid)
                took = asyncio.run(scrape(port, args.nodes, args.requests, args.connections))
                used = benchlib.cpu_seconds(proc.pid) - cpu
                runs[name].append((args.requests / took, 1e6 * used / args.requests))
                benchlib.log(f"{name}: {args.requests / took:.0f} requests/s, "
                             f"{1e6 * used / args.requests:.0f} us of server CPU a request")
        for name, rs in runs.items():
            result[f"{name}_requests_per_s"] = round(statistics.median(r for r, _ in rs))
            result[f"{name}_cpu_us_per_request"] = round(statistics.median(c for _, c in rs), 1)
    finally:
        for proc, _ in servers.values():
            benchlib.stop_group(proc, 5)
    result["load_avg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result) if args.json else " ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
