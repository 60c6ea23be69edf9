#!/usr/bin/env python3
"""The operator at scale, against the limit of the API server it runs on, measured in one run.

  hack/bench.py --nodes 1000           # quick mode, under two minutes
  hack/bench.py --nodes 10000 --json
  hack/bench.py --nodes 10000 --shards # also: two sites of half the nodes, one or two operators

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
   from a watch on the slices.
4. rack: one rack's priority changes; time until its nodes are correct.
5. agents: one `agent --simulate --all` process for the whole site (interval an hour, so that
   only the reports that follow a limit change write), the curtailment lifted and everything
   settled (the agents' reports confirmed by the operator), then the 20 % curtailment again:
   `agents_react_s` until every agent has set its new limit on its (simulated) GPUs, read from
   the agent's own counter (`--metrics-port`), `agents_phase_react_s` the slices' figure with the
   agents running, and `confirm_s` until the operator counts every node confirmed
   (PowerLimitApplied, from the agents' reports of telemetry.enforcedLimitWatts).
5. with --shards: two sites of half the nodes each; one operator on one site, one operator on
   both, and two operators (one site each, at once), each against a tight loop writing the
   same statuses at the same time (shard_ratio: two shards' ratio over one operator's).

Every timed phase starts with the API server and etcd at rest, and a phase that starts a new
operator before its change waits for its first recomputation. Convergence is read from the
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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from stargate_operator import kinds
from stargate_operator.core import CoreSettings
from stargate_operator.core.sliceplan import CampusSettings, plan_campus
from stargate_operator.core.statusdiff import merge_patch
from stargate_operator.fixtures.synth import synthetic_site
from stargate_operator.kube import GROUP_PATH, KubeClient
from stargate_operator.localcp.controlplane import LocalControlPlane

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 32  # the operator's default --write-concurrency
STALE_AFTER = 10**6  # no telemetry in the bench site; keep time out of the results
TIME_FIELDS = ("lastTransitionTime", "boundAt")


# One keep-alive client for all polling: `httpx.get` builds a client, and with it a TLS context
# from the CA bundle, on every call (about 20 ms of CPU). Twenty polls a second made the benchmark
# itself take 0.4 cores from the machine it measures (cold start 1.37 against 1.30 at 1,000 nodes).
POLL = httpx.Client(verify=False)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def strip_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_times(v) for k, v in value.items() if k not in TIME_FIELDS}
    if isinstance(value, list):
        return [strip_times(v) for v in value]
    return value


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])


CLUSTER, RACK, NODE = kinds.STARGATE_CLUSTER.kind, kinds.RACK.kind, kinds.GPU_NODE.kind
CURTAILMENT = {"percent": 20, "reason": "bench"}  # what every curtailment phase asks of the site


def curtailed(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The site's StargateCluster, and the site's objects as they are once CURTAILMENT is in its
    spec (what the core is given to compute the expected statuses)."""
    cluster = next(o for o in objects if o["kind"] == CLUSTER)
    return cluster, [{**o, "spec": {**o["spec"], "power": {**o["spec"]["power"], "curtailment": CURTAILMENT}}}
                     if o is cluster else o for o in objects]


async def set_curtailment(client: KubeClient, namespace: str, name: str,
                          curtailment: Mapping[str, Any] | None) -> None:
    """The timed change: the StargateCluster's spec.power.curtailment, in one merge patch (None
    removes it)."""
    await client.request(
        "PATCH", f"{GROUP_PATH}/namespaces/{namespace}/{kinds.STARGATE_CLUSTER.plural}/{name}", verb="patch",
        body={"spec": {"power": {"curtailment": curtailment}}}, content_type="application/merge-patch+json")


async def bounded(jobs: Iterable[Callable[[], Awaitable[Any]]], limit: int = CONCURRENCY) -> None:
    sem = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> None:
        async with sem:
            await job()

    await asyncio.gather(*(one(j) for j in jobs))


class Site:
    def __init__(self, client: KubeClient, namespace: str, nodes: int, seed: int, tree: bool = False) -> None:
        self.client = client
        self.namespace = namespace
        self.nodes = nodes
        self.seed = seed
        self.tree = tree

    async def create(self) -> None:
        objs = synthetic_site(self.nodes, self.seed, self.namespace, now=datetime.now(UTC), tree=self.tree)
        await self.client.request("POST", "/api/v1/namespaces", verb="create",
                                  body={"apiVersion": "v1", "kind": "Namespace",
                                        "metadata": {"name": self.namespace}})
        bodies = []
        for o in objs:
            meta = {"name": o["metadata"]["name"], "namespace": self.namespace}
            bodies.append({"apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": meta,
                           "spec": o["spec"]})

        def post(b: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
            path = f"{GROUP_PATH}/namespaces/{self.namespace}/{kinds.plural_of(b['kind'])}"
            return lambda: self.client.request("POST", path, verb="create", body=b)

        await bounded(post(b) for b in bodies)

    async def objects(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for plural in (k.plural for k in kinds.KINDS):
            items, _ = await self.client.list(plural, self.namespace)
            out += items
        return out

    def expected(self, objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
        plan = plan_campus(objects, datetime.now(UTC),
                           CampusSettings(core=CoreSettings(stale_after_seconds=STALE_AFTER)))
        return dict(plan.statuses)

    async def write(self, patches: Mapping[tuple[str, str, str], dict[str, Any] | None]) -> float:
        """Write status patches in a tight loop; seconds taken."""

        def job(k: tuple[str, str, str], p: dict[str, Any] | None) -> Callable[[], Awaitable[Any]]:
            kind, ns, name = k
            if p is None:  # reset the whole status
                path = f"{GROUP_PATH}/namespaces/{ns}/{kinds.plural_of(kind)}/{name}/status"
                return lambda: self.client.request("PATCH", path, verb="patch", body={"status": None},
                                                   content_type="application/merge-patch+json")
            return lambda: self.client.patch_status(kinds.plural_of(kind), ns, name, p)

        t0 = time.perf_counter()
        await bounded(job(k, p) for k, p in patches.items())
        return time.perf_counter() - t0

    async def wrong(self, expected: dict[tuple[str, str, str], dict[str, Any]],
                    only_kind: str | None = None) -> list[tuple[str, str, str]]:
        objs = await self.objects()
        bad = []
        for o in objs:
            k = key(o)
            if only_kind and k[0] != only_kind:
                continue
            want = expected.get(k)
            if want is None:
                continue
            have = {f: v for f, v in (o.get("status") or {}).items() if f != "telemetry"}
            if strip_times(have) != strip_times(want):
                bad.append(k)
        return bad


class OperatorProcess:
    def __init__(self, kubeconfig: Path, namespaces: list[str], logdir: Path, tag: str) -> None:
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.log_path = logdir / f"operator-{tag}.log"
        cmd = [sys.executable, "-m", "stargate_operator.cli", "run",
               "--metrics-port", str(self.metrics_port),
               "--metrics-addr", "127.0.0.1", "--health-port", str(self.health_port),
               "--stale-after", str(STALE_AFTER),
               "--log-level", os.environ.get("BENCH_OPERATOR_LOG_LEVEL", "WARNING")]
        for ns in namespaces:
            cmd += ["--namespace", ns]
        self.started = time.perf_counter()
        self.first_write_at = 0.0
        self.proc = subprocess.Popen(cmd, env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                                     stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def metric(self, name: str, but: str | None = None) -> float:
        """The sum of the samples whose line starts with `name` (but not with `but`)."""
        # The health-only page: polling the full page would make the operator render every site
        # figure twenty times a second, and the benchmark would measure its own polling.
        text = POLL.get(f"http://127.0.0.1:{self.metrics_port}/metrics/operator", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not (but and line.startswith(but)):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def writes(self) -> float:
        try:  # one page per poll
            total = 'stargate_api_writes_total{kind="'
            return self.metric(total, but=total + 'Event"')
        except httpx.HTTPError:
            return -1.0

    def rss_mb(self) -> tuple[float, float]:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        vals = {ln.split(":")[0]: int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("Vm")}
        return vals.get("VmRSS", 0) / 1024, vals.get("VmHWM", 0) / 1024

    def wait_writes(self, at_least: float, settle: float = 1.0, timeout: float = 900) -> tuple[float, float]:
        """Poll the write counter until it reaches `at_least` and stays still for `settle` seconds.

        Returns (perf_counter time of the last increase, final count); `self.first_write_at` is
        when the count first moved."""
        return wait_all_writes([self], [at_least], settle, timeout)[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_all_writes(ops: list[OperatorProcess], targets: list[float], settle: float = 1.0,
                    timeout: float = 900) -> list[tuple[float, float]]:
    """wait_writes for operators running at once, polled in turn, so that each one's finish is
    seen when it happens and not after the others have settled."""
    since = time.perf_counter()
    deadline = since + timeout
    last = [(-1.0, since) for _ in ops]  # (value, when it last changed)
    start: list[float | None] = [None for _ in ops]
    done: list[tuple[float, float] | None] = [None for _ in ops]
    for op in ops:
        op.first_write_at = 0.0
    while time.perf_counter() < deadline:
        for n, (op, target) in enumerate(zip(ops, targets, strict=True)):
            if done[n] is not None:
                continue
            if op.proc.poll() is not None:
                raise SystemExit(f"operator exited with {op.proc.returncode}; see {op.log_path}")
            value = op.writes()
            now = time.perf_counter()
            if value >= 0 and start[n] is None:
                start[n] = value
            first = start[n]
            if first is not None and value > first and not op.first_write_at:
                op.first_write_at = now
            if value != last[n][0]:
                last[n] = (value, now)
            if value >= target and now - last[n][1] >= settle:
                done[n] = (last[n][1], value)
        if all(d is not None for d in done):
            return [d for d in done if d is not None]
        time.sleep(0.05)
    stuck = [op.log_path.name for op, d in zip(ops, done, strict=True) if d is None]
    raise SystemExit(f"operators did not converge in {timeout}s: {', '.join(stuck)}; logs in "
                     f"{ops[0].log_path.parent}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quiesce(pids: Iterable[int], below: float = 0.25, window: float = 0.5, timeout: float = 60) -> float:
    """Wait until the servers are at rest (under `below` cores for `window` seconds).

    Every timed phase starts from a quiet API server: right after ten thousand writes it is still
    feeding its watch cache and collecting garbage for seconds, and whichever phase came next would
    pay for the one before. Returns the seconds waited."""
    pids = list(pids)
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        before = sum(cpu_seconds(p) for p in pids)
        time.sleep(window)
        if (sum(cpu_seconds(p) for p in pids) - before) / window < below:
            break
    return time.perf_counter() - start


def wait_healthy(op: OperatorProcess, timeout: float = 60) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if op.writes() >= 0:
            return
        if op.proc.poll() is not None:
            raise SystemExit(f"operator exited; see {op.log_path}")
        time.sleep(0.1)
    raise SystemExit("operator did not serve metrics")


def wait_reconciled(op: OperatorProcess, namespaces: int = 1, timeout: float = 300) -> None:
    """Until the operator has listed everything and finished a first recomputation of each site,
    and its writes (if any) have stopped: a timed change must not wait behind the start-up (the
    list alone is about 7 s at 100,000 nodes, and an idle write counter says nothing of it)."""
    deadline = time.perf_counter() + timeout
    while op.metric('stargate_reconciles_total{kind="namespace",result="success"') < namespaces:
        if op.proc.poll() is not None:
            raise SystemExit(f"operator exited; see {op.log_path}")
        if time.perf_counter() > deadline:
            raise SystemExit(f"operator did not finish a first recomputation in {timeout:.0f}s")
        time.sleep(0.1)
    op.wait_writes(0, settle=1.5)


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


class Cpu:
    """CPU seconds of the API server, etcd and one client (a pid, or this process) over a phase."""

    def __init__(self, api_pid: int, etcd_pid: int, client_pid: int | None = None) -> None:
        self.pids = {"apiserver": api_pid, "etcd": etcd_pid}
        self.client_pid = client_pid
        self.start = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.client_start = time.process_time() if client_pid is None else cpu_seconds(client_pid)
        self.own_start = time.process_time()

    def used(self, client_name: str = "client") -> dict[str, float]:
        out = {k: round(cpu_seconds(p) - self.start[k], 2) for k, p in self.pids.items()}
        client = time.process_time() if self.client_pid is None else cpu_seconds(self.client_pid)
        out[client_name] = round(client - self.client_start, 2)
        if self.client_pid is not None:
            # The benchmark's own polling shares the machine too: it must stay small.
            out["bench"] = round(time.process_time() - self.own_start, 2)
        return out


def cores(cpu: dict[str, float], seconds: float) -> float:
    """Average cores busy over a phase: how close it came to using the whole machine."""
    return round(sum(cpu.values()) / seconds, 2) if seconds > 0 else 0.0


def go_figures(cp: LocalControlPlane) -> dict[str, float]:
    """The API server's own allocation, garbage-collection and heap counters (its /metrics)."""
    with cp.connect(timeout=30) as c:
        text = c.send("GET", "/metrics", accept="text/plain").text
    names = ("go_memstats_alloc_bytes_total", "go_gc_duration_seconds_count", "go_memstats_heap_inuse_bytes")
    return {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines() if ln.split(" ", 1)[0] in names}


def apiserver_per_write(before: Mapping[str, float], after: Mapping[str, float], apiserver_cpu_s: float,
                        writes: int) -> dict[str, float]:
    """What each write cost the API server between two go_figures: its CPU (all of it, the watches'
    events included) and what it allocated, which decides how often it collects a heap of every
    object; and its collections and heap."""
    writes = max(1, writes)
    gc, alloc = "go_gc_duration_seconds_count", "go_memstats_alloc_bytes_total"
    return {
        "apiserver_ms_per_write": round(1000 * apiserver_cpu_s / writes, 2),
        "apiserver_kb_per_write": round((after[alloc] - before[alloc]) / 1000 / writes),
        "apiserver_gc_cycles": int(after[gc] - before[gc]),
        "apiserver_heap_mb": round(after["go_memstats_heap_inuse_bytes"] / 1e6),
    }


def parser(doc: str | None, nodes: int) -> argparse.ArgumentParser:
    """A benchmark's command line (its module docstring as help), with the options that every
    benchmark of a generated site shares."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=nodes, help=f"GPU nodes in the site (default {nodes})")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated site")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


class Profiler:
    """CPU profiles of the API server (Go's pprof) and of the operator (py-spy), for --profile.

    They say where the time goes when a ratio is off: the figures in the README come from them."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.threads: list[threading.Thread] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.made: list[Path] = []

    def apiserver(self, cp: LocalControlPlane, phase: str, seconds: int) -> None:
        path = self.out / f"apiserver-{phase}.pprof"

        def fetch() -> None:
            with cp.connect(timeout=seconds + 60) as c:
                got = c.send("GET", "/debug/pprof/profile", params={"seconds": seconds}, accept="*/*")
                path.write_bytes(got.content)

        t = threading.Thread(target=fetch, daemon=True)
        t.start()
        self.threads.append(t)
        self.made.append(path)

    def operator(self, pid: int, phase: str, seconds: int, who: str = "operator") -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            log("py-spy not installed (pip install py-spy): no operator profile")
            return
        path = self.out / f"{who}-{phase}.txt"
        self.procs.append(subprocess.Popen(
            [spy, "record", "--gil", "--rate", "200", "--format", "raw", "--duration", str(seconds),
             "--output", str(path), "--pid", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.made.append(path)

    def finish(self) -> None:
        for t in self.threads:
            t.join()
        for p in self.procs:
            p.wait()
        self.threads, self.procs = [], []
        lines = []
        for path in self.made:
            if not path.exists() or not path.stat().st_size:
                continue
            lines.append(f"== {path.name}")
            if path.suffix == ".pprof":
                go = shutil.which("go")
                if go is None:
                    lines.append("(go not on PATH: read it with `go tool pprof -top -cum`)")
                    continue
                top = subprocess.run([go, "tool", "pprof", "-top", "-cum", "-nodecount=60", str(path)],
                                     capture_output=True, text=True, check=False).stdout
                lines += top.splitlines()
            else:
                lines += summarize_py_spy(path)
        (self.out / "summary.txt").write_text("\n".join(lines) + "\n")
        log(f"profiles in {self.out} (summary.txt)")


def summarize_py_spy(path: Path, top: int = 40) -> list[str]:
    """Inclusive share of each function in py-spy's raw (collapsed) stacks."""
    total, inclusive = 0, Counter[str]()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        # "function (path/file.py:line)" -> "function (file.py)", each counted once per stack
        frames = (f.split(" (")[0] + " (" + f.split(" (")[-1].rsplit(":", 1)[0].split("/")[-1] + ")"
                  for f in stack.split(";"))
        for frame in dict.fromkeys(frames):
            inclusive[frame] += n
    out = [f"{total} samples at 200 Hz with the GIL held (about {total / 200:.1f} s of CPU)"]
    out += [f"{v / total * 100:5.1f}%  {k}" for k, v in inclusive.most_common(top)] if total else []
    return out


class RackWatcher:
    """When every rack's status.powerLimits first equals what the core wants: a watch on the racks
    from the current resourceVersion, in a thread of its own (with its own event loop and client),
    since the benchmark's main thread blocks while it polls the operator."""

    def __init__(self, kubeconfig: Path, namespace: str, want: Mapping[str, Mapping[str, int]]) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.want = dict(want)
        self.done_at: float | None = None
        self.watching = threading.Event()
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        client = KubeClient.from_kubeconfig(str(self.kubeconfig), max_connections=2)
        try:
            items, rv = await client.list(kinds.RACK.plural, self.namespace, page_size=5000)
            wrong = {o["metadata"]["name"] for o in items
                     if (o.get("status") or {}).get("powerLimits") != self.want.get(o["metadata"]["name"])}
            wrong &= set(self.want)
            self.watching.set()
            while wrong:
                async for event in client.watch(kinds.RACK.plural, self.namespace, rv, timeout_seconds=600):
                    obj = event["object"]
                    rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                    if event["type"] == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    if (obj.get("status") or {}).get("powerLimits") == self.want.get(name):
                        wrong.discard(name)
                    elif name in self.want:
                        wrong.add(name)
                    if not wrong:
                        self.done_at = time.perf_counter()
                        break
        except BaseException as e:  # reported by result()
            self.error = e
            self.watching.set()
        finally:
            self.finished.set()
            await client.aclose()

    def start(self) -> RackWatcher:
        self.thread.start()
        self.watching.wait(120)
        return self

    def result(self, timeout: float = 900) -> float:
        if not self.finished.wait(timeout):
            raise SystemExit(f"the racks' powerLimits were not all correct within {timeout}s")
        if self.error is not None:
            raise SystemExit(f"rack watch failed: {self.error!r}")
        assert self.done_at is not None
        return self.done_at


def rack_limits(expected: Mapping[tuple[str, str, str], dict[str, Any]]) -> dict[str, dict[str, int]]:
    return {k[2]: v["powerLimits"] for k, v in expected.items() if k[0] == RACK}


def lowering(objects: list[dict[str, Any]], expected: Mapping[tuple[str, str, str], dict[str, Any]]
             ) -> dict[str, int]:
    """Node -> the entry its slice must show once a change's lowering is written: min(old, new) for
    every node whose limit changes (lower before raise), from the GPUNodes' limits now."""
    now = {o["metadata"]["name"]: (o.get("status") or {}).get("powerLimitWatts")
           for o in objects if o["kind"] == NODE}
    out: dict[str, int] = {}
    for k, v in expected.items():
        if k[0] != NODE:
            continue
        new, old = v.get("powerLimitWatts"), now.get(k[2])
        if isinstance(new, int) and new != old:
            out[k[2]] = new if not isinstance(old, int) else min(old, new)
    return out


class SliceWatcher:
    """When every node's entry in the PowerLimitSlices first equals `want` (node -> watts): a watch on
    the slices from the current resourceVersion, in a thread of its own (with its own event loop
    and client), since the benchmark's main thread blocks while it polls the operator."""

    def __init__(self, kubeconfig: Path, namespace: str, want: Mapping[str, int]) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.want = dict(want)
        self.done_at: float | None = None
        self.slice_writes = 0  # slice events seen until then
        self.watching = threading.Event()
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def _note(self, obj: dict[str, Any], wrong: set[str]) -> None:
        for node, watts in ((obj.get("spec") or {}).get("limits") or {}).items():
            want = self.want.get(node)
            if want is None:
                continue
            if watts == want:
                wrong.discard(node)
            else:
                wrong.add(node)

    async def _run(self) -> None:
        plural = kinds.POWER_LIMIT_SLICE.plural
        client = KubeClient.from_kubeconfig(str(self.kubeconfig), max_connections=2)
        try:
            items, rv = await client.list(plural, self.namespace, page_size=5000)
            wrong = set(self.want)
            for o in items:
                self._note(o, wrong)
            self.watching.set()
            while wrong:
                async for event in client.watch(plural, self.namespace, rv, timeout_seconds=600):
                    obj = event["object"]
                    rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                    if event["type"] == "BOOKMARK":
                        continue
                    self.slice_writes += 1
                    self._note(obj, wrong)
                    if not wrong:
                        self.done_at = time.perf_counter()
                        break
            if self.done_at is None:
                self.done_at = time.perf_counter()
        except BaseException as e:  # reported by result()
            self.error = e
            self.watching.set()
        finally:
            self.finished.set()
            await client.aclose()

    def start(self) -> SliceWatcher:
        self.thread.start()
        self.watching.wait(120)
        return self

    def result(self, timeout: float = 900) -> float:
        if not self.finished.wait(timeout):
            raise SystemExit(f"the slices' limits were not all correct within {timeout}s")
        if self.error is not None:
            raise SystemExit(f"slice watch failed: {self.error!r}")
        assert self.done_at is not None
        return self.done_at


class AgentProcess:
    """`stargate-operator agent --simulate --all` for the whole site, with its metrics served."""

    def __init__(self, kubeconfig: Path, namespace: str, logdir: Path, interval: float = 3600) -> None:
        self.port = free_port()
        self.log_path = logdir / "agent.log"
        cmd = [sys.executable, "-m", "stargate_operator.cli", "agent", "--simulate", "--all",
               "-n", namespace, "--interval", f"{interval:g}", "--seed", "1", "--no-events",
               "--metrics-port", str(self.port), "--metrics-addr", "127.0.0.1",
               "--log-level", os.environ.get("BENCH_AGENT_LOG_LEVEL", "WARNING")]
        helped = subprocess.run([*cmd[:4], "--help"], capture_output=True, text=True, check=False).stdout
        if "--sample-interval" in helped:
            # No power samples between reports: a real node's agent samples its own GPUs once a
            # second, but 10,000 simulated nodes sampling in one process would take most of a core
            # from the machine the benchmark measures.
            cmd += ["--sample-interval", "0"]
        self.proc = subprocess.Popen(cmd, env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                                     stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def metrics(self) -> dict[str, float]:
        if self.proc.poll() is not None:
            raise SystemExit(f"the agent exited with {self.proc.returncode}; see {self.log_path}")
        try:
            text = POLL.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        except httpx.HTTPError:
            return {}
        return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                if ln.startswith("stargate_agent")}

    def changes(self) -> dict[str, float]:
        m = self.metrics()
        return {src: m.get(f'stargate_agent_power_limit_changes_total{{source="{src}"}}', -1.0)
                for src in ("slice", "rack", "gpunode")}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> float:
    """Poll until `check()`; the perf_counter time it first held."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if check():
            return time.perf_counter()
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


async def agents_phase(cp: LocalControlPlane, client: KubeClient, site: Site, logdir: Path,
                       rest: Callable[[], None], result: dict[str, Any], profiler: Profiler | None,
                       nodes: int) -> None:
    """Phase 5: the enforcement path end to end, with one simulated agent per node."""
    ns = site.namespace
    cluster_path = f"{GROUP_PATH}/namespaces/{ns}/{kinds.STARGATE_CLUSTER.plural}/"
    objects = await site.objects()
    name = curtailed(objects)[0]["metadata"]["name"]
    await set_curtailment(client, ns, name, None)
    agent = AgentProcess(cp.kubeconfig, ns, logdir)
    op = OperatorProcess(cp.kubeconfig, [ns], logdir, "agents")
    try:
        wait_healthy(op)

        def confirmed(budget: int | None = None) -> int:
            """The site's confirmed nodes, once its status carries `budget` (when given)."""
            power = (cp.get_json(f"{cluster_path}{name}").get("status") or {}).get("power") or {}
            if budget is not None and power.get("budgetWatts") != budget:
                return -1
            return int(power.get("limitsConfirmed") or 0)

        t = time.perf_counter()
        wait_until(lambda: confirmed() == site.nodes, 1800, "every agent's report confirmed", every=2.0)
        # Not the operator's writes at rest: the agents' next reports are spread over their interval
        # (an hour here: about 3 a second at 10,000 nodes), and each moves a rack's measured power.
        log(f"agents: {site.nodes} simulated agents started and confirmed in {time.perf_counter() - t:.1f}s")
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
        t = time.perf_counter()
        await set_curtailment(client, ns, name, CURTAILMENT)

        progress: list[tuple[float, int]] = []  # (seconds since the change, limits applied)

        def applied() -> bool:
            now = agent.changes()
            done = int(sum(now.values()) - sum(before.values()))
            progress.append((time.perf_counter() - t, done))
            return done >= changed

        applied_at = wait_until(applied, 600, "every agent to apply its new limit", every=0.1)
        result["agents_react_s"] = round(applied_at - t, 3)
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
            f"({result['agents_from_slice']} from slices), slices correct after "
            f"{result['agents_phase_react_s']:.2f}s")
        budget = after[CLUSTER, ns, name]["power"]["budgetWatts"]
        confirmed_at = wait_until(lambda: confirmed(budget) == site.nodes, 1800, "every node confirmed again")
        result["confirm_s"] = round(confirmed_at - t, 3)
        # Correct as well as fast: every node's report is the limit the core assigned.
        items, _ = await client.list(kinds.GPU_NODE.plural, ns, page_size=5000)
        want = {k[2]: v["powerLimitWatts"] for k, v in after.items() if k[0] == NODE}
        bad = [o["metadata"]["name"] for o in items
               if ((o.get("status") or {}).get("telemetry") or {}).get("enforcedLimitWatts")
               != want[o["metadata"]["name"]]]
        if bad:
            raise SystemExit(f"{len(bad)} agents enforce another limit, e.g. {bad[:3]}")
        log(f"agents: every node confirmed {result['confirm_s']:.1f}s after the spec change")
    finally:
        with suppress(Exception):
            op.stop()
        agent.stop()


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"nodes": args.nodes, "tree": args.tree}
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
            cold_patches = {k: merge_patch(None, v) for k, v in expected.items()}
            changed = sum(1 for p in cold_patches.values() if p)

            # 1. Baseline: the same writes in a tight loop, then reset.
            rest()
            cpu = Cpu(api_pid, etcd_pid)
            if profiler:
                profiler.apiserver(cp, "baseline", max(2, args.nodes // 700))
            base_s = await site.write(cold_patches)
            result["baseline_cpu_s"] = cpu.used()
            result["baseline_cores"] = cores(result["baseline_cpu_s"], base_s)
            log(f"baseline: {changed} status writes in {base_s:.2f}s ({changed / base_s:.0f}/s)")
            await site.write(dict.fromkeys(expected))
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
            base_s, base2_s = await baseline_again(site, dict.fromkeys(expected), cold_patches, base_s,
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
                await agents_phase(cp, client, site, logdir, rest, result, profiler, args.nodes)

            if args.shards:
                result.update(await shards(cp, client, args, logdir, rest))
        finally:
            await client.aclose()
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
    # The figure the issue asks about: two shards' ratio over one operator's on one site.
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
                   "40 floor PDUs, 400 RPPs, 100 CDUs: issue 14's benchmark tree)")
    p.add_argument("--no-agents", action="store_true",
                   help="skip phase 5 (one simulated agent per node; minutes at 10,000 nodes)")
    p.add_argument("--shards", action="store_true",
                   help="also time two sites of half the nodes: one operator on one, one on both, "
                   "and two operators with one site each")
    args = p.parse_args()
    result = asyncio.run(run_bench(args))
    keys = ["nodes", "cold_ratio", "curtail_ratio", "write_ratio", "rss_mb_per_1k_nodes", "scrape_ms",
            "react_s", "agents_react_s"]
    if args.json:
        print(json.dumps(result))
    else:
        print(" ".join(f"{k}={v}" for k, v in result.items() if k not in keys))
        # without --no-agents' figures (agents_react_s) rather than without the summary line
        print(" ".join(f"{k}={result[k]}" for k in keys if k in result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
