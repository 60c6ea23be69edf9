"""The node agent: GPU telemetry in, power limits out.

On a GPU server (NVML, through nvidia-ml-py; setting power limits needs root):

  stargate-operator agent --node dgx-a1-07 --namespace site-abilene

Without GPUs, one simulated agent per GPUNode of a namespace, in one process:

  stargate-operator agent --simulate --all --namespace demo --seed 1

Every --interval seconds each agent applies status.powerLimitWatts of its GPUNode to every GPU
(clamped to the device's range; what cannot be applied is logged and reported as a Warning Event
PowerLimitNotApplied), reads its GPUs and writes status.telemetry (powerWatts, healthyGPUs,
hbmUsedBytes, observedAt), and nothing else. With --watch (the default) a new limit is applied within
about a second. Simulated faults: --fail-gpus N, or at runtime
  kubectl annotate gpunode NAME stargate.dev/simulate-failed-gpus=2 --overwrite

An agent takes its limit from its PowerLimitSlice (one watch on the slices of the namespace with
--all, on its own slice by name otherwise: the one its GPUNode's status.powerLimitSlice names;
a slice's ramp is followed step by step), else from its rack's status.powerLimits (an older
operator's), else from its GPUNode's status.powerLimitWatts, and reports the limit the GPUs
enforce as telemetry.enforcedLimitWatts.
With --metrics-port it serves its node's readings (power, enforced limit, healthy GPUs, per node
and per GPU) and what it did (limits applied, by where they came from) for Prometheus; a simulated
fleet serves each node's readings on its own path, /nodes/<GPUNode>/metrics. With --report-to
prometheus (for an operator run --telemetry prometheus) the readings go there alone, and the
GPUNode is written only when its power range or shadow limit changes.

Every flag has an environment variable (shown in --help), for a DaemonSet's pod spec.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import TYPE_CHECKING

from stargate_operator.agent.exposition import node_figures, node_page
from stargate_operator.agent.exposition import serve as exposition_serve
from stargate_operator.agent.runner import REPORT_TO, Fleet, nvml_factory, simulated_factory
from stargate_operator.agent.spread import DEFAULT_FAILSAFE_SPREAD_SECONDS
from stargate_operator.client import ApiError, KubeClient
from stargate_operator.commands.options import env as _env
from stargate_operator.commands.options import env_bool as _env_bool
from stargate_operator.commands.options import env_int as _env_int
from stargate_operator.commands.options import non_negative_float as _non_negative_float
from stargate_operator.commands.options import non_negative_int as _non_negative_int
from stargate_operator.commands.options import positive_float as _positive_float
from stargate_operator.kinds import (
    DEFAULT_FAILSAFE_AFTER_SECONDS,
    FAILED_GPUS_ANNOTATION,
    FAILSAFE_LEASE_NAME,
)

if TYPE_CHECKING:
    from aiohttp import web
    from prometheus_client.registry import Collector

log = logging.getLogger("stargate_operator.agent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--node", metavar="NAME", action="append", default=None,
        help="the GPUNode this agent serves (repeat, or comma-separate in the env, for several "
             "simulated nodes) [env STARGATE_AGENT_NODE]")
    parser.add_argument(
        "--all", dest="all_nodes", action="store_true", default=_env_bool("STARGATE_AGENT_ALL"),
        help="with --simulate: one agent for every GPUNode of the namespace, following creations and "
             "deletions [env STARGATE_AGENT_ALL=1]")
    parser.add_argument(
        "--namespace", "-n", default=_env("STARGATE_AGENT_NAMESPACE", _env("POD_NAMESPACE", "default")),
        help="namespace of the GPUNode(s) [env STARGATE_AGENT_NAMESPACE, POD_NAMESPACE; default: default]")
    parser.add_argument(
        "--kubeconfig", default=None,
        help="kubeconfig file; in-cluster credentials when absent in a pod [env KUBECONFIG; default "
             "~/.kube/config]")
    parser.add_argument(
        "--interval", type=_positive_float, default=float(_env("STARGATE_AGENT_INTERVAL", "10") or 10),
        metavar="SECONDS", help="seconds between readings [env STARGATE_AGENT_INTERVAL; default 10]")
    parser.add_argument(
        "--sample-interval", type=_non_negative_float,
        default=float(_env("STARGATE_AGENT_SAMPLE_INTERVAL", "1") or 1), metavar="SECONDS",
        help="seconds between power samples between reports; the highest since the last report is "
             "telemetry.peakPowerWatts, which the operator's reactive capping judges; 0: no samples, no "
             "peak [env STARGATE_AGENT_SAMPLE_INTERVAL; default 1]")
    parser.add_argument(
        "--failsafe-after", type=_non_negative_float,
        default=float(_env("STARGATE_AGENT_FAILSAFE_AFTER", str(DEFAULT_FAILSAFE_AFTER_SECONDS)) or 0),
        metavar="SECONDS",
        help=f"when the operator's Lease ({FAILSAFE_LEASE_NAME} in the namespace) has not been renewed "
             "for this long, enforce min(limit, status.safeLimitWatts) until it is again; 0: never "
             f"[env STARGATE_AGENT_FAILSAFE_AFTER; default {DEFAULT_FAILSAFE_AFTER_SECONDS:g}]")
    parser.add_argument(
        "--failsafe-spread", type=_non_negative_float,
        default=float(_env("STARGATE_AGENT_FAILSAFE_SPREAD", str(DEFAULT_FAILSAFE_SPREAD_SECONDS)) or 0),
        metavar="SECONDS",
        help="the agents of a site enter the fail-safe, and leave it, spread over this many seconds "
             "by a hash of the node name, so the site's power moves without a step; 0: all at once "
             f"[env STARGATE_AGENT_FAILSAFE_SPREAD; default {DEFAULT_FAILSAFE_SPREAD_SECONDS:g}]")
    parser.add_argument(
        "--simulate", action="store_true", default=_env_bool("STARGATE_AGENT_SIMULATE"),
        help="no GPUs: simulate them from the GPUNode's spec (draw follows the limit, with noise) "
             "[env STARGATE_AGENT_SIMULATE=1]")
    parser.add_argument(
        "--seed", type=int, default=_env_int("STARGATE_AGENT_SEED"),
        help="with --simulate: reproducible numbers [env STARGATE_AGENT_SEED]")
    parser.add_argument(
        "--fail-gpus", type=_non_negative_int, default=int(_env("STARGATE_AGENT_FAIL_GPUS", "0") or 0),
        metavar="N", help="with --simulate: N GPUs of every node are faulty; the annotation "
                          f"{FAILED_GPUS_ANNOTATION} on a GPUNode overrides it at runtime "
                          "[env STARGATE_AGENT_FAIL_GPUS; default 0]")
    parser.add_argument(
        "--watch", action=argparse.BooleanOptionalAction,
        default=not _env_bool("STARGATE_AGENT_NO_WATCH"),
        help="watch the GPUNode(s) so that new limits apply within a second; --no-watch polls every "
             "interval [env STARGATE_AGENT_NO_WATCH=1 for --no-watch; default: watch]")
    parser.add_argument(
        "--once", action="store_true",
        help="one pass (apply the limit, read, write telemetry) and exit: 0 when every node was written")
    parser.add_argument(
        "--no-events", dest="events", action="store_false",
        help="do not record PowerLimitNotApplied Events (logs only)")
    parser.add_argument(
        "--metrics-port", type=_non_negative_int,
        default=int(_env("STARGATE_AGENT_METRICS_PORT", "0") or 0), metavar="PORT",
        help="serve the agent's metrics on this port: the node's power, enforced limit and healthy GPUs "
             "(what run --telemetry prometheus reads), limits applied by source; a simulated fleet "
             "of several nodes serves each node's own on /nodes/<GPUNode>/metrics; 0: off "
             "[env STARGATE_AGENT_METRICS_PORT; default 0]")
    parser.add_argument(
        "--metrics-addr", default=_env("STARGATE_AGENT_METRICS_ADDR", "0.0.0.0"),
        help="address for --metrics-port [env STARGATE_AGENT_METRICS_ADDR; default 0.0.0.0]")
    parser.add_argument(
        "--report-to", choices=REPORT_TO, default=_env("STARGATE_AGENT_REPORT_TO", "api"),
        help="where readings go: 'api', the GPUNode's status.telemetry every interval (with an operator "
             "run --telemetry none); 'prometheus', /metrics only (needs --metrics-port; with an "
             "operator run --telemetry prometheus), the GPUNode written only when its power range or "
             "shadow limit changes [env STARGATE_AGENT_REPORT_TO; default api]")
    parser.add_argument(
        "--log-level", default=_env("STARGATE_AGENT_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
        help="[env STARGATE_AGENT_LOG_LEVEL; default INFO]")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.node:
        args.node = [n.strip() for n in (_env("STARGATE_AGENT_NODE") or "").split(",") if n.strip()]
    if not args.node and not args.all_nodes:
        print("stargate-operator agent: give --node NAME (or --simulate --all)", file=sys.stderr)
        return 2
    if args.node and args.all_nodes:
        print("stargate-operator agent: --node and --all exclude each other", file=sys.stderr)
        return 2
    if not args.simulate and (args.all_nodes or len(args.node) > 1):
        print("stargate-operator agent: an NVML agent serves one GPUNode, the machine it runs on; "
              "several nodes need --simulate", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:  # pragma: no cover - the signal handler normally wins
        return 130


async def _main(args: argparse.Namespace) -> int:
    if args.simulate:
        factory = simulated_factory(seed=args.seed, failed_gpus=args.fail_gpus)
    else:
        from stargate_operator.agent.nvml import NvmlUnavailable
        try:
            factory = nvml_factory()
        except NvmlUnavailable as e:
            print(f"stargate-operator agent: {e}", file=sys.stderr)
            return 1
    try:
        client = KubeClient.from_kubeconfig(args.kubeconfig, max_connections=16)
    except ApiError as e:
        print(f"stargate-operator agent: {e}", file=sys.stderr)
        return 1
    fleet = Fleet(client, args.namespace, factory, names=None if args.all_nodes else args.node,
                  interval=args.interval, watch=args.watch, events=args.events, seed=args.seed,
                  failsafe_after=args.failsafe_after or None, sample_interval=args.sample_interval or None,
                  failsafe_spread=args.failsafe_spread, report_to=args.report_to)
    if args.report_to == "prometheus" and not args.metrics_port and not args.once:
        print("stargate-operator agent: --report-to prometheus needs --metrics-port (Prometheus "
              "scrapes the readings there)", file=sys.stderr)
        await client.aclose()
        return 2
    server = None
    if args.metrics_port and not args.once:
        server = await serve_metrics(fleet, args.metrics_port, args.metrics_addr)
    try:
        if args.once:
            wrote, wanted = await fleet.run_once()
            log.info("telemetry written for %d of %d GPUNode(s)", wrote, wanted)
            return 0 if wrote == wanted else 1
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(fleet.run())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        log.info("agent for %s in namespace %s, every %.0f s (%s)",
                 "every GPUNode" if args.all_nodes else ", ".join(args.node), args.namespace, args.interval,
                 "simulated" if args.simulate else "NVML")
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("agent stopped")
        return 0
    finally:
        if server is not None:
            await server.cleanup()
        await client.aclose()


if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.core import GaugeMetricFamily


def fleet_collector(fleet: Fleet | None, with_nodes: bool = True) -> Collector:
    """The fleet's figures (none: the families alone, empty, for the docs' reference; `with_nodes`
    False: without the nodes' figures as last read, the page that a benchmark or a probe polls
    often, /metrics/agent, which a fleet of 1,000 simulated nodes renders without 1.3 MB of series):
    - `stargate_agent_nodes`: GPUNodes served;
    - `stargate_agent_nodes_limit_source{source}`: agents taking their limit from their
      PowerLimitSlice (`slice`), their rack (`rack`: an older operator), their GPUNode's status
      (`gpunode`: neither lists it), or from nowhere yet (`none`: the operator has not decided);
    - `stargate_agent_power_limit_changes_total{source}`: limits set on the devices (a device whose
      limit already was the one asked for is not counted), by where the limit came from;
    - `stargate_agent_last_power_limit_change_timestamp_seconds`: when one was last set;
    - `stargate_agent_shadow_limit_watts{node}`: in shadow mode, the limit each agent would apply.
    - the node's figures as last read: `stargate_agent_node_power_watts` (GPUs and the rest of the
      node), `stargate_agent_node_enforced_limit_watts` (per GPU, the highest of its GPUs),
      `stargate_agent_node_healthy_gpus`, `stargate_agent_node_hbm_used_bytes`,
      `stargate_agent_node_peak_power_watts`, `stargate_agent_node_observed_timestamp_seconds`, and
      per GPU (`gpu` label, its index) `stargate_agent_gpu_power_watts` and
      `stargate_agent_gpu_enforced_limit_watts` (agent/exposition.py). An agent of one node exports
      no node label: Prometheus gives the series its node from the scrape target (honor_labels
      false), so an agent cannot speak for another node. A simulated fleet of many nodes in one
      process adds `gpunode` (its GPUNode's name) here, for tests and demos, and serves each node's
      series without it on that node's own target, /nodes/<GPUNode>/metrics."""

    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    from stargate_operator.agent.runner import FROM_GPUNODE, FROM_RACK, FROM_SLICE

    class FleetCollector(Collector):
        def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
            agents = list(fleet.agents.values()) if fleet is not None else []
            nodes = GaugeMetricFamily("stargate_agent_nodes", "GPUNodes this agent process serves.")
            nodes.add_metric([], len(agents))
            yield nodes
            sources = {FROM_SLICE: 0, FROM_RACK: 0, FROM_GPUNODE: 0, "none": 0}
            for agent in agents:
                assigned = agent.assigned_limit()
                sources[assigned[1] if assigned is not None else "none"] += 1
            by_source = GaugeMetricFamily(
                "stargate_agent_nodes_limit_source",
                "Agents by where their limit comes from: their PowerLimitSlice, their rack's "
                "status.powerLimits, their GPUNode's status.powerLimitWatts, or none yet.",
                labels=["source"])
            for source, n in sources.items():
                by_source.add_metric([source], n)
            yield by_source
            changes = CounterMetricFamily(
                "stargate_agent_power_limit_changes",
                "Power limits set on the devices, by where the limit came from.", labels=["source"])
            limit_changes = (fleet.stats.limit_changes if fleet is not None
                             else {FROM_RACK: 0, FROM_GPUNODE: 0})
            for source, n in limit_changes.items():
                changes.add_metric([source], n)
            yield changes
            last = GaugeMetricFamily(
                "stargate_agent_last_power_limit_change_timestamp_seconds",
                "When a power limit was last set on the devices, in seconds since the epoch "
                "(0: never).")
            last.add_metric([], fleet.stats.last_change_at if fleet is not None else 0.0)
            yield last
            shadow = GaugeMetricFamily(
                "stargate_agent_shadow_limit_watts",
                "Shadow mode (the site's spec.power.enforcement Observe): the per-GPU limit each "
                "node's agent would apply, and does not, in watts.", labels=["node"])
            for agent in agents:
                if agent.shadow_limit is not None:
                    shadow.add_metric([agent.name], agent.shadow_limit)
            yield shadow
            if with_nodes:
                yield from node_figures(agents, per_node=fleet is None or fleet.single is None)

        def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
            return self.collect()

    return FleetCollector()


async def serve_metrics(fleet: Fleet, port: int, addr: str) -> web.BaseRunner:
    """The fleet's figures (`fleet_collector`) on /metrics, the same without the nodes' own series
    on /metrics/agent and, for a fleet of several nodes, each node's own series on
    /nodes/<GPUNode>/metrics (agent/exposition.py), on the fleet's loop."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(fleet_collector(fleet))
    own = CollectorRegistry(auto_describe=False)
    own.register(fleet_collector(fleet, with_nodes=False))

    async def fleet_page() -> bytes:
        # In a thread: a simulated fleet's page of every node takes a while to render.
        return await asyncio.to_thread(generate_latest, registry)

    async def own_page() -> bytes:
        return generate_latest(own)

    def one(name: str) -> bytes | None:
        agent = fleet.agents.get(name)
        if agent is None or fleet.single is not None:
            return None  # a real node's agent serves its node on /metrics alone
        return node_page(agent)

    server = await exposition_serve(fleet_page, one, addr, port, own_page)
    log.info("agent metrics on %s:%d", addr, port)
    return server
