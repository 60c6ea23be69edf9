"""What an agent serves Prometheus: each node's figures as last read, and the HTTP server for them.

Per node (`stargate_agent_node_*`): its power (GPUs and the rest of the node), the per-GPU limit its
GPUs enforce (the highest of them), its healthy GPUs, its HBM in use, the highest power sampled in
the last report window (with power sampling on) and when its GPUs were read; per GPU (`gpu`
label, its index): power and enforced limit. This is what `run --telemetry prometheus` reads
(telemetry/prometheus.py), so that a campus's observations need no write to the API server.

An agent exports no node label of its own. Prometheus gives every series its node from the scrape
target (the ServiceMonitor relabels the pod's node into `node`); with `honor_labels: false` a label
the agent exported under that name would become `exported_node`, so an agent cannot speak for
another node. A real node's agent serves its node on `/metrics`. A simulated fleet of many nodes
in one process serves each node on its own target, `/nodes/<GPUNode>/metrics` (the target then
names the node, as a pod's address does), and on `/metrics` its own figures with every node's
series under a `gpunode` label, for tests and demos that read the process directly.

The server is aiohttp's low-level server on the agent's event loop (keep-alive, GET and HEAD): a
fleet of 10,000 simulated nodes scraped every 15 s answers about 670 requests a second, which a
thread per connection would not carry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from stargate_operator.agent.backend import NodeReading

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NODE_PATH_PREFIX = "/nodes/"
NODE_PATH_SUFFIX = "/metrics"
OWN_PATH = "/metrics/agent"  # the process's own figures, without every node's series


def node_path(name: str) -> str:
    """The path a simulated fleet serves one node's series on."""
    return f"{NODE_PATH_PREFIX}{name}{NODE_PATH_SUFFIX}"


class Figures(Protocol):
    """What the exposition needs of an agent (runner.NodeAgent)."""

    name: str

    @property
    def last_reading(self) -> NodeReading | None: ...

    @property
    def last_peak_watts(self) -> float | None: ...

    def node_watts(self, reading: NodeReading) -> float: ...


def node_figures(agents: Iterable[Figures], per_node: bool) -> Iterator[GaugeMetricFamily]:
    """The nodes' figures as last read; `per_node`: with a `gpunode` label (a fleet's /metrics)."""
    labels = ["gpunode"] if per_node else []
    node_power = GaugeMetricFamily("stargate_agent_node_power_watts",
                                   "Power of the node: its GPUs and the rest of it, as last read.",
                                   labels=labels)
    node_limit = GaugeMetricFamily("stargate_agent_node_enforced_limit_watts",
                                   "Per-GPU power limit the node's GPUs enforce (the highest of them).",
                                   labels=labels)
    node_healthy = GaugeMetricFamily("stargate_agent_node_healthy_gpus", "Healthy GPUs of the node.",
                                     labels=labels)
    node_hbm = GaugeMetricFamily("stargate_agent_node_hbm_used_bytes",
                                 "HBM in use on the node's GPUs, in bytes, as last read.", labels=labels)
    node_peak = GaugeMetricFamily(
        "stargate_agent_node_peak_power_watts",
        "Highest node power sampled in the last report window (the agent samples about once a "
        "second; reactive capping judges it). Absent without sampling.", labels=labels)
    node_time = GaugeMetricFamily("stargate_agent_node_observed_timestamp_seconds",
                                  "Unix time at which the node's GPUs were last read.", labels=labels)
    gpu_power = GaugeMetricFamily("stargate_agent_gpu_power_watts", "Power of one GPU, as last read.",
                                  labels=[*labels, "gpu"])
    gpu_limit = GaugeMetricFamily("stargate_agent_gpu_enforced_limit_watts",
                                  "Power limit one GPU enforces.", labels=[*labels, "gpu"])
    for agent in agents:
        reading = agent.last_reading
        if reading is None:
            continue
        who = [agent.name] if per_node else []
        node_power.add_metric(who, agent.node_watts(reading))
        enforced = reading.enforced_limit_watts
        if enforced is not None and enforced >= 0:
            node_limit.add_metric(who, enforced)
        node_healthy.add_metric(who, reading.healthy_gpus)
        node_hbm.add_metric(who, max(0, reading.hbm_used_bytes))
        peak = agent.last_peak_watts
        if peak is not None:
            node_peak.add_metric(who, peak)
        node_time.add_metric(who, reading.observed_at.timestamp())
        for g in reading.gpus:
            gpu_power.add_metric([*who, str(g.index)], g.power_watts)
            if g.enforced_limit_watts is not None:
                gpu_limit.add_metric([*who, str(g.index)], g.enforced_limit_watts)
    yield from (node_power, node_limit, node_healthy, node_hbm, node_peak, node_time, gpu_power,
                gpu_limit)


def _header(family: GaugeMetricFamily) -> str:
    doc = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {family.name} {doc}\n# TYPE {family.name} gauge\n"


# The HELP and TYPE lines of each family, from node_figures itself: one source of names and help.
_HEADERS = {f.name: _header(f) for f in node_figures([], per_node=False)}


def _value(v: float) -> str:
    return repr(float(v))


def node_page(agent: Figures) -> bytes:
    """One node's series, without a node label: its own target's page (the text node_figures
    gives, written directly: prometheus_client's rendering costs about twenty times more, and a
    simulated fleet of 10,000 nodes is scraped about 670 times a second)."""
    reading = agent.last_reading
    h = _HEADERS
    if reading is None:
        return "".join(h.values()).encode()
    out = [h["stargate_agent_node_power_watts"],
           f"stargate_agent_node_power_watts {_value(agent.node_watts(reading))}\n",
           h["stargate_agent_node_enforced_limit_watts"]]
    enforced = reading.enforced_limit_watts
    if enforced is not None and enforced >= 0:
        out.append(f"stargate_agent_node_enforced_limit_watts {_value(enforced)}\n")
    out += [h["stargate_agent_node_healthy_gpus"],
            f"stargate_agent_node_healthy_gpus {_value(reading.healthy_gpus)}\n",
            h["stargate_agent_node_hbm_used_bytes"],
            f"stargate_agent_node_hbm_used_bytes {_value(max(0, reading.hbm_used_bytes))}\n",
            h["stargate_agent_node_peak_power_watts"]]
    peak = agent.last_peak_watts
    if peak is not None:
        out.append(f"stargate_agent_node_peak_power_watts {_value(peak)}\n")
    out += [h["stargate_agent_node_observed_timestamp_seconds"],
            f"stargate_agent_node_observed_timestamp_seconds {_value(reading.observed_at.timestamp())}\n",
            h["stargate_agent_gpu_power_watts"]]
    out += [f'stargate_agent_gpu_power_watts{{gpu="{g.index}"}} {_value(g.power_watts)}\n'
            for g in reading.gpus]
    out.append(h["stargate_agent_gpu_enforced_limit_watts"])
    out += [f'stargate_agent_gpu_enforced_limit_watts{{gpu="{g.index}"}} {_value(g.enforced_limit_watts)}\n'
            for g in reading.gpus if g.enforced_limit_watts is not None]
    return "".join(out).encode()


Page = Callable[[], Awaitable[bytes]]
HEADERS = {"Content-Type": CONTENT_TYPE}


async def serve(fleet_page: Page, node: Callable[[str], bytes | None], host: str, port: int,
                own_page: Page | None = None) -> web.BaseRunner:
    """Serve `/metrics` (fleet_page), `/metrics/agent` (own_page, when given: the process's figures
    without the nodes') and `/nodes/<name>/metrics` (node(name); None: 404), GET and HEAD only, on
    aiohttp's low-level server (no router: three kinds of path, looked up directly). The runner's
    `addresses` say where it listens (port 0: a free one); `cleanup()` stops it."""

    async def handle(request: web.BaseRequest) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=400, text="GET only\n")
        path = request.path  # percent-decoded, without the query
        if path == "/metrics":
            return web.Response(body=await fleet_page(), headers=HEADERS)
        if path == OWN_PATH and own_page is not None:
            return web.Response(body=await own_page(), headers=HEADERS)
        if path.startswith(NODE_PATH_PREFIX) and path.endswith(NODE_PATH_SUFFIX):
            page = node(path[len(NODE_PATH_PREFIX):-len(NODE_PATH_SUFFIX)])
            if page is not None:
                return web.Response(body=page, headers=HEADERS)
        return web.Response(status=404, text="not found\n")

    # No access log: a fleet of 10,000 nodes is scraped about 670 times a second.
    runner = web.ServerRunner(web.Server(handle, access_log=None), handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=1024).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def fleet_scrape_config(job: str, address: str, nodes: Mapping[str, str], interval: str = "15s"
                        ) -> dict[str, object]:
    """A Prometheus scrape job for a simulated fleet: one target per node, on its own path (by
    GPUNode name), the node named by the target's `node` label (`nodes`: GPUNode name -> its
    Kubernetes node, `spec.nodeName` or else its own name, which the operator matches), as a
    DaemonSet pod's relabelled node names it. `honor_labels: false` (Prometheus's default, stated):
    a `node` label the agent exported would become `exported_node`."""
    return {
        "job_name": job,
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "honor_labels": False,
        "static_configs": [
            {"targets": [address], "labels": {"node": node, "__metrics_path__": node_path(name)}}
            for name, node in nodes.items()],
    }
