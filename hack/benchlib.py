"""The benchmarks' shared parts: the synthetic site on a local control plane, the operator and agent
processes, waits, CPU and API server figures, profilers and the common command line.

Imported by the scripts beside it (hack/bench.py, bench-react.py, ...) as
`import benchlib`: Python puts a script's own folder first on `sys.path`, so `python hack/<script>.py`
finds it from any working directory, with no path set by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from stargate_operator import kinds
from stargate_operator.client import ApiResource, KubeClient
from stargate_operator.core import CoreSettings
from stargate_operator.core.sliceplan import CampusSettings, plan_campus
from stargate_operator.fixtures.synth import synthetic_site
from stargate_operator.kinds import GROUP_PATH
from stargate_operator.localcp.controlplane import LocalControlPlane
from stargate_operator.process import gc_paused

CONCURRENCY = 32  # the operator's default --write-concurrency


RACKS = ApiResource.of(kinds.RACK)


STALE_AFTER = 10**6  # no telemetry in the bench site; keep time out of the results


# Above this many nodes the docs recommend observations through Prometheus (docs/concepts/
# telemetry.md, "Which mode at which size"): the agents' reports, one write per node every 10 s,
# would ask one API server for more than 200 writes a second. `--telemetry auto` follows it, so
# that a benchmark meets the load its size puts on a site run as the docs say.
PROMETHEUS_ABOVE_NODES = 2_000
TELEMETRY_CHOICES = ("auto", "agents", "prometheus")
SCRAPE_INTERVAL = "15s"  # Prometheus's default scrape interval, every node's target
AGENT_JOB = "stargate-agent"


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
        for spec in kinds.KINDS:
            items, _ = await self.client.list(ApiResource.of(spec), self.namespace)
            out += items
        return out

    def expected(self, objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
        with gc_paused():
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
            return lambda: self.client.patch_status(ApiResource.of(kinds.BY_KIND[kind]), ns, name, p)

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
    def __init__(self, kubeconfig: Path, namespaces: list[str], logdir: Path, tag: str,
                 extra_args: Iterable[str] = ()) -> None:
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
        cmd += list(extra_args)  # after the defaults: the last of a flag wins
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
        stop_group(self.proc, 20)


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


class PrometheusProcess:
    """The real Prometheus (Debian's package, hack/install-prometheus.sh) on loopback, with its
    storage under `logdir`, scraping `scrape_configs`."""

    def __init__(self, logdir: Path, scrape_configs: list[dict[str, Any]]) -> None:
        import yaml

        exe = shutil.which("prometheus")
        if exe is None:
            raise SystemExit("prometheus is not on PATH: install it with hack/install-prometheus.sh")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = logdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({"global": {"scrape_interval": "15s"},
                                          "scrape_configs": scrape_configs}))
        self.log_path = logdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={logdir / 'prometheus-data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
             "--storage.tsdb.retention.time=2h"],
            stdout=self.log_path.open("w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"prometheus exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if POLL.get(f"{self.url}/-/ready", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise SystemExit(f"prometheus not ready in 120 s; see {self.log_path}")

    def targets_up(self) -> tuple[int, int]:
        """(active targets, those whose last scrape succeeded), from its /api/v1/targets."""
        body = POLL.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=60).json()
        active = body["data"]["activeTargets"]
        return len(active), sum(1 for t in active if t.get("health") == "up")

    def head_series(self) -> int | None:
        """Series in its head block (its /api/v1/status/tsdb)."""
        body = POLL.get(f"{self.url}/api/v1/status/tsdb", timeout=60).json()
        n = ((body.get("data") or {}).get("headStats") or {}).get("numSeries")
        return int(n) if n is not None else None

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = POLL.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=60).json()
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        stop_group(self.proc, 30)


def stop_group(proc: subprocess.Popen[Any], grace: float = 30) -> None:
    """SIGTERM a process started in a group of its own (and its children), SIGKILL after `grace`."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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


def add_telemetry_option(p: argparse.ArgumentParser) -> None:
    """`--telemetry`: how the simulated agents' observations reach the operator."""
    p.add_argument("--telemetry", choices=TELEMETRY_CHOICES, default="auto",
                   help="agents: every agent writes its GPUNode every interval (the operator's "
                   "`--telemetry none`); prometheus: the agents serve /metrics (`--report-to "
                   "prometheus`), a real Prometheus scrapes each node's target every "
                   f"{SCRAPE_INTERVAL}, the operator reads it (`run --telemetry prometheus`); auto "
                   f"(default): the mode the docs recommend for --nodes, prometheus above "
                   f"{PROMETHEUS_ABOVE_NODES:,} nodes")


def telemetry_mode(choice: str, nodes: int) -> str:
    """The mode `--telemetry` names: `auto` is the one the docs recommend for `nodes`."""
    if choice != "auto":
        return choice
    return "prometheus" if nodes > PROMETHEUS_ABOVE_NODES else "agents"


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.5) -> float:
    """Poll until `check()`; the perf_counter time it first held."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if check():
            return time.perf_counter()
        time.sleep(every)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


class AgentProcess:
    """`stargate-operator agent --simulate --all` for the whole site, with its metrics served."""

    def __init__(self, kubeconfig: Path, namespace: str, logdir: Path, interval: float | None = None,
                 extra_args: list[str] | None = None) -> None:
        """`interval`: None for the agent's own default (what a fleet runs with)."""
        self.port = free_port()
        self.log_path = logdir / "agent.log"
        cmd = [sys.executable, "-m", "stargate_operator.cli", "agent", "--simulate", "--all",
               "-n", namespace, "--seed", "1", "--no-events",
               "--metrics-port", str(self.port), "--metrics-addr", "127.0.0.1",
               "--log-level", os.environ.get("BENCH_AGENT_LOG_LEVEL", "WARNING")]
        if interval is not None:
            cmd += ["--interval", f"{interval:g}"]
        helped = subprocess.run([*cmd[:4], "--help"], capture_output=True, text=True, check=False).stdout
        if "--sample-interval" in helped:
            # No power samples between reports: a real node's agent samples its own GPUs once a
            # second, but 10,000 simulated nodes sampling in one process would take most of a core
            # from the machine the benchmark measures.
            cmd += ["--sample-interval", "0"]
        cmd += extra_args or []
        self.proc = subprocess.Popen(cmd, env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                                     stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def metrics(self) -> dict[str, float]:
        """The process's own figures (its counters), from the page without every node's series:
        the full page of 1,000 simulated nodes takes 0.2 to 0.4 s to render, and polled ten times
        a second the agent would spend its time rendering it, not applying limits."""
        if self.proc.poll() is not None:
            raise SystemExit(f"the agent exited with {self.proc.returncode}; see {self.log_path}")
        try:
            text = POLL.get(f"http://127.0.0.1:{self.port}/metrics/agent", timeout=10).text
        except httpx.HTTPError:
            return {}
        return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                if ln.startswith("stargate_agent")}

    def changes(self) -> dict[str, float]:
        m = self.metrics()
        return {src: m.get(f'stargate_agent_power_limit_changes_total{{source="{src}"}}', -1.0)
                for src in ("slice", "rack", "gpunode")}

    def last_change_at(self) -> float:
        """When the process last set a limit on its (simulated) devices, by its own clock (seconds
        since the epoch; 0: never or not exported)."""
        return self.metrics().get("stargate_agent_last_power_limit_change_timestamp_seconds", 0.0)

    def stop(self) -> None:
        stop_group(self.proc, 30)


class SimulatedFleet:
    """The site's simulated agents (one AgentProcess) reporting in `mode` (telemetry_mode): in
    `prometheus`, to their /metrics, with a real Prometheus scraping every node on its own target
    (agent/exposition.py's fleet_scrape_config); `operator_args` are what the operator needs to
    read them the same way."""

    def __init__(self, kubeconfig: Path, namespace: str, objects: list[dict[str, Any]], logdir: Path,
                 mode: str, interval: float | None = None) -> None:
        from stargate_operator.agent.exposition import fleet_scrape_config

        self.mode = mode
        # GPUNode -> the Kubernetes node the operator matches a series' `node` label with.
        self.nodes = {o["metadata"]["name"]: (o.get("spec") or {}).get("nodeName") or o["metadata"]["name"]
                      for o in objects if o["kind"] == kinds.GPU_NODE.kind}
        extra = ["--report-to", "prometheus"] if mode == "prometheus" else []
        self.agent = AgentProcess(kubeconfig, namespace, logdir, interval=interval, extra_args=extra)
        self.prometheus: PrometheusProcess | None = None
        self.operator_args: list[str] = []
        if mode == "prometheus":
            try:
                self.prometheus = PrometheusProcess(logdir, [fleet_scrape_config(
                    AGENT_JOB, f"127.0.0.1:{self.agent.port}", self.nodes, SCRAPE_INTERVAL)])
            except BaseException:
                self.agent.stop()
                raise
            self.operator_args = ["--telemetry", "prometheus", "--prometheus-url", self.prometheus.url]

    async def enforced(self, client: KubeClient, namespace: str) -> dict[str, float | None]:
        """Each GPUNode's enforced per-GPU limit where the operator reads it: its status's
        telemetry, or Prometheus's last scrape of its target."""
        if self.prometheus is not None:
            by_node = {s["metric"].get("node"): float(s["value"][1]) for s in self.prometheus.query(
                f'stargate_agent_node_enforced_limit_watts{{job="{AGENT_JOB}"}}')}
            return {name: by_node.get(node) for name, node in self.nodes.items()}
        items, _ = await client.list(ApiResource.of(kinds.GPU_NODE), namespace, page_size=5000)
        return {o["metadata"]["name"]: ((o.get("status") or {}).get("telemetry") or {}).get(
            "enforcedLimitWatts") for o in items}

    def stop(self) -> None:
        self.agent.stop()
        if self.prometheus is not None:
            self.prometheus.stop()


class Profiler:
    """CPU profiles of the API server (Go's pprof) and of the operator (py-spy), for --profile.

    They say where the time goes when a ratio is off: the figures in docs/performance.md come from them."""

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


def raised(site: Site, objects: list[dict[str, Any]]) -> dict[str, int]:
    """Node -> its limit once the curtailment is lifted (every raise written)."""
    lifted = [{**o, "spec": {**o["spec"], "power": {**o["spec"]["power"], "curtailment": None}}}
              if o["kind"] == CLUSTER else o for o in objects]
    return {k[2]: v["powerLimitWatts"] for k, v in site.expected(lifted).items()
            if k[0] == NODE and isinstance(v.get("powerLimitWatts"), int)}


class SliceWatcher:
    """When every node's entry in the PowerLimitSlices first equals `want` (node -> watts): a watch on
    the slices from the current resourceVersion, in a thread of its own (with its own event loop
    and client), since the benchmark's main thread blocks while it polls the operator."""

    def __init__(self, kubeconfig: Path, namespace: str, want: Mapping[str, int]) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.want = dict(want)
        self.done_at: float | None = None
        self.first_at: float | None = None  # when the first slice event came
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
        slices = ApiResource.of(kinds.POWER_LIMIT_SLICE)
        client = KubeClient.from_kubeconfig(str(self.kubeconfig), max_connections=2)
        try:
            items, rv = await client.list(slices, self.namespace, page_size=5000)
            wrong = set(self.want)
            for o in items:
                self._note(o, wrong)
            self.watching.set()
            while wrong:
                async for event in client.watch(slices, self.namespace, rv, timeout_seconds=600):
                    obj = event["object"]
                    rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                    if event["type"] == "BOOKMARK":
                        continue
                    self.slice_writes += 1
                    if self.first_at is None:
                        self.first_at = time.perf_counter()
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
